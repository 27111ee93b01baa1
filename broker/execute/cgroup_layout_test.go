package execute

import (
	"os"
	"strings"
	"testing"
)

const hybridMountinfo = `23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

const hybridCgroup = `9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu,cpuacct:/
0::/
`

const unifiedMountinfo = `25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`

const unifiedCgroup = "0::/system.slice/nannyagent-broker.service\n"

func TestLayoutFrom(t *testing.T) {
	cases := []struct {
		name, mountinfo, cgroup string
		want                    cgroupLayout
		kind                    string
	}{
		{"hybrid", hybridMountinfo, hybridCgroup, cgroupLayout{
			v2Mount: "/sys/fs/cgroup/unified", v2Self: "/sys/fs/cgroup/unified",
			v1Self: map[string]string{"memory": "/sys/fs/cgroup/memory/process_api/abc", "pids": "/sys/fs/cgroup/pids"},
		}, "hybrid"},
		{"unified", unifiedMountinfo, unifiedCgroup, cgroupLayout{
			v2Mount: "/sys/fs/cgroup", v2Self: "/sys/fs/cgroup/system.slice/nannyagent-broker.service",
			v1Self: map[string]string{},
		}, "unified"},
		{"v1 only", strings.Replace(hybridMountinfo, "cgroup2 cgroup2", "tmpfs tmpfs", 1), hybridCgroup, cgroupLayout{
			v1Self: map[string]string{"memory": "/sys/fs/cgroup/memory/process_api/abc", "pids": "/sys/fs/cgroup/pids"},
		}, "legacy"},
		{"namespaced root", "41 31 0:38 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/outer/inner\n", cgroupLayout{
			v2Mount: "/sys/fs/cgroup", v2Self: "/sys/fs/cgroup/inner", v1Self: map[string]string{},
		}, "unified"},
		{"cgroup outside the mount", "41 31 0:38 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n", "0::/elsewhere\n", cgroupLayout{
			v1Self: map[string]string{},
		}, "none"},
		{"escaped mount point", `41 31 0:38 / /mnt/my\040cgroups rw - cgroup2 cgroup2 rw` + "\n", "0::/a\n", cgroupLayout{
			v2Mount: "/mnt/my cgroups", v2Self: "/mnt/my cgroups/a", v1Self: map[string]string{},
		}, "unified"},
		{"dot-dot in membership", unifiedMountinfo, "0::/../../etc\n", cgroupLayout{v1Self: map[string]string{}}, "none"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mounts, err := parseMountinfo(strings.NewReader(tc.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			member, err := parseProcCgroup(strings.NewReader(tc.cgroup))
			if err != nil {
				t.Fatal(err)
			}
			got := layoutFrom(mounts, member)
			if got.kind() != tc.kind {
				t.Errorf("kind %q, want %q", got.kind(), tc.kind)
			}
			if got.v2Mount != tc.want.v2Mount || got.v2Self != tc.want.v2Self || len(got.v1Self) != len(tc.want.v1Self) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for k, v := range tc.want.v1Self {
				if got.v1Self[k] != v {
					t.Errorf("v1 %s: %q, want %q", k, got.v1Self[k], v)
				}
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := parseMountinfo(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("short mountinfo line accepted")
	}
	if _, err := parseMountinfo(strings.NewReader("1 2 0:1 / /x rw shared:1 cgroup2 none rw\n")); err == nil {
		t.Error("mountinfo line without separator accepted")
	}
	if _, err := parseProcCgroup(strings.NewReader("0:/x\n")); err == nil {
		t.Error("cgroup line without two colons accepted")
	}
	for _, in := range []string{"", "12", "12 (x", "x (y) S 1", "12 (y) S", "12 (y) SS 1", "12 (y) S -1", "0 (y) S 1"} {
		if _, err := parseStat([]byte(in)); err == nil {
			t.Errorf("stat %q accepted", in)
		}
	}
}

func TestParseStat(t *testing.T) {
	cases := []struct {
		in   string
		want procStat
	}{
		{"1 (init) S 0 1 1 0", procStat{1, 'S', 0}},
		{"42 (a) b) (c) Z 7 42", procStat{42, 'Z', 7}},
		{"9 () R 3", procStat{9, 'R', 3}},
		{"77 (sp ace) T 5 0 0\n", procStat{77, 'T', 5}},
	}
	for _, tc := range cases {
		got, err := parseStat([]byte(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
	self, err := readStat(os.Getpid())
	if err != nil || self.pid != os.Getpid() || self.ppid != os.Getppid() {
		t.Errorf("own stat: %+v %v", self, err)
	}
}

func TestParseKeyed(t *testing.T) {
	in := []byte("populated 1\nfrozen 0\noom_kill 3\nmax 12\n")
	for key, want := range map[string]int64{"populated": 1, "frozen": 0, "oom_kill": 3, "max": 12} {
		if got, ok := parseKeyed(in, key); !ok || got != want {
			t.Errorf("%s: %d %v", key, got, ok)
		}
	}
	if _, ok := parseKeyed(in, "missing"); ok {
		t.Error("missing key found")
	}
	if _, ok := parseKeyed([]byte("max x\n"), "max"); ok {
		t.Error("non-number accepted")
	}
}

func TestRunOwner(t *testing.T) {
	cases := map[string]int{"run-123-4-5": 123, "run-9-1": 9, "run-x-1": 0, "run-": 0, "other": 0, "run-0-1": 0, "run--1": 0}
	for in, want := range cases {
		got, ok := runOwner(in)
		if ok != (want > 0) || got != want && want > 0 {
			t.Errorf("%q: %d %v, want %d", in, got, ok, want)
		}
	}
}
