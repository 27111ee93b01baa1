// Command footprint is `make footprint`: it measures what nannyagent costs
// a host at rest. It starts a fake NannyAPI, the broker (socket-activated
// by default, as nannyagent-broker.socket runs it, or resident) and the
// worker (as daemon) as real processes in a cgroup of their own, registers
// the host, runs one whole diagnosis with commands and a tracepoint trace,
// lets the stack idle with its default intervals (metrics 30 s, Proxmox
// 300 s), and prints VmRSS, RssAnon and CPU for each of our processes. CPU
// comes from the cgroup (cgroup2 cpu.stat, and v1 cpuacct where mounted),
// so brokers that started and exited during the window count.
//
// Usage: footprint [-bin DIR] [-lifetime activated|resident]
// [-idle-exit D] [-settle D] [-cpu-window D]. Root only.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/repo"
	"github.com/nannyai/nannyagent/test/stack"
)

type options struct {
	bin       string
	lifetime  string
	idleExit  time.Duration
	settle    time.Duration
	cpuWindow time.Duration
	env       string
	profiles  string
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "", "directory with the built binaries (default: build them)")
	flag.StringVar(&o.lifetime, "lifetime", "activated", "the broker's lifetime: activated (socket activation, exits when idle) or resident")
	flag.DurationVar(&o.idleExit, "idle-exit", 0, "the activated broker's --idle-exit (0: the broker's default)")
	flag.DurationVar(&o.settle, "settle", 60*time.Second, "idle time after the diagnosis before memory is read")
	flag.DurationVar(&o.cpuWindow, "cpu-window", 10*time.Minute, "idle window over which CPU is measured (the goal is stated for 10m)")
	flag.StringVar(&o.env, "env", "", "extra environment for both daemons, comma-separated (e.g. GOGC=50)")
	flag.StringVar(&o.profiles, "heap-profiles", "", "write heap profiles and the runtime's memory classes of our processes into this directory when memory is read, and print them (-env GODEBUG=memprofilerate=1 makes the profiles exact, at a cost in memory that then shows in the table)")
	flag.Parse()
	if o.lifetime != "activated" && o.lifetime != "resident" {
		fmt.Fprintln(os.Stderr, "footprint: -lifetime is activated or resident")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "footprint: run as root (the broker is root, the worker runs as daemon, the cgroup is root's)")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "footprint:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	bin := o.bin
	if bin == "" {
		fmt.Fprintln(out, "building the binaries")
		b, err := stack.Build(ctx)
		if err != nil {
			return err
		}
		defer os.RemoveAll(b)
		bin = b
	} else {
		b, err := copyBinaries(bin)
		if err != nil {
			return err
		}
		defer os.RemoveAll(b)
		bin = b
	}
	if err := printSizes(out, bin); err != nil {
		return err
	}
	cg, err := newCgroups(fmt.Sprintf("nannyagent-footprint-%d", os.Getpid()))
	if err != nil {
		return err
	}
	defer cg.remove()

	api := fakeapi.New(fakeapi.Options{AutoApprove: true, AI: fakeapi.AIFunc(turn)})
	defer api.Close()
	policy, err := os.ReadFile(filepath.Join(mustRoot(), "packaging", "policy.yaml"))
	if err != nil {
		return err
	}
	opts := stack.Options{BinDir: bin, Policy: string(policy), APIURL: api.URL(), Cgroups: cg.dirs(),
		SocketActivated: o.lifetime == "activated",
		ExtraWorkerArgs: []string{"--register-poll-interval", "200ms"}}
	if o.idleExit > 0 {
		opts.ExtraBrokerArgs = []string{"--idle-exit", o.idleExit.String()}
	}
	var env []string
	if o.env != "" {
		env = strings.Split(o.env, ",")
	}
	if o.profiles != "" {
		if err := os.MkdirAll(o.profiles, 0o755); err != nil {
			return err
		}
		// The worker's account writes there too; sticky, as /tmp.
		if err := os.Chmod(o.profiles, 0o1777); err != nil {
			return err
		}
		env = append(env, "NANNYAGENT_HEAP_PROFILE_DIR="+o.profiles)
	}
	opts.BrokerEnv, opts.WorkerEnv = env, env
	s, err := stack.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := s.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "footprint: stop:", err)
		}
	}()
	fmt.Fprintf(out, "broker %s, worker as %s, cgroup %s\n", o.lifetime, s.Worker.Name, strings.Join(cg.dirs(), " and "))

	dctx, dcancel := context.WithTimeout(ctx, 2*time.Minute)
	defer dcancel()
	for _, args := range [][]string{{"register"}, {"diagnose", "Load is high and the disk is slow"}} {
		res := s.CLI(dctx, nil, args...)
		if res.Code != 0 {
			return fmt.Errorf("nannyagent %s exited %d:\n%s%s", args[0], res.Code, res.Stdout, res.Stderr)
		}
	}
	fmt.Fprintf(out, "registered and diagnosed (commands and a tracepoint trace); idling %s\n", o.settle)
	if err := sleep(ctx, o.settle); err != nil {
		return err
	}
	mem := cg.processes()
	if o.profiles != "" {
		printProfiles(out, o.profiles, mem)
	}
	fmt.Fprintf(out, "idling %s for CPU\n", o.cpuWindow)
	startAct := s.Activations()
	cpu0, err := cg.cpu()
	if err != nil {
		return err
	}
	ticks0 := ticksOf(mem)
	if err := sleep(ctx, o.cpuWindow); err != nil {
		return err
	}
	cpu1, err := cg.cpu()
	if err != nil {
		return err
	}
	after := cg.processes()
	printTable(out, o, mem, after, ticks0, cpu0, cpu1, s.Activations()-startAct)
	return nil
}

