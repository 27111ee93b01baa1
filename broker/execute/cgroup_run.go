package execute

import (
	"bufio"
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroups is the runner's share of the cgroup hierarchies: one parent
// directory per hierarchy, under this process's own cgroup, holding one
// child cgroup per run.
type cgroups struct {
	// v2Parent holds run cgroups in cgroup2; "" when the v2 kill path is
	// not used.
	v2Parent string
	// v2Ctl lists controllers enabled for v2 run cgroups (a pure v2 host
	// where the controller is delegated to us).
	v2Ctl map[string]bool
	// v1Parent and v1Home map a v1 controller to the runs' parent and to
	// this process's own cgroup (where the starter thread returns).
	v1Parent  map[string]string
	v1Home    map[string]string
	created   []string
	createdMu sync.Mutex
	// prefix names this runner's run cgroups: run-<pid>-<runner>-.
	prefix string
	log    *slog.Logger
}

// runnerSeq and runSeq number runners and run cgroups in this process.
var runnerSeq, runSeq atomic.Uint64

// setupCgroups creates the runner's parent cgroups. wantV2 is false when
// the subreaper path is forced. Missing hierarchies are not errors: the
// runner reports what it could set up.
// Starter threads return to the broker's own leaf, when it moved into one.
func setupCgroups(l cgroupLayout, leaf ownLeaf, name string, wantV2 bool, log *slog.Logger) (*cgroups, error) {
	c := &cgroups{
		v2Ctl: map[string]bool{}, v1Parent: map[string]string{}, v1Home: map[string]string{}, log: log,
		prefix: fmt.Sprintf("run-%d-%d-", os.Getpid(), runnerSeq.Add(1)),
	}
	if wantV2 && l.v2Self != "" {
		if err := c.setupV2(l, name); err != nil {
			log.Warn("cgroup v2 kill unavailable, using the subreaper helper", "err", err)
		}
	}
	for _, ctl := range v1Controllers {
		self := l.v1Self[ctl]
		if self == "" || c.v2Ctl[ctl] {
			continue
		}
		parent := filepath.Join(self, name)
		if err := c.mkdir(parent); err != nil {
			log.Warn("cgroup v1 controller unavailable", "controller", ctl, "err", err)
			continue
		}
		c.v1Parent[ctl], c.v1Home[ctl] = parent, cmp.Or(leaf.v1[ctl], self)
	}
	c.sweep()
	return c, nil
}

func (c *cgroups) setupV2(l cgroupLayout, name string) error {
	parent := filepath.Join(l.v2Self, name)
	if err := c.mkdir(parent); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(parent, "cgroup.kill")); err != nil {
		return fmt.Errorf("no cgroup.kill in %s (kernel older than 5.14?): %w", parent, err)
	}
	c.v2Parent = parent
	avail, _ := os.ReadFile(filepath.Join(l.v2Self, "cgroup.controllers"))
	for _, ctl := range v1Controllers {
		if l.v1Self[ctl] != "" || !slices.Contains(strings.Fields(string(avail)), ctl) {
			continue
		}
		// Enabling a controller for our children fails on a non-root
		// cgroup that holds processes (the "no internal processes" rule);
		// then the cap is simply unavailable, and reported so.
		if writeFile(filepath.Join(l.v2Self, "cgroup.subtree_control"), "+"+ctl) == nil &&
			writeFile(filepath.Join(parent, "cgroup.subtree_control"), "+"+ctl) == nil {
			c.v2Ctl[ctl] = true
		}
	}
	return nil
}

func (c *cgroups) mkdir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err == nil {
		// The janitor's goroutine and a run recreating a parent that
		// another runner removed can both get here.
		c.createdMu.Lock()
		c.created = append(c.created, dir)
		c.createdMu.Unlock()
		return nil
	}
	if errors.Is(err, fs.ErrExist) {
		// A hierarchy mounted read-only (a container's v1 controllers)
		// still shows directories made outside it: usable only if writable.
		if err := unix.Access(dir, unix.W_OK); err != nil {
			return fmt.Errorf("cgroup %s exists but is not writable: %w", dir, err)
		}
		return nil
	}
	return fmt.Errorf("create cgroup %s: %w", dir, err)
}

