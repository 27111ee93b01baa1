package trace

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func readFileIfExists(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
			return nil, err
		}
		return nil, nil
	}
	return b, err
}

// The shapes a written program may have. Everything a caller influences
// is held to these: probe headers, predicates, string literals and calls.
var (
	headerRe = regexp.MustCompile(`^(?:(?:tracepoint:[a-z0-9_]{1,64}:[a-z0-9_]{1,64}|kprobe:[A-Za-z0-9_.]{1,128}|kretprobe:[A-Za-z0-9_.]{1,128}) /(.*)/|interval:ms:[1-9][0-9]*|END) \{$`)
	predRe   = regexp.MustCompile(`^(?:@_start\[tid\]|(?:pid == [1-9][0-9]* && )?(?:uid == [0-9]+ && )?(?:comm == "[A-Za-z0-9_.:-]{1,15}"|comm != "bpftrace"))$`)
	// String literals: the sample formats, "bpftrace", or a checked comm.
	stringRe   = regexp.MustCompile(`^(?:pid=%d uid=%d comm=%s(?: path=%s| ret=%d| latency_us=%d ret=%d)?\\n|bpftrace|[A-Za-z0-9_.:-]{1,15})$`)
	calls      = map[string]bool{"count": true, "hist": true, "stats": true, "sum": true, "str": true, "printf": true, "exit": true, "clear": true, "delete": true}
	forbidden  = []string{"system", "cat(", "unsafe", "signal", "override", "#include", "//", "/*", "kfunc", "uprobe", "usdt", "BEGIN", "join(", "kstack", "ustack", "buf("}
	identRunes = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
)

// checkProgram parses a templated program back and reports anything
// outside its templates' shapes.
func checkProgram(prog string) error {
	for _, f := range forbidden {
		// A comm filter may spell a forbidden word in a string literal;
		// outside literals none may appear.
		if strings.Contains(stripStrings(prog), f) {
			return fmt.Errorf("forbidden %q outside a string literal", f)
		}
	}
	if !utf8.ValidString(prog) {
		return errors.New("not UTF-8")
	}
	depth := 0
	sc := bufio.NewScanner(strings.NewReader(prog))
	for sc.Scan() {
		line := sc.Text()
		if depth == 0 {
			m := headerRe.FindStringSubmatch(line)
			if m == nil {
				return fmt.Errorf("top-level line %q is not a probe header", line)
			}
			if m[1] != "" && !predRe.MatchString(m[1]) {
				return fmt.Errorf("predicate %q is not a template predicate", m[1])
			}
		}
		if err := checkTokens(line); err != nil {
			return fmt.Errorf("line %q: %w", line, err)
		}
		depth += strings.Count(stripStrings(line), "{") - strings.Count(stripStrings(line), "}")
		if depth < 0 {
			return fmt.Errorf("unbalanced braces at %q", line)
		}
	}
	if depth != 0 {
		return fmt.Errorf("unbalanced braces: depth %d at the end", depth)
	}
	if !strings.HasSuffix(prog, "}\n") || !strings.Contains(prog, "\texit();\n") {
		return errors.New("program does not end itself")
	}
	return nil
}

// checkTokens walks one line: string literals must match stringRe, escapes
// may only be \n inside them, and every call names an allowed function.
func checkTokens(line string) error {
	parens := 0
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					if j+1 >= len(line) || line[j+1] != 'n' {
						return errors.New("an escape other than \\n")
					}
					j++
				}
				j++
			}
			if j >= len(line) {
				return errors.New("unterminated string")
			}
			if lit := line[i+1 : j]; !stringRe.MatchString(lit) {
				return fmt.Errorf("string literal %q is not a template string", lit)
			}
			i = j
		case c == '\\':
			return errors.New("a backslash outside a string")
		case c == '(':
			parens++
			k := i
			for k > 0 && strings.IndexByte(identRunes, line[k-1]) >= 0 {
				k--
			}
			if name := line[k:i]; name != "" && !calls[name] {
				return fmt.Errorf("call to %q", name)
			}
		case c == ')':
			parens--
			if parens < 0 {
				return errors.New("unbalanced parentheses")
			}
		case c == '\'' || c == '`' || c == ';' && parens > 0:
			return fmt.Errorf("unexpected %q", c)
		}
	}
	if parens != 0 {
		return errors.New("unbalanced parentheses")
	}
	return nil
}

