package trace

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// BenchmarkTraceOverhead measures what a trace costs the traced workload:
// a loop of openat (or read) syscalls, first untraced, then while the
// broker's own trace of that syscall is attached. Compare the ops/s.
func BenchmarkTraceOverhead(b *testing.B) {
	needBpftrace(b)
	workloads := []struct {
		name string
		spec *brokerv1.TraceSpec
		op   func(b *testing.B)
	}{
		{
			name: "openat-count",
			spec: &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "syscalls:sys_enter_openat"},
			op:   openOnce,
		},
		{
			name: "read-latency",
			spec: &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY},
			op:   readOnce(b),
		},
	}
	for _, w := range workloads {
		b.Run(w.name+"/untraced", func(b *testing.B) { loop(b, w.op) })
		stop := attachTrace(b, w.spec)
		b.Run(w.name+"/traced", func(b *testing.B) { loop(b, w.op) })
		resp := stop()
		b.Logf("%s: trace saw %d events, ok=%v %s", w.name, resp.Events, resp.Ok, resp.Error)
	}
}

func loop(b *testing.B, op func(*testing.B)) {
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op(b)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func openOnce(b *testing.B) {
	fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	unix.Close(fd)
}

func readOnce(b *testing.B) func(*testing.B) {
	f, err := os.Open("/dev/zero")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	buf := make([]byte, 512)
	return func(b *testing.B) {
		if _, err := unix.Read(fd, buf); err != nil {
			b.Fatal(err)
		}
	}
}

// attachTrace starts spec (60 s, the most allowed) and returns once its
// probes are attached; stop cancels it and returns its result.
func attachTrace(b *testing.B, spec *brokerv1.TraceSpec) func() *brokerv1.RunTraceResponse {
	r := liveRunner(b, nil)
	attached := make(chan struct{})
	r.attachHook = func() { close(attached) }
	spec.Duration = durationpb.New(DefaultMaxDuration)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan *brokerv1.RunTraceResponse, 1)
	go func() {
		resp, _ := r.Run(ctx, spec)
		done <- resp
	}()
	select {
	case <-attached:
	case resp := <-done:
		cancel()
		b.Fatalf("trace ended before attaching: %v", resp)
	case <-time.After(30 * time.Second):
		cancel()
		b.Fatal("trace did not attach within 30s")
	}
	return func() *brokerv1.RunTraceResponse {
		cancel()
		return <-done
	}
}
