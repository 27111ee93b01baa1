package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"
)

// unitDir copies the unit files with ExecStart pointing at the built
// binaries, so systemd-analyze can check the commands exist.
func unitDir(t *testing.T) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	units, _ := filepath.Glob(filepath.Join(root, "systemd", "nannyagent-*"))
	if len(units) != 5 {
		t.Fatalf("want 5 unit files (broker and worker, socket and service, and the broker's vsock socket), found %v", units)
	}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(data), "/usr/sbin/", binDir+"/")
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(u)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestUnitsVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: " + err.Error())
	}
	dir := unitDir(t)
	units, _ := filepath.Glob(filepath.Join(dir, "*"))
	out, err := exec.Command(analyze, append([]string{"verify", "--man=no"}, units...)...).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for \S+: (\d+\.\d)`)

func TestUnitsExposure(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: " + err.Error())
	}
	dir := unitDir(t)
	for unit, limit := range map[string]float64{
		"nannyagent-worker.service": 2.0, // design.md: a tight sandbox, ≤ 2.0
		"nannyagent-broker.service": 6.5, // the host's view of the system costs most of it
	} {
		out, _ := exec.Command(analyze, "security", "--offline=yes", filepath.Join(dir, unit)).CombinedOutput()
		m := exposureRE.FindSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no exposure in output:\n%s", unit, out)
		}
		got, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s exposure %.1f (limit %.1f)", unit, got, limit)
		if got > limit {
			t.Errorf("%s exposure %.1f above %.1f", unit, got, limit)
		}
	}
}
