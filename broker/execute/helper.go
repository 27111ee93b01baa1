package execute

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The subreaper path. Where cgroup v2's cgroup.kill is missing (or the
// path is forced), each run gets its own supervisor: the broker binary
// re-executed in helper mode. The helper makes itself a child subreaper
// (PR_SET_CHILD_SUBREAPER), forks the stages and reaps everything. A
// descendant that double-forks or calls setsid is orphaned to the nearest
// subreaper, which is this run's helper and nothing else, so concurrent
// runs never see each other's orphans and the broker process itself stays
// out of it (a process-wide subreaper in the broker would collect the
// orphans of every other child it ever starts). When the stages are done,
// or the broker asks, the helper stops and kills every descendant it can
// find through /proc until it has no child left, then reports.

// helperArg0 marks the helper mode in argv[0].
const helperArg0 = "nannyagent-execute-helper"

// Descriptors the helper inherits.
const (
	helperFDControl = 3 // spec (JSON), then killByte or EOF means "kill"
	helperFDResult  = 4 // JSON messages back to the broker
	helperFDTable   = 5 // the run's file table, in order
)

// helperSpec is what the broker sends the helper.
type helperSpec struct {
	Procs  []procSpec    `json:"procs"`
	Files  int           `json:"files"`
	Places []helperPlace `json:"places"`
}

// helperPlace names a v1 cgroup's run and home tasks files in the table.
type helperPlace struct {
	Run  int `json:"run"`
	Home int `json:"home"`
}

// helperMsg is one message from the helper: the stages' pids once they
// run (or why they could not all start), then the outcome.
type helperMsg struct {
	Started    []int       `json:"started,omitempty"`
	StartError string      `json:"start_error,omitempty"`
	Done       *helperDone `json:"done,omitempty"`
}

type helperDone struct {
	Stages []helperStage `json:"stages"`
	Error  string        `json:"error,omitempty"`
}

type helperStage struct {
	PID    int    `json:"pid"`
	Status uint32 `json:"status"`
	Start  int64  `json:"start"`
	End    int64  `json:"end"`
}

// IsHelper reports whether this process was started as the run supervisor
// helper. The broker's main must check it before anything else.
func IsHelper() bool {
	return len(os.Args) == 1 && os.Args[0] == helperArg0
}

// HelperMain runs the supervisor helper and exits the process. Call it
// first thing in main when IsHelper is true:
//
//	if execute.IsHelper() {
//		execute.HelperMain()
//	}
func HelperMain() {
	code := helperMain()
	// exit_group directly: the helper has nothing to flush, and os.Exit in
	// a race-enabled build would first sleep for a second.
	unix.Exit(code)
}

func helperMain() int {
	res := os.NewFile(helperFDResult, "result")
	ctl := os.NewFile(helperFDControl, "control")
	if res == nil || ctl == nil {
		return 2
	}
	// The inherited descriptors lack close-on-exec; without it every stage
	// would inherit the result pipe and could forge the outcome.
	for fd := helperFDControl; fd < helperFDTable; fd++ {
		unix.CloseOnExec(fd)
	}
	enc := json.NewEncoder(res)
	fail := func(err error) int {
		_ = enc.Encode(helperMsg{Done: &helperDone{Error: err.Error()}})
		return 1
	}
	dec := json.NewDecoder(ctl)
	var spec helperSpec
	if err := dec.Decode(&spec); err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	table, places, err := spec.files()
	if err != nil {
		return fail(err)
	}
	kill := make(chan struct{})
	signals := make(chan unix.Signal, 4)
	go func() {
		defer close(kill)
		readControl(io.MultiReader(dec.Buffered(), ctl), signals)
	}()
	return supervise(spec, table, places, kill, signals, enc)
}

// readControl returns when the broker asks for the kill (killByte) or goes
// away (EOF), and passes on the signals it asks for (signalByte and the
// signal's number). The newline after the spec is skipped.
func readControl(r io.Reader, signals chan<- unix.Signal) {
	b := make([]byte, 1)
	for {
		if _, err := r.Read(b); err != nil || b[0] == killByte {
			return
		}
		if b[0] != signalByte {
			continue
		}
		if _, err := io.ReadFull(r, b); err != nil {
			return
		}
		select {
		case signals <- unix.Signal(b[0]):
		default: // signals pile up only if the run ignores them
		}
	}
}

