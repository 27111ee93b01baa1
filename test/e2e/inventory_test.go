package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// fakeProxmox builds a pmxcfs tree and a pvesh script for this host as a
// two-guest cluster node, and returns the policy that points at them.
func fakeProxmox(t testing.TB, host string) string {
	t.Helper()
	pvesh, root := fakeProxmoxFiles(t, host)
	return fmt.Sprintf(`version: 1
proxmox:
  pvesh: %s
  pmxcfs_root: %s
  paths:
    - {id: pve-cluster-status, path: /cluster/status}
    - {id: pve-cluster-resources, path: /cluster/resources}
    - {id: pve-node-status, path: "/nodes/{local}/status"}
    - {id: pve-lxc-config, path: "/nodes/{local}/lxc/{vmid}/config"}
    - {id: pve-qemu-config, path: "/nodes/{local}/qemu/{vmid}/config"}
`, pvesh, root)
}

// fakeProxmoxFiles writes the pmxcfs tree and the pvesh script, and
// returns their paths.
func fakeProxmoxFiles(t testing.TB, host string) (pvesh, root string) {
	t.Helper()
	dir, err := stack.WorldReadableTempDir("nannyagent-pve-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	root = filepath.Join(dir, "pve")
	files := map[string]string{
		"pve/nodes/" + host + "/lxc/100.conf": "arch: amd64\ncores: 2\nhostname: ct100\nmemory: 512\nostype: debian\n" +
			"rootfs: local-lvm:vm-100-disk-0,size=8G\n\n[snap1]\nostype: alpine\n",
		"pve/nodes/" + host + "/qemu-server/200.conf": "#a VM\nboot: order=scsi0;net0\ncores: 2\ncpu: host\nkvm: 1\n" +
			"memory: 2048\nname: vm200\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nostype: l26\nscsi0: local-lvm:vm-200-disk-0,size=32G\n" +
			"vmgenid: 3c5e0f4e-0000-4000-8000-000000000200\n",
		"cluster-status.json": fmt.Sprintf(`[{"type":"cluster","id":"cluster","name":"pxcluster","nodes":3,"quorate":1,"version":6},`+
			`{"type":"node","id":"node/%[1]s","name":%[1]q,"ip":"127.0.0.1","level":"","local":1,"nodeid":1,"online":1},`+
			`{"type":"node","id":"node/other","name":"other","ip":"127.0.0.2","level":"","local":0,"nodeid":2,"online":1}]`, host),
		"cluster-resources.json": fmt.Sprintf(`[{"type":"lxc","id":"lxc/100","vmid":100,"name":"ct100","node":%[1]q,"status":"running","uptime":81328},`+
			`{"type":"qemu","id":"qemu/200","vmid":200,"name":"vm200","node":%[1]q,"status":"stopped","uptime":0},`+
			`{"type":"lxc","id":"lxc/300","vmid":300,"name":"elsewhere","node":"other","status":"running","uptime":5}]`, host),
		"node-status.json": `{"pveversion":"pve-manager/8.2.4/faa83925c9641325","uptime":1000}`,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"local": "nodes/" + host, "lxc": "nodes/" + host + "/lxc", "qemu-server": "nodes/" + host + "/qemu-server"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf(`#!/bin/sh
# A fake pvesh: "get <path> --output-format json".
[ "$1" = get ] && [ "$3" = --output-format ] && [ "$4" = json ] || exit 2
case "$2" in
/cluster/status) cat %[1]s/cluster-status.json ;;
/cluster/resources) cat %[1]s/cluster-resources.json ;;
/nodes/%[2]s/status) cat %[1]s/node-status.json ;;
*) echo "no such path $2" >&2; exit 1 ;;
esac
`, dir, host)
	pvesh = filepath.Join(dir, "pvesh")
	if err := os.WriteFile(pvesh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return pvesh, root
}

func TestProxmoxInventoryPayloads(t *testing.T) {
	requireRoot(t)
	host, err := os.Hostname()
	if err != nil || strings.ContainsAny(host, "._") {
		t.Skipf("hostname %q cannot be a Proxmox node name", host)
	}
	srv := startFake(t, fakeapi.Options{})
	registeredStack(t, srv, fakeProxmox(t, host))
	deadline := time.Now().Add(9 * time.Second)
	var posts []fakeapi.ProxmoxPost
	for time.Now().Before(deadline) && len(posts) < 4 {
		posts = srv.ProxmoxPosts()
		time.Sleep(50 * time.Millisecond)
	}
	got := map[string]map[string]any{}
	var order []string
	for _, p := range posts {
		got[p.Kind] = p.Body
		order = append(order, p.Kind)
	}
	want := map[string]map[string]any{
		"node": {"ip": "127.0.0.1", "level": "", "local": 1.0, "name": host, "nodeid": 1.0, "online": 1.0,
			"pveversion": "pve-manager/8.2.4/faa83925c9641325"},
		"cluster": {"name": "pxcluster", "nodes": 3.0, "quorate": 1.0, "version": 6.0, "px_cluster_id": "cluster"},
		"lxc": {"name": "ct100", "lxc_id": "lxc/100", "status": "running", "ostype": "debian", "uptime": 81328.0,
			"vmid": 100.0, "node": host},
		"qemu": {"name": "vm200", "qemu_id": "qemu/200", "status": "stopped", "ostype": "l26", "uptime": 0.0,
			"vmid": 200.0, "vmgenid": "3c5e0f4e-0000-4000-8000-000000000200", "kvm": 1.0, "boot": "order=scsi0;net0",
			"cpu": "host", "node": host},
	}
	if len(posts) != 4 {
		t.Fatalf("%d Proxmox posts (%v), want node, cluster, lxc and qemu once each", len(posts), order)
	}
	for kind, body := range want {
		if !reflect.DeepEqual(got[kind], body) {
			t.Errorf("%s payload\n got %v\nwant %v", kind, got[kind], body)
		}
	}
	if order[0] != "node" {
		t.Errorf("posts in order %v: the node must come before its guests", order)
	}
}

func TestMetricsPayload(t *testing.T) {
	srv := startFake(t, fakeapi.Options{})
	_, creds := registeredStack(t, srv, realtimePolicy)
	body := waitMetrics(t, srv, creds.ID, 1)[0].Body
	top := keys(body)
	wantTop := []string{"action", "all_ips", "arch", "kernel_version", "os_info", "os_type", "os_version", "platform_family", "primary_ip", "system_metrics", "version"}
	if !subset(wantTop[:1], top) || !reflect.DeepEqual(without(top, "all_ips", "primary_ip", "os_version"), without(wantTop, "all_ips", "primary_ip", "os_version")) {
		t.Errorf("top-level keys %v, want %v", top, wantTop)
	}
	sm, _ := body["system_metrics"].(map[string]any)
	wantSM := []string{"cpu_cores", "cpu_percent", "disk_total_gb", "disk_usage_percent", "disk_used_gb", "filesystems",
		"kernel_version", "load_average", "memory_percent", "memory_total_gb", "memory_used_gb", "network_stats"}
	if got := keys(sm); !reflect.DeepEqual(got, wantSM) {
		t.Errorf("system_metrics keys %v, want %v", got, wantSM)
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	checks := map[string][2]any{
		"action":          {body["action"], "ingest-metrics"},
		"cpu_cores":       {sm["cpu_cores"], float64(runtime.NumCPU())},
		"kernel_version":  {body["kernel_version"], unix.ByteSliceToString(u.Release[:])},
		"platform_family": {body["platform_family"], osReleaseFamily(t)},
		"os_type":         {body["os_type"], "linux"},
	}
	for name, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	total, _ := sm["memory_total_gb"].(float64)
	if want := memTotalGiB(t); total < want-0.01 || total > want+0.01 {
		t.Errorf("memory_total_gb %v, /proc/meminfo says %.2f", total, want)
	}
	if cpu, _ := sm["cpu_percent"].(float64); cpu < 0 || cpu > 100 {
		t.Errorf("cpu_percent %v out of 0…100", cpu)
	}
	for _, k := range []string{"one_min", "five_min", "fifteen_min"} {
		if _, ok := sm["load_average"].(map[string]any)[k]; !ok {
			t.Errorf("load_average lacks %s", k)
		}
	}
	for _, fs := range sm["filesystems"].([]any) {
		if dev, _ := fs.(map[string]any)["device"].(string); dev == "" {
			t.Errorf("filesystem without a device: %v", fs)
		}
	}
}

func TestFiveHundredStormDoesNotDelayAnInvestigation(t *testing.T) {
	ai := fakeapi.NewScriptedAI(fakeapi.Diagnostic("check", "uptime"), fakeapi.Resolution("fine", "1. nothing"))
	srv := startFake(t, fakeapi.Options{AI: ai})
	_, creds := registeredStack(t, srv, realtimePolicy)
	waitMetrics(t, srv, creds.ID, 1)
	// Every heartbeat now fails; the metrics loop retries and backs off.
	srv.Fail(fakeapi.RouteIngestMetrics, 503, 0, "")
	defer srv.ClearFaults()
	// Wait until a heartbeat has met the storm, so the metrics loop is in
	// its retries while the investigation runs.
	before := srv.Hits(fakeapi.RouteIngestMetrics)
	ctx := ctxT(t)
	if err := srv.WaitHits(ctx, fakeapi.RouteIngestMetrics, before+1); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	id, err := srv.CreateInvestigation(creds.ID, "slow responses from the web tier", "high")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, srv, id, "completed")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the investigation took %v during a 5xx storm on /api/agent", took)
	}
	if srv.Hits(fakeapi.RouteIngestMetrics) <= before {
		t.Error("the storm never met a heartbeat")
	}
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func without(list []string, drop ...string) []string {
	var out []string
	for _, s := range list {
		if !subset([]string{s}, drop) {
			out = append(out, s)
		}
	}
	return out
}

func subset(a, b []string) bool {
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x == y
		}
		if !found {
			return false
		}
	}
	return true
}

func osReleaseFamily(t *testing.T) string {
	data, err := os.ReadFile("/etc/os-release")
	if err != nil {
		t.Skip("no /etc/os-release")
	}
	if strings.Contains(string(data), "ID=debian") || strings.Contains(string(data), "ID_LIKE=debian") {
		return "debian"
	}
	t.Skip("the family check knows Debian only")
	return ""
}

func memTotalGiB(t *testing.T) float64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / (1 << 20)
		}
	}
	t.Fatal("no MemTotal")
	return 0
}
