package policy

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// grammarKind names how a program reads its arguments.
type grammarKind uint8

const (
	// gGetopt is GNU getopt_long: short options clustered (-Tc) and with
	// attached values (-n5), long options matched exactly (--lines=5 or
	// --lines 5), "--" ending options, and optional permutation.
	gGetopt grammarKind = iota
	// gWords is the iproute2 style: whole-word options after one or two
	// dashes (-brief, -4), before the object; bare keywords (dev, up) after.
	gWords
	// gPS is procps ps: SysV (-ef), BSD (aux) and GNU (--sort) options,
	// including ps's re-reading of failed SysV options as BSD ones.
	gPS
	// gFind is GNU find: leading options, starting points, then an
	// expression of tests, operators and (safe) actions.
	gFind
	// gDig is BIND dig: @server, -x style options, +query options.
	gDig
)

var grammarNames = map[string]grammarKind{
	"getopt": gGetopt, "words": gWords, "ps": gPS, "find": gFind, "dig": gDig,
}

func (g grammarKind) String() string {
	for k, v := range grammarNames {
		if v == g {
			return k
		}
	}
	return "unknown"
}

// grammarProgram pins the special grammars to the tool they describe.
var grammarProgram = map[grammarKind]string{gPS: "ps", gFind: "find", gDig: "dig"}

// findForbidden are find primaries that run programs, delete, or write
// files. The find grammar refuses them whatever a policy says.
var findForbidden = map[string]string{
	"-exec":    "runs a program",
	"-execdir": "runs a program",
	"-ok":      "runs a program",
	"-okdir":   "runs a program",
	"-delete":  "deletes files",
	"-fprint":  "writes a file",
	"-fprint0": "writes a file",
	"-fprintf": "writes a file",
	"-fls":     "writes a file",
}

var findOperators = map[string]bool{
	"(": true, ")": true, "!": true, ",": true,
	"-not": true, "-a": true, "-and": true, "-o": true, "-or": true,
}

// psBSDValueLetters are the BSD letters procps ps reads a value after (the
// rest of the argument, or the next one).
var psBSDValueLetters = [128]bool{'O': true, 'U': true, 'k': true, 'o': true, 'p': true, 'q': true, 't': true}

// optSpec is one allowed option with all its spellings.
type optSpec struct {
	names         []string
	value         *valueSpec
	optionalValue bool
	fills         string
	fillSlot      int
	// required: the command line must use this option (any spelling);
	// reqBit is its bit in the matcher's record of required options seen.
	required    bool
	reqBit      int
	description string
}

type denyOpt struct {
	names  []string
	reason string
}

// subPos is one subcommand position: its spellings, and whether it may be
// left out (only trailing positions may).
type subPos struct {
	words    []string
	optional bool
}

// slot is one positional operand position and how many arguments it takes.
type slot struct {
	name     string
	min, max int
	value    *valueSpec
}

// cmdRule is one compiled command rule.
type cmdRule struct {
	id          string
	at          pos
	description string
	program     string
	base        string
	grammar     grammarKind
	permute     bool
	sub         []subPos
	opts        []*optSpec
	short       [128]*optSpec
	bsd         [128]*optSpec
	long        map[string]*optSpec
	words       map[string]*optSpec
	atServer    *optSpec
	deny        map[string]string
	denyList    []*denyOpt
	slots       []*slot
	leading     *valueSpec
	runAs       string
	// addOptions are argv words the broker inserts right after the
	// program, whatever the request says (blkid -c /dev/null: no cache).
	addOptions []string
	// writes are the paths the program may write beneath (the Landlock
	// ruleset's exceptions); nothing else is writable for a confined run.
	writes []string
	// inspectsProcesses marks tools that read other processes' open files,
	// maps or I/O counters (lsof, ss -p). Landlock's ptrace rule hides
	// those from any confined process, so such a run goes unconfined.
	inspectsProcesses bool
	disabled          bool
	// required lists the options the command line must use, in the order
	// the rule lists them (bit i of the matcher's record is required[i]).
	required []*optSpec
}

