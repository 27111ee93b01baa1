// Package reboot judges and carries out the reboots the backend asks for:
// of the host (`systemctl reboot`) or of an LXC container (`pct reboot
// VMID`). The policy has already said yes when it is asked; it adds the
// guards that depend on the host's state: no reboot while a patch runs or
// another reboot is under way, and, for the host, none before the host has
// been up the policy's min_uptime and none within min_interval of the last
// host reboot the broker started. That last time is kept in the broker's
// own state directory, so the guard holds across broker restarts and host
// reboots: a hostile backend cannot keep the node rebooting.
//
// The commands run through the broker's launcher with the policy's
// timeout, and their exit status is checked; once started, a reboot
// command is not cut short because the caller went away (a pct reboot
// killed midway leaves the container stopped).
package reboot

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/policy"
)

// launcher is the broker's one launcher for every child: its own cgroup,
// caps, a deadline, the whole tree killed with it. *execute.Runner is one.
type launcher interface {
	Output(ctx context.Context, spec execute.Spec, limit int) ([]byte, execute.Exit, error)
}

// PatchActivity says whether a patch run is in progress; the patch
// machinery implements it.
type PatchActivity interface {
	Running() bool
}

// Config configures a Rebooter.
type Config struct {
	// StateDir is the broker's own state directory (0700, the broker's
	// account); the last host reboot is recorded there. Without one, host
	// reboots are refused.
	StateDir string
	// Patches reports patch runs in progress.
	Patches PatchActivity
	// Launcher runs wall, systemctl and pct.
	Launcher launcher
	// Uptime is how long the host has been up (default: sysinfo(2)).
	Uptime func() (time.Duration, error)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// WallTimeout bounds the warning to logged-in users (default 10s).
	WallTimeout time.Duration
}

// Rebooter judges and performs reboots, one at a time.
type Rebooter struct {
	cfg   Config
	state stateDir

	mu   sync.Mutex
	busy string // the reboot id being performed
}

// New builds a Rebooter; it creates the state directory if it is missing.
// A state directory that fails its checks does not stop the broker: host
// reboots are then refused with the reason.
func New(cfg Config) (*Rebooter, error) {
	if cfg.Launcher == nil || cfg.Patches == nil {
		return nil, fmt.Errorf("reboot: a launcher and the patch activity are required")
	}
	if cfg.Uptime == nil {
		cfg.Uptime = sysUptime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.WallTimeout <= 0 {
		cfg.WallTimeout = 10 * time.Second
	}
	r := &Rebooter{cfg: cfg, state: stateDir{path: cfg.StateDir}}
	return r, nil
}

// StateError reports a state directory that the loop guard cannot trust,
// or nil. The broker logs it at start.
func (r *Rebooter) StateError() error { return r.state.ensure() }

// Request is one reboot the worker asks for.
type Request struct {
	// ID is the backend's reboot operation id.
	ID string
	// VMID is the container's vmid; "" for the host.
	VMID string
	// Reason is the operator's reason, for the warning to users.
	Reason string
	// CheckOnly asks whether the reboot would be allowed now.
	CheckOnly bool
}

// Outcome is the answer to a Request.
type Outcome struct {
	// Allowed: the guards let it through (and the command was started,
	// unless CheckOnly).
	Allowed bool
	// Reason says why it was refused or why the command failed.
	Reason string
	// Started: the reboot command exited 0.
	Started bool
	// ExitCode of the reboot command, -1 when it was killed.
	ExitCode int
	// Output is the end of the failed command's output.
	Output string
	// Warned: wall exited 0.
	Warned bool
}

// Command is the argv a reboot runs, the program first.
func Command(rb policy.Reboots, vmid string) []string {
	if vmid == "" {
		return []string{rb.Systemctl, "reboot"}
	}
	return []string{rb.Pct, "reboot", vmid}
}

// Reboot judges req against the guards and, unless it only checks,
// performs it. The policy must already allow it (policy.CheckReboot); rb
// is that policy's reboots section and child its limits on every child
// (tasks, memory; the timeouts are rb's).
func (r *Rebooter) Reboot(ctx context.Context, rb policy.Reboots, child execute.Limits, req Request) Outcome {
	if !ValidID(req.ID) {
		return refused("the reboot id is missing or malformed")
	}
	r.mu.Lock()
	if reason := r.judge(rb, req); reason != "" {
		r.mu.Unlock()
		return refused(reason)
	}
	if req.CheckOnly {
		r.mu.Unlock()
		return Outcome{Allowed: true}
	}
	if req.VMID == "" {
		// Recorded before the command runs: the host may go down at once,
		// and a reboot that failed still counts, so a backend cannot retry
		// a failing reboot in a loop either.
		if err := r.state.write(Record{At: r.cfg.Now(), RebootID: req.ID}); err != nil {
			r.mu.Unlock()
			return refused("cannot record the host reboot for the loop guard: " + err.Error())
		}
	}
	r.busy = req.ID
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.busy = ""
		r.mu.Unlock()
	}()
	return r.perform(context.WithoutCancel(ctx), rb, child, req)
}

