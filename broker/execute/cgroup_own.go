package execute

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OwnCgroup says whether the broker moves itself into a leaf cgroup of its
// own at start.
type OwnCgroup int

const (
	// OwnCgroupNever leaves the process where it is.
	OwnCgroupNever OwnCgroup = iota
	// OwnCgroupAuto moves it when its cgroup is delegated to it: systemd
	// marks a unit's cgroup with the trusted.delegate (or user.delegate)
	// extended attribute when the unit has Delegate=yes.
	OwnCgroupAuto
	// OwnCgroupAlways moves it whenever it sits in a cgroup other than
	// the root.
	OwnCgroupAlways
)

// ownLeafName is the leaf the broker moves into, beside the runs' parent.
const ownLeafName = "broker"

// ownLeaf is where the process moved: its leaf cgroup in cgroup2 and in
// each v1 hierarchy used; empty when it did not move.
type ownLeaf struct {
	v2 string
	v1 map[string]string
}

// delegated reports whether systemd delegated the cgroup2 directory dir.
func delegated(dir string) bool {
	buf := make([]byte, 8)
	for _, attr := range []string{"trusted.delegate", "user.delegate"} {
		if n, err := unix.Getxattr(dir, attr, buf); err == nil && strings.TrimSpace(string(buf[:n])) == "1" {
			return true
		}
	}
	return false
}

// moveToLeaf moves this process into <own>/broker in cgroup2 and in the v1
// memory and pids hierarchies, so that its own cgroup holds no process:
// the runs' parent then sits beside the broker's leaf, the broker's memory
// can be capped without capping the runs, and on a pure cgroup2 host the
// controllers can be enabled below (the "no internal processes" rule). The
// layout's own paths stay the runs' base.
func moveToLeaf(l cgroupLayout, mode OwnCgroup, log *slog.Logger) (ownLeaf, error) {
	leaf := ownLeaf{v1: map[string]string{}}
	if mode == OwnCgroupNever || l.v2Self == "" || l.v2Self == l.v2Mount {
		return leaf, nil
	}
	if mode == OwnCgroupAuto && !delegated(l.v2Self) {
		return leaf, nil
	}
	pid := strconv.Itoa(os.Getpid())
	dir, err := joinLeaf(l.v2Self, pid)
	if err != nil {
		return leaf, err
	}
	leaf.v2 = dir
	// Now the own cgroup is empty, its children may get controllers; the
	// broker's leaf needs memory for its cap.
	avail, _ := os.ReadFile(filepath.Join(l.v2Self, "cgroup.controllers"))
	for _, ctl := range v1Controllers {
		if slices.Contains(strings.Fields(string(avail)), ctl) {
			if err := writeFile(filepath.Join(l.v2Self, "cgroup.subtree_control"), "+"+ctl); err != nil {
				log.Warn("enable controller for the broker's leaf", "controller", ctl, "err", err)
			}
		}
	}
	for _, ctl := range v1Controllers {
		if self := l.v1Self[ctl]; self != "" {
			// A v1 hierarchy may be mounted read-only (a container, the
			// nspawn test bed): the broker then runs without its v1 leaf
			// (no v1 memory cap) rather than not at all.
			d, err := joinLeaf(self, pid)
			if err != nil {
				log.Warn("no leaf cgroup of its own in a v1 hierarchy", "controller", ctl, "err", err)
				continue
			}
			leaf.v1[ctl] = d
		}
	}
	log.Info("moved into a leaf cgroup of its own", "cgroup", leaf.v2)
	return leaf, nil
}

// joinLeaf creates parent/broker and moves the process into it.
func joinLeaf(parent, pid string) (string, error) {
	dir := filepath.Join(parent, ownLeafName)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("create own leaf cgroup: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "cgroup.procs"), pid); err != nil {
		return "", fmt.Errorf("join own leaf cgroup: %w", err)
	}
	return dir, nil
}

// ErrNoOwnCgroup means the broker has no leaf cgroup to cap.
var ErrNoOwnCgroup = errors.New("the broker has no cgroup of its own")

// SetOwnMemoryLimit caps the memory of the broker process itself, in its
// leaf cgroup (see Config.OwnCgroup): memory.max in cgroup2, or
// memory.limit_in_bytes (and the memory+swap limit) in the v1 memory
// hierarchy. The runs are not under it. It returns ErrNoOwnCgroup when the
// broker did not move into a leaf or the memory controller is not there.
func (r *Runner) SetOwnMemoryLimit(bytes int64) error {
	v := strconv.FormatInt(bytes, 10)
	if dir := r.leaf.v2; dir != "" {
		if _, err := os.Stat(filepath.Join(dir, "memory.max")); err == nil {
			return writeFile(filepath.Join(dir, "memory.max"), v)
		}
	}
	if dir := r.leaf.v1["memory"]; dir != "" {
		run := v1Run{ctl: "memory", dir: dir}
		_, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
		run.memsw = err == nil
		return run.setLimits(Limits{ChildMemory: bytes})
	}
	return ErrNoOwnCgroup
}
