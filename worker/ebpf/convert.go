package ebpf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// DefaultDuration is used when an item asks for none; the broker caps.
const DefaultDuration = 10 * time.Second

// maxComm is the kernel's command-name length (TASK_COMM_LEN - 1).
const maxComm = 15

// Conversion is one item turned into a spec, or the reason it could not be.
type Conversion struct {
	// Program is the item as the model wrote it.
	Program Program
	// Spec is nil when the item cannot be traced; Err says why.
	Spec *brokerv1.TraceSpec
	Err  string
	// Ignored names the filters and fields left out, with the reason.
	Ignored []string
	// Notes say what the conversion decided (measure chosen, target renamed).
	Notes []string
}

// Convert turns one item into a TraceSpec. The rules, kept simple on
// purpose:
//   - type "bpftrace", or a target containing "{", is a raw program (the
//     broker refuses it unless its policy opts in);
//   - a "tracepoint:", "kprobe:" or "kretprobe:" prefix on the target wins
//     over the type;
//   - "syscall" targets lose any sys_, __x64_sys_, __arm64_sys_ prefix and
//     are traced through the portable syscalls:sys_enter_/sys_exit_
//     tracepoints, never an architecture's symbol; a kprobe on a syscall
//     wrapper (__x64_sys_openat) becomes the same syscall trace, and a
//     kprobe whose target is category:name is traced as that tracepoint;
//   - the measure is the item's "measure" if it names one; else return
//     values for kretprobes, latency when the name or description speaks of
//     latency or slowness (syscalls, kprobes, syscalls: tracepoints), sizes
//     for read/write-like syscalls, and counts otherwise;
//   - filters: pid, comm (or process, process_name) and uid, as numbers or
//     numeric strings; anything else is ignored and reported.
func Convert(p Program) Conversion {
	c := Conversion{Program: p}
	c.Ignored = append(c.Ignored, p.Problems...)
	spec := &brokerv1.TraceSpec{Name: p.Name, Description: p.Description}
	d := p.Duration
	if d <= 0 {
		d = DefaultDuration
	}
	spec.Duration = durationpb.New(d)

	typ := strings.ToLower(strings.TrimSpace(p.Type))
	target := strings.TrimSpace(p.Target)
	if typ == "bpftrace" || strings.Contains(target, "{") {
		spec.Kind = brokerv1.TraceKind_TRACE_KIND_RAW
		spec.Program = target
		if !isNull(p.Filters) {
			c.Ignored = append(c.Ignored, "filters (a bpftrace program carries its own predicates)")
		}
		c.Spec = spec
		if target == "" {
			c.Spec, c.Err = nil, "bpftrace item has no program in target"
		}
		return c
	}
	kind, target, err := c.kindAndTarget(typ, target)
	if err != nil {
		c.Err = err.Error()
		return c
	}
	spec.Kind, spec.Target = kind, target
	spec.Measure = c.measure(p, kind, target)
	spec.Filter = c.filter(p.Filters)
	c.Spec = spec
	return c
}

func (c *Conversion) kindAndTarget(typ, target string) (brokerv1.TraceKind, string, error) {
	if target == "" {
		return 0, "", fmt.Errorf("item has no target")
	}
	for _, pre := range []struct{ prefix, typ string }{
		{"tracepoint:", "tracepoint"}, {"t:", "tracepoint"},
		{"kretprobe:", "kretprobe"}, {"kr:", "kretprobe"},
		{"kprobe:", "kprobe"}, {"k:", "kprobe"},
	} {
		if rest, ok := strings.CutPrefix(target, pre.prefix); ok {
			if typ != pre.typ && typ != "" {
				c.Notes = append(c.Notes, fmt.Sprintf("target prefix %q wins over type %q", pre.prefix, typ))
			}
			typ, target = pre.typ, rest
			break
		}
	}
	switch typ {
	case "tracepoint", "tp":
		if !strings.Contains(target, ":") {
			if name, ok := strings.CutPrefix(target, "sys_enter_"); ok {
				target = "syscalls:sys_enter_" + name
			} else if name, ok := strings.CutPrefix(target, "sys_exit_"); ok {
				target = "syscalls:sys_exit_" + name
			}
		}
		return brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, target, nil
	case "syscall", "syscalls":
		return c.syscall(target)
	case "kprobe", "kretprobe":
		if strings.Count(target, ":") == 1 {
			c.Notes = append(c.Notes, fmt.Sprintf("%s target %q names a tracepoint: traced as one", typ, target))
			return brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, target, nil
		}
		if name, ok := syscallSymbol(target); ok {
			c.Notes = append(c.Notes, fmt.Sprintf("%s:%s traced as the portable syscall tracepoints for %s", typ, target, name))
			return brokerv1.TraceKind_TRACE_KIND_SYSCALL, name, nil
		}
		if typ == "kretprobe" {
			return brokerv1.TraceKind_TRACE_KIND_KRETPROBE, target, nil
		}
		return brokerv1.TraceKind_TRACE_KIND_KPROBE, target, nil
	case "":
		if strings.Contains(target, ":") {
			c.Notes = append(c.Notes, "no type: traced as a tracepoint")
			return brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, target, nil
		}
		c.Notes = append(c.Notes, "no type: traced as a syscall")
		return c.syscall(target)
	}
	return 0, "", fmt.Errorf("unknown type %q (want tracepoint, kprobe, kretprobe, syscall or bpftrace)", clip(typ, 40))
}