// judge returns why req may not run now, or "". r.mu is held.
func (r *Rebooter) judge(rb policy.Reboots, req Request) string {
	if r.busy != "" {
		return fmt.Sprintf("another reboot (%s) is in progress", r.busy)
	}
	if r.cfg.Patches.Running() {
		return "a patch run is in progress; reboots wait until it has finished"
	}
	if req.VMID != "" {
		return ""
	}
	up, err := r.cfg.Uptime()
	if err != nil {
		return "cannot read the host's uptime for the boot guard: " + err.Error()
	}
	if up < rb.MinUptime {
		return fmt.Sprintf("the host has been up only %s; the policy allows a host reboot once it has been up %s (min_uptime)",
			up.Round(time.Second), rb.MinUptime)
	}
	last, ok, err := r.state.last()
	if err != nil {
		return "the record of the last host reboot cannot be trusted, so host reboots are refused until an operator fixes it: " + err.Error()
	}
	if !ok {
		return ""
	}
	now := r.cfg.Now()
	if last.At.After(now) {
		return fmt.Sprintf("the last host reboot (%s) is recorded at %s, in the future: the clock moved back, so host reboots are refused until then",
			last.RebootID, last.At.UTC().Format(time.RFC3339))
	}
	if since := now.Sub(last.At); since < rb.MinInterval {
		return fmt.Sprintf("the last host reboot (%s) was started at %s, %s ago; the policy allows one every %s (min_interval)",
			last.RebootID, last.At.UTC().Format(time.RFC3339), since.Round(time.Second), rb.MinInterval)
	}
	return ""
}

// perform warns logged-in users and runs the reboot command.
func (r *Rebooter) perform(ctx context.Context, rb policy.Reboots, child execute.Limits, req Request) Outcome {
	out := Outcome{Allowed: true}
	out.Warned = r.wall(ctx, rb, child, req)
	argv := Command(rb, req.VMID)
	child.Timeout = rb.Timeout
	output, exit, err := r.cfg.Launcher.Output(ctx, execute.Spec{Path: argv[0], Argv: argv, Limits: child}, outputBytes)
	switch {
	case err != nil && exit.End.IsZero():
		out.ExitCode = -1
		out.Reason = fmt.Sprintf("%s did not start: %v", argv[0], err)
	case exit.TimedOut:
		out.ExitCode = -1
		out.Reason = fmt.Sprintf("%s did not finish within %s and was killed", strings.Join(argv, " "), rb.Timeout)
		out.Output = tail(output)
	case err != nil || exit.Code != 0:
		out.ExitCode = exit.Code
		out.Reason = fmt.Sprintf("%s %s", strings.Join(argv, " "), ended(exit, err))
		out.Output = tail(output)
	default:
		out.Started = true
	}
	return out
}

// ended words how a failed reboot command ended.
func ended(exit execute.Exit, err error) string {
	switch {
	case err != nil:
		return "failed: " + err.Error()
	case exit.Signal != "":
		return "was ended by " + exit.Signal
	}
	return fmt.Sprintf("exited with status %d", exit.Code)
}

// outputBytes is what a reboot command's output may bring back.
const outputBytes = 16 << 10

// wall warns logged-in users; a failure is not a reason to skip the
// reboot the operator asked for.
func (r *Rebooter) wall(ctx context.Context, rb policy.Reboots, child execute.Limits, req Request) bool {
	what := "this host"
	if req.VMID != "" {
		what = "container " + req.VMID
	}
	msg := fmt.Sprintf("NannyAI reboot %s requested by the operator: %s reboots now.", req.ID, what)
	if reason := printable(req.Reason, 160); reason != "" {
		msg += " Reason: " + reason
	}
	// Two arguments, so wall takes them as the message and never as the
	// name of a file to broadcast; neither starts with "-".
	argv := []string{rb.Wall, "nannyagent:", msg}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.WallTimeout)
	defer cancel()
	child.Timeout = r.cfg.WallTimeout
	_, exit, err := r.cfg.Launcher.Output(ctx, execute.Spec{Path: argv[0], Argv: argv, Limits: child}, outputBytes)
	return err == nil && exit.Code == 0 && !exit.TimedOut
}

func refused(reason string) Outcome { return Outcome{Reason: reason} }

// printable keeps printable ASCII (terminals are the audience: no escape
// sequences) and clips to n bytes.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		c := s[i]
		switch {
		case c >= 0x20 && c < 0x7f:
			b.WriteByte(c)
		case c == '\t' || c == '\n' || c == '\r':
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String())
}

// tail is the end of a failed command's output, for the reason.
func tail(output []byte) string {
	s := printable(string(output), 1<<20)
	if len(s) > 512 {
		s = "…" + s[len(s)-512:]
	}
	return s
}

func sysUptime() (time.Duration, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return time.Duration(si.Uptime) * time.Second, nil
}
