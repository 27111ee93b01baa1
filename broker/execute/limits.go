package execute

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// Limits bound one run. A zero field takes the DefaultLimits value; a value
// above HardLimits is lowered to it.
type Limits struct {
	Timeout time.Duration
	// StdoutBytes and StderrBytes cap the captured output; the rest is read
	// and discarded so the writer never blocks, and the result is marked
	// truncated.
	StdoutBytes int
	StderrBytes int
	// MaxStages caps the stages of a pipeline.
	MaxStages int
	// MaxArgs caps the argv elements of one stage.
	MaxArgs int
	// MaxArgBytes caps the bytes of all argv elements of all stages.
	MaxArgBytes int
	// ChildTasks caps the tasks (processes and threads) alive in the run.
	ChildTasks int
	// ChildMemory caps the run's memory in bytes.
	ChildMemory int64
}

// DefaultLimits apply where a Request leaves a limit at zero.
var DefaultLimits = Limits{
	Timeout:     10 * time.Second,
	StdoutBytes: 256 << 10,
	StderrBytes: 256 << 10,
	MaxStages:   8,
	MaxArgs:     256,
	MaxArgBytes: 128 << 10,
	ChildTasks:  128,
	ChildMemory: 512 << 20,
}

// HardLimits can not be exceeded by any request.
var HardLimits = Limits{
	Timeout:     5 * time.Minute,
	StdoutBytes: 8 << 20,
	StderrBytes: 8 << 20,
	MaxStages:   16,
	MaxArgs:     4096,
	MaxArgBytes: 1 << 20,
	ChildTasks:  4096,
	ChildMemory: 8 << 30,
}

// effective fills defaults and applies the hard caps.
func (l Limits) effective() Limits {
	l.Timeout = pick(l.Timeout, DefaultLimits.Timeout, HardLimits.Timeout)
	l.StdoutBytes = pick(l.StdoutBytes, DefaultLimits.StdoutBytes, HardLimits.StdoutBytes)
	l.StderrBytes = pick(l.StderrBytes, DefaultLimits.StderrBytes, HardLimits.StderrBytes)
	l.MaxStages = pick(l.MaxStages, DefaultLimits.MaxStages, HardLimits.MaxStages)
	l.MaxArgs = pick(l.MaxArgs, DefaultLimits.MaxArgs, HardLimits.MaxArgs)
	l.MaxArgBytes = pick(l.MaxArgBytes, DefaultLimits.MaxArgBytes, HardLimits.MaxArgBytes)
	l.ChildTasks = pick(l.ChildTasks, DefaultLimits.ChildTasks, HardLimits.ChildTasks)
	l.ChildMemory = pick(l.ChildMemory, DefaultLimits.ChildMemory, HardLimits.ChildMemory)
	return l
}

func pick[T int | int64 | time.Duration](v, def, hard T) T {
	if v <= 0 {
		v = def
	}
	return min(v, hard)
}

// maxPathLen bounds a path operand and every path composed from links.
const maxPathLen = 4096

// checkShape refuses a request whose size is beyond the limits, before any
// element is looked at closely, so a huge request costs little.
func checkShape(stages []Stage, lim Limits) error {
	if len(stages) == 0 {
		return fmt.Errorf("%w: no stages", ErrInvalid)
	}
	if len(stages) > lim.MaxStages {
		return fmt.Errorf("%w: %d stages, at most %d", ErrLimit, len(stages), lim.MaxStages)
	}
	total := 0
	for i, st := range stages {
		if len(st.Argv) > lim.MaxArgs {
			return fmt.Errorf("%w: stage %d has %d arguments, at most %d", ErrLimit, i+1, len(st.Argv), lim.MaxArgs)
		}
		for _, a := range st.Argv {
			total += len(a) + 1
			if total > lim.MaxArgBytes {
				return fmt.Errorf("%w: arguments exceed %d bytes", ErrLimit, lim.MaxArgBytes)
			}
		}
	}
	return nil
}

// checkStages validates what the shape check left: programs, argv, path
// operands and redirections.
func checkStages(stages []Stage, judge PathJudge) error {
	for i, st := range stages {
		if err := checkStage(st, judge); err != nil {
			return fmt.Errorf("stage %d: %w", i+1, err)
		}
	}
	return nil
}

func checkStage(st Stage, judge PathJudge) error {
	if !path.IsAbs(st.Program) || path.Clean(st.Program) != st.Program {
		return fmt.Errorf("%w: program %q is not a clean absolute path", ErrInvalid, st.Program)
	}
	if len(st.Argv) == 0 || st.Argv[0] != st.Program {
		return fmt.Errorf("%w: argv[0] must be the program path %q", ErrInvalid, st.Program)
	}
	for _, a := range st.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argument contains a NUL byte", ErrInvalid)
		}
	}
	if st.StderrToNull && st.StderrToStdout {
		return fmt.Errorf("%w: stderr redirected both to /dev/null and to stdout", ErrInvalid)
	}
	seen := map[int]bool{}
	for _, op := range st.Paths {
		if err := checkOperand(st.Argv, op, seen); err != nil {
			return err
		}
	}
	if len(st.Paths) > 0 && judge == nil {
		return fmt.Errorf("%w: path operands without a path judge", ErrInvalid)
	}
	return nil
}

func checkOperand(argv []string, op PathOperand, seen map[int]bool) error {
	if op.Index < 1 || op.Index >= len(argv) {
		return fmt.Errorf("%w: path operand index %d out of range", ErrInvalid, op.Index)
	}
	if seen[op.Index] {
		return fmt.Errorf("%w: path operand index %d given twice", ErrInvalid, op.Index)
	}
	seen[op.Index] = true
	if argv[op.Index] != op.Prefix+op.Path {
		return fmt.Errorf("%w: argv[%d] is not the path operand %q", ErrInvalid, op.Index, op.Prefix+op.Path)
	}
	if op.Path == "" || len(op.Path) > maxPathLen {
		return fmt.Errorf("%w: path operand of length %d", ErrInvalid, len(op.Path))
	}
	if op.Open != OpenFD && op.Open != OpenCheckOnly && op.Open != OpenDevice {
		return fmt.Errorf("%w: path operand %q has no open mode", ErrInvalid, op.Path)
	}
	return nil
}
