package policy

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxFileBytes bounds one policy file.
const maxFileBytes = 4 << 20

var topKeys = []string{"version", "disable", "commands", "traces", "proxmox", "patches",
	"reboots", "metrics", "limits", "deny_paths", "transport"}

// setting is one scalar choice a file makes; later files override earlier
// ones key by key.
type setting struct {
	key   string
	at    pos
	apply func(*Policy)
}

type traceItem struct {
	TraceRule
	at       pos
	disabled bool
}

type proxItem struct {
	ProxmoxRule
	at       pos
	disabled bool
}

type pinItem struct {
	PinnedScript
	at       pos
	disabled bool
}

type disableRef struct {
	id string
	at pos
}

// fileDoc is one decoded file, before merging.
type fileDoc struct {
	file     File
	settings []setting
	commands []*cmdRule
	traces   []*traceItem
	proxmox  []*proxItem
	pinned   []*pinItem
	deny     []*denyRule
	disable  []disableRef
	guests   []*guestItem
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// parseFile decodes one policy file. Problems go to errs.
func parseFile(name string, data []byte, origin Origin, ctx ruleContext, errs *ErrorList) *fileDoc {
	d := &decoder{file: name, errs: errs}
	doc := &fileDoc{file: File{Path: name, SHA256: sha256hex(data), Origin: origin}}
	if len(data) > maxFileBytes {
		d.errorf(nil, "file is larger than %d bytes", maxFileBytes)
		return doc
	}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(nil, "empty policy file (it needs at least version: 1)")
			return doc
		}
		e := &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatchIndex(e.Msg); m != nil {
			e.Line, _ = strconv.Atoi(e.Msg[m[2]:m[3]])
			e.Msg = strings.TrimPrefix(e.Msg[m[1]:], ": ")
		}
		errs.add(e)
		return doc
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		d.errorf(&extra, "a policy file holds one YAML document; found another")
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) != 1 {
		d.errorf(&root, "empty policy file (it needs at least version: 1)")
		return doc
	}
	top, _ := d.mapping(root.Content[0], "policy", topKeys...)
	if top == nil {
		return doc
	}
	vn, has := top["version"]
	if !has {
		d.errorf(root.Content[0], "missing version (this loader reads version: 1)")
	} else if v, ok := d.integer(vn, "version"); ok && v != 1 {
		d.errorf(vn, "version %d is not supported (this loader reads version: 1)", v)
	}
	if n, has := top["disable"]; has {
		d.disables(doc, n, origin)
	}
	if n, has := top["commands"]; has {
		if items, ok := d.seq(n, "commands"); ok {
			for i, it := range items {
				if r := d.commandRule(it, i, ctx); r != nil {
					doc.commands = append(doc.commands, r)
				}
			}
		}
	}
	if n, has := top["traces"]; has {
		d.tracesSection(doc, n)
	}
	if n, has := top["proxmox"]; has {
		d.proxmoxSection(doc, n)
	}
	if n, has := top["patches"]; has {
		d.patchesSection(doc, n)
	}
	if n, has := top["reboots"]; has {
		d.rebootsSection(doc, n)
	}
	if n, has := top["metrics"]; has {
		d.metricsSection(doc, n)
	}
	if n, has := top["limits"]; has {
		d.limitsSection(doc, n)
	}
	if n, has := top["deny_paths"]; has {
		d.denyPaths(doc, n)
	}
	if n, has := top["transport"]; has {
		d.transportSection(doc, n)
	}
	return doc
}

func (d *decoder) disables(doc *fileDoc, n *yaml.Node, origin Origin) {
	if origin == OriginVendor {
		d.errorf(n, "disable: only local files may disable rules; the vendor file should not list rules it disables")
		return
	}
	items, ok := d.seq(n, "disable")
	if !ok {
		return
	}
	for i, it := range items {
		if id, ok := d.str(it, fmt.Sprintf("disable[%d]", i)); ok {
			doc.disable = append(doc.disable, disableRef{id: id, at: d.at(it)})
		}
	}
}

// ruleID decodes the id every rule needs.
func (d *decoder) ruleID(m map[string]*yaml.Node, n *yaml.Node, what string) (string, bool) {
	idn, has := m["id"]
	if !has {
		d.errorf(n, "%s: missing id", what)
		return "", false
	}
	id, ok := d.str(idn, what+".id")
	if !ok {
		return "", false
	}
	if err := checkID(id); err != nil {
		d.errorf(idn, "%s.id: %v", what, err)
		return "", false
	}
	return id, true
}

