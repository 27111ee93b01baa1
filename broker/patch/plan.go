package patch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// RunLimits are the policy's terms a run started with.
type RunLimits struct {
	Timeout     time.Duration `json:"timeout,omitempty"`
	OutputBytes int64         `json:"output_bytes,omitempty"`
	MemoryBytes int64         `json:"memory_bytes,omitempty"`
	Tasks       int           `json:"tasks,omitempty"`
}

func recordLimits(s Settings) RunLimits {
	return RunLimits{Timeout: s.Timeout, OutputBytes: s.OutputBytes, MemoryBytes: s.MemoryBytes, Tasks: s.Tasks}
}

func (l RunLimits) settings() Settings {
	return Settings{Timeout: l.Timeout, OutputBytes: l.OutputBytes, MemoryBytes: l.MemoryBytes, Tasks: l.Tasks}
}

// containerDir is where a script is pushed inside a container: /run is
// root's own (a tmpfs on systemd and OpenRC systems), so no account in the
// container can plant a link where the file goes.
const containerDir = "/run"

// ContainerDest is where operation op's script is pushed in a container.
func ContainerDest(op string) string { return containerDir + "/nannyagent-patch-" + op }

// plan is how a run is made.
type plan struct {
	// argv is what runs, for the record and the decision log: the
	// interpreter and its arguments, or the pct exec command line.
	argv []string
	// command is what the interpreter's process runs (for a container,
	// inside it).
	command []string
	// viaRunner: the runner carries the run out (a unit or a container),
	// and its outcome is in the run's directory.
	viaRunner bool
}

// plan resolves the interpreter and decides how the run is made.
func (m *Manager) plan(req Request, sum string, s Settings) (plan, error) {
	sb, err := parseShebang(req.Script)
	if err != nil {
		return plan{}, err
	}
	if err := checkRunPath(s.Path); err != nil {
		return plan{}, err
	}
	args := Args(req.Mode, req.Exclusions)
	if req.VMID == "" {
		argv, err := interpreterArgv(sb, s, "/dev/fd/3")
		if err != nil {
			return plan{}, err
		}
		argv = append(argv, args...)
		p := plan{argv: argv, command: argv, viaRunner: m.cfg.Units != nil}
		if p.viaRunner && len(m.cfg.Runner) == 0 {
			return plan{}, errors.New("runs in units need the runner's command line (Config.Runner)")
		}
		return p, nil
	}
	if len(m.cfg.Runner) == 0 {
		return plan{}, fmt.Errorf("%w: runs in containers need the runner, which this broker was not given", ErrRefused)
	}
	if !path.IsAbs(s.Pct) || path.Clean(s.Pct) != s.Pct {
		return plan{}, fmt.Errorf("%w: patches.pct %q is not a clean absolute path", ErrRefused, clip(s.Pct))
	}
	cmd, err := containerArgv(sb, s, ContainerDest(req.OperationID))
	if err != nil {
		return plan{}, err
	}
	cmd = append(cmd, args...)
	argv := append([]string{s.Pct, "exec", req.VMID, "--"}, cmd...)
	return plan{argv: argv, command: cmd, viaRunner: true}, nil
}

// containerArgv is the interpreter command line inside a container. The
// #! line must name an interpreter from the policy's list by its absolute
// path: "#!/usr/bin/env NAME" would be resolved through the container's
// PATH, which the broker cannot judge. (Alpine's #!/bin/sh is busybox's
// sh; containers without bash need no bash.)
func containerArgv(sb shebang, s Settings, dest string) ([]string, error) {
	if slices.Contains(envPrograms, sb.interp) {
		return nil, fmt.Errorf("%w: #!%s %s would be looked up on the container's PATH; a script for a container must name its interpreter by path (one of %s)",
			ErrRefused, sb.interp, clip(sb.arg), strings.Join(s.Interpreters, ", "))
	}
	return interpreterArgv(sb, s, dest)
}

// runnerArgv is the runner's command line for a run.
func (m *Manager) runnerArgv(rec Record, pl plan, s Settings, scriptFD int) []string {
	argv := append([]string(nil), m.cfg.Runner...)
	argv = append(argv, "--script-fd", strconv.Itoa(scriptFD), "--sha256", rec.SHA256,
		"--dir", m.store.runDir(rec.OperationID), "--output-bytes", strconv.FormatInt(s.OutputBytes, 10),
		"--timeout", s.Timeout.String())
	for _, e := range runEnv(s.Path) {
		argv = append(argv, "--env", e)
	}
	if rec.VMID != "" {
		argv = append(argv, "--pct", s.Pct, "--vmid", rec.VMID, "--dest", ContainerDest(rec.OperationID))
	}
	return append(append(argv, "--"), pl.command...)
}

