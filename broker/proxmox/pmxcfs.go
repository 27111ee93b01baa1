package proxmox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LocalNode reads the local node's name from pmxcfs: <root>/local is a
// symlink to "nodes/<name>". The name must be a valid node name and match
// this host's short hostname, or pmxcfs and the host disagree about who we
// are and nothing is read.
func (r *Reader) LocalNode() (string, error) {
	target, err := os.Readlink(filepath.Join(r.cfg.PmxcfsRoot, "local"))
	if err != nil {
		return "", fmt.Errorf("read pmxcfs local node link: %w", err)
	}
	name, ok := strings.CutPrefix(target, "nodes/")
	if !ok || !ValidNodeName(name) {
		return "", fmt.Errorf("pmxcfs local link points to %q, not nodes/<node>", target)
	}
	host, err := r.cfg.Hostname()
	if err != nil {
		return "", fmt.Errorf("hostname: %w", err)
	}
	short, _, _ := strings.Cut(host, ".")
	if !strings.EqualFold(short, name) {
		return "", fmt.Errorf("pmxcfs local node %q is not this host (%q)", name, short)
	}
	return name, nil
}

// guestDirs are the pmxcfs directories of each guest kind under nodes/<node>.
var guestDirs = map[string]string{KindLXC: "lxc", KindQEMU: "qemu-server"}

// readGuestConfig reads <root>/nodes/<local>/<dir>/<vmid>.conf. The final
// component is opened with O_NOFOLLOW, and the path the kernel actually
// opened must be exactly the expected one, so a symlinked directory or file
// (into priv/, to a node key, out of pmxcfs) is refused.
func (r *Reader) readGuestConfig(local, kind string, vmid int) ([]byte, error) {
	realRoot, err := filepath.EvalSymlinks(r.cfg.PmxcfsRoot)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "pmxcfs root: %v", err)
	}
	rel := filepath.Join("nodes", local, guestDirs[kind], strconv.Itoa(vmid)+".conf")
	want := filepath.Join(realRoot, rel)
	fd, err := unix.Open(want, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	switch {
	case errors.Is(err, unix.ENOENT):
		return nil, status.Errorf(codes.NotFound, "guest config %s does not exist", rel)
	case errors.Is(err, unix.ELOOP):
		return nil, status.Errorf(codes.PermissionDenied, "guest config %s is a symlink", rel)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "open guest config %s: %v", rel, err)
	}
	f := os.NewFile(uintptr(fd), want)
	defer f.Close()

	got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "resolve opened guest config: %v", err)
	}
	if got != want || underPriv(got, realRoot) {
		return nil, status.Errorf(codes.PermissionDenied, "guest config %s resolves to %s, outside %s", rel, got, filepath.Join(realRoot, "nodes", local))
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, status.Errorf(codes.Internal, "stat guest config: %v", err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, status.Errorf(codes.PermissionDenied, "guest config %s is not a regular file", rel)
	}
	data, err := io.ReadAll(io.LimitReader(f, int64(r.cfg.OutputCap)+1))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read guest config %s: %v", rel, err)
	}
	if len(data) > r.cfg.OutputCap {
		return nil, status.Errorf(codes.ResourceExhausted, "guest config %s larger than %d bytes", rel, r.cfg.OutputCap)
	}
	return data, nil
}

// underPriv guards Proxmox's secrets directory explicitly, whatever the
// path arithmetic above says.
func underPriv(p, root string) bool {
	priv := filepath.Join(root, "priv")
	return p == priv || strings.HasPrefix(p, priv+string(filepath.Separator))
}
