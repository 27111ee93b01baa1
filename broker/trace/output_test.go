package trace

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func collect(t *testing.T, out string, templated bool) *collector {
	t.Helper()
	col := newCollector(20, 20, templated, nil)
	if _, _, err := readLines(strings.NewReader(out), 1<<20, col.line); err != nil {
		t.Fatal(err)
	}
	return col
}

func TestCollectorRecords(t *testing.T) {
	col := collect(t, liveOutput, true)
	if col.attached != 3 || !col.sawAttach {
		t.Errorf("attached = %d", col.attached)
	}
	if col.events == nil || *col.events != 2 {
		t.Errorf("events = %v, want 2 from @events", col.events)
	}
	if col.lost != 7464 {
		t.Errorf("lost = %d", col.lost)
	}
	if len(col.samples) != 1 || col.samples[0] != "pid=14504 uid=0 comm=cat path=/etc/ld.so.cache" {
		t.Errorf("samples = %q", col.samples)
	}
	if _, ok := col.maps["@_sampled"]; ok {
		t.Error("the templates' bookkeeping map was kept")
	}
	if _, ok := col.maps["@events"]; ok {
		t.Error("@events is the event count, not a map to list")
	}
	wantOrder := "@by_path @by_process @errors @r @l @av @s @st"
	if got := strings.Join(col.order, " "); got != wantOrder {
		t.Errorf("maps %s, want %s", got, wantOrder)
	}
	errs := col.maps["@errors"].Entries
	if len(errs) != 2 || errs[0].Key != "11 EAGAIN" || errs[0].Value != 48 || errs[1].Key != "2 ENOENT" {
		t.Errorf("@errors = %v, want errno names, largest first", errs)
	}
	procs := col.maps["@by_process"].Entries
	if procs[0].Key != "1399,cat" && procs[0].Key != "1410,ls" {
		t.Errorf("multi-key entry = %v", procs[0])
	}
	r := col.maps["@r"].Histograms
	if len(r) != 1 || r[0].Key != "" || len(r[0].Buckets) != 3 || *r[0].Buckets[2].Min != 2 || *r[0].Buckets[2].Max != 3 || r[0].Buckets[2].Count != 1 {
		t.Errorf("@r = %v", r)
	}
	l := col.maps["@l"].Histograms
	if len(l) != 2 || l[0].Key != "sleep" || l[0].Buckets[1].Max != nil || *l[0].Buckets[1].Min != 1000 {
		t.Errorf("@l = %v, want sleep (60) before cat (20), open last bucket", l)
	}
	if v := col.maps["@av"].Value; v == nil || *v != 35024 {
		t.Errorf("@av = %v", v)
	}
	s := col.maps["@s"].Stats
	if len(s) != 1 || s[0].Key != "" || s[0].Count != 160 || s[0].Average != 35024 || s[0].Total != 5603840 {
		t.Errorf("@s = %v", s)
	}
	st := col.maps["@st"].Stats
	if len(st) != 2 || st[0].Key != "cat" || st[0].Total != 5423360 {
		t.Errorf("@st = %v", st)
	}
}

func TestCollectorRawKeepsEverything(t *testing.T) {
	col := collect(t, liveOutput, false)
	for _, name := range []string{"@_sampled", "@events"} {
		if _, ok := col.maps[name]; !ok {
			t.Errorf("raw run dropped map %s", name)
		}
	}
	if col.maps["@errors"].Entries[0].Key != "11" {
		t.Error("raw maps must not be renamed")
	}
}

func TestCollectorOddInput(t *testing.T) {
	out := strings.Join([]string{
		`{"type": "attached_probes", "count": 4}`,
		`not json at all`,
		`{"type": "mystery", "data": 1}`,
		`{"type": "runtime_error", "msg": "division by zero"}`,
		`{"type": "map", "data": {"@t": {"a": "text value", "b": [1, 2]}}}`,
		`{"type": "map", "data": {"@u": 18446744073709551615}}`,
		`{"type": "map", "data": {"@f": {"x": 1.5}}}`,
		`{"type": "hist", "data": {"@bad": 7}}`,
		`{"type": "map", "data": ["not", "an", "object"]}`,
		`{"type": "lost_events", "count": 5}`,
		`{"type": "value", "data": 42}`,
	}, "\n")
	col := collect(t, out, true)
	if col.attached != 4 {
		t.Errorf("attached from count = %d", col.attached)
	}
	if col.lost != 5 {
		t.Errorf("lost from count = %d", col.lost)
	}
	joined := strings.Join(col.warnings, "\n")
	for _, w := range []string{"unparsed output line: not json", `unknown record type "mystery"`, "runtime_error: division by zero", "map @bad", "unparsed map record"} {
		if !strings.Contains(joined, w) {
			t.Errorf("warnings lack %q:\n%s", w, joined)
		}
	}
	tm := col.maps["@t"].Entries
	if len(tm) != 2 || tm[0].Text != "text value" || tm[1].Text != "[1, 2]" {
		t.Errorf("@t = %v", tm)
	}
	if v := col.maps["@u"].Value; v == nil || *v != 1<<63-1 {
		t.Errorf("@u = %v, want clamped to MaxInt64", v)
	}
	if e := col.maps["@f"].Entries; len(e) != 1 || e[0].Value != 1 {
		t.Errorf("@f = %v", e)
	}
	if len(col.samples) != 1 || col.samples[0] != "42" {
		t.Errorf("value record sample = %q", col.samples)
	}
}

