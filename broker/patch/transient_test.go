package patch

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// fakeSystemd stands in for PID 1's D-Bus API: StartTransientUnit starts
// the unit's ExecStart as a real process group with the passed descriptor
// as its stdin and the unit's environment, RuntimeMaxUSec and a stop send
// SIGTERM to the group and SIGKILL after TimeoutStopUSec, and the unit
// reads "active" until its main process is gone. It outlives any Manager,
// as PID 1 outlives the broker. The real thing is proven in test/units.
type fakeSystemd struct {
	mu    sync.Mutex
	units map[string]*fakeUnit
	wg    sync.WaitGroup
}

type fakeUnit struct {
	props  map[string]any
	cmd    *exec.Cmd
	state  string
	result string
	stop   chan struct{}
	once   sync.Once
	grace  time.Duration
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	f := &fakeSystemd{units: map[string]*fakeUnit{}}
	t.Cleanup(func() {
		f.mu.Lock()
		for _, u := range f.units {
			u.halt("test-end")
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeSystemd) launcher() *Units {
	return &Units{Poll: 10 * time.Millisecond, connect: func(context.Context) (unitConn, error) { return f, nil }}
}

func (f *fakeSystemd) StartTransientUnitContext(_ context.Context, name, mode string, props []sddbus.Property, ch chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.units[name]; ok && mode == "fail" {
		return 0, dbus.Error{Name: "org.freedesktop.systemd1.UnitExists", Body: []any{"Unit " + name + " already exists."}}
	}
	u := &fakeUnit{props: map[string]any{}, state: "active", stop: make(chan struct{})}
	for _, p := range props {
		u.props[p.Name] = p.Value.Value()
	}
	argv := reflect.ValueOf(u.props["ExecStart"]).Index(0).FieldByName("Args").Interface().([]string)
	fd, err := syscall.Dup(int(u.props["StandardInputFileDescriptor"].(dbus.UnixFD)))
	if err != nil {
		return 0, err
	}
	stdin := os.NewFile(uintptr(fd), "stdin")
	defer stdin.Close()
	u.cmd = exec.Command(argv[0], argv[1:]...)
	u.cmd.Args, u.cmd.Env, u.cmd.Stdin, u.cmd.Stderr = argv, u.props["Environment"].([]string), stdin, os.Stderr
	u.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := u.cmd.Start(); err != nil {
		return 0, err
	}
	u.grace = time.Duration(u.props["TimeoutStopUSec"].(uint64)) * time.Microsecond
	runtimeMax := time.Duration(u.props["RuntimeMaxUSec"].(uint64)) * time.Microsecond
	f.units[name] = u
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		timer := time.NewTimer(runtimeMax)
		defer timer.Stop()
		done := make(chan error, 1)
		go func() { done <- u.cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-timer.C:
			u.halt("timeout")
			err = <-done
		case <-u.stop:
			err = <-done
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case u.result != "":
			u.state = "failed"
		case err != nil:
			u.state, u.result = "failed", "exit-code"
		default:
			// A clean unit is unloaded at once.
			delete(f.units, name)
		}
	}()
	ch <- "done"
	return 1, nil
}

// halt signals the unit's group as systemd stops a unit.
func (u *fakeUnit) halt(result string) {
	u.once.Do(func() {
		if u.result == "" {
			u.result = result
		}
		pid := u.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		go func() {
			time.Sleep(u.grace)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}()
		close(u.stop)
	})
}

func (f *fakeSystemd) GetUnitPropertyContext(_ context.Context, unit, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	state := "inactive"
	if u, ok := f.units[unit]; ok {
		state = u.state
	}
	if name != "ActiveState" {
		return nil, errors.New("fake: property " + name)
	}
	return &sddbus.Property{Name: name, Value: dbus.MakeVariant(state)}, nil
}

func (f *fakeSystemd) GetServicePropertyContext(_ context.Context, unit, name string) (*sddbus.Property, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	res := "success"
	if u, ok := f.units[unit]; ok && u.result != "" {
		res = u.result
	}
	return &sddbus.Property{Name: name, Value: dbus.MakeVariant(res)}, nil
}

func (f *fakeSystemd) StopUnitContext(_ context.Context, name, _ string, _ chan<- string) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.units[name]; ok {
		u.halt("stopped")
	}
	return 1, nil
}

func (f *fakeSystemd) ResetFailedUnitContext(_ context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, ok := f.units[name]; ok && u.state == "failed" {
		delete(f.units, name)
	}
	return nil
}

func (f *fakeSystemd) Close() {}

func (f *fakeSystemd) unit(name string) *fakeUnit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.units[name]
}

