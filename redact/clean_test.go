package redact

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"
)

// repoRoot is the module root, for files beside the tests.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// cleanCorpus returns ordinary diagnostic output that holds no secrets:
// testdata/clean and the shared Proxmox fixtures.
func cleanCorpus(t testing.TB) map[string]string {
	t.Helper()
	files := map[string]string{}
	paths, err := filepath.Glob("testdata/clean/*")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no clean corpus in testdata/clean: %v", err)
	}
	shared, err := filepath.Glob(filepath.Join(repoRoot(t), "..", "shared", "fixtures", "proxmox", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range append(paths, shared...) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read corpus file: %v", err)
		}
		files[p] = string(b)
	}
	return files
}

// TestCleanCorpusUnchanged pins the false-positive policy: ordinary output
// (ps, journalctl, ip, df, digests, systemctl, dmesg, os-release, dpkg, apt,
// docker, git, Proxmox JSON, bpftrace) passes through byte for byte.
func TestCleanCorpusUnchanged(t *testing.T) {
	for path, text := range cleanCorpus(t) {
		got := String(text)
		if got == text {
			continue
		}
		gl, wl := strings.Split(got, "\n"), strings.Split(text, "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Errorf("%s:%d changed:\n  in:  %q\n  out: %q", path, i+1, wl[i], gl[i])
			}
		}
	}
}
