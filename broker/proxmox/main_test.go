package proxmox

import (
	"os"
	"testing"

	"github.com/nannyai/nannyagent/broker/execute"
)

// TestMain lets the test binary serve as the launcher's re-executed
// subreaper helper, as the broker's own main does.
func TestMain(m *testing.M) {
	if execute.IsHelper() {
		execute.HelperMain()
	}
	os.Exit(m.Run())
}

// testLauncher is the broker's launcher, closed at the end of the test.
func testLauncher(t testing.TB) *execute.Runner {
	t.Helper()
	l, err := execute.New(execute.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}
