package policy

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// Explanation is everything the merged policy lets the broker do as root,
// in plain words: what `nannyagent policy explain` prints.
type Explanation struct {
	SHA256    string               `json:"sha256"`
	Files     []File               `json:"files"`
	Disabled  []DisabledRule       `json:"disabled_rules"`
	Warnings  []string             `json:"warnings"`
	Commands  []CommandExplanation `json:"commands"`
	DenyPaths []DenyPathRule       `json:"deny_paths"`
	Traces    Traces               `json:"traces"`
	Proxmox   Proxmox              `json:"proxmox"`
	Patches   Patches              `json:"patches"`
	Reboots   Reboots              `json:"reboots"`
	Metrics   Metrics              `json:"metrics"`
	Limits    []LimitExplanation   `json:"limits"`
	Transport Transport            `json:"transport"`
	// Confinement says whether the broker on this host confines runs with
	// Landlock; the caller fills it (the policy package cannot ask the
	// kernel).
	Confinement string `json:"confinement,omitempty"`
	// Writers lists the rules that may write somewhere (their writes).
	Writers []string `json:"writers"`
	// Unconfined lists the rules whose runs get no Landlock domain because
	// the tool reads other processes' open files (inspects_processes).
	Unconfined []string `json:"unconfined"`
}

// CommandExplanation describes one active command rule.
type CommandExplanation struct {
	ID          string               `json:"id"`
	At          string               `json:"at"`
	Program     string               `json:"program"`
	Grammar     string               `json:"grammar"`
	Description string               `json:"description,omitempty"`
	RunAs       string               `json:"run_as"`
	Subcommand  string               `json:"subcommand,omitempty"`
	Permute     bool                 `json:"permute,omitempty"`
	LeadingNum  string               `json:"leading_count,omitempty"`
	Options     []OptionExplanation  `json:"options"`
	Denied      []DeniedOption       `json:"deny_options,omitempty"`
	Operands    []OperandExplanation `json:"operands"`
	// Added are options the broker puts after the program on every run.
	Added []string `json:"added_options,omitempty"`
	// Writes are the only places the program may write (Landlock
	// exceptions); empty means it writes nothing.
	Writes []string `json:"writes,omitempty"`
	// InspectsProcesses: the run gets no Landlock domain (see Unconfined).
	InspectsProcesses bool `json:"inspects_processes,omitempty"`
}

// OptionExplanation is one allowed option.
type OptionExplanation struct {
	Spellings     []string `json:"spellings"`
	Value         string   `json:"value,omitempty"`
	OptionalValue bool     `json:"optional_value,omitempty"`
	Fills         string   `json:"fills,omitempty"`
	Required      bool     `json:"required,omitempty"`
	Description   string   `json:"description,omitempty"`
}

// DeniedOption is an option a rule names as refused, and why.
type DeniedOption struct {
	Spellings []string `json:"spellings"`
	Reason    string   `json:"reason"`
}

// OperandExplanation is one positional operand slot.
type OperandExplanation struct {
	Name  string `json:"name,omitempty"`
	Count string `json:"count"`
	Value string `json:"value"`
}

// LimitExplanation is one limit and where its value comes from.
type LimitExplanation struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Default string `json:"default"`
	Cap     string `json:"hard_cap"`
	Meaning string `json:"meaning"`
	Source  string `json:"source"`
}

