package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/stack"
)

// minRulesExercised is the fewest default-policy rules the watch test
// must run for its "nothing writes" to mean anything (128 rules; about 15
// name programs that are not installed on a plain Debian test machine).
const minRulesExercised = 100

// documentedForms run, besides the legitimate corpus, the rules the corpus
// does not reach and, pointed at loopback, the network rules (the corpus's
// own network lines name outside hosts, which tests never contact).
var documentedForms = []string{
	"groups root", "iostat -x", "iostat -d 1 2", "ip addr show dev lo", "ip link show master lo", "ip6tables-save",
	"mpstat 2 1", "pidstat -d", "pidstat 2 1", "sar -u 2 1", "ps aux | tr -s ' '", "vmstat 2 1", "iostat 2 1",
	"ping -c 1 -W 1 127.0.0.1", "ping -w 1 127.0.0.1", "dig @127.0.0.1 localhost +time=1 +tries=1",
	"host -W 1 localhost 127.0.0.1", "nslookup localhost 127.0.0.1", "getent hosts localhost", "getent ahosts localhost",
	"blkid", "blkid -o export", "lsblk -f", "smartctl --scan", "df -h /var", "findmnt /var", "findmnt -T /var/log",
	"stat /etc/hostname", "ls -lR /etc/ssl/certs", "du -sh /var/log", "find /var/log -maxdepth 1 -newer /etc/hostname",
	"wc -l /etc/hostname /etc/passwd", "who /var/run/utmp", "last -f /var/log/wtmp -n 3", "sar -f /var/log/sysstat/sa01",
	"lvs", "vgs", "pvs", "zpool status", "zfs list", "mdadm --detail --scan", "crontab -l", "resolvectl status",
	"pct list", "qm list", "pvesm status", "pvecm status", "pveversion",
}

// networkLine is a corpus line that would contact a host outside
// loopback.
func networkLine(line string) bool {
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	switch f[0] {
	case "ping", "dig", "host", "nslookup", "curl", "wget", "traceroute", "mtr":
		return true
	case "resolvectl":
		return strings.Contains(line, "query")
	case "getent":
		return len(f) > 2 && strings.Contains(f[1], "hosts") && f[2] != "localhost"
	}
	return false
}

// watcher is fswatch running in the broker's PID namespace.
type watcher struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

func startWatch(t *testing.T, s *stack.Stack) *watcher {
	t.Helper()
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("nsenter (util-linux) is not installed")
	}
	cmd := exec.Command(nsenter, "--target", strconv.Itoa(s.BrokerProcess().Pid()), "--pid", "--", filepath.Join(s.BinDir, stack.FSWatch))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watcher{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
	w.out.Buffer(make([]byte, 1<<20), 1<<20)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if !w.out.Scan() || !strings.HasPrefix(w.out.Text(), "READY ") {
		t.Fatalf("fswatch did not start: %q", w.out.Text())
	}
	t.Logf("fswatch: %s (file systems marked, skipped)", w.out.Text())
	return w
}

type fsEvent struct {
	PID  int32    `json:"pid"`
	Mask []string `json:"mask"`
	Path string   `json:"path"`
}

// stop ends the watch and returns what it saw, after a moment for the
// last events to arrive.
func (w *watcher) stop(t *testing.T) []fsEvent {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	w.stdin.Close()
	var evs []fsEvent
	for w.out.Scan() {
		var e fsEvent
		if err := json.Unmarshal(w.out.Bytes(), &e); err != nil {
			t.Fatalf("fswatch output: %v: %q", err, w.out.Text())
		}
		evs = append(evs, e)
	}
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("fswatch: %v", err)
	}
	return evs
}

