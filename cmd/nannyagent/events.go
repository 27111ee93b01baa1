package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// jsonEvent is one line of `nannyagent diagnose --json` (cmd/README.md
// documents it). Every line has "event"; the other keys depend on it.
type jsonEvent struct {
	Event           string `json:"event"`
	InvestigationID string `json:"investigation_id,omitempty"`

	// started
	Issue          string   `json:"issue,omitempty"`
	MaxTurns       int32    `json:"max_turns,omitempty"`
	TimeoutSeconds *float64 `json:"timeout_seconds,omitempty"`

	// turn, retry, command, trace
	Turn      int32  `json:"turn,omitempty"`
	Reasoning string `json:"reasoning,omitempty"`
	Commands  *int32 `json:"commands,omitempty"`
	Traces    *int32 `json:"traces,omitempty"`
	Problem   string `json:"problem,omitempty"`

	Command *jsonCommand `json:"command,omitempty"`
	Trace   *jsonTrace   `json:"trace,omitempty"`

	// resolution
	RootCause      string `json:"root_cause,omitempty"`
	ResolutionPlan string `json:"resolution_plan,omitempty"`
	Confidence     string `json:"confidence,omitempty"`
	EBPFEvidence   string `json:"ebpf_evidence,omitempty"`

	// progress
	Message string `json:"message,omitempty"`

	// failed, end
	Reason   string `json:"reason,omitempty"`
	Outcome  string `json:"outcome,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
}

type jsonCommand struct {
	ID          string   `json:"id"`
	Command     string   `json:"command"`
	Description string   `json:"description"`
	Allowed     bool     `json:"allowed"`
	Rules       []string `json:"rules"`
	DeniedBy    string   `json:"denied_by,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	ExitCode    int32    `json:"exit_code"`
	DurationMS  float64  `json:"duration_ms"`
	TimedOut    bool     `json:"timed_out"`
	Truncated   bool     `json:"truncated"`
	OutputLines int32    `json:"output_lines"`
	OutputHead  []string `json:"output_head"`
}

type jsonTrace struct {
	Name            string          `json:"name"`
	Kind            string          `json:"kind"`
	Probe           string          `json:"probe"`
	Target          string          `json:"target"`
	Measure         string          `json:"measure"`
	Filter          string          `json:"filter"`
	OK              bool            `json:"ok"`
	Denied          bool            `json:"denied"`
	Error           string          `json:"error,omitempty"`
	DurationSeconds float64         `json:"duration_seconds"`
	Events          int64           `json:"events"`
	EventsPerSecond float64         `json:"events_per_second"`
	LostEvents      int64           `json:"lost_events"`
	TopProcesses    []jsonKeyCount  `json:"top_processes"`
	TopPaths        []jsonKeyCount  `json:"top_paths"`
	Errors          []jsonKeyCount  `json:"errors"`
	Histograms      []jsonHistogram `json:"histograms"`
	Warnings        []string        `json:"warnings"`
}

type jsonKeyCount struct {
	Key   string `json:"key"`
	Count int64  `json:"count"`
}

type jsonHistogram struct {
	Map         string           `json:"map"`
	Key         string           `json:"key"`
	Count       uint64           `json:"count"`
	Average     int64            `json:"average"`
	Percentiles []jsonPercentile `json:"percentiles"`
}

type jsonPercentile struct {
	Percent int32  `json:"percent"`
	Low     *int64 `json:"low"`
	High    *int64 `json:"high"`
}

// eventPrinter writes one investigation's events as text or JSON lines.
type eventPrinter struct {
	w       io.Writer
	json    bool
	verbose bool
	id      string
}

// event prints ev and reports whether it was the resolution.
func (p *eventPrinter) event(ev *workerv1.DiagnoseResponse) (resolved bool) {
	switch e := ev.GetEvent().(type) {
	case *workerv1.DiagnoseResponse_Started:
		p.id = e.Started.GetInvestigationId()
		p.started(e.Started)
	case *workerv1.DiagnoseResponse_Progress:
		if p.json {
			p.emit(jsonEvent{Event: "progress", Message: e.Progress})
		} else {
			fmt.Fprintln(p.w, clean(e.Progress))
		}
	case *workerv1.DiagnoseResponse_Turn:
		p.turn(e.Turn)
	case *workerv1.DiagnoseResponse_Retry:
		if p.json {
			p.emit(jsonEvent{Event: "retry", Turn: e.Retry.GetTurn(), Problem: e.Retry.GetProblem()})
		} else {
			fmt.Fprintf(p.w, "\n--- turn %d: the model's answer could not be used (%s); it was asked once more\n", e.Retry.GetTurn(), clean(e.Retry.GetProblem()))
		}
	case *workerv1.DiagnoseResponse_Command:
		p.command(e.Command)
	case *workerv1.DiagnoseResponse_Trace:
		p.trace(e.Trace)
	case *workerv1.DiagnoseResponse_Resolution:
		p.resolution(e.Resolution)
		return true
	}
	return false
}

