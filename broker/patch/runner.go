package patch

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RunnerCommand is the hidden subcommand of nannyagent-broker that carries
// out one patch run when the broker itself does not start the interpreter:
// in a transient systemd unit (where the run must outlive the broker), and
// for every run inside a container (push, exec, remove). It re-checks the
// sealed script against its sha256 before anything runs, writes the run's
// output and outcome into the run's directory, and exits 0 once that
// outcome is on disk.
const RunnerCommand = "patch-run"

// IsRunner reports whether a command line (os.Args[1:]) asks for the
// runner.
func IsRunner(args []string) bool { return len(args) > 0 && args[0] == RunnerCommand }

// resultFile is the runner's outcome in the run's directory.
const resultFile = "result.json"

// runnerResult is what the runner writes when the run is over.
type runnerResult struct {
	// Started: the script was started (for a container: pushed and
	// started with pct exec). False with Error set: nothing ran.
	Started  bool   `json:"started"`
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
	// TimedOut: systemd stopped the unit at its RuntimeMaxSec (the
	// policy's patch_max_runtime). Stopped: it was stopped earlier, by
	// someone.
	TimedOut        bool      `json:"timed_out,omitempty"`
	Stopped         bool      `json:"stopped,omitempty"`
	StdoutTruncated bool      `json:"stdout_truncated,omitempty"`
	StderrTruncated bool      `json:"stderr_truncated,omitempty"`
	Error           string    `json:"error,omitempty"`
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at"`
}

// runnerOptions is the runner's command line.
type runnerOptions struct {
	scriptFD    int
	sha256      string
	dir         string
	outputBytes int64
	timeout     time.Duration
	env         []string
	pct         string
	vmid        string
	dest        string
	argv        []string
}

type envFlag []string

func (e *envFlag) String() string { return strings.Join(*e, " ") }
func (e *envFlag) Set(v string) error {
	if !strings.Contains(v, "=") || strings.IndexByte(v, 0) >= 0 {
		return fmt.Errorf("%q is not NAME=VALUE", v)
	}
	*e = append(*e, v)
	return nil
}

func parseRunner(args []string, stderr io.Writer) (runnerOptions, error) {
	var o runnerOptions
	var env envFlag
	fs := flag.NewFlagSet(RunnerCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.scriptFD, "script-fd", -1, "descriptor of the sealed script")
	fs.StringVar(&o.sha256, "sha256", "", "the script's sha256")
	fs.StringVar(&o.dir, "dir", "", "the run's directory (output and outcome)")
	fs.Int64Var(&o.outputBytes, "output-bytes", 0, "bytes kept of each of stdout and stderr")
	fs.DurationVar(&o.timeout, "timeout", 0, "the run's RuntimeMaxSec: a stop after it is the timeout")
	fs.Var(&env, "env", "NAME=VALUE of the run's whole environment (repeated)")
	fs.StringVar(&o.pct, "pct", "", "pct, for a container run")
	fs.StringVar(&o.vmid, "vmid", "", "the container, for a container run")
	fs.StringVar(&o.dest, "dest", "", "where the script is pushed in the container")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.env, o.argv = env, fs.Args()
	switch {
	case o.scriptFD < 0:
		return o, errors.New("no --script-fd")
	case !validSum(o.sha256):
		return o, fmt.Errorf("--sha256 %q is not a sha256", clip(o.sha256))
	case !filepath.IsAbs(o.dir):
		return o, fmt.Errorf("--dir %q is not an absolute path", clip(o.dir))
	case o.outputBytes <= 0:
		return o, errors.New("--output-bytes must be positive")
	case len(o.argv) == 0 || !path.IsAbs(o.argv[0]):
		return o, errors.New("no command, or its program is not an absolute path")
	}
	if o.vmid != "" || o.pct != "" || o.dest != "" {
		if !ValidVMID(o.vmid) || !path.IsAbs(o.pct) || !path.IsAbs(o.dest) || path.Clean(o.dest) != o.dest {
			return o, errors.New("a container run needs --pct (absolute), --vmid (digits) and --dest (a clean absolute path)")
		}
	}
	return o, nil
}

