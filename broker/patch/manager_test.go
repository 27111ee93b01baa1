package patch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// standIn prints what it was given, lets a child read stdin (as a dpkg
// prompt would), and goes on afterwards: with the script fed on stdin, the
// child would eat the rest of it.
const standIn = `#!/bin/sh
echo "args: $*"
echo "script: $0"
echo "path: $PATH"
echo "env: $(env | sort | tr '\n' ' ')"
leftover=$(cat)
echo "stdin held: [$leftover]"
echo "after the prompt"
exit 3
`

func TestManagerRunsTheCheckedBytes(t *testing.T) {
	l := &execLauncher{}
	m, dir := newManager(t, l)
	st, err := m.Start(request("op1", standIn, DryRun, "linux-image-amd64", "openssl"), testSettings())
	if err != nil || st.State != Running || st.Existing {
		t.Fatalf("start: %+v %v", st, err)
	}
	r := waitDone(t, m, "op1")
	out := string(r.Stdout)
	for _, want := range []string{
		"args: --dry-run --exclude linux-image-amd64,openssl\n",
		"script: /dev/fd/3\n",
		"path: /usr/sbin:/usr/bin:/sbin:/bin\n",
		"env: DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin PWD=/ ",
		"stdin held: []\nafter the prompt\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if r.State != Finished || r.ExitCode != 3 || r.Error != "" || r.SHA256 != Sum([]byte(standIn)) || r.Rule != "test-pin" {
		t.Errorf("record %+v", r)
	}
	if got := strings.Join(r.Argv, " "); got != "/bin/sh /dev/fd/3 --dry-run --exclude linux-image-amd64,openssl" {
		t.Errorf("argv %q", got)
	}
	// The record is in the state directory, root-only.
	fi, err := os.Stat(filepath.Join(dir, "patches", "op1"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run directory: %v %v", fi, err)
	}
	// Apply passes no mode argument.
	if _, err := m.Start(request("op2", standIn, Apply), testSettings()); err != nil {
		t.Fatal(err)
	}
	if r := waitDone(t, m, "op2"); !strings.Contains(string(r.Stdout), "args: \n") {
		t.Errorf("apply args: %s", r.Stdout)
	}
}

func TestManagerRefusesBeforeRunning(t *testing.T) {
	l := &execLauncher{}
	m, dir := newManager(t, l)
	mismatch := request("op1", standIn, DryRun)
	mismatch.SHA256 = Sum([]byte("#!/bin/sh\necho other\n"))
	noShebang := request("op2", "echo hi\n", DryRun)
	perl := request("op3", "#!/usr/bin/perl\nprint 1\n", DryRun)
	unsafePath := testSettings()
	writable := t.TempDir()
	if err := os.Chmod(writable, 0o777); err != nil {
		t.Fatal(err)
	}
	unsafePath.Path = writable + ":/usr/bin"
	for _, c := range []struct {
		req  Request
		s    Settings
		want error
	}{
		{mismatch, testSettings(), ErrHashMismatch},
		{noShebang, testSettings(), ErrRefused},
		{perl, testSettings(), ErrRefused},
		{request("op4", standIn, DryRun), unsafePath, ErrRefused},
		{request("op5", standIn, DryRun, "a;b"), testSettings(), ErrInvalid},
	} {
		if _, err := m.Start(c.req, c.s); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.req.OperationID, err, c.want)
		}
		if _, err := m.Result(c.req.OperationID); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: a refused run left a record: %v", c.req.OperationID, err)
		}
	}
	if n := len(l.calls()); n != 0 {
		t.Errorf("%d launches for refused runs", n)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "patches")); len(entries) != 1 { // .lock
		t.Errorf("state directory holds %d entries", len(entries))
	}
}

