package trace

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// minDuration keeps the exit interval meaningful.
const minDuration = 100 * time.Millisecond

// Plan is a validated spec and the program the broker wrote for it.
type Plan struct {
	Kind    brokerv1.TraceKind
	Measure brokerv1.TraceMeasure
	// Target as validated: "syscalls:sys_enter_openat", "read", "vfs_read".
	Target string
	// Probes are the probes the program attaches to, as the policy names
	// them ("syscalls:sys_enter_read", "kprobe:vfs_read"); empty for raw.
	Probes []string
	// Matched are the policy patterns that allowed each probe, for the
	// decision log.
	Matched []string
	// Duration is how long the trace runs once attached, after capping.
	Duration time.Duration
	// Program is the bpftrace source, passed with -e.
	Program string
	// Raw says the program was written by the caller.
	Raw bool
	// Warnings go into the response (duration capped, filter ignored, ...).
	Warnings []string
}

// Plan validates spec against the configuration and writes its program.
// Its error says why the spec is refused, in words for the caller.
func (c Config) Plan(spec *brokerv1.TraceSpec) (Plan, error) {
	c = c.withDefaults()
	if spec == nil {
		return Plan{}, errors.New("no trace spec")
	}
	var p Plan
	d, err := c.duration(spec, &p)
	if err != nil {
		return Plan{}, err
	}
	p.Duration = d
	if spec.GetKind() == brokerv1.TraceKind_TRACE_KIND_RAW {
		return c.rawPlan(spec, p)
	}
	return c.templatePlan(spec, p)
}

func (c Config) duration(spec *brokerv1.TraceSpec, p *Plan) (time.Duration, error) {
	d := DefaultDuration
	if spec.GetDuration() != nil {
		if err := spec.GetDuration().CheckValid(); err != nil {
			return 0, fmt.Errorf("trace duration: %w", err)
		}
		if got := spec.GetDuration().AsDuration(); got > 0 {
			d = got
		}
	}
	if d > c.MaxDuration {
		p.Warnings = append(p.Warnings, fmt.Sprintf("duration %s capped to %s", d, c.MaxDuration))
		d = c.MaxDuration
	}
	if d < minDuration {
		d = minDuration
	}
	return d.Round(time.Millisecond), nil
}

func (c Config) templatePlan(spec *brokerv1.TraceSpec, p Plan) (Plan, error) {
	kind, target, measure := spec.GetKind(), spec.GetTarget(), spec.GetMeasure()
	if kind == brokerv1.TraceKind_TRACE_KIND_UNSPECIFIED {
		return Plan{}, errors.New("trace kind is not set (tracepoint, syscall, kprobe, kretprobe or raw)")
	}
	if kindName(kind) == "" {
		return Plan{}, fmt.Errorf("unknown trace kind %d", kind)
	}
	if err := ValidateTarget(kind, target); err != nil {
		return Plan{}, err
	}
	if spec.GetProgram() != "" {
		p.Warnings = append(p.Warnings, "program text ignored: it is only used for raw traces")
	}
	pred, err := predicate(spec.GetFilter())
	if err != nil {
		return Plan{}, err
	}
	// A syscalls: tracepoint asked for latency, sizes or return values is a
	// syscall trace: those need the entry/exit pair.
	if kind == brokerv1.TraceKind_TRACE_KIND_TRACEPOINT && measureOrCount(measure) != brokerv1.TraceMeasure_TRACE_MEASURE_COUNT {
		if name, ok := syscallOfTracepoint(target); ok {
			kind, target = brokerv1.TraceKind_TRACE_KIND_SYSCALL, name
		}
	}
	if err := c.kindAllowed(kind); err != nil {
		return Plan{}, err
	}
	if (kind == brokerv1.TraceKind_TRACE_KIND_KPROBE || kind == brokerv1.TraceKind_TRACE_KIND_KRETPROBE) && !c.KprobesAvailable {
		return Plan{}, errors.New("kprobes are not available on this kernel (tracefs has no kprobe_events); trace a tracepoint or a syscall instead")
	}
	if measure == brokerv1.TraceMeasure_TRACE_MEASURE_UNSPECIFIED {
		measure = brokerv1.TraceMeasure_TRACE_MEASURE_COUNT
		if kind == brokerv1.TraceKind_TRACE_KIND_KRETPROBE {
			measure = brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL
		}
	}
	t := tmpl{pred: pred, samples: c.SampleLimit, durationMS: p.Duration.Milliseconds()}
	program, probes, err := t.write(kind, target, measure)
	if err != nil {
		return Plan{}, err
	}
	for _, probe := range probes {
		pattern, err := c.probeAllowed(probe)
		if err != nil {
			return Plan{}, err
		}
		p.Matched = append(p.Matched, pattern)
	}
	p.Kind, p.Target, p.Measure, p.Probes, p.Program = kind, target, measure, probes, program
	return p, nil
}