func (p *eventPrinter) emit(ev jsonEvent) {
	if ev.InvestigationID == "" {
		ev.InvestigationID = p.id
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return
	}
	p.w.Write(append(escapeJSON(data), '\n'))
}

// failed ends an investigation that did not resolve.
func (p *eventPrinter) failed(reason string) {
	if p.json {
		p.emit(jsonEvent{Event: "failed", Reason: reason})
		return
	}
	fmt.Fprintf(p.w, "\n=== DIAGNOSIS FAILED ===\n%s\n", clean(reason))
}

// end closes the JSON stream with the exit code.
func (p *eventPrinter) end(code int) {
	if !p.json {
		return
	}
	outcome := "resolved"
	if code != exitOK {
		outcome = "failed"
	}
	p.emit(jsonEvent{Event: "end", Outcome: outcome, ExitCode: &code})
}

func (p *eventPrinter) started(s *workerv1.DiagnoseStarted) {
	if p.json {
		var secs *float64
		if s.GetTimeout() != nil {
			v := s.GetTimeout().AsDuration().Seconds()
			secs = &v
		}
		p.emit(jsonEvent{Event: "started", Issue: s.GetIssue(), MaxTurns: s.GetMaxTurns(), TimeoutSeconds: secs})
		return
	}
	fmt.Fprintf(p.w, "Investigation %s started: %q\n", clean(s.GetInvestigationId()), clean(s.GetIssue()))
	if s.GetMaxTurns() > 0 {
		fmt.Fprintf(p.w, "(at most %d turns and %s; the broker's policy decides what runs)\n", s.GetMaxTurns(), s.GetTimeout().AsDuration())
	}
}

func (p *eventPrinter) turn(t *workerv1.DiagnoseTurn) {
	if p.json {
		c, tr := t.GetCommands(), t.GetTraces()
		p.emit(jsonEvent{Event: "turn", Turn: t.GetTurn(), Reasoning: t.GetReasoning(), Commands: &c, Traces: &tr})
		return
	}
	var asks []string
	if t.GetCommands() > 0 {
		asks = append(asks, plural(t.GetCommands(), "command"))
	}
	if t.GetTraces() > 0 {
		asks = append(asks, plural(t.GetTraces(), "trace"))
	}
	fmt.Fprintf(p.w, "\n--- turn %d: the model asks for %s\n", t.GetTurn(), strings.Join(asks, " and "))
	if r := strings.TrimSpace(t.GetReasoning()); r != "" {
		fmt.Fprintf(p.w, "reasoning: %s\n", indent(cleanBlock(r), "           "))
	}
}

