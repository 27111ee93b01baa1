package redact

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"
)

// cleanCorpus returns ordinary diagnostic output that holds no secrets:
// testdata/clean and the captured Proxmox outputs in test/testdata/proxmox.
func cleanCorpus(t testing.TB) map[string]string {
	t.Helper()
	files := map[string]string{}
	paths, err := filepath.Glob("testdata/clean/*")
	if err != nil || len(paths) == 0 {
		t.Fatalf("no clean corpus in testdata/clean: %v", err)
	}
	dir, err := repo.ProxmoxFixtureDir()
	if err != nil {
		t.Fatal(err)
	}
	pvesh, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil || len(pvesh) == 0 {
		t.Fatalf("no Proxmox fixtures in %s: %v", dir, err)
	}
	for _, p := range append(paths, pvesh...) {
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