// Explain describes the merged policy.
func (p *Policy) Explain() Explanation {
	e := Explanation{
		SHA256: p.sha256, Files: p.Files(), Disabled: p.Disabled(), Warnings: p.Dangers(),
		DenyPaths: p.DenyPaths(), Traces: p.Traces(), Proxmox: p.Proxmox(), Patches: p.Patches(),
		Reboots: p.Reboots(), Metrics: p.Metrics(), Transport: p.Transport(),
	}
	if e.Disabled == nil {
		e.Disabled = []DisabledRule{}
	}
	if e.Warnings == nil {
		e.Warnings = []string{}
	}
	e.Writers = []string{}
	e.Unconfined = []string{}
	for _, r := range p.commands {
		if !r.disabled {
			e.Commands = append(e.Commands, r.explain())
			if len(r.writes) > 0 {
				e.Writers = append(e.Writers, fmt.Sprintf("%s (%s) may write beneath %s", r.id, r.program, strings.Join(r.writes, ", ")))
			}
			if r.inspectsProcesses {
				e.Unconfined = append(e.Unconfined, fmt.Sprintf("%s (%s)", r.id, r.program))
			}
		}
	}
	for _, f := range limitFields {
		src := p.sources["limits."+f.key]
		if src == "" {
			src = "default"
		}
		e.Limits = append(e.Limits, LimitExplanation{Key: f.key, Value: formatLimit(f.kind, f.get(&p.limits)),
			Default: formatLimit(f.kind, f.def), Cap: formatLimit(f.kind, f.cap), Meaning: f.help, Source: src})
	}
	return e
}

func (r *cmdRule) explain() CommandExplanation {
	c := CommandExplanation{ID: r.id, At: r.at.String(), Program: r.program, Grammar: r.grammar.String(),
		Description: r.description, RunAs: r.runAs, Permute: r.permute,
		Options: []OptionExplanation{}, Operands: []OperandExplanation{}, Added: r.addOptions, Writes: r.writes,
		InspectsProcesses: r.inspectsProcesses}
	if c.RunAs == "" {
		c.RunAs = "root"
	}
	var sub []string
	for _, sp := range r.sub {
		w := strings.Join(sp.words, "|")
		if sp.optional {
			w = "[" + w + "]"
		}
		sub = append(sub, w)
	}
	c.Subcommand = strings.Join(sub, " ")
	if r.leading != nil {
		c.LeadingNum = "-NUM as the first argument: " + r.leading.describe()
	}
	for _, o := range r.opts {
		oe := OptionExplanation{Spellings: o.names, OptionalValue: o.optionalValue, Fills: o.fills, Required: o.required, Description: o.description}
		if o.value != nil {
			oe.Value = o.value.describe()
		}
		c.Options = append(c.Options, oe)
	}
	for _, d := range r.denyList {
		c.Denied = append(c.Denied, DeniedOption{Spellings: d.names, Reason: d.reason})
	}
	for _, s := range r.slots {
		count := fmt.Sprintf("%d-%d", s.min, s.max)
		if s.min == s.max {
			count = fmt.Sprint(s.min)
		}
		c.Operands = append(c.Operands, OperandExplanation{Name: s.name, Count: count, Value: s.value.describe()})
	}
	return c
}

