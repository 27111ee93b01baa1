package execute

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestPlantedLinkRefused: an app account owns its log directory and plants
// a link there to a file standing in for /etc/shadow. The link is refused
// although the judge allows both paths; the same link in a root-owned
// directory is followed, so the refusal is about who could plant it.
func TestPlantedLinkRefused(t *testing.T) {
	r := newTestRunner(t, Config{})
	root := rootDir(t)
	shadow := filepath.Join(root, "shadow")
	writeFile0(t, shadow, "root:$6$secret-hash:19000:0:99999:7:::\n", 0o600)
	logDir := filepath.Join(root, "log", "app")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logDir, 1, 1); err != nil { // daemon
		t.Fatal(err)
	}
	planted := filepath.Join(logDir, "current.log")
	if err := os.Symlink(shadow, planted); err != nil {
		t.Fatal(err)
	}
	// World-writable sticky (like /tmp) and group-writable root-owned
	// directories are not trusted either.
	sticky := filepath.Join(root, "tmp")
	groupW := filepath.Join(root, "shared")
	trusted := filepath.Join(root, "etc")
	for dir, mode := range map[string]os.FileMode{sticky: 0o777 | os.ModeSticky, groupW: 0o775, trusted: 0o755} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../shadow", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		path    string
		refused bool
	}{
		{planted, true},
		{filepath.Join(sticky, "link"), true},
		{filepath.Join(groupW, "link"), true},
		{filepath.Join(trusted, "link"), false},
	}
	for _, mode := range []OpenMode{OpenFD, OpenCheckOnly} {
		for _, tc := range cases {
			st := withPath(stage("/usr/bin/cat", tc.path), 1, mode, root)
			res, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
			if tc.refused {
				if !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "non-root account can write") {
					t.Errorf("%s (%v): got %v, want a refusal", tc.path, mode, err)
				}
				continue
			}
			if err != nil || !strings.Contains(string(res.Stdout), "secret-hash") {
				t.Errorf("%s (%v): trusted link not followed: %v %+v", tc.path, mode, err, res)
			}
		}
	}
}

// TestMagicLinksRefused: /proc/<pid>/{root,cwd,exe,fd/*} jump to objects
// without a path walk. They are refused even with "/" allowed and nothing
// denied; the ordinary links at the top of /proc still work.
func TestMagicLinksRefused(t *testing.T) {
	r := newTestRunner(t, Config{})
	refused := []string{
		"/proc/self/root/etc/shadow",
		"/proc/thread-self/root/etc/passwd",
		"/proc/1/root/etc/hostname",
		"/proc/self/cwd/etc/passwd",
		"/proc/self/exe",
		"/proc/self/fd/0",
		"/proc/self/task/" + itoa(os.Getpid()) + "/root/etc/passwd",
		"/proc/self/ns/net",
	}
	for _, p := range refused {
		st := withPath(stage("/usr/bin/cat", p), 1, OpenFD)
		_, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
		if !errors.Is(err, ErrPathRefused) {
			t.Errorf("%s: got %v, want a refusal", p, err)
		}
	}
	magic := withPath(stage("/usr/bin/cat", "/proc/self/root/etc/shadow"), 1, OpenFD)
	_, err := r.Run(context.Background(), Request{Stages: []Stage{magic}, Judge: &testJudge{}})
	if err == nil || !strings.Contains(err.Error(), "magic link") {
		t.Errorf("/proc/self/root: %v, want a magic link refusal", err)
	}
	for _, p := range []string{"/proc/mounts", "/proc/net/dev", "/proc/self/status"} {
		st := withPath(stage("/usr/bin/head", "-n", "1", p), 3, OpenFD)
		res, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
		if err != nil || res.ExitCode != 0 || len(res.Stdout) == 0 {
			t.Errorf("%s: %v %+v", p, err, res)
		}
	}
}

