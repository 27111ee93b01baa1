package patch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// UnitLauncher starts runs in systemd units of their own, outside the
// broker's cgroup: stopping or restarting the broker (a package upgrade
// does) leaves them running, and the next broker process finds them again
// by their unit's name.
type UnitLauncher interface {
	// LaunchUnit starts the runner's command line in a new unit.
	LaunchUnit(UnitSpec) (Process, error)
	// Reattach watches a unit an earlier broker process started; when the
	// unit is already gone, the Process's Wait returns at once.
	Reattach(name string) (Process, error)
}

// UnitSpec is one run in a transient unit.
type UnitSpec struct {
	// Name is the unit's name (UnitName).
	Name        string
	Description string
	// Argv is the runner's command line; Argv[0] is absolute.
	Argv []string
	// Script becomes the unit's standard input: the runner reads the
	// sealed script from descriptor 0. The launcher duplicates it.
	Script *os.File
	// Env is the unit's whole environment.
	Env []string
	// Timeout is the unit's RuntimeMaxSec, MemoryBytes its MemoryMax and
	// Tasks its TasksMax (0: none set).
	Timeout     time.Duration
	MemoryBytes int64
	Tasks       int
}

// UnitName is the transient unit of operation op's run. Operation ids are
// letters, digits, '_' and '-', all valid in a unit name.
func UnitName(op string) string { return "nannyagent-patch-" + op + ".service" }

// unitConn is what the launcher needs of systemd's D-Bus API
// (*sddbus.Conn has it).
type unitConn interface {
	StartTransientUnitContext(ctx context.Context, name, mode string, props []sddbus.Property, ch chan<- string) (int, error)
	GetUnitPropertyContext(ctx context.Context, unit, name string) (*sddbus.Property, error)
	GetServicePropertyContext(ctx context.Context, service, name string) (*sddbus.Property, error)
	StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error)
	ResetFailedUnitContext(ctx context.Context, name string) error
	Close()
}

// Units starts patch runs as transient services of the system manager
// (PID 1) over D-Bus. The connection is made on first use and again after
// it broke.
type Units struct {
	// Poll is how often a run's unit is looked at (default 1s).
	Poll time.Duration
	// StopTimeout is how long a stopped run's processes get between
	// SIGTERM and SIGKILL, the runner included (default 10s).
	StopTimeout time.Duration
	// CallTimeout bounds each D-Bus call (default 30s).
	CallTimeout time.Duration

	// connect opens a connection that lives until its context ends (the
	// D-Bus library closes it then): it is given the launcher's own
	// context, never a call's.
	connect func(context.Context) (unitConn, error)
	mu      sync.Mutex
	conn    unitConn
	life    context.Context
	end     context.CancelFunc
}

// NewUnits returns a launcher that talks to the system manager.
func NewUnits() *Units {
	return &Units{connect: func(ctx context.Context) (unitConn, error) {
		c, err := sddbus.NewWithContext(ctx)
		if err != nil {
			return nil, err
		}
		return c, nil
	}}
}

// lifetime is the context connections live in, made on first use.
func (u *Units) lifetime() context.Context {
	if u.life == nil {
		u.life, u.end = context.WithCancel(context.Background())
	}
	return u.life
}

// SystemdBooted reports whether systemd is the system manager (PID 1),
// as sd_booted(3) decides it.
func SystemdBooted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

func (u *Units) poll() time.Duration        { return orDefault(u.Poll, time.Second) }
func (u *Units) stopTimeout() time.Duration { return orDefault(u.StopTimeout, 10*time.Second) }
func (u *Units) callTimeout() time.Duration { return orDefault(u.CallTimeout, 30*time.Second) }

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// call runs fn with the connection (made if needed); a failed call drops
// it, so the next one connects again.
func (u *Units) call(fn func(context.Context, unitConn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), u.callTimeout())
	defer cancel()
	u.mu.Lock()
	c := u.conn
	life := u.lifetime()
	u.mu.Unlock()
	if c == nil {
		nc, err := u.connect(life)
		if err != nil {
			return fmt.Errorf("connect to systemd over D-Bus: %w", err)
		}
		u.mu.Lock()
		if u.conn == nil {
			u.conn = nc
		} else {
			nc.Close()
		}
		c = u.conn
		u.mu.Unlock()
	}
	err := fn(ctx, c)
	var derr dbus.Error
	if err != nil && !errors.As(err, &derr) {
		// Not an answer from systemd: the connection may be gone.
		u.mu.Lock()
		if u.conn == c {
			u.conn = nil
			c.Close()
		}
		u.mu.Unlock()
	}
	return err
}

// Close drops the D-Bus connection; runs go on.
func (u *Units) Close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn != nil {
		u.conn.Close()
		u.conn = nil
	}
	if u.end != nil {
		u.end()
		u.life, u.end = nil, nil
	}
}

