// Package unixsock creates, hands over and dials the unix sockets that carry
// gRPC between the CLI, the worker and the broker, with the file modes the
// runtime layout names and the gRPC limits every server uses.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ListenConfig describes a socket a server creates itself when systemd did
// not hand one over.
type ListenConfig struct {
	Path string
	// DirMode is the parent directory's mode, set when the server creates it
	// or owns it.
	DirMode fs.FileMode
	// SocketMode is the socket file's mode.
	SocketMode fs.FileMode
	// GID is the group for the directory and socket; -1 leaves it alone.
	GID int
}

// ErrInUse is returned when a live server already answers on the path.
var ErrInUse = errors.New("a live server already answers on this socket")

// Listen creates the socket described by cfg. It refuses to replace a file
// that is not a socket, and a socket that a live server answers on; a stale
// socket left by a crash is removed.
func Listen(ctx context.Context, cfg ListenConfig) (net.Listener, error) {
	if !filepath.IsAbs(cfg.Path) {
		return nil, fmt.Errorf("socket path %q must be absolute", cfg.Path)
	}
	if err := prepareDir(filepath.Dir(cfg.Path), cfg.DirMode, cfg.GID); err != nil {
		return nil, err
	}
	if err := removeStale(ctx, cfg.Path); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "unix", cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Path, err)
	}
	if ul, ok := ln.(*net.UnixListener); ok {
		// We unlink only what we created, at close.
		ul.SetUnlinkOnClose(true)
	}
	if err := setOwnership(cfg.Path, cfg.SocketMode, cfg.GID); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

func prepareDir(dir string, mode fs.FileMode, gid int) error {
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, mode); err != nil {
			return fmt.Errorf("create socket directory %s: %w", dir, err)
		}
	case err != nil:
		return fmt.Errorf("socket directory %s: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	return setOwnership(dir, mode, gid)
}

func setOwnership(path string, mode fs.FileMode, gid int) error {
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			return fmt.Errorf("set group of %s to %d: %w", path, gid, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("set mode of %s: %w", path, err)
	}
	return nil
}

func removeStale(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("refusing to replace %s: it exists and is not a socket", path)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, "unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("refusing to replace %s: %w", path, ErrInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("refusing to replace %s: cannot tell whether it is live: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}
