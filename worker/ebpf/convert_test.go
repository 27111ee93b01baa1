package ebpf

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func parse(t *testing.T, item string) Program {
	t.Helper()
	var p Program
	if err := json.Unmarshal([]byte(item), &p); err != nil {
		t.Fatalf("unmarshal %s: %v", item, err)
	}
	return p
}

func TestProgramDecoding(t *testing.T) {
	tests := []struct {
		item     string
		want     Program
		problems []string
	}{
		{
			item: `{"name":"opens","type":"tracepoint","target":"syscalls:sys_enter_openat","duration":5,"filters":{"pid":1},"description":"file opens"}`,
			want: Program{Name: "opens", Type: "tracepoint", Target: "syscalls:sys_enter_openat", Duration: 5 * time.Second, Description: "file opens", Filters: json.RawMessage(`{"pid":1}`)},
		},
		{item: `{"duration":"15"}`, want: Program{Duration: 15 * time.Second}},
		{item: `{"duration":"2m"}`, want: Program{Duration: 2 * time.Minute}},
		{item: `{"duration":2.5}`, want: Program{Duration: 2500 * time.Millisecond}},
		{item: `{"duration":-4}`, want: Program{}},
		{item: `{"duration":1e300}`, want: Program{Duration: maxDuration}},
		{item: `{"duration":"soon"}`, want: Program{}, problems: []string{"duration soon is not a number of seconds"}},
		{item: `{"Duration":3,"TYPE":"syscall","Target":"read","measure":"latency"}`, want: Program{Duration: 3 * time.Second, Type: "syscall", Target: "read", Measure: "latency"}},
		{item: `{"name":42,"type":["x"],"filters":null}`, want: Program{Name: "42"}, problems: []string{"type is not a string"}},
		{item: `"openat"`, want: Program{}, problems: []string{`item is not an object: "openat"`}},
		{item: `[1,2]`, want: Program{}, problems: []string{"item is not an object: [1,2]"}},
	}
	for _, tt := range tests {
		got := parse(t, tt.item)
		if got.Name != tt.want.Name || got.Type != tt.want.Type || got.Target != tt.want.Target ||
			got.Duration != tt.want.Duration || got.Description != tt.want.Description ||
			got.Measure != tt.want.Measure || string(got.Filters) != string(tt.want.Filters) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.item, got, tt.want)
		}
		if strings.Join(got.Problems, "|") != strings.Join(tt.problems, "|") {
			t.Errorf("%s: problems %q, want %q", tt.item, got.Problems, tt.problems)
		}
	}
	var p Program
	if err := json.Unmarshal([]byte(`{"name":`), &p); err == nil {
		t.Error("malformed JSON accepted")
	}
}

func TestProgramsInATurn(t *testing.T) {
	// One odd item must not lose the others.
	var turn struct {
		Programs []Program `json:"ebpf_programs"`
	}
	raw := `{"ebpf_programs":[{"type":"syscall","target":"openat"},"junk",{"type":"tracepoint","target":"sched:sched_process_exec"}]}`
	if err := json.Unmarshal([]byte(raw), &turn); err != nil {
		t.Fatal(err)
	}
	if len(turn.Programs) != 3 || turn.Programs[2].Target != "sched:sched_process_exec" || len(turn.Programs[1].Problems) != 1 {
		t.Errorf("programs = %+v", turn.Programs)
	}
}

