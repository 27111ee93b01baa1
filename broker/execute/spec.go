package execute

import (
	"context"
	"fmt"
	"os"
	"path"
	"strings"
)

// StartAttached starts spec as an attached run: it is killed, its whole
// tree with it, when ctx ends, when its deadline passes or on Kill. ctx
// also bounds the wait for a slot (Spec.Slot).
func (r *Runner) StartAttached(ctx context.Context, spec Spec) (*Process, error) {
	return r.start(ctx, spec, true)
}

// StartDetached starts spec as a detached run: the same launch, but its
// lifetime is its own. ctx bounds only the start (and the wait for a slot);
// the run then lives until it exits, its deadline passes, Kill, or the
// runner closes. Patch runs use it: they must outlive the request (and the
// worker) that asked for them.
func (r *Runner) StartDetached(ctx context.Context, spec Spec) (*Process, error) {
	return r.start(ctx, spec, false)
}

func (r *Runner) start(ctx context.Context, spec Spec, attached bool) (*Process, error) {
	ps, err := spec.procSpec()
	if err != nil {
		return nil, err
	}
	lim := spec.Limits.effective()
	var release func()
	if spec.Slot {
		if err := r.gate.acquire(ctx); err != nil {
			return nil, err
		}
		release = r.gate.release
	}
	if err := ctx.Err(); err != nil {
		if release != nil {
			release()
		}
		return nil, fmt.Errorf("not started: %w", err)
	}
	table := []*os.File{orNull(spec.Stdin, r.devNull), orNull(spec.Stdout, r.devNull), orNull(spec.Stderr, r.devNull)}
	table = append(table, spec.Extra...)
	ls := launchSpec{table: table, procs: []procSpec{ps}, closeChild: func() {}, limits: lim, release: release}
	if attached {
		ls.stop = ctx.Done()
	} else {
		r.detached.Add(1)
		ls.release = func() {
			r.detached.Add(-1)
			if release != nil {
				release()
			}
		}
	}
	p, err := r.launch(ls)
	if err != nil && ls.release != nil {
		ls.release()
	}
	return p, err
}

// DetachedRuns is how many detached runs are not over yet. A broker that
// exits when idle must wait for them: they end with the runner.
func (r *Runner) DetachedRuns() int { return int(r.detached.Load()) }

func orNull(f, devNull *os.File) *os.File {
	if f == nil {
		return devNull
	}
	return f
}

// procSpec checks spec as a pipeline stage is checked and describes its
// process.
func (spec Spec) procSpec() (procSpec, error) {
	if !path.IsAbs(spec.Path) || path.Clean(spec.Path) != spec.Path {
		return procSpec{}, fmt.Errorf("%w: program %q is not a clean absolute path", ErrInvalid, spec.Path)
	}
	argv := spec.Argv
	if len(argv) == 0 {
		argv = []string{spec.Path}
	}
	for _, s := range append(append([]string(nil), argv...), spec.Env...) {
		if strings.IndexByte(s, 0) >= 0 {
			return procSpec{}, fmt.Errorf("%w: argument or environment entry contains a NUL byte", ErrInvalid)
		}
	}
	if err := checkProgram(spec.Path); err != nil {
		return procSpec{}, err
	}
	ps := procSpec{Path: spec.Path, Argv: argv, Env: spec.Env, Files: make([]int, 3+len(spec.Extra))}
	for i := range ps.Files {
		ps.Files[i] = i
	}
	if spec.RunAs != "" {
		cred, err := lookupAccount(spec.RunAs, map[string]*credSpec{})
		if err != nil {
			return procSpec{}, err
		}
		ps.Cred = cred
	}
	return ps, nil
}

// Output runs spec attached and returns what it wrote to stdout and stderr
// together, up to limit bytes (the rest is read and dropped, so the
// program never blocks on a full pipe), and how it ended. Spec's Stdout
// and Stderr are replaced.
func (r *Runner) Output(ctx context.Context, spec Spec, limit int) ([]byte, Exit, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, Exit{}, fmt.Errorf("%w: pipe: %w", ErrStart, err)
	}
	spec.Stdout, spec.Stderr = wr, wr
	p, err := r.StartAttached(ctx, spec)
	wr.Close()
	if err != nil {
		rd.Close()
		return nil, Exit{}, err
	}
	out := startCapture(rd, limit)
	<-p.Done()
	out.wait(r.cfg.KillGrace)
	return out.buf, p.exit, p.err
}
