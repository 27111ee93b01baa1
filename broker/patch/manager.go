package patch

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Launcher starts a process whose lifetime is not tied to any request: the
// broker's one launcher in its detached mode (own cgroup with memory and
// task caps, a deadline, the whole tree killed at the end, stdin
// /dev/null, captured output).
type Launcher interface {
	Launch(Spec) (Process, error)
}

// Spec is one detached launch.
type Spec struct {
	// Program is the absolute path of the interpreter; Argv[0] equals it.
	Program string
	Argv    []string
	// Env is the whole environment.
	Env []string
	// Files become descriptors 3, 4, ...; the launcher duplicates them,
	// so the caller closes its own after Launch returns.
	Files []*os.File
	// Timeout kills the whole tree; OutputBytes caps each of stdout and
	// stderr; MemoryBytes and Tasks cap the tree.
	Timeout     time.Duration
	OutputBytes int64
	MemoryBytes int64
	Tasks       int
}

// Process is a launched run.
type Process interface {
	// Wait blocks until the run is over.
	Wait() Exit
	// Kill ends the whole tree; Wait then returns.
	Kill()
}

// Exit is how a launched run ended.
type Exit struct {
	// StartErr is set when the process never started; nothing else is.
	StartErr error
	// Lost is set when the launcher lost track of a started run (its
	// supervision failed): its outcome is unknown.
	Lost error
	// Code is the exit status, -1 when a signal ended it (Signal).
	Code            int
	Signal          string
	Stdout, Stderr  []byte
	StdoutTruncated bool
	StderrTruncated bool
	// TimedOut: the timeout killed it. Killed: Kill (or the launcher's
	// shutdown) did.
	TimedOut       bool
	Killed         bool
	MemoryLimitHit bool
	TaskLimitHit   bool
	Duration       time.Duration
	// Detached: the broker stopped watching a run that goes on in its own
	// unit; nothing is recorded, and the next broker finds it again.
	Detached bool
	// Note is what the runner adds for an operator (a pushed script that
	// could not be removed).
	Note string
}

// detacher is a Process that can go on without the broker (a run in its
// own unit): at the broker's stop it is detached, not killed.
type detacher interface{ Detach() }

// Config sets up a Manager.
type Config struct {
	// StateDir holds the runs' records (root-only; created if missing).
	StateDir string
	// Launcher starts the runs.
	Launcher Launcher
	// Hold is called when a run starts; the function it returns when the
	// run is over (the broker stays up while a run goes on). Optional.
	Hold func() (release func())
	// Keep is how many finished records are kept (default 200).
	Keep int
	// MaxOutputBytes bounds what Result reads back of each output file
	// (default 64 MiB, the policy's hard cap).
	MaxOutputBytes int64
	Log            *slog.Logger
	// Now is the clock for records (default time.Now).
	Now func() time.Time
	// Runner is the command line that starts the runner (the broker's
	// own binary and RunnerCommand). Runs in units and in containers
	// need it.
	Runner []string
	// Units, when set, starts every run in a transient systemd unit of
	// its own (systemd is PID 1); Launcher is then unused.
	Units UnitLauncher
}

// Status is what Start did.
type Status struct {
	// State of the run: Running when it started now; the record's state
	// when the operation had run (or started) before.
	State State
	// Existing is true when the operation already had a run and nothing
	// new was started.
	Existing bool
	// Argv is what runs (or ran).
	Argv []string
}

// Manager starts patch runs one at a time and keeps their records.
type Manager struct {
	cfg   Config
	store *store
	log   *slog.Logger

	mu      sync.Mutex
	active  *activeRun
	closing bool
	// watched are the runs being waited for, by operation: the active
	// one, and any other found running in its unit after a restart.
	watched map[string]Process
	wg      sync.WaitGroup
}

type activeRun struct {
	op   string
	proc Process
}

// New opens and locks the state directory and marks runs a previous broker
// process left "running" as interrupted: they died with that process.
func New(cfg Config) (*Manager, error) {
	if cfg.Launcher == nil {
		return nil, errors.New("patch manager: no launcher")
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 200
	}
	if cfg.MaxOutputBytes <= 0 {
		cfg.MaxOutputBytes = 64 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := openStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, store: st, log: cfg.Log, watched: map[string]Process{}}
	// One listing serves both: every activation of a socket-activated
	// broker comes through here. A run recovered now is pruned at a later
	// start, when the listing shows it finished.
	recs, errs := m.store.list()
	for _, err := range errs {
		m.log.Warn("unreadable patch record left alone", "operation_id", "", "error", err.Error())
	}
	m.recoverRuns(recs)
	m.prune(recs)
	return m, nil
}

// ReasonBrokerStopped is the error of a run whose broker process ended
// while the script ran.
const ReasonBrokerStopped = "the broker stopped while the script ran, and the script's processes were killed with it; " +
	"the outcome is unknown: check the host's package state before running it again"