// WriteText writes the explanation for a reviewer.
func (e Explanation) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	ew.printf("What this policy lets nannyagent-broker do as root.\nAnything not listed here is denied.\n\n")
	ew.printf("Files, in merge order:\n")
	for _, f := range e.Files {
		ew.printf("  %-6s %s\n         sha256 %s\n", f.Origin, f.Path, f.SHA256)
	}
	ew.printf("Merged policy sha256: %s\n", e.SHA256)
	if len(e.Disabled) > 0 {
		ew.printf("\nDisabled rules:\n")
		for _, d := range e.Disabled {
			ew.printf("  %s (%s, defined at %s) disabled by %s\n", d.ID, d.Section, d.DefinedAt, d.DisabledBy)
		}
	}
	if len(e.Warnings) > 0 {
		ew.printf("\n")
		for _, wn := range e.Warnings {
			ew.printf("WARNING: %s\n", wn)
		}
	}
	ew.printf("\nWrites: a command run for a diagnosis creates or changes no file, except where its rule names the place (EXCEPTION below).\n")
	if e.Confinement != "" {
		ew.printf("  %s\n", e.Confinement)
	}
	if len(e.Writers) == 0 {
		ew.printf("  no rule names a place it writes\n")
	}
	for _, w := range e.Writers {
		ew.printf("  EXCEPTION: rule %s\n", w)
	}
	if len(e.Unconfined) > 0 {
		ew.printf("  Landlock also hides other processes' open files, maps and I/O counters from a confined run, so these rules (inspects_processes) run\n")
		ew.printf("  without a Landlock domain, with every other bound kept; a pipeline with one of them runs unconfined as a whole, so its other stages may only filter standard input:\n")
	}
	for _, u := range e.Unconfined {
		ew.printf("  UNCONFINED: rule %s\n", u)
	}
	e.writeCommands(ew)
	ew.printf("\nDenied paths (win over every allow; judged on normalised paths, ancestors included; every symlink hop re-judged):\n")
	if len(e.DenyPaths) == 0 {
		ew.printf("  none: every path under a rule's roots is readable\n")
	}
	for _, d := range e.DenyPaths {
		class := ""
		if d.Class != "" {
			class = "[class " + d.Class + "] "
		}
		ew.printf("  %s: %s%s\n    %s\n", d.ID, class, d.Reason, strings.Join(d.Paths, ", "))
	}
	e.writeTraces(ew)
	e.writeProxmox(ew)
	e.writePatches(ew)
	e.writeReboots(ew)
	e.writeTransport(ew)
	ew.printf("\nMetrics: %s (CPU, memory, disks, network counters and host facts)\n", map[bool]string{true: "enabled", false: "disabled"}[e.Metrics.Enabled])
	ew.printf("\nLimits:\n")
	for _, l := range e.Limits {
		ew.printf("  %-21s %-8s %s (default %s, hard cap %s; %s)\n", l.Key, l.Value, l.Meaning, l.Default, l.Cap, l.Source)
	}
	return ew.err
}

func yesNo(b bool) string {
	if b {
		return "allowed"
	}
	return "not allowed"
}

func (e Explanation) writeCommands(ew *errWriter) {
	ew.printf("\nCommands (%d rules); the broker never starts a shell and runs each as its own argv:\n", len(e.Commands))
	cmds := append([]CommandExplanation(nil), e.Commands...)
	sort.SliceStable(cmds, func(i, j int) bool { return cmds[i].Program < cmds[j].Program })
	for _, c := range cmds {
		head := c.Program
		if c.Subcommand != "" {
			head += " " + c.Subcommand
		}
		ew.printf("\n  %s  [rule %s, %s, as %s]\n", head, c.ID, c.At, c.RunAs)
		if c.Description != "" {
			ew.printf("    %s\n", c.Description)
		}
		if c.Grammar != "getopt" {
			ew.printf("    arguments read as %s reads them\n", c.Grammar)
		} else if c.Permute {
			ew.printf("    options may come after operands\n")
		}
		if c.LeadingNum != "" {
			ew.printf("    %s\n", c.LeadingNum)
		}
		if len(c.Added) > 0 {
			ew.printf("    the broker adds: %s (right after the program, on every run)\n", strings.Join(c.Added, " "))
		}
		if len(c.Writes) > 0 {
			ew.printf("    MAY WRITE beneath: %s (the only Landlock exceptions of this rule)\n", strings.Join(c.Writes, ", "))
		}
		if c.InspectsProcesses {
			ew.printf("    RUNS WITHOUT LANDLOCK: it reads other processes' open files, which Landlock hides\n")
		}
		if len(c.Options) == 0 {
			ew.printf("    no options\n")
		}
		for _, o := range c.Options {
			line := strings.Join(o.Spellings, ", ")
			if o.Value != "" {
				if o.OptionalValue {
					line += " [=VALUE]: VALUE is " + o.Value
				} else {
					line += " VALUE: " + o.Value
				}
			}
			if o.Fills != "" {
				line += " (supplies " + o.Fills + ")"
			}
			if o.Required {
				line += " (REQUIRED)"
			}
			if o.Description != "" {
				line += " — " + o.Description
			}
			ew.printf("    option %s\n", line)
		}
		for _, d := range c.Denied {
			ew.printf("    refused %s: %s\n", strings.Join(d.Spellings, ", "), d.Reason)
		}
		if len(c.Operands) == 0 {
			ew.printf("    no operands\n")
		}
		for _, o := range c.Operands {
			name := o.Name
			if name == "" {
				name = "operand"
			}
			ew.printf("    %s (%s): %s\n", name, o.Count, o.Value)
		}
	}
}

