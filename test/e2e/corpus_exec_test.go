package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
	"github.com/nannyai/nannyagent/test/policycorpus"
	"github.com/nannyai/nannyagent/test/stack"
)

func corpus(t *testing.T, name string) []string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := policycorpus.Read(filepath.Join(root, "test", "policycorpus", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	lines := make([]string, len(entries))
	for i, e := range entries {
		lines[i] = e.Cmd
	}
	return lines
}

func vendorPolicy(t *testing.T) (string, *policy.Policy) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "packaging", "policy.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Load(policy.LoadOptions{}, path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data), p
}

// deterministic are programs whose output does not change between two runs
// a moment apart on a quiet machine.
var deterministic = map[string]bool{
	"cat": true, "head": true, "tail": true, "grep": true, "wc": true, "sort": true, "uniq": true,
	"cut": true, "tr": true, "id": true, "uname": true, "hostname": true, "getent": true, "nproc": true,
	"whoami": true, "groups": true, "lscpu": true, "dpkg": true, "apt": true, "sysctl": true,
	"ls": true, "find": true, "du": true, "dpkg-query": true, "blkid": true, "lsmod": true,
	"ip": true, "lsblk": true, "apt-cache": true, "iptables": true, "ip6tables": true, "nft": true,
	"systemctl": true, "tc": true, "route": true, "swapon": true, "timedatectl": true, "hostnamectl": true,
	"journalctl": true,
}

// stableRoots are where file contents stay put while the tests run (no
// daemon logs to /var/log on a test machine while the tests run).
var stableRoots = []string{"/etc/", "/usr/", "/var/log/", "/boot/"}

func comparable(line string, stages []policy.Stage, d policy.Decision) (runAs string, ok bool) {
	for i, st := range stages {
		if !deterministic[filepath.Base(st.Argv[0])] {
			return "", false
		}
		if _, err := os.Stat(d.Stages[i].Program); err != nil {
			return "", false
		}
		if i > 0 && d.Stages[i].RunAs != runAs {
			return "", false
		}
		runAs = d.Stages[i].RunAs
		for _, arg := range st.Argv[1:] {
			if strings.HasPrefix(arg, "/") && !hasAnyPrefix(arg, stableRoots) {
				return "", false
			}
		}
	}
	// Counters and clocks move: sysctl -a walks /proc/sys, ip -s prints
	// packet counts, journalctl --since is relative to now, lsblk -f prints
	// free space, which moves with every file written elsewhere.
	for _, moving := range []string{"sysctl -a", "/etc/mtab", " -s ", " -stats", "-statistics", " -s", "--since", "-b", "lsblk -f"} {
		if strings.Contains(line, moving) {
			return "", false
		}
	}
	return runAs, true
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// bashAs runs line with bash -c as the account (root when empty), with the
// broker's environment.
func bashAs(t *testing.T, line, account string) (string, int) {
	cmd := exec.Command("/bin/bash", "-c", line)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	cmd.Dir = "/"
	if account != "" {
		id, err := stack.LookupIdentity(account)
		if err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: []uint32{id.GID}}}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return out.String(), code
}

func TestLegitimateCorpusMatchesBash(t *testing.T) {
	requireRoot(t)
	yaml, p := vendorPolicy(t)
	s := startStack(t, stack.Options{Policy: yaml})
	c, _ := brokerClient(t, s)
	var compared, mismatched int
	comparedLines := map[string]bool{}
	for _, line := range corpus(t, "legitimate.txt") {
		stages, err := policy.ParseCommandLine(line)
		if err != nil {
			continue
		}
		d := p.Evaluate(stages)
		if !d.Allowed {
			continue
		}
		runAs, ok := comparable(line, stages, d)
		if !ok {
			continue
		}
		req := &brokerv1.RunCommandRequest{CommandLine: line}
		for _, st := range stages {
			req.Stages = append(req.Stages, &brokerv1.Stage{Argv: st.Argv, StdoutToNull: st.StdoutToNull, StderrToNull: st.StderrToNull, StderrToStdout: st.StderrToStdout})
		}
		resp, err := c.RunCommand(ctxT(t), req)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		want, wantCode := bashAs(t, line, runAs)
		comparedLines[line] = true
		if wantCode != 0 && missingFile(stages) && strings.Contains(string(resp.GetStderr()), "no such file") {
			// The file is not on this machine: both fail, each in its own
			// words (the broker found it missing before the tool ran).
			if resp.GetExitCode() == 0 || len(resp.GetStdout()) != 0 {
				t.Errorf("%s: missing file reported as exit %d %q", line, resp.GetExitCode(), resp.GetStdout())
			}
			continue
		}
		compared++
		if !resp.GetDecision().GetAllowed() || string(resp.GetStdout()) != want || int(resp.GetExitCode()) != wantCode {
			mismatched++
			t.Errorf("%s (as %q): broker exit %d, %q\nbash exit %d, %q\ndecision %v", line, runAs, resp.GetExitCode(),
				clip(resp.GetStdout()), wantCode, clip([]byte(want)), resp.GetDecision().GetReason())
		}
	}
	fmt.Printf("legitimate corpus through the broker: %d deterministic commands compared with bash -c, %d differ\n", compared, mismatched)
	if compared < 40 {
		t.Errorf("only %d commands compared; the check is too thin", compared)
	}
	// /etc/os-release is a link to ../usr/lib/os-release: ordinary system
	// links must work.
	if !comparedLines["cat /etc/os-release"] {
		t.Error("cat /etc/os-release was not compared")
	}
}