func TestCollectorSampleLimit(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, `{"type": "printf", "data": "event %d\n"}`+"\n", i)
	}
	col := newCollector(7, 20, true, nil)
	if _, _, err := readLines(strings.NewReader(b.String()), 1<<20, col.line); err != nil {
		t.Fatal(err)
	}
	if len(col.samples) != 7 || col.samples[6] != "event 6" || col.dropped != 93 || col.printfs != 100 {
		t.Errorf("samples %d (last %q), dropped %d, printfs %d", len(col.samples), col.samples[len(col.samples)-1], col.dropped, col.printfs)
	}
}

func TestReadLines(t *testing.T) {
	long := strings.Repeat("x", 300)
	in := "a\n" + long + "\nb\n\nc"
	var got []string
	n, truncated, err := readLines(iotest.OneByteReader(strings.NewReader(in)), 100, func(b []byte) {
		got = append(got, strings.TrimSuffix(string(b), "\n"))
	})
	if err != nil || n != int64(len(in)) || !truncated {
		t.Fatalf("n=%d truncated=%v err=%v", n, truncated, err)
	}
	if strings.Join(got, "|") != "a|b||c" {
		t.Errorf("lines = %q, want the long one skipped", got)
	}
	_, _, err = readLines(iotest.ErrReader(io.ErrUnexpectedEOF), 100, func([]byte) {})
	if err == nil {
		t.Error("read error lost")
	}
}

func TestBound(t *testing.T) {
	resp := &brokerv1.RunTraceResponse{Program: strings.Repeat("p", 1000)}
	for i := 0; i < 200; i++ {
		resp.Samples = append(resp.Samples, strings.Repeat("s", 100))
	}
	m := &brokerv1.TraceMap{Name: "@by_path"}
	for i := 0; i < 300; i++ {
		m.Entries = append(m.Entries, &brokerv1.TraceMapEntry{Key: strings.Repeat("k", 100), Value: int64(300 - i)})
	}
	resp.Maps = []*brokerv1.TraceMap{m}
	before := proto.Clone(resp).(*brokerv1.RunTraceResponse)
	bound(resp, 8<<10)
	if size := proto.Size(resp); size > 8<<10 {
		t.Fatalf("size %d over the cap", size)
	}
	if !resp.Truncated {
		t.Error("not marked truncated")
	}
	if int64(len(resp.Samples))+resp.SamplesDropped != 200 {
		t.Errorf("samples kept %d + dropped %d != 200", len(resp.Samples), resp.SamplesDropped)
	}
	if got := resp.Maps[0]; int64(len(got.Entries))+got.Dropped != 300 || (len(got.Entries) > 0 && got.Entries[0].Value != 300) {
		t.Errorf("map kept %d + dropped %d, first %v", len(got.Entries), got.Dropped, got.Entries[0])
	}
	if resp.Program != before.Program {
		t.Error("the program was cut while other things could go")
	}
	small := &brokerv1.RunTraceResponse{Ok: true, Samples: []string{"a"}}
	bound(small, 8<<10)
	if small.Truncated || len(small.Samples) != 1 {
		t.Error("a response under the cap was changed")
	}
	huge := &brokerv1.RunTraceResponse{Program: strings.Repeat("p", 1<<20), Error: strings.Repeat("e", 1<<20)}
	bound(huge, minOutputCap)
	if proto.Size(huge) > minOutputCap {
		t.Errorf("text-only response still %d bytes", proto.Size(huge))
	}
}

func TestBpftraceWords(t *testing.T) {
	prog := "kprobe:vfs_read /comm != \"bpftrace\"/ {\n\t@events = count();\n}\n"
	stderr := lines([]byte(`ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace. If your program is not loading, you can try "ulimit -l 8192" to fix the problem
stdin:1:1-16: WARNING: vfs_read is not traceable (either non-existing, inlined, or marked as "notrace"); attaching to it will likely fail
kprobe:vfs_read /comm != "bpftrace"/ {
~~~~~~~~~~~~~~~
create_probe_event: open(/sys/kernel/tracing/kprobe_events): No such file or directory
ERROR: Error attaching probe: 'kprobe:vfs_read'
`))
	got := bpftraceWords(stderr, prog)
	want := `stdin:1:1-16: WARNING: vfs_read is not traceable (either non-existing, inlined, or marked as "notrace"); attaching to it will likely fail; create_probe_event: open(/sys/kernel/tracing/kprobe_events): No such file or directory; ERROR: Error attaching probe: 'kprobe:vfs_read'`
	if got != want {
		t.Errorf("words:\n got %s\nwant %s", got, want)
	}
}

func TestClip(t *testing.T) {
	if got := clip("héllo", 2); got != "h…" {
		t.Errorf("clip split a rune: %q", got)
	}
	if got := clip("abc", 3); got != "abc" {
		t.Errorf("clip changed a short string: %q", got)
	}
	if !bytes.Equal([]byte(clip(strings.Repeat("a", 10), 4)), []byte("aaaa…")) {
		t.Error("clip")
	}
}
