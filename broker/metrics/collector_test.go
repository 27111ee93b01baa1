package metrics

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func errorsBySource(resp *brokerv1.CollectMetricsResponse) map[string]string {
	m := map[string]string{}
	for _, e := range resp.GetErrors() {
		m[e.GetSource()] = e.GetError()
	}
	return m
}

func TestCollectFromFixtureTree(t *testing.T) {
	h := newFakeHost(t)
	now := time.Unix(1700086400, 0)
	c := New(Config{Roots: h.roots, Now: func() time.Time { return now }})
	resp := c.Collect(context.Background())

	errs := errorsBySource(resp)
	// Only the ZFS dataset that does not exist on this machine may fail.
	for src, msg := range errs {
		if src != "filesystems" || !strings.Contains(msg, "/rpool/data/subvol-100-disk-0") {
			t.Errorf("unexpected source error %s: %s", src, msg)
		}
	}
	if _, ok := errs["filesystems"]; !ok {
		t.Error("statfs of a missing mount point was not reported")
	}
	if got := resp.GetCollectedAt().AsTime(); !got.Equal(now) {
		t.Errorf("collected_at = %v, want %v", got, now)
	}

	cpu := resp.GetCpu()
	wantCPU := map[string][2]float64{
		"user": {cpu.GetUser(), 100}, "nice": {cpu.GetNice(), 2}, "system": {cpu.GetSystem(), 30},
		"idle": {cpu.GetIdle(), 500}, "iowait": {cpu.GetIowait(), 4}, "irq": {cpu.GetIrq(), 0.5},
		"softirq": {cpu.GetSoftirq(), 0.6}, "steal": {cpu.GetSteal(), 0.7},
	}
	for name, v := range wantCPU {
		if v[0] != v[1] {
			t.Errorf("cpu.%s = %v, want %v", name, v[0], v[1])
		}
	}
	if resp.GetLogicalCpus() != 4 || resp.GetPhysicalCores() != 2 {
		t.Errorf("cpus logical=%d physical=%d, want 4 and 2", resp.GetLogicalCpus(), resp.GetPhysicalCores())
	}

	mem := resp.GetMemory()
	if mem.GetTotal() != 16384000*1024 || mem.GetAvailable() != 8192000*1024 || mem.GetFree() != 2048000*1024 {
		t.Errorf("memory = %+v", mem)
	}
	if mem.GetUsed() != (16384000-8192000)*1024 {
		t.Errorf("memory.used = %d, want total-available", mem.GetUsed())
	}
	if resp.GetSwap() == nil {
		t.Error("swap missing")
	}

	if l := resp.GetLoad(); l.GetOne() != 0.5 || l.GetFive() != 1.25 || l.GetFifteen() != 2 {
		t.Errorf("load = %+v", l)
	}
	if n := resp.GetNetwork(); n.GetBytesRecv() != 4000000 || n.GetBytesSent() != 1200000 {
		t.Errorf("network = %+v, want loopback excluded (4000000/1200000)", n)
	}
	if resp.GetProcessCount() != 4 {
		t.Errorf("process_count = %d, want 4 numeric dirs", resp.GetProcessCount())
	}
	if resp.GetUptimeSeconds() != 86400 || resp.GetBootTime() != 1700000000 {
		t.Errorf("uptime=%d boot=%d", resp.GetUptimeSeconds(), resp.GetBootTime())
	}

	fs := map[string]*brokerv1.Filesystem{}
	for _, f := range resp.GetFilesystems() {
		fs[f.GetMountPath()] = f
	}
	if len(fs) != 2 {
		t.Errorf("filesystems = %v, want / and %s only", resp.GetFilesystems(), h.mnt)
	}
	if r := fs["/"]; r == nil || r.GetDevice() != "/dev/sda1" || r.GetFstype() != "ext4" || r.GetTotal() == 0 {
		t.Errorf("root filesystem = %+v", r)
	}
	if d := fs[h.mnt]; d == nil || d.GetDevice() != "/dev/sdb1" || d.GetFstype() != "xfs" || d.GetTotal() == 0 {
		t.Errorf("data filesystem = %+v", d)
	} else if d.GetUsed() > d.GetTotal() || d.GetFree() > d.GetTotal() {
		t.Errorf("data filesystem usage inconsistent: %+v", d)
	}

	wantDisks := []struct {
		name, model, serial string
		size                uint64
	}{
		{"nvme0n1", "WD Blue SN570", "22123X456789", 2000409264 * 512},
		{"sda", "Samsung SSD 870", "S5XXNG0R", 1953525168 * 512},
		{"vda", "", "", 67108864 * 512},
	}
	disks := resp.GetBlockDevices()
	if len(disks) != len(wantDisks) {
		t.Fatalf("block devices = %v, want %d", disks, len(wantDisks))
	}
	for i, w := range wantDisks {
		d := disks[i]
		if d.GetName() != w.name || d.GetModel() != w.model || d.GetSerial() != w.serial || d.GetSizeBytes() != w.size {
			t.Errorf("disk %d = %+v, want %+v", i, d, w)
		}
	}

	host := resp.GetHost()
	want := &brokerv1.HostFacts{
		Hostname: "pve-node3", OsType: "linux", Platform: "debian", PlatformFamily: "debian",
		PlatformVersion: "12", OsPrettyName: "Debian GNU/Linux 12 (bookworm)", KernelRelease: "6.8.12-17-pve",
		Arch: machine(),
	}
	if host.String() != want.String() {
		t.Errorf("host = %v\nwant %v", host, want)
	}
}

