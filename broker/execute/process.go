package execute

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The launcher. Every process the broker starts goes through launch: a
// pipeline's stages (Run), and single programs (StartAttached,
// StartDetached, Output) such as bpftrace, pvesh and the probe's checks.
// Each launch gets fresh run cgroups with the memory and task caps, is
// forked from a starter thread that set no_new_privs (startStages, the one
// place every child is forked from), lives under a deadline, and its whole
// process tree, children that called setsid included, is killed and reaped
// before the launch counts as over.
//
// The two modes differ only in what ends a run early. An attached run ends
// with its caller's context (a diagnostic ends with its request); a
// detached run does not, and lives until it exits, reaches its deadline,
// is killed with Kill, or the runner closes (detached runs do not outlive
// the broker process: surviving a broker restart needs a transient systemd
// unit).

// launchSpec is one launch: processes described against a file table, and
// the limits of the run cgroups they are born in.
type launchSpec struct {
	table []*os.File
	procs []procSpec
	// closeChild drops the parent's copies of the children's descriptors
	// once they are started, or failed to start.
	closeChild func()
	limits     Limits
	// stop ends the run when it closes: an attached run's context. A
	// detached run has none.
	stop <-chan struct{}
	// release runs once the run is over (it frees a gate slot).
	release func()
	// deadline, when set, ends the run instead of limits.Timeout counted
	// from the launch (a pipeline's timer starts before its paths are
	// resolved).
	deadline time.Time
	// confine puts the run in its own Landlock domain (diagnostic runs)
	// where the kernel has it; writes are the places it may write.
	confine bool
	writes  []string
	// drain: at the deadline, kill the first process first so later
	// pipeline stages pass on what they buffered.
	drain bool
}

// Process is a run the launcher started and supervises. All its methods
// are safe for concurrent use.
type Process struct {
	r        *Runner
	cg       *runCgroup
	pids     []int
	start    time.Time
	done     chan struct{}
	kill     chan struct{}
	killOnce sync.Once
	signal   func(syscall.Signal) error

	// Set before done closes.
	ends []stageEnd
	exit Exit
	err  error
	over time.Time
}

// Pid is the program's process id (a pipeline's first stage).
func (p *Process) Pid() int { return p.pids[0] }

// Done is closed when the run is over: the program and every process it
// left behind are gone, and its cgroups are released.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits until the run is over, or ctx ends (which only stops the
// waiting), and returns how it ended. The error is ctx's, or says the
// run's supervision failed (its outcome is then unknown).
func (p *Process) Wait(ctx context.Context) (Exit, error) {
	select {
	case <-p.done:
		return p.exit, p.err
	case <-ctx.Done():
		return Exit{}, ctx.Err()
	}
}

// Kill ends the run: every process of its tree is killed at once. The run
// is over when Done closes.
func (p *Process) Kill() { p.killOnce.Do(func() { close(p.kill) }) }

// Signal sends sig to the program itself (a pipeline's first stage), not
// to its children; it fails once the program has exited.
func (p *Process) Signal(sig syscall.Signal) error { return p.signal(sig) }

// enter registers an operation that Close must wait for.
func (r *Runner) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.wg.Add(1)
	return nil
}

