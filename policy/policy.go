// Package policy loads and evaluates the broker's allowlist policy: which
// commands, traces, Proxmox reads, patches and reboots the broker may perform
// as root. Everything not named is denied.
//
// A policy is a vendor file plus local files, merged in a stated order (the
// vendor file first, then local files in the order given; LoadInstalled
// takes policy.d/*.yaml in lexical order). Decoding is strict: an unknown
// key, a repeated id, a bad pattern or an unknown operand type is an error
// with its file:line, and the policy is not loaded at all.
//
// Command rules are closed grammars: a program's absolute path, its
// subcommands, its options with their arity (parsed as the tool parses
// them), and typed operands. deny_paths win over every allow. See README.md
// for the schema and testdata/example.yaml for a commented policy.
package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// Installed locations and the worker's account.
const (
	DefaultVendorPath    = "/usr/share/nannyagent/policy.yaml"
	DefaultLocalDir      = "/etc/nannyagent/policy.d"
	DefaultWorkerAccount = "nannyagent"
)

// Origin says where a policy file comes from.
type Origin string

const (
	// OriginVendor is the packaged default, replaced on upgrade.
	OriginVendor Origin = "vendor"
	// OriginLocal is an administrator's file in policy.d.
	OriginLocal Origin = "local"
)

// File is one loaded policy file.
type File struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"`
	Origin Origin `json:"origin"`
}

// LoadOptions controls how strictly files are checked.
type LoadOptions struct {
	// RequireRootOwned refuses files (and the policy.d directory) that are
	// not owned by root or that group or other may write. The broker always
	// sets it.
	RequireRootOwned bool
	// WorkerAccount is the worker's account name; no rule may run_as it.
	WorkerAccount string
}

// DisabledRule is a rule a later file switched off.
type DisabledRule struct {
	ID         string `json:"id"`
	Section    string `json:"section"`
	DefinedAt  string `json:"defined_at"`
	DisabledBy string `json:"disabled_by"`
}

// DenyPathRule is one deny_paths rule as loaded.
type DenyPathRule struct {
	ID    string   `json:"id"`
	Paths []string `json:"paths"`
	// Class names the kind of secret the rule covers (credentials,
	// private-keys, kernel-layout, ...), so a reviewer sees classes rather
	// than a list of files.
	Class  string `json:"class,omitempty"`
	Reason string `json:"reason"`
	At     string `json:"at"`
}

// Policy is a merged, validated policy. It is read-only after loading and
// safe for concurrent use.
type Policy struct {
	files    []File
	sha256   string
	counts   map[string]int
	disabled []DisabledRule
	sources  map[string]string

	limits  Limits
	traces  Traces
	proxmox Proxmox
	patches Patches
	reboots Reboots
	metrics Metrics
	// transport is the transport section (transport.go).
	transport Transport

	commands  []*cmdRule
	byName    map[string][]*cmdRule
	byPath    map[string][]*cmdRule
	denyRules []*denyRule
	judge     *pathJudge
}