func stripStrings(s string) string {
	var b strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		if s[i] == '"' && (i == 0 || s[i-1] != '\\') {
			in = !in
			continue
		}
		if !in {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

func TestCheckProgramCatchesInjection(t *testing.T) {
	good, err := allowAll().Plan(&brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_SYSCALL, Target: "openat", Filter: &brokerv1.TraceFilter{Comm: "bash"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := checkProgram(good.Program); err != nil {
		t.Fatalf("a template fails the checker: %v\n%s", err, good.Program)
	}
	for _, bad := range []string{
		strings.Replace(good.Program, `comm == "bash"`, `comm == "bash" || 1`, 1),
		strings.Replace(good.Program, "@events = count();", `system("id");`, 1),
		strings.Replace(good.Program, "@events = count();", `cat("/etc/shadow");`, 1),
		strings.Replace(good.Program, `comm == "bash"`, `comm == "ba\"sh"`, 1),
		strings.Replace(good.Program, "END {", "BEGIN {", 1),
		strings.Replace(good.Program, "}\n", "", 1),
		good.Program + "uprobe:/bin/bash:readline { }\n",
	} {
		if checkProgram(bad) == nil {
			t.Errorf("checker accepted a tampered program:\n%s", bad)
		}
	}
}

func FuzzValidateTarget(f *testing.F) {
	for _, s := range []string{"syscalls:sys_enter_openat", "sched:*", "a:b:c", "read", "__x64_sys_read", "vfs_read.isra.0", `x"y`, "a\nb", "tcp_connect { system(\"id\") }", ""} {
		for k := int32(0); k <= 5; k++ {
			f.Add(k, s)
		}
	}
	f.Fuzz(func(t *testing.T, kind int32, target string) {
		err := ValidateTarget(brokerv1.TraceKind(kind), target)
		if err != nil {
			return
		}
		var allowed string
		switch brokerv1.TraceKind(kind) {
		case brokerv1.TraceKind_TRACE_KIND_TRACEPOINT:
			if strings.Count(target, ":") != 1 {
				t.Fatalf("tracepoint %q accepted without exactly one colon", target)
			}
			allowed = "abcdefghijklmnopqrstuvwxyz0123456789_:"
		case brokerv1.TraceKind_TRACE_KIND_SYSCALL:
			allowed = "abcdefghijklmnopqrstuvwxyz0123456789_"
		case brokerv1.TraceKind_TRACE_KIND_KPROBE, brokerv1.TraceKind_TRACE_KIND_KRETPROBE:
			allowed = identRunes + "."
		default:
			t.Fatalf("kind %d accepted a target", kind)
		}
		if target == "" || len(target) > 129 {
			t.Fatalf("accepted target of length %d", len(target))
		}
		for i := 0; i < len(target); i++ {
			if !strings.ContainsRune(allowed, rune(target[i])) {
				t.Fatalf("accepted %q with byte %q", target, target[i])
			}
		}
	})
}

func FuzzPlanProgram(f *testing.F) {
	f.Add(int32(1), int32(1), "syscalls:sys_enter_openat", "", int32(0), false, uint32(0), false, int64(1000), "")
	f.Add(int32(2), int32(2), "read", "postgres", int32(123), true, uint32(1000), true, int64(0), "")
	f.Add(int32(2), int32(3), "write", `x"; system("id"); "`, int32(1), true, uint32(0), false, int64(-5), "")
	f.Add(int32(3), int32(2), "tcp_connect", "a\\nb", int32(-1), true, uint32(0), false, int64(1<<62), "")
	f.Add(int32(4), int32(0), "vfs_read", "kworker:1", int32(7), true, uint32(0), true, int64(10), "")
	f.Add(int32(1), int32(2), "syscalls:sys_exit_read", "", int32(0), false, uint32(0), false, int64(100), "")
	f.Add(int32(5), int32(0), "", "", int32(0), false, uint32(0), false, int64(100), `BEGIN { system("id"); }`)
	f.Fuzz(func(t *testing.T, kind, measure int32, target, comm string, pid int32, hasPid bool, uid uint32, hasUID bool, durMS int64, program string) {
		spec := &brokerv1.TraceSpec{
			Kind:     brokerv1.TraceKind(kind),
			Measure:  brokerv1.TraceMeasure(measure),
			Target:   target,
			Filter:   &brokerv1.TraceFilter{Comm: comm},
			Duration: durationpb.New(time.Duration(durMS) * time.Millisecond),
			Program:  program,
		}
		if hasPid {
			spec.Filter.Pid = &pid
		}
		if hasUID {
			spec.Filter.Uid = &uid
		}
		for _, allowRaw := range []bool{false, true} {
			cfg := allowAll()
			cfg.AllowRaw = allowRaw
			p, err := cfg.Plan(spec)
			if err != nil {
				if !utf8.ValidString(err.Error()) {
					t.Fatalf("refusal is not UTF-8: %q", err.Error())
				}
				continue
			}
			if p.Duration < minDuration || p.Duration > DefaultMaxDuration {
				t.Fatalf("duration %s escaped the caps", p.Duration)
			}
			if p.Raw {
				if !allowRaw {
					t.Fatal("raw program planned without AllowRaw")
				}
				if len(p.Program) > cfg.withDefaults().RawMaxBytes+64 {
					t.Fatalf("raw program of %d bytes passed the cap", len(p.Program))
				}
				continue
			}
			if err := checkProgram(p.Program); err != nil {
				t.Fatalf("%v\nspec %v\nprogram:\n%s", err, spec, p.Program)
			}
			for _, probe := range p.Probes {
				if !strings.Contains(p.Program, probe+" /") {
					t.Fatalf("probe %s not in the program", probe)
				}
			}
		}
	})
}

// FuzzCollector feeds arbitrary output to the parser: no panic, and the
// bounded response respects every limit.
func FuzzCollector(f *testing.F) {
	f.Add([]byte(liveOutput), true)
	f.Add([]byte(`{"type": "hist", "data": {"@h": [{"max": -1, "count": 1}, {"min": 0, "max": 0, "count": 1}]}}`), false)
	f.Add([]byte(`{"type": "stats", "data": {"@s": {"a": {"count": 1, "average": 2, "total": 2}}}}`), false)
	f.Add([]byte(`{"type": "map", "data": {"@x": {"k": "str", "n": 1.5e300, "u": 18446744073709551615}}}`), true)
	f.Add([]byte("{\"type\": \"printf\", \"data\": \"\\u0000\\\"\"}\n\n{garbage\n"), false)
	f.Add([]byte("{\"type\": \"map\", \"data\": {\"@x\": {\"k\": [\"\xff\"]}}}\n\xfe\n{\"type\": \"value\", \"data\": [\"\xc3\"]}"), false)
	f.Fuzz(func(t *testing.T, data []byte, templated bool) {
		col := newCollector(5, 4, templated, nil)
		n, _, err := readLines(bytes.NewReader(data), 4096, col.line)
		if err != nil || n != int64(len(data)) {
			t.Fatalf("readLines read %d of %d: %v", n, len(data), err)
		}
		resp := &brokerv1.RunTraceResponse{Samples: col.samples, Warnings: col.warnings}
		for _, name := range col.order {
			m := col.maps[name]
			if len(m.Entries) > 4 || len(m.Histograms) > 4 || len(m.Stats) > 4 {
				t.Fatalf("map %s exceeds the entry limit", name)
			}
			for _, h := range m.Histograms {
				if len(h.Buckets) > maxBuckets {
					t.Fatalf("histogram with %d buckets", len(h.Buckets))
				}
			}
			resp.Maps = append(resp.Maps, m)
		}
		if len(col.samples) > 5 || len(col.warnings) > maxWarnings || len(col.order) > maxMaps {
			t.Fatalf("collector over its limits: %d samples, %d warnings, %d maps", len(col.samples), len(col.warnings), len(col.order))
		}
		bound(resp, minOutputCap)
		if proto.Size(resp) > minOutputCap {
			t.Fatalf("bounded response is %d bytes", proto.Size(resp))
		}
		// Proto strings must be UTF-8, or the response cannot be sent.
		if _, err := proto.Marshal(resp); err != nil {
			t.Fatalf("response does not marshal: %v", err)
		}
	})
}

// liveOutput is bpftrace 0.17's output on this host for a templated trace.
const liveOutput = `{"type": "attached_probes", "data": {"probes": 3}}
{"type": "printf", "data": "pid=14504 uid=0 comm=cat path=/etc/ld.so.cache\n"}


{"type": "map", "data": {"@by_path": {"/usr/bin/ls": 1, "/usr/bin/cat": 1}}}
{"type": "map", "data": {"@by_process": {"1410,ls": 1, "1399,cat": 1}}}
{"type": "map", "data": {"@errors": {"2": 7, "11": 48}}}
{"type": "map", "data": {"@events": 2}}
{"type": "hist", "data": {"@r": [{"min": 0, "max": 0, "count": 2}, {"min": 1, "max": 1, "count": 0}, {"min": 2, "max": 3, "count": 1}]}}
{"type": "hist", "data": {"@l": {"sleep": [{"min": 800, "max": 899, "count": 20}, {"min": 1000, "count": 40}], "cat": [{"min": 800, "max": 899, "count": 20}]}}}
{"type": "stats", "data": {"@av": 35024}}
{"type": "stats", "data": {"@s": {"count": 160, "average": 35024, "total": 5603840}}}
{"type": "stats", "data": {"@st": {"sleep": {"count": 60, "average": 3008, "total": 180480}, "cat": {"count": 100, "average": 54233, "total": 5423360}}}}
{"type": "lost_events", "data": {"events": 7464}}
{"type": "map", "data": {"@_sampled": 3}}
`
