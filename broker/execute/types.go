package execute

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// PathJudge decides whether a path may be used: it normalises the path and
// checks it against deny_paths and the operand's allowed roots. The runner
// calls it for the path as given, for every symlink hop and for the final
// resolved path.
type PathJudge interface {
	CheckPath(path string, roots []string) error
}

// OpenMode says how a path operand reaches the program.
type OpenMode int

const (
	// OpenFD is for content readers whose output does not name the file
	// (cat, head, sort, ...): the runner opens the checked file itself and
	// passes it as an inherited descriptor, replacing the argv element with
	// /dev/fd/N. A link swapped after the check cannot redirect the read.
	OpenFD OpenMode = iota + 1
	// OpenCheckOnly is for tools that print names or metadata (stat, ls,
	// du, find): the argv element stays the path as written, after every
	// hop of it was judged.
	OpenCheckOnly
	// OpenDevice is for device probes (blkid, lsblk, smartctl, mdadm): the
	// path must resolve to a block device (a character device too with
	// PathOperand.CharDevices) whose every directory only root can change,
	// and the argv element becomes the device's own path.
	OpenDevice
)

func (m OpenMode) String() string {
	switch m {
	case OpenFD:
		return "fd"
	case OpenCheckOnly:
		return "check-only"
	case OpenDevice:
		return "device"
	}
	return "unset"
}

// PathOperand is an argv element that names a file. Argv[Index] must equal
// Prefix+Path: Prefix is the text before the path in the same argument
// ("--file=", "-f"), empty for a plain operand.
type PathOperand struct {
	Index  int
	Prefix string
	Path   string
	Roots  []string
	Open   OpenMode
	// CharDevices lets OpenDevice accept a character device.
	CharDevices bool
}

// Stage is one approved process of a pipeline.
type Stage struct {
	// Program is the absolute path from the policy rule.
	Program string
	// Argv is the approved argv; Argv[0] must equal Program.
	Argv []string
	// RunAs is "" for root, otherwise an existing non-root account name.
	RunAs string
	// Paths lists the argv elements that are path operands.
	Paths []PathOperand
	// StdoutToNull is ">/dev/null".
	StdoutToNull bool
	// StderrToNull is "2>/dev/null".
	StderrToNull bool
	// Writes are the only paths the stage may write beneath when runs are
	// confined (the policy rule's writes); nil means nowhere.
	Writes []string
	// InspectsProcesses says the tool reads other processes' open files,
	// maps or I/O counters; Landlock's ptrace rule would hide them, so a
	// pipeline with such a stage runs without a Landlock domain.
	InspectsProcesses bool
	// StderrToStdout is "2>&1": stderr goes wherever stdout ends up, so
	// StdoutToNull together with it means ">/dev/null 2>&1". A policy must
	// not map "2>&1 >/dev/null" onto these flags.
	StderrToStdout bool
}

// Request is one pipeline to run.
type Request struct {
	Stages []Stage
	// Limits for this run; zero fields take DefaultLimits, and nothing may
	// exceed HardLimits.
	Limits Limits
	// Judge checks path operands; required when any stage has one.
	Judge PathJudge
}

// Result is how a pipeline ended.
type Result struct {
	// ExitCode is the last stage's exit code, or -1 when it was signalled.
	ExitCode int
	Stages   []StageResult
	// Stdout is the last stage's standard output, up to the limit.
	Stdout          []byte
	StdoutTruncated bool
	// Stderr is every stage's standard error that was not redirected,
	// interleaved as written, up to the limit.
	Stderr          []byte
	StderrTruncated bool
	Duration        time.Duration
	// TimedOut is set when the run's own timeout killed it (or ran out
	// before it started, while its paths were resolved); the output is
	// what reached the pipes until then.
	TimedOut bool
	// Canceled is set when the caller's context ended the run.
	Canceled bool
	// MemoryLimitHit is set when the kernel OOM-killed a task of the run.
	MemoryLimitHit bool
	// MissingOperands are path operands that did not exist; the tools were
	// given them (or a name that cannot exist) and reported it themselves.
	MissingOperands []string
	// TaskLimitHit is set when a fork in the run failed because of the
	// task limit; the output may then be incomplete even with exit code 0.
	TaskLimitHit bool
}

