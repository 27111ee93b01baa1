package patch

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkSealedCopy: the cost of putting a script into its sealed memfd
// and checking the copy's hash, per script size.
func BenchmarkSealedCopy(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20, 16 << 20} {
		script := append([]byte("#!/bin/sh\n"), bytes.Repeat([]byte("# padding\n"), size/10)...)
		sum := Sum(script)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			b.SetBytes(int64(len(script)))
			for b.Loop() {
				f, err := sealedCopy("bench", script)
				if err != nil {
					b.Fatal(err)
				}
				if err := verifySealed(f, sum); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// BenchmarkRunRecord: the broker-side cost of one patch run of a trivial
// script, start to record (checks, seal, record writes with fsync, launch
// through a plain os/exec launcher, output files), one run at a time.
func BenchmarkRunRecord(b *testing.B) {
	m, err := New(Config{StateDir: filepath.Join(b.TempDir(), "state"), Launcher: &execLauncher{}, Keep: 10})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	s := testSettings()
	i := 0
	for b.Loop() {
		i++
		op := fmt.Sprintf("op%d", i)
		if _, err := m.Start(request(op, "#!/bin/sh\necho ok\n", DryRun), s); err != nil {
			b.Fatal(err)
		}
		for m.Active() != "" {
			time.Sleep(100 * time.Microsecond)
		}
	}
}
