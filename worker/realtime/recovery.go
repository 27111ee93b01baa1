package realtime

import (
	"context"
	"fmt"
	"time"

	"github.com/nannyai/nannyagent/worker/opstate"
)

// Reasons recorded (and reported) for operations a previous process left
// running.
const (
	ReasonInvestigationRestart = "worker restarted during the investigation"
	ReasonPatchUnknown         = "worker restarted during the patch run; its outcome is unknown"
	ReasonPatchNeverStarted    = "worker restarted before the patch run started; it was not run"
	ReasonRebootNotAcked       = "worker restarted before acknowledging the reboot; it was not carried out"
	ReasonRebootNoBoot         = "worker restarted after acknowledging the reboot, but the host has not rebooted since"
	ReasonRebootLXCUnknown     = "worker restarted during the container reboot; its outcome is unknown"
)

// recoverOrphans resolves operations a previous process left running; it
// never runs one again. Those it cannot resolve yet (the broker or the
// boot time unavailable, a patch run still going) stay running and are
// tried again after RecoverInterval and after the next catch-up;
// meanwhile the claim refuses them. It returns how many are left.
func (r *Realtime) recoverOrphans(ctx context.Context) int {
	left := 0
	for _, e := range r.store.Orphans() {
		if ctx.Err() != nil {
			return left
		}
		out, ok := r.recoverOne(ctx, e)
		if !ok {
			left++
			continue
		}
		r.stats.recovered.Add(1)
		r.log.Warn("operation left running by a previous worker process resolved", "kind", e.Kind, "id", e.ID,
			"state", out.State, "note", out.Note)
		if err := r.store.Finish(e.Kind, e.ID, out); err != nil {
			r.log.Error("cannot record recovered operation", "kind", e.Kind, "id", e.ID, "error", err.Error())
		}
	}
	return left
}

// recoverOne decides an orphan's outcome; false leaves it for later.
func (r *Realtime) recoverOne(ctx context.Context, e opstate.Entry) (opstate.Outcome, bool) {
	failed := func(reason string, report bool) opstate.Outcome {
		o := opstate.Outcome{State: opstate.Failed, Note: reason}
		if report {
			o.Report = reason
		}
		return o
	}
	switch e.Kind {
	case opstate.Investigation:
		return failed(ReasonInvestigationRestart, true), true
	case opstate.Patch:
		return r.recoverPatch(ctx, e)
	default:
		return r.recoverReboot(e, failed)
	}
}

func (r *Realtime) recoverPatch(ctx context.Context, e opstate.Entry) (opstate.Outcome, bool) {
	if r.cfg.PatchRecovery == nil {
		return opstate.Outcome{State: opstate.Failed, Note: ReasonPatchUnknown, Report: ReasonPatchUnknown}, true
	}
	res, err := r.cfg.PatchRecovery.RecoverPatch(ctx, e)
	if err != nil {
		r.log.Warn("cannot look up interrupted patch run yet", "id", e.ID, "error", err.Error())
		return opstate.Outcome{}, false
	}
	note := clipText(res.Note, 500)
	switch res.Outcome {
	case PatchFinished:
		if note == "" {
			note = "finished while the worker restarted; result uploaded by recovery"
		}
		if res.Succeeded {
			return opstate.Outcome{State: opstate.Done, Note: note}, true
		}
		return opstate.Outcome{State: opstate.Failed, Note: note}, true
	case PatchNeverStarted:
		return opstate.Outcome{State: opstate.Failed, Note: ReasonPatchNeverStarted, Report: ReasonPatchNeverStarted}, true
	case PatchStillRunning:
		r.log.Info("interrupted patch run still going; asking again later", "id", e.ID)
		return opstate.Outcome{}, false
	}
	r.log.Error("patch recovery gave no outcome", "id", e.ID, "outcome", int(res.Outcome))
	return opstate.Outcome{}, false
}

// recoverReboot: done only if the host booted after the acknowledge was
// recorded. A container reboot cannot be checked from here, and the
// backend completes an acknowledged reboot at the next metrics post, so it
// is recorded failed locally without telling the backend.
func (r *Realtime) recoverReboot(e opstate.Entry, failed func(string, bool) opstate.Outcome) (opstate.Outcome, bool) {
	if e.Acknowledged.IsZero() {
		return failed(ReasonRebootNotAcked, true), true
	}
	if e.LXCID != "" {
		return failed(ReasonRebootLXCUnknown, false), true
	}
	boot, err := r.cfg.BootTime()
	if err != nil {
		r.log.Warn("cannot read the boot time yet", "error", err.Error())
		return opstate.Outcome{}, false
	}
	if boot.After(e.Acknowledged) {
		return opstate.Outcome{State: opstate.Done, Note: fmt.Sprintf("host rebooted at %s", boot.UTC().Format(time.RFC3339))}, true
	}
	return failed(ReasonRebootNoBoot, true), true
}
