package patch

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the patch runner, as the
// broker's own main does.
func TestMain(m *testing.M) {
	if IsRunner(os.Args[1:]) {
		os.Exit(RunnerMain(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}

// testRunner is the runner's command line in tests: this test binary.
func testRunner(t *testing.T) []string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{self, RunnerCommand}
}