func (e Explanation) writeTraces(ew *errWriter) {
	t := e.Traces
	ew.printf("\nTraces (bpftrace at %s; programs written by the broker, never --unsafe or -c):\n", t.Bpftrace)
	if t.AllowRawPrograms {
		ew.printf("  raw programs: ALLOWED (see WARNING above)\n")
	} else {
		ew.printf("  raw programs: refused\n")
	}
	ew.printf("  probe kinds: %s\n", strings.Join(t.Kinds, ", "))
	if len(t.Rules) == 0 {
		ew.printf("  no trace targets allowed\n")
	}
	for _, r := range t.Rules {
		active := ""
		if !contains(t.Kinds, r.Kind) {
			active = " (kind not allowed: inactive)"
		}
		ew.printf("  %s %s [rule %s]%s\n", r.Kind, r.Target, r.ID, active)
	}
}

func (e Explanation) writeProxmox(ew *errWriter) {
	x := e.Proxmox
	ew.printf("\nProxmox reads (%s get, guest configs from %s):\n", x.Pvesh, x.PmxcfsRoot)
	if len(x.Paths) == 0 {
		ew.printf("  none\n")
	}
	for _, r := range x.Paths {
		ew.printf("  GET %s [rule %s]\n", r.Path, r.ID)
	}
}

func (e Explanation) writePatches(ew *errWriter) {
	x := e.Patches
	ew.printf("\nPatch scripts:\n")
	if !x.Enabled {
		ew.printf("  disabled\n")
		return
	}
	ew.printf("  enabled, mode %s, targets %s\n", x.Mode, strings.Join(x.Targets, ", "))
	if contains(x.Targets, PatchTargetLXC) {
		vmids := "none (no container run is allowed)"
		if len(x.VMIDs) > 0 {
			vmids = strings.Join(x.VMIDs, ", ")
		}
		ew.printf("  containers (patches.vmids): %s; the checked bytes are pushed with %s push into /run, run there with %s exec and removed\n", vmids, x.Pct, x.Pct)
	}
	ew.printf("  run modes allowed: %s\n", strings.Join(x.Modes, ", "))
	ew.printf("  runs as root from a sealed copy of the checked bytes, with an interpreter from: %s\n", strings.Join(x.Interpreters, ", "))
	ew.printf("  PATH=%s LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive, stdin /dev/null, one run at a time\n", x.Path)
	ew.printf("  stopped after %s (limits.patch_max_runtime); script at most %s; output kept up to %s each for stdout and stderr\n",
		e.limitValue("patch_max_runtime"), e.limitValue("patch_script_bytes"), e.limitValue("patch_output_bytes"))
	ew.printf("  its process tree capped at %s of memory and %s tasks (limits.patch_child_memory, patch_child_tasks); no Landlock: it writes wherever a package manager does\n",
		e.limitValue("patch_child_memory"), e.limitValue("patch_child_tasks"))
	if x.Mode == PatchTrustBackend {
		ew.printf("  ANY script the backend sends runs as root: the backend, and anyone who takes over the worker, can run anything (see WARNING above)\n")
		return
	}
	if len(x.Pinned) == 0 {
		ew.printf("  no script pinned: nothing can run\n")
	}
	for _, s := range x.Pinned {
		name := s.Name
		if name == "" {
			name = "(no name)"
		}
		ew.printf("  %s sha256 %s [rule %s]\n", name, s.SHA256, s.ID)
	}
}

// limitValue is the formatted value of one limit.
func (e Explanation) limitValue(key string) string {
	for _, l := range e.Limits {
		if l.Key == key {
			return l.Value
		}
	}
	return "?"
}