func TestConvert(t *testing.T) {
	const (
		tp  = brokerv1.TraceKind_TRACE_KIND_TRACEPOINT
		sc  = brokerv1.TraceKind_TRACE_KIND_SYSCALL
		kp  = brokerv1.TraceKind_TRACE_KIND_KPROBE
		krp = brokerv1.TraceKind_TRACE_KIND_KRETPROBE
		raw = brokerv1.TraceKind_TRACE_KIND_RAW

		count   = brokerv1.TraceMeasure_TRACE_MEASURE_COUNT
		latency = brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY
		size    = brokerv1.TraceMeasure_TRACE_MEASURE_SIZE
		retval  = brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL
	)
	tests := []struct {
		item    string
		kind    brokerv1.TraceKind
		target  string
		measure brokerv1.TraceMeasure
		err     string
	}{
		{`{"type":"tracepoint","target":"syscalls:sys_enter_openat"}`, tp, "syscalls:sys_enter_openat", count, ""},
		{`{"type":"tracepoint","target":"tracepoint:block:block_rq_issue"}`, tp, "block:block_rq_issue", count, ""},
		{`{"type":"tracepoint","target":"sys_enter_write"}`, tp, "syscalls:sys_enter_write", count, ""},
		{`{"type":"tracepoint","target":"syscalls:sys_enter_fsync","description":"fsync latency"}`, tp, "syscalls:sys_enter_fsync", latency, ""},
		{`{"type":"syscall","target":"openat"}`, sc, "openat", count, ""},
		{`{"type":"syscall","target":"sys_openat"}`, sc, "openat", count, ""},
		{`{"type":"syscall","target":"__x64_sys_openat"}`, sc, "openat", count, ""},
		{`{"type":"syscall","target":"__arm64_sys_openat"}`, sc, "openat", count, ""},
		{`{"type":"syscall","target":"syscalls:sys_enter_openat"}`, sc, "openat", count, ""},
		{`{"type":"syscall","target":"read"}`, sc, "read", size, ""},
		{`{"type":"syscall","target":"read","name":"slow reads"}`, sc, "read", latency, ""},
		{`{"type":"syscall","target":"fsync","description":"How long does fsync take? latency of fsync"}`, sc, "fsync", latency, ""},
		{`{"type":"syscall","target":"write","measure":"count"}`, sc, "write", count, ""},
		{`{"type":"syscall","target":"openat","measure":"RETVAL"}`, sc, "openat", retval, ""},
		{`{"type":"kprobe","target":"tcp_connect"}`, kp, "tcp_connect", count, ""},
		{`{"type":"kprobe","target":"vfs_read","description":"vfs_read latency"}`, kp, "vfs_read", latency, ""},
		{`{"type":"kprobe","target":"__x64_sys_openat"}`, sc, "openat", count, ""},
		{`{"type":"kprobe","target":"sched:sched_process_fork"}`, tp, "sched:sched_process_fork", count, ""},
		{`{"type":"kretprobe","target":"tcp_v4_connect"}`, krp, "tcp_v4_connect", retval, ""},
		{`{"type":"kretprobe","target":"sys_read","measure":"retval"}`, sc, "read", retval, ""},
		{`{"type":"tracepoint","target":"kprobe:do_sys_open"}`, kp, "do_sys_open", count, ""},
		{`{"type":"bpftrace","target":"BEGIN { exit(); }"}`, raw, "", 0, ""},
		{`{"type":"kprobe","target":"kprobe:vfs_read { @ = count(); }"}`, raw, "", 0, ""},
		{`{"target":"sched:sched_switch"}`, tp, "sched:sched_switch", count, ""},
		{`{"target":"openat"}`, sc, "openat", count, ""},
		{`{"type":"uprobe","target":"/bin/bash:readline"}`, 0, "", 0, `unknown type "uprobe"`},
		{`{"type":"syscall"}`, 0, "", 0, "item has no target"},
		{`{"type":"syscall","target":"__x64_sys_"}`, 0, "", 0, `syscall target "__x64_sys_" names no syscall`},
		{`{"type":"syscall","target":"sys_"}`, 0, "", 0, `syscall target "sys_" names no syscall`},
		{`{"type":"bpftrace"}`, 0, "", 0, "bpftrace item has no program"},
		{`"junk"`, 0, "", 0, "item has no target"},
	}
	for _, tt := range tests {
		c := Convert(parse(t, tt.item))
		if tt.err != "" {
			if c.Spec != nil || !strings.Contains(c.Err, tt.err) {
				t.Errorf("%s: spec %v err %q, want error %q", tt.item, c.Spec, c.Err, tt.err)
			}
			continue
		}
		if c.Spec == nil {
			t.Errorf("%s: not converted: %s", tt.item, c.Err)
			continue
		}
		if c.Spec.Kind != tt.kind || c.Spec.Target != tt.target || c.Spec.Measure != tt.measure {
			t.Errorf("%s: got %s %q %s, want %s %q %s (notes %q)", tt.item, c.Spec.Kind, c.Spec.Target, c.Spec.Measure, tt.kind, tt.target, tt.measure, c.Notes)
		}
		if strings.Contains(c.Spec.Target, "__x64") || strings.Contains(c.Spec.Target, "__arm64") {
			t.Errorf("%s: architecture symbol in %q", tt.item, c.Spec.Target)
		}
	}
}