func (p *eventPrinter) command(c *workerv1.CommandOutcome) {
	if p.json {
		jc := &jsonCommand{
			ID: c.GetId(), Command: c.GetCommand(), Description: c.GetDescription(), Allowed: c.GetAllowed(),
			Rules: nonNil(c.GetRules()), DeniedBy: c.GetDeniedBy(), Reason: c.GetReason(), ExitCode: c.GetExitCode(),
			DurationMS: float64(c.GetDuration().AsDuration().Microseconds()) / 1000, TimedOut: c.GetTimedOut(),
			Truncated: c.GetTruncated(), OutputLines: c.GetOutputLines(), OutputHead: nonNil(c.GetOutputHead()),
		}
		p.emit(jsonEvent{Event: "command", Turn: c.GetTurn(), Command: jc})
		return
	}
	const pad = "           "
	if !c.GetAllowed() {
		fmt.Fprintf(p.w, "  DENIED   %s\n", clean(c.GetCommand()))
		by := "by the broker's policy"
		if c.GetDeniedBy() == "parser" {
			by = "before it reached the broker (the command line itself is refused)"
		}
		if rules := c.GetRules(); len(rules) > 0 {
			by += ", rule " + clean(strings.Join(rules, ", "))
		} else if c.GetDeniedBy() != "parser" {
			by += ", no rule allows it"
		}
		fmt.Fprintf(p.w, "%sdenied %s:\n%s%s\n", pad, by, pad, clean(c.GetReason()))
		return
	}
	fmt.Fprintf(p.w, "  ran      %s\n", clean(c.GetCommand()))
	status := fmt.Sprintf("exit %d", c.GetExitCode())
	if d := c.GetDuration().AsDuration(); d > 0 {
		status += fmt.Sprintf(" in %s", roundDuration(d))
	}
	if c.GetTimedOut() {
		status += ", timed out"
	}
	if c.GetTruncated() {
		status += ", output cut at the broker's limit"
	}
	fmt.Fprintf(p.w, "%sallowed by %s; %s; %s of output\n", pad, ruleList(c.GetRules()), status, plural(c.GetOutputLines(), "line"))
	if c.GetReason() != "" {
		fmt.Fprintf(p.w, "%s%s\n", pad, clean(c.GetReason()))
	}
	if p.verbose {
		for _, l := range c.GetOutputHead() {
			fmt.Fprintf(p.w, "%s| %s\n", pad, clean(l))
		}
		if more := int(c.GetOutputLines()) - len(c.GetOutputHead()); more > 0 && len(c.GetOutputHead()) > 0 {
			fmt.Fprintf(p.w, "%s| (%d more)\n", pad, more)
		}
	}
}

func (p *eventPrinter) trace(t *workerv1.TraceOutcome) {
	if p.json {
		p.emit(jsonEvent{Event: "trace", Turn: t.GetTurn(), Trace: traceJSON(t)})
		return
	}
	const pad = "           "
	what := t.GetProbe()
	if what == "" {
		what = t.GetTarget()
	}
	switch {
	case t.GetName() != "" && what != "":
		what = t.GetName() + ": " + what
	case t.GetName() != "":
		what = t.GetName()
	case what == "":
		what = "(no target)"
	}
	if t.GetFilter() != "" {
		what += " (" + t.GetFilter() + ")"
	}
	switch {
	case t.GetDenied():
		fmt.Fprintf(p.w, "  DENIED   trace %s\n%s%s\n", clean(what), pad, clean(t.GetError()))
		return
	case !t.GetOk():
		fmt.Fprintf(p.w, "  FAILED   trace %s\n%s%s\n", clean(what), pad, clean(failure(t)))
		return
	}
	fmt.Fprintf(p.w, "  traced   %s\n", clean(what))
	fmt.Fprintf(p.w, "%sfor %s: %d events (%.1f/s)", pad, roundDuration(t.GetDuration().AsDuration()), t.GetEvents(), t.GetEventsPerSecond())
	if t.GetLostEvents() > 0 {
		fmt.Fprintf(p.w, ", %d lost", t.GetLostEvents())
	}
	fmt.Fprintln(p.w)
	if len(t.GetTopProcesses()) > 0 {
		fmt.Fprintf(p.w, "%stop processes: %s\n", pad, keyCounts(t.GetTopProcesses()))
	}
	if len(t.GetTopPaths()) > 0 {
		fmt.Fprintf(p.w, "%stop paths: %s\n", pad, keyCounts(t.GetTopPaths()))
	}
	if len(t.GetErrors()) > 0 {
		fmt.Fprintf(p.w, "%serrors (errno): %s\n", pad, keyCounts(t.GetErrors()))
	}
	for _, h := range t.GetHistograms() {
		fmt.Fprintf(p.w, "%s%s\n", pad, histogramLine(h))
	}
	if p.verbose {
		for _, w := range t.GetWarnings() {
			fmt.Fprintf(p.w, "%swarning: %s\n", pad, clean(w))
		}
	}
}

func failure(t *workerv1.TraceOutcome) string {
	if t.GetEvents() > 0 {
		return fmt.Sprintf("after %s and %d events: %s", roundDuration(t.GetDuration().AsDuration()), t.GetEvents(), t.GetError())
	}
	if t.GetError() == "" {
		return "failed without a reason"
	}
	return t.GetError()
}

