package execute

import (
	"context"
	"os/exec"
	"slices"
	"sync"
	"testing"
	"time"
)

// BenchmarkTrue compares running /bin/true through the runner with a plain
// exec.Command. The runner's extra cost: checks, a cgroup per run in three
// hierarchies (created, limited, removed), the tainted starter thread and
// capture pipes.
func BenchmarkTrue(b *testing.B) {
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, m := range modes {
		b.Run("runner-"+m.name, func(b *testing.B) {
			r := newTestRunner(b, m.cfg)
			req := Request{Stages: []Stage{stage("/bin/true")}}
			for b.Loop() {
				res, err := r.Run(context.Background(), req)
				if err != nil || res.ExitCode != 0 {
					b.Fatal(err, res)
				}
			}
		})
	}
}

// BenchmarkConcurrentSleep runs five "sleep 1" at once; one op is the wall
// time until all five are done (goal: at most 1.2 s).
func BenchmarkConcurrentSleep(b *testing.B) {
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			r := newTestRunner(b, Config{MaxConcurrent: 5, Containment: m.cfg.Containment})
			req := Request{Stages: []Stage{stage("/usr/bin/sleep", "1")}}
			for b.Loop() {
				var wg sync.WaitGroup
				for range 5 {
					wg.Go(func() {
						if res, err := r.Run(context.Background(), req); err != nil || res.ExitCode != 0 {
							b.Error(err, res)
						}
					})
				}
				wg.Wait()
			}
		})
	}
}

// BenchmarkTrueInterleaved alternates a direct exec of /bin/true and a run
// through the cgroup runner in one loop and reports both medians and their
// ratio, which stay meaningful on a machine whose load changes during the
// benchmark (the plain means above do not).
func BenchmarkTrueInterleaved(b *testing.B) {
	r := newTestRunner(b, Config{})
	req := Request{Stages: []Stage{stage("/bin/true")}}
	var direct, runner []time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if res, err := r.Run(context.Background(), req); err != nil || res.ExitCode != 0 {
			b.Fatal(err, res)
		}
		direct, runner = append(direct, t1.Sub(t0)), append(runner, time.Since(t1))
	}
	d, rr := median(direct), median(runner)
	b.ReportMetric(float64(d.Nanoseconds()), "direct-p50-ns")
	b.ReportMetric(float64(rr.Nanoseconds()), "runner-p50-ns")
	b.ReportMetric(float64(rr)/float64(d), "ratio")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