// RunnerMain runs the runner with its arguments (after RunnerCommand) and
// returns its exit status: 0 once the outcome is in the run's directory,
// 2 when it could not be written (the broker then records the run
// interrupted).
func RunnerMain(args []string, stderr io.Writer) int {
	// A stop (RuntimeMaxSec, systemctl stop) signals the whole unit: the
	// runner stays to record what became of the script.
	stops := make(chan os.Signal, 1)
	signal.Notify(stops, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer func() {
		// After Stop nothing sends on stops: closing it ends the
		// goroutine that watches it.
		signal.Stop(stops)
		close(stops)
	}()
	o, err := parseRunner(args, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "nannyagent-broker %s: %v\n", RunnerCommand, err)
		return 2
	}
	r := newRun(o, stops)
	res := r.run()
	r.out.close()
	res.StdoutTruncated, res.StderrTruncated = r.out.stdout.truncated, r.out.stderr.truncated
	if err := writeResult(o.dir, res); err != nil {
		fmt.Fprintf(stderr, "nannyagent-broker %s: %v\n", RunnerCommand, err)
		return 2
	}
	return 0
}

func writeResult(dir string, res runnerResult) error {
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode the run's outcome: %w", err)
	}
	return writeAtomic(dir, resultFile, append(data, '\n'))
}

// run is one runner's work.
type run struct {
	o      runnerOptions
	script *os.File
	out    *outputFiles
	start  time.Time

	mu      sync.Mutex
	stopped time.Time
}

func newRun(o runnerOptions, stops <-chan os.Signal) *run {
	r := &run{o: o, script: os.NewFile(uintptr(o.scriptFD), "script"), start: time.Now()}
	go func() {
		for range stops {
			r.mu.Lock()
			if r.stopped.IsZero() {
				r.stopped = time.Now()
			}
			r.mu.Unlock()
		}
	}()
	return r
}

func (r *run) run() (res runnerResult) {
	res.StartedAt = r.start
	defer func() { res.FinishedAt = time.Now() }()
	out, err := openOutput(r.o.dir, r.o.outputBytes)
	if err != nil {
		// Without output files there is still the outcome.
		res.Error = err.Error()
		r.out = &outputFiles{stdout: &cappedFile{}, stderr: &cappedFile{}}
		return res
	}
	r.out = out
	if r.script == nil {
		res.Error = fmt.Sprintf("descriptor %d is not open", r.o.scriptFD)
		return res
	}
	// The bytes that run are the sealed bytes the broker checked: the
	// seals are checked again, and the hash.
	if err := verifySealed(r.script, r.o.sha256); err != nil {
		res.Error = "the sealed script failed its check in the runner: " + err.Error()
		return res
	}
	if r.o.vmid == "" {
		r.exec(&res, r.o.argv, r.out.stdout, r.out.stderr, r.script)
		return res
	}
	r.container(&res)
	return res
}

// container pushes the checked bytes into the container, runs them there
// and removes them, whatever the script did.
func (r *run) container(res *runnerResult) {
	var push runnerResult
	r.exec(&push, []string{r.o.pct, "push", r.o.vmid, "/dev/fd/3", r.o.dest}, r.out.stderr, r.out.stderr, r.script)
	if !push.Started || push.ExitCode != 0 || push.Signal != "" {
		res.Error = fmt.Sprintf("the script could not be pushed into container %s (pct push %s): %s", r.o.vmid, describeEnd(push), push.Error)
		res.Error = strings.TrimSuffix(res.Error, ": ")
		res.Stopped, res.TimedOut = push.Stopped, push.TimedOut
		return
	}
	r.exec(res, append([]string{r.o.pct, "exec", r.o.vmid, "--"}, r.o.argv...), r.out.stdout, r.out.stderr, nil)
	var rm runnerResult
	r.exec(&rm, []string{r.o.pct, "exec", r.o.vmid, "--", "/bin/rm", "-f", "--", r.o.dest}, r.out.stderr, r.out.stderr, nil)
	if !rm.Started || rm.ExitCode != 0 || rm.Signal != "" {
		note := fmt.Sprintf("the pushed script %s could not be removed from container %s (%s)", r.o.dest, r.o.vmid, describeEnd(rm))
		res.Error = strings.TrimPrefix(res.Error+"; "+note, "; ")
	}
}

