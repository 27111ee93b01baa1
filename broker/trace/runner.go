package trace

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/nannyai/nannyagent/broker/execute"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// pipeSize is the capacity asked for bpftrace's stdout pipe.
const pipeSize = 1 << 20

// stderrCap bounds what is kept of bpftrace's stderr; the rest is drained.
const stderrCap = 16 << 10

// traceEnv is bpftrace's whole environment: nothing of the broker's leaks
// in, and the limits that shape programs are fixed.
var traceEnv = []string{
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	"LANG=C",
	"LC_ALL=C",
	"BPFTRACE_STRLEN=128",
	"BPFTRACE_MAP_KEYS_MAX=4096",
	"BPFTRACE_CAT_BYTES_MAX=1024",
	"BPFTRACE_NO_USER_SYMBOLS=1",
}

// Launcher starts bpftrace; the broker's execute.Runner is one. Through
// it bpftrace gets a run cgroup with memory and task caps, a deadline and
// no_new_privs, like every child of the broker.
type Launcher interface {
	StartAttached(ctx context.Context, spec execute.Spec) (*execute.Process, error)
}

// Runner runs traces, at most Config.MaxConcurrent at a time; one more is
// refused at once rather than queued.
type Runner struct {
	cfg      Config
	launcher Launcher
	log      *slog.Logger
	// attachHook, when set (by tests), is called once probes are attached.
	attachHook func()
}

// NewRunner checks cfg, fills in its defaults and returns a Runner that
// starts bpftrace through launcher. A nil log means slog.Default().
func NewRunner(cfg Config, launcher Launcher, log *slog.Logger) (*Runner, error) {
	if err := cfg.Check(); err != nil {
		return nil, fmt.Errorf("trace config: %w", err)
	}
	cfg = cfg.withDefaults()
	if !filepath.IsAbs(cfg.BpftracePath) {
		return nil, fmt.Errorf("trace config: bpftrace path %q is not absolute", cfg.BpftracePath)
	}
	if launcher == nil {
		return nil, errors.New("trace config: no launcher")
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Slots == nil {
		cfg.Slots = NewSlots(cfg.MaxConcurrent)
	}
	cfg.Slots.SetLimit(cfg.MaxConcurrent)
	return &Runner{cfg: cfg, launcher: launcher, log: log}, nil
}

// Config returns the configuration in force, defaults filled in.
func (r *Runner) Config() Config { return r.cfg }

// Run validates spec, runs its program and returns the bounded result. A
// refused spec is a normal response with Refused set and the reason in
// Error; a trace that fails is a response with Ok false and bpftrace's own
// words. The error is non-nil only when ctx is already done.
func (r *Runner) Run(ctx context.Context, spec *brokerv1.TraceSpec) (*brokerv1.RunTraceResponse, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("run trace: %w", err)
	}
	plan, err := r.cfg.Plan(spec)
	if err != nil {
		r.log.Info("trace refused", "kind", spec.GetKind().String(), "target", clip(spec.GetTarget(), 200), "reason", err.Error())
		return refused(err), nil
	}
	if limit, ok := r.cfg.Slots.tryAcquire(); !ok {
		err := fmt.Errorf("too many traces running (limit %d); try again when one finishes", limit)
		r.log.Info("trace refused", "kind", kindName(plan.Kind), "target", plan.Target, "reason", err.Error())
		return refused(err), nil
	}
	r.log.Info("trace allowed", "kind", kindName(plan.Kind), "target", plan.Target, "measure", measureName(plan.Measure),
		"probes", plan.Probes, "matched", plan.Matched, "raw", plan.Raw, "duration", plan.Duration)
	defer r.cfg.Slots.release()
	resp := r.execute(ctx, plan)
	bound(resp, r.cfg.OutputCap)
	r.log.Info("trace finished", "kind", kindName(plan.Kind), "target", plan.Target,
		"ok", resp.Ok, "events", resp.Events, "exit_code", resp.ExitCode,
		"duration", resp.Duration.AsDuration(), "output_bytes", resp.OutputBytes)
	return resp, nil
}