var ruleKeys = []string{"id", "program", "description", "grammar", "permute", "subcommand",
	"options", "deny_options", "operands", "leading_count", "run_as", "add_options", "writes",
	"inspects_processes"}

// optionKind is where a spelling goes in a rule's tables.
type optionKind uint8

const (
	okShort optionKind = iota + 1
	okLong
	okWord
	okBSD
	okAt
)

// classify reads a literal option spelling the way the grammar's tool would.
func classify(g grammarKind, lit string) (optionKind, string, error) {
	isWord := func(s string) bool {
		if s == "" || !isAlnum(s[0]) {
			return false
		}
		for i := 0; i < len(s); i++ {
			if !isAlnum(s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.' {
				return false
			}
		}
		return true
	}
	switch g {
	case gGetopt:
		switch {
		case len(lit) == 2 && lit[0] == '-' && isAlnum(lit[1]):
			return okShort, lit, nil
		case strings.HasPrefix(lit, "--") && isWord(lit[2:]):
			return okLong, lit[2:], nil
		case isWord(lit):
			return okWord, lit, nil
		case strings.HasPrefix(lit, "-") && isWord(lit[1:]):
			return 0, "", fmt.Errorf("%q: getopt options are -x or --long; for single-dash long options use grammar: words", lit)
		}
	case gWords:
		switch {
		case strings.HasPrefix(lit, "--") && isWord(lit[2:]), strings.HasPrefix(lit, "-") && isWord(lit[1:]):
			return okWord, lit, nil
		case isWord(lit):
			return okWord, lit, nil
		}
	case gPS:
		switch {
		case len(lit) == 2 && lit[0] == '-' && isAlpha(lit[1]):
			return okShort, lit, nil
		case strings.HasPrefix(lit, "--") && len(lit) > 2 && isAlpha(lit[2]) && isWord(lit[2:]):
			return okLong, lit[2:], nil
		case len(lit) == 1 && isAlpha(lit[0]):
			return okBSD, lit, nil
		case isWord(lit):
			return 0, "", fmt.Errorf("%q: BSD options are single letters; list each letter on its own", lit)
		}
	case gFind:
		if strings.HasPrefix(lit, "-") && isWord(lit[1:]) {
			return okWord, lit, nil
		}
	case gDig:
		switch {
		case lit == "@":
			return okAt, lit, nil
		case len(lit) == 2 && lit[0] == '-' && isAlnum(lit[1]):
			return okShort, lit, nil
		case strings.HasPrefix(lit, "+") && isWord(lit[1:]):
			return okWord, lit, nil
		}
	}
	return 0, "", fmt.Errorf("%q is not an option spelling grammar %s understands", lit, g)
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isAlnum(c byte) bool { return isAlpha(c) || c >= '0' && c <= '9' }

// ruleContext is what rule decoding needs from the loader.
type ruleContext struct {
	workerAccount string
}

func (d *decoder) commandRule(n *yaml.Node, idx int, ctx ruleContext) *cmdRule {
	what := fmt.Sprintf("commands[%d]", idx)
	m, ok := d.mapping(n, what, ruleKeys...)
	if m == nil {
		return nil
	}
	r := &cmdRule{at: d.at(d.resolve(n)), long: map[string]*optSpec{}, words: map[string]*optSpec{}, deny: map[string]string{}}
	if idn, has := m["id"]; has {
		if id, ok2 := d.str(idn, what+".id"); ok2 {
			if err := checkID(id); err != nil {
				d.errorf(idn, "%s.id: %v", what, err)
				ok = false
			}
			r.id = id
			what = fmt.Sprintf("commands[%d] (%s)", idx, id)
		}
	} else {
		d.errorf(n, "%s: missing id", what)
		ok = false
	}
	if pn, has := m["program"]; has {
		if prog, ok2 := d.str(pn, what+".program"); ok2 {
			if err := checkProgramPath(prog); err != nil {
				d.errorf(pn, "%s.program: %v", what, err)
				ok = false
			}
			r.program, r.base = prog, path.Base(prog)
		} else {
			ok = false
		}
	} else {
		d.errorf(n, "%s: missing program (its absolute path)", what)
		ok = false
	}
	if dn, has := m["description"]; has {
		r.description, _ = d.str(dn, what+".description")
	}
	if gn, has := m["grammar"]; has {
		if g, ok2 := d.str(gn, what+".grammar"); ok2 {
			kind, known := grammarNames[g]
			if !known {
				d.errorf(gn, "%s.grammar: unknown grammar %q (one of %s)", what, g, strings.Join(sortedKeys(grammarNames), ", "))
				ok = false
			}
			r.grammar = kind
			if want, special := grammarProgram[kind]; special && r.base != "" && r.base != want {
				d.errorf(gn, "%s: grammar %s describes %s, not program %s", what, g, want, r.program)
				ok = false
			}
		}
	}
	if pn, has := m["permute"]; has {
		b, ok2 := d.boolean(pn, what+".permute")
		if r.grammar != gGetopt {
			d.errorf(pn, "%s.permute: only grammar getopt has this choice", what)
			ok2 = false
		}
		r.permute, ok = b, ok && ok2
	}
	if rn, has := m["run_as"]; has {
		if acct, ok2 := d.str(rn, what+".run_as"); ok2 {
			if err := checkRunAs(acct, ctx.workerAccount); err != nil {
				d.errorf(rn, "%s.run_as: %v", what, err)
				ok = false
			}
			r.runAs = acct
		}
	}
	if an, has := m["add_options"]; has {
		ok = d.addOptions(r, an, what) && ok
	}
	if wn, has := m["writes"]; has {
		ok = d.writes(r, wn, what) && ok
	}
	if in, has := m["inspects_processes"]; has {
		b, ok2 := d.boolean(in, what+".inspects_processes")
		r.inspectsProcesses = b
		ok = ok2 && ok
	}
	if sn, has := m["subcommand"]; has {
		ok = d.subcommand(r, sn, what) && ok
	}
	if on, has := m["operands"]; has {
		ok = d.slots(r, on, what) && ok
	}
	if on, has := m["options"]; has {
		ok = d.options(r, on, what) && ok
	}
	if dn, has := m["deny_options"]; has {
		ok = d.denyOptions(r, dn, what) && ok
	}
	if ln, has := m["leading_count"]; has {
		v, _ := d.decodeValue(ln, what+".leading_count")
		switch {
		case v == nil:
			ok = false
		case r.grammar != gGetopt || v.kind != vNumber:
			d.errorf(ln, "%s.leading_count: only grammar getopt takes it, with type number (head -5)", what)
			ok = false
		}
		r.leading = v
	}
	if !ok {
		return nil
	}
	return r
}

// addOptions reads the words the broker puts after the program on every
// run of the rule: the form of a tool that keeps no cache, takes no lock or
// writes nothing (blkid -c /dev/null, lvs --readonly). They are added, not
// merely required, so a request cannot leave them out.
func (d *decoder) addOptions(r *cmdRule, n *yaml.Node, what string) bool {
	words, ok := d.strs(n, what+".add_options")
	if !ok {
		return false
	}
	if len(words) == 0 || len(words) > 8 {
		d.errorf(n, "%s.add_options: give 1 to 8 words", what)
		return false
	}
	for _, w := range words {
		if w == "" || !isPlainASCII(w) || hasDotDot(w) {
			d.errorf(n, "%s.add_options: %q is not a plain word", what, w)
			ok = false
		}
	}
	if r.grammar != gGetopt && r.grammar != gWords {
		d.errorf(n, "%s.add_options: only grammars getopt and words take added options", what)
		ok = false
	}
	r.addOptions = words
	return ok
}

// writes reads the paths a rule's program genuinely needs to write
// beneath. Where the kernel has Landlock, every other place is closed to
// the run; explain lists them.
func (d *decoder) writes(r *cmdRule, n *yaml.Node, what string) bool {
	paths, ok := d.strs(n, what+".writes")
	if !ok {
		return false
	}
	for _, p := range paths {
		if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" || !isPlainASCII(p) || strings.ContainsAny(p, `*?[]{}\`) {
			d.errorf(n, "%s.writes: %q must be a clean absolute path other than / (no globs)", what, p)
			ok = false
		}
	}
	r.writes = paths
	return ok
}