// unitProperties are the transient unit's settings.
func (u *Units) unitProperties(s UnitSpec) []sddbus.Property {
	props := []sddbus.Property{
		sddbus.PropDescription(s.Description),
		sddbus.PropType("exec"),
		sddbus.PropExecStart(s.Argv, true),
		{Name: "StandardInputFileDescriptor", Value: dbus.MakeVariant(dbus.UnixFD(s.Script.Fd()))},
		{Name: "StandardOutput", Value: dbus.MakeVariant("journal")},
		{Name: "StandardError", Value: dbus.MakeVariant("journal")},
		{Name: "Environment", Value: dbus.MakeVariant(s.Env)},
		{Name: "WorkingDirectory", Value: dbus.MakeVariant("/")},
		{Name: "RuntimeMaxUSec", Value: dbus.MakeVariant(uint64(s.Timeout.Microseconds()))},
		{Name: "TimeoutStopUSec", Value: dbus.MakeVariant(uint64(u.stopTimeout().Microseconds()))},
		// Every process of the run is signalled at a stop, and killed
		// after StopTimeout; the runner records what happened meanwhile.
		{Name: "KillMode", Value: dbus.MakeVariant("control-group")},
		{Name: "SyslogIdentifier", Value: dbus.MakeVariant("nannyagent-patch")},
	}
	if s.MemoryBytes > 0 {
		props = append(props, sddbus.Property{Name: "MemoryMax", Value: dbus.MakeVariant(uint64(s.MemoryBytes))})
	}
	if s.Tasks > 0 {
		props = append(props, sddbus.Property{Name: "TasksMax", Value: dbus.MakeVariant(uint64(s.Tasks))})
	}
	return props
}

// LaunchUnit starts s as a transient service and returns once systemd
// started the runner (Type=exec), or with the reason it did not.
func (u *Units) LaunchUnit(s UnitSpec) (Process, error) {
	if len(s.Argv) == 0 || s.Script == nil || s.Timeout <= 0 {
		return nil, errors.New("transient unit: no command line, script or timeout")
	}
	// A failed unit of the same name from an earlier try would make the
	// start fail; operations never run twice, so it is a leftover.
	_ = u.call(func(ctx context.Context, c unitConn) error { return c.ResetFailedUnitContext(ctx, s.Name) })
	done := make(chan string, 1)
	err := u.call(func(ctx context.Context, c unitConn) error {
		_, err := c.StartTransientUnitContext(ctx, s.Name, "fail", u.unitProperties(s), done)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("start transient unit %s: %w", s.Name, err)
	}
	select {
	case res := <-done:
		if res != "done" {
			why := u.result(s.Name)
			return nil, fmt.Errorf("systemd could not start %s (job %s, result %s)", s.Name, res, why)
		}
	case <-time.After(u.callTimeout()):
		return nil, fmt.Errorf("systemd did not start %s within %v", s.Name, u.callTimeout())
	}
	return u.watch(s.Name), nil
}

// Reattach watches a unit an earlier broker process started.
func (u *Units) Reattach(name string) (Process, error) { return u.watch(name), nil }

func (u *Units) watch(name string) *unitRun {
	return &unitRun{u: u, name: name, detach: make(chan struct{}), start: time.Now()}
}

// result is the service's Result property, or "" when it cannot be read.
func (u *Units) result(name string) string {
	var res string
	_ = u.call(func(ctx context.Context, c unitConn) error {
		p, err := c.GetServicePropertyContext(ctx, name, "Result")
		if err == nil {
			res, _ = p.Value.Value().(string)
		}
		return err
	})
	return res
}

// unitRun is a run in a transient unit.
type unitRun struct {
	u      *Units
	name   string
	start  time.Time
	once   sync.Once
	detach chan struct{}
}

// Wait polls the unit until it is no longer active. Its Exit carries only
// what systemd knows (a timeout, the memory cap); the runner's outcome in
// the run's directory says the rest.
func (r *unitRun) Wait() Exit {
	t := time.NewTicker(r.u.poll())
	defer t.Stop()
	for {
		state, err := r.activeState()
		if err == nil && (state == "inactive" || state == "failed") {
			return r.ended(state)
		}
		select {
		case <-r.detach:
			return Exit{Detached: true}
		case <-t.C:
		}
	}
}

func (r *unitRun) activeState() (string, error) {
	var state string
	err := r.u.call(func(ctx context.Context, c unitConn) error {
		p, err := c.GetUnitPropertyContext(ctx, r.name, "ActiveState")
		if err != nil {
			return err
		}
		state, _ = p.Value.Value().(string)
		return nil
	})
	return state, err
}

// ended reads how systemd saw the unit end and clears a failed unit.
func (r *unitRun) ended(state string) Exit {
	x := Exit{Code: -1, Duration: time.Since(r.start)}
	if state != "failed" {
		// A unit that ended cleanly is unloaded at once; its runner
		// wrote the outcome.
		return x
	}
	switch res := r.u.result(r.name); res {
	case "timeout":
		x.TimedOut = true
	case "oom-kill":
		x.MemoryLimitHit = true
	case "signal", "core-dump":
		x.Signal = "a signal (unit result " + res + ")"
	}
	_ = r.u.call(func(ctx context.Context, c unitConn) error { return c.ResetFailedUnitContext(ctx, r.name) })
	return x
}

// Kill stops the unit: every process of the run gets SIGTERM, and SIGKILL
// after the stop timeout.
func (r *unitRun) Kill() {
	_ = r.u.call(func(ctx context.Context, c unitConn) error {
		_, err := c.StopUnitContext(ctx, r.name, "replace", nil)
		return err
	})
}

// Detach stops watching; the unit goes on, and Wait returns Detached.
func (r *unitRun) Detach() { r.once.Do(func() { close(r.detach) }) }

// Unit is the run's unit name.
func (r *unitRun) Unit() string { return r.name }
