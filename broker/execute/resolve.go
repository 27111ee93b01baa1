package execute

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxHops caps the symbolic links followed for one path, as the kernel's
// own limit does.
const maxHops = 40

// procRootIno is the inode number of every procfs mount's root directory.
// Symbolic links there (self, thread-self, mounts, net, ...) are ordinary;
// below it, under /proc/<pid>/, links are magic (root, cwd, exe, fd/N, ns/*)
// and jump to objects without a path walk, so they are refused.
const procRootIno = 1

// resolved is a path operand after the walk: the physical path (no symbolic
// links left) and an O_PATH descriptor pinned to the object that was judged.
type resolved struct {
	path string
	file *os.File
	stat unix.Stat_t
	// stable: every directory on the physical path is root-owned and
	// writable by nobody else, and every link on the way sat in such a
	// directory, so only root could change what the path names between
	// the check and the tool's own walk.
	stable bool
}

// missingError is a path whose walk found no entry at some component
// after every hop so far was judged. Stable says whether only root can
// change the directories walked, so only root could create the missing
// entry before the tool looks for it.
type missingError struct {
	at     string
	stable bool
	err    error
}

func (e *missingError) Error() string { return fmt.Sprintf("open %s: %v", e.at, e.err) }
func (e *missingError) Unwrap() error { return e.err }

// dirRef is a directory reached by the walk, pinned by an O_PATH descriptor.
type dirRef struct {
	fd   int
	path string
	stat unix.Stat_t
}

// walker holds the directories from "/" to the current one, so ".." pops
// to the physical parent that the walk came through.
type walker struct {
	stack []dirRef
}

// resolvePath walks p one component at a time from pinned directory
// descriptors, never letting the kernel follow a link. Every symbolic link
// is read from its own descriptor, refused when it is magic or sits in a
// directory a non-root account could have planted it in, and the path it
// leads to is judged again. The final physical path is judged last.
func resolvePath(p string, roots []string, judge PathJudge) (*resolved, error) {
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // the working directory of every stage is "/"
	}
	if err := judge.CheckPath(p, roots); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPathRefused, p, err)
	}
	w, err := newWalker()
	if err != nil {
		return nil, err
	}
	defer w.close()
	res, err := w.walk(p, roots, judge)
	var miss *missingError
	if errors.As(err, &miss) {
		return nil, miss
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrPathRefused, p, err)
	}
	if err := judge.CheckPath(res.path, roots); err != nil {
		res.file.Close()
		return nil, fmt.Errorf("%w: %s resolves to %s: %w", ErrPathRefused, p, res.path, err)
	}
	return res, nil
}

func newWalker() (*walker, error) {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /: %w", err)
	}
	w := &walker{stack: []dirRef{{fd: fd, path: "/"}}}
	if err := unix.Fstat(fd, &w.stack[0].stat); err != nil {
		w.close()
		return nil, fmt.Errorf("stat /: %w", err)
	}
	return w, nil
}

