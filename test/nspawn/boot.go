package nspawn

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Where the bed's files live inside a machine.
const (
	bedDir     = "/usr/local/lib/nannyagent-testbed"
	resultsDir = "/var/lib/nannyagent-testbed/results"
	checksUnit = "nannyagent-testbed-checks.service"
)

var (
	//go:embed testbed/lib.sh
	libSh []byte
	//go:embed testbed/run
	runSh []byte
	//go:embed testbed/checks.service
	checksService string
	//go:embed testbed/tracefs.conf
	tracefsDropIn []byte
)

// BootOptions say how to boot a machine and what to check in it.
type BootOptions struct {
	// Checks is a bash script run (under bash -x, after lib.sh) by a
	// oneshot unit once the boot reached multi-user.target. It writes its
	// results with lib.sh's record, record_stdout and note; the machine
	// powers off when it ends.
	Checks string
	// Tracing lets the machine run bpftrace: nspawn's system call filter
	// lets bpf(2) and perf_event_open(2) through (its default set already
	// has CAP_SYS_ADMIN, all bpftrace 0.17 needs as root), and tracefs is
	// mounted inside.
	Tracing bool
	// Capabilities are added to nspawn's default set (--capability=).
	Capabilities []string
	// Args are more systemd-nspawn arguments.
	Args []string
	// Timeout bounds the boot, the checks and the power-off (default 5m).
	Timeout time.Duration
}

// Results are what a boot's checks recorded.
type Results struct {
	// Dir is the results directory on the host.
	Dir string
	// Console is what systemd-nspawn printed: the machine's console.
	Console string
	// Elapsed runs from starting systemd-nspawn to its exit.
	Elapsed time.Duration
	// UpToChecks runs from starting systemd-nspawn until the checks
	// script started: the boot.
	UpToChecks time.Duration
	// Checks is how long the checks script ran.
	Checks time.Duration
}

// Result is one recorded command.
type Result struct {
	Out string
	// Code is the exit status; -1 when none was recorded (note).
	Code int
}

// Get returns the result recorded as name.
func (r *Results) Get(name string) (Result, bool) {
	out, err := os.ReadFile(filepath.Join(r.Dir, name))
	if err != nil {
		return Result{Code: -1}, false
	}
	res := Result{Out: string(out), Code: -1}
	if rc, err := os.ReadFile(filepath.Join(r.Dir, name+".rc")); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(rc))); err == nil {
			res.Code = n
		}
	}
	return res, true
}

// Boot boots the machine with its own systemd as PID 1 and waits until the
// checks ran and the machine powered off. An error says why the checks did
// not complete; a failing check is the caller's to judge.
//
// The machine is booted with systemd-nspawn -b --register=no --keep-unit
// (the host's PID 1 need not be systemd), --console=pipe and
// --private-network: inside, only lo exists, so nothing the checks run can
// reach another host. It runs as real root without a user namespace, so
// it is for test machines only.
func (m *Machine) Boot(ctx context.Context, opts BootOptions) (*Results, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if err := m.prepareBoot(opts); err != nil {
		return nil, err
	}
	args := []string{"-D", m.Root, "--machine=" + m.Name, "--register=no", "--keep-unit",
		"-b", "--console=pipe", "--private-network"}
	if opts.Tracing {
		args = append(args, "--system-call-filter=bpf perf_event_open")
	}
	if len(opts.Capabilities) > 0 {
		args = append(args, "--capability="+strings.Join(opts.Capabilities, ","))
	}
	args = append(args, opts.Args...)

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemd-nspawn", args...)
	// One writer for both: exec then never writes to it concurrently.
	var console bytes.Buffer
	cmd.Stdout, cmd.Stderr = &console, &console
	// On timeout, SIGTERM asks nspawn to shut the machine down; SIGKILL
	// follows if that hangs.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	res := &Results{Dir: m.Path(resultsDir), Console: console.String(), Elapsed: time.Since(start)}
	if _, ok := res.Get("checks.done"); !ok {
		return res, fmt.Errorf("the checks did not complete in %s (nspawn: %v); console:\n%s", m.Name, runErr, tail(res.Console, 4000))
	}
	if runErr != nil {
		return res, fmt.Errorf("systemd-nspawn: %w; console:\n%s", runErr, tail(res.Console, 4000))
	}
	res.UpToChecks = stamp(res, "checks.started").Sub(start)
	res.Checks = stamp(res, "checks.ended").Sub(stamp(res, "checks.started"))
	return res, nil
}

// prepareBoot installs the bed's runner, the checks and the unit that
// runs them, and clears the results of an earlier boot.
func (m *Machine) prepareBoot(opts BootOptions) error {
	if strings.TrimSpace(opts.Checks) == "" {
		return errors.New("no checks to run")
	}
	if err := os.RemoveAll(m.Path(resultsDir)); err != nil {
		return err
	}
	unit := strings.ReplaceAll(checksService, "@TIMEOUT@", strconv.Itoa(int(opts.Timeout.Seconds())))
	files := []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{bedDir + "/lib.sh", libSh, 0o644},
		{bedDir + "/run", runSh, 0o755},
		{bedDir + "/checks", []byte(opts.Checks), 0o755},
		{"/etc/systemd/system/" + checksUnit, []byte(unit), 0o644},
	}
	if opts.Tracing {
		files = append(files, struct {
			path string
			data []byte
			mode os.FileMode
		}{"/etc/systemd/system/sys-kernel-tracing.mount.d/testbed.conf", tracefsDropIn, 0o644})
	}
	for _, f := range files {
		if err := m.WriteFile(f.path, f.data, f.mode); err != nil {
			return err
		}
	}
	return m.Symlink("/etc/systemd/system/"+checksUnit, "/etc/systemd/system/multi-user.target.wants/"+checksUnit)
}

// stamp reads a time recorded by the runner (seconds since the epoch).
func stamp(r *Results, name string) time.Time {
	res, _ := r.Get(name)
	f, err := strconv.ParseFloat(strings.TrimSpace(res.Out), 64)
	if err != nil {
		return time.Time{}
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
