package nspawn

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// bedChecks finds out what the container gives the agent: a writable
// cgroup2 subtree whose cgroup.kill works, v1 controllers, tracefs and
// bpftrace, and a network with only lo.
const bedChecks = `
self=$(sed -n 's/^0:://p' /proc/self/cgroup)
note cgroup-self "$self"
v2=/sys/fs/cgroup/unified$self/bedprobe
mkdir "$v2" && note v2-mkdir ok
test -e "$v2/cgroup.kill" && note v2-kill-file ok
# Detached, so systemd reaps it and kill -0 fails once it died.
setsid -f sh -c 'echo $$ >/run/bedprobe.pid; exec sleep 300'
wait_for 5 test -s /run/bedprobe.pid
victim=$(cat /run/bedprobe.pid)
echo "$victim" >"$v2/cgroup.procs" && note v2-move ok
echo 1 >"$v2/cgroup.kill"
wait_for 5 sh -c "! kill -0 $victim" && note v2-killed ok
rmdir "$v2"
record v1-memory-mkdir mkdir /sys/fs/cgroup/memory/bedprobe
record mounts sh -c 'for p in /sys/fs/cgroup/unified /sys/fs/cgroup/memory /sys/kernel/tracing; do findmnt -no TARGET,FSTYPE,OPTIONS -M $p; done' 
record bpftrace timeout 30 bpftrace -e 'tracepoint:sched:sched_process_exec { @execs = count(); } interval:ms:1500 { exit(); }'
record links ip -br link
`

func TestBedContainer(t *testing.T) {
	Require(t)
	ctx := context.Background()
	start := time.Now()
	base, built, err := Base(ctx, RootfsOptions{Include: AgentInclude, Log: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base %s (debootstrap ran: %v) in %s", base, built, time.Since(start).Round(time.Millisecond))
	m := NewMachine(t, base)
	t.Logf("machine %s: overlay %v", m.Name, m.Overlay)
	res, err := m.Boot(ctx, BootOptions{Checks: bedChecks, Tracing: true, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot %s until the checks ran, checks %s, nspawn exited after %s",
		res.UpToChecks.Round(time.Millisecond), res.Checks.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond))

	for _, name := range []string{"v2-mkdir", "v2-kill-file", "v2-move", "v2-killed"} {
		if _, ok := res.Get(name); !ok {
			log, _ := res.Get("checks.log")
			t.Errorf("cgroup2 in the container: %s failed\n%s", name, log.Out)
		}
	}
	if r, _ := res.Get("bpftrace"); r.Code != 0 || !strings.Contains(r.Out, "@execs:") {
		t.Errorf("bpftrace in the container (exit %d):\n%s", r.Code, r.Out)
	}
	if r, _ := res.Get("links"); !slices.Equal(firstFields(r.Out), []string{"lo"}) {
		t.Errorf("the container's network is not private (only lo):\n%s", r.Out)
	}
	// Documented in README.md: nspawn mounts the v1 controllers read-only,
	// so memory and task limits of runs are not available in the bed.
	if r, _ := res.Get("v1-memory-mkdir"); r.Code == 0 {
		t.Log("v1 memory controller writable in the container")
	} else {
		t.Logf("v1 memory controller not writable in the container: %s", strings.TrimSpace(r.Out))
	}
	mounts, _ := res.Get("mounts")
	t.Logf("container mounts:\n%s", mounts.Out)
}

func firstFields(text string) []string {
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

func TestAptSources(t *testing.T) {
	oneLine := `# comment
deb http://deb.debian.org/debian bookworm main contrib
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian trixie main
deb [ broken
`
	got := parseOneLine(oneLine)
	want := []aptSource{
		{deb: true, uri: "http://deb.debian.org/debian", suites: []string{"bookworm"}},
		{deb: false, uri: "http://deb.debian.org/debian", suites: []string{"bookworm"}},
		{deb: true, uri: "http://mirror.example/debian", suites: []string{"trixie"}},
	}
	if !sourcesEqual(got, want) {
		t.Errorf("one-line sources: %+v, want %+v", got, want)
	}
	deb822 := `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://off.example/debian
Suites: bookworm
Enabled: no

Types: deb deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
`
	got = parseDeb822(deb822)
	want = []aptSource{
		{deb: true, uri: "http://deb.debian.org/debian", suites: []string{"bookworm", "bookworm-updates"}},
		{deb: true, uri: "http://deb.debian.org/debian-security", suites: []string{"bookworm-security"}},
	}
	if !sourcesEqual(got, want) {
		t.Errorf("deb822 sources: %+v, want %+v", got, want)
	}
}

func sourcesEqual(a, b []aptSource) bool {
	return slices.EqualFunc(a, b, func(x, y aptSource) bool {
		return x.deb == y.deb && x.uri == y.uri && slices.Equal(x.suites, y.suites)
	})
}

func TestCacheKey(t *testing.T) {
	a := cacheKey("bookworm", "amd64", includeList([]string{"procps", "bpftrace", "dbus"}))
	b := cacheKey("bookworm", "amd64", includeList([]string{"bpftrace", "procps"}))
	if a != b {
		t.Errorf("the same package set gave two keys: %s %s", a, b)
	}
	if a == cacheKey("bookworm", "amd64", includeList([]string{"bpftrace"})) {
		t.Error("a different package set gave the same key")
	}
	if a == cacheKey("trixie", "amd64", includeList([]string{"procps", "bpftrace"})) {
		t.Error("a different suite gave the same key")
	}
}