func (m *Manager) recoverRuns(recs []Record) {
	for _, r := range recs {
		// The directory is locked to this manager, which has started
		// nothing yet: every run still "running" belonged to a broker
		// process that has ended. A run in a unit of its own may go on:
		// it is watched again; a child of that broker ended with it.
		if r.State != Running {
			continue
		}
		if r.Unit != "" {
			m.reattach(r)
			continue
		}
		r.State, r.Error, r.ExitCode = Interrupted, ReasonBrokerStopped, -1
		r.FinishedAt = m.cfg.Now()
		if err := m.store.save(r); err != nil {
			m.log.Error("cannot mark an interrupted patch run", "operation_id", r.OperationID, "error", err.Error())
			continue
		}
		m.log.Warn("patch run interrupted by a broker stop", "operation_id", r.OperationID, "broker_pid", r.BrokerPID)
	}
}

// Start runs req's script with the policy's settings s, unless the
// operation has a run already (its status is returned; nothing runs
// twice) or another run is in progress (ErrBusy). The run is detached:
// Start returns once it started, and Result reports it.
func (m *Manager) Start(req Request, s Settings) (Status, error) {
	if err := CheckShape(req, s.ScriptBytes, false); err != nil {
		return Status{}, err
	}
	sum, err := Verify(req.Script, req.SHA256)
	if err != nil {
		return Status{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return Status{}, ErrClosed
	}
	if prev, err := m.store.load(req.OperationID, -1); err == nil || !errors.Is(err, ErrNotFound) {
		if err != nil {
			return Status{}, fmt.Errorf("the run of operation %s has an unreadable record: %w", req.OperationID, err)
		}
		return Status{State: prev.State, Existing: true, Argv: prev.Argv}, nil
	}
	if m.active != nil {
		return Status{}, fmt.Errorf("%w (operation %s); try again when it has finished", ErrBusy, m.active.op)
	}
	pl, err := m.plan(req, sum, s)
	if err != nil {
		return Status{}, err
	}
	sealed, err := sealedCopy(req.OperationID, req.Script)
	if err != nil {
		return Status{}, err
	}
	defer sealed.Close()
	if err := verifySealed(sealed, sum); err != nil {
		return Status{}, err
	}
	argv := pl.argv
	rec := Record{
		OperationID: req.OperationID, SHA256: sum, Name: req.Name, Mode: req.Mode, Exclusions: req.Exclusions, VMID: req.VMID,
		Rule: s.Rule, Argv: argv, Runner: RunnerBroker, BrokerPID: os.Getpid(), State: Running, StartedAt: m.cfg.Now(),
		Limits: recordLimits(s),
	}
	if m.cfg.Units != nil {
		// Named before it starts: a broker that dies right after the
		// start finds the unit again by this name.
		rec.Runner, rec.Unit = RunnerUnit, UnitName(req.OperationID)
	}
	// On disk before anything runs: a crash from here on leaves a record
	// that the next broker marks interrupted, never a run without one.
	if err := m.store.create(rec); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Status{}, fmt.Errorf("operation %s has a run directory but no readable record", req.OperationID)
		}
		return Status{}, fmt.Errorf("record the run: %w", err)
	}
	proc, err := m.launch(rec, pl, sealed, s)
	if err != nil {
		rec.State, rec.ExitCode, rec.Error, rec.FinishedAt = FailedToStart, -1, "the script could not be started: "+err.Error(), m.cfg.Now()
		if serr := m.store.saveOutput(rec); serr != nil {
			m.log.Error("cannot record a failed start", "operation_id", rec.OperationID, "error", serr.Error())
		}
		return Status{State: FailedToStart, Argv: argv}, nil
	}
	m.watch(rec, pl.viaRunner, proc)
	return Status{State: Running, Argv: argv}, nil
}

// watch makes proc the active run and records its end. The caller holds
// m.mu.
func (m *Manager) watch(rec Record, viaRunner bool, proc Process) {
	if m.active == nil {
		m.active = &activeRun{op: rec.OperationID, proc: proc}
	}
	m.watched[rec.OperationID] = proc
	release := func() {}
	if m.cfg.Hold != nil {
		release = m.cfg.Hold()
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer release()
		x := proc.Wait()
		if x.Detached {
			m.detached(rec.OperationID)
			return
		}
		if viaRunner {
			x = m.collect(rec.OperationID, x)
		}
		m.finish(rec, rec.Limits.settings(), x)
	}()
}

// runEnv is a run's whole environment.
func runEnv(path string) []string {
	return []string{"PATH=" + path, "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"}
}

