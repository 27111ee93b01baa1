package trace

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Bounds on what one trace's parsed output may hold, on top of Config.
const (
	maxMaps             = 32
	maxBuckets          = 128
	maxSampleBytes      = 512
	maxWarnings         = 32
	maxWarningBytes     = 512
	maxKeyBytes         = 256
	maxUnparsedWarnings = 3
)

// collector turns bpftrace's JSON records into a bounded result. It is fed
// one line at a time from the goroutine that reads stdout and read once that
// goroutine is done.
type collector struct {
	sampleLimit  int
	entryLimit   int
	templated    bool
	onAttach     func()
	attached     int32
	sawAttach    bool
	samples      []string
	printfs      int64
	dropped      int64
	lost         int64
	events       *int64
	maps         map[string]*brokerv1.TraceMap
	order        []string
	warnings     []string
	warnDropped  int
	unparsed     int
	truncated    bool
	recordErrors []string
}

func newCollector(sampleLimit, entryLimit int, templated bool, onAttach func()) *collector {
	return &collector{
		sampleLimit: sampleLimit,
		entryLimit:  entryLimit,
		templated:   templated,
		onAttach:    onAttach,
		maps:        map[string]*brokerv1.TraceMap{},
	}
}

// printfPrefix starts every printf record of bpftrace 0.17.
var printfPrefix = []byte(`{"type": "printf",`)

// record is one line of `bpftrace -f json` output.
type record struct {
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	Count *json.Number    `json:"count"`
	Msg   string          `json:"msg"`
}

// line parses one output line. Blank lines separate records in 0.17.
func (c *collector) line(b []byte) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	// Once the sample is full a printed event is only counted: decoding
	// each one would let a flood outrun the reader.
	if len(c.samples) >= c.sampleLimit && bytes.HasPrefix(b, printfPrefix) {
		c.printfs++
		c.dropped++
		return
	}
	var r record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&r); err != nil || r.Type == "" {
		c.unparsed++
		if c.unparsed <= maxUnparsedWarnings {
			c.warn("unparsed output line: " + string(b))
		}
		return
	}
	switch r.Type {
	case "attached_probes":
		c.attachedProbes(r)
	case "printf":
		c.printf(r.Data)
	case "value", "time", "cat", "join", "syscall":
		c.printf(r.Data)
	case "lost_events":
		c.lostEvents(r)
	case "map", "hist", "stats":
		c.mapRecord(r.Type, r.Data)
	case "warnf", "errorf", "helper_error", "runtime_error":
		msg := r.Msg
		if msg == "" {
			msg = string(r.Data)
		}
		c.warn(r.Type + ": " + msg)
		if r.Type != "warnf" {
			c.recordErrors = append(c.recordErrors, r.Type+": "+clip(msg, maxWarningBytes))
			if len(c.recordErrors) > maxWarnings {
				c.recordErrors = c.recordErrors[:maxWarnings]
			}
		}
	default:
		c.warn(fmt.Sprintf("unknown record type %q", clip(r.Type, 64)))
	}
}

func (c *collector) attachedProbes(r record) {
	var d struct {
		Probes json.Number `json:"probes"`
	}
	n := int64(0)
	if json.Unmarshal(r.Data, &d) == nil && d.Probes != "" {
		n, _ = d.Probes.Int64()
	} else if r.Count != nil {
		n, _ = r.Count.Int64()
	}
	c.attached = int32(min(max(n, 0), math.MaxInt32))
	if !c.sawAttach {
		c.sawAttach = true
		if c.onAttach != nil {
			c.onAttach()
		}
	}
}

func (c *collector) printf(data json.RawMessage) {
	c.printfs++
	if len(c.samples) >= c.sampleLimit {
		c.dropped++
		return
	}
	var s string
	if json.Unmarshal(data, &s) != nil {
		s = string(data)
	}
	c.samples = append(c.samples, clip(strings.TrimRight(s, "\n"), maxSampleBytes))
}

func (c *collector) lostEvents(r record) {
	var d struct {
		Events json.Number `json:"events"`
	}
	var n int64
	if json.Unmarshal(r.Data, &d) == nil && d.Events != "" {
		n, _ = d.Events.Int64()
	} else if r.Count != nil {
		n, _ = r.Count.Int64()
	}
	if n > 0 && c.lost <= math.MaxInt64-n {
		c.lost += n
	}
}

