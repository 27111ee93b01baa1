// Command fswatch records, with fanotify filesystem marks, every file
// created, changed, removed or renamed on the host's file systems by a
// process of its own PID namespace, until its standard input closes; then
// it prints each event as one line of JSON.
//
// Run inside the broker's PID namespace (nsenter --target BROKER --pid),
// it sees exactly what the broker and the processes it starts change: the
// kernel reports the pid of an event as seen from the watcher's
// namespace, and 0 for a process outside it (every other process on the
// host), so attribution needs no race-prone look-up of short-lived pids.
// The first line of output is "READY <marked> <skipped>" once the marks
// are in place.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event is one recorded change.
type Event struct {
	PID  int32    `json:"pid"`
	Mask []string `json:"mask"`
	Path string   `json:"path"`
}

const watchMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_MOVED_FROM | unix.FAN_MOVED_TO |
	unix.FAN_MODIFY | unix.FAN_CLOSE_WRITE | unix.FAN_ATTRIB | unix.FAN_DELETE_SELF | unix.FAN_MOVE_SELF | unix.FAN_ONDIR

// pseudo are file systems with no files a command could leave behind (or
// that fanotify cannot mark); fuse is skipped so a hung FUSE mount of
// another test cannot hang the watcher.
var pseudo = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "tracefs": true, "debugfs": true,
	"securityfs": true, "bpf": true, "fusectl": true, "configfs": true, "pstore": true, "devpts": true,
	"binfmt_misc": true, "autofs": true, "mqueue": true, "hugetlbfs": true, "nsfs": true, "efivarfs": true,
	"rpc_pipefs": true, "fuse": true, "fuseblk": true,
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fswatch:", err)
		os.Exit(1)
	}
}

func run(stdin io.Reader, stdout io.Writer) error {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY|unix.O_LARGEFILE)
	if err != nil {
		return fmt.Errorf("fanotify_init: %w", err)
	}
	mounts, skipped, err := markAll(fd)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	fmt.Fprintf(out, "READY %d %d\n", len(mounts), len(skipped))
	out.Flush()
	var stop atomic.Bool
	go func() {
		_, _ = io.Copy(io.Discard, stdin)
		stop.Store(true)
	}()
	var events []Event
	buf := make([]byte, 256<<10)
	for {
		last := stop.Load()
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EAGAIN || n <= 0 {
				break
			}
			if err != nil {
				return fmt.Errorf("read events: %w", err)
			}
			events = append(events, parse(buf[:n], mounts)...)
		}
		if last {
			break
		}
		_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 100)
	}
	enc := json.NewEncoder(out)
	for _, e := range events {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	return out.Flush()
}

// markAll puts a filesystem mark on every real file system, once per
// device, and keeps a directory descriptor per file system id for
// open_by_handle_at.
func markAll(fd int) (map[[2]int32]int, []string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	mounts := map[[2]int32]int{}
	seenDev := map[string]bool{}
	var skipped []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		dev, mnt, fstype := fields[2], unescape(fields[4]), fields[sep+1]
		if pseudo[fstype] || strings.HasPrefix(fstype, "fuse.") || seenDev[dev] {
			continue
		}
		seenDev[dev] = true
		if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, watchMask, unix.AT_FDCWD, mnt); err != nil {
			skipped = append(skipped, fmt.Sprintf("%s (%s): %v", mnt, fstype, err))
			continue
		}
		var st unix.Statfs_t
		if err := unix.Statfs(mnt, &st); err != nil {
			continue
		}
		dir, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		mounts[st.Fsid.Val] = dir
	}
	if len(mounts) == 0 {
		return nil, skipped, fmt.Errorf("no file system could be marked: %v", skipped)
	}
	return mounts, skipped, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a blank).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// parse reads the events in one read's buffer; events of processes
// outside the namespace (pid 0) are dropped.
func parse(b []byte, mounts map[[2]int32]int) []Event {
	var out []Event
	le := binary.LittleEndian
	const metaLen = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))
	for len(b) >= metaLen {
		evLen := int(le.Uint32(b[0:]))
		if evLen < metaLen || evLen > len(b) {
			break
		}
		hdrLen := int(le.Uint16(b[6:]))
		mask := le.Uint64(b[8:])
		evfd := int32(le.Uint32(b[16:]))
		pid := int32(le.Uint32(b[20:]))
		if evfd >= 0 {
			unix.Close(int(evfd))
		}
		if pid != 0 {
			out = append(out, Event{PID: pid, Mask: maskNames(mask), Path: infoPath(b[hdrLen:evLen], mounts)})
		}
		b = b[evLen:]
	}
	return out
}

// infoPath turns a DFID_NAME info record into a path (best effort).
func infoPath(info []byte, mounts map[[2]int32]int) string {
	le := binary.LittleEndian
	for len(info) >= 4 {
		typ, recLen := info[0], int(le.Uint16(info[2:]))
		if recLen < 4 || recLen > len(info) {
			break
		}
		rec := info[:recLen]
		info = info[recLen:]
		if typ != unix.FAN_EVENT_INFO_TYPE_DFID_NAME && typ != unix.FAN_EVENT_INFO_TYPE_DFID {
			continue
		}
		if len(rec) < 4+8+8 {
			continue
		}
		fsid := [2]int32{int32(le.Uint32(rec[4:])), int32(le.Uint32(rec[8:]))}
		hbytes := int(le.Uint32(rec[12:]))
		htype := int32(le.Uint32(rec[16:]))
		if 20+hbytes > len(rec) {
			continue
		}
		handle := unix.NewFileHandle(htype, rec[20:20+hbytes])
		name := ""
		if typ == unix.FAN_EVENT_INFO_TYPE_DFID_NAME {
			name = strings.TrimRight(string(rec[20+hbytes:]), "\x00")
		}
		dir := "?"
		if mfd, ok := mounts[fsid]; ok {
			if dfd, err := unix.OpenByHandleAt(mfd, handle, unix.O_PATH|unix.O_CLOEXEC); err == nil {
				if p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(dfd)); err == nil {
					dir = p
				}
				unix.Close(dfd)
			}
		}
		if name == "" || name == "." {
			return dir
		}
		return filepath.Join(dir, name)
	}
	return "?"
}

func maskNames(m uint64) []string {
	names := []struct {
		bit  uint64
		name string
	}{
		{unix.FAN_CREATE, "create"}, {unix.FAN_DELETE, "delete"}, {unix.FAN_MOVED_FROM, "moved_from"},
		{unix.FAN_MOVED_TO, "moved_to"}, {unix.FAN_MODIFY, "modify"}, {unix.FAN_CLOSE_WRITE, "close_write"},
		{unix.FAN_ATTRIB, "attrib"}, {unix.FAN_DELETE_SELF, "delete_self"}, {unix.FAN_MOVE_SELF, "move_self"},
		{unix.FAN_ONDIR, "ondir"},
	}
	var out []string
	for _, n := range names {
		if m&n.bit != 0 {
			out = append(out, n.name)
		}
	}
	return out
}
