// Package ebpf turns the eBPF programs a model asks for into structured
// brokerv1.TraceSpec requests, and the broker's results back into the JSON
// the backend's prompts expect (the reference agent's ebpf_results,
// executed_ebpf_programs and ebpf_evidence_summary keys) plus the richer
// evidence our broker returns: aggregates, a bounded sample and errors in
// bpftrace's own words.
//
// The worker never writes bpftrace programs: it only describes what to
// trace. The broker validates the spec again and writes the program.
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
)

// Program is one item of a model's "ebpf_programs" list:
// {name, type, target, duration, filters, description}, read leniently. A
// field of an unexpected JSON type is left empty and named in Problems; the
// item is never rejected as a whole, so one odd item cannot lose a turn.
type Program struct {
	Name   string
	Type   string
	Target string
	// Duration is the requested duration; 0 when absent, zero or negative
	// (the default applies) or unreadable (see Problems).
	Duration    time.Duration
	Filters     json.RawMessage
	Description string
	// Measure is an optional "measure" field: count, latency, size, retval.
	Measure string
	// Problems lists what could not be read from the item.
	Problems []string
}

// maxDuration keeps a model's duration inside time.Duration; the broker
// caps far lower.
const maxDuration = time.Hour

// UnmarshalJSON reads an item leniently. It fails only on malformed JSON.
func (p *Program) UnmarshalJSON(b []byte) error {
	*p = Program{}
	if !json.Valid(b) {
		return fmt.Errorf("ebpf program: malformed JSON")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil || fields == nil {
		p.Problems = append(p.Problems, fmt.Sprintf("item is not an object: %s", clip(string(bytes.TrimSpace(b)), 80)))
		return nil
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		raw := fields[key]
		switch strings.ToLower(key) {
		case "name":
			p.Name = p.text(key, raw)
		case "type":
			p.Type = p.text(key, raw)
		case "target":
			p.Target = p.text(key, raw)
		case "description":
			p.Description = p.text(key, raw)
		case "measure":
			p.Measure = p.text(key, raw)
		case "duration":
			p.Duration = p.duration(raw)
		case "filters", "filter":
			if !isNull(raw) {
				p.Filters = append(json.RawMessage(nil), raw...)
			}
		}
	}
	return nil
}

// text reads a string field; numbers and booleans are taken as their text.
func (p *Program) text(key string, raw json.RawMessage) string {
	if isNull(raw) {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	t := strings.TrimSpace(string(raw))
	if t == "true" || t == "false" || isNumber(t) {
		return t
	}
	p.Problems = append(p.Problems, fmt.Sprintf("%s is not a string", key))
	return ""
}

// duration reads seconds as a number or numeric string, or a Go duration
// string ("10s", "1m").
func (p *Program) duration(raw json.RawMessage) time.Duration {
	if isNull(raw) {
		return 0
	}
	s := strings.TrimSpace(string(raw))
	var str string
	if json.Unmarshal(raw, &str) == nil {
		s = strings.TrimSpace(str)
	}
	if s == "" {
		return 0
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(secs) {
		return clampDuration(secs * float64(time.Second))
	}
	if d, err := time.ParseDuration(s); err == nil {
		return clampDuration(float64(d))
	}
	p.Problems = append(p.Problems, fmt.Sprintf("duration %s is not a number of seconds", clip(s, 40)))
	return 0
}

func clampDuration(ns float64) time.Duration {
	switch {
	case ns <= 0:
		return 0
	case ns >= float64(maxDuration):
		return maxDuration
	}
	return time.Duration(ns)
}

func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || string(t) == "null"
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// clip cuts s to n bytes on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