func (d *decoder) program(doc *fileDoc, m map[string]*yaml.Node, key, what string, apply func(*Policy, string)) {
	n, has := m[key]
	if !has {
		return
	}
	s, ok := d.str(n, what)
	if !ok {
		return
	}
	if err := checkProgramPath(s); err != nil {
		d.errorf(n, "%s: %v", what, err)
		return
	}
	doc.settings = append(doc.settings, setting{key: what, at: d.at(n), apply: func(p *Policy) { apply(p, s) }})
}

func (d *decoder) flag(doc *fileDoc, m map[string]*yaml.Node, key, what string, apply func(*Policy, bool)) {
	n, has := m[key]
	if !has {
		return
	}
	b, ok := d.boolean(n, what)
	if !ok {
		return
	}
	doc.settings = append(doc.settings, setting{key: what, at: d.at(n), apply: func(p *Policy) { apply(p, b) }})
}

func (d *decoder) tracesSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "traces", "bpftrace", "allow_raw_programs", "kinds", "rules")
	if m == nil {
		return
	}
	d.program(doc, m, "bpftrace", "traces.bpftrace", func(p *Policy, s string) { p.traces.Bpftrace = s })
	d.flag(doc, m, "allow_raw_programs", "traces.allow_raw_programs", func(p *Policy, b bool) { p.traces.AllowRawPrograms = b })
	if kn, has := m["kinds"]; has {
		kinds, ok := d.strs(kn, "traces.kinds")
		for _, k := range kinds {
			if !contains(traceKinds, k) {
				d.errorf(kn, "traces.kinds: unknown kind %q (one of %s; raw programs are allow_raw_programs)", k, strings.Join(traceKinds, ", "))
				ok = false
			}
		}
		if ok {
			doc.settings = append(doc.settings, setting{key: "traces.kinds", at: d.at(kn),
				apply: func(p *Policy) { p.traces.Kinds = kinds }})
		}
	}
	rn, has := m["rules"]
	if !has {
		return
	}
	items, ok := d.seq(rn, "traces.rules")
	if !ok {
		return
	}
	for i, it := range items {
		what := fmt.Sprintf("traces.rules[%d]", i)
		rm, _ := d.mapping(it, what, "id", "kind", "target")
		if rm == nil {
			continue
		}
		id, ok := d.ruleID(rm, it, what)
		t := &traceItem{at: d.at(d.resolve(it))}
		t.ID = id
		if kn, has := rm["kind"]; has {
			if k, ok2 := d.str(kn, what+".kind"); ok2 {
				if !contains(traceKinds, k) {
					d.errorf(kn, "%s.kind: unknown kind %q (one of %s)", what, k, strings.Join(traceKinds, ", "))
					ok = false
				}
				t.Kind = k
			} else {
				ok = false
			}
		} else {
			d.errorf(it, "%s: missing kind", what)
			ok = false
		}
		if tn, has := rm["target"]; has {
			if tg, ok2 := d.str(tn, what+".target"); ok2 {
				if _, err := path.Match(tg, ""); err != nil || tg == "" || strings.ContainsAny(tg, "/ ") {
					d.errorf(tn, "%s.target: %q is not a valid target glob", what, tg)
					ok = false
				}
				if t.Kind == "tracepoint" && !strings.Contains(tg, ":") {
					d.errorf(tn, "%s.target: a tracepoint target is category:name (for example sched:* or syscalls:sys_enter_*)", what)
					ok = false
				}
				t.Target = tg
			} else {
				ok = false
			}
		} else {
			d.errorf(it, "%s: missing target", what)
			ok = false
		}
		if ok {
			doc.traces = append(doc.traces, t)
		}
	}
}

var proxmoxPlaceholder = regexp.MustCompile(`^\{[a-z]+\}$`)

func (d *decoder) proxmoxSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "proxmox", "pvesh", "pmxcfs_root", "paths")
	if m == nil {
		return
	}
	d.program(doc, m, "pvesh", "proxmox.pvesh", func(p *Policy, s string) { p.proxmox.Pvesh = s })
	if rn, has := m["pmxcfs_root"]; has {
		if s, ok := d.str(rn, "proxmox.pmxcfs_root"); ok {
			if !strings.HasPrefix(s, "/") || path.Clean(s) != s || !isPlainASCII(s) {
				d.errorf(rn, "proxmox.pmxcfs_root: %q must be a clean absolute path", s)
			} else {
				doc.settings = append(doc.settings, setting{key: "proxmox.pmxcfs_root", at: d.at(rn),
					apply: func(p *Policy) { p.proxmox.PmxcfsRoot = s }})
			}
		}
	}
	pn, has := m["paths"]
	if !has {
		return
	}
	items, ok := d.seq(pn, "proxmox.paths")
	if !ok {
		return
	}
	for i, it := range items {
		what := fmt.Sprintf("proxmox.paths[%d]", i)
		rm, _ := d.mapping(it, what, "id", "path")
		if rm == nil {
			continue
		}
		id, ok := d.ruleID(rm, it, what)
		item := &proxItem{at: d.at(d.resolve(it))}
		item.ID = id
		if an, has := rm["path"]; has {
			if s, ok2 := d.str(an, what+".path"); ok2 {
				if err := checkProxmoxRulePath(s); err != nil {
					d.errorf(an, "%s.path: %v", what, err)
					ok = false
				}
				item.Path = s
			} else {
				ok = false
			}
		} else {
			d.errorf(it, "%s: missing path", what)
			ok = false
		}
		if ok {
			doc.proxmox = append(doc.proxmox, item)
		}
	}
}

