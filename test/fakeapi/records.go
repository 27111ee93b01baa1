package fakeapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// handleRecords is the PocketBase records API for the agent collections:
// GET /api/collections/<c>/records?filter=…&page=…&perPage=…. Only records
// the caller owns are listed (an invalid token lists nothing, like a guest).
func (s *Server) handleRecords(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("collection")
	q := r.URL.Query()
	page, perPage := 1, 30
	if v, err := strconv.Atoi(q.Get("page")); err == nil && v > 0 {
		page = v
	}
	if v, err := strconv.Atoi(q.Get("perPage")); err == nil && v > 0 {
		perPage = min(v, 1000)
	}
	expr, err := ParseFilter(q.Get("filter"))
	if err != nil {
		writePB(w, http.StatusBadRequest, "Something went wrong while processing your request. Invalid filter parameters.", nil)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []map[string]any
	switch c, ok := s.st.records[name]; {
	case ok:
		p := s.authLocked(r)
		for _, id := range c.order {
			rec := c.byID[id]
			if p.owns(rec) && expr.Match(rec) {
				items = append(items, rec)
			}
		}
	case name == "package_exceptions" || name == "agents":
		// Agents cannot read these; PocketBase lists nothing.
	default:
		writePB(w, http.StatusNotFound, "Missing collection context.", nil)
		return
	}
	total := len(items)
	totalPages := (total + perPage - 1) / perPage
	from := min((page-1)*perPage, total)
	to := min(from+perPage, total)
	out := make([]map[string]any, 0, to-from)
	out = append(out, items[from:to]...)
	writeJSON(w, http.StatusOK, struct {
		Page       int              `json:"page"`
		PerPage    int              `json:"perPage"`
		TotalItems int              `json:"totalItems"`
		TotalPages int              `json:"totalPages"`
		Items      []map[string]any `json:"items"`
	}{page, perPage, total, totalPages, out})
}

// Filter is a parsed PocketBase filter subset: comparisons field = value
// and field != value (values quoted with ' or ", numbers, true, false,
// null), joined by && and ||, with parentheses. The empty filter matches
// everything.
type Filter struct{ root node }

type node interface {
	match(rec map[string]any) bool
}

type cmpNode struct {
	field, value string
	negate       bool
}

type boolNode struct {
	and         bool
	left, right node
}

func (c cmpNode) match(rec map[string]any) bool {
	got := ""
	switch v := rec[c.field].(type) {
	case nil:
	case string:
		got = v
	default:
		got = fmt.Sprint(v)
	}
	return (got == c.value) != c.negate
}

func (b boolNode) match(rec map[string]any) bool {
	if b.and {
		return b.left.match(rec) && b.right.match(rec)
	}
	return b.left.match(rec) || b.right.match(rec)
}

// Match reports whether rec satisfies the filter.
func (f Filter) Match(rec map[string]any) bool { return f.root == nil || f.root.match(rec) }

const maxFilterLen = 3500

// ParseFilter parses a filter expression; an error for anything outside
// the subset.
func ParseFilter(s string) (Filter, error) {
	if strings.TrimSpace(s) == "" {
		return Filter{}, nil
	}
	if len(s) > maxFilterLen {
		return Filter{}, errors.New("filter too long")
	}
	p := &filterParser{src: s}
	n, err := p.or(0)
	if err != nil {
		return Filter{}, err
	}
	p.space()
	if p.pos != len(p.src) {
		return Filter{}, fmt.Errorf("unexpected %q at %d", p.src[p.pos:], p.pos)
	}
	return Filter{root: n}, nil
}

type filterParser struct {
	src string
	pos int
}

const maxFilterDepth = 32

func (p *filterParser) space() {
	for p.pos < len(p.src) && strings.ContainsRune(" \t\r\n", rune(p.src[p.pos])) {
		p.pos++
	}
}

func (p *filterParser) eat(tok string) bool {
	p.space()
	if strings.HasPrefix(p.src[p.pos:], tok) {
		p.pos += len(tok)
		return true
	}
	return false
}

func (p *filterParser) or(depth int) (node, error) {
	left, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.eat("||") {
		right, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		left = boolNode{and: false, left: left, right: right}
	}
	return left, nil
}

func (p *filterParser) and(depth int) (node, error) {
	left, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for p.eat("&&") {
		right, err := p.term(depth)
		if err != nil {
			return nil, err
		}
		left = boolNode{and: true, left: left, right: right}
	}
	return left, nil
}

func (p *filterParser) term(depth int) (node, error) {
	if depth > maxFilterDepth {
		return nil, errors.New("filter nested too deeply")
	}
	if p.eat("(") {
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.eat(")") {
			return nil, errors.New("missing )")
		}
		return n, nil
	}
	field := p.ident()
	if field == "" {
		return nil, fmt.Errorf("want a field name at %d", p.pos)
	}
	var negate bool
	switch {
	case p.eat("!="):
		negate = true
	case p.eat("="):
	default:
		return nil, fmt.Errorf("want = or != at %d", p.pos)
	}
	value, err := p.value()
	if err != nil {
		return nil, err
	}
	return cmpNode{field: field, value: value, negate: negate}, nil
}

func (p *filterParser) ident() string {
	p.space()
	start := p.pos
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' {
			p.pos++
			continue
		}
		break
	}
	return p.src[start:p.pos]
}

func (p *filterParser) value() (string, error) {
	p.space()
	if p.pos >= len(p.src) {
		return "", errors.New("missing value")
	}
	if q := p.src[p.pos]; q == '\'' || q == '"' {
		end := strings.IndexByte(p.src[p.pos+1:], q)
		if end < 0 {
			return "", errors.New("unterminated string")
		}
		v := p.src[p.pos+1 : p.pos+1+end]
		p.pos += end + 2
		return v, nil
	}
	word := p.ident()
	switch {
	case word == "true" || word == "false":
		return word, nil
	case word == "null":
		return "", nil
	}
	if _, err := strconv.ParseFloat(word, 64); err == nil {
		return word, nil
	}
	return "", fmt.Errorf("bad value %q", word)
}