func mustRoot() string {
	r, err := repo.Root()
	if err != nil {
		fmt.Fprintln(os.Stderr, "footprint:", err)
		os.Exit(1)
	}
	return r
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// turn is a scripted model: commands first, then a tracepoint trace, then
// a resolution.
func turn(_ context.Context, t fakeapi.AITurn) (string, error) {
	var v any
	switch t.Round {
	case 1:
		v = map[string]any{"response_type": "diagnostic", "reasoning": "Look at load, memory, disk and the busiest processes.",
			"commands": []map[string]string{
				{"id": "cmd_1", "command": "uptime", "description": "load"},
				{"id": "cmd_2", "command": "free -m", "description": "memory"},
				{"id": "cmd_3", "command": "df -h /", "description": "disk"},
				{"id": "cmd_4", "command": "ps aux | sort -k3 -nr | head -n 5", "description": "busiest processes"},
				{"id": "cmd_5", "command": "cat /proc/loadavg", "description": "run queue"},
			}, "ebpf_programs": []any{}}
	case 2:
		v = map[string]any{"response_type": "diagnostic", "reasoning": "Which processes write, over 2 seconds?",
			"commands": []any{},
			"ebpf_programs": []map[string]any{{"name": "writers", "type": "tracepoint", "target": "syscalls:sys_enter_write",
				"duration": 2, "description": "which processes call write()"}}}
	default:
		v = map[string]string{"response_type": "resolution", "root_cause": "nothing is wrong: this is a measurement",
			"resolution_plan": "1. Nothing to do.", "confidence": "High", "ebpf_evidence": ""}
	}
	data, err := json.Marshal(v)
	return string(data), err
}

// cgroups are the measurement's cgroup in cgroup2 and, where mounted, in
// the v1 cpuacct hierarchy.
type cgroups struct {
	v2, cpuacct string
}

func newCgroups(name string) (*cgroups, error) {
	c := &cgroups{}
	for _, mount := range []struct {
		dir  *string
		root string
		stat string
	}{{&c.v2, "/sys/fs/cgroup/unified", "cpu.stat"}, {&c.v2, "/sys/fs/cgroup", "cpu.stat"}, {&c.cpuacct, "/sys/fs/cgroup/cpuacct", "cpuacct.usage"}} {
		if *mount.dir != "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(mount.root, "cgroup.procs")); err != nil {
			continue
		}
		dir := filepath.Join(mount.root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, mount.stat)); err != nil {
			os.Remove(dir)
			continue
		}
		*mount.dir = dir
	}
	if c.v2 == "" && c.cpuacct == "" {
		return nil, errors.New("no cgroup2 with cpu.stat and no v1 cpuacct hierarchy to measure CPU in")
	}
	return c, nil
}