func checkProxmoxRulePath(s string) error {
	if !strings.HasPrefix(s, "/") || path.Clean(s) != s || s == "/" {
		return fmt.Errorf("%q must be a clean absolute API path such as /nodes/{local}/status", s)
	}
	for _, seg := range strings.Split(s[1:], "/") {
		if proxmoxPlaceholder.MatchString(seg) {
			if seg != "{local}" && seg != "{vmid}" {
				return fmt.Errorf("%q: unknown placeholder %s (use {local} or {vmid})", s, seg)
			}
			continue
		}
		if !proxmoxSegment(seg) {
			return fmt.Errorf("%q: segment %q is not a plain word (no globs)", s, seg)
		}
	}
	return nil
}

func (d *decoder) patchesSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "patches", "enabled", "mode", "modes", "interpreters", "path", "pct", "targets", "vmids", "pinned")
	if m == nil {
		return
	}
	d.flag(doc, m, "enabled", "patches.enabled", func(p *Policy, b bool) { p.patches.Enabled = b })
	d.program(doc, m, "pct", "patches.pct", func(p *Policy, s string) { p.patches.Pct = s })
	d.patchRunSettings(doc, m)
	d.patchVMIDs(doc, m)
	if mn, has := m["mode"]; has {
		if s, ok := d.str(mn, "patches.mode"); ok {
			mode := PatchMode(s)
			if mode != PatchPinned && mode != PatchTrustBackend {
				d.errorf(mn, "patches.mode: %q is not pinned or trust_backend", s)
			} else {
				doc.settings = append(doc.settings, setting{key: "patches.mode", at: d.at(mn),
					apply: func(p *Policy) { p.patches.Mode = mode }})
			}
		}
	}
	if tn, has := m["targets"]; has {
		targets, ok := d.strs(tn, "patches.targets")
		for _, t := range targets {
			if t != PatchTargetHost && t != PatchTargetLXC {
				d.errorf(tn, "patches.targets: %q is not host or lxc", t)
				ok = false
			}
		}
		if ok {
			doc.settings = append(doc.settings, setting{key: "patches.targets", at: d.at(tn),
				apply: func(p *Policy) { p.patches.Targets = targets }})
		}
	}
	pn, has := m["pinned"]
	if !has {
		return
	}
	items, ok := d.seq(pn, "patches.pinned")
	if !ok {
		return
	}
	for i, it := range items {
		what := fmt.Sprintf("patches.pinned[%d]", i)
		rm, _ := d.mapping(it, what, "id", "sha256", "name")
		if rm == nil {
			continue
		}
		id, ok := d.ruleID(rm, it, what)
		item := &pinItem{at: d.at(d.resolve(it))}
		item.ID = id
		if sn, has := rm["sha256"]; has {
			if s, ok2 := d.str(sn, what+".sha256"); ok2 {
				s = strings.ToLower(s)
				if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
					d.errorf(sn, "%s.sha256: %q is not 64 hex digits", what, s)
					ok = false
				}
				item.SHA256 = s
			} else {
				ok = false
			}
		} else {
			d.errorf(it, "%s: missing sha256", what)
			ok = false
		}
		if nn, has := rm["name"]; has {
			item.Name, _ = d.str(nn, what+".name")
		}
		if ok {
			doc.pinned = append(doc.pinned, item)
		}
	}
}