func refused(err error) *brokerv1.RunTraceResponse {
	return &brokerv1.RunTraceResponse{Refused: true, Error: clip(err.Error(), 2048), ExitCode: -1}
}

// stdoutResult is what the stdout reader reports when it reaches EOF.
type stdoutResult struct {
	bytes     int64
	truncated bool
	err       error
}

// run is one bpftrace process and how it ended.
type run struct {
	proc       *execute.Process
	exit       execute.Exit
	col        *collector
	out        stdoutResult
	stderr     []byte
	attachedAt time.Time
	stoppedAt  time.Time
	overran    bool
	killed     bool
	reason     string
}

// deadline is the launcher's backstop for one run: everything the runner
// itself allows (attach, the duration, the grace to exit, SIGINT's grace)
// and a second more. The runner's own timers normally end the run first.
func (r *Runner) deadline(plan Plan) time.Duration {
	return r.cfg.StartTimeout + plan.Duration + r.cfg.ExitGrace + r.cfg.KillGrace + time.Second
}

func (r *Runner) execute(ctx context.Context, plan Plan) *brokerv1.RunTraceResponse {
	resp := &brokerv1.RunTraceResponse{Program: plan.Program, ExitCode: -1}
	resp.Warnings = append(resp.Warnings, plan.Warnings...)
	stdout, stdoutW, err := outputPipe()
	if err != nil {
		resp.Error = fmt.Sprintf("start bpftrace: %v", err)
		return resp
	}
	defer stdout.Close()
	stderr, stderrW, err := os.Pipe()
	if err != nil {
		stdoutW.Close()
		resp.Error = fmt.Sprintf("start bpftrace: %v", err)
		return resp
	}
	defer stderr.Close()
	// The run ends with the request, but after the SIGINT that lets
	// bpftrace print its maps (supervise): so it is attached to a context
	// of its own, cancelled when execute returns.
	runCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	// Never --unsafe, -c or -p: the program is the only operand.
	proc, err := r.launcher.StartAttached(runCtx, execute.Spec{
		Path: r.cfg.BpftracePath, Argv: []string{r.cfg.BpftracePath, "-f", "json", "-e", plan.Program},
		Env: traceEnv, Stdout: stdoutW, Stderr: stderrW,
		Limits: execute.Limits{Timeout: r.deadline(plan), ChildMemory: r.cfg.ChildMemory, ChildTasks: r.cfg.ChildTasks},
	})
	// Our copies of the write ends must go, or the reads never reach EOF.
	stdoutW.Close()
	stderrW.Close()
	if err != nil {
		resp.Error = fmt.Sprintf("start bpftrace: %v", err)
		return resp
	}
	attached := make(chan struct{})
	var once sync.Once
	col := newCollector(r.cfg.SampleLimit, r.cfg.MapEntryLimit, !plan.Raw, func() { once.Do(func() { close(attached) }) })
	ru := &run{proc: proc, col: col}
	outDone := make(chan stdoutResult, 1)
	go func() {
		n, trunc, err := readLines(stdout, r.cfg.MaxRecordBytes, col.line)
		outDone <- stdoutResult{bytes: n, truncated: trunc, err: err}
	}()
	errDone := make(chan []byte, 1)
	go func() { errDone <- readCapped(stderr, stderrCap) }()

	r.supervise(ctx, plan, ru, attached, outDone, errDone)
	exit, waitErr := proc.Wait(context.Background())
	ru.exit = exit
	r.judge(plan, ru, waitErr, resp)
	return resp
}

