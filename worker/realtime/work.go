package realtime

import (
	"context"
	"errors"
	"fmt"

	"github.com/nannyai/nannyagent/worker/opstate"
)

// work runs one worker slot of a kind until ctx ends.
func (r *Realtime) work(ctx context.Context, k opstate.Kind) {
	q := r.queues[k]
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-q:
			r.run(ctx, j.op)
		}
	}
}

// run judges a queued operation again, writes "running", runs the handler
// and records the outcome.
func (r *Realtime) run(ctx context.Context, o op) {
	if ctx.Err() != nil {
		r.store.Release(o.kind, o.id)
		return
	}
	e, _ := r.store.Get(o.kind, o.id)
	v := r.judge(o, e)
	if v.skip {
		r.skip(o, v)
		return
	}
	if _, err := r.store.Start(o.kind, o.id); err != nil {
		r.store.Release(o.kind, o.id)
		if errors.Is(err, opstate.ErrNotReceived) {
			r.log.Info("operation not started: it changed while queued", "kind", o.kind, "id", o.id, "error", err.Error())
		} else {
			r.log.Error("cannot record operation start; not running it now", "kind", o.kind, "id", o.id, "error", err.Error())
		}
		return
	}
	r.stats.started.Add(1)
	hctx, cancel := ctx, context.CancelFunc(func() {})
	if !v.deadline.IsZero() {
		hctx, cancel = context.WithTimeout(ctx, v.deadline.Sub(r.cfg.Now()))
	}
	r.log.Info("operation started", "kind", o.kind, "id", o.id)
	err := r.call(hctx, o)
	cancel()
	var refusal *RefusedError
	var failure *FailedError
	switch {
	case err == nil:
		r.finish(o, opstate.Outcome{State: opstate.Done})
	case errors.As(err, &refusal):
		r.skip(o, verdict{skip: true, reason: clipText(refusal.Reason, 1000), report: true})
	case errors.As(err, &failure):
		reason := clipText(failure.Reason, 1000)
		r.finish(o, opstate.Outcome{State: opstate.Failed, Note: reason, Report: reason})
		kick(r.reportKick)
	case ctx.Err() != nil:
		// The worker is stopping mid-run: the entry stays running and the
		// next start recovers it rather than running it again.
		r.store.Release(o.kind, o.id)
		r.log.Warn("operation interrupted by shutdown; it will be recovered at the next start", "kind", o.kind, "id", o.id)
	default:
		r.finish(o, opstate.Outcome{State: opstate.Failed, Note: clipText(err.Error(), 1000)})
	}
}

// RefusedError is what a handler returns when it decided not to carry the
// operation out and changed nothing (a reboot the broker refused): the
// operation is recorded Skipped with the reason, logged with its id, and
// the reason is reported where the backend takes reports.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "refused: " + e.Reason }

// FailedError is what a handler returns when the operation failed after it
// changed something (a reboot acknowledged, then its command failed): it
// is recorded Failed with the reason, which is reported where the backend
// takes reports.
type FailedError struct {
	Reason string
}

func (e *FailedError) Error() string { return e.Reason }

// finish records the outcome, then counts it: whoever sees the count (a
// test, status) finds the record written.
func (r *Realtime) finish(o op, out opstate.Outcome) {
	if err := r.store.Finish(o.kind, o.id, out); err != nil {
		r.log.Error("cannot record operation outcome", "kind", o.kind, "id", o.id, "error", err.Error())
	}
	if out.State == opstate.Done {
		r.stats.done.Add(1)
		r.log.Info("operation done", "kind", o.kind, "id", o.id)
	} else {
		r.stats.failed.Add(1)
		r.log.Warn("operation failed", "kind", o.kind, "id", o.id, "error", out.Note)
	}
}

// call runs the kind's handler; a panic becomes an error, so one bad
// operation cannot take the worker down.
func (r *Realtime) call(ctx context.Context, o op) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	switch o.kind {
	case opstate.Investigation:
		return r.cfg.Investigations.HandleInvestigation(ctx, *o.inv)
	case opstate.Patch:
		return r.cfg.Patches.HandlePatch(ctx, *o.patch)
	default:
		return r.cfg.Reboots.HandleReboot(ctx, *o.reboot)
	}
}
