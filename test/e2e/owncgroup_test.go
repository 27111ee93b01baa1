package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/broker"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
	"github.com/nannyai/nannyagent/test/stack"
)

// ownCgroups are this process's cgroup directories: cgroup2's, and the v1
// memory and pids hierarchies' where they are mounted.
func ownCgroups(t *testing.T) (v2 string, v1 map[string]string) {
	t.Helper()
	mounts := map[string]string{} // "cgroup2" or a v1 controller → mount point
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := 0
		for i, x := range fields {
			if x == "-" {
				sep = i
			}
		}
		if sep == 0 || fields[3] != "/" {
			continue
		}
		switch fields[sep+1] {
		case "cgroup2":
			mounts["cgroup2"] = fields[4]
		case "cgroup":
			for _, opt := range strings.Split(fields[sep+3], ",") {
				if opt == "memory" || opt == "pids" {
					mounts[opt] = fields[4]
				}
			}
		}
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	v1 = map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		switch {
		case parts[0] == "0" && mounts["cgroup2"] != "":
			v2 = filepath.Join(mounts["cgroup2"], parts[2])
		case (parts[1] == "memory" || parts[1] == "pids") && mounts[parts[1]] != "":
			v1[parts[1]] = filepath.Join(mounts[parts[1]], parts[2])
		}
	}
	if v2 == "" {
		t.Skip("no cgroup2 here")
	}
	return v2, v1
}

// TestBrokerMovesIntoItsOwnLeaf: started in a cgroup systemd delegated to
// it (Delegate=yes marks it trusted.delegate), the real broker moves into
// <own>/broker, puts its memory ceiling (from the policy's limits) there,
// and runs commands beside it, not under it.
func TestBrokerMovesIntoItsOwnLeaf(t *testing.T) {
	requireRoot(t)
	self2, self1 := ownCgroups(t)
	name := fmt.Sprintf("nannyagent-unit-%d", os.Getpid())
	unit := filepath.Join(self2, name)
	dirs := []string{unit}
	var v1 []string
	for _, d := range self1 {
		v1 = append(v1, filepath.Join(d, name))
	}
	dirs = append(dirs, v1...)
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, d := range dirs {
			for _, sub := range []string{"broker", "nannyagent-exec", ""} {
				_ = unix.Rmdir(filepath.Join(d, sub))
			}
		}
	}()
	if err := unix.Setxattr(unit, "trusted.delegate", []byte("1"), 0); err != nil {
		t.Skipf("cannot mark a cgroup delegated here: %v", err)
	}
	dir, err := stack.WorldReadableTempDir("nannyagent-leaf-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	policyFile := filepath.Join(dir, "policy.yaml")
	const policyText = "version: 1\ncommands:\n  - {id: cat, program: /usr/bin/cat, operands: [{type: path, roots: [/proc], open: check}]}\n"
	if err := os.WriteFile(policyFile, []byte(policyText), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "broker.sock")
	unitFD, err := os.Open(unit)
	if err != nil {
		t.Fatal(err)
	}
	defer unitFD.Close()
	// As systemd would: the service starts inside its cgroup in every
	// hierarchy (cgroup2 at clone, the v1 ones before exec).
	script := `for d in "$@"; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec ` + filepath.Join(binDir, stack.Broker) +
		` --socket ` + sock + ` --socket-group root --worker-user daemon --policy ` + policyFile + ` --policy-dir ` + filepath.Join(dir, "policy.d") + ` --log-format json`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, v1...)...)
	logFile := filepath.Join(dir, "broker.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(unitFD.Fd()), Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile)
			t.Fatalf("broker did not start:\n%s", b)
		}
	}
	cc, err := unixsock.Dial(sock, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := brokerv1.NewBrokerServiceClient(cc).RunCommand(ctx, &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"cat", "/proc/self/cgroup"}}}})
	if err != nil || resp.GetExitCode() != 0 {
		t.Fatalf("%v %v", resp, err)
	}
	leaf, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(leaf), "/"+name+"/broker\n") {
		t.Errorf("the broker is not in its leaf:\n%s", leaf)
	}
	if !strings.Contains(string(resp.GetStdout()), "/"+name+"/nannyagent-exec/run-") {
		t.Errorf("the run is not beside the leaf:\n%s", resp.GetStdout())
	}
	ceiling := broker.MemoryCeiling(policy.DefaultLimits())
	want := strconv.FormatInt(ceiling+ceiling/4, 10)
	var limitFile string
	if m := self1["memory"]; m != "" {
		limitFile = filepath.Join(m, name, "broker", "memory.limit_in_bytes")
	} else {
		limitFile = filepath.Join(unit, "broker", "memory.max")
	}
	if b, err := os.ReadFile(limitFile); err != nil || strings.TrimSpace(string(b)) != want {
		t.Errorf("%s = %q (%v), want %s", limitFile, b, err, want)
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), `"msg":"memory ceiling","go_memory_limit":`+strconv.FormatInt(ceiling, 10)) {
		t.Errorf("the memory ceiling is not logged:\n%s", b)
	}
}
