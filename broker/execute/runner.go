package execute

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Containment selects how a run's process tree is held and killed.
type Containment int

const (
	// ContainAuto uses a cgroup v2 cgroup per run with cgroup.kill where
	// the kernel offers it, and the subreaper helper otherwise.
	ContainAuto Containment = iota
	// ContainSubreaper always uses the per-run subreaper helper (cgroup v1
	// memory and pids caps still apply where mounted).
	ContainSubreaper
)

// Config sets up a Runner. Zero fields take the documented defaults.
type Config struct {
	// MaxConcurrent caps runs in progress (default 4, at most 64).
	MaxConcurrent int
	// MaxQueued caps runs waiting for a slot (default 16); a run beyond
	// it is refused at once with ErrBusy. Negative means no queue.
	MaxQueued int
	// Containment picks the kill path (default ContainAuto).
	Containment Containment
	// CgroupName is the directory, under the broker's own cgroup in each
	// hierarchy, that holds the run cgroups (default "nannyagent-exec").
	CgroupName string
	// KillGrace bounds each wait after a kill: for the tree to vanish, for
	// output pipes to close, for the helper to report (default 2s).
	KillGrace time.Duration
	// DrainGrace is how long a pipeline killed by its timeout may take to
	// pass on what its stages buffered, once the first stage is killed
	// (default 300ms, at most KillGrace).
	DrainGrace time.Duration
	// HelperPath is the binary re-executed as the subreaper helper
	// (default /proc/self/exe); its main must call HelperMain.
	HelperPath string
	// OwnCgroup says whether the broker moves into a leaf cgroup of its
	// own (see OwnCgroup); the default leaves it where it is.
	OwnCgroup OwnCgroup
	// Logger receives warnings about cleanup; default slog.Default().
	Logger *slog.Logger
	// Landlock confines every run where the kernel has it (default
	// LandlockAuto); LandlockOff is for tests of the option tables alone.
	Landlock LandlockMode
}

const (
	defaultMaxConcurrent = 4
	hardMaxConcurrent    = 64
	defaultMaxQueued     = 16
	defaultCgroupName    = "nannyagent-exec"
	defaultKillGrace     = 2 * time.Second
	defaultDrainGrace    = 300 * time.Millisecond
	// maxSpareCgroups bounds the run cgroups prepared ahead of time.
	maxSpareCgroups = 2
	// maxStarters bounds the threads that fork stages.
	maxStarters = 4
)

// Info says how runs are contained; see Proto for brokerv1.CgroupInfo.
type Info struct {
	// Layout is the host's cgroup layout: "unified" (cgroup v2 only),
	// "hybrid" (v2 and v1 controllers), "legacy" (v1 only) or "none".
	Layout string
	// Subreaper is true when runs are killed through the subreaper helper
	// rather than cgroup.kill.
	Subreaper bool
	// V2Kill is true when runs are killed with cgroup v2's cgroup.kill;
	// V2Path is the directory holding the run cgroups.
	V2Kill bool
	V2Path string
	// MemoryController and PidsController say whether the memory and task
	// caps are enforced (from cgroup v2 or v1, whichever has them).
	MemoryController bool
	PidsController   bool
	// Confinement says whether runs are confined by Landlock.
	Confinement ConfinementInfo
	// OwnCgroup is the broker's own leaf cgroup (cgroup2, or the v1
	// memory hierarchy's), "" when it did not move into one.
	OwnCgroup string
}

// Runner runs approved pipelines. It is safe for concurrent use.
type Runner struct {
	cfg       Config
	log       *slog.Logger
	devNull   *os.File
	layout    cgroupLayout
	cg        *cgroups
	janitor   *cgroupJanitor
	starters  *starters
	subreaper bool
	gate      *gate
	confine   confinement
	leaf      ownLeaf
	// detached counts detached runs not yet over.
	detached atomic.Int64

	base   context.Context
	cancel context.CancelFunc
	// stuck counts preparations abandoned at their deadline and still
	// blocked in a system call.
	stuck  atomic.Int64
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup

	// Test hooks: after path resolution, before anything starts; and with
	// the stage pids once they run.
	beforeLaunch func()
	afterStart   func(pids []int)
}

