package worker

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/ebpf"
	"github.com/nannyai/nannyagent/worker/investigate"
)

// Bounds on what one event carries to the CLI.
const (
	maxLineBytes = 300
	topKeys      = 3
)

// percentiles shown for each histogram.
var percentiles = []int{50, 90, 99}

// diagnoseEvent turns an investigation event into the CLI's message; lines
// is how many output lines a command event carries.
func diagnoseEvent(ev investigate.Event, lines int) *workerv1.DiagnoseResponse {
	switch e := ev.(type) {
	case investigate.TurnStarted:
		return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Turn{Turn: &workerv1.DiagnoseTurn{
			Turn: int32(e.Turn), Reasoning: e.Reasoning, Commands: int32(e.Commands), Traces: int32(e.Traces)}}}
	case investigate.Retried:
		return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Retry{Retry: &workerv1.DiagnoseRetry{
			Turn: int32(e.Turn), Problem: e.Problem}}}
	case investigate.CommandDone:
		return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Command{Command: commandOutcome(e, lines)}}
	case investigate.TraceDone:
		return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Trace{Trace: tracePB(e)}}
	case investigate.Resolved:
		r := e.Reply
		return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Resolution{Resolution: &workerv1.DiagnoseResolution{
			RootCause: r.RootCause, ResolutionPlan: r.ResolutionPlan, Confidence: r.Confidence, EbpfEvidence: r.EBPFEvidence}}}
	}
	return nil
}

func commandOutcome(e investigate.CommandDone, lines int) *workerv1.CommandOutcome {
	r := e.Result
	c := &workerv1.CommandOutcome{
		Turn: int32(e.Turn), Id: r.ID, Command: r.Command, Description: r.Description,
		Allowed: !r.Denied, Rules: r.Rules, Reason: r.Reason, DeniedBy: r.DeniedBy,
		ExitCode: int32(r.ExitCode), TimedOut: r.TimedOut, Truncated: r.Truncated,
	}
	if r.Duration > 0 {
		c.Duration = durationpb.New(r.Duration)
	}
	if r.Output != "" {
		all := strings.Split(strings.TrimRight(r.Output, "\n"), "\n")
		c.OutputLines = int32(len(all))
		for _, l := range all[:min(lines, len(all))] {
			c.OutputHead = append(c.OutputHead, clipLine(l))
		}
	}
	return c
}

func tracePB(e investigate.TraceDone) *workerv1.TraceOutcome {
	t := e.Trace
	pb := &workerv1.TraceOutcome{
		Turn: int32(e.Turn), Name: t.Name, Kind: t.Kind, Probe: t.Probe, Target: t.Target, Measure: t.Measure,
		Filter: t.Filter, Ok: t.OK, Denied: t.Denied, Error: t.Error, Events: t.Events,
		EventsPerSecond: t.EventsPerSec, LostEvents: t.LostEvents, Warnings: t.Warnings,
		TopProcesses: keyCounts(t.TopProcesses), TopPaths: keyCounts(t.TopPaths), Errors: keyCounts(t.Errors),
	}
	if t.Duration > 0 {
		pb.Duration = durationpb.New(t.Duration)
	}
	for _, h := range t.Histograms {
		hs := &workerv1.HistogramSummary{Map: h.Map, Key: h.Key, Count: h.Count, Average: h.Average}
		for _, p := range h.Percentiles {
			hs.Percentiles = append(hs.Percentiles, &workerv1.Percentile{Percent: int32(p.Percent), Low: p.Low, High: p.High})
		}
		pb.Histograms = append(pb.Histograms, hs)
	}
	return pb
}

func keyCounts(in []investigate.KeyCount) []*workerv1.KeyCount {
	out := make([]*workerv1.KeyCount, 0, len(in))
	for _, k := range in {
		out = append(out, &workerv1.KeyCount{Key: k.Key, Count: k.Count})
	}
	return out
}

func clipLine(s string) string {
	if len(s) <= maxLineBytes {
		return s
	}
	cut := maxLineBytes
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

// traceOutcome reads a trace's headline numbers out of the model's result:
// the busiest processes and paths, the errors, and each histogram's
// percentiles (with the average of the stats() map that goes with it).
func traceOutcome(r ebpf.Result) investigate.TraceOutcome {
	t := investigate.TraceOutcome{
		Name: r.Name, Kind: r.Kind, Probe: r.Probe, Target: r.Target, Measure: r.Measure, Filter: r.Filter,
		OK: r.Success, Denied: r.Denied, Error: r.Error, Events: r.EventCount, EventsPerSec: r.EventsPerSecond,
		LostEvents: r.LostEvents, Warnings: r.Warnings,
	}
	t.Duration = secondsToDuration(r.Duration)
	averages := map[string]int64{}
	for _, a := range r.Aggregates {
		if base, ok := strings.CutSuffix(a.Name, "_stats"); ok {
			for _, s := range a.Stats {
				averages[base+"\x00"+s.Key] = s.Average
			}
		}
	}
	for _, a := range r.Aggregates {
		switch a.Name {
		case "@by_process":
			t.TopProcesses = top(a.Entries)
		case "@by_path":
			t.TopPaths = top(a.Entries)
		case "@errors":
			t.Errors = top(a.Entries)
		}
		for _, h := range a.Histograms {
			hs := investigate.HistogramSummary{Map: a.Name, Key: h.Key, Count: h.Count(), Average: averages[a.Name+"\x00"+h.Key]}
			for _, p := range percentiles {
				if b, ok := h.Percentile(p); ok {
					hs.Percentiles = append(hs.Percentiles, investigate.Percentile{Percent: p, Low: b.Low, High: b.High})
				}
			}
			t.Histograms = append(t.Histograms, hs)
		}
	}
	return t
}

// top is the largest entries first, ties by key, at most topKeys.
func top(entries []ebpf.Entry) []investigate.KeyCount {
	sorted := slices.Clone(entries)
	slices.SortStableFunc(sorted, func(a, b ebpf.Entry) int {
		return cmp.Or(cmp.Compare(b.Value, a.Value), strings.Compare(a.Key, b.Key))
	})
	out := make([]investigate.KeyCount, 0, topKeys)
	for _, e := range sorted[:min(topKeys, len(sorted))] {
		out = append(out, investigate.KeyCount{Key: e.Key, Count: e.Value})
	}
	return out
}

func secondsToDuration(s float64) time.Duration {
	if s <= 0 {
		return 0
	}
	return time.Duration(s * float64(time.Second))
}
