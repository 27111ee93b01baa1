package broker

import (
	"os"
	"testing"

	"github.com/nannyai/nannyagent/broker/execute"
)

// TestMain lets the test binary serve as the command runner's re-executed
// helper, as the broker's own main does.
func TestMain(m *testing.M) {
	if execute.IsHelper() {
		execute.HelperMain()
	}
	os.Exit(m.Run())
}
