package patch

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode is how a script runs.
type Mode string

// The modes.
const (
	DryRun Mode = "dry-run"
	Apply  Mode = "apply"
)

// Request is one patch run as the worker asked for it.
type Request struct {
	// OperationID names the run (the backend's patch operation id).
	OperationID string
	// Script is the exact bytes to run.
	Script []byte
	// SHA256 is the hash the bytes must have (hex).
	SHA256 string
	Mode   Mode
	// Exclusions are package names the script must leave alone.
	Exclusions []string
	// Name is the script's name per the backend, for records and logs.
	Name string
}

// Settings are the policy's terms for a run.
type Settings struct {
	// Rule is the policy rule that allowed the run.
	Rule string
	// Interpreters are the programs a #! line may name.
	Interpreters []string
	// Path is the run's PATH.
	Path string
	// Timeout ends the run, killing its whole tree.
	Timeout time.Duration
	// ScriptBytes caps the script; OutputBytes caps each of stdout and
	// stderr.
	ScriptBytes int64
	OutputBytes int64
	// MemoryBytes and Tasks cap the run's process tree.
	MemoryBytes int64
	Tasks       int
}

// Limits on a request's shape.
const (
	maxExclusions    = 256
	maxPackageName   = 128
	maxOperationID   = 64
	maxScriptNameLen = 255
)

// Refusal reasons a caller may test with errors.Is. Each means nothing ran.
var (
	// ErrInvalid is a malformed request.
	ErrInvalid = errors.New("invalid patch request")
	// ErrHashMismatch means the bytes do not hash to the expected sha256.
	ErrHashMismatch = errors.New("script does not match its sha256")
	// ErrRefused is a script this broker will not run as it is (no #!
	// line, an interpreter not allowed, an unsafe PATH).
	ErrRefused = errors.New("script refused")
	// ErrBusy means another patch run is in progress.
	ErrBusy = errors.New("another patch run is in progress")
	// ErrNotFound means there is no run for the operation.
	ErrNotFound = errors.New("no patch run for this operation")
	// ErrClosed means the manager is shutting down.
	ErrClosed = errors.New("patch runs are shutting down")
)

// CheckShape validates everything in r but the script's content: the
// operation id, the hash's form, the mode, the exclusions and the size.
// checkOnly requests carry no script.
func CheckShape(r Request, maxScript int64, checkOnly bool) error {
	switch {
	case !ValidOperationID(r.OperationID):
		return fmt.Errorf("%w: operation id %q is not 1-%d letters, digits, _ or -", ErrInvalid, clip(r.OperationID), maxOperationID)
	case !validSum(r.SHA256):
		return fmt.Errorf("%w: %q is not a sha256 (64 hex digits)", ErrInvalid, clip(r.SHA256))
	case r.Mode != DryRun && r.Mode != Apply:
		return fmt.Errorf("%w: mode %q is neither dry-run nor apply", ErrInvalid, clip(string(r.Mode)))
	case len(r.Name) > maxScriptNameLen:
		return fmt.Errorf("%w: script name longer than %d bytes", ErrInvalid, maxScriptNameLen)
	case checkOnly && len(r.Script) > 0:
		return fmt.Errorf("%w: a check-only request carries no script", ErrInvalid)
	case !checkOnly && len(r.Script) == 0:
		return fmt.Errorf("%w: the script is empty", ErrInvalid)
	case int64(len(r.Script)) > maxScript:
		return fmt.Errorf("%w: the script is %d bytes; the policy's limits.patch_script_bytes allows %d", ErrInvalid, len(r.Script), maxScript)
	}
	return checkExclusions(r.Exclusions)
}

func checkExclusions(names []string) error {
	if len(names) > maxExclusions {
		return fmt.Errorf("%w: %d excluded packages, at most %d", ErrInvalid, len(names), maxExclusions)
	}
	for _, n := range names {
		if !validPackageName(n) {
			return fmt.Errorf("%w: excluded package %q is not a package name (letters, digits and + . _ : -, starting with a letter or digit, at most %d)", ErrInvalid, clip(n), maxPackageName)
		}
	}
	return nil
}

// validPackageName accepts the names of the package managers the backend
// has scripts for (dpkg, rpm, pacman, zypper, apk), with an optional
// :arch. Commas cannot occur: the list is passed comma-separated.
func validPackageName(s string) bool {
	if s == "" || len(s) > maxPackageName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || strings.IndexByte("+._:-", c) < 0) {
			return false
		}
	}
	return true
}

// ValidOperationID accepts the backend's record ids: 1-64 letters, digits,
// '_' or '-'. The id names the run's directory.
func ValidOperationID(s string) bool {
	if s == "" || len(s) > maxOperationID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func validSum(s string) bool {
	b, err := hex.DecodeString(s)
	return err == nil && len(b) == sha256.Size
}

// Sum is the lowercase hex sha256 of b.
func Sum(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// Verify hashes script and compares it with the expected sha256.
func Verify(script []byte, expected string) (string, error) {
	sum := Sum(script)
	if !strings.EqualFold(sum, expected) {
		return sum, fmt.Errorf("%w: the bytes received hash to %s, not the expected %s; nothing ran", ErrHashMismatch, sum, clip(expected))
	}
	return sum, nil
}

// Args are the script's arguments, built by the broker: --dry-run for a
// dry run (a script applies by default), then --exclude and the
// comma-separated package names as two arguments.
func Args(mode Mode, exclusions []string) []string {
	var out []string
	if mode == DryRun {
		out = append(out, "--dry-run")
	}
	if len(exclusions) > 0 {
		out = append(out, "--exclude", strings.Join(exclusions, ","))
	}
	return out
}

// clip keeps a request's garbage short and printable in an error.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
