package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/test/stack"
)

// What root may touch (issue 13): every test here sends its requests as
// the worker's account, through brokerrun, to the real broker process.

// workerRun is how asWorker sends its lines.
type workerRun struct {
	parallel int
	timeout  time.Duration
}

// asWorker sends command lines to the broker as the worker's account and
// returns the answers in order.
func asWorker(t *testing.T, s *stack.Stack, how workerRun, lines ...string) []*brokerv1.RunCommandResponse {
	t.Helper()
	if how.parallel == 0 {
		how.parallel = 1
	}
	if how.timeout == 0 {
		how.timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), how.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, stack.BrokerRun), "--socket", s.BrokerSocket,
		"--parallel", strconv.Itoa(how.parallel), "--timeout", how.timeout.String())
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.WorkerCred()}
	if err := cmd.Run(); err != nil {
		t.Fatalf("brokerrun as the worker: %v\n%s", err, errb.String())
	}
	var resps []*brokerv1.RunCommandResponse
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 32<<20), 32<<20)
	for sc.Scan() {
		r := &brokerv1.RunCommandResponse{}
		if err := protojson.Unmarshal(sc.Bytes(), r); err != nil {
			t.Fatalf("brokerrun answer: %v\n%s", err, sc.Text())
		}
		resps = append(resps, r)
	}
	if len(resps) != len(lines) {
		t.Fatalf("brokerrun answered %d of %d lines", len(resps), len(lines))
	}
	for i, r := range resps {
		if strings.HasPrefix(r.GetError(), "rpc: ") {
			t.Fatalf("%s: %s", lines[i], r.GetError())
		}
	}
	return resps
}

func ran(r *brokerv1.RunCommandResponse) bool {
	return r.GetDecision().GetAllowed() && len(r.GetStages()) > 0
}

// logTree is a directory under /var/log (a content root of the default
// policy), root-owned, with an application directory the worker's kind of
// account owns, and a directory the default policy denies (it matches
// /var/lib/nannyagent*) holding a file whose name is a secret.
type logTree struct {
	dir, app, ordinary, denied, secretName string
}

func newLogTree(t *testing.T) logTree {
	t.Helper()
	dir, err := os.MkdirTemp("/var/log", "nannyagent-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	denied, err := os.MkdirTemp("/var/lib", "nannyagent-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(denied) })
	tr := logTree{dir: dir, app: filepath.Join(dir, "app"), ordinary: filepath.Join(dir, "ordinary.log"), denied: denied, secretName: "SECRET-NAME-7f3a"}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(tr.app, 0o755); err != nil {
		t.Fatal(err)
	}
	daemon, err := stack.LookupIdentity("daemon")
	if err != nil {
		t.Skip("no daemon account here")
	}
	if err := os.Chown(tr.app, int(daemon.UID), int(daemon.GID)); err != nil {
		t.Fatal(err)
	}
	// 7777 lines: a count no secret file here has.
	if err := os.WriteFile(tr.ordinary, bytes.Repeat([]byte("ordinary\n"), 7777), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(denied, tr.secretName), []byte("token=SECRETVALUE\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return tr
}

// Item 1: device operands are typed paths, ".." never passes, and blkid
// keeps no cache. Landlock is off here: the option tables must hold alone.
func TestDeviceProbesAreTypedPaths(t *testing.T) {
	requireRoot(t)
	yaml, _ := vendorPolicy(t)
	s := startStack(t, stack.Options{Policy: yaml, ExtraBrokerArgs: []string{"--landlock", "off"}})
	cacheBefore := dirState(t, "/run/blkid")
	lines := []string{
		"blkid",
		"blkid -o export",
		"blkid /dev/../tmp/x/img",
		"blkid -p /dev/../etc/shadow",
		"blkid /tmp/img",
		"blkid /dev/shm/img",
		"smartctl -a /dev/../etc/shadow",
		"smartctl -i /dev/watchdog",
		"lsblk /dev/../etc/shadow",
		"vmstat -p ../../etc/shadow",
	}
	resps := asWorker(t, s, workerRun{}, lines...)
	for i, r := range resps[:2] {
		if !ran(r) {
			t.Fatalf("%s did not run: %v", lines[i], r.GetDecision())
		}
		argv := r.GetDecision().GetStages()[0].GetArgv()
		if len(argv) < 3 || argv[1] != "-c" || argv[2] != "/dev/null" {
			t.Errorf("%s ran as %q: the broker did not add -c /dev/null", lines[i], argv)
		}
	}
	for i, r := range resps[2:] {
		if r.GetDecision().GetAllowed() || len(r.GetStages()) != 0 {
			t.Errorf("%s: allowed (%v, exit %d, stderr %q)", lines[i+2], r.GetDecision().GetReason(), r.GetExitCode(), r.GetStderr())
		}
	}
	if after := dirState(t, "/run/blkid"); after != cacheBefore {
		t.Errorf("blkid through the broker changed its cache:\nbefore %s\nafter  %s", cacheBefore, after)
	}
}

// dirState describes a directory's entries with their sizes and times, or
// says it is absent.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return "absent"
	}
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s:%d:%d ", e.Name(), fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String()
}

