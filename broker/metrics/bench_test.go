package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/shirou/gopsutil/v4/cpu"
	"golang.org/x/sys/unix"
)

// cpuTime is this process's user+system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCollect is one CollectMetrics on the live host. cpu-ms/op is the
// process CPU time (getrusage) per sample; the goal is ≤ 5 ms and no sleep,
// so wall time should be close to it.
func BenchmarkCollect(b *testing.B) {
	c := New(Config{})
	ctx := context.Background()
	b.ReportAllocs()
	start := cpuTime(b)
	wall := time.Now()
	for b.Loop() {
		resp := c.Collect(ctx)
		if len(resp.GetErrors()) != 0 {
			b.Fatalf("source errors: %v", resp.GetErrors())
		}
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(time.Since(wall))/float64(time.Millisecond)/float64(b.N), "wall-ms/op")
}

// BenchmarkCPUPercentOneSecond is the reference agent's approach: gopsutil's
// cpu.Percent sleeps a second between two reads, so every sample costs a
// second of wall time in the collecting process.
func BenchmarkCPUPercentOneSecond(b *testing.B) {
	b.ReportAllocs()
	start := cpuTime(b)
	wall := time.Now()
	for b.Loop() {
		if _, err := cpu.Percent(time.Second, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(time.Since(wall))/float64(time.Millisecond)/float64(b.N), "wall-ms/op")
}