// supervise waits for bpftrace to finish, interrupting it when it does not
// attach in time, overruns its duration or the caller gives up: SIGINT
// first so it prints its maps, then the whole run is killed after
// KillGrace. It returns once both output streams are closed.
func (r *Runner) supervise(ctx context.Context, plan Plan, ru *run, attached <-chan struct{}, outDone <-chan stdoutResult, errDone <-chan []byte) {
	startTimer := time.NewTimer(r.cfg.StartTimeout)
	defer startTimer.Stop()
	var deadline, killC <-chan time.Time
	var deadlineTimer, killTimer *time.Timer
	defer func() {
		if deadlineTimer != nil {
			deadlineTimer.Stop()
		}
		if killTimer != nil {
			killTimer.Stop()
		}
	}()
	interrupted := false
	interrupt := func(reason string) {
		if reason != "" && ru.reason == "" {
			ru.reason = reason
		}
		if interrupted {
			return
		}
		interrupted = true
		ru.stoppedAt = time.Now()
		_ = ru.proc.Signal(syscall.SIGINT)
		killTimer = time.NewTimer(r.cfg.KillGrace)
		killC = killTimer.C
	}
	done := ctx.Done()
	outOpen, errOpen := true, true
	for outOpen || errOpen {
		select {
		case ru.out = <-outDone:
			outOpen = false
		case ru.stderr = <-errDone:
			errOpen = false
		case <-attached:
			attached = nil
			ru.attachedAt = time.Now()
			if r.attachHook != nil {
				r.attachHook()
			}
			startTimer.Stop()
			// The program exits by itself; give it room first.
			deadlineTimer = time.NewTimer(plan.Duration + r.cfg.ExitGrace)
			deadline = deadlineTimer.C
		case <-startTimer.C:
			interrupt(fmt.Sprintf("bpftrace did not attach its probes within %s", r.cfg.StartTimeout))
		case <-deadline:
			deadline = nil
			ru.overran = true
			interrupt("")
		case <-done:
			done = nil
			interrupt(fmt.Sprintf("trace cancelled: %v", ctx.Err()))
		case <-killC:
			killC = nil
			ru.killed = true
			ru.proc.Kill()
		}
	}
}

// judge fills the response from how the run ended and what it printed.
func (r *Runner) judge(plan Plan, ru *run, waitErr error, resp *brokerv1.RunTraceResponse) {
	col := ru.col
	resp.Duration = durationpb.New(traced(plan, ru))
	resp.ExitCode = int32(ru.exit.Code)
	stderrLines := lines(ru.stderr)
	for _, l := range stderrLines {
		resp.Warnings = append(resp.Warnings, clip(l, maxWarningBytes))
	}
	resp.Warnings = append(resp.Warnings, col.warnings...)
	if col.warnDropped > 0 {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("%d more warnings left out", col.warnDropped))
	}
	if ru.out.truncated {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("output lines longer than %d bytes were skipped", r.cfg.MaxRecordBytes))
	}
	if ru.overran {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("bpftrace overran its %s duration and was interrupted", plan.Duration))
	}
	resp.AttachedProbes = col.attached
	for _, name := range col.order {
		resp.Maps = append(resp.Maps, col.maps[name])
	}
	resp.Samples, resp.SamplesDropped = col.samples, col.dropped
	resp.Events = col.printfs
	switch {
	case col.events != nil:
		resp.Events = *col.events
	case !plan.Raw && col.sawAttach:
		resp.Warnings = append(resp.Warnings, "bpftrace did not print its maps: the event count covers only the printed sample")
	}
	resp.LostEvents = col.lost
	resp.OutputBytes = ru.out.bytes
	resp.Truncated = ru.out.truncated || col.truncated
	resp.Overran = ru.overran

	var problems []string
	if ru.reason != "" {
		problems = append(problems, ru.reason)
	}
	if ru.killed {
		problems = append(problems, fmt.Sprintf("bpftrace did not exit within %s of SIGINT and was killed", r.cfg.KillGrace))
	}
	if ru.exit.MemoryLimitHit {
		problems = append(problems, fmt.Sprintf("bpftrace exceeded its memory limit (%d bytes) and was killed", r.cfg.ChildMemory))
	}
	if ru.exit.TimedOut {
		problems = append(problems, fmt.Sprintf("bpftrace outlived its %s deadline and was killed", r.deadline(plan)))
	}
	if waitErr != nil {
		problems = append(problems, fmt.Sprintf("wait for bpftrace: %v", waitErr))
	}
	if ru.out.err != nil {
		problems = append(problems, fmt.Sprintf("read bpftrace output: %v", ru.out.err))
	}
	words := bpftraceWords(stderrLines, plan.Program)
	switch {
	case resp.ExitCode > 0 && words != "":
		problems = append(problems, words)
	case resp.ExitCode > 0:
		problems = append(problems, fmt.Sprintf("bpftrace exited with status %d", resp.ExitCode))
	case resp.ExitCode == 0 && !col.sawAttach:
		problems = append(problems, "bpftrace exited without attaching any probe"+suffix(words))
	case resp.ExitCode < 0 && len(problems) == 0:
		problems = append(problems, "bpftrace was killed by "+signalName(ru.exit)+suffix(words))
	}
	resp.Error = clip(strings.Join(problems, ": "), 2048)
	resp.Ok = resp.Error == ""
}

