package policy

import (
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Default program paths; a policy may name others.
const (
	DefaultBpftrace   = "/usr/bin/bpftrace"
	DefaultPvesh      = "/usr/bin/pvesh"
	DefaultPct        = "/usr/sbin/pct"
	DefaultSystemctl  = "/usr/bin/systemctl"
	DefaultPmxcfsRoot = "/etc/pve"
)

// Trace kinds a policy may allow; "raw" is governed by AllowRawPrograms.
var traceKinds = []string{"tracepoint", "syscall", "kprobe", "kretprobe"}

// TraceRawKind is the kind name of a whole program written by the caller.
const TraceRawKind = "raw"

// Traces is the traces section: which probes the broker may attach.
type Traces struct {
	// Bpftrace is the absolute path of bpftrace.
	Bpftrace string `json:"bpftrace"`
	// AllowRawPrograms lets the caller send a whole bpftrace program. Such a
	// program can read any file and kernel memory as root.
	AllowRawPrograms bool `json:"allow_raw_programs"`
	// Kinds are the probe kinds allowed at all.
	Kinds []string `json:"kinds"`
	// Rules allow targets of a kind by glob.
	Rules []TraceRule `json:"rules"`
}

// TraceRule allows trace targets of one kind: Target is a glob such as
// "syscalls:sys_enter_*" or "sched:*".
type TraceRule struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Target string `json:"target"`
}

// Proxmox is the proxmox section: which API paths the broker may read.
type Proxmox struct {
	Pvesh string `json:"pvesh"`
	// PmxcfsRoot is where pmxcfs is mounted (/etc/pve); guest configs are
	// read from it instead of one pvesh call per guest.
	PmxcfsRoot string        `json:"pmxcfs_root"`
	Paths      []ProxmoxRule `json:"paths"`
}

// ProxmoxRule allows one GET path. {local} stands for the local node's
// name and {vmid} for a guest id.
type ProxmoxRule struct {
	ID   string `json:"id"`
	Path string `json:"path"`
}

// PatchMode is how patch scripts are trusted.
type PatchMode string

const (
	// PatchPinned runs only scripts whose sha256 the policy lists.
	PatchPinned PatchMode = "pinned"
	// PatchTrustBackend runs whatever script the backend sends: the backend,
	// and anyone who takes over the worker, can run anything as root.
	PatchTrustBackend PatchMode = "trust_backend"
)

// Patch targets.
const (
	PatchTargetHost = "host"
	PatchTargetLXC  = "lxc"
)

// Patches is the patches section.
type Patches struct {
	Enabled bool      `json:"enabled"`
	Mode    PatchMode `json:"mode"`
	// Modes are the run modes allowed: "dry-run", "apply" (default: dry-run
	// only).
	Modes []string `json:"modes"`
	// Interpreters are the absolute paths a script's #! line may name.
	Interpreters []string `json:"interpreters"`
	// Path is the PATH of a run: it decides which package manager the
	// script finds.
	Path string `json:"path"`
	// Pct is the absolute path of pct, for container targets.
	Pct     string   `json:"pct"`
	Targets []string `json:"targets"`
	// VMIDs are the containers a script may run in: patterns over the
	// guest id ("100", "2*", "30[0-4]"). None: no container target.
	VMIDs  []string       `json:"vmids"`
	Pinned []PinnedScript `json:"pinned"`
}

// PinnedScript is one script the policy trusts by hash.
type PinnedScript struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
	Name   string `json:"name"`
}

// Metrics is the metrics section.
type Metrics struct {
	Enabled bool `json:"enabled"`
}

func defaultSections() (Traces, Proxmox, Patches, Reboots, Metrics) {
	return Traces{Bpftrace: DefaultBpftrace, Kinds: append([]string(nil), traceKinds...)},
		Proxmox{Pvesh: DefaultPvesh, PmxcfsRoot: DefaultPmxcfsRoot},
		defaultPatches(),
		defaultReboots(),
		Metrics{Enabled: true}
}

// DeniedError is a refusal by one of the non-command sections.
type DeniedError struct {
	Section string
	Reason  string
	// Hint is policy text that would lift the refusal, or "".
	Hint string
}

func (e *DeniedError) Error() string { return e.Section + ": " + e.Reason }

func denied(section, format string, args ...any) error {
	return &DeniedError{Section: section, Reason: fmt.Sprintf(format, args...)}
}

// CheckTrace judges a trace request by kind ("tracepoint", "syscall",
// "kprobe", "kretprobe", or TraceRawKind) and target, and returns the rule
// that allows it.
func (p *Policy) CheckTrace(kind, target string) (string, error) {
	if kind == TraceRawKind {
		if !p.traces.AllowRawPrograms {
			return "", denied("traces", "raw bpftrace programs are not allowed by policy (they can read any file and kernel memory); ask for a tracepoint, syscall or kprobe by name")
		}
		return "traces.allow_raw_programs", nil
	}
	if !contains(p.traces.Kinds, kind) {
		return "", denied("traces", "probe kind %q is not allowed (allowed: %s)", kind, strings.Join(p.traces.Kinds, ", "))
	}
	if err := checkTraceTarget(target); err != "" {
		return "", denied("traces", "%s", err)
	}
	for _, r := range p.traces.Rules {
		if r.Kind != kind {
			continue
		}
		if ok, _ := path.Match(r.Target, target); ok {
			return r.ID, nil
		}
	}
	return "", denied("traces", "no trace rule allows %s %q", kind, target)
}

func checkTraceTarget(t string) string {
	if t == "" || len(t) > 128 {
		return fmt.Sprintf("%q is not a probe target", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(isAlnum(c) || c == '_' || c == ':' || c == '.' || c == '-') {
			return fmt.Sprintf("%q is not a probe target (letters, digits and _:.- only)", t)
		}
	}
	return ""
}

// CheckProxmoxPath judges a Proxmox API GET path for the local node named
// localNode and returns the rule that allows it.
func (p *Policy) CheckProxmoxPath(apiPath, localNode string) (string, error) {
	if !strings.HasPrefix(apiPath, "/") || path.Clean(apiPath) != apiPath || len(apiPath) > 256 {
		return "", denied("proxmox", "%q is not a clean absolute API path", apiPath)
	}
	segs := strings.Split(apiPath[1:], "/")
	for _, s := range segs {
		if !proxmoxSegment(s) {
			return "", denied("proxmox", "%q is not a Proxmox API path", apiPath)
		}
	}
	for _, r := range p.proxmox.Paths {
		if proxmoxMatch(r.Path, segs, localNode) {
			return r.ID, nil
		}
	}
	return "", denied("proxmox", "no rule allows GET %s on node %q", apiPath, localNode)
}

func proxmoxSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !(isAlnum(s[i]) || s[i] == '-' || s[i] == '_' || s[i] == '.') {
			return false
		}
	}
	return true
}

func proxmoxMatch(rule string, segs []string, local string) bool {
	rs := strings.Split(rule[1:], "/")
	if len(rs) != len(segs) {
		return false
	}
	for i, r := range rs {
		switch r {
		case "{local}":
			if local == "" || segs[i] != local {
				return false
			}
		case "{vmid}":
			n, err := strconv.ParseUint(segs[i], 10, 32)
			if err != nil || !isDigits(segs[i]) || n < 100 || n > 999999999 {
				return false
			}
		default:
			if r != segs[i] {
				return false
			}
		}
	}
	return true
}
