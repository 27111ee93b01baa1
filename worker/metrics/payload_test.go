package metrics

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func sampleFixture() *brokerv1.CollectMetricsResponse {
	return &brokerv1.CollectMetricsResponse{
		CollectedAt:   timestamppb.New(time.Unix(1700000000, 0)),
		Cpu:           &brokerv1.CpuTimes{User: 100, System: 50, Idle: 800, Iowait: 50},
		LogicalCpus:   8,
		PhysicalCores: 4,
		Memory:        &brokerv1.Memory{Total: 16 * gib, Used: 12*gib + gib/2, Available: 3*gib + gib/2, Free: gib},
		Filesystems: []*brokerv1.Filesystem{
			{Device: "/dev/sda1", MountPath: "/", Fstype: "ext4", Total: 500 * gib, Used: 250 * gib, Free: 225 * gib},
			{Device: "rpool/data", MountPath: "/rpool/data", Fstype: "zfs", Total: 3 * gib, Used: gib, Free: 2 * gib},
		},
		Load:    &brokerv1.LoadAverage{One: 2.154, Five: 1.978, Fifteen: 1.75},
		Network: &brokerv1.NetCounters{BytesRecv: 125*gib + gib/2, BytesSent: 89 * gib},
		Host: &brokerv1.HostFacts{
			Hostname: "peer-test-01", OsType: "linux", Platform: "ubuntu", PlatformFamily: "debian",
			PlatformVersion: "22.04", OsPrettyName: "Ubuntu 22.04.3 LTS", KernelRelease: "5.15.0-91-generic", Arch: "x86_64",
		},
		Ips:       []string{"10.0.0.5", "192.168.1.100"},
		PrimaryIp: "192.168.1.100",
	}
}

// TestPayloadWireShape pins the exact JSON on the wire (field names,
// nesting, rounding): the report goes through the real nannyapi.Client,
// which adds "action", to the fake backend on loopback, and the bytes it
// received are compared.
func TestPayloadWireShape(t *testing.T) {
	p, err := BuildPayload(sampleFixture(), 45.678, "0.2.0")
	if err != nil {
		t.Fatal(err)
	}
	srv, client := loopbackAPI(t)
	if err := client.IngestMetrics(testCtx(t), p); err != nil {
		t.Fatalf("the fake backend refused the heartbeat: %v", err)
	}
	got := ingestBodies(srv)
	if len(got) != 1 {
		t.Fatalf("%d ingest-metrics requests, want 1", len(got))
	}
	want := `{"action":"ingest-metrics","system_metrics":{"cpu_percent":45.68,"cpu_cores":8,` +
		`"memory_used_gb":12.5,"memory_total_gb":16,"memory_percent":78.13,` +
		`"disk_used_gb":250,"disk_total_gb":500,"disk_usage_percent":50,` +
		`"load_average":{"one_min":2.15,"five_min":1.98,"fifteen_min":1.75},` +
		`"network_stats":{"in_gb":125.5,"out_gb":89},` +
		`"filesystems":[{"device":"/dev/sda1","mount_path":"/","used_gb":250,"free_gb":225,"total_gb":500,"usage_percent":52.63},` +
		`{"device":"rpool/data","mount_path":"/rpool/data","used_gb":1,"free_gb":2,"total_gb":3,"usage_percent":33.33}],` +
		`"kernel_version":"5.15.0-91-generic"},` +
		`"os_info":"Ubuntu 22.04.3 LTS","os_version":"22.04","os_type":"linux",` +
		`"version":"0.2.0","primary_ip":"192.168.1.100","kernel_version":"5.15.0-91-generic","platform_family":"debian","arch":"x86_64",` +
		`"all_ips":["10.0.0.5","192.168.1.100"]}`
	if string(got[0]) != want {
		t.Errorf("payload\n got %s\nwant %s", got[0], want)
	}
	if err := backendAccepts(got[0]); err != nil {
		t.Error(err)
	}
}

// backendAccepts applies NannyAPI's observed ingest-metrics rules
// (nannyapi-backend.md §4.1) to a request body: action ingest-metrics,
// platform_family required, cpu_percent ≤ 100, every other number ≥ 0.
func backendAccepts(body []byte) error {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return err
	}
	if m["action"] != "ingest-metrics" {
		return fmt.Errorf("action = %v", m["action"])
	}
	return reportAccepted(m)
}

// reportAcceptable checks a built report as the client and the backend
// would: nannyapi's own Check (which IngestMetrics applies before sending)
// and the backend's rules on its JSON, which carries everything but the
// action the client adds.
func reportAcceptable(r nannyapi.MetricsReport) (raw []byte, err error) {
	if err := r.Check(); err != nil {
		return nil, fmt.Errorf("nannyapi refuses the report: %w", err)
	}
	raw, err = json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	return raw, reportAccepted(m)
}

