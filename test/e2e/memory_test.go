package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/stack"
)

// procKiB reads a "Name:   123 kB" field of /proc/<pid>/status.
func procKiB(pid int, field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", field, pid)
}

// BenchmarkIdleMemory reports VmRSS and RssAnon of the broker and the worker
// after they served a status request and idled for two seconds.
func BenchmarkIdleMemory(b *testing.B) {
	s, err := stack.Start(context.Background(), stack.Options{BinDir: binDir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Unregistered and without NannyAPI, status answers and exits 1 (degraded).
	if res := s.CLI(ctx, nil, "status"); !statusAnswered(res) {
		b.Fatal(res.Stderr)
	}
	time.Sleep(idleWait)
	metrics := map[string]float64{}
	for name, p := range map[string]*stack.Process{"broker": s.BrokerProcess(), "worker": s.WorkerProcess()} {
		for _, field := range []string{"VmRSS", "RssAnon"} {
			v, err := procKiB(p.Pid(), field)
			if err != nil {
				b.Fatal(err)
			}
			metrics[name+"-"+field+"-MiB"] = v / 1024
		}
	}
	for b.Loop() {
	}
	for k, v := range metrics {
		b.ReportMetric(v, k)
	}
	b.ReportMetric(metrics["broker-RssAnon-MiB"]+metrics["worker-RssAnon-MiB"], "both-RssAnon-MiB")
}

// idleWait is how long the processes idle before they are measured; it
// spans the first memory release (one second after start).
const idleWait = 3 * time.Second
