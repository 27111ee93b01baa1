package nspawn

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultCacheDir keeps base root filesystems between runs on one machine,
// outside any checkout. NANNYAGENT_TEST_CACHE overrides it.
const DefaultCacheDir = "/var/cache/nannyagent-test"

// BaseInclude is what every base has beside debootstrap's minbase: a
// booting systemd and its bus.
var BaseInclude = []string{"systemd", "systemd-sysv", "dbus"}

// layoutVersion changes when a base is prepared differently, so old caches
// are not reused.
const layoutVersion = "nannyagent-testbed-1"

// RootfsOptions describe a base root filesystem.
type RootfsOptions struct {
	// Include lists packages besides minbase and BaseInclude (bpftrace,
	// iproute2, …). The cache key is the sorted set.
	Include []string
	// Suite is the Debian release; the host's VERSION_CODENAME when empty
	// (NANNYAGENT_TEST_SUITE overrides).
	Suite string
	// Mirror is the Debian archive; the one apt on the host uses when
	// empty (NANNYAGENT_TEST_MIRROR overrides).
	Mirror string
	// CacheDir holds the bases; DefaultCacheDir when empty.
	CacheDir string
	// Log receives debootstrap's output; discarded when nil.
	Log io.Writer
}

// Base returns a base root filesystem for opts, building it with
// debootstrap --variant=minbase the first time. A base is never booted or
// changed: machines are overlays of it. Concurrent callers wait for one
// build. built reports whether this call ran debootstrap.
func Base(ctx context.Context, opts RootfsOptions) (dir string, built bool, err error) {
	suite, err := suiteOf(opts.Suite)
	if err != nil {
		return "", false, err
	}
	include := includeList(opts.Include)
	arch, err := hostArch()
	if err != nil {
		return "", false, err
	}
	cache := firstNonEmpty(opts.CacheDir, os.Getenv("NANNYAGENT_TEST_CACHE"), DefaultCacheDir)
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", false, fmt.Errorf("cache directory: %w", err)
	}
	dir = filepath.Join(cache, "rootfs-"+cacheKey(suite, arch, include))
	unlock, err := lock(ctx, dir+".lock")
	if err != nil {
		return "", false, err
	}
	defer unlock()
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return dir, false, nil
	}
	mirror, err := mirrorOf(opts.Mirror, suite)
	if err != nil {
		return "", false, err
	}
	if err := debootstrap(ctx, dir, suite, mirror, include, opts.Log); err != nil {
		return "", false, err
	}
	return dir, true, nil
}

// debootstrap builds into a scratch directory and renames it into place,
// so a base that exists is complete.
func debootstrap(ctx context.Context, dir, suite, mirror string, include []string, log io.Writer) error {
	tmp := dir + ".partial"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove an unfinished build: %w", err)
	}
	if log == nil {
		log = io.Discard
	}
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant=minbase",
		"--include="+strings.Join(include, ","), suite, tmp, mirror)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("debootstrap %s from %s: %w", suite, mirror, err)
	}
	// The downloaded packages and indexes are half the size and no test
	// needs them.
	for _, glob := range []string{"var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_Packages", "var/cache/apt/*.bin"} {
		files, _ := filepath.Glob(filepath.Join(tmp, glob))
		for _, f := range files {
			os.Remove(f)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("move the new base into place: %w", err)
	}
	return nil
}

// includeList is BaseInclude plus extra, sorted and without duplicates.
func includeList(extra []string) []string {
	all := append(slices.Clone(BaseInclude), extra...)
	slices.Sort(all)
	return slices.Compact(all)
}

func cacheKey(suite, arch string, include []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", layoutVersion, suite, arch, strings.Join(include, ","))
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func hostArch() (string, error) {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "", fmt.Errorf("dpkg --print-architecture: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// lock takes an exclusive lock on path, waiting until ctx ends.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- unix.Flock(int(f.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return func() { f.Close() }, nil
	case <-ctx.Done():
		f.Close() // closing the descriptor ends the wait
		<-done
		return nil, fmt.Errorf("waiting for %s: %w", path, ctx.Err())
	}
}

func suiteOf(given string) (string, error) {
	if s := firstNonEmpty(given, os.Getenv("NANNYAGENT_TEST_SUITE")); s != "" {
		return s, nil
	}
	f, err := os.Open("/etc/os-release")
	if err != nil {
		return "", fmt.Errorf("no suite given and no /etc/os-release: %w", err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VERSION_CODENAME="); ok && v != "" {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", errors.New("no suite given and /etc/os-release names no VERSION_CODENAME (set NANNYAGENT_TEST_SUITE)")
}

// mirrorOf finds the archive apt uses for suite: one-line entries in
// /etc/apt/sources.list and deb822 stanzas in sources.list.d/*.sources.
func mirrorOf(given, suite string) (string, error) {
	if m := firstNonEmpty(given, os.Getenv("NANNYAGENT_TEST_MIRROR")); m != "" {
		return m, nil
	}
	var sources []aptSource
	if data, err := os.ReadFile("/etc/apt/sources.list"); err == nil {
		sources = append(sources, parseOneLine(string(data))...)
	}
	files, _ := filepath.Glob("/etc/apt/sources.list.d/*.list")
	deb822, _ := filepath.Glob("/etc/apt/sources.list.d/*.sources")
	for _, f := range append(files, deb822...) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".sources") {
			sources = append(sources, parseDeb822(string(data))...)
		} else {
			sources = append(sources, parseOneLine(string(data))...)
		}
	}
	for _, s := range sources {
		if s.deb && slices.Contains(s.suites, suite) {
			return s.uri, nil
		}
	}
	return "", fmt.Errorf("no apt source for %s in /etc/apt (set NANNYAGENT_TEST_MIRROR)", suite)
}

type aptSource struct {
	deb    bool
	uri    string
	suites []string
}

func parseOneLine(text string) []aptSource {
	var out []aptSource
	for _, line := range strings.Split(text, "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], "[") {
			// Options: "[arch=amd64 signed-by=…]" may span fields.
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 {
				continue
			}
			f = append(f[:1], f[i+1:]...)
		}
		if len(f) >= 3 && (f[0] == "deb" || f[0] == "deb-src") {
			out = append(out, aptSource{deb: f[0] == "deb", uri: f[1], suites: []string{f[2]}})
		}
	}
	return out
}

func parseDeb822(text string) []aptSource {
	var out []aptSource
	for _, stanza := range strings.Split(text, "\n\n") {
		fields := map[string]string{}
		for _, line := range strings.Split(stanza, "\n") {
			if strings.HasPrefix(line, "#") {
				continue
			}
			if k, v, ok := strings.Cut(line, ":"); ok && !strings.HasPrefix(k, " ") {
				fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
			}
		}
		if strings.EqualFold(fields["enabled"], "no") {
			continue
		}
		uris := strings.Fields(fields["uris"])
		if len(uris) == 0 {
			continue
		}
		out = append(out, aptSource{
			deb:    slices.Contains(strings.Fields(fields["types"]), "deb"),
			uri:    uris[0],
			suites: strings.Fields(fields["suites"]),
		})
	}
	return out
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// copyTree copies src into dst (which must not exist) preserving modes,
// owners and links: cp -a, with reflinks where the filesystem has them.
func copyTree(src, dst string) error {
	out, err := exec.Command("cp", "-a", "--reflink=auto", src, dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
	return nil
}
