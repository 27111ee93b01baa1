package trace

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func allowAll() Config {
	return Config{
		AllowedKinds:     []string{KindTracepoint, KindSyscall, KindKprobe, KindKretprobe},
		AllowedTargets:   []string{"*"},
		KprobesAvailable: true,
	}
}

func i32(v int32) *int32                       { return &v }
func u32(v uint32) *uint32                     { return &v }
func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func TestPlanTemplates(t *testing.T) {
	tests := []struct {
		name     string
		spec     *brokerv1.TraceSpec
		kind     brokerv1.TraceKind
		measure  brokerv1.TraceMeasure
		probes   []string
		contains []string
	}{
		{
			name:     "tracepoint count with path",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "syscalls:sys_enter_openat"},
			kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_COUNT,
			probes:   []string{"syscalls:sys_enter_openat"},
			contains: []string{"tracepoint:syscalls:sys_enter_openat /comm != \"bpftrace\"/ {", "@by_path[str(args->filename)] = count();", "interval:ms:10000 {"},
		},
		{
			name:     "tracepoint without a path field",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "sched:sched_switch"},
			kind:     brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_COUNT,
			probes:   []string{"sched:sched_switch"},
			contains: []string{`printf("pid=%d uid=%d comm=%s\n", pid, uid, comm);`},
		},
		{
			name:    "filters compile to a predicate",
			spec:    &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "openat", Filter: &brokerv1.TraceFilter{Pid: i32(42), Uid: u32(1000), Comm: "postgres"}},
			kind:    brokerv1.TraceKind_TRACE_KIND_SYSCALL,
			measure: brokerv1.TraceMeasure_TRACE_MEASURE_COUNT,
			probes:  []string{"syscalls:sys_enter_openat", "syscalls:sys_exit_openat"},
			contains: []string{
				`tracepoint:syscalls:sys_enter_openat /pid == 42 && uid == 1000 && comm == "postgres"/ {`,
				`tracepoint:syscalls:sys_exit_openat /pid == 42 && uid == 1000 && comm == "postgres"/ {`,
				"@errors[-$ret] = count();",
			},
		},
		{
			name:     "syscall latency",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY},
			kind:     brokerv1.TraceKind_TRACE_KIND_SYSCALL,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
			probes:   []string{"syscalls:sys_enter_read", "syscalls:sys_exit_read"},
			contains: []string{"@_start[tid] = nsecs;", "tracepoint:syscalls:sys_exit_read /@_start[tid]/ {", "@latency_us = hist($us);", "clear(@_start);"},
		},
		{
			name:     "syscall sizes",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "write", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_SIZE},
			kind:     brokerv1.TraceKind_TRACE_KIND_SYSCALL,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_SIZE,
			probes:   []string{"syscalls:sys_exit_write"},
			contains: []string{"@bytes = hist($ret);"},
		},
		{
			name:     "syscalls tracepoint asked for latency becomes a syscall trace",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "syscalls:sys_exit_fsync", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY},
			kind:     brokerv1.TraceKind_TRACE_KIND_SYSCALL,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
			probes:   []string{"syscalls:sys_enter_fsync", "syscalls:sys_exit_fsync"},
			contains: []string{"tracepoint:syscalls:sys_enter_fsync"},
		},
		{
			name:     "kretprobe defaults to return values",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KRETPROBE, Target: "vfs_read"},
			kind:     brokerv1.TraceKind_TRACE_KIND_KRETPROBE,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL,
			probes:   []string{"kretprobe:vfs_read"},
			contains: []string{"kretprobe:vfs_read /comm != \"bpftrace\"/ {", "@retval[(int64)retval] = count();"},
		},
		{
			name:     "kprobe latency pairs entry and return",
			spec:     &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "tcp_connect", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY},
			kind:     brokerv1.TraceKind_TRACE_KIND_KPROBE,
			measure:  brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
			probes:   []string{"kprobe:tcp_connect", "kretprobe:tcp_connect"},
			contains: []string{"kretprobe:tcp_connect /@_start[tid]/ {"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := allowAll().Plan(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if p.Kind != tt.kind || p.Measure != tt.measure {
				t.Errorf("kind %s measure %s, want %s %s", p.Kind, p.Measure, tt.kind, tt.measure)
			}
			if strings.Join(p.Probes, ",") != strings.Join(tt.probes, ",") {
				t.Errorf("probes %q, want %q", p.Probes, tt.probes)
			}
			for _, c := range tt.contains {
				if !strings.Contains(p.Program, c) {
					t.Errorf("program lacks %q:\n%s", c, p.Program)
				}
			}
			if err := checkProgram(p.Program); err != nil {
				t.Errorf("program structure: %v\n%s", err, p.Program)
			}
		})
	}
}