func (w *walker) walk(p string, roots []string, judge PathJudge) (*resolved, error) {
	rest := components(p)
	hops := 0
	for len(rest) > 0 {
		name := rest[0]
		rest = rest[1:]
		if name == ".." {
			w.pop()
			continue
		}
		dir := w.top()
		full := path.Join(dir.path, name)
		fd, err := unix.Openat(dir.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT {
			return nil, &missingError{at: full, stable: w.stable(), err: err}
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", full, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("stat %s: %w", full, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			hops++
			next, err := w.follow(fd, dir, full, rest, hops)
			unix.Close(fd)
			if err != nil {
				return nil, err
			}
			if err := judge.CheckPath(next.judged, roots); err != nil {
				return nil, fmt.Errorf("link %s leads to %s: %w", full, next.judged, err)
			}
			rest = next.rest
		case unix.S_IFDIR:
			w.stack = append(w.stack, dirRef{fd: fd, path: full, stat: st})
		default:
			if len(rest) > 0 {
				unix.Close(fd)
				return nil, fmt.Errorf("%s: %w", full, unix.ENOTDIR)
			}
			return &resolved{path: full, file: os.NewFile(uintptr(fd), full), stat: st, stable: w.stable()}, nil
		}
	}
	// The path ended on a directory: hand over its descriptor.
	top := w.top()
	fd, err := unix.FcntlInt(uintptr(top.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup %s: %w", top.path, err)
	}
	return &resolved{path: top.path, file: os.NewFile(uintptr(fd), top.path), stat: top.stat, stable: w.stable()}, nil
}

// stable reports whether only root can change the directories the walk
// now stands in (links were already refused anywhere else).
func (w *walker) stable() bool {
	for _, d := range w.stack {
		if !rootOnlyDir(d.stat) {
			return false
		}
	}
	return true
}

// rootOnlyDir: owned by root, writable by nobody else (a sticky
// world-writable directory such as /tmp does not count).
func rootOnlyDir(st unix.Stat_t) bool { return st.Uid == 0 && st.Mode&0o022 == 0 }

// hop is where a symbolic link leads: the components still to walk and the
// whole path to judge.
type hop struct {
	rest   []string
	judged string
}

// follow checks the link held by fd (found as full in dir) and returns the
// walk's continuation. An absolute target restarts the walk at "/".
func (w *walker) follow(fd int, dir dirRef, full string, rest []string, hops int) (hop, error) {
	if hops > maxHops {
		return hop{}, fmt.Errorf("more than %d symbolic links", maxHops)
	}
	if err := trustedLinkDir(dir, full); err != nil {
		return hop{}, err
	}
	target, err := readLinkFD(fd)
	if err != nil {
		return hop{}, fmt.Errorf("readlink %s: %w", full, err)
	}
	base := dir.path
	if strings.HasPrefix(target, "/") {
		base = "/"
		w.reset()
	}
	judged := path.Join(base, target, strings.Join(rest, "/"))
	if len(judged) > maxPathLen {
		return hop{}, fmt.Errorf("link %s leads to a path longer than %d bytes", full, maxPathLen)
	}
	return hop{rest: append(components(target), rest...), judged: judged}, nil
}

// trustedLinkDir refuses links that are magic or that a non-root account
// could have planted: the directory holding them must be owned by root and
// writable by nobody else (a sticky world-writable directory such as /tmp
// does not count as trusted either).
func trustedLinkDir(dir dirRef, full string) error {
	var fs unix.Statfs_t
	if err := unix.Fstatfs(dir.fd, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", dir.path, err)
	}
	if fs.Type == unix.PROC_SUPER_MAGIC && dir.stat.Ino != procRootIno {
		return fmt.Errorf("%s is a magic link", full)
	}
	if !rootOnlyDir(dir.stat) {
		return fmt.Errorf("link %s sits in %s, which a non-root account can write (owner %d, mode %#o)",
			full, dir.path, dir.stat.Uid, dir.stat.Mode&0o7777)
	}
	return nil
}

func readLinkFD(fd int) (string, error) {
	buf := make([]byte, maxPathLen+1)
	n, err := unix.Readlinkat(fd, "", buf)
	if err != nil {
		return "", err
	}
	if n > maxPathLen {
		return "", fmt.Errorf("target longer than %d bytes", maxPathLen)
	}
	if n == 0 {
		return "", fmt.Errorf("empty target")
	}
	return string(buf[:n]), nil
}

// components splits a path into its non-empty names, dropping ".".
func components(p string) []string {
	var out []string
	for c := range strings.SplitSeq(p, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func (w *walker) top() dirRef { return w.stack[len(w.stack)-1] }

// pop goes to the parent; ".." at "/" stays at "/", as the kernel does.
func (w *walker) pop() {
	if len(w.stack) > 1 {
		unix.Close(w.top().fd)
		w.stack = w.stack[:len(w.stack)-1]
	}
}

func (w *walker) reset() {
	for len(w.stack) > 1 {
		w.pop()
	}
}

func (w *walker) close() {
	for _, d := range w.stack {
		unix.Close(d.fd)
	}
	w.stack = nil
}

// openForRead turns a judged O_PATH descriptor into a readable file without
// a second path walk: it reopens the very inode through /proc/self/fd. Only
// regular files and directories qualify, because opening a FIFO blocks and
// opening a device can have effects (a watchdog, a tape rewind) before any
// byte is read.
func openForRead(r *resolved) (*os.File, error) {
	switch r.stat.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFDIR:
	default:
		return nil, fmt.Errorf("%w: %s is not a regular file or directory", ErrPathRefused, r.path)
	}
	via := "/proc/self/fd/" + strconv.Itoa(int(r.file.Fd()))
	fd, err := unix.Open(via, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrPathRefused, r.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != r.stat.Dev || st.Ino != r.stat.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s changed while it was opened", ErrPathRefused, r.path)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("clear O_NONBLOCK on %s: %w", r.path, err)
	}
	return os.NewFile(uintptr(fd), r.path), nil
}
