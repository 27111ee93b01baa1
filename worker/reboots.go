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

// recentReboots is how far back status reports reboots not carried out.
const recentReboots = 24 * time.Hour

// rebootWarnings are the status lines about reboots: a hold on heartbeats
// in force, and reboots of the last day that were refused or failed, with
// their reasons.
func (w *Worker) rebootWarnings(now time.Time) []string {
	var out []string
	if st, ok := w.hold.Current(); ok {
		out = append(out, fmt.Sprintf("metrics heartbeats are paused for reboot %s until %s at the latest: %s",
			st.RebootID, st.Until.UTC().Format(time.RFC3339), st.Reason))
	}
	for _, e := range w.ops.Entries() {
		if e.Kind != opstate.Reboot || (e.State != opstate.Skipped && e.State != opstate.Failed) || now.Sub(e.Finished) > recentReboots {
			continue
		}
		what := "was not carried out"
		if e.State == opstate.Failed {
			what = "failed"
		}
		out = append(out, fmt.Sprintf("reboot %s %s (%s): %s", e.ID, what, e.Finished.UTC().Format(time.RFC3339), e.Note))
	}
	return out
}