func TestConvertRawKeepsProgram(t *testing.T) {
	c := Convert(parse(t, `{"type":"bpftrace","target":"tracepoint:sched:sched_switch { @[comm] = count(); }","filters":{"pid":1}}`))
	if c.Spec.Program != "tracepoint:sched:sched_switch { @[comm] = count(); }" || c.Spec.Target != "" {
		t.Errorf("raw spec = %v", c.Spec)
	}
	if len(c.Ignored) != 1 || !strings.Contains(c.Ignored[0], "filters") {
		t.Errorf("ignored = %q", c.Ignored)
	}
}

func TestConvertDuration(t *testing.T) {
	for item, want := range map[string]time.Duration{
		`{"target":"openat"}`:                DefaultDuration,
		`{"target":"openat","duration":0}`:   DefaultDuration,
		`{"target":"openat","duration":-1}`:  DefaultDuration,
		`{"target":"openat","duration":30}`:  30 * time.Second,
		`{"target":"openat","duration":900}`: 900 * time.Second, // the broker caps
	} {
		if got := Convert(parse(t, item)).Spec.Duration.AsDuration(); got != want {
			t.Errorf("%s: duration %s, want %s", item, got, want)
		}
	}
}

func TestConvertFilters(t *testing.T) {
	tests := []struct {
		filters string
		want    string // filterText of the result
		ignored []string
		notes   []string
	}{
		{`{"pid":1234}`, "pid=1234", nil, nil},
		{`{"pid":"1234","uid":"1000"}`, "pid=1234 uid=1000", nil, nil},
		{`{"pid":12.0}`, "pid=12", nil, nil},
		{`{"comm":"nginx"}`, "comm=nginx", nil, nil},
		{`{"process":"postgres"}`, "comm=postgres", nil, nil},
		{`{"process_name":"php-fpm8.2"}`, "comm=php-fpm8.2", nil, nil},
		{`{"PID":7,"Comm":"x"}`, "pid=7 comm=x", nil, nil},
		{`{"comm":"systemd-journald-extra"}`, "comm=systemd-journal", nil, []string{`filters.comm "systemd-journald-extra" cut to "systemd-journal": the kernel keeps 15 characters of a command name`}},
		{`{"comm":"a\"b"}`, "", []string{`filters.comm: "a\"b" has a character a command name filter may not use ('"')`}, nil},
		{`{"comm":"postgres: writer"}`, "", []string{`filters.comm: "postgres: writer" has a character a command name filter may not use (' ')`}, nil},
		{`{"pid":"abc"}`, "", []string{"filters.pid: abc is not a whole number"}, nil},
		{`{"pid":0}`, "", []string{"filters.pid: 0 is out of range"}, nil},
		{`{"pid":-5}`, "", []string{"filters.pid: -5 is out of range"}, nil},
		{`{"pid":[1,2]}`, "", []string{"filters.pid: [1,2] is not a whole number"}, nil},
		{`{"pid":1.5}`, "", []string{"filters.pid: 1.5 is not a whole number"}, nil},
		{`{"uid":-1}`, "", []string{"filters.uid: -1 is out of range"}, nil},
		{`{"tid":5,"cgroup":"x","pid":3}`, "pid=3", []string{"filters.cgroup (only pid, comm and uid are supported)", "filters.tid (only pid, comm and uid are supported)"}, nil},
		{`"pid=5"`, "", []string{`filters: not an object: "pid=5"`}, nil},
		{`[{"pid":5}]`, "", []string{`filters: not an object: [{"pid":5}]`}, nil},
		{`{}`, "", nil, nil},
		{`{"comm":null}`, "", nil, nil},
	}
	for _, tt := range tests {
		c := Convert(parse(t, `{"type":"syscall","target":"openat","filters":`+tt.filters+`}`))
		if got := filterText(c.Spec.Filter); got != tt.want {
			t.Errorf("%s: filter %q, want %q", tt.filters, got, tt.want)
		}
		if strings.Join(c.Ignored, "|") != strings.Join(tt.ignored, "|") {
			t.Errorf("%s: ignored %q, want %q", tt.filters, c.Ignored, tt.ignored)
		}
		var notes []string
		for _, n := range c.Notes {
			if strings.HasPrefix(n, "filters.") {
				notes = append(notes, n)
			}
		}
		if strings.Join(notes, "|") != strings.Join(tt.notes, "|") {
			t.Errorf("%s: notes %q, want %q", tt.filters, notes, tt.notes)
		}
	}
}