// New detects the cgroup layout, creates the runner's parent cgroups,
// removes run cgroups a dead broker left behind, and, on the subreaper
// path, checks that the helper mode answers.
func New(cfg Config) (*Runner, error) {
	cfg = cfg.withDefaults()
	layout, err := detectLayout()
	if err != nil {
		cfg.Logger.Warn("cgroup layout unknown; runs get no cgroup limits", "err", err)
	}
	leaf, err := moveToLeaf(layout, cfg.OwnCgroup, cfg.Logger)
	if err != nil {
		return nil, err
	}
	devNull, err := os.OpenFile("/dev/null", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/null: %w", err)
	}
	cg, err := setupCgroups(layout, leaf, cfg.CgroupName, cfg.Containment != ContainSubreaper, cfg.Logger)
	if err != nil {
		devNull.Close()
		return nil, err
	}
	base, cancel := context.WithCancel(context.Background())
	r := &Runner{
		cfg: cfg, log: cfg.Logger, devNull: devNull, layout: layout, cg: cg, subreaper: cg.v2Parent == "", leaf: leaf,
		gate: newGate(cfg.MaxConcurrent, cfg.MaxQueued), base: base, cancel: cancel,
		starters: newStarters(min(cfg.MaxConcurrent, maxStarters)),
		confine:  newConfinement(cfg.Landlock),
	}
	if !r.confine.enabled() {
		r.log.Warn("runs are not confined by Landlock; the policy's option tables are the only wall", "reason", r.confine.why)
	}
	if r.subreaper {
		if err := r.pingHelper(); err != nil {
			cancel()
			r.starters.close()
			cg.close()
			devNull.Close()
			return nil, fmt.Errorf("subreaper helper %s does not answer (does main call execute.HelperMain?): %w", cfg.HelperPath, err)
		}
	}
	r.janitor = newJanitor(cg, min(cfg.MaxConcurrent, maxSpareCgroups), cfg.KillGrace, cfg.Logger)
	return r, nil
}

func (c Config) withDefaults() Config {
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = defaultMaxConcurrent
	}
	c.MaxConcurrent = min(c.MaxConcurrent, hardMaxConcurrent)
	if c.MaxQueued == 0 {
		c.MaxQueued = defaultMaxQueued
	}
	c.MaxQueued = max(c.MaxQueued, 0)
	if c.CgroupName == "" || strings.ContainsAny(c.CgroupName, "/\x00") || c.CgroupName == "." || c.CgroupName == ".." {
		c.CgroupName = defaultCgroupName
	}
	if c.KillGrace <= 0 {
		c.KillGrace = defaultKillGrace
	}
	if c.DrainGrace <= 0 {
		c.DrainGrace = defaultDrainGrace
	}
	c.DrainGrace = min(c.DrainGrace, c.KillGrace)
	if c.HelperPath == "" {
		c.HelperPath = "/proc/self/exe"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Info reports the containment in force.
func (r *Runner) Info() Info {
	return Info{
		Layout:           r.layout.kind(),
		Subreaper:        r.subreaper,
		V2Kill:           r.cg.v2Parent != "",
		V2Path:           r.cg.v2Parent,
		MemoryController: r.cg.v2Ctl["memory"] || r.cg.v1Parent["memory"] != "",
		PidsController:   r.cg.v2Ctl["pids"] || r.cg.v1Parent["pids"] != "",
		Confinement: ConfinementInfo{Landlock: r.confine.enabled(), ABI: r.confine.abi,
			Denies: r.confine.denies(), Reason: r.confine.why},
		OwnCgroup: cmp.Or(r.leaf.v2, r.leaf.v1["memory"]),
	}
}

// Close kills runs in progress, waits for them and removes the runner's
// parent cgroups.
func (r *Runner) Close() error {
	r.mu.Lock()
	already := r.closed
	r.closed = true
	r.mu.Unlock()
	if already {
		return nil
	}
	r.cancel()
	r.wg.Wait()
	r.starters.close()
	r.janitor.close()
	r.cg.close()
	return r.devNull.Close()
}

// SetMaxConcurrent changes how many runs that take a slot go at once
// (pipelines, and Specs with Slot), and lets as many again wait; it takes
// effect at once for waiting runs, and as runs end when it shrinks.
func (r *Runner) SetMaxConcurrent(n int) {
	n = min(max(n, 1), hardMaxConcurrent)
	r.gate.resize(n, n)
}

// Run checks req against the limits, resolves its path operands, runs the
// pipeline and returns how it ended. An error means the pipeline did not
// run (see the Err* values); a run that started always yields a Result,
// also when it timed out or was canceled.
func (r *Runner) Run(ctx context.Context, req Request) (*Result, error) {
	if err := r.enter(); err != nil {
		return nil, err
	}
	defer r.wg.Done()

	lim := req.Limits.effective()
	if err := checkShape(req.Stages, lim); err != nil {
		return nil, err
	}
	if err := checkStages(req.Stages, req.Judge); err != nil {
		return nil, err
	}
	if err := r.gate.acquire(ctx); err != nil {
		return nil, err
	}
	defer r.gate.release()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("not started: %w", err)
	}
	return r.runAdmitted(ctx, req, lim)
}