// Control bytes: killByte asks the helper to kill the run; signalByte,
// followed by a signal number, to signal the first process.
const (
	killByte   = 'k'
	signalByte = 's'
)

// files maps the spec's table onto inherited descriptors after checking
// every index, and marks them close-on-exec.
func (s helperSpec) files() ([]*os.File, []placement, error) {
	if s.Files < 0 || s.Files > 4096 {
		return nil, nil, fmt.Errorf("bad file count %d", s.Files)
	}
	table := make([]*os.File, s.Files)
	for i := range table {
		unix.CloseOnExec(helperFDTable + i)
		table[i] = os.NewFile(uintptr(helperFDTable+i), "inherited")
		if table[i] == nil {
			return nil, nil, fmt.Errorf("descriptor %d missing", helperFDTable+i)
		}
	}
	var places []placement
	for _, p := range s.Places {
		if p.Run < 0 || p.Run >= len(table) || p.Home < 0 || p.Home >= len(table) {
			return nil, nil, fmt.Errorf("bad cgroup placement %+v", p)
		}
		places = append(places, placement{run: table[p.Run], home: table[p.Home]})
	}
	return table, places, nil
}

// supervise starts the stages, reaps every descendant, kills what is left
// once the stages are done or kill closes, and reports.
func supervise(spec helperSpec, table []*os.File, places []placement, kill <-chan struct{}, signals <-chan unix.Signal, enc *json.Encoder) int {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return failDone(enc, fmt.Errorf("become subreaper: %w", err))
	}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	defer signal.Stop(sigchld)
	if err := taintThread(); err != nil {
		return failDone(enc, err)
	}
	procs, startErr := startStages(table, spec.Procs, places, -1)
	closeFiles(table...)
	done := helperDone{Stages: make([]helperStage, len(procs))}
	index := map[int]int{}
	pids := make([]int, len(procs))
	for i, p := range procs {
		done.Stages[i] = helperStage{PID: p.proc.Pid, Start: p.at.UnixNano()}
		index[p.proc.Pid] = i
		pids[i] = p.proc.Pid
	}
	started := helperMsg{Started: pids}
	if startErr != nil {
		started.StartError = startErr.Error()
	}
	_ = enc.Encode(started)
	reapAll(&done, index, startErr != nil, sigchld, kill, signals)
	_ = enc.Encode(helperMsg{Done: &done})
	return 0
}

func failDone(enc *json.Encoder, err error) int {
	_ = enc.Encode(helperMsg{Done: &helperDone{Error: err.Error()}})
	return 1
}

// reapAll reaps children until none is left. Killing starts when the
// stages have all exited (stragglers must not outlive the run), when the
// broker asks, or at once when a stage failed to start.
func reapAll(done *helperDone, index map[int]int, killing bool, sigchld <-chan os.Signal, kill <-chan struct{}, signals <-chan unix.Signal) {
	self := os.Getpid()
	left := len(index)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	spins := 0
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL, nil)
			if err == unix.EINTR {
				continue
			}
			if err == unix.ECHILD {
				return // no child, hence no descendant, is left
			}
			if err != nil || pid <= 0 {
				break
			}
			if i, ok := index[pid]; ok {
				done.Stages[i].Status, done.Stages[i].End = uint32(ws), time.Now().UnixNano()
				left--
			}
		}
		if left == 0 {
			killing = true
		}
		// With nothing alive left, what remains are zombies to reap now;
		// re-check at once instead of waiting for the next tick.
		if killing && killTree(self) == 0 && spins < 100 {
			spins++
			continue
		}
		spins = 0
		select {
		case <-sigchld:
		case <-kill:
			killing, kill = true, nil
		case sig := <-signals:
			// Only this process reaps, so the first stage's pid cannot
			// have been reused while its end is unrecorded.
			if len(done.Stages) > 0 && done.Stages[0].End == 0 {
				_ = unix.Kill(done.Stages[0].PID, sig)
			}
		case <-tick.C:
		}
	}
}

