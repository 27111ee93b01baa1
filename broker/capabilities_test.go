package broker

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

const tracePolicy = `version: 1
traces:
  bpftrace: /usr/bin/bpftrace
  kinds: [tracepoint, syscall]
  rules:
    - {id: trace-sched, kind: tracepoint, target: "sched:*"}
    - {id: trace-read, kind: syscall, target: "read"}
`

func requireTracing(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: bpftrace attaches probes")
	}
	if _, err := exec.LookPath("/usr/bin/bpftrace"); err != nil {
		t.Skip("bpftrace not installed: " + err.Error())
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/sched"); err != nil {
		t.Skip("tracefs not mounted at /sys/kernel/tracing: " + err.Error())
	}
}

func TestRunTraceThroughThePolicy(t *testing.T) {
	requireTracing(t)
	b := startBrokerWith(t, 0, tracePolicy)
	ctx := context.Background()
	resp, err := b.client.RunTrace(ctx, &brokerv1.RunTraceRequest{Spec: &brokerv1.TraceSpec{
		Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "sched:sched_process_exec",
		Duration: durationpb.New(1_000_000_000),
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetOk() || resp.GetRefused() || resp.GetAttachedProbes() == 0 {
		t.Fatalf("trace failed: %v", resp)
	}
	if !strings.Contains(b.log.String(), `"rule":"trace-sched"`) || !strings.Contains(b.log.String(), `"rpc":"RunTrace"`) {
		t.Errorf("decision log lacks the rule: %s", b.log.String())
	}
}

func TestRunTraceRefusals(t *testing.T) {
	b := startBrokerWith(t, 0, tracePolicy)
	ctx := context.Background()
	specs := map[string]*brokerv1.TraceSpec{
		"raw program":        {Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: `BEGIN { system("id"); }`},
		"target not listed":  {Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "block:block_rq_issue"},
		"kind not allowed":   {Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "vfs_read"},
		"syscall not listed": {Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "openat"},
	}
	for name, spec := range specs {
		t.Run(name, func(t *testing.T) {
			resp, err := b.client.RunTrace(ctx, &brokerv1.RunTraceRequest{Spec: spec})
			if err != nil {
				t.Fatal(err)
			}
			if !resp.GetRefused() || resp.GetOk() || resp.GetError() == "" {
				t.Errorf("not refused with a reason: %v", resp)
			}
		})
	}
	if n := strings.Count(b.log.String(), `"decision":"deny"`); n != len(specs) {
		t.Errorf("%d denials logged, want %d", n, len(specs))
	}
}

// fakePmxcfs builds a pmxcfs tree for node with one container config and
// returns its root.
func fakePmxcfs(t *testing.T, node string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"nodes/" + node + "/lxc", "nodes/" + node + "/qemu-server", "nodes/other/lxc", "priv"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"nodes/" + node + "/lxc/100.conf": "arch: amd64\ncores: 2\nhostname: ct100\nostype: debian\n",
		"nodes/other/lxc/101.conf":        "hostname: elsewhere\n",
		"priv/authkey.key":                "secret",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("nodes/"+node, filepath.Join(root, "local")); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestProxmoxGetThroughThePolicy(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || !validNode(host) {
		t.Skipf("hostname %q cannot be a Proxmox node name", host)
	}
	root := fakePmxcfs(t, host)
	b := startBrokerWith(t, 0, fmt.Sprintf(`version: 1
proxmox:
  pvesh: /usr/bin/pvesh
  pmxcfs_root: %s
  paths:
    - {id: pve-lxc-config, path: "/nodes/{local}/lxc/{vmid}/config"}
`, root))
	ctx := context.Background()
	probe, err := b.client.Probe(ctx, &brokerv1.ProbeRequest{})
	if err != nil || !probe.GetProxmox().GetDetected() || probe.GetProxmox().GetNode() != host {
		t.Errorf("Probe does not see the pmxcfs node: %v %v", probe.GetProxmox(), err)
	}
	resp, err := b.client.ProxmoxGet(ctx, &brokerv1.ProxmoxGetRequest{Path: "/nodes/" + host + "/lxc/100/config"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetSource() != "pmxcfs" || !strings.Contains(string(resp.GetJson()), `"hostname":"ct100"`) {
		t.Errorf("config %s from %s", resp.GetJson(), resp.GetSource())
	}
	refused := map[string]codes.Code{
		"/nodes/other/lxc/101/config":      codes.PermissionDenied,
		"/cluster/status":                  codes.PermissionDenied,
		"/nodes/" + host + "/../../priv":   codes.PermissionDenied,
		"/nodes/" + host + "/lxc/1/config": codes.PermissionDenied,
	}
	for path, want := range refused {
		_, err := b.client.ProxmoxGet(ctx, &brokerv1.ProxmoxGetRequest{Path: path})
		if status.Code(err) != want {
			t.Errorf("%s: %v, want %v", path, err, want)
		}
	}
	if !strings.Contains(b.log.String(), `"rule":"pve-lxc-config"`) {
		t.Errorf("decision log lacks the rule: %s", b.log.String())
	}
}

func validNode(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func TestMetricsCanBeDisabled(t *testing.T) {
	b := startBrokerWith(t, 0, "version: 1\nmetrics: {enabled: false}\n")
	_, err := b.client.CollectMetrics(context.Background(), &brokerv1.CollectMetricsRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("metrics disabled by policy but served: %v", err)
	}
}