func checkID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%q: an id is 1 to 64 characters", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_' || c == '.')) {
			return fmt.Errorf("%q: an id is lower-case letters, digits and - _ . (starting with a letter or digit)", id)
		}
	}
	return nil
}

func checkProgramPath(p string) error {
	if !isPlainASCII(p) {
		return fmt.Errorf("%q must be plain printable ASCII", p)
	}
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return fmt.Errorf("%q must be a clean absolute path to the program", p)
	}
	if strings.ContainsAny(p, `*?[]{}\$`) {
		return fmt.Errorf("%q: program paths are exact; no globs or escapes", p)
	}
	return nil
}

// checkRunAs refuses accounts that would defeat the point of run_as: root,
// and the worker's own account (the worker could then signal or ptrace the
// command, or read what it writes).
func checkRunAs(acct, worker string) error {
	if err := checkAccount(acct, "user"); err != "" {
		return fmt.Errorf("%s", err)
	}
	if acct == "root" {
		return fmt.Errorf("%q: leave run_as out to run as root; naming root here is refused so nobody reads it as a restriction", acct)
	}
	if isDigits(acct) {
		return fmt.Errorf("%q: run_as names an account; numeric ids are refused (a number could be root's or the worker's uid)", acct)
	}
	if worker != "" && acct == worker {
		return fmt.Errorf("%q is the worker's account; a command must never run as the worker", acct)
	}
	return nil
}