// TestEveryHopJudged: the judge sees the path as given, each link's
// destination and the final physical path; a link whose destination the
// judge denies is refused.
func TestEveryHopJudged(t *testing.T) {
	r := newTestRunner(t, Config{})
	root := rootDir(t)
	allowed := filepath.Join(root, "allowed")
	outside := filepath.Join(root, "outside")
	for _, d := range []string{allowed, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile0(t, filepath.Join(outside, "secret"), "secret\n", 0o644)
	writeFile0(t, filepath.Join(allowed, "data"), "data\n", 0o644)
	mustLink(t, "../outside/secret", filepath.Join(allowed, "escape"))
	mustLink(t, "data", filepath.Join(allowed, "hop2"))
	mustLink(t, "hop2", filepath.Join(allowed, "hop1"))
	mustLink(t, "loop", filepath.Join(allowed, "loop"))

	j := &testJudge{}
	st := withPath(stage("/usr/bin/cat", filepath.Join(allowed, "hop1")), 1, OpenFD, allowed)
	res, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: j})
	if err != nil || string(res.Stdout) != "data\n" {
		t.Fatalf("two hops: %v %+v", err, res)
	}
	want := []string{filepath.Join(allowed, "hop1"), filepath.Join(allowed, "hop2"), filepath.Join(allowed, "data"), filepath.Join(allowed, "data")}
	if !slices.Equal(j.seen, want) {
		t.Errorf("judged %q, want %q", j.seen, want)
	}

	st = withPath(stage("/usr/bin/cat", filepath.Join(allowed, "escape")), 1, OpenFD, allowed)
	_, err = r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
	if !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "not under") {
		t.Errorf("escaping link: %v", err)
	}
	st = withPath(stage("/usr/bin/cat", filepath.Join(allowed, "loop")), 1, OpenFD, allowed)
	_, err = r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
	if !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "more than 40") {
		t.Errorf("link loop: %v", err)
	}
	// A denied path is refused however it is spelled.
	j = &testJudge{deny: []string{filepath.Join(outside, "secret")}}
	for _, p := range []string{filepath.Join(allowed, "..", "outside", "secret"), filepath.Join(allowed, "escape")} {
		st = withPath(stage("/usr/bin/cat", p), 1, OpenFD, root)
		if _, err = r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: j}); !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "denied") {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func mustLink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// TestOpenFDRefusesSpecialFiles: a FIFO would hang a reader and opening a
// device can have effects, so only regular files and directories are
// opened for a stage.
func TestOpenFDRefusesSpecialFiles(t *testing.T) {
	r := newTestRunner(t, Config{})
	root := rootDir(t)
	fifo := filepath.Join(root, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, "/dev/zero", "/dev/null", "/dev/tty"} {
		st := withPath(stage("/usr/bin/cat", p), 1, OpenFD)
		_, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
		if !errors.Is(err, ErrPathRefused) || !strings.Contains(err.Error(), "not a regular file or directory") {
			t.Errorf("%s: %v", p, err)
		}
	}
	st := withPath(stage("/usr/bin/cat", root), 1, OpenFD)
	res, err := r.Run(context.Background(), Request{Stages: []Stage{st}, Judge: &testJudge{}})
	if err != nil || res.ExitCode != 1 || !strings.Contains(string(res.Stderr), "Is a directory") {
		t.Errorf("directory: %v %+v", err, res)
	}
}

// TestSwapAfterCheck swaps the link, or replaces the file, after the
// runner judged and opened it and before the stage starts. An OpenFD stage
// still reads the original file.
func TestSwapAfterCheck(t *testing.T) {
	r := newTestRunner(t, Config{})
	root := rootDir(t)
	orig := filepath.Join(root, "app.log")
	secret := filepath.Join(root, "secret")
	link := filepath.Join(root, "current")
	writeFile0(t, orig, "original\n", 0o644)
	writeFile0(t, secret, "SECRET\n", 0o600)
	mustLink(t, "app.log", link)

	r.beforeLaunch = func() {
		if err := os.Remove(link); err != nil {
			t.Error(err)
		}
		mustLink(t, "secret", link)
	}
	res := run(t, r, Limits{}, withPath(stage("/usr/bin/cat", link), 1, OpenFD, root))
	if string(res.Stdout) != "original\n" {
		t.Errorf("after the link swap the stage read %q", res.Stdout)
	}

	writeFile0(t, orig, "original\n", 0o644)
	replacement := filepath.Join(root, "replacement")
	writeFile0(t, replacement, "REPLACED\n", 0o644)
	r.beforeLaunch = func() {
		if err := os.Rename(replacement, orig); err != nil {
			t.Error(err)
		}
	}
	res = run(t, r, Limits{}, withPath(stage("/usr/bin/cat", orig), 1, OpenFD, root))
	if string(res.Stdout) != "original\n" {
		t.Errorf("after the file was replaced the stage read %q", res.Stdout)
	}

	// OpenCheckOnly gets the path as written, so the tool reports what it
	// was asked about (the link's own name). The link sits in a directory
	// only root may write, so only root could swap it; replacing a file
	// after the check is the documented window for metadata tools.
	writeFile0(t, orig, "original\n", 0o644)
	os.Remove(link)
	mustLink(t, "app.log", link)
	r.beforeLaunch = nil
	res = run(t, r, Limits{}, withPath(stage("/usr/bin/wc", "-c", link), 2, OpenCheckOnly, root))
	if want := "9 " + link + "\n"; string(res.Stdout) != want {
		t.Errorf("check-only through a link: %q, want %q", res.Stdout, want)
	}
	r.beforeLaunch = func() {
		writeFile0(t, replacement, "REPLACED, LONGER\n", 0o644)
		os.Rename(replacement, orig)
	}
	res = run(t, r, Limits{}, withPath(stage("/usr/bin/wc", "-c", orig), 2, OpenCheckOnly, root))
	if want := "17 " + orig + "\n"; string(res.Stdout) != want {
		t.Errorf("check-only after replace: %q, want %q", res.Stdout, want)
	}
}

// TestResolvePathUnit covers the walk itself without running anything.
func TestResolvePathUnit(t *testing.T) {
	requireRoot(t)
	root := rootDir(t)
	if err := os.MkdirAll(filepath.Join(root, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile0(t, filepath.Join(root, "a", "b", "f"), "x", 0o644)
	mustLink(t, "a/b", filepath.Join(root, "ab"))
	mustLink(t, filepath.Join(root, "a"), filepath.Join(root, "abs"))
	cases := []struct {
		in, want string
		err      string
	}{
		{"/etc/os-release", "/usr/lib/os-release", ""},
		{"/bin/true", "/usr/bin/true", ""},
		{"etc/passwd", "/etc/passwd", ""},
		{"/", "/", ""},
		{"/..", "/", ""},
		{"//etc/./passwd", "/etc/passwd", ""},
		{root + "/ab/f", root + "/a/b/f", ""},
		{root + "/ab/../b/f", root + "/a/b/f", ""}, // ".." after a link is physical
		{root + "/abs/b/f", root + "/a/b/f", ""},
		{root + "/a/b/f/", root + "/a/b/f", ""},
		{root + "/a/b/f/x", "", "not a directory"},
		{root + "/missing", "", "no such file"},
	}
	for _, tc := range cases {
		res, err := resolvePath(tc.in, []string{"/"}, &testJudge{})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: got %v, want error %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if res.path != tc.want {
			t.Errorf("%q resolved to %q, want %q", tc.in, res.path, tc.want)
		}
		res.file.Close()
	}
}
