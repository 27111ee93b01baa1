package metrics

import (
	"math"
	"testing"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// FuzzBuildPayload checks that whatever the broker sends (it may be a
// different version, or wrong), the heartbeat stays acceptable to NannyAPI.
func FuzzBuildPayload(f *testing.F) {
	f.Add(45.5, uint64(1<<34), uint64(1<<33), uint64(100), uint64(300), 1.5, -2.0, "debian", int32(8))
	f.Add(math.Inf(1), uint64(0), uint64(1<<63), uint64(1<<63), uint64(0), math.NaN(), math.Inf(-1), "", int32(-4))
	f.Fuzz(func(t *testing.T, cpu float64, memTotal, memUsed, fsUsed, fsFree uint64, load1, load5 float64, family string, cpus int32) {
		s := &brokerv1.CollectMetricsResponse{
			LogicalCpus: cpus,
			Memory:      &brokerv1.Memory{Total: memTotal, Used: memUsed},
			Filesystems: []*brokerv1.Filesystem{{MountPath: "/", Total: fsUsed, Used: fsUsed, Free: fsFree}},
			Load:        &brokerv1.LoadAverage{One: load1, Five: load5, Fifteen: load1 * load5},
			Host:        &brokerv1.HostFacts{PlatformFamily: family},
		}
		p, err := BuildPayload(s, cpu, "v")
		if err != nil {
			t.Fatal(err)
		}
		if raw, err := reportAcceptable(p); err != nil {
			t.Fatalf("backend would refuse: %v\n%s", err, raw)
		}
	})
}
