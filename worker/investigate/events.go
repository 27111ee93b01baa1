package investigate

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event is one thing that happened in an investigation, for a person
// following it: TurnStarted, CommandDone, TraceDone, Retried or Resolved.
// Events arrive in order from one goroutine.
type Event interface{ isEvent() }

// TurnStarted is a model answer that asks for evidence.
type TurnStarted struct {
	Turn      int
	Reasoning string
	Commands  int
	Traces    int
}

// CommandDone is one command's decision and outcome.
type CommandDone struct {
	Turn   int
	Result CommandResult
}

// TraceDone is one trace's outcome.
type TraceDone struct {
	Turn  int
	Trace TraceOutcome
}

// Retried says the model's answer could not be used and the model was
// asked again in the agreed format.
type Retried struct {
	Turn    int
	Problem string
}

// Resolved is the model's conclusion.
type Resolved struct {
	Reply Reply
}

func (TurnStarted) isEvent() {}
func (CommandDone) isEvent() {}
func (TraceDone) isEvent()   {}
func (Retried) isEvent()     {}
func (Resolved) isEvent()    {}

// TraceRun is what a turn's traces produced: the keys merged into the
// model's next message, and one outcome per program for the person.
type TraceRun struct {
	Fields   map[string]any
	Outcomes []TraceOutcome
}

// TraceOutcome is one trace as a person reads it: what it attached to,
// for how long, its headline numbers, or why it failed.
type TraceOutcome struct {
	Name, Kind, Probe, Target, Measure, Filter string

	OK bool
	// Denied: the broker refused the trace before running it.
	Denied bool
	Error  string

	Duration     time.Duration
	Events       int64
	EventsPerSec float64
	LostEvents   int64

	// TopProcesses, TopPaths and Errors are the largest keys first.
	TopProcesses []KeyCount
	TopPaths     []KeyCount
	Errors       []KeyCount
	Histograms   []HistogramSummary
	Warnings     []string
}

// KeyCount is one key of a counting map.
type KeyCount struct {
	Key   string
	Count int64
}

// HistogramSummary is one histogram's percentiles.
type HistogramSummary struct {
	Map, Key    string
	Count       uint64
	Percentiles []Percentile
	// Average comes from the trace's stats() map, 0 when it kept none.
	Average int64
}

// Percentile is the bucket the Percent-th value falls in; a nil bound is
// open.
type Percentile struct {
	Percent   int
	Low, High *int64
}

// unavailableTraces answers programs when no tracer is configured.
func unavailableTraces(programs []json.RawMessage) TraceRun {
	run := TraceRun{}
	summary := make([]string, len(programs))
	for i := range programs {
		summary[i] = fmt.Sprintf("program %d: not run (eBPF tracing is not available)", i)
		run.Outcomes = append(run.Outcomes, TraceOutcome{Error: "not run: eBPF tracing is not available in this worker"})
	}
	run.Fields = map[string]any{"ebpf_results": []any{}, "executed_ebpf_programs": 0, "ebpf_evidence_summary": summary}
	return run
}
