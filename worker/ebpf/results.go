package ebpf

import (
	"fmt"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Bounds on what one trace adds to the model's next message.
const (
	maxOutputBytes  = 4 << 10
	maxSummaryBytes = 400
	maxErrorBytes   = 1 << 10
	maxTargetBytes  = 200
)

// Trace is one item's whole story: its conversion, and the broker's answer
// or the error that stopped the request.
type Trace struct {
	Conversion Conversion
	Response   *brokerv1.RunTraceResponse
	Err        error
}

// Turn is what a turn's traces add to the results JSON: the reference
// agent's three keys, so the backend's prompts keep working. Merge it with
// Fields, or embed it (its JSON tags are those keys).
type Turn struct {
	Results  []Result `json:"ebpf_results"`
	Executed int      `json:"executed_ebpf_programs"`
	Evidence []string `json:"ebpf_evidence_summary"`
}

// Fields returns the keys to merge into a turn's results object; nil when
// the turn had no eBPF programs (the reference agent then sends none).
func (t Turn) Fields() map[string]any {
	if len(t.Results) == 0 {
		return nil
	}
	return map[string]any{
		"ebpf_results":           t.Results,
		"executed_ebpf_programs": t.Executed,
		"ebpf_evidence_summary":  t.Evidence,
	}
}

// Result is one trace as the model sees it. The first fields are the
// reference agent's; the rest are ours.
type Result struct {
	Index           int     `json:"index"`
	Target          string  `json:"target"`
	Success         bool    `json:"success"`
	EventCount      int64   `json:"event_count"`
	EventsPerSecond float64 `json:"events_per_second"`
	// Duration is the seconds the probes were attached.
	Duration float64 `json:"duration"`
	Summary  string  `json:"summary"`
	// Output renders the aggregates and the sample as text.
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`

	Name    string `json:"name,omitempty"`
	Kind    string `json:"kind,omitempty"`
	Probe   string `json:"probe,omitempty"`
	Measure string `json:"measure,omitempty"`
	Filter  string `json:"filter,omitempty"`
	// Denied says the broker refused the trace before running it.
	Denied         bool        `json:"denied,omitempty"`
	Aggregates     []Aggregate `json:"aggregates,omitempty"`
	Samples        []string    `json:"samples,omitempty"`
	SamplesDropped int64       `json:"samples_not_shown,omitempty"`
	LostEvents     int64       `json:"lost_events,omitempty"`
	AttachedProbes int32       `json:"attached_probes,omitempty"`
	Truncated      bool        `json:"truncated,omitempty"`
	Warnings       []string    `json:"warnings,omitempty"`
	Ignored        []string    `json:"ignored,omitempty"`
	Notes          []string    `json:"notes,omitempty"`
}

// Aggregate is one map the trace printed.
type Aggregate struct {
	Name       string      `json:"name"`
	Value      *int64      `json:"value,omitempty"`
	Entries    []Entry     `json:"entries,omitempty"`
	Histograms []Histogram `json:"histograms,omitempty"`
	Stats      []Stats     `json:"stats,omitempty"`
	// Omitted counts keys left out; the largest are kept.
	Omitted int64 `json:"omitted_keys,omitempty"`
}

// Entry is one key of a counting map.
type Entry struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
	Text  string `json:"text,omitempty"`
}

// Histogram is one key of a histogram map; empty buckets are left out.
type Histogram struct {
	Key     string   `json:"key,omitempty"`
	Buckets []Bucket `json:"buckets"`
}

// Bucket is a closed range of values, "[4, 7]"; "(…, -1]" and "[1024, …)"
// are open.
type Bucket struct {
	Range string `json:"range"`
	Count uint64 `json:"count"`
	// Low and High are the bounds Range shows; nil is open.
	Low  *int64 `json:"-"`
	High *int64 `json:"-"`
}

// Count is the number of values in the histogram.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, b := range h.Buckets {
		n += b.Count
	}
	return n
}

// Percentile returns the bucket the percent-th value (1–100) falls in,
// false for an empty histogram.
func (h Histogram) Percentile(percent int) (Bucket, bool) {
	total := h.Count()
	if total == 0 || percent <= 0 {
		return Bucket{}, false
	}
	// The rank of the value, rounded up: p50 of 3 values is the 2nd.
	rank := (total*uint64(min(percent, 100)) + 99) / 100
	var seen uint64
	for _, b := range h.Buckets {
		seen += b.Count
		if seen >= rank {
			return b, true
		}
	}
	return h.Buckets[len(h.Buckets)-1], true
}

// Stats is one key of a stats() map.
type Stats struct {
	Key     string `json:"key,omitempty"`
	Count   int64  `json:"count"`
	Average int64  `json:"average"`
	Total   int64  `json:"total"`
}

// Results turns a turn's traces, in the order the model listed them, into
// the results the model reads.
func Results(traces []Trace) Turn {
	t := Turn{Results: []Result{}, Evidence: []string{}}
	for i, tr := range traces {
		r := result(i, tr)
		if tr.Response != nil && !tr.Response.Refused {
			t.Executed++
		}
		t.Results = append(t.Results, r)
		status := "failed"
		if r.Success {
			status = "success"
		}
		t.Evidence = append(t.Evidence, fmt.Sprintf("%s: %d events (%s) - %s", r.Target, r.EventCount, status, r.Summary))
	}
	return t
}

func result(i int, tr Trace) Result {
	c := tr.Conversion
	r := Result{
		Index:   i,
		Target:  clip(strings.TrimSpace(c.Program.Target), maxTargetBytes),
		Name:    c.Program.Name,
		Ignored: c.Ignored,
		Notes:   c.Notes,
	}
	if r.Target == "" {
		r.Target = "(no target)"
	}
	if spec := c.Spec; spec != nil {
		r.Kind = kindName(spec.Kind)
		r.Probe = probeName(spec)
		r.Measure = measureName(spec.GetMeasure())
		r.Filter = filterText(spec.GetFilter())
	}
	switch {
	case c.Spec == nil:
		r.Error = "not traced: " + c.Err
	case tr.Err != nil:
		r.Error = clip("broker: "+tr.Err.Error(), maxErrorBytes)
	case tr.Response == nil:
		r.Error = "broker: no response"
	case tr.Response.Refused:
		r.Denied = true
		r.Error = clip("denied: "+tr.Response.Error, maxErrorBytes)
	default:
		fill(&r, tr.Response)
	}
	r.Summary = summary(r)
	return r
}

func fill(r *Result, resp *brokerv1.RunTraceResponse) {
	r.Success = resp.Ok
	if !resp.Ok {
		r.Error = clip(resp.Error, maxErrorBytes)
		if r.Error == "" {
			r.Error = "trace failed without a reason"
		}
	}
	r.EventCount = resp.Events
	r.Duration = resp.GetDuration().AsDuration().Seconds()
	if r.Duration > 0 {
		r.EventsPerSecond = float64(resp.Events) / r.Duration
	}
	r.Samples, r.SamplesDropped = resp.Samples, resp.SamplesDropped
	r.LostEvents, r.AttachedProbes, r.Truncated = resp.LostEvents, resp.AttachedProbes, resp.Truncated
	for _, w := range resp.Warnings {
		// bpftrace 0.17 prints this on every run, successful or not; it
		// says nothing about the trace and reads like a failure.
		if resp.Ok && strings.Contains(w, "RLIMIT_MEMLOCK") {
			continue
		}
		r.Warnings = append(r.Warnings, w)
	}
	for _, m := range resp.Maps {
		r.Aggregates = append(r.Aggregates, aggregate(m))
	}
	r.Output = render(r)
}

func aggregate(m *brokerv1.TraceMap) Aggregate {
	a := Aggregate{Name: m.Name, Omitted: m.Dropped}
	if m.Value != nil {
		v := m.GetValue()
		a.Value = &v
	}
	for _, e := range m.Entries {
		a.Entries = append(a.Entries, Entry{Key: e.Key, Value: e.Value, Text: e.Text})
	}
	for _, h := range m.Histograms {
		hist := Histogram{Key: h.Key, Buckets: []Bucket{}}
		for _, b := range h.Buckets {
			if b.Count == 0 {
				continue
			}
			hist.Buckets = append(hist.Buckets, Bucket{Range: bucketRange(b), Count: b.Count, Low: b.Min, High: b.Max})
		}
		a.Histograms = append(a.Histograms, hist)
	}
	for _, s := range m.Stats {
		a.Stats = append(a.Stats, Stats{Key: s.Key, Count: s.Count, Average: s.Average, Total: s.Total})
	}
	return a
}

func bucketRange(b *brokerv1.HistogramBucket) string {
	switch {
	case b.Min == nil && b.Max == nil:
		return "(…, …)"
	case b.Min == nil:
		return fmt.Sprintf("(…, %d]", b.GetMax())
	case b.Max == nil:
		return fmt.Sprintf("[%d, …)", b.GetMin())
	}
	return fmt.Sprintf("[%d, %d]", b.GetMin(), b.GetMax())
}

// summary is one line: what ran, how much happened, the top process, and
// for failures the reason.
func summary(r Result) string {
	what := r.Probe
	if what == "" {
		what = r.Target
	}
	var s string
	switch {
	case r.Denied || (!r.Success && r.EventCount == 0):
		s = r.Error
	case !r.Success:
		s = fmt.Sprintf("traced %s for %.1fs, then failed: %s", what, r.Duration, r.Error)
	default:
		s = fmt.Sprintf("traced %s for %.1fs: %d events (%.2f/s)", what, r.Duration, r.EventCount, r.EventsPerSecond)
		if top := topProcess(r); top != "" {
			s += "; top process " + top
		}
		if lat := latency(r); lat != "" {
			s += "; " + lat
		}
		if r.LostEvents > 0 {
			s += fmt.Sprintf("; %d events lost", r.LostEvents)
		}
	}
	return clip(s, maxSummaryBytes)
}

func topProcess(r Result) string {
	for _, a := range r.Aggregates {
		if a.Name == "@by_process" && len(a.Entries) > 0 {
			e := a.Entries[0]
			return fmt.Sprintf("%s (%d events)", e.Key, e.Value)
		}
	}
	return ""
}

func latency(r Result) string {
	for _, a := range r.Aggregates {
		if a.Name == "@latency_us_stats" && len(a.Stats) > 0 && a.Stats[0].Count > 0 {
			return fmt.Sprintf("average latency %d µs over %d calls", a.Stats[0].Average, a.Stats[0].Count)
		}
	}
	return ""
}

// render writes the aggregates and the sample as text, bounded.
func render(r *Result) string {
	var b strings.Builder
	for _, a := range r.Aggregates {
		if a.Value != nil {
			fmt.Fprintf(&b, "%s: %d\n", a.Name, *a.Value)
			continue
		}
		fmt.Fprintf(&b, "%s", a.Name)
		if a.Omitted > 0 {
			fmt.Fprintf(&b, " (largest shown, %d more keys)", a.Omitted)
		}
		b.WriteString(":\n")
		for _, e := range a.Entries {
			if e.Text != "" {
				fmt.Fprintf(&b, "  %s = %s\n", keyText(e.Key), e.Text)
			} else {
				fmt.Fprintf(&b, "  %s = %d\n", keyText(e.Key), e.Value)
			}
		}
		for _, h := range a.Histograms {
			if h.Key != "" {
				fmt.Fprintf(&b, "  %s:\n", h.Key)
			}
			for _, bk := range h.Buckets {
				fmt.Fprintf(&b, "    %s %d\n", bk.Range, bk.Count)
			}
		}
		for _, s := range a.Stats {
			fmt.Fprintf(&b, "  %s count %d average %d total %d\n", keyText(s.Key), s.Count, s.Average, s.Total)
		}
	}
	if len(r.Samples) > 0 {
		fmt.Fprintf(&b, "first %d events", len(r.Samples))
		if r.SamplesDropped > 0 {
			fmt.Fprintf(&b, " (%d more not shown)", r.SamplesDropped)
		}
		b.WriteString(":\n")
		for _, s := range r.Samples {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return clip(strings.TrimRight(b.String(), "\n"), maxOutputBytes)
}

func keyText(k string) string {
	if k == "" {
		return "(all)"
	}
	return k
}

func kindName(k brokerv1.TraceKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "TRACE_KIND_"))
}

func measureName(m brokerv1.TraceMeasure) string {
	if m == brokerv1.TraceMeasure_TRACE_MEASURE_UNSPECIFIED {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(m.String(), "TRACE_MEASURE_"))
}

// probeName is what the trace attaches to, as bpftrace spells it.
func probeName(spec *brokerv1.TraceSpec) string {
	switch spec.Kind {
	case brokerv1.TraceKind_TRACE_KIND_TRACEPOINT:
		return "tracepoint:" + spec.Target
	case brokerv1.TraceKind_TRACE_KIND_SYSCALL:
		// Sizes and return values are read at the exit alone.
		switch spec.GetMeasure() {
		case brokerv1.TraceMeasure_TRACE_MEASURE_SIZE, brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL:
			return "tracepoint:syscalls:sys_exit_" + spec.Target
		}
		return "tracepoint:syscalls:sys_enter_" + spec.Target + " and sys_exit_" + spec.Target
	case brokerv1.TraceKind_TRACE_KIND_KPROBE:
		return "kprobe:" + spec.Target
	case brokerv1.TraceKind_TRACE_KIND_KRETPROBE:
		return "kretprobe:" + spec.Target
	case brokerv1.TraceKind_TRACE_KIND_RAW:
		return "bpftrace program"
	}
	return ""
}

func filterText(f *brokerv1.TraceFilter) string {
	if f == nil {
		return ""
	}
	var parts []string
	if f.Pid != nil {
		parts = append(parts, fmt.Sprintf("pid=%d", f.GetPid()))
	}
	if f.Comm != "" {
		parts = append(parts, "comm="+f.Comm)
	}
	if f.Uid != nil {
		parts = append(parts, fmt.Sprintf("uid=%d", f.GetUid()))
	}
	return strings.Join(parts, " ")
}