// slowScript waits for a file to appear before it finishes, so a test
// decides when the run ends.
func slowScript(gate string) string {
	return "#!/bin/sh\necho started\nwhile [ ! -e " + gate + " ]; do sleep 0.05; done\necho \"finished: $*\"\necho bye >&2\nexit 4\n"
}

func TestUnitRunProperties(t *testing.T) {
	f := newFakeSystemd(t)
	m, dir := newManagerCfg(t, Config{Launcher: &execLauncher{}, Runner: testRunner(t), Units: f.launcher()})
	s := testSettings()
	s.Timeout, s.MemoryBytes, s.Tasks = 7*time.Minute, 256<<20, 64
	gate := filepath.Join(t.TempDir(), "gate")
	if _, err := m.Start(request("op1", slowScript(gate), DryRun), s); err != nil {
		t.Fatal(err)
	}
	u := f.unit("nannyagent-patch-op1.service")
	if u == nil {
		t.Fatal("no transient unit")
	}
	for name, want := range map[string]any{
		"RuntimeMaxUSec": uint64(7 * time.Minute / time.Microsecond), "MemoryMax": uint64(256 << 20), "TasksMax": uint64(64),
		"Type": "exec", "KillMode": "control-group", "Environment": []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"},
	} {
		if got := u.props[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	argv := u.cmd.Args
	if !slices.Equal(argv[:2], testRunner(t)) || !slices.Contains(argv, "--script-fd") || argv[slices.Index(argv, "--script-fd")+1] != "0" ||
		!slices.Equal(argv[len(argv)-3:], []string{"/bin/sh", "/dev/fd/3", "--dry-run"}) {
		t.Errorf("ExecStart %q", argv)
	}
	r, _ := m.Result("op1")
	if r.Runner != RunnerUnit || r.Unit != "nannyagent-patch-op1.service" || r.State != Running {
		t.Errorf("record while running %+v", r)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = waitDone(t, m, "op1")
	if r.State != Finished || r.ExitCode != 4 || r.Error != "" || string(r.Stdout) != "started\nfinished: --dry-run\n" || string(r.Stderr) != "bye\n" {
		t.Errorf("record %+v stdout %q stderr %q", r, r.Stdout, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "patches", "op1", resultFile)); err != nil {
		t.Errorf("runner outcome: %v", err)
	}
}

// TestUnitRunOutlivesTheBroker: a broker that stops leaves the unit
// running; the next one finds the run again and records its end.
func TestUnitRunOutlivesTheBroker(t *testing.T) {
	f := newFakeSystemd(t)
	state := filepath.Join(t.TempDir(), "state")
	cfg := Config{StateDir: state, Launcher: &execLauncher{}, Runner: testRunner(t), Units: f.launcher()}
	m1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(t.TempDir(), "gate")
	if _, err := m1.Start(request("op1", slowScript(gate), Apply), testSettings()); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	u := f.unit("nannyagent-patch-op1.service")
	if u == nil || syscall.Kill(u.cmd.Process.Pid, 0) != nil {
		t.Fatal("the run did not outlive its broker")
	}
	if r, err := m1.store.load("op1", -1); err != nil || r.State != Running {
		t.Fatalf("record after the broker stopped: %+v %v", r, err)
	}
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m2.Close() })
	if m2.Active() != "op1" {
		t.Errorf("the new broker does not watch the run: active %q", m2.Active())
	}
	if _, err := m2.Start(request("op2", "#!/bin/sh\n", DryRun), testSettings()); !errors.Is(err, ErrBusy) {
		t.Errorf("a second run while the found one goes on: %v", err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := waitDone(t, m2, "op1")
	if r.State != Finished || r.ExitCode != 4 || string(r.Stdout) != "started\nfinished: \n" {
		t.Errorf("record %+v stdout %q", r, r.Stdout)
	}
}

func TestUnitRunTimeout(t *testing.T) {
	f := newFakeSystemd(t)
	units := f.launcher()
	units.StopTimeout = 2 * time.Second
	m, _ := newManagerCfg(t, Config{Launcher: &execLauncher{}, Runner: testRunner(t), Units: units})
	s := testSettings()
	s.Timeout = 1500 * time.Millisecond
	if _, err := m.Start(request("op1", "#!/bin/sh\necho waiting\nsleep 30\n", DryRun), s); err != nil {
		t.Fatal(err)
	}
	r := waitDone(t, m, "op1")
	if r.State != Finished || !r.TimedOut || !strings.Contains(r.Error, "patch_max_runtime") || r.Signal != "terminated" || string(r.Stdout) != "waiting\n" {
		t.Errorf("record %+v stdout %q", r, r.Stdout)
	}
}

// A runner that cannot check the script runs nothing and says why.
func TestUnitRunnerRefusesOtherBytes(t *testing.T) {
	dir := t.TempDir()
	script := "#!/bin/sh\necho ran\n"
	sealed, err := sealedCopy("x", []byte(script))
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Close()
	unsealed, err := os.CreateTemp(dir, "plain")
	if err != nil {
		t.Fatal(err)
	}
	defer unsealed.Close()
	if _, err := unsealed.WriteString(script); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		f    *os.File
		sum  string
		want string
	}{
		"other hash": {sealed, Sum([]byte("#!/bin/sh\n")), "hashes to"},
		"not sealed": {unsealed, Sum([]byte(script)), "seals"},
	} {
		run := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		if err := os.Mkdir(run, 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(testRunner(t)[0], RunnerCommand, "--script-fd", "3", "--sha256", c.sum, "--dir", run,
			"--output-bytes", "100", "--", "/bin/sh", "/dev/fd/3")
		cmd.ExtraFiles = []*os.File{c.f}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: runner: %v %s", name, err, out)
		}
		res, err := readResult(run)
		if err != nil || res.Started || !strings.Contains(res.Error, c.want) || res.FinishedAt.IsZero() {
			t.Errorf("%s: %+v %v", name, res, err)
		}
		if out, _ := os.ReadFile(filepath.Join(run, stdoutFile)); len(out) != 0 {
			t.Errorf("%s: the script ran: %q", name, out)
		}
	}
}

// A run whose runner was killed while no broker watched ends recorded,
// with what is known and the reason its outcome is not.
func TestUnitRunKilledWhileUnwatched(t *testing.T) {
	f := newFakeSystemd(t)
	state := filepath.Join(t.TempDir(), "state")
	cfg := Config{StateDir: state, Launcher: &execLauncher{}, Runner: testRunner(t), Units: f.launcher()}
	m1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Start(request("op1", slowScript(filepath.Join(t.TempDir(), "never")), Apply), testSettings()); err != nil {
		t.Fatal(err)
	}
	// The script printed before the broker stopped.
	deadline := time.Now().Add(9 * time.Second)
	for out, _ := os.ReadFile(filepath.Join(state, "patches", "op1", stdoutFile)); string(out) != "started\n"; out, _ = os.ReadFile(filepath.Join(state, "patches", "op1", stdoutFile)) {
		if time.Now().After(deadline) {
			t.Fatalf("the script did not start: %q", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}
	u := f.unit("nannyagent-patch-op1.service")
	if err := syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	m2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m2.Close() })
	r := waitDone(t, m2, "op1")
	if r.State != Finished || r.ExitCode != -1 || !strings.Contains(r.Error, "without recording its outcome") || string(r.Stdout) != "started\n" {
		t.Errorf("record %+v stdout %q", r, r.Stdout)
	}
}