func measureOrCount(m brokerv1.TraceMeasure) brokerv1.TraceMeasure {
	if m == brokerv1.TraceMeasure_TRACE_MEASURE_UNSPECIFIED {
		return brokerv1.TraceMeasure_TRACE_MEASURE_COUNT
	}
	return m
}

// syscallOfTracepoint returns "read" for syscalls:sys_enter_read and
// syscalls:sys_exit_read.
func syscallOfTracepoint(target string) (string, bool) {
	for _, prefix := range []string{"syscalls:sys_enter_", "syscalls:sys_exit_"} {
		if name, ok := strings.CutPrefix(target, prefix); ok && name != "" {
			return name, true
		}
	}
	return "", false
}

// predicate compiles a filter to "/pid == 1 && comm == "x"/". Without a
// comm filter the trace leaves bpftrace itself out, so its own reads of the
// event buffers do not feed back into busy traces.
func predicate(f *brokerv1.TraceFilter) (string, error) {
	if f == nil {
		f = &brokerv1.TraceFilter{}
	}
	var parts []string
	if f.Pid != nil {
		if f.GetPid() <= 0 {
			return "", fmt.Errorf("pid filter %d is not a process id", f.GetPid())
		}
		parts = append(parts, fmt.Sprintf("pid == %d", f.GetPid()))
	}
	if f.Uid != nil {
		parts = append(parts, fmt.Sprintf("uid == %d", f.GetUid()))
	}
	if comm := f.GetComm(); comm != "" {
		if err := ValidateComm(comm); err != nil {
			return "", err
		}
		parts = append(parts, `comm == "`+comm+`"`)
	} else {
		parts = append(parts, `comm != "bpftrace"`)
	}
	return strings.Join(parts, " && "), nil
}

func (c Config) rawPlan(spec *brokerv1.TraceSpec, p Plan) (Plan, error) {
	if !c.AllowRaw {
		return Plan{}, errors.New("raw bpftrace programs are not allowed by the policy; ask for a tracepoint, syscall or kprobe trace instead")
	}
	prog := spec.GetProgram()
	if prog == "" {
		prog = spec.GetTarget()
	}
	switch {
	case strings.TrimSpace(prog) == "":
		return Plan{}, errors.New("raw trace has no program")
	case len(prog) > c.RawMaxBytes:
		return Plan{}, fmt.Errorf("raw program is %d bytes, the limit is %d", len(prog), c.RawMaxBytes)
	case !utf8.ValidString(prog) || strings.ContainsRune(prog, 0):
		return Plan{}, errors.New("raw program is not valid UTF-8 text")
	}
	if !c.KprobesAvailable && (strings.Contains(prog, "kprobe:") || strings.Contains(prog, "kretprobe:")) {
		return Plan{}, errors.New("raw program uses kprobes, which are not available on this kernel (tracefs has no kprobe_events)")
	}
	if !c.KfuncsAvailable && containsAny(prog, "kfunc:", "kretfunc:", "fentry:", "fexit:") {
		return Plan{}, errors.New("raw program uses kfuncs, which are not available on this kernel")
	}
	if spec.GetFilter() != nil {
		p.Warnings = append(p.Warnings, "filter ignored: a raw program carries its own predicates")
	}
	p.Warnings = append(p.Warnings, "raw program written by the caller: it runs without --unsafe, but bpftrace builtins can still read files and kernel memory")
	// The program ends itself like a templated one: a SIGINT that lands
	// while bpftrace is blocked writing to a full pipe makes it lose all
	// later output, its maps included.
	p.Kind, p.Raw = brokerv1.TraceKind_TRACE_KIND_RAW, true
	p.Program = prog + "\n" + exitBlock(p.Duration.Milliseconds())
	return p, nil
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
