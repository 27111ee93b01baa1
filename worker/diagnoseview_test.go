package worker

import (
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/worker/ebpf"
	"github.com/nannyai/nannyagent/worker/investigate"
)

func TestTraceOutcomeHeadlines(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	r := ebpf.Result{
		Name: "reads", Kind: "syscall", Probe: "tracepoint:syscalls:sys_enter_read and sys_exit_read", Target: "read",
		Measure: "latency", Success: true, EventCount: 600, EventsPerSecond: 300, Duration: 2,
		Aggregates: []ebpf.Aggregate{
			{Name: "@by_process", Entries: []ebpf.Entry{{Key: "9,b", Value: 5}, {Key: "7,a", Value: 500}, {Key: "8,c", Value: 5}, {Key: "1,d", Value: 90}}},
			{Name: "@errors", Entries: []ebpf.Entry{{Key: "11", Value: 4}}},
			{Name: "@latency_us", Histograms: []ebpf.Histogram{{Buckets: []ebpf.Bucket{
				{Range: "[0, 1]", Count: 300, Low: i(0), High: i(1)}, {Range: "[2, 3]", Count: 290, Low: i(2), High: i(3)}, {Range: "[1024, …)", Count: 10, Low: i(1024)},
			}}}},
			{Name: "@latency_us_stats", Stats: []ebpf.Stats{{Count: 600, Average: 19, Total: 11400}}},
		},
	}
	o := traceOutcome(r)
	if o.Duration != 2*time.Second || !o.OK || o.Events != 600 || o.Probe != r.Probe {
		t.Errorf("outcome %+v", o)
	}
	var top []string
	for _, k := range o.TopProcesses {
		top = append(top, k.Key)
	}
	if strings.Join(top, " ") != "7,a 1,d 8,c" {
		t.Errorf("top processes %v: want the three largest, ties by key", top)
	}
	if len(o.Errors) != 1 || o.Errors[0] != (investigate.KeyCount{Key: "11", Count: 4}) {
		t.Errorf("errors %v", o.Errors)
	}
	if len(o.Histograms) != 1 {
		t.Fatalf("histograms %+v", o.Histograms)
	}
	h := o.Histograms[0]
	if h.Map != "@latency_us" || h.Count != 600 || h.Average != 19 || len(h.Percentiles) != 3 {
		t.Fatalf("histogram %+v", h)
	}
	p50, p90, p99 := h.Percentiles[0], h.Percentiles[1], h.Percentiles[2]
	if *p50.High != 1 || *p90.Low != 2 || *p99.Low != 1024 || p99.High != nil {
		t.Errorf("percentiles p50 %v–%v p90 %v p99 %v–%v", *p50.Low, *p50.High, *p90.Low, *p99.Low, p99.High)
	}
}

func TestCommandOutcomeOutputHead(t *testing.T) {
	done := investigate.CommandDone{Turn: 2, Result: investigate.CommandResult{ID: "c", Command: "ps", Output: "a\nb\nc\n" + strings.Repeat("x", 1000) + "\n",
		Rules: []string{"ps"}, Duration: time.Millisecond}}
	c := commandOutcome(done, 2)
	if c.GetOutputLines() != 4 || len(c.GetOutputHead()) != 2 || c.GetOutputHead()[1] != "b" || !c.GetAllowed() || c.GetTurn() != 2 {
		t.Errorf("outcome %v", c)
	}
	c = commandOutcome(done, 10)
	if got := c.GetOutputHead()[3]; len(got) > maxLineBytes+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("a long line is not clipped: %d bytes", len(got))
	}
	if c := commandOutcome(done, 0); len(c.GetOutputHead()) != 0 || c.GetOutputLines() != 4 {
		t.Errorf("no lines asked, got %v", c.GetOutputHead())
	}
}
