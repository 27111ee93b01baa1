package policy

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// Patch run modes, as the backend names them.
const (
	PatchModeDryRun = "dry-run"
	PatchModeApply  = "apply"
)

// DefaultPatchPath is a patch run's PATH unless the policy sets one.
const DefaultPatchPath = "/usr/sbin:/usr/bin:/sbin:/bin"

// defaultPatchInterpreters are the shells a script's #! line may name
// unless the policy lists others (both spellings of a merged /usr).
var defaultPatchInterpreters = []string{"/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"}

// patchModes are the modes a policy may allow.
var patchModes = []string{PatchModeDryRun, PatchModeApply}

func defaultPatches() Patches {
	return Patches{
		Mode: PatchPinned, Pct: DefaultPct, Targets: []string{PatchTargetHost, PatchTargetLXC},
		// A dry run changes nothing; applying must be asked for by name.
		Modes:        []string{PatchModeDryRun},
		Interpreters: append([]string(nil), defaultPatchInterpreters...),
		Path:         DefaultPatchPath,
	}
}

// checkPatchPath validates a run's PATH: absolute, clean directories
// separated by colons, none empty (an empty entry means the current
// directory).
func checkPatchPath(p string) error {
	if p == "" {
		return fmt.Errorf("is empty")
	}
	if len(p) > 1024 {
		return fmt.Errorf("is longer than 1024 characters")
	}
	for _, dir := range strings.Split(p, ":") {
		if err := checkProgramPath(dir); err != nil {
			return fmt.Errorf("entry %q: must be a clean absolute directory in plain ASCII", dir)
		}
	}
	return nil
}

// PatchQuery is a patch run to judge.
type PatchQuery struct {
	// SHA256 is the script's sha256 in hex.
	SHA256 string
	// Target is PatchTargetHost or PatchTargetLXC.
	Target string
	// Mode is PatchModeDryRun or PatchModeApply.
	Mode string
	// Name is the script's name as the backend gives it; it only shapes
	// the hint of a refusal.
	Name string
}

// CheckPatch judges a patch run and returns the rule that allows it. A
// refusal is a *DeniedError whose Hint, when set, is the policy text that
// would allow the run (for example the patches.pinned line for this
// script), to be added in a file under /etc/nannyagent/policy.d.
func (p *Policy) CheckPatch(q PatchQuery) (string, error) {
	pt := p.patches
	sum := strings.ToLower(q.SHA256)
	if b, err := hex.DecodeString(sum); err != nil || len(b) != 32 {
		return "", denied("patches", "%q is not a sha256", clipValue(q.SHA256))
	}
	pin := pinLine(q.Name, sum)
	switch {
	case !pt.Enabled:
		hint := "patches:\n  enabled: true\n"
		if q.Mode == PatchModeApply {
			hint += "  modes: [dry-run, apply]\n"
		}
		if pt.Mode == PatchPinned && !pt.pinned(sum) {
			hint += "  pinned:\n" + pin
		}
		return "", deniedHint("patches", hint, "patch scripts are disabled by this host's policy (patches.enabled is false)")
	case !contains(pt.Targets, q.Target):
		return "", deniedHint("patches", fmt.Sprintf("patches:\n  targets: [%s]\n", strings.Join(append(append([]string(nil), pt.Targets...), q.Target), ", ")),
			"patch target %q is not allowed by this host's policy (patches.targets: %s)", clipValue(q.Target), strings.Join(pt.Targets, ", "))
	case !contains(patchModes, q.Mode):
		return "", denied("patches", "patch mode %q is neither dry-run nor apply", clipValue(q.Mode))
	case !contains(pt.Modes, q.Mode):
		return "", deniedHint("patches", fmt.Sprintf("patches:\n  modes: [%s]\n", strings.Join(append(append([]string(nil), pt.Modes...), q.Mode), ", ")),
			"patch mode %s is not allowed by this host's policy (patches.modes: %s)", q.Mode, strings.Join(pt.Modes, ", "))
	case pt.Mode == PatchTrustBackend:
		return "patches.trust_backend", nil
	}
	for _, s := range pt.Pinned {
		if s.SHA256 == sum {
			return s.ID, nil
		}
	}
	return "", deniedHint("patches", "patches:\n  pinned:\n"+pin,
		"script %s (sha256 %s) is not pinned by this host's policy (patches.mode is pinned)", displayName(q.Name), sum)
}

func (pt Patches) pinned(sum string) bool {
	for _, s := range pt.Pinned {
		if s.SHA256 == sum {
			return true
		}
	}
	return false
}

// pinLine is the patches.pinned entry for a script, indented to sit under
// "  pinned:". The id comes from the name and the hash's first 12 digits;
// the name is reduced to characters that need no YAML escaping, since it
// comes from the backend.
func pinLine(name, sum string) string {
	clean := safeName(name)
	line := fmt.Sprintf("    - {id: %s, sha256: %s", pinID(clean, sum), sum)
	if clean != "" {
		line += fmt.Sprintf(", name: %q", clean)
	}
	return line + "}\n"
}

// safeName keeps letters, digits and . _ - + and spaces of a script name,
// at most 64 bytes.
func safeName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < 64; i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._-+ ", c) >= 0 {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}

// pinID makes a valid rule id (see checkID) from a name and a hash.
func pinID(name, sum string) string {
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < 40; i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= '0' && c <= '9':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
	}
	base := strings.TrimSuffix(strings.TrimSuffix(b.String(), "-sh"), "-")
	if base == "" {
		base = "script"
	}
	return base + "-" + sum[:12]
}

func displayName(name string) string {
	if n := safeName(name); n != "" {
		return n
	}
	return "(unnamed)"
}

// clipValue keeps a request's garbage short in a refusal.
func clipValue(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

func deniedHint(section, hint, format string, args ...any) error {
	return &DeniedError{Section: section, Reason: fmt.Sprintf(format, args...), Hint: hint}
}
