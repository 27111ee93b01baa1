package proxmox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("code = %v (%v), want %v", got, err, want)
	}
}

func TestGetServesPveshPathsWithFixedArgv(t *testing.T) {
	f := newFakePVE(t, "node3")
	f.serveFixtures()
	r := f.reader(nil)
	for _, path := range []string{"/cluster/status", "/cluster/resources", "/nodes/node3/status"} {
		resp, err := r.Get(context.Background(), path)
		if err != nil {
			t.Fatalf("Get %s: %v", path, err)
		}
		if resp.GetSource() != SourcePvesh {
			t.Errorf("%s source = %q", path, resp.GetSource())
		}
		want := fixture(t, map[string]string{
			"/cluster/status": "cluster-status.out", "/cluster/resources": "cluster-resources.out", "/nodes/node3/status": "node-config.out",
		}[path])
		if string(resp.GetJson()) != string(want) {
			t.Errorf("%s: body differs from the fixture", path)
		}
	}
	calls := f.pveshCalls()
	want := []string{
		"get /cluster/status --output-format json",
		"get /cluster/resources --output-format json",
		"get /nodes/node3/status --output-format json",
	}
	if strings.Join(calls, "|") != strings.Join(want, "|") {
		t.Errorf("pvesh argv = %q, want %q", calls, want)
	}
	env, _ := os.ReadFile(filepath.Join(f.dir, "env.log"))
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		name, _, _ := strings.Cut(line, "=")
		switch name {
		case "PATH", "LC_ALL", "PWD", "SHLVL", "_", "OLDPWD": // the last four are the shell's own
		default:
			t.Errorf("pvesh saw environment variable %q", line)
		}
	}
	if cwd, _ := os.ReadFile(filepath.Join(f.dir, "cwd.log")); strings.TrimSpace(string(cwd)) != "/" {
		t.Errorf("pvesh cwd = %q, want /", cwd)
	}
	if in, _ := os.ReadFile(filepath.Join(f.dir, "stdin.log")); strings.TrimSpace(string(in)) != "/dev/null" {
		t.Errorf("pvesh stdin = %q, want /dev/null", in)
	}
}

func TestGetReadsGuestConfigsFromPmxcfs(t *testing.T) {
	f := newFakePVE(t, "node3")
	f.writeConf(KindLXC, 106, confFromJSON(t, fixture(t, "lxc-config.out")))
	f.writeConf(KindQEMU, 103, confFromJSON(t, fixture(t, "qemu-config.out")))
	r := f.reader(nil)
	for path, want := range map[string]string{
		"/nodes/node3/lxc/106/config":  `"ostype":"alpine"`,
		"/nodes/node3/qemu/103/config": `"cpu":"host"`,
	} {
		resp, err := r.Get(context.Background(), path)
		if err != nil {
			t.Fatalf("Get %s: %v", path, err)
		}
		if resp.GetSource() != SourcePmxcfs || !strings.Contains(string(resp.GetJson()), want) {
			t.Errorf("%s: source %q body %s", path, resp.GetSource(), resp.GetJson())
		}
	}
	if calls := f.pveshCalls(); len(calls) != 0 {
		t.Errorf("guest configs ran pvesh: %q", calls)
	}
}

