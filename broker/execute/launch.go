package execute

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fixedEnv is the whole environment of every child. Nothing is inherited.
var fixedEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}

// procSpec is one process to start. File descriptors are indexes into the
// run's file table (child fd 0 gets Files[0], and so on), so the spec can
// travel to the subreaper helper, which inherits the same table.
type procSpec struct {
	Path  string   `json:"path"`
	Argv  []string `json:"argv"`
	Files []int    `json:"files"`
	// Env is the whole environment; nil means fixedEnv.
	Env  []string  `json:"env,omitempty"`
	Cred *credSpec `json:"cred,omitempty"`
}

// credSpec is the account a stage runs as: uid, primary gid and exactly
// the account's supplementary groups.
type credSpec struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups"`
}

// placement is a cgroup v1 hierarchy the starting thread joins while it
// forks the stages: run is the run cgroup's tasks file, home the one the
// thread returns to.
type placement struct {
	run, home *os.File
}

// startedProc is a stage process and when it began.
type startedProc struct {
	proc *os.Process
	at   time.Time
}

// taintThread pins the calling goroutine to its OS thread for good and sets
// no_new_privs on that thread.
//
// Why a thread and not a helper or a SysProcAttr field: no_new_privs is a
// per-thread flag that a child inherits from the thread that forks it, and
// Go's os/exec has no hook between fork and exec (SysProcAttr has no such
// field). Re-executing a small helper that sets it and then execs would
// cost a Go runtime start per stage, about doubling the cost of a short
// command. So every stage is forked from a starter thread that set the
// flag first. The same thread is what the v1 cgroup placement moves (cgroup
// v1 files take thread ids), and it is the "parent" that Pdeathsig watches.
//
// The goroutine must never call runtime.UnlockOSThread: the flag cannot be
// cleared, and Go terminates a still-locked thread when its goroutine
// exits, so the tainted thread never runs any other goroutine.
func taintThread() error {
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// startStages forks and execs every process of a run from the calling
// thread, which taintThread must have prepared. It is the one place every
// child of the broker is forked from (in the broker, and in the subreaper
// helper), so per-run confinement belongs here, just before the forks:
// what the thread carries (no_new_privs today, a Landlock domain
// tomorrow) every process of the run inherits. Starter threads serve run
// after run, so confinement that differs per run must go on a thread used
// for that run alone (or in the helper, which is per run). The thread sits in the run's v1 cgroups
// while it forks, so each child is born inside them (no window in which a
// child runs, or forks, outside its limits); with cgroupFD >= 0 the child is
// also born in that v2 cgroup (clone3 CLONE_INTO_CGROUP). On error the
// processes already started are returned so the caller can kill and reap
// them.
func startStages(table []*os.File, procs []procSpec, places []placement, cgroupFD int) ([]startedProc, error) {
	// "0" in a v1 tasks file is the writing thread itself. The kernel then
	// moves just this thread without taking the global threadgroup lock,
	// whose write side waits for an RCU grace period: writing our own tid
	// costs milliseconds per run on an idle machine, "0" microseconds.
	const tid = "0"
	for i, p := range places {
		if _, err := p.run.WriteString(tid); err != nil {
			leave(places[:i], tid)
			return nil, fmt.Errorf("%w: join run cgroup: %w", ErrStart, err)
		}
	}
	defer leave(places, tid)
	out := make([]startedProc, 0, len(procs))
	for i, ps := range procs {
		attr, err := procAttr(table, ps, cgroupFD)
		if err != nil {
			return out, fmt.Errorf("%w: stage %d: %w", ErrStart, i+1, err)
		}
		p, err := os.StartProcess(ps.Path, ps.Argv, attr)
		if err != nil {
			return out, fmt.Errorf("%w: stage %d: %w", ErrStart, i+1, err)
		}
		out = append(out, startedProc{proc: p, at: time.Now()})
	}
	return out, nil
}

// leave moves the thread back to its own cgroups. A failure (the home
// cgroup would have to be gone) leaves the starter thread in the run
// cgroup until its next run moves it; removing that run cgroup then fails
// and is logged, and the task limit counts the thread meanwhile.
func leave(places []placement, tid string) {
	for _, p := range places {
		_, _ = p.home.WriteString(tid)
	}
}

func procAttr(table []*os.File, ps procSpec, cgroupFD int) (*os.ProcAttr, error) {
	files := make([]*os.File, len(ps.Files))
	for j, idx := range ps.Files {
		if idx < 0 || idx >= len(table) || table[idx] == nil {
			return nil, fmt.Errorf("file index %d out of range", idx)
		}
		files[j] = table[idx]
	}
	sys := &syscall.SysProcAttr{
		// Own session: no controlling terminal, and no way to signal the
		// broker's process group.
		Setsid:    true,
		Pdeathsig: syscall.SIGKILL,
	}
	if ps.Cred != nil {
		// Groups is set exactly (possibly empty): setgroups, setgid, setuid
		// run in the child before exec.
		sys.Credential = &syscall.Credential{Uid: ps.Cred.UID, Gid: ps.Cred.GID, Groups: append([]uint32{}, ps.Cred.Groups...)}
	}
	if cgroupFD >= 0 {
		sys.UseCgroupFD, sys.CgroupFD = true, cgroupFD
	}
	env := fixedEnv
	if ps.Env != nil {
		env = ps.Env
	}
	return &os.ProcAttr{Dir: "/", Env: env, Files: files, Sys: sys}, nil
}

// starters is a small pool of goroutines, each locked for good to an OS
// thread that set no_new_privs (taintThread). Every process the runner
// starts is forked by one of them. They live as long as the runner, so a
// run pays no thread creation, and Pdeathsig (which fires when the forking
// thread ends) kills the stages only when the runner itself goes away.
type starters struct {
	jobs chan starterJob
	stop chan struct{}
	wg   sync.WaitGroup
}

type starterJob struct {
	fn   func()
	done chan error
}

func newStarters(n int) *starters {
	s := &starters{jobs: make(chan starterJob), stop: make(chan struct{})}
	for range n {
		s.wg.Go(s.loop)
	}
	return s
}

func (s *starters) loop() {
	err := taintThread()
	for {
		select {
		case j := <-s.jobs:
			if err == nil {
				j.fn()
			}
			j.done <- err
		case <-s.stop:
			return // still locked: Go ends the thread with the goroutine
		}
	}
}

// do runs fn on a starter thread and waits for it.
func (s *starters) do(fn func()) error {
	j := starterJob{fn: fn, done: make(chan error, 1)}
	select {
	case s.jobs <- j:
	case <-s.stop:
		return ErrClosed
	}
	return <-j.done
}

// close ends the starters. Processes they forked with Pdeathsig die with
// the threads, so call it only when no run is in progress.
func (s *starters) close() {
	close(s.stop)
	s.wg.Wait()
}