// launch starts a run: in its own unit, through the runner in the
// launcher, or as the interpreter itself in the launcher.
func (m *Manager) launch(rec Record, pl plan, sealed *os.File, s Settings) (Process, error) {
	if m.cfg.Units != nil {
		return m.cfg.Units.LaunchUnit(UnitSpec{
			Name: rec.Unit, Description: fmt.Sprintf("nannyagent patch run %s (%s)", rec.OperationID, displayName(rec)),
			Argv: m.runnerArgv(rec, pl, s, 0), Script: sealed, Env: runEnv(s.Path),
			Timeout: s.Timeout, MemoryBytes: s.MemoryBytes, Tasks: s.Tasks,
		})
	}
	argv := pl.argv
	if pl.viaRunner {
		argv = m.runnerArgv(rec, pl, s, 3)
	}
	return m.cfg.Launcher.Launch(Spec{
		Program: argv[0], Argv: argv, Env: runEnv(s.Path), Files: []*os.File{sealed},
		Timeout: s.Timeout, OutputBytes: s.OutputBytes, MemoryBytes: s.MemoryBytes, Tasks: s.Tasks,
	})
}

func displayName(r Record) string {
	name := r.Name
	if name == "" {
		name = "unnamed script"
	}
	if r.VMID != "" {
		name += " in container " + r.VMID
	}
	return strings.ToValidUTF8(clip(name), "?")
}

// collect completes the launcher's view of a runner's run with what the
// runner left in the run's directory: its output and its outcome.
func (m *Manager) collect(op string, x Exit) Exit {
	dir := m.store.runDir(op)
	for name, dst := range map[string]*[]byte{stdoutFile: &x.Stdout, stderrFile: &x.Stderr} {
		b, err := readCapped(filepath.Join(dir, name), m.cfg.MaxOutputBytes)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			x.Note = strings.TrimPrefix(x.Note+"; the run's "+name+" could not be read: "+err.Error(), "; ")
		}
		// The launcher's capture holds only the runner's own messages.
		if len(b) > 0 || err == nil {
			*dst = b
		}
	}
	res, err := readResult(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !x.TimedOut && !x.MemoryLimitHit && !x.Killed {
			x.Note = strings.TrimPrefix(x.Note+"; the run ended (or never started) without recording its outcome; check the host's package state", "; ")
		}
		if x.Code == 0 {
			x.Code = -1
		}
		return x
	case err != nil:
		x.Note = strings.TrimPrefix(x.Note+"; "+err.Error(), "; ")
		x.Code = -1
		return x
	}
	if !res.Started {
		return Exit{StartErr: errors.New(res.Error), Stdout: x.Stdout, Stderr: x.Stderr, Duration: x.Duration}
	}
	x.Code, x.Signal = res.ExitCode, res.Signal
	x.TimedOut = x.TimedOut || res.TimedOut
	x.StdoutTruncated, x.StderrTruncated = res.StdoutTruncated, res.StderrTruncated
	if res.Stopped {
		x.Note = strings.TrimPrefix(x.Note+"; the run's unit was stopped before the script ended", "; ")
	}
	if res.Error != "" {
		x.Note = strings.TrimPrefix(x.Note+"; "+res.Error, "; ")
	}
	if !res.FinishedAt.IsZero() {
		x.Duration = res.FinishedAt.Sub(res.StartedAt)
	}
	return x
}

// reattach watches a run an earlier broker process started in its own
// unit. The caller is New.
func (m *Manager) reattach(r Record) {
	var proc Process
	if m.cfg.Units != nil {
		p, err := m.cfg.Units.Reattach(r.Unit)
		if err != nil {
			m.log.Error("cannot watch a patch run's unit again", "operation_id", r.OperationID, "unit", r.Unit, "error", err.Error())
		}
		proc = p
	}
	if proc == nil {
		// Without systemd now, the unit cannot be asked; the runner's
		// outcome, if any, says how the run ended.
		proc = endedRun{}
	}
	m.log.Info("patch run found again in its unit", "operation_id", r.OperationID, "unit", r.Unit)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.watch(r, true, proc)
}

// endedRun is a run whose unit cannot be watched: it is taken as over.
type endedRun struct{}

func (endedRun) Wait() Exit { return Exit{Code: -1} }
func (endedRun) Kill()      {}

// detached forgets a run the broker stopped watching.
func (m *Manager) detached(op string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active != nil && m.active.op == op {
		m.active = nil
	}
	delete(m.watched, op)
	m.log.Info("patch run goes on in its own unit without this broker", "operation_id", op, "unit", UnitName(op))
}