func (p *eventPrinter) resolution(r *workerv1.DiagnoseResolution) {
	if p.json {
		p.emit(jsonEvent{Event: "resolution", RootCause: r.GetRootCause(), ResolutionPlan: r.GetResolutionPlan(),
			Confidence: r.GetConfidence(), EBPFEvidence: r.GetEbpfEvidence()})
		return
	}
	fmt.Fprintf(p.w, "\n=== DIAGNOSIS COMPLETE ===\nRoot cause: %s\nConfidence: %s\nResolution plan:\n  %s\n",
		indent(cleanBlock(r.GetRootCause()), "  "), clean(r.GetConfidence()), indent(cleanBlock(r.GetResolutionPlan()), "  "))
	if r.GetEbpfEvidence() != "" {
		fmt.Fprintf(p.w, "eBPF evidence: %s\n", indent(cleanBlock(r.GetEbpfEvidence()), "  "))
	}
}

func traceJSON(t *workerv1.TraceOutcome) *jsonTrace {
	jt := &jsonTrace{
		Name: t.GetName(), Kind: t.GetKind(), Probe: t.GetProbe(), Target: t.GetTarget(), Measure: t.GetMeasure(),
		Filter: t.GetFilter(), OK: t.GetOk(), Denied: t.GetDenied(), Error: t.GetError(),
		DurationSeconds: t.GetDuration().AsDuration().Seconds(), Events: t.GetEvents(),
		EventsPerSecond: t.GetEventsPerSecond(), LostEvents: t.GetLostEvents(), Warnings: nonNil(t.GetWarnings()),
		TopProcesses: jsonKeyCounts(t.GetTopProcesses()), TopPaths: jsonKeyCounts(t.GetTopPaths()),
		Errors: jsonKeyCounts(t.GetErrors()), Histograms: []jsonHistogram{},
	}
	for _, h := range t.GetHistograms() {
		jh := jsonHistogram{Map: h.GetMap(), Key: h.GetKey(), Count: h.GetCount(), Average: h.GetAverage(), Percentiles: []jsonPercentile{}}
		for _, pc := range h.GetPercentiles() {
			jh.Percentiles = append(jh.Percentiles, jsonPercentile{Percent: pc.GetPercent(), Low: pc.Low, High: pc.High})
		}
		jt.Histograms = append(jt.Histograms, jh)
	}
	return jt
}

func jsonKeyCounts(in []*workerv1.KeyCount) []jsonKeyCount {
	out := make([]jsonKeyCount, 0, len(in))
	for _, k := range in {
		out = append(out, jsonKeyCount{Key: k.GetKey(), Count: k.GetCount()})
	}
	return out
}

func keyCounts(in []*workerv1.KeyCount) string {
	parts := make([]string, 0, len(in))
	for _, k := range in {
		parts = append(parts, fmt.Sprintf("%s (%d)", clean(k.GetKey()), k.GetCount()))
	}
	return strings.Join(parts, ", ")
}

// histogramLine is "@latency_us: p50 16–31, p90 64–127, p99 ≥1024 (n=400, average 12)".
func histogramLine(h *workerv1.HistogramSummary) string {
	name := h.GetMap()
	if h.GetKey() != "" {
		name += "[" + h.GetKey() + "]"
	}
	parts := make([]string, 0, len(h.GetPercentiles()))
	for _, pc := range h.GetPercentiles() {
		parts = append(parts, fmt.Sprintf("p%d %s", pc.GetPercent(), bucket(pc)))
	}
	line := fmt.Sprintf("%s: %s (n=%d", clean(name), strings.Join(parts, ", "), h.GetCount())
	if h.GetAverage() != 0 {
		line += fmt.Sprintf(", average %d", h.GetAverage())
	}
	return line + ")"
}

func bucket(pc *workerv1.Percentile) string {
	switch {
	case pc.Low == nil && pc.High == nil:
		return "any"
	case pc.Low == nil:
		return fmt.Sprintf("≤%d", pc.GetHigh())
	case pc.High == nil:
		return fmt.Sprintf("≥%d", pc.GetLow())
	case pc.GetLow() == pc.GetHigh():
		return fmt.Sprintf("%d", pc.GetLow())
	}
	return fmt.Sprintf("%d–%d", pc.GetLow(), pc.GetHigh())
}

func ruleList(rules []string) string {
	switch len(rules) {
	case 0:
		return "the policy"
	case 1:
		return "rule " + clean(rules[0])
	}
	return "rules " + clean(strings.Join(rules, " | "))
}

func plural(n int32, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

func indent(s, pad string) string { return strings.ReplaceAll(s, "\n", "\n"+pad) }

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Microsecond)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