// helperProc is the broker's side of one helper. One goroutine owns the
// control pipe: it writes the spec, then signals and the kill byte as
// asked, so they can never arrive in the wrong order.
type helperProc struct {
	proc     *os.Process
	msgs     chan helperMsg
	kill     chan struct{}       // closed to ask for the kill
	signals  chan syscall.Signal // signals for the first process
	finished chan struct{}       // closed when the helper is gone
	wrote    chan struct{}       // closed when the control writer is done
}

// startHelper starts the helper with the run's file table and sends it the
// spec. The caller's thread must be tainted (taintThread): the helper and
// thus every stage inherit no_new_privs from it.
func startHelper(path string, nul *os.File, table []*os.File, spec helperSpec) (*helperProc, error) {
	ctlR, ctlW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("helper pipe: %w", err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		closeFiles(ctlR, ctlW)
		return nil, fmt.Errorf("helper pipe: %w", err)
	}
	files := append([]*os.File{nul, nul, os.Stderr, ctlR, resW}, table...)
	p, err := os.StartProcess(path, []string{helperArg0}, &os.ProcAttr{
		Dir: "/", Env: fixedEnv, Files: files,
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	closeFiles(ctlR, resW)
	if err != nil {
		closeFiles(ctlW, resR)
		return nil, fmt.Errorf("%w: start helper %s: %w", ErrStart, path, err)
	}
	h := &helperProc{proc: p, msgs: make(chan helperMsg, 2), signals: make(chan syscall.Signal),
		kill: make(chan struct{}), finished: make(chan struct{}), wrote: make(chan struct{})}
	go h.writeControl(ctlW, spec)
	go func() {
		defer close(h.msgs)
		defer resR.Close()
		dec := json.NewDecoder(resR)
		for {
			var m helperMsg
			if err := dec.Decode(&m); err != nil {
				return
			}
			h.msgs <- m
		}
	}()
	return h, nil
}

func (h *helperProc) writeControl(ctlW *os.File, spec helperSpec) {
	defer close(h.wrote)
	defer ctlW.Close()
	if err := json.NewEncoder(ctlW).Encode(spec); err != nil {
		return // the helper is gone; it reports nothing and finish says so
	}
	for {
		select {
		case sig := <-h.signals:
			if _, err := ctlW.Write([]byte{signalByte, byte(sig)}); err != nil {
				return
			}
		case <-h.kill:
			_, _ = ctlW.Write([]byte{killByte})
			<-h.finished
			return
		case <-h.finished:
			return
		}
	}
}

// signal asks the helper to send sig to the first process.
func (h *helperProc) signal(sig syscall.Signal) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("signal %d out of range", sig)
	}
	select {
	case h.signals <- sig:
		return nil
	case <-h.wrote:
		return os.ErrProcessDone
	}
}

// waitStarted waits for the helper to report the processes it started;
// the error says why not all of them started (the helper then kills the
// rest and reports, see finish).
func (h *helperProc) waitStarted() ([]int, error) {
	m, ok := <-h.msgs
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: run supervisor ended without reporting its start", ErrStart)
	case m.StartError != "":
		return m.Started, fmt.Errorf("%w: %s", ErrStart, strings.TrimPrefix(m.StartError, ErrStart.Error()+": "))
	case m.Done != nil:
		return nil, fmt.Errorf("%w: %s", ErrStart, m.Done.Error)
	}
	return m.Started, nil
}

// finish waits for the helper's outcome, asks it to kill the run when stop
// closes (killed reports that), and kills the helper itself if it does not
// finish within grace after that (lastResort then cleans up what it can).
func (h *helperProc) finish(stop <-chan struct{}, grace time.Duration, lastResort func()) (done *helperDone, killed bool, err error) {
	var graceC <-chan time.Time
	for msgs := h.msgs; msgs != nil; {
		select {
		case m, ok := <-msgs:
			if !ok {
				msgs = nil
				continue
			}
			if m.Done != nil {
				done = m.Done
			}
		case <-stop:
			stop, killed = nil, true
			close(h.kill)
			graceC = time.After(grace)
		case <-graceC:
			graceC = nil
			_ = h.proc.Kill()
			lastResort()
		}
	}
	state, werr := h.proc.Wait()
	close(h.finished)
	<-h.wrote
	if done == nil {
		return nil, killed, fmt.Errorf("run supervisor ended without a result (%v): %w", state, errors.Join(werr, errNoResult))
	}
	return done, killed, nil
}

var errNoResult = errors.New("no result from helper")
