package proxmox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/broker/execute"
)

// Launcher starts pvesh; the broker's execute.Runner is one. Through it
// pvesh gets a run cgroup with memory and task caps, a deadline, a slot
// among the concurrent commands and no_new_privs, like every child of the
// broker.
type Launcher interface {
	StartAttached(ctx context.Context, spec execute.Spec) (*execute.Process, error)
}

// pveshEnv is the whole environment pvesh runs with.
var pveshEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// stderrCap bounds the pvesh error text carried back in an error.
const stderrCap = 2048

// runPvesh runs `<pvesh> get <path> --output-format json` through the
// launcher, with a fixed argv, a clean environment, cwd /, stdin /dev/null,
// and returns stdout if it is valid JSON within the output cap. A pvesh
// that writes more than the cap is killed at once, its whole tree with it.
func (r *Reader) runPvesh(ctx context.Context, path string) ([]byte, error) {
	if r.cfg.Launcher == nil {
		return nil, status.Error(codes.FailedPrecondition, "pvesh: the broker has no launcher configured")
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "pvesh get %s: %v", path, err)
	}
	defer outR.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		outW.Close()
		return nil, status.Errorf(codes.Internal, "pvesh get %s: %v", path, err)
	}
	defer errR.Close()
	proc, err := r.cfg.Launcher.StartAttached(ctx, execute.Spec{
		Path: r.cfg.PveshPath, Argv: []string{r.cfg.PveshPath, "get", path, "--output-format", "json"},
		Env: pveshEnv, Stdout: outW, Stderr: errW, Slot: true,
		Limits: execute.Limits{Timeout: r.cfg.Timeout, ChildMemory: r.cfg.ChildMemory, ChildTasks: r.cfg.ChildTasks},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		if errors.Is(err, execute.ErrBusy) {
			return nil, status.Errorf(codes.ResourceExhausted, "pvesh get %s: %v", path, err)
		}
		return nil, status.Errorf(codes.Unavailable, "pvesh get %s: %v", path, err)
	}
	stderr := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(errR, stderrCap))
		_, _ = io.Copy(io.Discard, errR)
		stderr <- b
	}()
	out, overflow := readCapped(outR, r.cfg.OutputCap)
	if overflow {
		proc.Kill()
	}
	exit, werr := proc.Wait(context.Background())
	errText := bytes.TrimSpace(<-stderr)
	switch {
	case overflow:
		return nil, status.Errorf(codes.ResourceExhausted, "pvesh get %s: output larger than %d bytes", path, r.cfg.OutputCap)
	case exit.TimedOut:
		return nil, status.Errorf(codes.DeadlineExceeded, "pvesh get %s: no answer within %s", path, r.cfg.Timeout)
	case exit.Killed:
		return nil, status.Errorf(codes.Canceled, "pvesh get %s: %v", path, context.Cause(ctx))
	case werr != nil:
		return nil, status.Errorf(codes.Unavailable, "pvesh get %s: %v", path, werr)
	case exit.MemoryLimitHit:
		return nil, status.Errorf(codes.ResourceExhausted, "pvesh get %s: memory limit (%d bytes) exceeded", path, r.cfg.ChildMemory)
	case exit.Code != 0:
		how := fmt.Sprintf("exit status %d", exit.Code)
		if exit.Signal != "" {
			how = "killed by " + exit.Signal
		}
		return nil, status.Errorf(codes.Unavailable, "pvesh get %s: %s: %s", path, how, errText)
	}
	if !json.Valid(out) {
		return nil, status.Errorf(codes.Internal, "pvesh get %s: output is not JSON", path)
	}
	return out, nil
}

// readCapped reads r to EOF, keeping at most limit bytes; overflow is set,
// and reading stops, as soon as there is more.
func readCapped(r io.Reader, limit int) (out []byte, overflow bool) {
	b, _ := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if len(b) > limit {
		return nil, true
	}
	return b, false
}