func TestManagerOneAtATimeAndNeverTwice(t *testing.T) {
	l := &execLauncher{}
	m, _ := newManager(t, l)
	release := filepath.Join(t.TempDir(), "release")
	slow := "#!/bin/sh\nwhile [ ! -e " + release + " ]; do sleep 0.05; done\necho slow done\n"
	if _, err := m.Start(request("op1", slow, DryRun), testSettings()); err != nil {
		t.Fatal(err)
	}
	if got := m.Active(); got != "op1" {
		t.Errorf("active %q", got)
	}
	if _, err := m.Start(request("op2", standIn, DryRun), testSettings()); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "op1") {
		t.Errorf("second run while one goes: %v, want ErrBusy naming op1", err)
	}
	if st, err := m.Start(request("op1", slow, DryRun), testSettings()); err != nil || !st.Existing || st.State != Running {
		t.Errorf("the same operation again while it runs: %+v %v", st, err)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitDone(t, m, "op1")
	if st, err := m.Start(request("op1", slow, DryRun), testSettings()); err != nil || !st.Existing || st.State != Finished {
		t.Errorf("the same operation after it finished: %+v %v", st, err)
	}
	if _, err := m.Start(request("op2", standIn, DryRun), testSettings()); err != nil {
		t.Errorf("the next run after the first finished: %v", err)
	}
	waitDone(t, m, "op2")
	if n := len(l.calls()); n != 2 {
		t.Errorf("%d launches, want 2", n)
	}
}

func TestManagerTimeoutAndLaunchFailure(t *testing.T) {
	l := &execLauncher{}
	m, _ := newManager(t, l)
	s := testSettings()
	s.Timeout = 200 * time.Millisecond
	if _, err := m.Start(request("op1", "#!/bin/sh\nsleep 30\n", DryRun), s); err != nil {
		t.Fatal(err)
	}
	r := waitDone(t, m, "op1")
	if !r.TimedOut || r.ExitCode != -1 || !strings.Contains(r.Error, "stopped after 200ms") || !strings.Contains(r.Error, "patch_max_runtime") {
		t.Errorf("timed-out record %+v", r)
	}
	l.fail = errors.New("no cgroup")
	st, err := m.Start(request("op2", standIn, DryRun), testSettings())
	if err != nil || st.State != FailedToStart {
		t.Fatalf("launch failure: %+v %v", st, err)
	}
	if r, _ := m.Result("op2"); r.State != FailedToStart || !strings.Contains(r.Error, "no cgroup") {
		t.Errorf("record %+v", r)
	}
}

// TestRestartMarksInterrupted: a run the previous broker left "running"
// died with it; the next manager says so, and a second manager on the same
// directory is refused.
func TestRestartMarksInterrupted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	l := &execLauncher{}
	m, err := New(Config{StateDir: dir, Launcher: l})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{StateDir: dir, Launcher: l}); err == nil || !strings.Contains(err.Error(), "another broker") {
		t.Errorf("second manager on the same directory: %v", err)
	}
	if _, err := m.Start(request("op1", "#!/bin/sh\nsleep 30\n", Apply), testSettings()); err != nil {
		t.Fatal(err)
	}
	// Close kills the run: recorded interrupted.
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	r1, err := m.store.load("op1", -1)
	if err != nil || r1.State != Interrupted || r1.Error != ReasonBrokerStopped {
		t.Errorf("after Close: %+v %v", r1, err)
	}
	// A crash leaves the record running: simulate it.
	r1.OperationID, r1.State, r1.Error = "op2", Running, ""
	if err := os.Mkdir(filepath.Join(dir, "patches", "op2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := m.store.save(r1); err != nil {
		t.Fatal(err)
	}
	m2, err := New(Config{StateDir: dir, Launcher: l})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	r2, err := m2.Result("op2")
	if err != nil || r2.State != Interrupted || !strings.Contains(r2.Error, "outcome is unknown") {
		t.Errorf("after restart: %+v %v", r2, err)
	}
}

func TestStateDirMustBeRootOnly(t *testing.T) {
	base := t.TempDir()
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{open, link, "relative"} {
		if _, err := New(Config{StateDir: d, Launcher: &execLauncher{}}); err == nil {
			t.Errorf("state directory %s accepted", d)
		}
	}
	fresh := filepath.Join(base, "fresh")
	m, err := New(Config{StateDir: fresh, Launcher: &execLauncher{}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("created state directory: %v %v", fi, err)
	}
}

func TestPruneKeepsNewest(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	m, err := New(Config{StateDir: dir, Launcher: &execLauncher{}, Keep: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, op := range []string{"op1", "op2", "op3"} {
		if _, err := m.Start(request(op, "#!/bin/sh\necho "+op+"\n", DryRun), testSettings()); err != nil {
			t.Fatal(err)
		}
		waitDone(t, m, op)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := m.Result("op1")
		if errors.Is(err, ErrNotFound) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("oldest record kept: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, op := range []string{"op2", "op3"} {
		if _, err := m.Result(op); err != nil {
			t.Errorf("%s: %v", op, err)
		}
	}
}