func (d *decoder) subcommand(r *cmdRule, n *yaml.Node, what string) bool {
	if r.grammar != gGetopt && r.grammar != gWords {
		d.errorf(n, "%s.subcommand: grammar %s has no subcommands", what, r.grammar)
		return false
	}
	items, ok := d.seq(n, what+".subcommand")
	if !ok {
		return false
	}
	if len(items) == 0 || len(items) > 4 {
		d.errorf(n, "%s.subcommand: give 1 to 4 positions, each a word or a list of its spellings", what)
		return false
	}
	for i, it := range items {
		w := fmt.Sprintf("%s.subcommand[%d]", what, i)
		var sp subPos
		var ok2 bool
		if rit := d.resolve(it); rit != nil && rit.Kind == yaml.MappingNode {
			m, _ := d.mapping(rit, w, "words", "optional")
			if m == nil {
				ok = false
				continue
			}
			if wn, has := m["words"]; has {
				sp.words, ok2 = d.strs(wn, w+".words")
				ok = ok && ok2
			} else {
				d.errorf(rit, "%s: missing words", w)
				ok = false
			}
			if on, has := m["optional"]; has {
				sp.optional, ok2 = d.boolean(on, w+".optional")
				ok = ok && ok2
			}
		} else {
			sp.words, ok2 = d.strs(it, w)
			if !ok2 {
				ok = false
				continue
			}
		}
		if i > 0 && r.sub[i-1].optional && !sp.optional {
			d.errorf(it, "%s: only trailing subcommand positions may be optional", w)
			ok = false
		}
		if i == 0 && sp.optional {
			d.errorf(it, "%s: the first subcommand position cannot be optional (write a rule without it)", w)
			ok = false
		}
		for _, word := range sp.words {
			if word == "" || word[0] == '-' || !isPlainASCII(word) {
				d.errorf(it, "%s: %q is not a subcommand word", w, word)
				ok = false
			}
		}
		r.sub = append(r.sub, sp)
	}
	return ok
}

func (d *decoder) slots(r *cmdRule, n *yaml.Node, what string) bool {
	items, ok := d.seq(n, what+".operands")
	if !ok {
		return false
	}
	names := map[string]bool{}
	for i, it := range items {
		w := fmt.Sprintf("%s.operands[%d]", what, i)
		v, m := d.decodeValue(it, w, "name", "count")
		if v == nil {
			ok = false
			continue
		}
		s := &slot{value: v, min: 1, max: 1}
		if nn, has := m["name"]; has {
			s.name, _ = d.str(nn, w+".name")
			if names[s.name] {
				d.errorf(nn, "%s.name: %q repeats", w, s.name)
				ok = false
			}
			names[s.name] = true
		}
		if cn, has := m["count"]; has {
			lo, hi, err := parseCount(d, cn, w)
			if err != nil {
				d.errorf(cn, "%s.count: %v", w, err)
				ok = false
			}
			s.min, s.max = lo, hi
		}
		r.slots = append(r.slots, s)
	}
	if r.grammar == gPS {
		for _, s := range r.slots {
			if s.value.kind != vPID {
				d.errorf(n, "%s.operands: ps takes only process ids as operands", what)
				ok = false
			}
		}
	}
	return ok
}