func (c *cgroups) dirs() []string {
	var d []string
	for _, dir := range []string{c.v2, c.cpuacct} {
		if dir != "" {
			d = append(d, dir)
		}
	}
	return d
}

// remove deletes the cgroups, their children (the broker's run cgroups)
// first; processes still inside keep them.
func (c *cgroups) remove() {
	for _, dir := range c.dirs() {
		var all []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			_ = os.Remove(all[i])
		}
	}
}

// cpuUsage is the CPU time the cgroups' processes used so far, exited
// ones included.
type cpuUsage struct {
	v2, cpuacct time.Duration
}

func (c *cgroups) cpu() (cpuUsage, error) {
	var u cpuUsage
	if c.v2 != "" {
		data, err := os.ReadFile(filepath.Join(c.v2, "cpu.stat"))
		if err != nil {
			return u, err
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				u.v2 = time.Duration(n) * time.Microsecond
			}
		}
	}
	if c.cpuacct != "" {
		data, err := os.ReadFile(filepath.Join(c.cpuacct, "cpuacct.usage"))
		if err != nil {
			return u, err
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		u.cpuacct = time.Duration(n)
	}
	return u, nil
}

// proc is one of our processes as /proc shows it.
type proc struct {
	pid             int
	name            string
	vmRSS, rssAnon  int64 // KiB
	rssFile, rssShm int64
	ticks           int64 // utime+stime
}

// processes lists every process in the cgroup tree with its memory.
func (c *cgroups) processes() []proc {
	root := c.v2
	if root == "" {
		root = c.cpuacct
	}
	var ps []proc
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			pid, _ := strconv.Atoi(f)
			if pr, ok := readProc(pid); ok {
				ps = append(ps, pr)
			}
		}
		return nil
	})
	sort.Slice(ps, func(i, j int) bool { return ps[i].name < ps[j].name })
	return ps
}

func readProc(pid int) (proc, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return proc{}, false
	}
	defer f.Close()
	p := proc{pid: pid}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		n, _ := strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		switch k {
		case "Name":
			p.name = v
		case "VmRSS":
			p.vmRSS = n
		case "RssAnon":
			p.rssAnon = n
		case "RssFile":
			p.rssFile = n
		case "RssShmem":
			p.rssShm = n
		}
	}
	p.ticks = readTicks(pid)
	return p, true
}

// readTicks is utime+stime from /proc/PID/stat.
func readTicks(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return ut + st
}

func ticksOf(ps []proc) map[int]int64 {
	m := map[int]int64{}
	for _, p := range ps {
		m[p.pid] = p.ticks
	}
	return m
}

func mib(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }

