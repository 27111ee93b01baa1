package policy

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxNodes bounds the nodes one file may expand to, aliases included, so a
// small file of nested aliases cannot make the loader walk billions of nodes.
const maxNodes = 100_000

// decoder walks yaml.Node trees strictly: every mapping key must be known,
// no key may repeat, and every scalar must have the type its field needs.
// Problems are collected with their file:line and decoding goes on, so one
// run reports as many problems as it can.
type decoder struct {
	file     string
	errs     *ErrorList
	visits   int
	overflow bool
	// patterns holds the file's compiled operand patterns by source: the
	// vendor policy repeats many (a user name, a unit name), and each
	// compiled copy costs kilobytes.
	patterns map[string]*regexp.Regexp
}

func (d *decoder) patternsSeen() map[string]*regexp.Regexp {
	if d.patterns == nil {
		d.patterns = map[string]*regexp.Regexp{}
	}
	return d.patterns
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	e := &Error{File: d.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs.add(e)
}

func (d *decoder) at(n *yaml.Node) pos {
	if n == nil {
		return pos{File: d.file}
	}
	return pos{File: d.file, Line: n.Line}
}

// resolve follows aliases and charges the node budget.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for depth := 0; n != nil && n.Kind == yaml.AliasNode; depth++ {
		if depth > 32 {
			d.errorf(n, "alias chain too deep")
			return nil
		}
		n = n.Alias
	}
	d.visits++
	if d.visits > maxNodes {
		if !d.overflow {
			d.overflow = true
			d.errorf(n, "document expands to more than %d nodes (too many aliases?)", maxNodes)
		}
		return nil
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "boolean " + n.Value
		case "!!int", "!!float":
			return "number " + n.Value
		}
		return fmt.Sprintf("string %q", n.Value)
	}
	return "something else"
}

// mapping checks that n is a mapping whose keys are all in known and
// unique, and returns the value nodes by key.
func (d *decoder) mapping(n *yaml.Node, what string, known ...string) (map[string]*yaml.Node, bool) {
	n = d.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: expected a mapping, got %s", what, kindName(n))
		return nil, false
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := d.resolve(n.Content[i])
		if k == nil {
			return nil, false
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
			d.errorf(k, "%s: keys must be plain words", what)
			ok = false
			continue
		}
		if k.Value == "<<" {
			d.errorf(k, "%s: merge keys (<<) are not supported; write the keys out", what)
			ok = false
			continue
		}
		if !contains(known, k.Value) {
			d.errorf(k, "%s: unknown key %q (known: %s)", what, k.Value, strings.Join(sorted(known), ", "))
			ok = false
			continue
		}
		if prev, dup := out[k.Value]; dup {
			d.errorf(k, "%s: key %q repeats (first at line %d)", what, k.Value, prev.Line)
			ok = false
			continue
		}
		out[k.Value] = n.Content[i+1]
	}
	return out, ok
}

func (d *decoder) seq(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	n = d.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: expected a list, got %s", what, kindName(n))
		return nil, false
	}
	return n.Content, true
}

func (d *decoder) str(n *yaml.Node, what string) (string, bool) {
	n = d.resolve(n)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "%s: expected a string, got %s", what, kindName(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float":
		return n.Value, true
	}
	d.errorf(n, "%s: expected a string, got %s (quote it)", what, kindName(n))
	return "", false
}

// strs accepts one string or a list of strings.
func (d *decoder) strs(n *yaml.Node, what string) ([]string, bool) {
	r := d.resolve(n)
	if r == nil {
		return nil, false
	}
	if r.Kind == yaml.ScalarNode {
		s, ok := d.str(r, what)
		if !ok {
			return nil, false
		}
		return []string{s}, true
	}
	items, ok := d.seq(r, what)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		s, ok2 := d.str(it, fmt.Sprintf("%s[%d]", what, i))
		if !ok2 {
			ok = false
			continue
		}
		out = append(out, s)
	}
	return out, ok
}

func (d *decoder) boolean(n *yaml.Node, what string) (bool, bool) {
	n = d.resolve(n)
	if n == nil {
		return false, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
		d.errorf(n, "%s: expected true or false, got %s", what, kindName(n))
		return false, false
	}
	b, err := strconv.ParseBool(n.Value)
	if err != nil {
		d.errorf(n, "%s: expected true or false, got %q", what, n.Value)
		return false, false
	}
	return b, true
}

func (d *decoder) integer(n *yaml.Node, what string) (int64, bool) {
	n = d.resolve(n)
	if n == nil {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n, "%s: expected a whole number, got %s", what, kindName(n))
		return 0, false
	}
	v, err := strconv.ParseInt(strings.TrimPrefix(n.Value, "+"), 10, 64)
	if err != nil {
		d.errorf(n, "%s: expected a decimal whole number, got %q", what, n.Value)
		return 0, false
	}
	return v, true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sorted(list []string) []string {
	out := append([]string(nil), list...)
	sort.Strings(out)
	return out
}