// syscallPrefixes are the spellings of a syscall's kernel symbol, longest
// first.
var syscallPrefixes = []string{"syscalls:sys_enter_", "syscalls:sys_exit_", "sys_enter_", "sys_exit_", "__x64_sys_", "__arm64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_", "sys_"}

func (c *Conversion) syscall(target string) (brokerv1.TraceKind, string, error) {
	name := c.syscallName(target)
	for _, prefix := range syscallPrefixes {
		if name == prefix || name+"_" == prefix {
			return 0, "", fmt.Errorf("syscall target %q names no syscall", clip(target, 40))
		}
	}
	return brokerv1.TraceKind_TRACE_KIND_SYSCALL, name, nil
}

// syscallName reduces openat, sys_openat, __x64_sys_openat and
// syscalls:sys_enter_openat to openat.
func (c *Conversion) syscallName(target string) string {
	name := strings.TrimSuffix(strings.ToLower(target), "()")
	for _, prefix := range syscallPrefixes {
		if rest, ok := strings.CutPrefix(name, prefix); ok && rest != "" {
			name = rest
			break
		}
	}
	if name != target {
		c.Notes = append(c.Notes, fmt.Sprintf("syscall %q traced as %q", target, name))
	}
	return name
}

// syscallSymbol recognises a syscall wrapper symbol and returns its name.
func syscallSymbol(fn string) (string, bool) {
	for _, prefix := range []string{"__x64_sys_", "__arm64_sys_", "__ia32_sys_", "__se_sys_", "__do_sys_", "sys_"} {
		if rest, ok := strings.CutPrefix(fn, prefix); ok && rest != "" && isLowerName(rest) {
			return rest, true
		}
	}
	return "", false
}

func isLowerName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// ioSyscalls move bytes: their natural measure is the size of each call.
var ioSyscalls = map[string]bool{
	"read": true, "write": true, "pread64": true, "pwrite64": true,
	"readv": true, "writev": true, "preadv": true, "pwritev": true, "preadv2": true, "pwritev2": true,
	"recvfrom": true, "sendto": true, "recvmsg": true, "sendmsg": true, "recvmmsg": true, "sendmmsg": true,
	"sendfile": true, "sendfile64": true, "splice": true, "copy_file_range": true,
}

var latencyWords = []string{"latency", "latencies", "slow", "delay", "stall", "time spent", "how long", "takes long", "took", "blocking", "blocked"}

var measureNames = map[string]brokerv1.TraceMeasure{
	"count": brokerv1.TraceMeasure_TRACE_MEASURE_COUNT, "counts": brokerv1.TraceMeasure_TRACE_MEASURE_COUNT,
	"frequency": brokerv1.TraceMeasure_TRACE_MEASURE_COUNT, "rate": brokerv1.TraceMeasure_TRACE_MEASURE_COUNT,
	"latency": brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY, "duration": brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
	"time": brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY, "timing": brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY,
	"size": brokerv1.TraceMeasure_TRACE_MEASURE_SIZE, "sizes": brokerv1.TraceMeasure_TRACE_MEASURE_SIZE,
	"bytes":  brokerv1.TraceMeasure_TRACE_MEASURE_SIZE,
	"retval": brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL, "return": brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL,
	"return_value": brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL, "ret": brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL,
	"returns": brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL,
}

