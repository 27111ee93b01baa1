package policy

import (
	"fmt"
	"strings"
)

// matcher reads one argv against one rule the way the rule's program would,
// judging every option value and operand on the way.
type matcher struct {
	p    *Policy
	r    *cmdRule
	argv []string
	// ops are the argv indices of positional operands: the first
	// len(opsFixed) in a fixed array (no allocation), the rest in opsMore.
	opsFixed [16]int
	opsMore  []int
	nops     int
	filled   uint64
	// used records the rule's required options seen (bit reqBit).
	used  uint32
	paths []PathOperand
	// fail is the argv index where matching stopped; it ranks denials when
	// several rules name the same program.
	fail   int
	reason string
	// subFail marks a denial because the subcommand did not match;
	// subMissing because there was none.
	subFail, subMissing bool
}

func (m *matcher) reset(p *Policy, r *cmdRule, argv []string) {
	m.p, m.r, m.argv = p, r, argv
	m.nops, m.opsMore = 0, m.opsMore[:0]
	m.filled, m.used = 0, 0
	m.paths = nil
	m.fail, m.reason, m.subFail, m.subMissing = 0, "", false, false
}

func (m *matcher) deny(i int, format string, args ...any) bool {
	m.fail = i
	m.reason = fmt.Sprintf(format, args...)
	return false
}

// run matches the whole argv; false means denied with m.reason.
func (m *matcher) run() bool {
	var ok bool
	switch m.r.grammar {
	case gWords:
		ok = m.scanWords()
	case gPS:
		ok = m.scanPS() && m.psFallback()
	case gFind:
		ok = m.scanFind()
	case gDig:
		ok = m.scanDig()
	default:
		ok = m.scanGetopt()
	}
	return ok && m.requiredGiven() && m.finish()
}

// value judges an option value or operand; prefix is the text before it in
// the same argv element ("--file=", "-f"), for the broker's fd substitution.
func (m *matcher) value(v *valueSpec, i int, prefix, s, what string) bool {
	if v.kind == vPath {
		comps, err := normaliseComps(s)
		if err == nil {
			err = m.p.checkComps(s, comps, v.rootSrc, v.roots)
		}
		if err != nil {
			return m.deny(i, "%s: %v", what, err)
		}
		m.paths = append(m.paths, PathOperand{Index: i, Prefix: prefix, Path: s, Roots: v.rootSrc, Open: v.open, CharDevices: v.charDevs})
		return true
	}
	if reason := v.check(s); reason != "" {
		return m.deny(i, "%s: %s", what, reason)
	}
	return true
}

// op returns the argv index of the k-th operand.
func (m *matcher) op(k int) int {
	if k < len(m.opsFixed) {
		return m.opsFixed[k]
	}
	return m.opsMore[k-len(m.opsFixed)]
}

// operand records a positional argument, checking subcommand words as they
// come.
func (m *matcher) operand(i int) bool {
	k := m.nops
	if k < len(m.r.sub) {
		alts := m.r.sub[k].words
		if !contains(alts, m.argv[i]) {
			m.subFail = true
			return m.deny(i, "%q is not an allowed subcommand here (allowed: %s)", m.argv[i], strings.Join(alts, ", "))
		}
	}
	if k < len(m.opsFixed) {
		m.opsFixed[k] = i
	} else {
		m.opsMore = append(m.opsMore, i)
	}
	m.nops++
	return true
}

func (m *matcher) unknownOption(i int, lit string) bool {
	if why, ok := m.r.deny[lit]; ok {
		return m.deny(i, "option %s is not allowed: %s", lit, why)
	}
	if strings.HasPrefix(lit, "--") && m.r.abbreviates(lit[2:]) {
		return m.deny(i, "option %s is not allowed: long options are matched exactly and abbreviations are refused", lit)
	}
	return m.deny(i, "option %s is not allowed by rule %s", lit, m.r.id)
}

// useOption records an option: it marks the operand it fills and, if the
// rule requires it, that it was given.
func (m *matcher) useOption(o *optSpec) {
	if o.fillSlot >= 0 {
		m.filled |= 1 << uint(o.fillSlot)
	}
	if o.required {
		m.used |= 1 << uint(o.reqBit)
	}
}

// requiredGiven refuses a command line that leaves out an option the rule
// requires, naming the option and what it is for.
func (m *matcher) requiredGiven() bool {
	for _, o := range m.r.required {
		if m.used&(1<<uint(o.reqBit)) != 0 {
			continue
		}
		what := ""
		switch {
		case o.description != "":
			what = ": " + o.description
		case o.value != nil:
			what = " (" + o.value.describe() + ")"
		}
		// A rule whose required option is missing does not describe this
		// line at all, so its denial ranks below every other rule's.
		return m.deny(0, "option %s is required by rule %s%s", strings.Join(o.names, " or "), m.r.id, what)
	}
	return true
}

