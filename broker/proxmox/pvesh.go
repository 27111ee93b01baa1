package proxmox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// pveshEnv is the whole environment pvesh runs with.
var pveshEnv = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}

// stderrCap bounds the pvesh error text carried back in an error.
const stderrCap = 2048

// runPvesh runs `<pvesh> get <path> --output-format json` with a fixed argv,
// a clean environment, cwd /, stdin /dev/null, in its own process group
// (killed whole on timeout), and returns stdout if it is valid JSON within
// the output cap.
func (r *Reader) runPvesh(ctx context.Context, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.cfg.PveshPath, "get", path, "--output-format", "json")
	cmd.Env = pveshEnv
	cmd.Dir = "/"
	cmd.Stdin = nil // /dev/null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	stdout := &cappedBuffer{limit: r.cfg.OutputCap, onOverflow: cancel}
	stderr := &cappedBuffer{limit: stderrCap, truncate: true}
	cmd.Stdout, cmd.Stderr = stdout, stderr

	err := cmd.Run()
	switch {
	case stdout.overflowed():
		return nil, status.Errorf(codes.ResourceExhausted, "pvesh get %s: output larger than %d bytes", path, r.cfg.OutputCap)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, status.Errorf(codes.DeadlineExceeded, "pvesh get %s: no answer within %s", path, r.cfg.Timeout)
	case errors.Is(ctx.Err(), context.Canceled):
		return nil, status.Errorf(codes.Canceled, "pvesh get %s: %v", path, ctx.Err())
	case err != nil:
		return nil, status.Errorf(codes.Unavailable, "pvesh get %s: %v: %s", path, err, bytes.TrimSpace(stderr.bytes()))
	}
	out := stdout.bytes()
	if !json.Valid(out) {
		return nil, status.Errorf(codes.Internal, "pvesh get %s: output is not JSON", path)
	}
	return out, nil
}

// cappedBuffer collects a child's output up to limit bytes. Past the limit
// it either drops the rest (truncate) or fails the write and calls
// onOverflow, which ends the child.
type cappedBuffer struct {
	mu         sync.Mutex
	buf        bytes.Buffer
	limit      int
	truncate   bool
	over       bool
	onOverflow func()
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.limit - b.buf.Len()
	if len(p) <= room {
		return b.buf.Write(p)
	}
	b.buf.Write(p[:max(room, 0)])
	if b.truncate {
		return len(p), nil
	}
	if !b.over && b.onOverflow != nil {
		b.onOverflow()
	}
	b.over = true
	return 0, fmt.Errorf("output larger than %d bytes", b.limit)
}

func (b *cappedBuffer) overflowed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.over
}

func (b *cappedBuffer) bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}