// TestNothingWritesDuringDiagnostics runs the legitimate corpus and every
// rule's documented forms through the broker, as the worker's account,
// while fanotify watches every file system for changes made by the
// broker's process tree; with Landlock on and off, nothing may be
// created, changed, removed or renamed. A test-only writing rule shows
// both that the watch sees the runs' writes (Landlock off) and that
// Landlock stops them (on).
func TestNothingWritesDuringDiagnostics(t *testing.T) {
	requireRoot(t)
	yaml, p := vendorPolicy(t)
	var lines []string
	skippedNet := 0
	for _, l := range append(corpus(t, "legitimate.txt"), documentedForms...) {
		if networkLine(l) && !strings.Contains(l, "127.0.0.1") && !strings.Contains(l, "localhost") {
			skippedNet++
			continue
		}
		lines = append(lines, l)
	}
	for _, mode := range []string{"auto", "off"} {
		t.Run("landlock-"+mode, func(t *testing.T) {
			dir, err := stack.WorldReadableTempDir("nannyagent-fswatch-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			canary := filepath.Join(dir, "canary")
			s := startStack(t, stack.Options{Policy: yaml, BrokerPIDNamespace: true,
				ExtraBrokerArgs: []string{"--landlock", mode},
				LocalPolicy: fmt.Sprintf(`version: 1
commands:
  - id: test-writer
    program: /usr/bin/touch
    description: test only, a rule that writes
    operands:
      - {name: file, type: string, pattern: '%s/[a-z]+'}
`, dir)})
			w := startWatch(t, s)
			resps := asWorker(t, s, workerRun{parallel: 4, timeout: 20 * time.Second}, lines...)
			writer := asWorker(t, s, workerRun{}, "touch "+canary)[0]
			evs := w.stop(t)

			exercised, absent := map[string]bool{}, map[string]bool{}
			ranLines := 0
			for _, r := range resps {
				if !r.GetDecision().GetAllowed() {
					continue
				}
				for _, sd := range r.GetDecision().GetStages() {
					if r.GetExitCode() == 127 && strings.Contains(string(r.GetStderr()), "not installed") {
						absent[sd.GetRuleId()] = true
					} else {
						exercised[sd.GetRuleId()] = true
					}
				}
				ranLines++
			}
			// A rule that names its writes (apt's unnamed temporary file for
			// signed package lists) may leave events there, but only for a
			// file that never had a name ("#inode").
			var writes []string
			for _, c := range p.Explain().Commands {
				if exercised[c.ID] {
					writes = append(writes, c.Writes...)
				}
			}
			var violations, canaryEvents, named []fsEvent
			for _, e := range evs {
				switch {
				case strings.HasPrefix(filepath.Base(e.Path), "#") && underAny(filepath.Dir(e.Path), writes):
					named = append(named, e)
				case e.PID == 1:
					// The broker itself (its log, nothing else).
				case e.Path == "/dev/null" || e.Path == "/dev/tty":
					// Writing /dev/null is what 2>/dev/null is for.
				case e.Path == canary:
					canaryEvents = append(canaryEvents, e)
				default:
					violations = append(violations, e)
				}
			}
			var skippedRules []string
			for _, c := range p.Explain().Commands {
				if !exercised[c.ID] {
					if _, err := os.Stat(c.Program); err != nil {
						absent[c.ID] = true
					} else {
						skippedRules = append(skippedRules, c.ID)
					}
				}
			}
			sort.Strings(skippedRules)
			fmt.Printf("filesystem watch (landlock %s): %d lines run (%d corpus network lines not sent: outside loopback), %d rules exercised, %d skipped because the program is absent here, %d not reached %v; %d events from the runs outside their rules' writes, %d on unnamed temporary files in a rule's writes, %d from the test-only writer\n",
				mode, ranLines, skippedNet, len(exercised), len(absent), len(skippedRules), skippedRules, len(violations), len(named), len(canaryEvents))
			for _, v := range violations {
				t.Errorf("a diagnostic run changed the file system: %+v", v)
			}
			if len(exercised) < minRulesExercised {
				t.Errorf("only %d rules exercised; the test promises at least %d", len(exercised), minRulesExercised)
			}
			if mode == "off" {
				if writer.GetExitCode() != 0 || len(canaryEvents) == 0 {
					t.Errorf("Landlock off: the test-only writer (exit %d, %q) left %d events: the watch does not see the runs", writer.GetExitCode(), writer.GetStderr(), len(canaryEvents))
				}
				return
			}
			if landlockABI() > 0 && (writer.GetExitCode() == 0 || len(canaryEvents) != 0 || exists(canary)) {
				t.Errorf("Landlock on: the test-only writer wrote (exit %d, %d events)", writer.GetExitCode(), len(canaryEvents))
			}
		})
	}
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return false
}