// traced is how long the probes were attached: until the program's own
// exit (its duration), or until bpftrace was interrupted. Printing maps and
// detaching after that do not count.
func traced(plan Plan, ru *run) time.Duration {
	if ru.attachedAt.IsZero() {
		return 0
	}
	end := ru.stoppedAt
	if end.IsZero() {
		end = time.Now()
	}
	d := end.Sub(ru.attachedAt)
	if !ru.overran && d > plan.Duration {
		d = plan.Duration
	}
	return d.Round(time.Millisecond)
}

func signalName(exit execute.Exit) string {
	if exit.Signal == "" {
		return "an unknown cause"
	}
	return exit.Signal
}

func suffix(words string) string {
	if words == "" {
		return ""
	}
	return ": " + words
}

// bpftraceWords is bpftrace's explanation of a failure: its stderr without
// the RLIMIT_MEMLOCK notice it prints on every run, without the echo of the
// program and without the ~~~ markers under it.
func bpftraceWords(stderr []string, program string) string {
	echo := map[string]bool{}
	for _, l := range strings.Split(program, "\n") {
		if t := strings.TrimSpace(l); t != "" {
			echo[t] = true
		}
	}
	var keep []string
	for _, l := range stderr {
		t := strings.TrimSpace(l)
		switch {
		case t == "", strings.Contains(t, "RLIMIT_MEMLOCK"), echo[t], strings.Trim(t, "~ ") == "":
			continue
		}
		keep = append(keep, t)
	}
	return strings.Join(keep, "; ")
}

func lines(b []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.ToValidUTF8(string(b), "�"), "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return out
}

// outputPipe is bpftrace's stdout, enlarged: bpftrace 0.17 loses all later
// output, maps included, when a SIGINT lands while it is blocked writing to
// a full pipe, so the pipe should rarely be full.
func outputPipe() (*os.File, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	// Best effort: a smaller pipe still works.
	_, _ = unix.FcntlInt(r.Fd(), unix.F_SETPIPE_SZ, pipeSize)
	return r, w, nil
}

// readLines calls fn for each line of r, skipping lines longer than max
// bytes, and returns the bytes read and whether a line was skipped. Memory
// stays within max plus the reader's buffer, whatever r produces.
func readLines(r io.Reader, max int, fn func([]byte)) (int64, bool, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var (
		buf       []byte
		n         int64
		truncated bool
		skipping  bool
	)
	for {
		chunk, err := br.ReadSlice('\n')
		n += int64(len(chunk))
		if !skipping {
			if len(buf)+len(chunk) > max {
				skipping, truncated, buf = true, true, buf[:0]
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == nil:
			if !skipping {
				fn(buf)
			}
			buf, skipping = buf[:0], false
			continue
		}
		if !skipping && len(buf) > 0 {
			fn(buf)
		}
		if errors.Is(err, io.EOF) {
			return n, truncated, nil
		}
		return n, truncated, err
	}
}

// readCapped keeps the first limit bytes of r and drains the rest.
func readCapped(r io.Reader, limit int64) []byte {
	b, _ := io.ReadAll(io.LimitReader(r, limit))
	_, _ = io.Copy(io.Discard, r)
	return b
}