// long handles "--name", "--name=value" and "--name value".
func (m *matcher) long(i int, a string) (int, bool) {
	name, val, hasEq := strings.Cut(a[2:], "=")
	o := m.r.long[name]
	if o == nil {
		return i, m.unknownOption(i, "--"+name)
	}
	m.useOption(o)
	if o.value == nil {
		if hasEq {
			return i, m.deny(i, "option --%s takes no value", name)
		}
		return i, true
	}
	if hasEq {
		return i, m.value(o.value, i, a[:len(name)+3], val, a[:len(name)+2])
	}
	if o.optionalValue {
		return i, true
	}
	if i+1 >= len(m.argv) {
		return i, m.deny(i, "option --%s needs a value", name)
	}
	return i + 1, m.value(o.value, i+1, "", m.argv[i+1], a)
}

// cluster handles short options written together (-Tc), with a value
// attached (-n5) or in the next argument (-n 5). start is 1 after a dash,
// 0 for a BSD cluster; dash is the spelling prefix for messages.
func (m *matcher) cluster(i int, a string, start int, table *[128]*optSpec, dash string) (int, bool) {
	for j := start; j < len(a); j++ {
		c := a[j]
		var o *optSpec
		if c < 128 {
			o = table[c]
		}
		if o == nil {
			if c >= 128 {
				return i, m.deny(i, "%q: options are ASCII letters", a)
			}
			return i, m.unknownOption(i, letter(dash, c))
		}
		m.useOption(o)
		if o.value == nil {
			continue
		}
		lit := letter(dash, c)
		if j+1 < len(a) {
			return i, m.value(o.value, i, a[:j+1], a[j+1:], lit)
		}
		if o.optionalValue {
			return i, true
		}
		if i+1 >= len(m.argv) {
			return i, m.deny(i, "option %s needs a value", lit)
		}
		return i + 1, m.value(o.value, i+1, "", m.argv[i+1], lit)
	}
	return i, true
}

// Option letters as strings, so naming one costs no allocation.
var dashLetters, bareLetters [128]string

func init() {
	for c := 0; c < 128; c++ {
		dashLetters[c] = "-" + string(rune(c))
		bareLetters[c] = string(rune(c))
	}
}

// letter spells a short option: "-x" after a dash, "x" in a BSD cluster.
func letter(dash string, c byte) string {
	if dash == "" {
		return bareLetters[c]
	}
	return dashLetters[c]
}

// keyword handles a bare keyword option (ip's "dev eth0", ss's "state").
func (m *matcher) keyword(i int, o *optSpec) (int, bool) {
	m.useOption(o)
	if o.value == nil {
		return i, true
	}
	if i+1 >= len(m.argv) {
		return i, m.deny(i, "%s needs a value", m.argv[i])
	}
	return i + 1, m.value(o.value, i+1, "", m.argv[i+1], m.argv[i])
}

func isDashNumber(s string) bool { return len(s) > 1 && s[0] == '-' && isDigits(s[1:]) }

func (m *matcher) scanGetopt() bool {
	r, argv := m.r, m.argv
	i := 1
	if r.leading != nil && len(argv) > 1 && isDashNumber(argv[1]) {
		if !m.value(r.leading, 1, "-", argv[1][1:], "count") {
			return false
		}
		i = 2
	}
	optsDone, dashDash := false, false
	var ok bool
	for ; i < len(argv); i++ {
		a := argv[i]
		switch {
		case !optsDone && a == "--":
			optsDone, dashDash = true, true
		case optsDone && !dashDash && len(a) > 1 && a[0] == '-':
			// POSIX makes this an operand, but if the tool does permute
			// after all it would be an option: refuse rather than guess.
			return m.deny(i, "%q after an operand: %s takes options before operands (write -- before it if it is an operand)", a, r.base)
		case !optsDone && len(a) > 2 && a[0] == '-' && a[1] == '-':
			if i, ok = m.long(i, a); !ok {
				return false
			}
		case !optsDone && len(a) > 1 && a[0] == '-':
			if i, ok = m.cluster(i, a, 1, &r.short, "-"); !ok {
				return false
			}
		default:
			if o := r.words[a]; o != nil && m.nops >= len(r.sub) {
				if i, ok = m.keyword(i, o); !ok {
					return false
				}
				continue
			}
			if !m.operand(i) {
				return false
			}
			if !r.permute {
				optsDone = true
			}
		}
	}
	return true
}

