package realtime

import (
	"fmt"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// op is one record of an agent collection, whichever path brought it.
type op struct {
	kind   opstate.Kind
	id     string
	agent  string
	status string
	inv    *nannyapi.Investigation
	patch  *nannyapi.PatchOperation
	reboot *nannyapi.RebootOperation
	// notBefore bounds the record's creation time from below (zero:
	// unknown); see the package documentation.
	notBefore time.Time
}

func investigationOp(i nannyapi.Investigation) op {
	return op{kind: opstate.Investigation, id: i.ID, agent: i.AgentID, status: i.Status, inv: &i}
}

func patchOp(p nannyapi.PatchOperation) op {
	return op{kind: opstate.Patch, id: p.ID, agent: p.AgentID, status: p.Status, patch: &p}
}

func rebootOp(b nannyapi.RebootOperation) op {
	return op{kind: opstate.Reboot, id: b.ID, agent: b.AgentID, status: b.Status, reboot: &b}
}

// mode is a patch's mode ("" for other kinds).
func (o op) mode() string {
	if o.patch != nil {
		return o.patch.Mode
	}
	return ""
}

// lxcID is the container a patch or reboot targets.
func (o op) lxcID() string {
	switch {
	case o.patch != nil:
		return o.patch.LXCID
	case o.reboot != nil:
		return o.reboot.LXCID
	}
	return ""
}

// dryRun: a patch that changes nothing on the host.
func (o op) dryRun() bool { return o.patch != nil && o.patch.Mode == "dry-run" }

// openStatus is the status a record has while it waits for the agent:
// investigations and patches are created "pending", reboots "sent".
func openStatus(k opstate.Kind) string {
	if k == opstate.Reboot {
		return "sent"
	}
	return "pending"
}

func collectionOf(k opstate.Kind) string {
	switch k {
	case opstate.Investigation:
		return nannyapi.CollectionInvestigations
	case opstate.Patch:
		return nannyapi.CollectionPatchOperations
	default:
		return nannyapi.CollectionRebootOperations
	}
}

func kindOf(collection string) (opstate.Kind, bool) {
	switch collection {
	case nannyapi.CollectionInvestigations:
		return opstate.Investigation, true
	case nannyapi.CollectionPatchOperations:
		return opstate.Patch, true
	case nannyapi.CollectionRebootOperations:
		return opstate.Reboot, true
	}
	return "", false
}

// handleFrame dispatches one stream event: the event name is the
// collection, the data {"record":…,"action":…}. Anything malformed is
// counted and logged, never fatal.
func (r *Realtime) handleFrame(name, data string) {
	r.stats.events.Add(1)
	kind, ok := kindOf(name)
	if !ok || r.queues[kind] == nil {
		r.log.Debug("realtime event for another collection ignored", "event", clipText(name, 64))
		return
	}
	ev, err := nannyapi.DecodeEvent(name, []byte(data))
	if err != nil {
		r.stats.badEvents.Add(1)
		r.log.Warn("realtime event malformed", "event", name, "error", clipText(err.Error(), 300))
		return
	}
	var o op
	switch {
	case ev.Investigation != nil:
		o = investigationOp(*ev.Investigation)
	case ev.Patch != nil:
		o = patchOp(*ev.Patch)
	case ev.Reboot != nil:
		o = rebootOp(*ev.Reboot)
	default:
		return
	}
	if ev.Action == "create" {
		// A create event is sent when the record is created: it is new.
		o.notBefore = r.cfg.Now()
		r.offer(sourceStream, []op{o})
		return
	}
	r.changed(o, ev.Action)
}

// source is the path that brought a record.
type source int

const (
	sourceStream source = iota
	sourceCatchUp
)

func (s source) String() string {
	if s == sourceStream {
		return "stream"
	}
	return "catch-up"
}

// offer is the one path from a record to a worker, for the stream and the
// catch-up alike: admit filters, the store's claim de-duplicates, schedule
// judges staleness and queues.
func (r *Realtime) offer(src source, ops []op) {
	var cands []op
	var reqs []opstate.ClaimRequest
	for _, o := range ops {
		if !r.admit(src, o) {
			continue
		}
		cands = append(cands, o)
		reqs = append(reqs, opstate.ClaimRequest{Kind: o.kind, ID: o.id,
			Info: opstate.ClaimInfo{NotBefore: o.notBefore, Mode: o.mode(), LXCID: o.lxcID()}})
	}
	if len(reqs) == 0 {
		return
	}
	for i, res := range r.store.ClaimAll(reqs) {
		o := cands[i]
		switch {
		case res.Err != nil:
			r.log.Error("cannot record operation; not running it now", "kind", o.kind, "id", o.id, "error", res.Err.Error())
		case res.Status != opstate.Claimed:
			r.stats.duplicates.Add(1)
			r.log.Debug("operation already taken", "kind", o.kind, "id", o.id, "source", src.String(), "status", res.Status.String())
		default:
			if src == sourceStream {
				r.stats.claimedStream.Add(1)
			} else {
				r.stats.claimedCatchUp.Add(1)
			}
			r.log.Info("operation received", "kind", o.kind, "id", o.id, "source", src.String())
			r.schedule(o, res.Entry)
		}
	}
}

// admit decides whether a record is this worker's to run at all.
func (r *Realtime) admit(src source, o op) bool {
	switch {
	case r.queues[o.kind] == nil:
		return false
	case o.agent != r.cfg.AgentID:
		r.stats.foreign.Add(1)
		r.log.Warn("record of another agent ignored", "kind", o.kind, "id", o.id)
		return false
	case o.status != openStatus(o.kind):
		return false
	case o.kind != opstate.Investigation:
		return true
	case o.inv.InitiatedByAgent():
		// The stream echoes our own creates; remember the id, because the
		// records API will not say who created it.
		r.stats.own.Add(1)
		if err := r.store.MarkOwn(o.id); err != nil {
			r.log.Error("cannot record own investigation", "id", o.id, "error", err.Error())
		}
		return false
	case r.store.Own(o.id):
		r.stats.own.Add(1)
		return false
	case src == sourceCatchUp && r.deferWhileCreating():
		r.log.Debug("investigation deferred while this worker creates one", "id", o.id)
		return false
	}
	return true
}

// schedule queues a claimed operation, or finishes it as skipped.
func (r *Realtime) schedule(o op, e opstate.Entry) {
	if v := r.judge(o, e); v.skip {
		r.skip(o, v)
		return
	}
	select {
	case r.queues[o.kind] <- job{op: o}:
	default:
		r.stats.queueFull.Add(1)
		r.store.Release(o.kind, o.id)
		r.log.Warn("operation queue full; a later catch-up takes it", "kind", o.kind, "id", o.id)
	}
}

// skip records a judged-out operation and has the backend told.
func (r *Realtime) skip(o op, v verdict) {
	report := ""
	if v.report {
		report = v.reason
	}
	r.log.Warn("operation not run", "kind", o.kind, "id", o.id, "reason", v.reason)
	if err := r.store.Finish(o.kind, o.id, opstate.Outcome{State: opstate.Skipped, Note: v.reason, Report: report}); err != nil {
		r.log.Error("cannot record skipped operation", "kind", o.kind, "id", o.id, "error", err.Error())
	}
	// Counted once recorded, as finish does.
	r.stats.skipped.Add(1)
	if report != "" {
		kick(r.reportKick)
	}
}

// changed handles an update or delete: an operation still waiting here
// that the backend moved on (completed elsewhere, timed out, deleted) is
// not started.
func (r *Realtime) changed(o op, action string) {
	if o.agent != r.cfg.AgentID {
		r.stats.foreign.Add(1)
		return
	}
	if o.kind == opstate.Reboot && r.cfg.RebootChanged != nil && action != "create" {
		r.cfg.RebootChanged(*o.reboot)
	}
	if action != "delete" && o.status == openStatus(o.kind) {
		return
	}
	note := fmt.Sprintf("status %q on the backend before the worker started it", clipText(o.status, 32))
	if action == "delete" {
		note = "deleted on the backend before the worker started it"
	}
	skipped, err := r.store.Skip(o.kind, o.id, note)
	if err != nil {
		r.log.Error("cannot record skipped operation", "kind", o.kind, "id", o.id, "error", err.Error())
	}
	if skipped {
		r.stats.skipped.Add(1)
		r.log.Info("operation not started: the backend moved on", "kind", o.kind, "id", o.id, "reason", note)
	}
}