// parseCount reads "count: 2" or "count: 0-8".
func parseCount(d *decoder, n *yaml.Node, what string) (int, int, error) {
	s, ok := d.str(n, what+".count")
	if !ok {
		return 0, 0, fmt.Errorf("want N or MIN-MAX")
	}
	lo, hi := s, s
	if a, b, found := strings.Cut(s, "-"); found {
		lo, hi = a, b
	}
	l, err1 := strconv.Atoi(strings.TrimSpace(lo))
	h, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || l < 0 || h < 1 || l > h || h > 1024 {
		return 0, 0, fmt.Errorf("%q: want N or MIN-MAX with 0 <= MIN <= MAX, 1 <= MAX <= 1024", s)
	}
	return l, h, nil
}

var optionKeys = []string{"opt", "value", "optional_value", "fills", "required", "description"}

// maxRequired bounds the required options of one rule (one bit each).
const maxRequired = 16

func (d *decoder) options(r *cmdRule, n *yaml.Node, what string) bool {
	items, ok := d.seq(n, what+".options")
	if !ok {
		return false
	}
	for i, it := range items {
		w := fmt.Sprintf("%s.options[%d]", what, i)
		m, ok2 := d.mapping(it, w, optionKeys...)
		if m == nil {
			ok = false
			continue
		}
		ok = ok && ok2
		o := &optSpec{fillSlot: -1}
		if on, has := m["opt"]; has {
			o.names, ok2 = d.strs(on, w+".opt")
			ok = ok && ok2
		} else {
			d.errorf(it, "%s: missing opt (the option as written, e.g. -n or --lines)", w)
			ok = false
			continue
		}
		if vn, has := m["value"]; has {
			o.value, _ = d.decodeValue(vn, w+".value")
			if o.value == nil {
				ok = false
			}
		}
		if on, has := m["optional_value"]; has {
			b, ok3 := d.boolean(on, w+".optional_value")
			o.optionalValue, ok = b, ok && ok3
			if b && o.value == nil {
				d.errorf(on, "%s.optional_value: the option has no value", w)
				ok = false
			}
		}
		if dn, has := m["description"]; has {
			o.description, _ = d.str(dn, w+".description")
		}
		if fn, has := m["fills"]; has {
			o.fills, _ = d.str(fn, w+".fills")
			o.fillSlot = -1
			for si, s := range r.slots {
				if s.name == o.fills && s.name != "" {
					o.fillSlot = si
				}
			}
			if o.fillSlot < 0 {
				d.errorf(fn, "%s.fills: no operand named %q", w, o.fills)
				ok = false
			} else if o.fillSlot >= 64 {
				d.errorf(fn, "%s.fills: only the first 64 operands can be filled", w)
				ok = false
			}
		}
		if rn, has := m["required"]; has {
			b, ok3 := d.boolean(rn, w+".required")
			ok = ok && ok3
			if b && !d.requireOption(r, o, rn, w) {
				ok = false
			}
		}
		for _, lit := range o.names {
			if !d.placeOption(r, o, lit, it, w) {
				ok = false
			}
		}
		r.opts = append(r.opts, o)
	}
	return ok
}

// requireOption marks o as an option every allowed command line must use
// (top -b, ping -c: what keeps a command bounded). A required option is
// written by the model, never assumed: the broker runs the argv as given.
func (d *decoder) requireOption(r *cmdRule, o *optSpec, n *yaml.Node, what string) bool {
	if len(r.required) >= maxRequired {
		d.errorf(n, "%s.required: at most %d options of one rule can be required", what, maxRequired)
		return false
	}
	o.required, o.reqBit = true, len(r.required)
	r.required = append(r.required, o)
	return true
}