func describeEnd(x runnerResult) string {
	switch {
	case !x.Started:
		return "not started"
	case x.Signal != "":
		return "killed by " + x.Signal
	}
	return "exit status " + strconv.Itoa(x.ExitCode)
}

// exec runs argv with stdin /dev/null, the fixed environment and, when
// script is set, the sealed script as descriptor 3.
func (r *run) exec(res *runnerResult, argv []string, stdout, stderr io.Writer, script *os.File) {
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Env: r.o.env, Dir: "/", Stdout: stdout, Stderr: stderr,
		// A grandchild that keeps the output open does not hold the
		// outcome back once the program exited.
		WaitDelay: 5 * time.Second}
	if script != nil {
		cmd.ExtraFiles = []*os.File{script}
	}
	if err := cmd.Start(); err != nil {
		res.Error = "could not start " + argv[0] + ": " + err.Error()
		return
	}
	res.Started = true
	err := cmd.Wait()
	res.ExitCode = cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		res.ExitCode, res.Signal = -1, ws.Signal().String()
	}
	if err != nil && !errors.As(err, new(*exec.ExitError)) && !errors.Is(err, exec.ErrWaitDelay) {
		res.Error = err.Error()
	}
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if !stopped.IsZero() {
		// systemd's RuntimeMaxSec counts from the unit's start, a little
		// before the runner's.
		if r.o.timeout > 0 && stopped.Sub(r.start) >= r.o.timeout-time.Second {
			res.TimedOut = true
		} else {
			res.Stopped = true
		}
	}
}

// outputFiles are the run's stdout and stderr files, each capped.
type outputFiles struct {
	stdout, stderr *cappedFile
}

func openOutput(dir string, limit int64) (*outputFiles, error) {
	o := &outputFiles{}
	for name, dst := range map[string]**cappedFile{stdoutFile: &o.stdout, stderrFile: &o.stderr} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			o.close()
			return nil, fmt.Errorf("open the run's %s file: %w", name, err)
		}
		*dst = &cappedFile{f: f, limit: limit}
	}
	return o, nil
}

func (o *outputFiles) close() {
	for _, c := range []*cappedFile{o.stdout, o.stderr} {
		if c != nil && c.f != nil {
			_ = c.f.Sync()
			c.f.Close()
		}
	}
}

// cappedFile keeps the first limit bytes written and drops the rest, so a
// program never blocks on its output.
type cappedFile struct {
	mu        sync.Mutex
	f         *os.File
	limit, n  int64
	truncated bool
}

func (c *cappedFile) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := p
	if room := c.limit - c.n; int64(len(keep)) > room {
		keep, c.truncated = keep[:max(room, 0)], true
	}
	if len(keep) > 0 && c.f != nil {
		n, err := c.f.Write(keep)
		c.n += int64(n)
		if err != nil {
			// A full disk must not stop the script; what was lost is
			// marked.
			c.truncated = true
		}
	}
	return len(p), nil
}

// readResult reads the runner's outcome from a run's directory;
// fs.ErrNotExist when the runner left none.
func readResult(dir string) (runnerResult, error) {
	var res runnerResult
	data, err := readCapped(filepath.Join(dir, resultFile), maxRecordBytes)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(data, &res); err != nil {
		return res, fmt.Errorf("decode %s: %w", resultFile, err)
	}
	return res, nil
}

// ValidVMID accepts a Proxmox guest id: 1-9 digits, no leading zero.
func ValidVMID(s string) bool {
	if s == "" || len(s) > 9 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