func (c *collector) warn(s string) {
	if len(c.warnings) >= maxWarnings {
		c.warnDropped++
		return
	}
	c.warnings = append(c.warnings, clip(s, maxWarningBytes))
}

// mapRecord parses {"@name": value, ...}; bpftrace prints one map a record
// but the format allows more.
func (c *collector) mapRecord(typ string, data json.RawMessage) {
	err := eachMember(data, func(name string, v json.RawMessage) {
		c.mapValue(typ, name, v)
	})
	if err != nil {
		c.warn(fmt.Sprintf("unparsed %s record: %v", typ, err))
	}
}

func (c *collector) mapValue(typ, name string, v json.RawMessage) {
	name = clip(name, maxKeyBytes)
	if c.templated {
		if strings.HasPrefix(name, internalMap) {
			return
		}
		if name == mapEvents {
			if n, ok := intValue(v); ok {
				c.events = &n
				return
			}
		}
	}
	m, err := parseMap(typ, name, v)
	if err != nil {
		c.warn(fmt.Sprintf("map %s: %v", name, err))
		return
	}
	if c.templated && name == "@errors" {
		nameErrnos(m)
	}
	topN(m, c.entryLimit)
	if _, seen := c.maps[name]; !seen {
		if len(c.order) >= maxMaps {
			c.truncated = true
			c.warn("map " + name + " left out: too many maps")
			return
		}
		c.order = append(c.order, name)
	}
	// A map printed twice (print() in an interval) keeps its last state.
	c.maps[name] = m
}

// parseMap reads one map's value as bpftrace prints it for each record type.
func parseMap(typ, name string, v json.RawMessage) (*brokerv1.TraceMap, error) {
	m := &brokerv1.TraceMap{Name: name}
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	switch typ {
	case "hist":
		if v[0] == '[' {
			h, err := parseHistogram("", v)
			if err != nil {
				return nil, err
			}
			m.Histograms = append(m.Histograms, h)
			return m, nil
		}
		err := eachMember(v, func(k string, hv json.RawMessage) {
			if h, err := parseHistogram(k, hv); err == nil {
				m.Histograms = append(m.Histograms, h)
			}
		})
		return m, err
	case "stats":
		if v[0] != '{' {
			return m, scalar(m, v)
		}
		if s, ok := parseStats("", v); ok {
			m.Stats = append(m.Stats, s)
			return m, nil
		}
		err := eachMember(v, func(k string, sv json.RawMessage) {
			if s, ok := parseStats(k, sv); ok {
				m.Stats = append(m.Stats, s)
			} else {
				m.Entries = append(m.Entries, entry(k, sv))
			}
		})
		return m, err
	default:
		if v[0] != '{' {
			return m, scalar(m, v)
		}
		err := eachMember(v, func(k string, ev json.RawMessage) {
			m.Entries = append(m.Entries, entry(k, ev))
		})
		return m, err
	}
}

func scalar(m *brokerv1.TraceMap, v json.RawMessage) error {
	if n, ok := intValue(v); ok {
		m.Value = &n
		return nil
	}
	m.Entries = append(m.Entries, entry("", v))
	return nil
}

func entry(key string, v json.RawMessage) *brokerv1.TraceMapEntry {
	e := &brokerv1.TraceMapEntry{Key: clip(key, maxKeyBytes)}
	if n, ok := intValue(v); ok {
		e.Value = n
		return e
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		e.Text = clip(s, maxKeyBytes)
	} else {
		e.Text = clip(string(bytes.TrimSpace(v)), maxKeyBytes)
	}
	return e
}

func parseHistogram(key string, v json.RawMessage) (*brokerv1.TraceHistogram, error) {
	var raw []struct {
		Min   *json.Number `json:"min"`
		Max   *json.Number `json:"max"`
		Count json.Number  `json:"count"`
	}
	if err := json.Unmarshal(v, &raw); err != nil {
		return nil, fmt.Errorf("histogram %q: %w", clip(key, 64), err)
	}
	h := &brokerv1.TraceHistogram{Key: clip(key, maxKeyBytes)}
	for i, b := range raw {
		if i == maxBuckets {
			break
		}
		bucket := &brokerv1.HistogramBucket{}
		if b.Min != nil {
			n, _ := numberInt(*b.Min)
			bucket.Min = &n
		}
		if b.Max != nil {
			n, _ := numberInt(*b.Max)
			bucket.Max = &n
		}
		if n, ok := numberInt(b.Count); ok && n > 0 {
			bucket.Count = uint64(n)
		}
		h.Buckets = append(h.Buckets, bucket)
	}
	return h, nil
}

