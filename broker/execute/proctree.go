package execute

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// procStat is what the process-tree walk needs from /proc/<pid>/stat.
type procStat struct {
	pid   int
	state byte
	ppid  int
}

// parseStat parses "pid (comm) state ppid ...". comm is chosen by the
// process itself and may hold spaces and parentheses, so the fields after
// it are found from the last ')'.
func parseStat(b []byte) (procStat, error) {
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 1 || closing < open {
		return procStat{}, fmt.Errorf("malformed stat %q", truncate(string(b), 64))
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil || pid <= 0 {
		return procStat{}, fmt.Errorf("malformed stat pid %q", truncate(string(b[:open]), 32))
	}
	rest := bytes.Fields(b[closing+1:])
	if len(rest) < 2 || len(rest[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed stat fields after comm")
	}
	ppid, err := strconv.Atoi(string(rest[1]))
	if err != nil || ppid < 0 {
		return procStat{}, fmt.Errorf("malformed stat ppid %q", truncate(string(rest[1]), 32))
	}
	return procStat{pid: pid, state: rest[0][0], ppid: ppid}, nil
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// descendants lists the live (not zombie) descendants of root, found by
// following parent pids through /proc. Processes that vanish during the
// scan are skipped.
func descendants(root int) (map[int]bool, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return nil, fmt.Errorf("read /proc: %w", err)
	}
	children := map[int][]procStat{}
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], st)
		}
	}
	out := map[int]bool{}
	queue := []int{root}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if out[c.pid] || c.pid == root {
				continue
			}
			if c.state != 'Z' && c.state != 'X' {
				out[c.pid] = true
			}
			queue = append(queue, c.pid)
		}
	}
	return out, nil
}

// signalDescendant sends sig to pid only if, once pinned by a pidfd, the
// process still hangs below root (its parent is root or in tree). A pid
// recycled by an unrelated process after the scan is left alone; a process
// that died after pinning just makes the signal fail with ESRCH.
func signalDescendant(pid, root int, tree map[int]bool, sig unix.Signal) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	st, err := readStat(pid)
	if err != nil || (st.ppid != root && !tree[st.ppid]) {
		return
	}
	_ = unix.PidfdSendSignal(fd, sig, nil, 0)
}

// killTree stops and then kills every live descendant of root once. Stopped
// processes cannot fork, so a run that keeps forking shrinks every round;
// the caller repeats until it has no children left.
func killTree(root int) int {
	tree, err := descendants(root)
	if err != nil {
		return 0
	}
	for pid := range tree {
		signalDescendant(pid, root, tree, unix.SIGSTOP)
	}
	for pid := range tree {
		signalDescendant(pid, root, tree, unix.SIGKILL)
	}
	return len(tree)
}