func (c *Conversion) measure(p Program, kind brokerv1.TraceKind, target string) brokerv1.TraceMeasure {
	if asked := strings.ToLower(strings.TrimSpace(p.Measure)); asked != "" {
		if m, ok := measureNames[asked]; ok {
			return m
		}
		c.Ignored = append(c.Ignored, fmt.Sprintf("measure %q (want count, latency, size or retval)", clip(asked, 40)))
	}
	if kind == brokerv1.TraceKind_TRACE_KIND_KRETPROBE {
		return brokerv1.TraceMeasure_TRACE_MEASURE_RETVAL
	}
	pairable := kind == brokerv1.TraceKind_TRACE_KIND_SYSCALL || kind == brokerv1.TraceKind_TRACE_KIND_KPROBE ||
		strings.HasPrefix(target, "syscalls:sys_enter_") || strings.HasPrefix(target, "syscalls:sys_exit_")
	text := strings.ToLower(p.Name + " " + p.Description)
	if pairable && containsAny(text, latencyWords) {
		c.Notes = append(c.Notes, "measuring latency: the item speaks of latency")
		return brokerv1.TraceMeasure_TRACE_MEASURE_LATENCY
	}
	if kind == brokerv1.TraceKind_TRACE_KIND_SYSCALL && ioSyscalls[target] {
		c.Notes = append(c.Notes, "measuring sizes: "+target+" moves bytes")
		return brokerv1.TraceMeasure_TRACE_MEASURE_SIZE
	}
	return brokerv1.TraceMeasure_TRACE_MEASURE_COUNT
}

func containsAny(s string, words []string) bool {
	for _, w := range words {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// filter reads the model's filters object: pid, comm/process/process_name
// and uid. Everything else, and every unusable value, is reported.
func (c *Conversion) filter(raw json.RawMessage) *brokerv1.TraceFilter {
	if isNull(raw) {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		c.Ignored = append(c.Ignored, fmt.Sprintf("filters: not an object: %s", clip(string(bytes.TrimSpace(raw)), 60)))
		return nil
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	f := &brokerv1.TraceFilter{}
	for _, key := range keys {
		v := fields[key]
		if isNull(v) {
			continue
		}
		switch strings.ToLower(key) {
		case "pid":
			n, err := wholeNumber(v, 1, math.MaxInt32)
			if err != nil {
				c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s: %v", key, err))
				continue
			}
			pid := int32(n)
			f.Pid = &pid
		case "uid":
			n, err := wholeNumber(v, 0, math.MaxUint32-1)
			if err != nil {
				c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s: %v", key, err))
				continue
			}
			uid := uint32(n)
			f.Uid = &uid
		case "comm", "process", "process_name":
			if comm, ok := c.comm(key, v); ok {
				f.Comm = comm
			}
		default:
			c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s (only pid, comm and uid are supported)", clip(key, 40)))
		}
	}
	if f.Pid == nil && f.Uid == nil && f.Comm == "" {
		return nil
	}
	return f
}

// comm checks a command name as the broker will: at most 15 characters of
// [A-Za-z0-9_.:-]; a longer name is cut to what the kernel keeps.
func (c *Conversion) comm(key string, v json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(v, &s) != nil {
		c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s: not a string", key))
		return "", false
	}
	s = strings.TrimSpace(s)
	for i := 0; i < len(s); i++ {
		ch := s[i]
		ok := (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strings.IndexByte("_.:-", ch) >= 0
		if !ok {
			c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s: %q has a character a command name filter may not use (%q)", key, clip(s, 40), ch))
			return "", false
		}
	}
	if s == "" {
		c.Ignored = append(c.Ignored, fmt.Sprintf("filters.%s: empty", key))
		return "", false
	}
	if len(s) > maxComm {
		c.Notes = append(c.Notes, fmt.Sprintf("filters.%s %q cut to %q: the kernel keeps 15 characters of a command name", key, s, s[:maxComm]))
		s = s[:maxComm]
	}
	return s, true
}

// wholeNumber reads a JSON number or numeric string in [lo, hi].
func wholeNumber(v json.RawMessage, lo, hi int64) (int64, error) {
	s := strings.TrimSpace(string(v))
	var str string
	if json.Unmarshal(v, &str) == nil {
		s = strings.TrimSpace(str)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, fmt.Errorf("%s is not a whole number", clip(s, 40))
		}
		n = int64(f)
	}
	if n < lo || n > hi {
		return 0, fmt.Errorf("%d is out of range", n)
	}
	return n, nil
}