// Item 5: a denied path gets the same answer whether it exists or not.
func TestDeniedPathsAnswerTheSameWhetherTheyExist(t *testing.T) {
	requireRoot(t)
	yaml, _ := vendorPolicy(t)
	tr := newLogTree(t)
	s := startStack(t, stack.Options{Policy: yaml, ExtraBrokerArgs: []string{"--landlock", "off"}})
	exists := filepath.Join(tr.denied, tr.secretName)
	missing := filepath.Join(tr.denied, "no-such-name")
	for _, form := range []string{"df %s", "df -h %s", "findmnt -T %s", "findmnt %s", "blkid -p %s", "lsblk %s", "smartctl -a %s", "stat %s", "ls -l %s", "du -s %s"} {
		rs := asWorker(t, s, workerRun{}, fmt.Sprintf(form, exists), fmt.Sprintf(form, missing))
		a, b := rs[0], rs[1]
		if ran(a) || ran(b) {
			t.Errorf("%s: a denied path ran (exists: %v, missing: %v)", form, ran(a), ran(b))
			continue
		}
		same := func(r *brokerv1.RunCommandResponse, p string) string {
			return strings.ReplaceAll(fmt.Sprintf("%v|%d|%s|%s", r.GetDecision().GetAllowed(), r.GetExitCode(), r.GetDecision().GetReason(), r.GetStderr()), p, "PATH")
		}
		if x, y := same(a, exists), same(b, missing); x != y {
			t.Errorf("%s answers differently for a denied path that exists:\n  %s\nand one that does not:\n  %s", form, x, y)
		}
	}
}

// Item 2: wc reads a descriptor the broker opened, so a link swapped in
// after the check never makes root count a secret.
func TestContentReadersGetDescriptors(t *testing.T) {
	requireRoot(t)
	yaml, p := vendorPolicy(t)
	tr := newLogTree(t)
	if d := p.Test("wc -l " + tr.ordinary); !d.Allowed || d.Decision.Stages[0].Paths[0].Open.String() != "fd" {
		t.Fatalf("the default policy does not give wc a descriptor: %+v", d)
	}
	s := startStack(t, stack.Options{Policy: yaml, ExtraBrokerArgs: []string{"--landlock", "off"}})
	secretLines := lineCount(t, "/etc/shadow")
	current := filepath.Join(tr.app, "current.log")
	if err := os.Link(tr.ordinary, current); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tmp := current + ".new"
		for i := 0; ctx.Err() == nil; i++ {
			_ = os.Remove(tmp)
			if i%2 == 0 {
				_ = os.Link(tr.ordinary, tmp)
			} else {
				_ = os.Symlink("/etc/shadow", tmp)
			}
			_ = os.Rename(tmp, current)
		}
	})
	lines := make([]string, 200)
	for i := range lines {
		lines[i] = "wc -l " + current
	}
	resps := asWorker(t, s, workerRun{parallel: 4}, lines...)
	cancel()
	wg.Wait()
	counted := 0
	for _, r := range resps {
		f := strings.Fields(string(r.GetStdout()))
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		if n == secretLines && n != 7777 {
			t.Fatalf("wc counted /etc/shadow through a swapped link: %q", r.GetStdout())
		}
		if n == 7777 {
			counted++
		}
	}
	t.Logf("wc through a link swapped 200 times: %d counts of the ordinary file, 0 of the secret", counted)
}

