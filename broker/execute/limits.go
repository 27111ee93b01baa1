package execute

import (
	"fmt"
	"path"
	"strings"
	"time"
)

// Limits bound one run. A zero field takes the DefaultLimits value. There
// is no second cap here: the broker passes the policy's limits, which the
// policy already holds to its hard caps, and they are what is enforced.
type Limits struct {
	// Timeout is the run's deadline, counted from its start.
	Timeout time.Duration
	// StdoutBytes and StderrBytes cap the captured output of a pipeline;
	// the rest is read and discarded so the writer never blocks, and the
	// result is marked truncated.
	StdoutBytes int
	StderrBytes int
	// MaxStages caps the stages of a pipeline.
	MaxStages int
	// MaxArgs caps the argv elements of one stage, the program included.
	MaxArgs int
	// MaxArgBytes caps the bytes of one stage's arguments, the program
	// excluded: the program is the policy's path, not the request's word,
	// so counting it could refuse what the policy allowed.
	MaxArgBytes int
	// ChildTasks caps the tasks (processes and threads) alive in the run.
	ChildTasks int
	// ChildMemory caps the run's memory in bytes.
	ChildMemory int64
}

// DefaultLimits apply where a Request or Spec leaves a limit at zero.
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

// effective fills in the defaults.
func (l Limits) effective() Limits {
	l.Timeout = orDefault(l.Timeout, DefaultLimits.Timeout)
	l.StdoutBytes = orDefault(l.StdoutBytes, DefaultLimits.StdoutBytes)
	l.StderrBytes = orDefault(l.StderrBytes, DefaultLimits.StderrBytes)
	l.MaxStages = orDefault(l.MaxStages, DefaultLimits.MaxStages)
	l.MaxArgs = orDefault(l.MaxArgs, DefaultLimits.MaxArgs)
	l.MaxArgBytes = orDefault(l.MaxArgBytes, DefaultLimits.MaxArgBytes)
	l.ChildTasks = orDefault(l.ChildTasks, DefaultLimits.ChildTasks)
	l.ChildMemory = orDefault(l.ChildMemory, DefaultLimits.ChildMemory)
	return l
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

// maxPathLen bounds a path operand and every path composed from links.
const maxPathLen = 4096

// checkShape refuses a request whose size is beyond the limits, before any
// element is looked at closely, so a huge request costs little. It counts
// as the policy does (see Limits), so it never refuses what the policy
// allowed.
func checkShape(stages []Stage, lim Limits) error {
	if len(stages) == 0 {
		return fmt.Errorf("%w: no stages", ErrInvalid)
	}
	if len(stages) > lim.MaxStages {
		return fmt.Errorf("%w: %d stages, at most %d", ErrLimit, len(stages), lim.MaxStages)
	}
	for i, st := range stages {
		if len(st.Argv) > lim.MaxArgs {
			return fmt.Errorf("%w: stage %d has %d arguments, at most %d", ErrLimit, i+1, len(st.Argv), lim.MaxArgs)
		}
		total := 0
		for _, a := range st.Argv[min(1, len(st.Argv)):] {
			total += len(a)
			if total > lim.MaxArgBytes {
				return fmt.Errorf("%w: stage %d: arguments exceed %d bytes", ErrLimit, i+1, lim.MaxArgBytes)
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
