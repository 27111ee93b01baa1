package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMemoryClassesAndHeapProfile(t *testing.T) {
	dir := t.TempDir()
	classes := filepath.Join(dir, "x.memclasses")
	if err := writeMemoryClasses(classes); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(classes)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes", "/memory/classes/total:bytes"} {
		if !strings.Contains(string(data), want) {
			t.Errorf("memory classes lack %s:\n%s", want, data)
		}
	}
	profile := filepath.Join(dir, "x.pprof")
	if err := writeHeapProfile(profile); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("profile %v %v", fi, err)
	}
}

// TestHeapProfileRefusesSymlink: the broker is root and may write into a
// directory others can write; a planted link is not followed.
func TestHeapProfileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "broker-1.pprof")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := writeHeapProfile(link); err == nil {
		t.Error("wrote through a symlink")
	}
	if data, _ := os.ReadFile(target); string(data) != "keep" {
		t.Errorf("target changed: %q", data)
	}
}

func TestHeapRetainedGrowsWithTheHeap(t *testing.T) {
	before := heapRetained()
	keep := make([][]byte, 0, 64)
	for i := 0; i < 64; i++ {
		keep = append(keep, make([]byte, 64<<10))
	}
	if after := heapRetained(); after < before+2<<20 {
		t.Errorf("4 MiB allocated, heapRetained went from %d to %d", before, after)
	}
	_ = keep[63]
}
