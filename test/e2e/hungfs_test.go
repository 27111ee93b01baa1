package e2e

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// hungFS is a FUSE file system that answers the kernel's handshake and
// attribute requests for its root, and never answers a name lookup: any
// path walk into it blocks, as on a hung network mount, until the test
// aborts the connection.
type hungFS struct {
	dir  string
	dev  int // /dev/fuse, non-blocking
	stop atomic.Bool
	wg   sync.WaitGroup
	once sync.Once
}

// FUSE protocol constants (include/uapi/linux/fuse.h).
const (
	fuseLookup  = 1
	fuseGetattr = 3
	fuseInit    = 26
	fuseInHdr   = 40
	fuseOutHdr  = 16
)

func mountHung(t *testing.T, dir string) *hungFS {
	t.Helper()
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/fuse here: %v", err)
	}
	opts := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other", dev)
	if err := unix.Mount("nannyagent-hung", dir, "fuse", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		unix.Close(dev)
		t.Skipf("cannot mount FUSE here: %v", err)
	}
	h := &hungFS{dir: dir, dev: dev}
	h.wg.Go(h.serve)
	t.Cleanup(h.abort)
	return h
}

// abort unmounts and closes the device, the connection's last user, so
// the kernel aborts it and every blocked lookup fails.
func (h *hungFS) abort() {
	h.once.Do(func() {
		_ = unix.Unmount(h.dir, unix.MNT_DETACH)
		h.stop.Store(true)
		h.wg.Wait()
		unix.Close(h.dev)
	})
}

func (h *hungFS) serve() {
	buf := make([]byte, 1<<17+4096)
	le := binary.LittleEndian
	for !h.stop.Load() {
		n, err := unix.Read(h.dev, buf)
		if err == unix.EAGAIN {
			_, _ = unix.Poll([]unix.PollFd{{Fd: int32(h.dev), Events: unix.POLLIN}}, 50)
			continue
		}
		if err != nil {
			return
		}
		if n < fuseInHdr {
			continue
		}
		opcode, unique, nodeid := le.Uint32(buf[4:]), le.Uint64(buf[8:]), le.Uint64(buf[16:])
		switch {
		case opcode == fuseInit:
			out := make([]byte, 64)
			le.PutUint32(out[0:], 7)     // major
			le.PutUint32(out[4:], 31)    // minor
			le.PutUint32(out[8:], 4096)  // max_readahead
			le.PutUint32(out[20:], 4096) // max_write
			h.reply(unique, 0, out)
		case opcode == fuseGetattr && nodeid == 1:
			out := make([]byte, 104)           // fuse_attr_out
			le.PutUint64(out[16:], 1)          // ino
			le.PutUint32(out[16+60:], 0o40755) // mode
			le.PutUint32(out[16+64:], 2)       // nlink
			le.PutUint32(out[16+80:], 4096)    // blksize
			h.reply(unique, 0, out)
		case opcode == fuseLookup:
			// never answered: the walk hangs here
		default:
			h.reply(unique, -int32(unix.ENOSYS), nil)
		}
	}
}

func (h *hungFS) reply(unique uint64, errno int32, body []byte) {
	out := make([]byte, fuseOutHdr+len(body))
	binary.LittleEndian.PutUint32(out[0:], uint32(len(out)))
	binary.LittleEndian.PutUint32(out[4:], uint32(errno))
	binary.LittleEndian.PutUint64(out[8:], unique)
	copy(out[fuseOutHdr:], body)
	_, _ = unix.Write(h.dev, out)
}
