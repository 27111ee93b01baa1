package realtime

import (
	"fmt"
	"time"

	"github.com/nannyai/nannyagent/worker/opstate"
)

// verdict is the staleness judgment of an operation about to run.
type verdict struct {
	skip   bool
	reason string
	// report: tell the backend (it still shows the record open).
	report bool
	// deadline, when set, bounds the handler's context (reboots).
	deadline time.Time
}

func skipped(format string, args ...any) verdict {
	return verdict{skip: true, reason: fmt.Sprintf(format, args...), report: true}
}

// judge decides whether a claimed operation may still run now. It is asked
// when the operation is claimed and again when a worker takes it, since
// the queue may have held it past a deadline. See the package
// documentation for the rules.
func (r *Realtime) judge(o op, e opstate.Entry) verdict {
	now := r.cfg.Now()
	if o.kind == opstate.Reboot || (o.kind == opstate.Patch && !o.dryRun()) {
		if err := r.store.Degraded(); err != nil {
			return skipped("refused: the worker's record of handled operations is degraded (%v), so it cannot rule out running this twice", err)
		}
	}
	switch o.kind {
	case opstate.Reboot:
		return r.judgeReboot(o, now)
	case opstate.Patch:
		if o.dryRun() {
			return verdict{}
		}
		switch {
		case e.NotBefore.IsZero():
			return skipped("patch apply not run: it was found in the backlog of a fresh install, so its age is unknown; request it again if it is still wanted")
		case now.Sub(e.NotBefore) > r.cfg.MaxApplyAge:
			return skipped("patch apply not run: it may have waited since %s, longer than the %s allowed; request it again if it is still wanted",
				e.NotBefore.UTC().Format(time.RFC3339), r.cfg.MaxApplyAge)
		}
	}
	return verdict{}
}

// judgeReboot: never past requested_at + timeout_seconds.
func (r *Realtime) judgeReboot(o op, now time.Time) verdict {
	requested := o.reboot.RequestedTime()
	if requested.IsZero() {
		return skipped("reboot not run: requested_at %q is missing or malformed, so its deadline is unknown", clipText(o.reboot.RequestedAt, 40))
	}
	deadline := requested.Add(time.Duration(o.reboot.TimeoutSeconds) * time.Second)
	if !now.Before(deadline) {
		return skipped("reboot not run: its deadline %s (requested_at + timeout_seconds) has passed",
			deadline.UTC().Format(time.RFC3339))
	}
	return verdict{deadline: deadline}
}