// launch starts ls and hands its supervision to a goroutine that Close
// waits for. An error means nothing of the run is left.
func (r *Runner) launch(ls launchSpec) (*Process, error) {
	if err := r.enter(); err != nil {
		ls.closeChild()
		return nil, err
	}
	cg, err := r.janitor.take(ls.limits)
	if err != nil {
		ls.closeChild()
		r.wg.Done()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	p := &Process{r: r, cg: cg, start: time.Now(), done: make(chan struct{}), kill: make(chan struct{})}
	start, endThread, err := r.starter(ls.confine, ls.writes)
	if err != nil {
		ls.closeChild()
		r.janitor.give(cg)
		r.wg.Done()
		return nil, err
	}
	var supervise func() ([]stageEnd, bool, bool, error)
	if r.subreaper {
		supervise, err = p.startViaHelper(ls, start)
	} else {
		supervise, err = p.startInProcess(ls, start)
	}
	ls.closeChild()
	if err != nil {
		r.reap(cg)
		r.janitor.give(cg)
		endThread()
		r.wg.Done()
		return nil, err
	}
	r.notifyStart(p.pids)
	go func() {
		defer r.wg.Done()
		ends, timedOut, killed, err := supervise()
		p.finish(ends, timedOut, killed, err, func() {
			endThread() // the confined starter thread, once nothing of the run is left
			if ls.release != nil {
				ls.release()
			}
		})
	}()
	return p, nil
}

// await waits until finished closes or something ends the run: its
// deadline, its caller's context (attached runs), Kill, or Close.
func (p *Process) await(finished <-chan struct{}, ls launchSpec) (timedOut, killed bool) {
	deadline := p.start.Add(ls.limits.Timeout)
	if !ls.deadline.IsZero() {
		deadline = ls.deadline
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-finished:
	case <-timer.C:
		timedOut = true
	case <-ls.stop:
		killed = true
	case <-p.kill:
		killed = true
	case <-p.r.base.Done():
		killed = true
	}
	return timedOut, killed
}

// finish ends whatever the run left behind, records how it ended and
// releases its cgroups.
func (p *Process) finish(ends []stageEnd, timedOut, killed bool, err error, release func()) {
	p.r.reap(p.cg)
	p.ends, p.err = ends, err
	p.over = time.Now()
	p.exit = Exit{Code: -1, Start: p.start, End: p.over, TimedOut: timedOut, Killed: killed,
		MemoryLimitHit: p.cg.memoryHit(), TaskLimitHit: p.cg.tasksHit()}
	if n := len(ends); n > 0 {
		last := stageResult("", ends[n-1])
		p.exit.Code, p.exit.Signal = last.ExitCode, last.Signal
		p.exit.Start, p.exit.End = ends[0].start, ends[0].end
		for _, e := range ends[1:] {
			if e.end.After(p.exit.End) {
				p.exit.End = e.end
			}
		}
	}
	p.r.janitor.give(p.cg)
	if release != nil {
		release()
	}
	close(p.done)
}

// startInProcess is the cgroup v2 path: the processes are born in the run
// cgroup, and cgroup.kill ends everything in it, however it got detached.
func (p *Process) startInProcess(ls launchSpec, start func(func()) error) (func() ([]stageEnd, bool, bool, error), error) {
	var procs []startedProc
	var err error
	if serr := start(func() {
		procs, err = startStages(ls.table, ls.procs, p.cg.placements(), p.cg.v2FD)
	}); serr != nil {
		err = fmt.Errorf("%w: %w", ErrStart, serr)
	}
	if err != nil {
		p.r.killAll(p.cg, procs)
		for _, sp := range procs {
			_, _ = sp.proc.Wait()
		}
		return nil, err
	}
	for _, sp := range procs {
		p.pids = append(p.pids, sp.proc.Pid)
	}
	// os.Process signals through a pidfd: a recycled pid is never hit.
	p.signal = func(sig syscall.Signal) error { return procs[0].proc.Signal(sig) }
	return func() ([]stageEnd, bool, bool, error) {
		ends := make([]stageEnd, len(procs))
		var wg sync.WaitGroup
		for i, sp := range procs {
			wg.Go(func() {
				state, _ := sp.proc.Wait()
				ends[i] = stageEnd{pid: sp.proc.Pid, start: sp.at, end: time.Now()}
				if state != nil {
					ends[i].status, _ = state.Sys().(syscall.WaitStatus)
				}
			})
		}
		allDone := make(chan struct{})
		go func() {
			wg.Wait()
			close(allDone)
		}()
		timedOut, killed := p.await(allDone, ls)
		switch {
		case timedOut && ls.drain:
			p.r.drain(p.cg, procs, allDone)
		case timedOut || killed:
			p.r.killAll(p.cg, procs)
		}
		<-allDone
		return ends, timedOut, killed, nil
	}, nil
}

func (r *Runner) killAll(cg *runCgroup, procs []startedProc) {
	if err := cg.kill(); err != nil {
		r.log.Error("cgroup.kill failed; killing the stages one by one", "err", err)
		cg.killV1()
	}
	for _, sp := range procs {
		_ = sp.proc.Kill()
	}
}

func (r *Runner) notifyStart(pids []int) {
	if r.afterStart != nil {
		r.afterStart(slices.Clone(pids))
	}
}

// startViaHelper is the subreaper path: a helper process per run starts and
// supervises the processes (see helper.go).
func (p *Process) startViaHelper(ls launchSpec, start func(func()) error) (func() ([]stageEnd, bool, bool, error), error) {
	spec := helperSpec{Procs: ls.procs}
	table := slices.Clone(ls.table)
	for _, pl := range p.cg.placements() {
		spec.Places = append(spec.Places, helperPlace{Run: len(table), Home: len(table) + 1})
		table = append(table, pl.run, pl.home)
	}
	spec.Files = len(table)
	var h *helperProc
	var err error
	if serr := start(func() {
		h, err = startHelper(p.r.cfg.HelperPath, p.r.devNull, table, spec)
	}); serr != nil {
		err = fmt.Errorf("%w: %w", ErrStart, serr)
	}
	if err != nil {
		return nil, err
	}
	pids, startErr := h.waitStarted()
	if startErr != nil {
		// The helper kills what it started and reports; wait for that.
		_, _, _ = h.finish(nil, p.r.cfg.KillGrace, p.cg.killV1)
		return nil, startErr
	}
	p.pids, p.signal = pids, h.signal
	return func() ([]stageEnd, bool, bool, error) {
		stop, finished, awaited := make(chan struct{}), make(chan struct{}), make(chan struct{})
		var timedOut, killed bool
		go func() {
			defer close(awaited)
			if timedOut, killed = p.await(finished, ls); timedOut || killed {
				close(stop)
			}
		}()
		done, _, err := h.finish(stop, p.r.cfg.KillGrace, p.cg.killV1)
		close(finished)
		<-awaited
		if err == nil && done.Error != "" {
			err = fmt.Errorf("%w: %s", ErrStart, done.Error)
		}
		if err != nil {
			return nil, timedOut, killed, err
		}
		ends := make([]stageEnd, len(done.Stages))
		for i, s := range done.Stages {
			ends[i] = stageEnd{pid: s.PID, status: syscall.WaitStatus(s.Status), start: time.Unix(0, s.Start), end: time.Unix(0, max(s.End, s.Start))}
		}
		return ends, timedOut, killed, nil
	}, nil
}

// pingHelper starts the helper with no processes and expects its report.
func (r *Runner) pingHelper() error {
	var h *helperProc
	var err error
	if serr := r.starters.do(func() {
		h, err = startHelper(r.cfg.HelperPath, r.devNull, nil, helperSpec{})
	}); serr != nil {
		return serr
	}
	if err != nil {
		return err
	}
	timeout := make(chan struct{})
	timer := time.AfterFunc(5*time.Second, func() { close(timeout) })
	defer timer.Stop()
	if _, err := h.waitStarted(); err != nil {
		_, _, _ = h.finish(timeout, r.cfg.KillGrace, func() {})
		return err
	}
	done, _, err := h.finish(timeout, r.cfg.KillGrace, func() {})
	if err == nil && done.Error != "" {
		err = errors.New(done.Error)
	}
	return err
}

// reap ends whatever the run left behind (a setsid grandchild that may
// still hold the output pipes) and waits until the run's cgroups are
// empty. On the subreaper path the helper has done this already, and this
// only confirms it.
func (r *Runner) reap(cg *runCgroup) {
	for attempt := 0; cg.populated(); attempt++ {
		if attempt == 2 {
			r.log.Error("run cgroup still populated after kill", "members", cg.members())
			return
		}
		if err := cg.kill(); err != nil || cg.v2Dir == "" {
			cg.killV1()
		}
		if cg.waitEmpty(r.cfg.KillGrace) {
			return
		}
	}
}