func (m *matcher) scanWords() bool {
	r, argv := m.r, m.argv
	i := 1
	var ok bool
	for ; i < len(argv) && len(argv[i]) > 1 && argv[i][0] == '-'; i++ {
		o := r.words[argv[i]]
		if o == nil {
			return m.unknownOption(i, argv[i])
		}
		if i, ok = m.keyword(i, o); !ok {
			return false
		}
	}
	for ; i < len(argv); i++ {
		a := argv[i]
		if len(a) > 1 && a[0] == '-' {
			if r.words[a] != nil {
				return m.deny(i, "option %s must come before the object (%s %s ...)", a, r.base, a)
			}
			return m.unknownOption(i, a)
		}
		if o := r.words[a]; o != nil && m.nops >= len(r.sub) {
			if i, ok = m.keyword(i, o); !ok {
				return false
			}
			continue
		}
		if !m.operand(i) {
			return false
		}
	}
	return true
}

func (m *matcher) scanDig() bool {
	r, argv := m.r, m.argv
	var ok bool
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case strings.HasPrefix(a, "@"):
			if r.atServer == nil {
				return m.unknownOption(i, "@")
			}
			m.useOption(r.atServer)
			if !m.value(r.atServer.value, i, "@", a[1:], "@server") {
				return false
			}
		case strings.HasPrefix(a, "+"):
			name, val, hasEq := strings.Cut(a, "=")
			o := r.words[name]
			if o == nil {
				return m.unknownOption(i, name)
			}
			m.useOption(o)
			switch {
			case o.value == nil && hasEq:
				return m.deny(i, "query option %s takes no value", name)
			case o.value != nil && hasEq:
				if !m.value(o.value, i, a[:len(name)+1], val, name) {
					return false
				}
			case o.value != nil && !o.optionalValue:
				return m.deny(i, "query option %s needs a value (%s=...)", name, name)
			}
		case len(a) > 1 && a[0] == '-':
			if i, ok = m.cluster(i, a, 1, &r.short, "-"); !ok {
				return false
			}
		default:
			if !m.operand(i) {
				return false
			}
		}
	}
	return true
}

func isFindLeading(a string) bool {
	return a == "-H" || a == "-L" || a == "-P" || a == "-D" || strings.HasPrefix(a, "-O") && len(a) > 2
}

func isFindExprStart(a string) bool {
	return len(a) > 0 && a[0] == '-' || a == "(" || a == ")" || a == "!" || a == ","
}

func (m *matcher) scanFind() bool {
	r, argv := m.r, m.argv
	i := 1
	var ok bool
	for ; i < len(argv) && isFindLeading(argv[i]); i++ {
		o := r.words[argv[i]]
		if o == nil {
			return m.unknownOption(i, argv[i])
		}
		if i, ok = m.keyword(i, o); !ok {
			return false
		}
	}
	for ; i < len(argv) && !isFindExprStart(argv[i]); i++ {
		if !m.operand(i) {
			return false
		}
	}
	for ; i < len(argv); i++ {
		a := argv[i]
		if findOperators[a] {
			continue
		}
		if why, bad := findForbidden[a]; bad {
			return m.deny(i, "find %s %s; it is never allowed", a, why)
		}
		if !strings.HasPrefix(a, "-") {
			return m.deny(i, "%q is not a find test or action; starting points go before the expression", a)
		}
		o := r.words[a]
		if o == nil {
			return m.unknownOption(i, a)
		}
		if i, ok = m.keyword(i, o); !ok {
			return false
		}
	}
	return true
}

// scanPS reads ps's arguments as procps does on its first (SysV) pass:
// "-ef" is SysV, "aux" is BSD, "--sort" is GNU, digits are process ids.
func (m *matcher) scanPS() bool {
	r, argv := m.r, m.argv
	var ok bool
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "":
			return m.deny(i, "empty argument")
		case isAlpha(a[0]):
			if i, ok = m.cluster(i, a, 0, &r.bsd, ""); !ok {
				return false
			}
		case a[0] >= '0' && a[0] <= '9':
			if !m.operand(i) {
				return false
			}
		case len(a) > 1 && a[0] == '-' && isAlpha(a[1]):
			if i, ok = m.cluster(i, a, 1, &r.short, "-"); !ok {
				return false
			}
		case len(a) > 2 && strings.HasPrefix(a, "--") && isAlpha(a[2]):
			if i, ok = m.long(i, a); !ok {
				return false
			}
		default:
			return m.deny(i, "ps cannot take %q here (process groups, sessions and \"--\" are not supported)", a)
		}
	}
	return true
}