func (d *decoder) placeOption(r *cmdRule, o *optSpec, lit string, n *yaml.Node, what string) bool {
	kind, key, err := classify(r.grammar, lit)
	if err != nil {
		d.errorf(n, "%s.opt: %v", what, err)
		return false
	}
	if r.grammar == gFind {
		if why, bad := findForbidden[lit]; bad {
			d.errorf(n, "%s.opt: find %s %s; the find grammar never allows it", what, lit, why)
			return false
		}
		if findOperators[lit] {
			d.errorf(n, "%s.opt: %s is a find operator, always allowed; do not list it", what, lit)
			return false
		}
	}
	if o.optionalValue && (kind == okWord || kind == okAt || kind == okBSD) && r.grammar != gDig {
		d.errorf(n, "%s.optional_value: %s cannot have an optional value in grammar %s", what, lit, r.grammar)
		return false
	}
	if kind == okAt && o.value == nil {
		d.errorf(n, "%s: @ needs a value (the server)", what)
		return false
	}
	var clash bool
	switch kind {
	case okShort:
		clash = r.short[key[1]] != nil
		r.short[key[1]] = o
	case okBSD:
		clash = r.bsd[key[0]] != nil
		r.bsd[key[0]] = o
	case okLong:
		clash = r.long[key] != nil
		r.long[key] = o
	case okWord:
		clash = r.words[key] != nil
		r.words[key] = o
	case okAt:
		clash = r.atServer != nil
		r.atServer = o
	}
	if clash {
		d.errorf(n, "%s.opt: %s is listed twice in this rule", what, lit)
		return false
	}
	return true
}

func (d *decoder) denyOptions(r *cmdRule, n *yaml.Node, what string) bool {
	items, ok := d.seq(n, what+".deny_options")
	if !ok {
		return false
	}
	for i, it := range items {
		w := fmt.Sprintf("%s.deny_options[%d]", what, i)
		m, ok2 := d.mapping(it, w, "opt", "reason")
		if m == nil {
			ok = false
			continue
		}
		ok = ok && ok2
		do := &denyOpt{}
		if on, has := m["opt"]; has {
			do.names, ok2 = d.strs(on, w+".opt")
			ok = ok && ok2
		} else {
			d.errorf(it, "%s: missing opt", w)
			ok = false
		}
		if rn, has := m["reason"]; has {
			do.reason, _ = d.str(rn, w+".reason")
		}
		if do.reason == "" {
			d.errorf(it, "%s: missing reason (say why, for the reviewer and the model)", w)
			ok = false
		}
		for _, lit := range do.names {
			kind, key, err := classify(r.grammar, lit)
			if err != nil && !(r.grammar == gFind && findForbidden[lit] != "") {
				d.errorf(it, "%s.opt: %v", w, err)
				ok = false
				continue
			}
			if r.allows(kind, key) {
				d.errorf(it, "%s.opt: %s is both allowed and denied in this rule", w, lit)
				ok = false
				continue
			}
			r.deny[lit] = do.reason
		}
		r.denyList = append(r.denyList, do)
	}
	return ok
}

// abbreviates reports whether name is a proper prefix of a long option the
// rule lists (allowed or denied): GNU getopt would expand it, we refuse it.
func (r *cmdRule) abbreviates(name string) bool {
	for k := range r.long {
		if len(k) > len(name) && strings.HasPrefix(k, name) {
			return true
		}
	}
	for k := range r.deny {
		if strings.HasPrefix(k, "--") && len(k)-2 > len(name) && strings.HasPrefix(k[2:], name) {
			return true
		}
	}
	return false
}

func (r *cmdRule) allows(kind optionKind, key string) bool {
	switch kind {
	case okShort:
		return r.short[key[1]] != nil
	case okBSD:
		return r.bsd[key[0]] != nil
	case okLong:
		return r.long[key] != nil
	case okWord:
		return r.words[key] != nil
	case okAt:
		return r.atServer != nil
	}
	return false
}
