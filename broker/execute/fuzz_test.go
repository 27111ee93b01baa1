package execute

import (
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func FuzzParseMountinfo(f *testing.F) {
	f.Add(hybridMountinfo)
	f.Add(unifiedMountinfo)
	f.Add(`41 31 0:38 / /mnt/a\040b\\ rw - cgroup2 cgroup2 rw` + "\n")
	f.Add("1 2 3 - x\n")
	f.Fuzz(func(t *testing.T, in string) {
		mounts, err := parseMountinfo(strings.NewReader(in))
		if err != nil {
			return
		}
		member, _ := parseProcCgroup(strings.NewReader(hybridCgroup))
		l := layoutFrom(mounts, member)
		for _, dir := range append([]string{l.v2Self}, l.v1Self["memory"], l.v1Self["pids"]) {
			if strings.Contains(dir, "/../") {
				t.Errorf("layout dir %q escapes its mount", dir)
			}
		}
	})
}

func FuzzParseProcCgroup(f *testing.F) {
	f.Add(hybridCgroup)
	f.Add(unifiedCgroup)
	f.Add("0::/../x\n")
	f.Add("1:a,b,c:/p:q\n")
	f.Fuzz(func(t *testing.T, in string) {
		member, err := parseProcCgroup(strings.NewReader(in))
		if err != nil {
			return
		}
		mounts, _ := parseMountinfo(strings.NewReader(hybridMountinfo))
		l := layoutFrom(mounts, member)
		if l.v2Self != "" && !strings.HasPrefix(l.v2Self, "/sys/fs/cgroup/unified") {
			t.Errorf("v2 dir %q outside the mount", l.v2Self)
		}
		for _, dir := range l.v1Self {
			if path.Clean(dir) != dir || !strings.HasPrefix(dir, "/sys/fs/cgroup/") {
				t.Errorf("v1 dir %q outside its mount", dir)
			}
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1 (init) S 0 1 1 0"))
	f.Add([]byte("42 (a) b) (c) Z 7 42"))
	f.Add([]byte("9 () R 3"))
	f.Add([]byte(")("))
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := parseStat(in)
		if err == nil && (st.pid <= 0 || st.ppid < 0) {
			t.Errorf("%q parsed to %+v", in, st)
		}
	})
}

func FuzzParseKeyed(f *testing.F) {
	f.Add([]byte("populated 1\nfrozen 0\n"), "populated")
	f.Add([]byte("oom_kill 99999999999999999999\n"), "oom_kill")
	f.Fuzz(func(t *testing.T, in []byte, key string) {
		v, ok := parseKeyed(in, key)
		if ok && !bytes.Contains(in, []byte(key)) {
			t.Errorf("found %q=%d in %q", key, v, in)
		}
	})
}

// FuzzResolvePath walks arbitrary paths through a small tree with links
// (good, looping, escaping, into /proc) and checks the walk's promises: a
// success is a clean absolute path free of links, under the allowed root,
// judged, and the descriptor is that very object; a failure is a refusal.
func FuzzResolvePath(f *testing.F) {
	root := fuzzTree(f)
	for _, seed := range []string{"a/b/f", "ab/f", "ab/../b/f", "loop", "esc", "proc", "abs/b", "a/./b//f/", "../../etc/passwd", "a/b/f/x", "dangling"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if strings.IndexByte(in, 0) >= 0 || len(in) > 512 {
			return
		}
		j := &testJudge{}
		res, err := resolvePath(root+"/"+in, []string{root}, j)
		var miss *missingError
		if errors.As(err, &miss) {
			// A missing entry is reported only after every hop before it
			// was judged, and only under the allowed root.
			if !under(miss.at, root) || len(j.seen) == 0 {
				t.Fatalf("%q: missing %s reported outside the root or unjudged (judged %v)", in, miss.at, j.seen)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrPathRefused) {
				t.Fatalf("%q: error without ErrPathRefused: %v", in, err)
			}
			return
		}
		defer res.file.Close()
		if !path.IsAbs(res.path) || path.Clean(res.path) != res.path || !under(res.path, root) {
			t.Fatalf("%q resolved to %q", in, res.path)
		}
		for p := res.path; p != "/"; p = path.Dir(p) {
			if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeSymlink != 0 {
				t.Fatalf("%q resolved to %q, which has a link or is gone at %s", in, res.path, p)
			}
		}
		var st unix.Stat_t
		if err := unix.Stat(res.path, &st); err != nil || st.Ino != res.stat.Ino || st.Dev != res.stat.Dev {
			t.Fatalf("%q: descriptor is not %s", in, res.path)
		}
		if j.seen[len(j.seen)-1] != res.path {
			t.Fatalf("%q: final path %q not judged last (%q)", in, res.path, j.seen)
		}
	})
}

func fuzzTree(f *testing.F) string {
	f.Helper()
	root, err := filepath.EvalSymlinks(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "a", "b", "f"), []byte("x"), 0o644); err != nil {
		f.Fatal(err)
	}
	for target, name := range map[string]string{
		"a/b": "ab", "loop": "loop", "..": "esc", "/proc/self/root": "proc",
		filepath.Join(root, "a"): "abs", "missing": "dangling",
	} {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			f.Fatal(err)
		}
	}
	return root
}
