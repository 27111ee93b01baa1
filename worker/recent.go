package worker

import (
	"sync"
	"time"

	"github.com/nannyai/nannyagent/worker/investigate"
)

// Where an investigation came from.
const (
	originCLI    = "cli"
	originPortal = "portal"
)

// maxRecent bounds the investigations remembered for status.
const maxRecent = 20

// recentInvestigations remembers what the operations record does not keep
// about the investigations this process ran: the issue, the root cause or
// the failure. It lives in memory; after a restart status shows the
// record's states alone.
type recentInvestigations struct {
	mu   sync.Mutex
	list []investigationRun // oldest first
}

type investigationRun struct {
	id, issue, origin string
	started, finished time.Time
	// state is "running", "done" or "failed"; note the failure or the
	// root cause.
	state, rootCause, failure string
}

func (r *recentInvestigations) begin(id, issue, origin string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, investigationRun{id: id, issue: issue, origin: origin, started: at, state: "running"})
	if len(r.list) > maxRecent {
		r.list = r.list[len(r.list)-maxRecent:]
	}
}

func (r *recentInvestigations) end(id string, reply *investigate.Reply, err error, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.list) - 1; i >= 0; i-- {
		run := &r.list[i]
		if run.id != id || run.state != "running" {
			continue
		}
		run.finished = at
		if err != nil {
			run.state, run.failure = "failed", err.Error()
		} else {
			run.state = "done"
			if reply != nil {
				run.rootCause = reply.RootCause
			}
		}
		return
	}
}

// snapshot returns the runs, newest first.
func (r *recentInvestigations) snapshot() []investigationRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]investigationRun, len(r.list))
	for i, run := range r.list {
		out[len(r.list)-1-i] = run
	}
	return out
}