func parseStats(key string, v json.RawMessage) (*brokerv1.TraceStats, bool) {
	var raw struct {
		Count   *json.Number `json:"count"`
		Average *json.Number `json:"average"`
		Total   *json.Number `json:"total"`
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.DisallowUnknownFields()
	if dec.Decode(&raw) != nil || raw.Count == nil || raw.Average == nil || raw.Total == nil {
		return nil, false
	}
	s := &brokerv1.TraceStats{Key: clip(key, maxKeyBytes)}
	s.Count, _ = numberInt(*raw.Count)
	s.Average, _ = numberInt(*raw.Average)
	s.Total, _ = numberInt(*raw.Total)
	return s, true
}

// eachMember calls fn for each member of a JSON object, in order, keeping
// duplicate keys.
func eachMember(data json.RawMessage, fn func(key string, v json.RawMessage)) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fmt.Errorf("want an object, got %v", tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key %v is not a string", tok)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		fn(key, v)
	}
	_, err = dec.Token()
	return err
}

func intValue(v json.RawMessage) (int64, bool) {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	return numberInt(json.Number(v))
}

// numberInt reads a JSON number as int64, clamping values beyond its range.
func numberInt(n json.Number) (int64, bool) {
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i, true
	}
	if u, err := strconv.ParseUint(string(n), 10, 64); err == nil && u > math.MaxInt64 {
		return math.MaxInt64, true
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || math.IsNaN(f) {
		return 0, false
	}
	switch {
	case f >= math.MaxInt64:
		return math.MaxInt64, true
	case f <= math.MinInt64:
		return math.MinInt64, true
	}
	return int64(f), true
}

// topN keeps the limit largest keys of each kind, counting what it drops.
func topN(m *brokerv1.TraceMap, limit int) {
	sort.SliceStable(m.Entries, func(i, j int) bool {
		a, b := m.Entries[i], m.Entries[j]
		if a.Value != b.Value {
			return a.Value > b.Value
		}
		return a.Key < b.Key
	})
	sort.SliceStable(m.Histograms, func(i, j int) bool {
		a, b := histTotal(m.Histograms[i]), histTotal(m.Histograms[j])
		if a != b {
			return a > b
		}
		return m.Histograms[i].Key < m.Histograms[j].Key
	})
	sort.SliceStable(m.Stats, func(i, j int) bool {
		a, b := m.Stats[i], m.Stats[j]
		if a.Total != b.Total {
			return a.Total > b.Total
		}
		return a.Key < b.Key
	})
	if n := len(m.Entries) - limit; n > 0 {
		m.Entries, m.Dropped = m.Entries[:limit], m.Dropped+int64(n)
	}
	if n := len(m.Histograms) - limit; n > 0 {
		m.Histograms, m.Dropped = m.Histograms[:limit], m.Dropped+int64(n)
	}
	if n := len(m.Stats) - limit; n > 0 {
		m.Stats, m.Dropped = m.Stats[:limit], m.Dropped+int64(n)
	}
}

func histTotal(h *brokerv1.TraceHistogram) uint64 {
	var t uint64
	for _, b := range h.Buckets {
		t += b.Count
	}
	return t
}

// nameErrnos turns the templates' errno keys ("2") into "2 ENOENT".
func nameErrnos(m *brokerv1.TraceMap) {
	for _, e := range m.Entries {
		n, err := strconv.Atoi(e.Key)
		if err != nil || n <= 0 || n > 4095 {
			continue
		}
		if name := unix.ErrnoName(syscall.Errno(n)); name != "" {
			e.Key = e.Key + " " + name
		}
	}
}

// clip makes s valid UTF-8 (proto strings must be) and cuts it to at most
// n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && cut < len(s) && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}