// Load reads the vendor file and then each local file, in the order given,
// and merges them.
func Load(opts LoadOptions, vendor string, locals ...string) (*Policy, error) {
	errs := &ErrorList{}
	var contents []namedBytes
	for _, path := range append([]string{vendor}, locals...) {
		data, err := readPolicyFile(opts, path)
		if err != nil {
			errs.add(&Error{File: path, Msg: err.Error()})
			continue
		}
		contents = append(contents, namedBytes{path, data})
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return loadBytes(opts, contents...)
}

// namedBytes is one policy file's name and content.
type namedBytes struct {
	name string
	data []byte
}

// loadBytes decodes and merges files already read; the first is the vendor
// file.
func loadBytes(opts LoadOptions, files ...namedBytes) (*Policy, error) {
	errs := &ErrorList{}
	ctx := ruleContext{workerAccount: opts.WorkerAccount}
	var docs []*fileDoc
	for i, f := range files {
		origin := OriginLocal
		if i == 0 {
			origin = OriginVendor
		}
		docs = append(docs, parseFile(f.name, f.data, origin, ctx, errs))
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	p := merge(docs, errs)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadInstalled loads vendor and then every *.yaml in localDir in lexical
// order (names starting with a dot are skipped). A missing localDir is fine.
func LoadInstalled(opts LoadOptions, vendor, localDir string) (*Policy, error) {
	locals, err := LocalFiles(opts, localDir)
	if err != nil {
		return nil, err
	}
	return Load(opts, vendor, locals...)
}

// LocalFiles lists the local policy files of dir in merge order.
func LocalFiles(opts LoadOptions, dir string) ([]string, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("policy directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("policy directory %s: not a directory", dir)
	}
	if opts.RequireRootOwned {
		if err := checkOwner(dir, fi); err != nil {
			return nil, err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policy directory %s: %w", dir, err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		out = append(out, filepath.Join(dir, name))
	}
	sort.Strings(out)
	return out, nil
}

// readPolicyFile reads a file, checking ownership on the open descriptor so
// the bytes judged are the bytes read.
func readPolicyFile(opts LoadOptions, path string) ([]byte, error) {
	// O_NONBLOCK: opening a FIFO named *.yaml must not hang the broker; the
	// fstat below then refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file")
	}
	if opts.RequireRootOwned {
		if err := checkOwner(path, fi); err != nil {
			return nil, err
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxFileBytes)
	}
	return data, nil
}

// CheckOwnership refuses a file that is not a regular file owned by root or
// that group or other may write.
func CheckOwnership(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("policy %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("policy %s: not a regular file", path)
	}
	return checkOwner(path, fi)
}

func checkOwner(path string, fi os.FileInfo) error {
	if uid, ok := ownerUID(fi); !ok || uid != 0 {
		return fmt.Errorf("policy %s: owned by uid %d, must be owned by root", path, uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("policy %s: mode %04o is writable by group or other", path, fi.Mode().Perm())
	}
	return nil
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// mergedSHA256 hashes each file's origin and hash in merge order.
func mergedSHA256(files []File) string {
	var b strings.Builder
	for _, f := range files {
		fmt.Fprintf(&b, "%s %s\n", f.Origin, f.SHA256)
	}
	return sha256hex([]byte(b.String()))
}

// idEntry tracks one rule id across files.
type idEntry struct {
	section  string
	at       pos
	file     int
	disabled string
	disable  func()
}

func merge(docs []*fileDoc, errs *ErrorList) *Policy {
	p := &Policy{counts: map[string]int{}, sources: map[string]string{}, limits: DefaultLimits(),
		byName: map[string][]*cmdRule{}, byPath: map[string][]*cmdRule{}}
	p.traces, p.proxmox, p.patches, p.reboots, p.metrics = defaultSections()
	ids := map[string]*idEntry{}
	var traces []*traceItem
	var prox []*proxItem
	var pins []*pinItem
	var guests []*guestItem
	// setAt is every setting, in merge order.
	var setAt []setting
	for fi, doc := range docs {
		p.files = append(p.files, doc.file)
		own := doc.ownIDs()
		for _, ref := range doc.disable {
			e := ids[ref.id]
			switch {
			case e == nil && own[ref.id]:
				errs.add(&Error{File: ref.at.File, Line: ref.at.Line, Msg: fmt.Sprintf("disable: rule %q is defined in this same file; delete it instead", ref.id)})
			case e == nil:
				errs.add(&Error{File: ref.at.File, Line: ref.at.Line, Msg: fmt.Sprintf("disable: no earlier file defines a rule %q", ref.id)})
			case e.disabled != "":
				errs.add(&Error{File: ref.at.File, Line: ref.at.Line, Msg: fmt.Sprintf("disable: rule %q is already disabled by %s", ref.id, e.disabled)})
			default:
				e.disabled = ref.at.String()
				e.disable()
				p.disabled = append(p.disabled, DisabledRule{ID: ref.id, Section: e.section, DefinedAt: e.at.String(), DisabledBy: ref.at.String()})
			}
		}
		register := func(section, id string, at pos, disable func()) {
			if prev := ids[id]; prev != nil {
				errs.add(&Error{File: at.File, Line: at.Line, Msg: fmt.Sprintf("duplicate id %q (first used at %s)", id, prev.at)})
				return
			}
			ids[id] = &idEntry{section: section, at: at, file: fi, disable: disable}
		}
		for _, r := range doc.commands {
			register("commands", r.id, r.at, func() { r.disabled = true })
			p.commands = append(p.commands, r)
		}
		for _, t := range doc.traces {
			register("traces", t.ID, t.at, func() { t.disabled = true })
			traces = append(traces, t)
		}
		for _, x := range doc.proxmox {
			register("proxmox", x.ID, x.at, func() { x.disabled = true })
			prox = append(prox, x)
		}
		for _, x := range doc.pinned {
			register("patches", x.ID, x.at, func() { x.disabled = true })
			pins = append(pins, x)
		}
		for _, x := range doc.deny {
			register("deny_paths", x.id, x.at, func() { x.disabled = true })
			p.denyRules = append(p.denyRules, x)
		}
		for _, x := range doc.guests {
			register("transport", x.ID, x.at, func() { x.disabled = true })
			guests = append(guests, x)
		}
		for _, s := range doc.settings {
			s.apply(p)
			p.sources[s.key] = s.at.String()
			setAt = append(setAt, s)
		}
	}
	for _, t := range traces {
		if !t.disabled {
			p.traces.Rules = append(p.traces.Rules, t.TraceRule)
		}
	}
	for _, x := range prox {
		if !x.disabled {
			p.proxmox.Paths = append(p.proxmox.Paths, x.ProxmoxRule)
		}
	}
	for _, x := range pins {
		if !x.disabled {
			p.patches.Pinned = append(p.patches.Pinned, x.PinnedScript)
		}
	}
	p.mergeGuests(guests, errs)
	checkRequestRoom(p.limits, setAt, errs)
	p.judge = newPathJudge(p.denyRules)
	p.indexCommands(errs)
	p.counts["commands"] = countActive(p.commands)
	p.counts["traces"] = len(p.traces.Rules)
	p.counts["proxmox"] = len(p.proxmox.Paths)
	p.counts["patches"] = len(p.patches.Pinned)
	p.counts["transport"] = len(p.transport.VsockGuests)
	p.counts["deny_paths"] = 0
	for _, r := range p.denyRules {
		if !r.disabled {
			p.counts["deny_paths"]++
		}
	}
	p.sha256 = mergedSHA256(p.files)
	return p
}

func (doc *fileDoc) ownIDs() map[string]bool {
	own := map[string]bool{}
	for _, r := range doc.commands {
		own[r.id] = true
	}
	for _, r := range doc.traces {
		own[r.ID] = true
	}
	for _, r := range doc.proxmox {
		own[r.ID] = true
	}
	for _, r := range doc.pinned {
		own[r.ID] = true
	}
	for _, r := range doc.deny {
		own[r.id] = true
	}
	for _, r := range doc.guests {
		own[r.ID] = true
	}
	return own
}

func countActive(rules []*cmdRule) int {
	n := 0
	for _, r := range rules {
		if !r.disabled {
			n++
		}
	}
	return n
}

// indexCommands builds the program tables and precompiles path roots. A
// bare name must resolve to one program path, or "cat" would be ambiguous.
func (p *Policy) indexCommands(errs *ErrorList) {
	for _, r := range p.commands {
		for _, v := range r.values() {
			for i, src := range v.rootSrc {
				p.judge.roots[src] = v.roots[i]
			}
		}
		if r.disabled {
			continue
		}
		if prev := p.byName[r.base]; prev != nil && prev[0].program != r.program {
			errs.add(&Error{File: r.at.File, Line: r.at.Line, Msg: fmt.Sprintf("commands (%s): program %s has the same name as %s (rule %s at %s); a bare name must name one program",
				r.id, r.program, prev[0].program, prev[0].id, prev[0].at)})
			continue
		}
		p.byName[r.base] = append(p.byName[r.base], r)
		p.byPath[r.program] = append(p.byPath[r.program], r)
	}
}

// values lists every operand type in the rule.
func (r *cmdRule) values() []*valueSpec {
	var out []*valueSpec
	for _, o := range r.opts {
		if o.value != nil {
			out = append(out, o.value)
		}
	}
	for _, s := range r.slots {
		out = append(out, s.value)
	}
	if r.leading != nil {
		out = append(out, r.leading)
	}
	return out
}

// SHA256 identifies the merged policy: a hash over each file's origin and
// hash, in merge order.
func (p *Policy) SHA256() string { return p.sha256 }

// Files lists the loaded files in merge order.
func (p *Policy) Files() []File { return append([]File(nil), p.files...) }

// RuleCounts counts the active rules in each section.
func (p *Policy) RuleCounts() map[string]int {
	out := make(map[string]int, len(p.counts))
	for k, v := range p.counts {
		out[k] = v
	}
	return out
}

// DisabledRules lists the ids of rules a later file disabled.
func (p *Policy) DisabledRules() []string {
	out := make([]string, len(p.disabled))
	for i, d := range p.disabled {
		out[i] = d.ID
	}
	return out
}

// Disabled details the disabled rules: where each was defined and which
// file disabled it.
func (p *Policy) Disabled() []DisabledRule { return append([]DisabledRule(nil), p.disabled...) }

// Limits are the merged limits, fully defaulted and within the hard caps.
func (p *Policy) Limits() Limits { return p.limits }

// Traces is the merged traces section.
func (p *Policy) Traces() Traces {
	t := p.traces
	t.Kinds = append([]string(nil), t.Kinds...)
	t.Rules = append([]TraceRule(nil), t.Rules...)
	return t
}

// Proxmox is the merged proxmox section.
func (p *Policy) Proxmox() Proxmox {
	x := p.proxmox
	x.Paths = append([]ProxmoxRule(nil), x.Paths...)
	return x
}

// Patches is the merged patches section.
func (p *Policy) Patches() Patches {
	x := p.patches
	x.Targets = append([]string(nil), x.Targets...)
	x.Modes = append([]string(nil), x.Modes...)
	x.Interpreters = append([]string(nil), x.Interpreters...)
	x.Pinned = append([]PinnedScript(nil), x.Pinned...)
	return x
}

// Reboots is the merged reboots section.
func (p *Policy) Reboots() Reboots { return p.reboots }

// Metrics is the merged metrics section.
func (p *Policy) Metrics() Metrics { return p.metrics }

// DenyPaths lists the active deny_paths rules.
func (p *Policy) DenyPaths() []DenyPathRule {
	var out []DenyPathRule
	for _, r := range p.denyRules {
		if !r.disabled {
			out = append(out, DenyPathRule{ID: r.id, Paths: append([]string(nil), r.paths...), Class: r.class, Reason: r.reason, At: r.at.String()})
		}
	}
	return out
}

// SettingSource says which file:line last set a setting such as
// "patches.mode" or "limits.command_timeout", or "" for a default.
func (p *Policy) SettingSource(key string) string { return p.sources[key] }
