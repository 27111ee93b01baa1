package worker

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// opsPerKind is how many recent operations of each kind status shows.
const opsPerKind = 5

// How long a gap status tolerates before calling it a problem: the
// realtime stream reconnects every 5 minutes (the backend closes idle
// streams) and a metrics post may be late by a retry.
const (
	realtimeGrace      = time.Minute
	metricsStaleFactor = 3
)

// operations lists the most recent operations of every kind recorded,
// newest first: the operations record says how each ended (a refusal or a
// failure in its note), and this process's own memory adds an
// investigation's issue and root cause. A kind added later shows up here
// without a change.
func (w *Worker) operations() []*workerv1.Operation {
	runs := map[string]investigationRun{}
	for _, run := range w.recent.snapshot() {
		if _, seen := runs[run.id]; !seen {
			runs[run.id] = run
		}
	}
	byKind := map[opstate.Kind][]opstate.Entry{}
	for _, e := range w.ops.Entries() {
		byKind[e.Kind] = append(byKind[e.Kind], e)
	}
	// Investigations this process ran that the record lacks (the CLI's,
	// when the stream was not running to record them).
	for id, run := range runs {
		if _, ok := w.ops.Get(opstate.Investigation, id); !ok {
			byKind[opstate.Investigation] = append(byKind[opstate.Investigation], opstate.Entry{
				Kind: opstate.Investigation, ID: id, Own: run.origin == originCLI, FirstSeen: run.started, Started: run.started, Finished: run.finished,
			})
		}
	}
	kinds := make([]opstate.Kind, 0, len(byKind))
	for k := range byKind {
		kinds = append(kinds, k)
	}
	slices.SortFunc(kinds, func(a, b opstate.Kind) int { return cmp.Or(cmp.Compare(kindRank(a), kindRank(b)), cmp.Compare(a, b)) })
	var out []*workerv1.Operation
	for _, k := range kinds {
		entries := byKind[k]
		slices.SortStableFunc(entries, func(a, b opstate.Entry) int { return latest(b).Compare(latest(a)) })
		for _, e := range entries[:min(opsPerKind, len(entries))] {
			out = append(out, operation(e, runs))
		}
	}
	return out
}

func kindRank(k opstate.Kind) int {
	switch k {
	case opstate.Investigation:
		return 0
	case opstate.Patch:
		return 1
	case opstate.Reboot:
		return 2
	}
	return 3
}