// patchRunSettings decodes how a run is made: allowed modes, interpreters
// and PATH.
func (d *decoder) patchRunSettings(doc *fileDoc, m map[string]*yaml.Node) {
	if mn, has := m["modes"]; has {
		modes, ok := d.strs(mn, "patches.modes")
		for _, x := range modes {
			if !contains(patchModes, x) {
				d.errorf(mn, "patches.modes: %q is not dry-run or apply", x)
				ok = false
			}
		}
		if ok {
			doc.settings = append(doc.settings, setting{key: "patches.modes", at: d.at(mn),
				apply: func(p *Policy) { p.patches.Modes = modes }})
		}
	}
	if in, has := m["interpreters"]; has {
		progs, ok := d.strs(in, "patches.interpreters")
		for _, x := range progs {
			if err := checkProgramPath(x); err != nil {
				d.errorf(in, "patches.interpreters: %v", err)
				ok = false
			}
		}
		if ok {
			doc.settings = append(doc.settings, setting{key: "patches.interpreters", at: d.at(in),
				apply: func(p *Policy) { p.patches.Interpreters = progs }})
		}
	}
	if pn, has := m["path"]; has {
		if v, ok := d.str(pn, "patches.path"); ok {
			if err := checkPatchPath(v); err != nil {
				d.errorf(pn, "patches.path: %v", err)
			} else {
				doc.settings = append(doc.settings, setting{key: "patches.path", at: d.at(pn),
					apply: func(p *Policy) { p.patches.Path = v }})
			}
		}
	}
}
func (d *decoder) metricsSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "metrics", "enabled")
	if m == nil {
		return
	}
	d.flag(doc, m, "enabled", "metrics.enabled", func(p *Policy, b bool) { p.metrics.Enabled = b })
}

func (d *decoder) limitsSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "limits", limitKeys()...)
	if m == nil {
		return
	}
	for _, f := range limitFields {
		vn, has := m[f.key]
		if !has {
			continue
		}
		what := "limits." + f.key
		v, ok := d.limitValue(f, vn, what)
		if !ok {
			continue
		}
		if v <= 0 {
			d.errorf(vn, "%s: must be above zero", what)
			continue
		}
		if v > f.cap {
			d.errorf(vn, "%s: %s is above the hard cap %s", what, formatLimit(f.kind, v), formatLimit(f.kind, f.cap))
			continue
		}
		set := f.set
		doc.settings = append(doc.settings, setting{key: what, at: d.at(vn),
			apply: func(p *Policy) { set(&p.limits, v) }})
	}
}

func (d *decoder) limitValue(f limitField, n *yaml.Node, what string) (int64, bool) {
	switch f.kind {
	case limitCount:
		return d.integer(n, what)
	case limitSize:
		r := d.resolve(n)
		if r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!int" {
			return d.integer(r, what)
		}
		s, ok := d.str(n, what)
		if !ok {
			return 0, false
		}
		v, err := parseSize(s)
		if err != nil {
			d.errorf(n, "%s: %v", what, err)
			return 0, false
		}
		return v, true
	default:
		s, ok := d.str(n, what)
		if !ok {
			return 0, false
		}
		v, err := parseDuration(s, false)
		if err != nil {
			d.errorf(n, "%s: %v", what, err)
			return 0, false
		}
		return int64(v), true
	}
}

func (d *decoder) denyPaths(doc *fileDoc, n *yaml.Node) {
	items, ok := d.seq(n, "deny_paths")
	if !ok {
		return
	}
	for i, it := range items {
		what := fmt.Sprintf("deny_paths[%d]", i)
		m, _ := d.mapping(it, what, "id", "class", "paths", "reason")
		if m == nil {
			continue
		}
		id, ok := d.ruleID(m, it, what)
		r := &denyRule{id: id, at: d.at(d.resolve(it))}
		if rn, has := m["reason"]; has {
			r.reason, _ = d.str(rn, what+".reason")
		}
		if cn, has := m["class"]; has {
			if c, ok2 := d.str(cn, what+".class"); ok2 && checkID(c) == nil {
				r.class = c
			} else {
				d.errorf(cn, "%s.class: a class is a short lower-case name such as credentials or kernel-layout", what)
				ok = false
			}
		}
		if r.reason == "" {
			d.errorf(it, "%s: missing reason (what the paths protect)", what)
			ok = false
		}
		pn, has := m["paths"]
		if !has {
			d.errorf(it, "%s: missing paths", what)
			continue
		}
		paths, ok2 := d.strs(pn, what+".paths")
		ok = ok && ok2
		for _, p := range paths {
			alts, err := expandBraces(p)
			if err != nil {
				d.errorf(pn, "%s.paths: %v", what, err)
				ok = false
				continue
			}
			for _, a := range alts {
				pp, err := compilePathPattern(a)
				if err != nil {
					d.errorf(pn, "%s.paths: %v", what, err)
					ok = false
					continue
				}
				r.paths = append(r.paths, a)
				r.patterns = append(r.patterns, pp)
			}
		}
		if ok {
			doc.deny = append(doc.deny, r)
		}
	}
}
