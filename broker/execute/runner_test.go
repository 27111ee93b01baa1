package execute

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestPipelinesMatchBash runs real pipelines through the runner and through
// bash -c and compares stdout, stderr and the exit code.
func TestPipelinesMatchBash(t *testing.T) {
	cases := []struct {
		name   string
		line   string
		stages []Stage
	}{
		{"cat a link", "/usr/bin/cat /etc/os-release",
			[]Stage{withPath(stage("/usr/bin/cat", "/etc/os-release"), 1, OpenFD)}},
		{"ps into head", "/usr/bin/ps -eo pid | /usr/bin/head -n 3",
			[]Stage{stage("/usr/bin/ps", "-eo", "pid"), stage("/usr/bin/head", "-n", "3")}},
		{"sort into head", "/usr/bin/sort /etc/passwd | /usr/bin/head -n 5",
			[]Stage{withPath(stage("/usr/bin/sort", "/etc/passwd"), 1, OpenFD), stage("/usr/bin/head", "-n", "5")}},
		{"three stages", "/usr/bin/cat /etc/passwd | /usr/bin/sort -r | /usr/bin/wc -l",
			[]Stage{withPath(stage("/usr/bin/cat", "/etc/passwd"), 1, OpenFD), stage("/usr/bin/sort", "-r"), stage("/usr/bin/wc", "-l")}},
		{"wc names its file", "/usr/bin/wc -l /etc/passwd",
			[]Stage{withPath(stage("/usr/bin/wc", "-l", "/etc/passwd"), 2, OpenCheckOnly)}},
		{"failing command", "/usr/bin/ls /nonexistent-x",
			[]Stage{stage("/usr/bin/ls", "/nonexistent-x")}},
		{"stderr to null", "/usr/bin/ls /nonexistent-x 2>/dev/null",
			[]Stage{{Program: "/usr/bin/ls", Argv: []string{"/usr/bin/ls", "/nonexistent-x"}, StderrToNull: true}}},
		{"stdout to null", "/usr/bin/ls / /nonexistent-x >/dev/null",
			[]Stage{{Program: "/usr/bin/ls", Argv: []string{"/usr/bin/ls", "/", "/nonexistent-x"}, StdoutToNull: true}}},
		{"stderr to stdout", "/usr/bin/ls /etc/hostname /nonexistent-x 2>&1",
			[]Stage{{Program: "/usr/bin/ls", Argv: []string{"/usr/bin/ls", "/etc/hostname", "/nonexistent-x"}, StderrToStdout: true}}},
		{"both to null", "/usr/bin/ls / /nonexistent-x >/dev/null 2>&1",
			[]Stage{{Program: "/usr/bin/ls", Argv: []string{"/usr/bin/ls", "/", "/nonexistent-x"}, StdoutToNull: true, StderrToStdout: true}}},
		{"stderr into the pipe", "/usr/bin/ls /etc/hostname /nonexistent-x 2>&1 | /usr/bin/sort",
			[]Stage{{Program: "/usr/bin/ls", Argv: []string{"/usr/bin/ls", "/etc/hostname", "/nonexistent-x"}, StderrToStdout: true}, stage("/usr/bin/sort")}},
		{"middle stdout to null", "/usr/bin/cat /etc/passwd >/dev/null | /usr/bin/wc -l",
			[]Stage{{Program: "/usr/bin/cat", Argv: []string{"/usr/bin/cat", "/etc/passwd"}, StdoutToNull: true}, stage("/usr/bin/wc", "-l")}},
		{"middle stderr kept", "/usr/bin/ls /nonexistent-x | /usr/bin/wc -c",
			[]Stage{stage("/usr/bin/ls", "/nonexistent-x"), stage("/usr/bin/wc", "-c")}},
	}
	forEachMode(t, func(t *testing.T, r *Runner) {
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				wantOut, wantErr, wantCode := bash(t, tc.line)
				res := run(t, r, Limits{}, tc.stages...)
				if string(res.Stdout) != wantOut {
					t.Errorf("stdout\n got %q\nwant %q", res.Stdout, wantOut)
				}
				if string(res.Stderr) != wantErr {
					t.Errorf("stderr\n got %q\nwant %q", res.Stderr, wantErr)
				}
				if res.ExitCode != wantCode {
					t.Errorf("exit code %d, want %d", res.ExitCode, wantCode)
				}
				if len(res.Stages) != len(tc.stages) || res.TimedOut || res.StdoutTruncated || res.StderrTruncated {
					t.Errorf("result %+v", res)
				}
			})
		}
	})
}