func TestGetRefusals(t *testing.T) {
	f := newFakePVE(t, "node3")
	f.serveFixtures()
	f.writeConf(KindLXC, 100, "hostname: ok\n")
	nodeDir := filepath.Join(f.root, "nodes", "node3")
	// A conf symlinked to the cluster's private key, to the node's own key,
	// and out of pmxcfs altogether.
	mustSymlink(t, "../../../priv/authkey.key", filepath.Join(nodeDir, "lxc", "101.conf"))
	mustSymlink(t, "../pve-ssl.key", filepath.Join(nodeDir, "lxc", "102.conf"))
	mustSymlink(t, "/etc/passwd", filepath.Join(nodeDir, "qemu-server", "104.conf"))
	// A FIFO would block a plain open; a huge file would blow the cap.
	if err := syscall.Mkfifo(filepath.Join(nodeDir, "lxc", "105.conf"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.writeConf(KindLXC, 107, strings.Repeat("x", 5000))

	r := f.reader(func(c *Config) { c.OutputCap = 4096 })
	tests := []struct {
		path string
		code codes.Code
	}{
		{"/nodes/node1/status", codes.PermissionDenied},
		{"/nodes/node1/lxc/100/config", codes.PermissionDenied},
		{"/nodes/node1/lxc/abc/config", codes.PermissionDenied}, // another node wins over a bad vmid
		{"/nodes/node3/../../priv/authkey.key", codes.InvalidArgument},
		{"/nodes/node3/lxc/../../../priv/authkey.key", codes.InvalidArgument},
		{"/priv/authkey.key", codes.PermissionDenied},
		{"/nodes/node3/priv/authkey.key", codes.PermissionDenied},
		{"/nodes/node3/pve-ssl.key", codes.PermissionDenied},
		{"/nodes/node3/lxc/101/config", codes.PermissionDenied},
		{"/nodes/node3/lxc/102/config", codes.PermissionDenied},
		{"/nodes/node3/qemu/104/config", codes.PermissionDenied},
		{"/nodes/node3/lxc/105/config", codes.PermissionDenied},
		{"/nodes/node3/lxc/107/config", codes.ResourceExhausted},
		{"/nodes/node3/lxc/108/config", codes.NotFound},
		{"/nodes/node3/lxc/99/config", codes.InvalidArgument},
		{"/nodes/node3/lxc/0100/config", codes.InvalidArgument},
		{"/nodes/node3/lxc/1000000000/config", codes.InvalidArgument},
		{"/nodes/node3/lxc/-100/config", codes.InvalidArgument},
		{"/nodes/node3/lxc/1e3/config", codes.InvalidArgument},
		{"/nodes/-node3/status", codes.InvalidArgument},
		{"/nodes/node_3/status", codes.InvalidArgument},
		{"/nodes/" + strings.Repeat("n", 64) + "/status", codes.InvalidArgument},
		{"/nodes/node3/qemu-server/100/config", codes.PermissionDenied},
		{"/nodes/node3/lxc/100/status/current", codes.PermissionDenied},
		{"/nodes/node3/execute", codes.PermissionDenied},
		{"/access/users", codes.PermissionDenied},
		{"/cluster/status/", codes.InvalidArgument},
		{"//cluster/status", codes.InvalidArgument},
		{"cluster/status", codes.InvalidArgument},
		{"/cluster/status?x=1", codes.InvalidArgument},
		{"/cluster/status --output-format text", codes.InvalidArgument},
		{"/cluster/st\x00atus", codes.InvalidArgument},
		{"", codes.InvalidArgument},
		{"/" + strings.Repeat("a", 300), codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := r.Get(context.Background(), tt.path)
			wantCode(t, err, tt.code)
			if resp != nil && strings.Contains(string(resp.GetJson()), "PRIVATE KEY") {
				t.Fatal("a key was returned")
			}
		})
	}
	if calls := f.pveshCalls(); len(calls) != 0 {
		t.Errorf("refused paths ran pvesh: %q", calls)
	}
	// The legitimate neighbour still works.
	if _, err := r.Get(context.Background(), "/nodes/node3/lxc/100/config"); err != nil {
		t.Errorf("allowed config refused: %v", err)
	}
}

func TestGetRefusesSymlinkedGuestDirectory(t *testing.T) {
	f := newFakePVE(t, "node3")
	qdir := filepath.Join(f.root, "nodes", "node3", "qemu-server")
	if err := os.RemoveAll(qdir); err != nil {
		t.Fatal(err)
	}
	f.writeFile("pve/priv/110.conf", "name: secret\n")
	mustSymlink(t, "../../priv", qdir)
	_, err := f.reader(nil).Get(context.Background(), "/nodes/node3/qemu/110/config")
	wantCode(t, err, codes.PermissionDenied)
}

func TestLocalNodeMustMatchHostAndLink(t *testing.T) {
	tests := []struct {
		name     string
		link     string
		hostname string
		ok       bool
	}{
		{"short hostname", "nodes/node3", "node3", true},
		{"fqdn, other case", "nodes/node3", "NODE3.lan", true},
		{"hostname differs", "nodes/node3", "node1", false},
		{"link outside nodes/", "../etc", "etc", false},
		{"link with a bad name", "nodes/no_de", "no_de", false},
		{"nested link", "nodes/node3/lxc", "node3", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakePVE(t, "node3")
			f.serveFixtures()
			local := filepath.Join(f.root, "local")
			os.Remove(local)
			mustSymlink(t, tt.link, local)
			r := f.reader(func(c *Config) { c.Hostname = func() (string, error) { return tt.hostname, nil } })
			_, err := r.Get(context.Background(), "/cluster/status")
			if tt.ok {
				if err != nil {
					t.Errorf("Get: %v", err)
				}
				return
			}
			wantCode(t, err, codes.FailedPrecondition)
			if _, err := r.Detect(); !errors.Is(err, ErrNotProxmox) {
				t.Errorf("Detect = %v", err)
			}
		})
	}
	t.Run("no pmxcfs", func(t *testing.T) {
		r, err := New(Config{PmxcfsRoot: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = r.Get(context.Background(), "/cluster/status")
		wantCode(t, err, codes.FailedPrecondition)
	})
}

func TestPveshFailures(t *testing.T) {
	tests := []struct {
		name   string
		script string
		code   codes.Code
	}{
		{"exit status", "echo 'ipcc_send_rec failed' >&2; exit 255", codes.Unavailable},
		{"not JSON", "echo 'Use of uninitialized value'", codes.Internal},
		{"output over the cap", "i=0; while [ $i -lt 2000 ]; do echo '[1,2,3,4,5,6,7,8,9,0]'; i=$((i+1)); done", codes.ResourceExhausted},
		{"timeout kills the group", "sleep 30 & echo $! > '%s/child.pid'; wait", codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakePVE(t, "node3")
			script := "#!/bin/sh\n" + tt.script + "\n"
			if strings.Contains(script, "%s") {
				script = fmt.Sprintf(script, f.dir)
			}
			if err := os.WriteFile(f.pvesh, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			r := f.reader(func(c *Config) { c.Timeout = 2 * time.Second; c.OutputCap = 4096 })
			_, err := r.Get(context.Background(), "/cluster/status")
			wantCode(t, err, tt.code)
			if pid, err := os.ReadFile(filepath.Join(f.dir, "child.pid")); err == nil {
				n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
				waitGone(t, n)
			}
		})
	}
	t.Run("no launcher", func(t *testing.T) {
		f := newFakePVE(t, "node3")
		f.respond("/cluster/status", []byte("[]"))
		r := f.reader(func(c *Config) { c.Launcher = nil })
		_, err := r.Get(context.Background(), "/cluster/status")
		wantCode(t, err, codes.FailedPrecondition)
	})
	t.Run("missing binary", func(t *testing.T) {
		f := newFakePVE(t, "node3")
		r := f.reader(func(c *Config) { c.PveshPath = filepath.Join(f.dir, "nope") })
		_, err := r.Get(context.Background(), "/cluster/status")
		wantCode(t, err, codes.Unavailable)
	})
	t.Run("caller cancels", func(t *testing.T) {
		f := newFakePVE(t, "node3")
		if err := os.WriteFile(f.pvesh, []byte("#!/bin/sh\nsleep 30\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := f.reader(nil).Get(ctx, "/cluster/status")
		if c := status.Code(err); c != codes.DeadlineExceeded && c != codes.Canceled {
			t.Errorf("code = %v", c)
		}
	})
}

// waitGone waits until pid has exited (or is a zombie awaiting its reaper).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		if _, after, ok := strings.Cut(string(stat), ") "); ok && strings.HasPrefix(after, "Z") {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("pvesh's child %d survived the timeout", pid)
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []Config{
		{PveshPath: "pvesh"},
		{PmxcfsRoot: "etc/pve"},
		{AllowedPaths: []string{"/nodes/node1/status"}},
		{AllowedPaths: []string{"/nodes/{vmid}/status"}},
		{AllowedPaths: []string{"/cluster/{local}"}},
		{AllowedPaths: []string{"/nodes/{local}/../priv"}},
		{AllowedPaths: []string{"cluster/status"}},
		{AllowedPaths: []string{"/cluster/*"}},
	}
	for _, cfg := range tests {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	if _, err := New(Config{AllowedPaths: []string{"/nodes/{local}/lxc/{vmid}/status/current"}}); err != nil {
		t.Errorf("a valid extra pattern refused: %v", err)
	}
}

func TestAllowedPathsNarrowTheDefaults(t *testing.T) {
	f := newFakePVE(t, "node3")
	f.serveFixtures()
	f.writeConf(KindLXC, 100, "hostname: a\n")
	r := f.reader(func(c *Config) { c.AllowedPaths = []string{"/cluster/resources"} })
	if _, err := r.Get(context.Background(), "/cluster/resources"); err != nil {
		t.Fatal(err)
	}
	_, err := r.Get(context.Background(), "/cluster/status")
	wantCode(t, err, codes.PermissionDenied)
	_, err = r.Get(context.Background(), "/nodes/node3/lxc/100/config")
	wantCode(t, err, codes.PermissionDenied)
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// TestPveshGoesThroughTheLauncher: pvesh runs in a run cgroup of its own
// with no_new_privs, and a child it leaves behind in a new session dies
// with the run.
func TestPveshGoesThroughTheLauncher(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run cgroups")
	}
	f := newFakePVE(t, "node3")
	script := fmt.Sprintf(`#!/bin/sh
setsid sleep 30 < /dev/null > /dev/null 2>&1 &
echo $! > '%s/child.pid'
printf '{"cgroup":"%%s","nnp":"%%s"}' "$(tr '\n' ' ' < /proc/self/cgroup)" "$(grep NoNewPrivs /proc/self/status | tr '\t' ' ')"
`, f.dir)
	if err := os.WriteFile(f.pvesh, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	resp, err := f.reader(nil).Get(context.Background(), "/cluster/status")
	if err != nil {
		t.Fatal(err)
	}
	out := string(resp.GetJson())
	if !strings.Contains(out, "/nannyagent-exec/run-") || !strings.Contains(out, "NoNewPrivs: 1") {
		t.Errorf("pvesh ran outside the launcher: %s", out)
	}
	pid, err := os.ReadFile(filepath.Join(f.dir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(pid)))
	waitGone(t, n)
}
