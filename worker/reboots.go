package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/rebooting"
)

// newHold reads the reboot hold a previous process may have left.
func (w *Worker) newHold() error {
	h, err := rebooting.NewHold(rebooting.HoldConfig{
		Dir: w.cfg.StateDir, Metrics: w.metrics, Records: rebootReader{w.session},
		MonitorTick: w.cfg.RebootMonitorInterval, Poll: w.cfg.RebootPollInterval, Logger: w.log,
	})
	if err != nil {
		return err
	}
	w.hold = h
	return nil
}

// rebootReader reads with the session's current credentialed client.
type rebootReader struct{ s *session }

func (r rebootReader) GetReboot(ctx context.Context, id string) (nannyapi.RebootOperation, error) {
	return r.s.client().GetReboot(ctx, id)
}

// patchRunning names a patch operation this worker is running: a reboot
// now would cut it short.
func (w *Worker) patchRunning() (string, bool) {
	for _, e := range w.ops.Entries() {
		if e.Kind == opstate.Patch && e.State == opstate.Running {
			return e.ID, true
		}
	}
	return "", false
}

// rebootWarnings is the status line about a hold on metrics heartbeats in
// force. Reboots that were refused or failed are not repeated here: status
// lists them with the other recent operations, with their reasons.
func (w *Worker) rebootWarnings() []string {
	st, ok := w.hold.Current()
	if !ok {
		return nil
	}
	return []string{fmt.Sprintf("metrics heartbeats are paused for reboot %s until %s at the latest: %s",
		st.RebootID, st.Until.UTC().Format(time.RFC3339), st.Reason)}
}