func (c *cgroups) parents() []string {
	var out []string
	if c.v2Parent != "" {
		out = append(out, c.v2Parent)
	}
	for _, ctl := range v1Controllers {
		if p := c.v1Parent[ctl]; p != "" {
			out = append(out, p)
		}
	}
	return out
}

// sweep removes run cgroups that a dead broker left behind, killing what
// still runs in them. Runs of live processes (another runner, a test in
// parallel) are left alone.
func (c *cgroups) sweep() {
	for _, parent := range c.parents() {
		entries, _ := os.ReadDir(parent)
		for _, e := range entries {
			pid, ok := runOwner(e.Name())
			if !ok || !e.IsDir() || pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
				continue
			}
			dir := filepath.Join(parent, e.Name())
			_ = writeFile(filepath.Join(dir, "cgroup.kill"), "1")
			killMembers(dir)
			if err := removeCgroup(dir, time.Second); err != nil {
				c.log.Warn("stale run cgroup left", "dir", dir, "err", err)
			} else {
				c.log.Info("removed stale run cgroup", "dir", dir)
			}
		}
	}
}

// runOwner reads the broker pid from a run cgroup name "run-<pid>-...".
func runOwner(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "run-")
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	return pid, err == nil && pid > 0
}

// close removes the parents when they are empty, whoever created them:
// runners whose lifetimes overlap in one cgroup (tests, a broker restarted
// outside systemd) share the parents, and the last one out removes them. A
// parent another runner still uses is busy and stays; that runner
// recreates one removed under it (newRun).
func (c *cgroups) close() {
	for _, dir := range slices.Backward(c.parents()) {
		if err := unix.Rmdir(dir); err != nil && err != unix.EBUSY && err != unix.ENOTEMPTY && err != unix.ENOENT {
			c.log.Warn("remove cgroup parent", "dir", dir, "err", err)
		}
	}
}

// ensureParent recreates a parent another runner removed between our setup
// and this run, with the controllers we enabled in it.
func (c *cgroups) ensureParent(parent string) error {
	if err := c.mkdir(parent); err != nil {
		return err
	}
	if parent != c.v2Parent {
		return nil
	}
	for ctl, on := range c.v2Ctl {
		if on {
			if err := writeFile(filepath.Join(parent, "cgroup.subtree_control"), "+"+ctl); err != nil {
				return fmt.Errorf("re-enable %s in %s: %w", ctl, parent, err)
			}
		}
	}
	return nil
}

// runCgroup is one run's cgroups.
type runCgroup struct {
	// cg is the runner's parents, recreated if another runner removed them.
	cg *cgroups
	// limits is what the cgroups are set to, so a spare whose limits
	// already match is used without writes.
	limits Limits
	v2Dir  string
	// v2FD is the v2 directory for CLONE_INTO_CGROUP, -1 without v2.
	v2FD  int
	v2Ctl map[string]bool
	v1    []v1Run
	// Control files read after every run, opened ahead of time and read
	// with pread: cgroup.events (v2), the OOM and task limit counters,
	// and the v1 cgroup.procs files where there is no v2 cgroup.
	events, oom, pidsEvents *os.File
	v1Procs                 []*os.File
}

// v1Run is one v1 controller's cgroup for a run, with the tasks files the
// starter thread writes its thread id into (run) and back out of (home).
type v1Run struct {
	ctl, dir  string
	memsw     bool // swap accounting: memory.memsw.limit_in_bytes exists
	tasks     *os.File
	homeTasks *os.File
}

// setLimits writes the run's cap into this controller's cgroup. The task
// limit has one extra slot for the starter thread (see newRun).
func (v *v1Run) setLimits(lim Limits) error {
	switch v.ctl {
	case "memory":
		// memory+swap gets the same cap as memory, so the run cannot spill
		// into swap. The kernel wants memsw >= memory at every step, so
		// the order depends on whether the cap goes up or down.
		mem := strconv.FormatInt(lim.ChildMemory, 10)
		files := []string{"memory.limit_in_bytes"}
		if v.memsw {
			files = append(files, "memory.memsw.limit_in_bytes")
			if cur, err := numberFile(filepath.Join(v.dir, files[1])); err == nil && lim.ChildMemory > cur {
				files[0], files[1] = files[1], files[0]
			}
		}
		for _, f := range files {
			if err := writeFile(filepath.Join(v.dir, f), mem); err != nil {
				return err
			}
		}
	case "pids":
		return writeFile(filepath.Join(v.dir, "pids.max"), strconv.Itoa(lim.ChildTasks+1))
	}
	return nil
}

