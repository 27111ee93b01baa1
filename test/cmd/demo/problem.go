package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/nannyai/nannyagent/test/stack"
)

// The problem's size: a 16 MiB filesystem, 14 MiB of it taken by the log
// before the diagnosis starts.
const (
	fsSize   = 16 << 20
	prefill  = 14 << 20
	fsOption = "size=16m,mode=0755"
)

// problem is what the demo created: a small filesystem, a log file on it
// and the process that keeps writing to it.
type problem struct {
	dir     string
	mount   string
	log     string
	mounted bool
	logger  *exec.Cmd
}

// createProblem mounts a small tmpfs in a temporary directory (as root;
// otherwise the "disk" is a plain directory, and df shows the filesystem
// /tmp is on), fills most of it with app.log, and starts runaway-logger
// appending to it.
func createProblem(out io.Writer) (*problem, error) {
	dir, err := stack.WorldReadableTempDir("nannyagent-demo-")
	if err != nil {
		return nil, err
	}
	p := &problem{dir: dir, mount: filepath.Join(dir, "data")}
	p.log = filepath.Join(p.mount, "app.log")
	if err := os.Mkdir(p.mount, 0o755); err != nil {
		p.cleanup()
		return nil, err
	}
	fill := int64(prefill)
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", p.mount, "tmpfs", 0, fsOption); err != nil {
			p.cleanup()
			return nil, fmt.Errorf("mount a small tmpfs at %s: %w", p.mount, err)
		}
		p.mounted = true
	} else {
		fill = 2 << 20
		fmt.Fprintf(out, "not root: %s is a plain directory, so df shows the filesystem /tmp is on\n", p.mount)
	}
	if err := os.WriteFile(p.log, bytes.Repeat([]byte(fmt.Sprintf("%99s\n", "GET /api/orders 200")), int(fill/100)), 0o644); err != nil {
		p.cleanup()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(p.mount, "orders.db"), make([]byte, 256<<10), 0o644); err != nil {
		p.cleanup()
		return nil, err
	}
	if p.logger, err = startLogger(dir, p.log); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start runaway-logger: %w", err)
	}
	if p.mounted {
		fmt.Fprintf(out, "created %s: a %d MiB tmpfs, %d MiB of it already app.log\n", p.mount, fsSize>>20, fill>>20)
	} else {
		fmt.Fprintf(out, "created %s with a %d MiB app.log\n", p.mount, fill>>20)
	}
	fmt.Fprintf(out, "started runaway-logger (pid %d): it appends a line to %s every 2 ms\n", p.logger.Process.Pid, p.log)
	return p, nil
}

// cleanup stops the logger and removes everything the demo created.
func (p *problem) cleanup() {
	if p.logger != nil && p.logger.Process != nil {
		_ = p.logger.Process.Kill()
		_ = p.logger.Wait()
	}
	if p.mounted {
		_ = syscall.Unmount(p.mount, 0)
	}
	os.RemoveAll(p.dir)
}