func printTable(out io.Writer, o options, mem, after []proc, ticks0 map[int]int64, cpu0, cpu1 cpuUsage, activations int) {
	fmt.Fprintf(out, "\n%s after the diagnosis; CPU over the next %s (broker %s", o.settle, o.cpuWindow, o.lifetime)
	if o.lifetime == "activated" {
		fmt.Fprintf(out, ", %d activations in the window", activations)
	}
	fmt.Fprintln(out, ")")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| process | VmRSS | RssAnon | RssFile | CPU ticks in window |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	var rss, anon, file int64
	afterTicks := ticksOf(after)
	for _, p := range mem {
		ticks := "exited"
		if t, ok := afterTicks[p.pid]; ok {
			ticks = strconv.FormatInt(t-ticks0[p.pid], 10)
		}
		fmt.Fprintf(out, "| %s (pid %d) | %s | %s | %s | %s |\n", p.name, p.pid, mib(p.vmRSS), mib(p.rssAnon), mib(p.rssFile), ticks)
		rss, anon, file = rss+p.vmRSS, anon+p.rssAnon, file+p.rssFile
	}
	if o.lifetime == "activated" && !hasName(mem, "nannyagent-brok") {
		fmt.Fprintln(out, "| nannyagent-broker | exited (idle) | | | |")
	}
	window := cpu1.v2 - cpu0.v2
	if window == 0 {
		window = cpu1.cpuacct - cpu0.cpuacct
	}
	perMin := time.Duration(float64(window) / o.cpuWindow.Minutes())
	fmt.Fprintf(out, "| **all ours** | **%s** | **%s** | %s | **%s in %s = %s/min** (cgroup) |\n",
		mib(rss), mib(anon), mib(file), window.Round(time.Millisecond), o.cpuWindow, perMin.Round(100*time.Microsecond))
	if cpu0.cpuacct != 0 || cpu1.cpuacct != 0 {
		fmt.Fprintf(out, "\nv1 cpuacct agrees: %s in the window\n", (cpu1.cpuacct - cpu0.cpuacct).Round(time.Millisecond))
	}
	fmt.Fprintf(out, "\ngoals: RssAnon ≤ 4 MiB: %s; VmRSS ≤ 20 MiB: %s; CPU ≤ 10 ms/min: %s\n",
		verdict(anon <= 4<<10), verdict(rss <= 20<<10), verdict(perMin <= 10*time.Millisecond))
}

func hasName(ps []proc, name string) bool {
	for _, p := range ps {
		if p.name == name {
			return true
		}
	}
	return false
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

// printSizes prints the size of each binary.
func printSizes(out io.Writer, bin string) error {
	fmt.Fprintln(out, "| binary | size |")
	fmt.Fprintln(out, "|---|---|")
	for _, name := range []string{stack.CLI, stack.Worker, stack.Broker} {
		fi, err := os.Stat(filepath.Join(bin, name))
		if err != nil {
			return fmt.Errorf("%w (run make build first)", err)
		}
		fmt.Fprintf(out, "| %s | %s |\n", name, mib(fi.Size()/1024))
	}
	return nil
}

// copyBinaries copies the built binaries into a directory the worker's
// account can reach.
func copyBinaries(from string) (string, error) {
	dir, err := stack.WorldReadableTempDir("nannyagent-footprint-bin-")
	if err != nil {
		return "", err
	}
	for _, name := range []string{stack.CLI, stack.Broker, stack.Worker} {
		data, err := os.ReadFile(filepath.Join(from, name))
		if err == nil {
			err = os.WriteFile(filepath.Join(dir, name), data, 0o755)
		}
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("%w (run make build first)", err)
		}
	}
	return dir, nil
}

// printProfiles asks each process for a heap profile (SIGUSR1) and prints
// the top of each.
func printProfiles(out io.Writer, dir string, ps []proc) {
	for _, p := range ps {
		_ = syscall.Kill(p.pid, syscall.SIGUSR1)
	}
	time.Sleep(2 * time.Second)
	classes, _ := filepath.Glob(filepath.Join(dir, "*.memclasses"))
	for _, f := range classes {
		data, _ := os.ReadFile(f)
		fmt.Fprintf(out, "\n%s:\n%s", f, data)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.pprof"))
	for _, f := range files {
		fmt.Fprintf(out, "\nheap profile %s (in use):\n", f)
		cmd := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=25", f)
		cmd.Stdout, cmd.Stderr = out, io.Discard
		_ = cmd.Run()
	}
}