func lineCount(t *testing.T, p string) int {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// Item 3: no option makes a tool follow a planted link on its own.
func TestNoOptionFollowsLinksPastTheResolver(t *testing.T) {
	requireRoot(t)
	yaml, _ := vendorPolicy(t)
	tr := newLogTree(t)
	s := startStack(t, stack.Options{Policy: yaml, ExtraBrokerArgs: []string{"--landlock", "off"}})
	link := filepath.Join(tr.app, "keys")
	if err := os.Symlink(tr.denied, link); err != nil {
		t.Fatal(err)
	}
	// Before the fix ls -LR and du -La listed the denied directory's
	// names through the link; find -L and -follow would too.
	refused := []string{
		"ls -LR " + tr.app, "ls -lRL " + tr.app, "ls -R --dereference " + tr.app, "ls -H " + tr.app,
		"stat -L " + tr.app, "stat --dereference " + tr.app,
		"du -La " + tr.app, "du -D " + tr.app, "du --dereference-args " + tr.app,
		"find -L " + tr.app, "find " + tr.app + " -follow", "find " + tr.app + " -xtype f",
	}
	allowed := []string{"ls -l " + tr.app, "ls -lR " + tr.app, "du -a " + tr.app, "find " + tr.app}
	resps := asWorker(t, s, workerRun{}, append(refused, allowed...)...)
	for i, r := range resps {
		line := append(refused, allowed...)[i]
		if strings.Contains(string(r.GetStdout())+string(r.GetStderr()), tr.secretName) {
			t.Errorf("%s listed the denied directory: %q", line, r.GetStdout())
		}
		if i < len(refused) && r.GetDecision().GetAllowed() {
			t.Errorf("%s: allowed", line)
		}
		if i >= len(refused) && !ran(r) {
			t.Errorf("%s: not run: %v", line, r.GetDecision().GetReason())
		}
	}
	if out := string(resps[len(refused)].GetStdout()); !strings.Contains(out, "keys -> "+tr.denied) {
		t.Errorf("ls -l does not show the planted link as a link: %q", out)
	}
}

// Item 4: credential files and kernel layout are denied as classes.
func TestCredentialsAndKernelLayoutDeniedAsClasses(t *testing.T) {
	requireRoot(t)
	yaml, p := vendorPolicy(t)
	s := startStack(t, stack.Options{Policy: yaml, ExtraBrokerArgs: []string{"--landlock", "off"}})
	classes := map[string]string{}
	for _, d := range p.DenyPaths() {
		classes[d.ID] = d.Class
		if d.Class == "" {
			t.Errorf("deny_paths rule %s names no class", d.ID)
		}
	}
	cases := map[string]string{
		"cat /etc/samba/smbpasswd": "credentials", "cat /etc/davfs2/secrets": "credentials",
		"cat /etc/apache2/.htpasswd": "credentials", "cat /etc/pgbouncer/userlist.txt": "credentials",
		"cat /etc/grafana/grafana.ini": "credentials", "cat /etc/openvpn/server.conf": "credentials",
		"cat /etc/netplan/01-netcfg.yaml": "credentials", "cat /etc/credstore/db.password": "credentials",
		"cat /run/credstore/token": "credentials", "cat /etc/pve/user.cfg": "credentials",
		"cat /etc/pve/storage.cfg": "credentials", "head /etc/iscsi/iscsid.conf": "credentials",
		"grep -i pass /etc/redis/redis.conf": "credentials", "wc -c /etc/snmp/snmpd.conf": "credentials",
		"cat /proc/iomem": "kernel-layout", "cat /proc/ioports": "kernel-layout", "cat /proc/vmallocinfo": "kernel-layout",
		"cat /proc/kallsyms": "kernel-layout", "cat /proc/modules": "kernel-layout", "cat /proc/timer_list": "kernel-layout",
	}
	var lines []string
	for l := range cases {
		lines = append(lines, l)
	}
	for i, r := range asWorker(t, s, workerRun{parallel: 4}, lines...) {
		reason := r.GetDecision().GetReason()
		if r.GetDecision().GetAllowed() {
			t.Errorf("%s: allowed", lines[i])
			continue
		}
		_, after, _ := strings.Cut(reason, "deny_paths rule ")
		id, _, _ := strings.Cut(after, " ")
		if classes[id] != cases[lines[i]] {
			t.Errorf("%s: denied by %q (class %q), want class %s: %s", lines[i], id, classes[id], cases[lines[i]], reason)
		}
	}
	res := s.Run(ctxT(t), nil, stack.CLI, "policy", "explain", s.PolicyFile)
	for _, w := range []string{"[class credentials]", "[class kernel-layout]", "the broker adds: -c /dev/null"} {
		if !strings.Contains(res.Stdout, w) {
			t.Errorf("explain does not say %q", w)
		}
	}
}

// Item 7: what the model learns from a missing program, a missing file in
// a pipeline, and a timeout.
func TestTheModelLearnsWhatAShellWouldSay(t *testing.T) {
	requireRoot(t)
	yaml, p := vendorPolicy(t)
	tr := newLogTree(t)
	var absent string
	for _, line := range []string{"zpool status", "lvs", "mdadm --detail --scan", "pvecm status", "crontab -l"} {
		d := p.Test(line)
		if d.Allowed && missingProgram(d.Decision.Stages[0].Program) {
			absent = line
			break
		}
	}
	s := startStack(t, stack.Options{Policy: yaml})
	missingLog := filepath.Join(tr.dir, "missing.log")
	lines := []string{
		"cat " + missingLog + " | wc -l",
		"grep error " + missingLog,
		"cat " + filepath.Join(tr.app, "missing.log"),
		"tail -n 5 " + missingLog + " | grep x",
	}
	if absent != "" {
		lines = append(lines, absent)
	}
	rs := asWorker(t, s, workerRun{}, lines...)
	if r := rs[0]; !ran(r) || r.GetExitCode() != 0 || strings.TrimSpace(string(r.GetStdout())) != "0" ||
		!strings.Contains(string(r.GetStderr()), "cat: "+missingLog+": No such file or directory") {
		t.Errorf("%s: want wc's 0 and cat's own message, got ran=%v exit %d stdout %q stderr %q (%s)", lines[0], ran(r), r.GetExitCode(), r.GetStdout(), r.GetStderr(), r.GetDecision().GetReason())
	}
	if r := rs[1]; !ran(r) || r.GetExitCode() != 2 || !strings.Contains(string(r.GetStderr()), "grep: "+missingLog+": No such file or directory") {
		t.Errorf("%s: want grep's exit 2 and its message, got exit %d stderr %q", lines[1], r.GetExitCode(), r.GetStderr())
	}
	// A directory the worker's kind of account can write: the tool gets a
	// name nobody can create in time, and fails the same way.
	if r := rs[2]; !ran(r) || r.GetExitCode() != 1 || !strings.Contains(string(r.GetStderr()), "No such file or directory") {
		t.Errorf("%s: want cat's exit 1 and No such file, got exit %d stderr %q", lines[2], r.GetExitCode(), r.GetStderr())
	}
	if r := rs[3]; !ran(r) || r.GetExitCode() != 1 || !strings.Contains(string(r.GetStderr()), "No such file or directory") {
		t.Errorf("%s: want grep's exit 1 after tail's message, got exit %d stderr %q", lines[3], r.GetExitCode(), r.GetStderr())
	}
	if absent == "" {
		t.Log("every program of the probe list is installed here; the not-installed case is covered by the timeout stack below")
	} else if r := rs[4]; !r.GetDecision().GetAllowed() || r.GetExitCode() != 127 || !strings.Contains(string(r.GetStderr()), "not installed on this host") {
		t.Errorf("%s: want exit 127 and 'not installed on this host', got allowed %v exit %d stderr %q reason %q", absent, r.GetDecision().GetAllowed(), r.GetExitCode(), r.GetStderr(), r.GetDecision().GetReason())
	}

	// A pipeline killed by its timeout passes on what it had produced.
	s2 := startStack(t, stack.Options{Policy: `version: 1
limits:
  command_timeout: 2s
commands:
  - id: ping
    program: /usr/bin/ping
    options:
      - {opt: -c, value: {type: number, min: 1, max: 10}}
      - {opt: -i, value: {type: enum, values: ["1"]}}
    operands:
      - {name: host, type: host, loopback_only: true}
  - id: grep
    program: /usr/bin/grep
    run_as: nobody
    operands:
      - {name: pattern, type: regex}
  - id: not-here
    program: /usr/bin/nannyagent-e2e-not-installed
`})
	rs = asWorker(t, s2, workerRun{}, "ping -c 10 -i 1 127.0.0.1 | grep icmp_seq", "nannyagent-e2e-not-installed")
	if r := rs[0]; !r.GetTimedOut() || !strings.Contains(string(r.GetStdout()), "icmp_seq=1 ") {
		t.Errorf("timed-out pipeline: timed_out %v, stdout %q, stderr %q, exit %d: what grep had read is lost", r.GetTimedOut(), r.GetStdout(), r.GetStderr(), r.GetExitCode())
	}
	if r := rs[1]; r.GetExitCode() != 127 || !strings.Contains(string(r.GetStderr()), "/usr/bin/nannyagent-e2e-not-installed: not installed on this host") {
		t.Errorf("missing program: exit %d stderr %q reason %q", r.GetExitCode(), r.GetStderr(), r.GetDecision().GetReason())
	}
}

func missingProgram(p string) bool {
	_, err := os.Stat(p)
	return os.IsNotExist(err)
}

// Item 6: a hung mount cannot hold the run slots: looking up a path is
// under the command's deadline, and the slot comes back when it passes.
func TestHungMountCannotHoldTheSlots(t *testing.T) {
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-hung-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	mnt := filepath.Join(dir, "hung")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	ok := filepath.Join(dir, "ok.log")
	if err := os.WriteFile(ok, []byte("still served\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startStack(t, stack.Options{Policy: fmt.Sprintf(`version: 1
limits:
  command_timeout: 2s
  concurrent_commands: 2
commands:
  - id: cat
    program: /usr/bin/cat
    operands:
      - {name: file, type: path, roots: [%q], open: fd, count: 1}
`, dir)})
	h := mountHung(t, mnt)
	start := time.Now()
	// Four requests for two slots: before the fix the first two hung in
	// their slots for good and nothing else ran.
	rs := asWorker(t, s, workerRun{parallel: 4, timeout: 9 * time.Second},
		"cat "+mnt+"/a", "cat "+mnt+"/b", "cat "+mnt+"/c", "cat "+mnt+"/d")
	elapsed := time.Since(start)
	for i, r := range rs {
		if !r.GetTimedOut() || !strings.Contains(string(r.GetStderr()), "ran out before the command started") {
			t.Errorf("request %d on the hung mount: timed_out %v exit %d stderr %q error %q", i, r.GetTimedOut(), r.GetExitCode(), r.GetStderr(), r.GetError())
		}
	}
	if elapsed > 8*time.Second {
		t.Errorf("four requests on a hung mount took %v with a 2s limit and 2 slots", elapsed)
	}
	// The lookups are still blocked in the kernel; the slots are free.
	if r := asWorker(t, s, workerRun{timeout: 5 * time.Second}, "cat "+ok)[0]; string(r.GetStdout()) != "still served\n" {
		t.Errorf("a normal command after the hung ones: %q %q %v", r.GetStdout(), r.GetStderr(), r.GetDecision().GetReason())
	}
	h.abort()
	t.Logf("4 requests on a hung mount answered in %v (limit 2s, 2 slots)", elapsed.Round(time.Millisecond))
}

// Item 8: Landlock confines every run: a test-only rule that writes is
// stopped, a rule that names its writes may write there, and with the
// broker's switch off the same rule writes (so the stop is Landlock's).
func TestLandlockConfinesRuns(t *testing.T) {
	requireRoot(t)
	abi := landlockABI()
	if abi == 0 {
		t.Skip("no Landlock on this kernel")
	}
	dir, err := stack.WorldReadableTempDir("nannyagent-landlock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	allowedDir := filepath.Join(dir, "allowed")
	if err := os.Mkdir(allowedDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bind := `import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print("bound")`
	pol := fmt.Sprintf(`version: 1
commands:
  - id: touch-writer
    program: /usr/bin/touch
    writes: [%[1]s/allowed]
    operands:
      - {name: f, type: string, pattern: '%[1]s/allowed/[a-z]+'}
  - id: touch
    program: /usr/bin/touch
    operands:
      - {name: f, type: string, pattern: '%[1]s/[a-z]+'}
  - id: kill-probe
    program: /usr/bin/kill
    options:
      - {opt: -s, value: {type: enum, values: ["0"]}}
    operands:
      - {name: pid, type: pid}
  - id: bind-probe
    program: /usr/bin/python3
    options:
      - {opt: -c, value: {type: enum, values: [%[2]q]}}
`, dir, bind)
	self := strconv.Itoa(os.Getpid())
	lines := []string{"touch " + dir + "/denied", "touch " + allowedDir + "/fine", "kill -s 0 " + self, `python3 -c '` + bind + `'`}

	on := startStack(t, stack.Options{Policy: pol})
	rs := asWorker(t, on, workerRun{}, lines...)
	if r := rs[0]; !ran(r) || r.GetExitCode() == 0 || exists(dir+"/denied") {
		t.Errorf("Landlock on: the writing rule wrote: exit %d stderr %q", r.GetExitCode(), r.GetStderr())
	}
	if r := rs[1]; !ran(r) || r.GetExitCode() != 0 || !exists(allowedDir+"/fine") {
		t.Errorf("Landlock on: a rule's named writes place refused: exit %d stderr %q", r.GetExitCode(), r.GetStderr())
	}
	if r := rs[2]; abi >= 6 && r.GetExitCode() == 0 {
		t.Errorf("Landlock ABI %d: a run signalled a process outside it", abi)
	}
	if r := rs[3]; abi >= 4 && (r.GetExitCode() == 0 || strings.Contains(string(r.GetStdout()), "bound")) {
		t.Errorf("Landlock ABI %d: a run bound a TCP port: %q %q", abi, r.GetStdout(), r.GetStderr())
	}
	st := on.CLI(ctxT(t), nil, "status")
	if want := fmt.Sprintf("runs confined by Landlock ABI %d", abi); !strings.Contains(st.Stdout, want) {
		t.Errorf("status does not say %q:\n%s", want, st.Stdout)
	}
	ex := on.Run(ctxT(t), nil, stack.CLI, "policy", "explain", on.PolicyFile)
	for _, want := range []string{fmt.Sprintf("Landlock ABI %d", abi), "EXCEPTION: rule touch-writer", "MAY WRITE beneath: " + allowedDir} {
		if !strings.Contains(ex.Stdout, want) {
			t.Errorf("explain does not say %q", want)
		}
	}

	off := startStack(t, stack.Options{Policy: pol, ExtraBrokerArgs: []string{"--landlock", "off"}})
	rs = asWorker(t, off, workerRun{}, lines...)
	if r := rs[0]; r.GetExitCode() != 0 || !exists(dir+"/denied") {
		t.Errorf("Landlock off: the test-only writing rule failed to write (exit %d %q), so the stop above is not Landlock's", r.GetExitCode(), r.GetStderr())
	}
	if r := rs[2]; r.GetExitCode() != 0 {
		t.Errorf("Landlock off: kill -s 0 failed: %q", r.GetStderr())
	}
	st = off.CLI(ctxT(t), nil, "status")
	if !strings.Contains(st.Stdout, "runs NOT confined by Landlock: turned off") {
		t.Errorf("status with --landlock off:\n%s", st.Stdout)
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// landlockABI asks the kernel for its Landlock ABI version (0: none).
func landlockABI() int {
	v, _, errno := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if errno != 0 {
		return 0
	}
	return int(v)
}