// checkRunPath refuses a PATH with a directory that anyone but root (or
// this process's user) could change: whoever could plant a program there
// would choose what the script runs as root. Missing directories are
// skipped, as a shell would skip them.
func checkRunPath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: the run's PATH is empty", ErrRefused)
	}
	for _, dir := range strings.Split(p, ":") {
		fi, err := os.Stat(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("%w: PATH directory %s: %w", ErrRefused, dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || !ok {
			return fmt.Errorf("%w: PATH entry %s is not a directory", ErrRefused, dir)
		}
		if (st.Uid != 0 && int(st.Uid) != os.Geteuid()) || fi.Mode().Perm()&0o022 != 0 {
			return fmt.Errorf("%w: PATH directory %s can be changed by another account (owner %d, mode %04o); fix it or patches.path",
				ErrRefused, dir, st.Uid, fi.Mode().Perm())
		}
	}
	return nil
}

// finish records how a run ended and frees the slot, under one lock: a
// caller that sees the record finished can start the next run.
func (m *Manager) finish(rec Record, s Settings, x Exit) {
	m.mu.Lock()
	closing := m.closing
	rec.FinishedAt = m.cfg.Now()
	rec.ExitCode, rec.Signal, rec.TimedOut = x.Code, x.Signal, x.TimedOut
	rec.Stdout, rec.Stderr, rec.StdoutTruncated, rec.StderrTruncated = x.Stdout, x.Stderr, x.StdoutTruncated, x.StderrTruncated
	switch {
	case x.StartErr != nil:
		rec.State, rec.ExitCode, rec.Error = FailedToStart, -1, "the script could not be started: "+x.StartErr.Error()
	case x.Killed && closing:
		rec.State, rec.Error = Interrupted, ReasonBrokerStopped
	case x.Lost != nil:
		rec.State, rec.Error = Interrupted, "the broker lost track of the run, so its outcome is unknown: "+x.Lost.Error()
	default:
		rec.State, rec.Error = Finished, exitNote(x, s)
	}
	if x.Note != "" {
		rec.Error = strings.TrimPrefix(rec.Error+"; "+x.Note, "; ")
	}
	if err := m.store.saveOutput(rec); err != nil {
		m.log.Error("cannot record the end of a patch run", "operation_id", rec.OperationID, "error", err.Error())
	}
	if m.active != nil && m.active.op == rec.OperationID {
		m.active = nil
	}
	delete(m.watched, rec.OperationID)
	m.mu.Unlock()
	m.log.Info("patch run ended", "operation_id", rec.OperationID, "state", string(rec.State), "exit_code", rec.ExitCode,
		"timed_out", rec.TimedOut, "duration_ms", x.Duration.Milliseconds())
	recs, _ := m.store.list()
	m.prune(recs)
}

// exitNote explains, for an operator, a run the broker ended or that hit a
// limit; "" for a script that exited on its own.
func exitNote(x Exit, s Settings) string {
	var notes []string
	switch {
	case x.TimedOut:
		notes = append(notes, fmt.Sprintf("the script was stopped after %v (the policy's limits.patch_max_runtime) and all its processes were killed", s.Timeout))
	case x.Killed:
		notes = append(notes, "the run was stopped by the broker")
	case x.Signal != "":
		notes = append(notes, "the script was killed by "+x.Signal)
	}
	if x.MemoryLimitHit {
		notes = append(notes, fmt.Sprintf("a process was killed at the memory limit (limits.patch_child_memory, %d MiB)", s.MemoryBytes>>20))
	}
	if x.TaskLimitHit {
		notes = append(notes, fmt.Sprintf("a process could not start at the task limit (limits.patch_child_tasks, %d)", s.Tasks))
	}
	if x.StdoutTruncated || x.StderrTruncated {
		notes = append(notes, fmt.Sprintf("output beyond %d bytes per stream was dropped (limits.patch_output_bytes)", s.OutputBytes))
	}
	return strings.Join(notes, "; ")
}

// Result returns the run of an operation with its output; ErrNotFound when
// the operation never ran here.
func (m *Manager) Result(op string) (Record, error) {
	if !ValidOperationID(op) {
		return Record{}, fmt.Errorf("%w: operation id %q malformed", ErrInvalid, clip(op))
	}
	return m.store.load(op, m.cfg.MaxOutputBytes)
}

// Active returns the operation id of the run in progress, or "".
func (m *Manager) Active() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active == nil {
		return ""
	}
	return m.active.op
}

// Close stops a run in progress (it is recorded interrupted), waits until
// its record is written and releases the state directory.
func (m *Manager) Close() error {
	m.mu.Lock()
	already := m.closing
	m.closing = true
	for _, proc := range m.watched {
		// A run in a unit of its own goes on without the broker.
		if d, ok := proc.(detacher); ok {
			d.Detach()
		} else {
			proc.Kill()
		}
	}
	m.mu.Unlock()
	m.wg.Wait()
	if already {
		return nil
	}
	if c, ok := m.cfg.Units.(interface{ Close() }); ok {
		c.Close()
	}
	return m.store.close()
}

// prune removes the oldest finished records beyond Keep.
func (m *Manager) prune(recs []Record) {
	var done []Record
	for _, r := range recs {
		if r.State != Running {
			done = append(done, r)
		}
	}
	for i := 0; i < len(done)-m.cfg.Keep; i++ {
		if err := m.store.remove(done[i].OperationID); err != nil {
			m.log.Warn("cannot remove an old patch record", "operation_id", done[i].OperationID, "error", err.Error())
		}
	}
}