func TestStageResults(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		res := run(t, r, Limits{}, stage("/usr/bin/false"), stage("/usr/bin/true"))
		if res.ExitCode != 0 || res.Stages[0].ExitCode != 1 || res.Stages[1].ExitCode != 0 {
			t.Errorf("exit codes: pipeline %d, stages %+v", res.ExitCode, res.Stages)
		}
		if res.Stages[0].Program != "/usr/bin/false" || res.Stages[0].PID <= 0 || res.Stages[0].Duration <= 0 {
			t.Errorf("stage 1: %+v", res.Stages[0])
		}
		if res.Duration < res.Stages[0].Duration {
			t.Errorf("run duration %v shorter than a stage's %v", res.Duration, res.Stages[0].Duration)
		}
		p := res.Proto()
		if p.ExitCode != 0 || len(p.Stages) != 2 || p.Stages[0].ExitCode != 1 || p.Stages[0].Program != "/usr/bin/false" || p.Duration.AsDuration() != res.Duration {
			t.Errorf("proto %v", p)
		}
	})
}

func TestEnvironmentIsFixed(t *testing.T) {
	t.Setenv("NANNY_SECRET_TOKEN", "must-not-leak")
	forEachMode(t, func(t *testing.T, r *Runner) {
		res := run(t, r, Limits{}, stage("/usr/bin/env"))
		if got, want := string(res.Stdout), "PATH=/usr/sbin:/usr/bin:/sbin:/bin\nLANG=C.UTF-8\n"; got != want {
			t.Errorf("env printed %q, want %q", got, want)
		}
		res = run(t, r, Limits{}, stage("/usr/bin/pwd"))
		if string(res.Stdout) != "/\n" {
			t.Errorf("working directory %q", res.Stdout)
		}
		// stdin is /dev/null: cat without operands ends at once.
		res = run(t, r, Limits{Timeout: 5 * time.Second}, stage("/usr/bin/cat"))
		if res.TimedOut || len(res.Stdout) != 0 || res.ExitCode != 0 {
			t.Errorf("cat on stdin: %+v", res)
		}
	})
}

// statusFields picks "Name:\tvalue" lines out of /proc/<pid>/status.
func statusFields(status string, names ...string) map[string]string {
	out := map[string]string{}
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		for _, n := range names {
			if ok && k == n {
				out[n] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out
}

// TestChildStatus reads /proc/<pid>/status and /proc/<pid>/cgroup of real
// running stages: no_new_privs is set, and the stage sits in its run's
// cgroups from the start.
func TestChildStatus(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var status, cgroup string
		r.afterStart = func(pids []int) {
			b, _ := os.ReadFile("/proc/" + itoa(pids[0]) + "/status")
			c, _ := os.ReadFile("/proc/" + itoa(pids[0]) + "/cgroup")
			status, cgroup = string(b), string(c)
			cancel()
		}
		res, err := r.Run(ctx, Request{Stages: []Stage{stage("/usr/bin/sleep", "5")}})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Canceled || res.TimedOut || res.Stages[0].Signal != "SIGKILL" || res.ExitCode != -1 {
			t.Errorf("canceled run: %+v", res)
		}
		f := statusFields(status, "NoNewPrivs", "Uid")
		if f["NoNewPrivs"] != "1" || f["Uid"] != "0 0 0 0" {
			t.Errorf("child status: %v\n%s", f, status)
		}
		info := r.Info()
		for ctl, want := range map[string]bool{"memory": info.MemoryController, "pids": info.PidsController} {
			if want && !regexp.MustCompile(`(?m)^\d+:`+ctl+`:.*/nannyagent-exec/run-\d+-\d+-\d+$`).MatchString(cgroup) {
				t.Errorf("child not in a %s run cgroup:\n%s", ctl, cgroup)
			}
		}
		if info.V2Kill && !regexp.MustCompile(`(?m)^0::.*/nannyagent-exec/run-\d+-\d+-\d+$`).MatchString(cgroup) {
			t.Errorf("child not in the v2 run cgroup:\n%s", cgroup)
		}
	})
}