func latest(e opstate.Entry) time.Time {
	t := e.FirstSeen
	for _, u := range []time.Time{e.Started, e.Finished, e.Acknowledged} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

func operation(e opstate.Entry, runs map[string]investigationRun) *workerv1.Operation {
	op := &workerv1.Operation{
		Kind: string(e.Kind), Id: e.ID, State: string(e.State), Note: e.Note, Mode: e.Mode, LxcId: e.LXCID, Own: e.Own,
		FirstSeen: stamp(e.FirstSeen), Started: stamp(e.Started), Finished: stamp(e.Finished),
	}
	run, ok := runs[e.ID]
	switch {
	case e.Kind != opstate.Investigation:
	case ok:
		// The record keeps a CLI diagnosis as "skipped" (the stream must not
		// run it again); what happened to it is in this process's memory.
		op.Issue, op.RootCause = run.issue, run.rootCause
		if e.Own || e.State == opstate.Running || e.State == "" {
			op.State, op.Note = run.state, run.failure
			op.Started, op.Finished = stamp(run.started), stamp(run.finished)
		}
	case e.Own:
		op.State, op.Note = "unknown", "run from the CLI; its outcome is not kept across a restart of the worker"
	}
	return op
}

func stamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// problems is what is degraded, each with the one command that fixes it
// (or that shows why, where no single command can fix it); tokenProblems
// says the token's own warnings are among them.
func (w *Worker) problems(st *workerv1.StatusResponse, tokens tokenstore.Status, now time.Time) (ps []*workerv1.Problem, tokenProblems bool) {
	add := func(fix, format string, a ...any) {
		ps = append(ps, &workerv1.Problem{What: fmt.Sprintf(format, a...), Fix: fix})
	}
	w.brokerProblems(st.GetBroker(), add)
	before := len(ps)
	registered := w.registrationProblems(tokens, now, add)
	if tokens.PersistError != nil {
		add("df -h "+w.cfg.StateDir, "the token could not be written to %s (%v): it is kept in memory only", w.cfg.TokenPath, tokens.PersistError)
	}
	tokenProblems = len(ps) > before
	if api := st.GetApi(); !api.GetReachable() {
		add("curl -sS "+api.GetUrl()+"/api/health", "NannyAPI at %s does not answer (%s); check nannyapi_url in /etc/nannyagent/config.yaml", api.GetUrl(), api.GetError())
	}
	if registered {
		w.loopProblems(st, now, add)
	}
	if err := w.ops.Degraded(); err != nil {
		var ce *opstate.CorruptError
		path := "the state directory's operations.json.corrupt-* file"
		if errors.As(err, &ce) {
			path = ce.Path
		}
		add("rm "+path, "the record of handled operations was corrupt and is kept aside at %s: patch applies and reboots are refused until it is removed (read it first)", path)
	}
	return ps, tokenProblems
}

func (w *Worker) brokerProblems(b *workerv1.BrokerStatus, add func(fix, format string, a ...any)) {
	if !b.GetReachable() {
		add("systemctl start nannyagent-broker.socket", "the broker does not answer on %s (%s): no command, trace or metrics sample can run", w.cfg.BrokerSocket, b.GetError())
		return
	}
	p := b.GetProbe()
	if !p.GetBpftrace().GetFound() {
		add("apt-get install bpftrace", "bpftrace is not installed: no eBPF trace can run (%s)", p.GetBpftrace().GetError())
	}
	if !p.GetTracefs().GetMounted() {
		add("mount -t tracefs tracefs /sys/kernel/tracing", "tracefs is not mounted: tracepoint traces cannot attach")
	}
}

// registrationProblems reports a registration that does not work or soon
// will not; it returns whether the host is registered at all.
func (w *Worker) registrationProblems(tokens tokenstore.Status, now time.Time, add func(fix, format string, a ...any)) bool {
	if w.cfg.UseStaticToken() {
		if w.session.agentID() == "" {
			add("nannyagent register", "this host is not registered: the static token has no agent id yet")
			return false
		}
		return true
	}
	switch {
	case tokens.State == tokenstore.StateNotRegistered:
		add("nannyagent register", "this host is not registered with NannyAPI")
		return false
	case tokens.State == tokenstore.StateRegistrationRequired:
		add("nannyagent register --force", "registration required: %s", tokens.Reason)
		return false
	case tokens.RefreshTokenExpiresAt.IsZero():
		return true
	case !now.Before(tokens.RefreshTokenExpiresAt):
		add("nannyagent register --force", "the refresh token expired on %s: the worker can no longer get an access token", day(tokens.RefreshTokenExpiresAt))
	case tokens.RefreshTokenWarning && tokens.RenewSupport != tokenstore.RenewSupported:
		add("nannyagent register --force", "the refresh token expires in %d day(s), on %s, and this backend cannot renew it: the host goes offline then", tokens.RefreshTokenDaysLeft, day(tokens.RefreshTokenExpiresAt))
	}
	return true
}

func (w *Worker) loopProblems(st *workerv1.StatusResponse, now time.Time, add func(fix, format string, a ...any)) {
	const logs = "journalctl -u nannyagent-worker -n 50"
	rt := st.GetRealtime()
	switch {
	case !rt.GetEnabled():
		add(logs, "the realtime stream is not running: portal investigations, patches and reboots do not arrive")
	case !rt.GetConnected():
		down := w.started
		if rt.GetDisconnectedSince() != nil {
			down = rt.GetDisconnectedSince().AsTime()
		}
		if now.Sub(down) > realtimeGrace {
			add(logs, "the realtime stream has been down since %s (%d stream errors): portal work arrives only through the catch-up", down.UTC().Format(time.RFC3339), rt.GetStreamErrors())
		}
	}
	interval := w.cfg.MetricsInterval
	if interval <= 0 {
		return
	}
	last := st.GetLastSuccess()["metrics"]
	since := w.started
	if last != nil {
		since = last.AsTime()
	}
	if now.Sub(since) > metricsStaleFactor*interval {
		what := "no metrics post since the worker started"
		if last != nil {
			what = "the last metrics post was at " + since.UTC().Format(time.RFC3339)
		}
		add(logs, "%s (every %s is expected): the portal shows this host as stale", what, interval)
	}
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