func reportAccepted(m map[string]any) error {
	if pf, _ := m["platform_family"].(string); pf == "" {
		return fmt.Errorf(`400 {"error":"platform_family required"}`)
	}
	sm, ok := m["system_metrics"].(map[string]any)
	if !ok {
		return fmt.Errorf("system_metrics missing")
	}
	if cpu, _ := sm["cpu_percent"].(float64); cpu > 100 {
		return fmt.Errorf(`500 {"error":"failed to save metrics"}: cpu_percent %v`, cpu)
	}
	var walk func(path string, v any) error
	walk = func(path string, v any) error {
		switch x := v.(type) {
		case float64:
			if x < 0 || math.IsNaN(x) {
				return fmt.Errorf("%s = %v is negative", path, x)
			}
		case map[string]any:
			for k, e := range x {
				if err := walk(path+"."+k, e); err != nil {
					return err
				}
			}
		case []any:
			for i, e := range x {
				if err := walk(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk("", m)
}

func TestPayloadEdgeCases(t *testing.T) {
	tests := []struct {
		name   string
		sample *brokerv1.CollectMetricsResponse
		cpu    float64
		check  func(t *testing.T, p nannyapi.MetricsReport, raw string)
	}{
		{
			name:   "empty sample still a valid heartbeat",
			sample: &brokerv1.CollectMetricsResponse{},
			check: func(t *testing.T, p nannyapi.MetricsReport, raw string) {
				if p.PlatformFamily != UnknownPlatformFamily {
					t.Errorf("platform_family = %q", p.PlatformFamily)
				}
				if p.SystemMetrics.Filesystems == nil {
					t.Error("filesystems must be [] not null")
				}
			},
		},
		{
			name:   "cpu above 100 is clamped",
			sample: sampleFixture(),
			cpu:    100.0000001,
			check: func(t *testing.T, p nannyapi.MetricsReport, _ string) {
				if p.SystemMetrics.CPUPercent != 100 {
					t.Errorf("cpu_percent = %v", p.SystemMetrics.CPUPercent)
				}
			},
		},
		{
			name:   "NaN and negative cpu become 0",
			sample: sampleFixture(),
			cpu:    math.NaN(),
			check: func(t *testing.T, p nannyapi.MetricsReport, _ string) {
				if p.SystemMetrics.CPUPercent != 0 {
					t.Errorf("cpu_percent = %v", p.SystemMetrics.CPUPercent)
				}
			},
		},
		{
			name:   "pretty name missing: platform id",
			sample: &brokerv1.CollectMetricsResponse{Host: &brokerv1.HostFacts{Platform: "alpine", PlatformFamily: "alpine"}},
			check: func(t *testing.T, p nannyapi.MetricsReport, _ string) {
				if p.OSInfo != "alpine" {
					t.Errorf("os_info = %q", p.OSInfo)
				}
			},
		},
		{
			name: "no root filesystem: disk fields zero",
			sample: &brokerv1.CollectMetricsResponse{Filesystems: []*brokerv1.Filesystem{
				{MountPath: "/data", Total: gib, Used: 2 * gib}, // used > total from a broken statfs
			}},
			check: func(t *testing.T, p nannyapi.MetricsReport, _ string) {
				sm := p.SystemMetrics
				if sm.DiskTotalGB != 0 || sm.DiskUsedGB != 0 || sm.DiskUsagePercent != 0 {
					t.Errorf("disk = %v/%v/%v", sm.DiskUsedGB, sm.DiskTotalGB, sm.DiskUsagePercent)
				}
				if sm.Filesystems[0].UsagePercent != 100 {
					t.Errorf("usage_percent = %v, want clamped 100", sm.Filesystems[0].UsagePercent)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := BuildPayload(tt.sample, tt.cpu, "")
			if err != nil {
				t.Fatal(err)
			}
			raw, err := reportAcceptable(p)
			if err != nil {
				t.Errorf("backend would refuse: %v\n%s", err, raw)
			}
			tt.check(t, p, string(raw))
		})
	}
	if _, err := BuildPayload(nil, 0, ""); err == nil {
		t.Error("nil sample accepted")
	}
}

func TestRound2(t *testing.T) {
	for in, want := range map[float64]float64{
		1.005: 1, 1.006: 1.01, 78.125: 78.13, 0: 0, -3: 0, math.Inf(1): 0, 123456.789: 123456.79,
	} {
		if got := round2(in); got != want {
			t.Errorf("round2(%v) = %v, want %v", in, got, want)
		}
	}
}
