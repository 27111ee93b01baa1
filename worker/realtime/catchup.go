package realtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// pruneEvery is how often old entries are pruned.
const pruneEvery = time.Hour

// maintain owns everything but the stream: recovery of what a previous
// process left running, the catch-ups (at start, after every subscribe,
// every CatchUpInterval, sooner after a failure), the reports to the
// backend, and pruning. One goroutine does all of it, so none of them
// races with another.
func (r *Realtime) maintain(ctx context.Context) {
	// Orphans that cannot be resolved yet (a patch run still going) are
	// asked about again every RecoverInterval, not only at catch-ups.
	recoverTimer := time.NewTimer(r.cfg.RecoverInterval)
	defer recoverTimer.Stop()
	recoverAgain := func() {
		if r.recoverOrphans(ctx) > 0 {
			recoverTimer.Reset(r.cfg.RecoverInterval)
		} else {
			recoverTimer.Stop()
		}
	}
	recoverAgain()
	r.reportPending(ctx)
	timer := time.NewTimer(0)
	defer timer.Stop()
	failures := 0
	var lastPrune time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.reportKick:
			r.reportPending(ctx)
			continue
		case <-recoverTimer.C:
			recoverAgain()
			r.reportPending(ctx)
			continue
		case <-r.catchUpKick:
		case <-timer.C:
		}
		wait := r.cfg.CatchUpInterval
		if err := r.catchUp(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			r.stats.catchUpErrors.Add(1)
			wait = min(r.backoff(failures), wait)
			r.log.Warn("catch-up failed", "error", err.Error(), "retry_in", wait.Round(time.Millisecond))
		} else {
			failures = 0
		}
		recoverAgain()
		r.reportPending(ctx)
		if time.Since(lastPrune) >= pruneEvery {
			lastPrune = time.Now()
			if n, err := r.store.Prune(); err != nil {
				r.log.Error("pruning the operation record failed", "error", err.Error())
			} else if n > 0 {
				r.log.Info("pruned old operation entries", "count", n)
			}
		}
		// Since Go 1.23 a Reset timer never delivers a stale tick.
		timer.Reset(wait)
	}
}

// catchUp lists this agent's open records (investigations and patches
// "pending", reboots "sent") and offers them like stream events. The lists
// are the only way to learn about records created while no subscription
// delivered: a disconnect, or a subscribe answered 204 that delivers
// nothing.
//
// A record first seen here existed no earlier than the previous complete
// catch-up of its kind started (that one would have listed it), so that
// time is its NotBefore; when its kind was never caught up on this state
// (a fresh install, or a kind that just got a handler) its age is unknown.
func (r *Realtime) catchUp(ctx context.Context) error {
	began := r.cfg.Now()
	var ops []op
	var errs []error
	listed := map[opstate.Kind][]string{}
	for _, k := range r.kinds() {
		got, err := r.list(ctx, k)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		prev := r.store.LastCatchUp(k)
		listed[k] = []string{}
		for i := range got {
			got[i].notBefore = prev
			listed[k] = append(listed[k], got[i].id)
		}
		ops = append(ops, got...)
	}
	deferrals := r.deferrals.Load()
	r.offer(sourceCatchUp, ops)
	r.stats.catchUps.Add(1)
	for k, ids := range listed {
		if err := r.store.Touch(k, ids); err != nil {
			r.log.Error("cannot note listed operations", "error", err.Error())
		}
		if k == opstate.Investigation && r.deferrals.Load() != deferrals {
			// A deferred record was not claimed: this catch-up does not
			// bound its age, so it must not move the mark.
			continue
		}
		if err := r.store.SetLastCatchUp(k, began); err != nil {
			errs = append(errs, fmt.Errorf("record catch-up time: %w", err))
		}
	}
	return errors.Join(errs...)
}

// list fetches one kind's open records of this agent.
func (r *Realtime) list(ctx context.Context, k opstate.Kind) ([]op, error) {
	q := nannyapi.RecordQuery{Status: openStatus(k), AgentID: r.cfg.AgentID}
	var out []op
	switch k {
	case opstate.Investigation:
		recs, err := r.api.ListInvestigations(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list investigations: %w", err)
		}
		for _, rec := range recs {
			out = append(out, investigationOp(rec))
		}
	case opstate.Patch:
		recs, err := r.api.ListPatchOperations(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list patch operations: %w", err)
		}
		for _, rec := range recs {
			out = append(out, patchOp(rec))
		}
	case opstate.Reboot:
		recs, err := r.api.ListRebootOperations(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("list reboot operations: %w", err)
		}
		for _, rec := range recs {
			out = append(out, rebootOp(rec))
		}
	}
	return out, nil
}

// reportPending tells the backend about skips and recoveries it has not
// heard of. A transient failure is retried at the next catch-up.
func (r *Realtime) reportPending(ctx context.Context) {
	for _, e := range r.store.PendingReports() {
		if ctx.Err() != nil {
			return
		}
		err := r.report(ctx, e)
		switch {
		case err == nil:
			r.log.Info("reported to the backend", "kind", e.Kind, "id", e.ID, "reason", e.Report)
		case permanent(err):
			r.log.Warn("the backend cannot take this report; it is only logged", "kind", e.Kind, "id", e.ID,
				"reason", e.Report, "error", err.Error())
		default:
			r.log.Warn("report failed; retrying at the next catch-up", "kind", e.Kind, "id", e.ID, "error", err.Error())
			continue
		}
		r.stats.reports.Add(1)
		if err := r.store.Reported(e.Kind, e.ID); err != nil {
			r.log.Error("cannot record report", "kind", e.Kind, "id", e.ID, "error", err.Error())
		}
	}
}

func (r *Realtime) report(ctx context.Context, e opstate.Entry) error {
	rep := r.cfg.Reporter
	if rep == nil {
		return ErrNotSupported
	}
	switch e.Kind {
	case opstate.Investigation:
		return rep.FailInvestigation(ctx, e.ID, e.Report)
	case opstate.Patch:
		return rep.FailPatch(ctx, e.ID, e.LXCID, e.Report)
	default:
		return rep.FailReboot(ctx, e.ID, e.Report)
	}
}