// StageResult is how one stage ended.
type StageResult struct {
	Program string
	PID     int
	// ExitCode is the exit status, or -1 when the stage was signalled.
	ExitCode int
	// Signal is the signal name when the stage was killed, e.g. "SIGKILL".
	Signal   string
	Duration time.Duration
}

// Errors returned by Run. They are wrapped with the specifics; test with
// errors.Is. Each means nothing was started.
var (
	// ErrInvalid is a malformed request.
	ErrInvalid = errors.New("invalid request")
	// ErrLimit is a request beyond the run's limits.
	ErrLimit = errors.New("limit exceeded")
	// ErrPathRefused is a path operand that failed resolution or judging.
	ErrPathRefused = errors.New("path refused")
	// ErrBusy means the concurrent-run limit and its queue are full.
	ErrBusy = errors.New("too many commands running")
	// ErrStart means an approved pipeline could not be started.
	ErrStart = errors.New("start failed")
	// ErrClosed means the runner was closed.
	ErrClosed = errors.New("runner closed")
	// ErrNotInstalled means a stage's program does not exist on this host.
	ErrNotInstalled = errors.New("not installed on this host")
)

// NotInstalledError names the program that is missing; it matches
// ErrNotInstalled.
type NotInstalledError struct {
	Program string
	Err     error
}

func (e *NotInstalledError) Error() string {
	return fmt.Sprintf("%s: %v", e.Program, ErrNotInstalled)
}

// Is makes errors.Is(err, ErrNotInstalled) true, and ErrInvalid too: a
// launch of a missing program is an invalid request to the launcher (the
// broker answers a command's missing program as a shell would).
func (e *NotInstalledError) Is(target error) bool {
	return target == ErrNotInstalled || target == ErrInvalid
}

// Unwrap returns the lookup error.
func (e *NotInstalledError) Unwrap() error { return e.Err }

// Spec is one program for the launcher to start (StartAttached,
// StartDetached, Output): the same launch as a pipeline stage, with the
// caller's descriptors.
type Spec struct {
	// Path is the program's absolute, clean path. As root it must be a
	// file no other account can replace.
	Path string
	// Argv is the program's argv; empty means {Path}.
	Argv []string
	// Env is the whole environment; nil means the launcher's fixed one
	// (PATH and LANG only). Nothing of the broker's is inherited.
	Env []string
	// Stdin, Stdout and Stderr become descriptors 0, 1 and 2; nil is
	// /dev/null. Extra become descriptors 3, 4, ... The caller keeps
	// ownership: it closes its copies once Start returns (the write end
	// of an output pipe, so that reading it reaches EOF).
	Stdin, Stdout, Stderr *os.File
	Extra                 []*os.File
	// RunAs is "" for root, otherwise an existing non-root account.
	RunAs string
	// Limits: Timeout, ChildTasks and ChildMemory apply to the run (zero
	// takes the default); the pipeline limits do not.
	Limits Limits
	// Slot makes the run take one of the runner's concurrent-run slots,
	// waiting in its queue, as a pipeline does; the slot frees when the
	// run ends.
	Slot bool
}

// Exit is how a launched run ended.
type Exit struct {
	// Code is the program's exit status, or -1 when a signal ended it.
	Code int
	// Signal names that signal, e.g. "SIGKILL".
	Signal string
	// Start and End bound the program's life.
	Start, End time.Time
	// TimedOut is set when the run's own deadline (Limits.Timeout) ended it.
	TimedOut bool
	// Killed is set when Kill, the end of an attached run's context, or
	// the runner's Close ended it.
	Killed bool
	// MemoryLimitHit is set when the kernel OOM-killed a task of the run.
	MemoryLimitHit bool
	// TaskLimitHit is set when a fork in the run failed because of the
	// task limit.
	TaskLimitHit bool
}