// runAdmitted runs a request that holds a slot. Its timer starts now and
// covers every step: looking up the programs, resolving and opening the
// path operands (a hung mount blocks there, not in the tool), starting
// and running the stages.
func (r *Runner) runAdmitted(ctx context.Context, req Request, lim Limits) (*Result, error) {
	start := time.Now()
	runCtx, stop := context.WithTimeout(ctx, lim.Timeout)
	defer stop()
	stages, cleanup, err := r.prepareBounded(runCtx, req)
	if errors.Is(err, errPrepareDeadline) {
		res := &Result{ExitCode: -1, Duration: time.Since(start), TimedOut: ctx.Err() == nil, Canceled: ctx.Err() != nil,
			Stderr: fmt.Appendf(nil, "nannyagent: the %s limit ran out before the command started, while its programs and paths were looked up (a file system that does not answer?)\n", lim.Timeout)}
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	defer cleanup()
	if r.beforeLaunch != nil {
		r.beforeLaunch()
	}
	pl, err := buildPlan(stages, r.devNull)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p, err := r.launch(launchSpec{table: pl.table, procs: pl.procs, closeChild: pl.closeChildSide, limits: lim, stop: ctx.Done(),
		deadline: start.Add(lim.Timeout), confine: !inspectsProcesses(req.Stages), writes: writesOf(req.Stages), drain: true})
	if err != nil {
		closeFiles(pl.stdout, pl.stderr)
		return nil, err
	}
	stdout := startCapture(pl.stdout, lim.StdoutBytes)
	stderr := startCapture(pl.stderr, lim.StderrBytes)
	<-p.Done()
	stdout.wait(r.cfg.KillGrace)
	stderr.wait(r.cfg.KillGrace)
	if p.err != nil {
		return nil, p.err
	}
	res := &Result{
		Stdout: stdout.buf, StdoutTruncated: stdout.truncated,
		Stderr: stderr.buf, StderrTruncated: stderr.truncated,
		Duration: p.over.Sub(p.start), TimedOut: p.exit.TimedOut, Canceled: p.exit.Killed,
		// Read always: the OOM victim or the refused fork may belong to a
		// descendant, while every stage exits 0.
		MemoryLimitHit: p.exit.MemoryLimitHit, TaskLimitHit: p.exit.TaskLimitHit,
	}
	for i, e := range p.ends {
		res.Stages = append(res.Stages, stageResult(pl.programs[i], e))
	}
	res.ExitCode = res.Stages[len(res.Stages)-1].ExitCode
	for _, st := range stages {
		res.MissingOperands = append(res.MissingOperands, st.missing...)
	}
	r.log.Debug("command ran", "programs", pl.programs, "exit", res.ExitCode, "duration", res.Duration, "timed_out", res.TimedOut)
	return res, nil
}

// errPrepareDeadline: the run's time ran out while it was being prepared.
var errPrepareDeadline = errors.New("deadline while preparing")

// maxStuckPrepares bounds preparations left behind by their deadline and
// still blocked in the kernel (a hung mount): past it, new runs are
// refused rather than piling up threads.
const maxStuckPrepares = 16

// prepareBounded looks up the programs and resolves and opens the path
// operands under ctx. The system calls cannot be interrupted, so when ctx
// ends first the preparation is left to finish on its own and close what
// it opened; the slot is released at once.
func (r *Runner) prepareBounded(ctx context.Context, req Request) ([]preparedStage, func(), error) {
	if n := r.stuck.Load(); n >= maxStuckPrepares {
		return nil, nil, fmt.Errorf("%w: %d earlier commands are still blocked looking up their files", ErrBusy, n)
	}
	type prepared struct {
		stages  []preparedStage
		cleanup func()
		err     error
	}
	done := make(chan prepared, 1)
	go func() {
		var p prepared
		p.err = checkPrograms(req.Stages)
		if p.err == nil {
			p.stages, p.cleanup, p.err = prepare(req)
		}
		done <- p
	}()
	select {
	case p := <-done:
		return p.stages, p.cleanup, p.err
	case <-ctx.Done():
	}
	r.stuck.Add(1)
	go func() {
		defer r.stuck.Add(-1)
		if p := <-done; p.err == nil {
			p.cleanup()
		}
	}()
	return nil, nil, errPrepareDeadline
}

func checkPrograms(stages []Stage) error {
	for i, st := range stages {
		if err := checkProgram(st.Program); err != nil {
			var ni *NotInstalledError
			if errors.As(err, &ni) {
				return err
			}
			return fmt.Errorf("stage %d: %w", i+1, err)
		}
	}
	return nil
}

// inspectsProcesses reports whether a stage reads other processes' open
// files: the stages share one Landlock domain, which would hide them.
func inspectsProcesses(stages []Stage) bool {
	return slices.ContainsFunc(stages, func(st Stage) bool { return st.InspectsProcesses })
}

// writesOf collects the places the stages may write beneath.
func writesOf(stages []Stage) []string {
	var out []string
	for _, st := range stages {
		out = append(out, st.Writes...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// starter returns how this run's processes are started: on a pooled
// starter thread, or, when runs are confined, on a fresh thread inside the
// run's own Landlock domain (one start only; release ends the thread once
// the run is over).
func (r *Runner) starter(confine bool, writes []string) (start func(func()) error, release func(), err error) {
	if !confine || !r.confine.enabled() {
		return r.starters.do, func() {}, nil
	}
	fd, err := r.confine.ruleset(writes)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	endThread := func() {}
	start = func(fn func()) error {
		if fd < 0 {
			return fmt.Errorf("%w: a confined run starts once", ErrStart)
		}
		rel, err := confinedDo(fd, fn)
		unix.Close(fd) // the thread has entered the domain (or failed)
		fd, endThread = -1, rel
		return err
	}
	release = func() {
		if fd >= 0 {
			unix.Close(fd) // never started
		}
		endThread()
	}
	return start, release, nil
}

// stageEnd is how one stage process ended.
type stageEnd struct {
	pid        int
	status     syscall.WaitStatus
	start, end time.Time
}

func stageResult(program string, e stageEnd) StageResult {
	sr := StageResult{Program: program, PID: e.pid, Duration: e.end.Sub(e.start)}
	switch {
	case e.status.Signaled():
		sr.ExitCode, sr.Signal = -1, unix.SignalName(e.status.Signal())
	default:
		sr.ExitCode = e.status.ExitStatus()
	}
	return sr
}

// drain ends a pipeline whose time is up so that what it already produced
// reaches the caller: the first stage is killed, so each later stage reads
// EOF, writes out what it buffered and exits in turn; whatever is still
// running after the drain grace is killed with the whole run. A lone
// stage is killed at once (what it wrote is already in the pipe).
func (r *Runner) drain(cg *runCgroup, procs []startedProc, allDone <-chan struct{}) {
	if len(procs) > 1 {
		_ = procs[0].proc.Kill()
		select {
		case <-allDone:
		case <-time.After(r.cfg.DrainGrace):
		}
	}
	r.killAll(cg, procs)
}

// prepare resolves and opens every path operand and looks up the accounts.
// cleanup closes what prepare opened that the plan did not take.
func prepare(req Request) (_ []preparedStage, cleanup func(), err error) {
	var opened []*os.File
	closeOpened := func() { closeFiles(opened...) }
	defer func() {
		if err != nil {
			closeOpened()
		}
	}()
	accounts := map[string]*credSpec{}
	out := make([]preparedStage, 0, len(req.Stages))
	for i, st := range req.Stages {
		ps := preparedStage{Stage: st, argv: slices.Clone(st.Argv)}
		if st.RunAs != "" {
			if ps.cred, err = lookupAccount(st.RunAs, accounts); err != nil {
				return nil, nil, fmt.Errorf("stage %d: %w", i+1, err)
			}
		}
		for _, op := range st.Paths {
			f, arg, err := operand(op, req.Judge, 3+len(ps.files))
			if errors.Is(err, errMissingOperand) {
				ps.missing = append(ps.missing, op.Path)
				err = nil
			}
			if err != nil {
				return nil, nil, fmt.Errorf("stage %d: %w", i+1, err)
			}
			ps.argv[op.Index] = op.Prefix + arg
			if f != nil {
				opened = append(opened, f)
				ps.files = append(ps.files, f)
			}
		}
		out = append(out, ps)
	}
	return out, closeOpened, nil
}

// operand resolves one path operand. OpenFD returns the opened file and
// its /dev/fd name in the child (child descriptor fd).
//
// OpenCheckOnly returns the path as written, and the tool walks it itself.
// It must be the written path: these tools print what they are given (ls -l
// of /etc/localtime shows the link, not its target). Every link on the way
// was judged and sits in a directory only root may write, so only root
// could swap it. What remains is the window between the check and the
// tool's own walk, in which whoever may write a directory on the path could
// replace a file with a link: the tool would then report the other
// object's metadata. That is accepted for these tools only because they
// print names and metadata (stat/ls/du report sizes and modes, find lists
// names), never contents: every tool that reads contents (wc included)
// gets a descriptor instead; and because the policy allows none of them an
// option that follows links on its own (ls -L and -H, stat -L, du -L and
// -D, find -L, -H, -follow and -xtype are refused), so a planted link is
// shown as a link, never followed. Walking tools (find, du) must see the
// tree as it is while they walk it, so there is no single object to pin.
//
// OpenDevice returns the device's own path: the tool opens it and picks
// its method from the name (smartctl's /dev/nvme* versus /dev/sd*). Only
// a path whose every directory is root's alone qualifies, so nobody else
// can swap the node before the tool opens it.
//
// A path that does not exist is handed to the tool, so the model reads the
// tool's own "No such file" and exit status and the rest of the pipeline
// still runs. Where only root can change the directories walked, that is
// the path as written; elsewhere someone could create the name in the
// window before the tool looks, so the tool gets a descriptor name that
// cannot be open in it (/dev/fd/1023) and fails the same way.
func operand(op PathOperand, judge PathJudge, fd int) (*os.File, string, error) {
	r, err := resolvePath(op.Path, op.Roots, judge)
	var miss *missingError
	if errors.As(err, &miss) {
		if miss.stable {
			return nil, op.Path, errMissingOperand
		}
		return nil, fdArg(missingFD), errMissingOperand
	}
	if err != nil {
		return nil, "", err
	}
	defer r.file.Close()
	switch op.Open {
	case OpenCheckOnly:
		return nil, op.Path, nil
	case OpenDevice:
		if err := checkDevice(op, r); err != nil {
			return nil, "", err
		}
		return nil, r.path, nil
	}
	f, err := openForRead(r)
	if err != nil {
		return nil, "", err
	}
	return f, fdArg(fd), nil
}

// errMissingOperand marks an operand that does not exist and goes to the
// tool as it is (with its argv element still set).
var errMissingOperand = errors.New("no such file")

// missingFD is a descriptor number no stage has open: "/dev/fd/1023"
// names nothing in the child, so opening it fails with ENOENT.
const missingFD = 1023

// checkDevice requires a block device (or a character device where the
// operand allows it) in directories only root can change.
func checkDevice(op PathOperand, r *resolved) error {
	kind := r.stat.Mode & unix.S_IFMT
	switch {
	case kind == unix.S_IFBLK:
	case kind == unix.S_IFCHR && op.CharDevices:
	default:
		what := "a block device"
		if op.CharDevices {
			what = "a block or character device"
		}
		return fmt.Errorf("%w: %s is not %s", ErrPathRefused, op.Path, what)
	}
	if !r.stable {
		return fmt.Errorf("%w: %s: %s sits in a directory a non-root account can change", ErrPathRefused, op.Path, r.path)
	}
	return nil
}