func TestRunAs(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		id := stage("/usr/bin/id")
		id.RunAs = "nobody"
		res := run(t, r, Limits{}, id)
		if got := string(res.Stdout); got != "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)\n" {
			t.Errorf("id as nobody: %q", got)
		}
		grep := stage("/usr/bin/grep", "-E", "^(Uid|Gid|Groups|NoNewPrivs):", "/proc/self/status")
		grep.RunAs = "daemon"
		res = run(t, r, Limits{}, grep)
		f := statusFields(string(res.Stdout), "Uid", "Gid", "Groups", "NoNewPrivs")
		want := map[string]string{"Uid": "1 1 1 1", "Gid": "1 1 1 1", "Groups": "1", "NoNewPrivs": "1"}
		for k, v := range want {
			if f[k] != v {
				t.Errorf("%s: %q, want %q (status %q)", k, f[k], v, res.Stdout)
			}
		}
		// A root-only file is out of reach for the unprivileged stage.
		cat := stage("/usr/bin/cat", "/etc/shadow")
		cat.RunAs = "nobody"
		if res = run(t, r, Limits{}, cat); res.ExitCode == 0 || len(res.Stdout) != 0 {
			t.Errorf("nobody read /etc/shadow: %+v", res)
		}
	})
}

func TestRunAsRefused(t *testing.T) {
	r := newTestRunner(t, Config{})
	for _, name := range []string{"root", "no-such-account-x"} {
		st := stage("/usr/bin/id")
		st.RunAs = name
		_, err := r.Run(context.Background(), Request{Stages: []Stage{st}})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("run_as %q: %v", name, err)
		}
	}
}

// TestProgramChecks: only clean absolute programs that no non-root account
// can replace.
func TestProgramChecks(t *testing.T) {
	r := newTestRunner(t, Config{})
	dir := rootDir(t)
	own := dir + "/tool"
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	writeFile0(t, own, string(b), 0o755)
	if err := os.Chown(own, 1, 1); err != nil {
		t.Fatal(err)
	}
	garbage := dir + "/garbage"
	writeFile0(t, garbage, "\x00\x01not an executable", 0o755)
	cases := []struct {
		st   Stage
		want error
	}{
		{stage("true"), ErrInvalid},
		{stage("/usr/bin/../bin/true"), ErrInvalid},
		{Stage{Program: "/usr/bin/true", Argv: []string{"true"}}, ErrInvalid},
		{stage("/etc/passwd"), ErrInvalid},
		{stage("/nonexistent/tool"), ErrNotInstalled},
		{stage(own), ErrInvalid},
		{stage("/usr/bin/true", "a\x00b"), ErrInvalid},
		{stage(garbage), ErrStart},
	}
	for _, tc := range cases {
		_, err := r.Run(context.Background(), Request{Stages: []Stage{tc.st}})
		if !errors.Is(err, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.st.Argv, err, tc.want)
		}
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	forEachMode(t, func(t *testing.T, r *Runner) {
		dir := rootDir(t)
		writeFile0(t, dir+"/garbage", "\x00\x01not an executable", 0o755)
		_, err := r.Run(context.Background(), Request{Stages: []Stage{
			childStage(t, "sleeper"), stage(dir + "/garbage"),
		}})
		if !errors.Is(err, ErrStart) || !strings.Contains(err.Error(), "stage 2") {
			t.Fatalf("got %v, want a start failure of stage 2", err)
		}
	})
}

func itoa(n int) string { return strconvItoa(n) }

func TestPrefixedPathOperand(t *testing.T) {
	r := newTestRunner(t, Config{})
	dir := t.TempDir()
	file := filepath.Join(dir, "words")
	if err := os.WriteFile(file, []byte("beta\nalpha\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st := stage("/usr/bin/grep", "--file="+file, file)
	st.Paths = []PathOperand{
		{Index: 1, Prefix: "--file=", Path: file, Roots: []string{dir}, Open: OpenFD},
		{Index: 2, Path: file, Roots: []string{dir}, Open: OpenFD},
	}
	res := run(t, r, Limits{}, st)
	if string(res.Stdout) != "beta\nalpha\n" || res.ExitCode != 0 {
		t.Errorf("grep --file=<fd> <fd>: exit %d, printed %q %q", res.ExitCode, res.Stdout, res.Stderr)
	}
	// The prefix must match the argument exactly.
	bad := stage("/usr/bin/grep", "--file="+file, file)
	bad.Paths = []PathOperand{{Index: 1, Prefix: "-f", Path: file, Roots: []string{dir}, Open: OpenFD}}
	if _, err := r.Run(context.Background(), Request{Stages: []Stage{bad}, Judge: &testJudge{}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("mismatched prefix accepted: %v", err)
	}
}