func TestPlanRefusals(t *testing.T) {
	tests := []struct {
		name   string
		cfg    func(*Config)
		spec   *brokerv1.TraceSpec
		errHas string
	}{
		{"no kind", nil, &brokerv1.TraceSpec{Target: "x:y"}, "trace kind is not set"},
		{"unknown kind", nil, &brokerv1.TraceSpec{Kind: 99, Target: "x:y"}, "unknown trace kind"},
		{"kind not in policy", func(c *Config) { c.AllowedKinds = []string{KindTracepoint} },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read"}, `trace kind "syscall" is not allowed`},
		{"exit probe not in policy", func(c *Config) { c.AllowedTargets = []string{"syscalls:sys_enter_*"} },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read"}, "probe syscalls:sys_exit_read is not allowed"},
		{"kprobes unavailable", func(c *Config) { c.KprobesAvailable = false },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "vfs_read"}, "kprobes are not available on this kernel"},
		{"kretprobes unavailable", func(c *Config) { c.KprobesAvailable = false },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KRETPROBE, Target: "vfs_read"}, "kprobes are not available on this kernel"},
		{"latency on a plain tracepoint", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, Target: "sched:sched_switch", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY}, "needs an entry/exit pair"},
		{"size on a kprobe", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_KPROBE, Target: "vfs_read", Measure: brokerv1.TraceMeasure_TRACE_MEASURE_SIZE}, "not available for kernel functions"},
		{"unknown measure", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Measure: 42}, "not available for syscalls"},
		{"quote in comm", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Filter: &brokerv1.TraceFilter{Comm: `x" || 1 == 1 || comm == "`}}, "comm filter"},
		{"negative pid", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Filter: &brokerv1.TraceFilter{Pid: i32(-1)}}, "not a process id"},
		{"bad duration", nil,
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Duration: &durationpb.Duration{Seconds: 1, Nanos: -5}}, "trace duration"},
		{"raw off", nil, &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "BEGIN { exit(); }"}, "raw bpftrace programs are not allowed"},
		{"raw too big", func(c *Config) { c.AllowRaw = true; c.RawMaxBytes = 10 },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "BEGIN { exit(); }"}, "the limit is 10"},
		{"raw empty", func(c *Config) { c.AllowRaw = true }, &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: " \n"}, "no program"},
		{"raw NUL", func(c *Config) { c.AllowRaw = true }, &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "BEGIN {}\x00"}, "not valid UTF-8"},
		{"raw kprobe without kprobes", func(c *Config) { c.AllowRaw = true; c.KprobesAvailable = false },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "kprobe:vfs_read { @ = count(); }"}, "uses kprobes"},
		{"raw kfunc without kfuncs", func(c *Config) { c.AllowRaw = true },
			&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: "kfunc:vfs_read { @ = count(); }"}, "uses kfuncs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := allowAll()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			_, err := cfg.Plan(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("Plan error %v, want one containing %q", err, tt.errHas)
			}
		})
	}
}

func TestPlanDuration(t *testing.T) {
	spec := func(d *durationpb.Duration) *brokerv1.TraceSpec {
		return &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "read", Duration: d}
	}
	tests := []struct {
		max     time.Duration
		in      *durationpb.Duration
		want    time.Duration
		capped  bool
		program string
	}{
		{0, nil, DefaultDuration, false, "interval:ms:10000 {"},
		{0, dur(-3 * time.Second), DefaultDuration, false, "interval:ms:10000 {"},
		{0, dur(3 * time.Second), 3 * time.Second, false, "interval:ms:3000 {"},
		{0, dur(time.Hour), DefaultMaxDuration, true, "interval:ms:60000 {"},
		{5 * time.Second, dur(30 * time.Second), 5 * time.Second, true, "interval:ms:5000 {"},
		// The policy's limit is the limit: 10 minutes, not a 60 s of its own.
		{10 * time.Minute, dur(2 * time.Hour), 10 * time.Minute, true, "interval:ms:600000 {"},
		{10 * time.Minute, dur(9 * time.Minute), 9 * time.Minute, false, "interval:ms:540000 {"},
		{0, dur(time.Millisecond), minDuration, false, "interval:ms:100 {"},
	}
	for _, tt := range tests {
		cfg := allowAll()
		cfg.MaxDuration = tt.max
		p, err := cfg.Plan(spec(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		if p.Duration != tt.want || !strings.Contains(p.Program, tt.program) {
			t.Errorf("max %s in %v: duration %s, want %s; program:\n%s", tt.max, tt.in.AsDuration(), p.Duration, tt.want, p.Program)
		}
		capped := len(p.Warnings) > 0 && strings.Contains(p.Warnings[0], "capped")
		if capped != tt.capped {
			t.Errorf("max %s in %v: capped warning %v, want %v", tt.max, tt.in.AsDuration(), p.Warnings, tt.capped)
		}
	}
}

func TestPlanRaw(t *testing.T) {
	cfg := allowAll()
	cfg.AllowRaw = true
	prog := `tracepoint:sched:sched_process_exec { printf("%s\n", comm); }`
	p, err := cfg.Plan(&brokerv1.TraceSpec{
		Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: prog, Duration: dur(2 * time.Second),
		Filter: &brokerv1.TraceFilter{Pid: i32(1)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Raw || !strings.HasPrefix(p.Program, prog+"\n") || !strings.HasSuffix(p.Program, "interval:ms:2000 {\n\texit();\n}\n") {
		t.Errorf("raw program = %q", p.Program)
	}
	joined := strings.Join(p.Warnings, "\n")
	for _, w := range []string{"raw program written by the caller", "filter ignored"} {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings %q lack %q", p.Warnings, w)
		}
	}
	// The target carries the program when Program is empty (the model's
	// "bpftrace" items put it there).
	p, err = cfg.Plan(&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Target: prog})
	if err != nil || !strings.HasPrefix(p.Program, prog) {
		t.Errorf("raw from target: %v %q", err, p.Program)
	}
}

func TestPathFieldsMatchTracefs(t *testing.T) {
	for target, field := range pathFields {
		category, name, _ := strings.Cut(target, ":")
		format := "/sys/kernel/tracing/events/" + category + "/" + name + "/format"
		b, err := readFileIfExists(format)
		if err != nil {
			t.Skipf("needs tracefs: %v", err)
		}
		if b == nil {
			continue // not on this architecture
		}
		if !strings.Contains(string(b), " "+field+";") && !strings.Contains(string(b), "[] "+field+";") {
			t.Errorf("%s has no field %q:\n%s", target, field, b)
		}
	}
}