// missingFile reports whether an absolute operand does not exist here.
func missingFile(stages []policy.Stage) bool {
	for _, st := range stages {
		for _, arg := range st.Argv[1:] {
			if strings.HasPrefix(arg, "/") {
				if _, err := os.Stat(arg); os.IsNotExist(err) {
					return true
				}
			}
		}
	}
	return false
}

// missingLiteral is a run whose operand does not exist: the broker hands
// the literal name to the tool (nothing expands it), which reads nothing
// and says so in its own words.
func missingLiteral(resp *brokerv1.RunCommandResponse) bool {
	return resp.GetExitCode() != 0 && len(resp.GetStdout()) == 0 &&
		strings.Contains(string(resp.GetStderr()), "No such file or directory")
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

func TestDangerousCorpusNeverRuns(t *testing.T) {
	requireRoot(t)
	yaml, _ := vendorPolicy(t)
	s := startStack(t, stack.Options{Policy: yaml})
	c, _ := brokerClient(t, s)
	canary := filepath.Join(s.Dir, "canary")
	lines := append(corpus(t, "dangerous.txt"),
		"touch "+canary, "sh -c 'touch "+canary+"'", "/bin/sh -c 'touch "+canary+"'", "cat /etc/hostname | tee "+canary,
		"sort -o "+canary+" /etc/hostname", "find /etc -maxdepth 0 -fprint "+canary, "dd if=/etc/hostname of="+canary,
		"cp /etc/hostname "+canary, "uniq /etc/hostname "+canary, "bash -c 'echo x > "+canary+"'",
		"find /etc/hostname -exec touch "+canary+" ;", "sort --compress-program=/usr/bin/touch -S 1 /etc/hostname")
	var denied int
	for _, line := range lines {
		stages, err := policy.ParseCommandLine(line)
		req := &brokerv1.RunCommandRequest{CommandLine: line}
		parsed := err == nil
		if !parsed {
			// The parser refuses the line (that is the worker's denial); a
			// compromised worker skips the parser and sends the words.
			req.Stages = []*brokerv1.Stage{{Argv: strings.Fields(line)}}
		}
		for _, st := range stages {
			req.Stages = append(req.Stages, &brokerv1.Stage{Argv: st.Argv, StdoutToNull: st.StdoutToNull, StderrToNull: st.StderrToNull, StderrToStdout: st.StderrToStdout})
		}
		resp, err := c.RunCommand(ctxT(t), req)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		switch {
		case !resp.GetDecision().GetAllowed():
			if resp.GetDecision().GetReason() == "" {
				t.Errorf("denied without a reason: %s", line)
			}
			denied++
		case !parsed && missingLiteral(resp):
			// The broker expands nothing: a glob or a look-alike sent as
			// a word is a literal name that does not exist, so the tool
			// never ran and nothing was read.
			denied++
		default:
			t.Errorf("dangerous command allowed: %s (exit %d, %q, stderr %q, parsed %v)", line, resp.GetExitCode(), clip(resp.GetStdout()), resp.GetStderr(), parsed)
		}
	}
	if _, err := os.Stat(canary); !os.IsNotExist(err) {
		t.Fatalf("a dangerous command ran: the canary exists (%v)", err)
	}
	for _, d := range decisionLines(t, s.BrokerProcess().Log()) {
		reason, _ := d["reason"].(string)
		if d["rpc"] == "RunCommand" && d["decision"] != "deny" && !strings.Contains(reason, "no such file") {
			t.Errorf("decision log shows a RunCommand that ran: %v", d)
		}
	}
	fmt.Printf("dangerous corpus through the broker: %d of %d denied before anything ran\n", denied, len(lines))
}