// numberFile reads a control file holding one number.
func numberFile(file string) (int64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// newRun creates the cgroups of one run and sets its limits. The v1 task
// limit has one extra slot: the thread that starts the stages sits in the
// cgroup while it forks them.
func (c *cgroups) newRun(lim Limits) (_ *runCgroup, err error) {
	name := c.prefix + strconv.FormatUint(runSeq.Add(1), 10)
	rc := &runCgroup{v2FD: -1, v2Ctl: c.v2Ctl, cg: c}
	defer func() {
		if err != nil {
			rc.remove(0)
		}
	}()
	if c.v2Parent != "" {
		if err := rc.createV2(filepath.Join(c.v2Parent, name), lim); err != nil {
			return nil, err
		}
	}
	for _, ctl := range v1Controllers {
		if c.v1Parent[ctl] == "" {
			continue
		}
		if err := rc.createV1(ctl, filepath.Join(c.v1Parent[ctl], name), c.v1Home[ctl], lim); err != nil {
			return nil, err
		}
	}
	rc.limits = lim
	return rc, nil
}

// mkdirRun creates a run cgroup, recreating its parent once if another
// runner removed it.
func (c *cgroups) mkdirRun(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if errors.Is(err, fs.ErrNotExist) {
		if perr := c.ensureParent(filepath.Dir(dir)); perr != nil {
			return perr
		}
		err = os.Mkdir(dir, 0o700)
	}
	return err
}

func (rc *runCgroup) createV2(dir string, lim Limits) error {
	if err := rc.cg.mkdirRun(dir); err != nil {
		return fmt.Errorf("create run cgroup: %w", err)
	}
	rc.v2Dir = dir
	if rc.v2Ctl["memory"] {
		_ = writeFile(filepath.Join(dir, "memory.swap.max"), "0") // absent without swap accounting
	}
	if err := rc.setLimits(lim); err != nil {
		return err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open run cgroup: %w", err)
	}
	rc.v2FD = fd
	if rc.events, err = os.Open(filepath.Join(dir, "cgroup.events")); err != nil {
		return fmt.Errorf("open run cgroup events: %w", err)
	}
	if rc.v2Ctl["memory"] {
		if rc.oom, err = os.Open(filepath.Join(dir, "memory.events")); err != nil {
			return fmt.Errorf("open run cgroup memory events: %w", err)
		}
	}
	if rc.v2Ctl["pids"] {
		if rc.pidsEvents, err = os.Open(filepath.Join(dir, "pids.events")); err != nil {
			return fmt.Errorf("open run cgroup pids events: %w", err)
		}
	}
	return nil
}

func (rc *runCgroup) createV1(ctl, dir, home string, lim Limits) error {
	if err := rc.cg.mkdirRun(dir); err != nil {
		return fmt.Errorf("create %s run cgroup: %w", ctl, err)
	}
	_, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes"))
	rc.v1 = append(rc.v1, v1Run{ctl: ctl, dir: dir, memsw: err == nil})
	last := &rc.v1[len(rc.v1)-1]
	if err := last.setLimits(lim); err != nil {
		return err
	}
	if last.tasks, err = os.OpenFile(filepath.Join(dir, "tasks"), os.O_WRONLY, 0); err != nil {
		return fmt.Errorf("open %s run cgroup tasks: %w", ctl, err)
	}
	if last.homeTasks, err = os.OpenFile(filepath.Join(home, "tasks"), os.O_WRONLY, 0); err != nil {
		return fmt.Errorf("open %s home cgroup tasks: %w", ctl, err)
	}
	counter := map[string]**os.File{"memory": &rc.oom, "pids": &rc.pidsEvents}[ctl]
	file := map[string]string{"memory": "memory.oom_control", "pids": "pids.events"}[ctl]
	if *counter, err = os.Open(filepath.Join(dir, file)); err != nil {
		return fmt.Errorf("open %s: %w", file, err)
	}
	if rc.v2Dir == "" {
		procs, err := os.Open(filepath.Join(dir, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("open %s run cgroup procs: %w", ctl, err)
		}
		rc.v1Procs = append(rc.v1Procs, procs)
	}
	return nil
}

// placements are the v1 cgroups the starter thread must sit in while it
// forks the stages.
func (rc *runCgroup) placements() []placement {
	var out []placement
	for _, v := range rc.v1 {
		out = append(out, placement{run: v.tasks, home: v.homeTasks})
	}
	return out
}

// kill ends every process in the run's v2 cgroup at once, including those
// that called setsid or were reparented away from us.
func (rc *runCgroup) kill() error {
	if rc.v2Dir == "" {
		return nil
	}
	return writeFile(filepath.Join(rc.v2Dir, "cgroup.kill"), "1")
}

// killV1 signals what is left in the v1 cgroups; a last resort when the
// subreaper helper itself failed.
func (rc *runCgroup) killV1() {
	for _, v := range rc.v1 {
		killMembers(v.dir)
	}
}

func killMembers(dir string) {
	for _, pid := range cgroupProcs(dir) {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
}

// members lists the processes in the run's cgroups.
func (rc *runCgroup) members() []int {
	var out []int
	if rc.v2Dir != "" {
		out = append(out, cgroupProcs(rc.v2Dir)...)
	}
	for _, v := range rc.v1 {
		out = append(out, cgroupProcs(v.dir)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for f := range strings.FieldsSeq(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// populated reports whether any process is left in the run.
func (rc *runCgroup) populated() bool {
	if rc.events != nil {
		if v, ok := keyedValue(rc.events, "populated"); ok {
			return v != 0
		}
	}
	var buf [64]byte
	for _, f := range rc.v1Procs {
		if n, _ := f.ReadAt(buf[:], 0); n > 0 {
			return true
		}
	}
	return rc.events == nil && len(rc.v1Procs) == 0 && len(rc.members()) > 0
}

// waitEmpty polls until the run's cgroups hold no process, for at most
// grace. Killed tasks leave within microseconds; a zombie does not count.
func (rc *runCgroup) waitEmpty(grace time.Duration) bool {
	deadline := time.Now().Add(grace)
	for pause := 50 * time.Microsecond; rc.populated(); pause = min(2*pause, 5*time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
	}
	return true
}

// memoryHit reports an OOM kill inside the run (memory.events in v2,
// memory.oom_control in v1; both count "oom_kill").
func (rc *runCgroup) memoryHit() bool {
	v, _ := keyedValue(rc.oom, "oom_kill")
	return v > 0
}

// tasksHit reports a fork refused by the task limit.
func (rc *runCgroup) tasksHit() bool {
	v, _ := keyedValue(rc.pidsEvents, "max")
	return v > 0
}

// remove closes the run's descriptors and deletes its cgroups, waiting up
// to grace for them to empty.
func (rc *runCgroup) remove(grace time.Duration) error {
	if rc.v2FD >= 0 {
		unix.Close(rc.v2FD)
		rc.v2FD = -1
	}
	closeFiles(rc.events, rc.oom, rc.pidsEvents)
	closeFiles(rc.v1Procs...)
	var errs []error
	for _, v := range rc.v1 {
		closeFiles(v.tasks, v.homeTasks)
		errs = append(errs, removeCgroup(v.dir, grace))
	}
	if rc.v2Dir != "" {
		errs = append(errs, removeCgroup(rc.v2Dir, grace))
	}
	return errors.Join(errs...)
}

func removeCgroup(dir string, grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// keyedValue reads "key value" from an open cgroup flat-keyed file; each
// read from offset 0 regenerates the content.
func keyedValue(f *os.File, key string) (int64, bool) {
	if f == nil {
		return 0, false
	}
	var buf [1024]byte
	n, err := f.ReadAt(buf[:], 0)
	if n == 0 && err != nil {
		return 0, false
	}
	return parseKeyed(buf[:n], key)
}

// parseKeyed finds "key value" lines in a cgroup flat-keyed file.
func parseKeyed(b []byte, key string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// writeFile writes to an existing control file; cgroupfs takes one write.
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", file, err)
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("write %s: %w", file, werr)
	}
	return cerr
}

func closeFiles(files ...*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}