// psFallback refuses what ps would do on its second pass. When procps ps
// rejects the SysV reading for any reason (an unknown user in -u, -x
// without a personality, conflicting thread flags...), it parses every
// argument again as BSD options with the dash ignored, so "-ef -x" prints
// every process's environment. A letter the rule denies as a BSD option is
// therefore refused wherever that second reading would see it.
func (m *matcher) psFallback() bool {
	r, argv := m.r, m.argv
	var deniedLetters [128]string
	any := false
	for lit, why := range r.deny {
		if len(lit) == 1 && lit[0] < 128 {
			deniedLetters[lit[0]] = why
			any = true
		}
	}
	if !any {
		return true
	}
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		switch {
		case a == "" || a == "-":
			continue
		case strings.HasPrefix(a, "--"):
			name, _, hasSep := cutAny(a[2:], "=:")
			if o := r.long[name]; o != nil && o.value != nil && !hasSep && !o.optionalValue {
				i++
			}
			continue
		case a[0] >= '0' && a[0] <= '9', a[0] == '+', a[0] == '-' && a[1] >= '0' && a[1] <= '9':
			continue
		}
		s := strings.TrimPrefix(a, "-")
		for j := 0; j < len(s); j++ {
			c := s[j]
			if c < 128 && deniedLetters[c] != "" {
				hint := ""
				if c == 'e' {
					hint = "; for every process write -A instead of -e"
				}
				return m.deny(i, "if ps rejects its SysV reading it re-reads %q as BSD options, where %c is refused (%s)%s", a, c, deniedLetters[c], hint)
			}
			if c >= '0' && c <= '9' {
				break
			}
			if c < 128 && psBSDValueLetters[c] {
				if j+1 == len(s) && i+1 < len(argv) && argv[i+1] != "" {
					i++
				}
				break
			}
		}
	}
	return true
}

func cutAny(s, seps string) (string, string, bool) {
	if k := strings.IndexAny(s, seps); k >= 0 {
		return s[:k], s[k+1:], true
	}
	return s, "", false
}

// missingOperand names the operand a line with too few operands lacks.
// Operands fill the slots in order, so the first slots' minimums are met
// first: the missing one is the first slot whose minimum, added to those
// before it, exceeds what was given ("vmstat 1" lacks the count, not the
// interval).
func (m *matcher) missingOperand(given int) bool {
	sum := 0
	for si, s := range m.r.slots {
		if m.filled&(1<<uint(si)) != 0 {
			continue
		}
		sum += s.min
		if sum > given {
			name := s.name
			if name == "" {
				name = s.value.typeName
			}
			return m.deny(len(m.argv), "missing operand: %s (%s)", name, s.value.describe())
		}
	}
	return m.deny(len(m.argv), "missing operand")
}

// finish assigns the positional operands to the rule's slots, in order,
// each slot taking as many as it can while leaving enough for the slots
// after it, and judges each operand.
func (m *matcher) finish() bool {
	r := m.r
	nsub := len(r.sub)
	if m.nops < nsub {
		if !r.sub[m.nops].optional {
			m.subFail, m.subMissing = true, true
			return m.deny(len(m.argv), "missing subcommand (one of: %s)", strings.Join(r.sub[m.nops].words, ", "))
		}
		nsub = m.nops
	}
	nops := m.nops - nsub
	need := 0
	for si, s := range r.slots {
		if m.filled&(1<<uint(si)) == 0 {
			need += s.min
		}
	}
	if nops < need {
		return m.missingOperand(nops)
	}
	at := 0
	for si, s := range r.slots {
		if m.filled&(1<<uint(si)) != 0 {
			continue
		}
		need -= s.min
		take := nops - at - need
		if take > s.max {
			take = s.max
		}
		if take < s.min {
			name := s.name
			if name == "" {
				name = s.value.typeName
			}
			return m.deny(len(m.argv), "missing operand: %s (%s)", name, s.value.describe())
		}
		for k := 0; k < take; k++ {
			idx := m.op(nsub + at + k)
			what := "operand"
			if s.name != "" {
				what = s.name
			}
			if !m.value(s.value, idx, "", m.argv[idx], what) {
				return false
			}
		}
		at += take
	}
	if at < nops {
		idx := m.op(nsub + at)
		if len(r.slots) == 0 {
			return m.deny(idx, "%q: this rule takes no operands", m.argv[idx])
		}
		return m.deny(idx, "too many operands (from %q on)", m.argv[idx])
	}
	return true
}
