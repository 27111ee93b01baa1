package broker

import (
	"os"
	"testing"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/patch"
)

// TestMain lets the test binary serve as the command runner's re-executed
// helper and as the patch runner, as the broker's own main does.
func TestMain(m *testing.M) {
	if execute.IsHelper() {
		execute.HelperMain()
	}
	if patch.IsRunner(os.Args[1:]) {
		os.Exit(patch.RunnerMain(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}