func TestOneFailingSourceDropsOnlyItsFields(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(h *fakeHost)
		failing  []string
		dropped  func(*brokerv1.CollectMetricsResponse) bool
		retained func(*brokerv1.CollectMetricsResponse) bool
	}{
		{
			name:     "meminfo missing",
			breakIt:  func(h *fakeHost) { h.remove("proc/meminfo") },
			failing:  []string{"memory"},
			dropped:  func(r *brokerv1.CollectMetricsResponse) bool { return r.GetMemory() == nil },
			retained: func(r *brokerv1.CollectMetricsResponse) bool { return r.GetCpu() != nil && r.GetHost() != nil },
		},
		{
			name:    "stat malformed",
			breakIt: func(h *fakeHost) { h.write("proc/stat", "cpu  x y z\n") },
			failing: []string{"cpu", "cpu_counts"},
			dropped: func(r *brokerv1.CollectMetricsResponse) bool { return r.GetCpu() == nil && r.GetLogicalCpus() == 0 },
			// Boot time falls back to now minus uptime.
			retained: func(r *brokerv1.CollectMetricsResponse) bool {
				return r.GetMemory() != nil && r.GetUptimeSeconds() == 86400 && r.GetBootTime() > 0
			},
		},
		{
			name:     "net/dev missing",
			breakIt:  func(h *fakeHost) { h.remove("proc/net/dev") },
			failing:  []string{"network"},
			dropped:  func(r *brokerv1.CollectMetricsResponse) bool { return r.GetNetwork() == nil },
			retained: func(r *brokerv1.CollectMetricsResponse) bool { return r.GetLoad() != nil },
		},
		{
			name:     "no os-release anywhere",
			breakIt:  func(h *fakeHost) { h.remove("etc/os-release") },
			failing:  []string{"host"},
			dropped:  func(r *brokerv1.CollectMetricsResponse) bool { return r.GetHost().GetPlatform() == "" },
			retained: func(r *brokerv1.CollectMetricsResponse) bool { return r.GetHost().GetPlatformFamily() == "unknown" },
		},
		{
			name:     "sysfs block missing",
			breakIt:  func(h *fakeHost) { h.remove("sys/block") },
			failing:  []string{"block_devices"},
			dropped:  func(r *brokerv1.CollectMetricsResponse) bool { return r.GetBlockDevices() == nil },
			retained: func(r *brokerv1.CollectMetricsResponse) bool { return r.GetPhysicalCores() == 2 },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t)
			tt.breakIt(h)
			resp := h.collector().Collect(context.Background())
			errs := errorsBySource(resp)
			for _, src := range tt.failing {
				if _, ok := errs[src]; !ok {
					t.Errorf("source %s not reported; errors: %v", src, errs)
				}
			}
			if !tt.dropped(resp) {
				t.Error("fields of the failing source were not dropped")
			}
			if !tt.retained(resp) {
				t.Error("fields of other sources were lost")
			}
		})
	}
}

