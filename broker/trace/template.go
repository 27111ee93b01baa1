package trace

import (
	"fmt"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// pathFields names the argument that carries a path for the tracepoints
// whose path the templates may record. Paths and comm are the only strings
// a template ever reads from a traced process: no buffers, no argv.
var pathFields = map[string]string{
	"syscalls:sys_enter_open":       "filename",
	"syscalls:sys_enter_openat":     "filename",
	"syscalls:sys_enter_openat2":    "filename",
	"syscalls:sys_enter_creat":      "pathname",
	"syscalls:sys_enter_execve":     "filename",
	"syscalls:sys_enter_execveat":   "filename",
	"syscalls:sys_enter_unlink":     "pathname",
	"syscalls:sys_enter_unlinkat":   "pathname",
	"syscalls:sys_enter_mkdir":      "pathname",
	"syscalls:sys_enter_mkdirat":    "pathname",
	"syscalls:sys_enter_rmdir":      "pathname",
	"syscalls:sys_enter_access":     "filename",
	"syscalls:sys_enter_faccessat":  "filename",
	"syscalls:sys_enter_faccessat2": "filename",
	"syscalls:sys_enter_newstat":    "filename",
	"syscalls:sys_enter_newlstat":   "filename",
	"syscalls:sys_enter_newfstatat": "filename",
	"syscalls:sys_enter_statx":      "filename",
	"syscalls:sys_enter_chdir":      "filename",
	"syscalls:sys_enter_chmod":      "filename",
	"syscalls:sys_enter_fchmodat":   "filename",
	"syscalls:sys_enter_chown":      "filename",
	"syscalls:sys_enter_fchownat":   "filename",
	"syscalls:sys_enter_truncate":   "path",
	"syscalls:sys_enter_readlink":   "path",
	"syscalls:sys_enter_readlinkat": "pathname",
	"sched:sched_process_exec":      "filename",
}

// Map names the templates use. Names starting with "@_" are the
// templates' bookkeeping and are cleared before exit.
const (
	mapEvents   = "@events"
	internalMap = "@_"
)

// Syscall exit bodies read args->ret once: bpftrace 0.17 reading it in two
// branches makes the verifier refuse the program ("dereference of modified
// ctx ptr"), and comparing it in a predicate warns "Addrspace mismatch".
const (
	readRet    = "\t$ret = args->ret;\n"
	errorsBody = "\tif ($ret < 0) {\n\t\t@errors[-$ret] = count();\n\t}\n"
)

// tmpl writes programs. Only validated values reach it: a predicate built
// from numbers and a checked comm, targets of a strict charset, and
// integers.
type tmpl struct {
	pred       string
	samples    int
	durationMS int64
}

// write returns the program for kind, target and measure, and the probes
// it attaches to as the policy names them.
func (t tmpl) write(kind brokerv1.TraceKind, target string, measure brokerv1.TraceMeasure) (string, []string, error) {
	switch kind {
	case brokerv1.TraceKind_TRACE_KIND_TRACEPOINT:
		if measure != brokerv1.TraceMeasure_TRACE_MEASURE_COUNT {
			return "", nil, fmt.Errorf("measure %s needs an entry/exit pair: use kind syscall, a syscalls:sys_enter_ or sys_exit_ tracepoint, or measure count", measureName(measure))
		}
		return t.count("tracepoint:"+target, pathFields[target]), []string{target}, nil
	case brokerv1.TraceKind_TRACE_KIND_SYSCALL:
		return t.syscall(target, measure)
	case brokerv1.TraceKind_TRACE_KIND_KPROBE, brokerv1.TraceKind_TRACE_KIND_KRETPROBE:
		return t.function(kind, target, measure)
	}
	return "", nil, fmt.Errorf("trace kind %s has no template", kind)
}

func (t tmpl) syscall(name string, measure brokerv1.TraceMeasure) (string, []string, error) {
	enter, exit := "syscalls:sys_enter_"+name, "syscalls:sys_exit_"+name
	switch measure {
	case brokerv1.TraceMeasure_TRACE_MEASURE_COUNT:
		var b strings.Builder
		b.WriteString(t.probeBlock("tracepoint:"+enter, t.pred, t.countBody(pathFields[enter])))
		b.WriteString(t.probeBlock("tracepoint:"+exit, t.pred, readRet+errorsBody))
		b.WriteString(t.tail(false))
		return b.String(), []string{enter, exit}, nil
	case brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY:
		var b strings.Builder
		b.WriteString(t.probeBlock("tracepoint:"+enter, t.pred, "\t@_start[tid] = nsecs;\n"))
		b.WriteString(t.probeBlock("tracepoint:"+exit, "@_start[tid]", readRet+t.latencyBody("$ret")+errorsBody))
		b.WriteString(t.tail(true))
		return b.String(), []string{enter, exit}, nil
	case brokerv1.TraceMeasure_TRACE_MEASURE_SIZE:
		body := readRet +
			"\t@events = count();\n" +
			"\t@by_process[pid, comm] = count();\n" +
			"\tif ($ret >= 0) {\n" +
			"\t\t@bytes = hist($ret);\n" +
			"\t\t@bytes_by_process[pid, comm] = sum($ret);\n" +
			"\t}\n" +
			errorsBody +
			t.sample(`pid=%d uid=%d comm=%s ret=%d`, "pid, uid, comm, $ret")
		return t.probeBlock("tracepoint:"+exit, t.pred, body) + t.tail(false), []string{exit}, nil
	case brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL:
		body := readRet +
			"\t@events = count();\n" +
			"\t@by_process[pid, comm] = count();\n" +
			"\t@retval[$ret] = count();\n" +
			t.sample(`pid=%d uid=%d comm=%s ret=%d`, "pid, uid, comm, $ret")
		return t.probeBlock("tracepoint:"+exit, t.pred, body) + t.tail(false), []string{exit}, nil
	}
	return "", nil, fmt.Errorf("measure %s is not available for syscalls", measureName(measure))
}

func (t tmpl) function(kind brokerv1.TraceKind, fn string, measure brokerv1.TraceMeasure) (string, []string, error) {
	entry, ret := "kprobe:"+fn, "kretprobe:"+fn
	switch measure {
	case brokerv1.TraceMeasure_TRACE_MEASURE_COUNT:
		probe := entry
		if kind == brokerv1.TraceKind_TRACE_KIND_KRETPROBE {
			probe = ret
		}
		return t.count(probe, ""), []string{probe}, nil
	case brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY:
		var b strings.Builder
		b.WriteString(t.probeBlock(entry, t.pred, "\t@_start[tid] = nsecs;\n"))
		b.WriteString(t.probeBlock(ret, "@_start[tid]", t.latencyBody("(int64)retval")))
		b.WriteString(t.tail(true))
		return b.String(), []string{entry, ret}, nil
	case brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL:
		body := "\t@events = count();\n" +
			"\t@by_process[pid, comm] = count();\n" +
			"\t@retval[(int64)retval] = count();\n" +
			t.sample(`pid=%d uid=%d comm=%s ret=%d`, "pid, uid, comm, (int64)retval")
		return t.probeBlock(ret, t.pred, body) + t.tail(false), []string{ret}, nil
	}
	return "", nil, fmt.Errorf("measure %s is not available for kernel functions (their arguments are unknown)", measureName(measure))
}

// count is the counting program for one probe, with the path argument
// recorded when the tracepoint has one.
func (t tmpl) count(probe, pathField string) string {
	return t.probeBlock(probe, t.pred, t.countBody(pathField)) + t.tail(false)
}

func (t tmpl) countBody(pathField string) string {
	body := "\t@events = count();\n\t@by_process[pid, comm] = count();\n"
	if pathField == "" {
		return body + t.sample(`pid=%d uid=%d comm=%s`, "pid, uid, comm")
	}
	path := "str(args->" + pathField + ")"
	return body + "\t@by_path[" + path + "] = count();\n" +
		t.sample(`pid=%d uid=%d comm=%s path=%s`, "pid, uid, comm, "+path)
}

// latencyBody measures from @_start[tid] to now in microseconds.
func (t tmpl) latencyBody(ret string) string {
	return "\t$us = (nsecs - @_start[tid]) / 1000;\n" +
		"\tdelete(@_start[tid]);\n" +
		"\t@events = count();\n" +
		"\t@latency_us = hist($us);\n" +
		"\t@latency_us_stats = stats($us);\n" +
		"\t@by_process[pid, comm] = count();\n" +
		t.sample(`pid=%d uid=%d comm=%s latency_us=%d ret=%d`, "pid, uid, comm, $us, "+ret)
}

// sample prints the first t.samples events; the counter map is the guard.
func (t tmpl) sample(format, args string) string {
	return fmt.Sprintf("\tif (@_sampled < %d) {\n\t\t@_sampled++;\n\t\tprintf(\"%s\\n\", %s);\n\t}\n", t.samples, format, args)
}

func (t tmpl) probeBlock(probe, pred, body string) string {
	return probe + " /" + pred + "/ {\n" + body + "}\n"
}

// tail ends the program by itself, so END runs and the maps print, and
// clears the bookkeeping maps first.
func (t tmpl) tail(started bool) string {
	end := "\tclear(@_sampled);\n"
	if started {
		end = "\tclear(@_start);\n" + end
	}
	return exitBlock(t.durationMS) + "END {\n" + end + "}\n"
}

// exitBlock ends a program after ms milliseconds.
func exitBlock(ms int64) string {
	return fmt.Sprintf("interval:ms:%d {\n\texit();\n}\n", ms)
}

func measureName(m brokerv1.TraceMeasure) string {
	return strings.ToLower(strings.TrimPrefix(m.String(), "TRACE_MEASURE_"))
}