func TestUsrLibOSReleaseFallback(t *testing.T) {
	h := newFakeHost(t)
	h.remove("etc/os-release")
	h.write("usr/lib/os-release", "ID=rocky\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.3\"\nNAME=\"Rocky Linux\"\n")
	resp := h.collector().Collect(context.Background())
	host := resp.GetHost()
	if host.GetPlatform() != "rocky" || host.GetPlatformFamily() != "rhel" || host.GetPlatformVersion() != "9.3" || host.GetOsPrettyName() != "Rocky Linux" {
		t.Errorf("host = %v", host)
	}
	if _, ok := errorsBySource(resp)["host"]; ok {
		t.Errorf("fallback file found, yet host reported an error: %v", resp.GetErrors())
	}
}

func TestFilesystemCap(t *testing.T) {
	h := newFakeHost(t)
	resp := New(Config{Roots: h.roots, MaxFilesystems: 1}).Collect(context.Background())
	if n := len(resp.GetFilesystems()); n != 1 {
		t.Fatalf("filesystems = %d, want 1", n)
	}
	if msg := errorsBySource(resp)["filesystems"]; !strings.Contains(msg, "more than 1") {
		t.Errorf("cap not reported: %q", msg)
	}
}

func TestCancelledContextReportsEverySource(t *testing.T) {
	h := newFakeHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp := h.collector().Collect(ctx)
	if len(resp.GetErrors()) != len(h.collector().sources) || resp.GetCpu() != nil {
		t.Errorf("cancelled collect: errors=%d cpu=%v", len(resp.GetErrors()), resp.GetCpu())
	}
}

// TestCollectLiveHost checks the real machine: every source works and the
// facts agree with what the standard library sees.
func TestCollectLiveHost(t *testing.T) {
	resp := New(Config{}).Collect(context.Background())
	for _, e := range resp.GetErrors() {
		t.Errorf("source %s failed on this host: %s", e.GetSource(), e.GetError())
	}
	if resp.GetCpu().GetIdle() <= 0 || resp.GetLogicalCpus() < 1 || resp.GetPhysicalCores() < 1 {
		t.Errorf("cpu facts implausible: %v logical=%d cores=%d", resp.GetCpu(), resp.GetLogicalCpus(), resp.GetPhysicalCores())
	}
	if resp.GetMemory().GetTotal() == 0 || resp.GetProcessCount() < 2 || resp.GetUptimeSeconds() == 0 {
		t.Errorf("memory/process/uptime implausible: %v %d %d", resp.GetMemory(), resp.GetProcessCount(), resp.GetUptimeSeconds())
	}
	var root *brokerv1.Filesystem
	for _, f := range resp.GetFilesystems() {
		if f.GetDevice() == "" {
			t.Errorf("filesystem %s has no device", f.GetMountPath())
		}
		if f.GetMountPath() == "/" {
			root = f
		}
	}
	if root == nil || root.GetTotal() == 0 {
		t.Errorf("root filesystem missing: %v", resp.GetFilesystems())
	}
	hn, _ := os.Hostname()
	if resp.GetHost().GetHostname() != hn || resp.GetHost().GetPlatformFamily() == "" || resp.GetHost().GetKernelRelease() == "" {
		t.Errorf("host facts = %v (hostname %q)", resp.GetHost(), hn)
	}
	for _, ip := range resp.GetIps() {
		if strings.HasPrefix(ip, "127.") || ip == "::1" {
			t.Errorf("loopback address listed: %s", ip)
		}
	}
	if resp.GetPrimaryIp() != "" && !strings.Contains(strings.Join(resp.GetIps(), " "), resp.GetPrimaryIp()) {
		t.Errorf("primary ip %s not among ips %v", resp.GetPrimaryIp(), resp.GetIps())
	}
}
