package realtime

import (
	"sync/atomic"
	"time"
)

// Stats are counters for the worker's status and tests.
type Stats struct {
	// Connects counts streams opened; Subscribes successful subscribes;
	// StreamErrors sessions that ended with an error.
	Connects, Subscribes, StreamErrors uint64
	// Events counts event frames after a subscribe; BadEvents those that
	// did not decode; Foreign records of another agent; Own this worker's
	// own investigations.
	Events, BadEvents, Foreign, Own uint64
	// ClaimedStream and ClaimedCatchUp count operations claimed by each
	// path; Duplicates offers refused because the id was held or handled.
	ClaimedStream, ClaimedCatchUp, Duplicates uint64
	// Started, Done, Failed, Skipped count operations by outcome;
	// QueueFull claims released because their queue was full.
	Started, Done, Failed, Skipped, QueueFull uint64
	// CatchUps and CatchUpErrors count catch-ups.
	CatchUps, CatchUpErrors uint64
	// Recovered counts operations a previous process left running that
	// were resolved; Reports reports delivered (or permanently refused).
	Recovered, Reports uint64
	// Subscribed is true while a subscribed stream is open; ClientID is
	// its PocketBase client id.
	Subscribed bool
	ClientID   string
	// SubscribedAt is when the current (or the last) subscription was
	// made; DisconnectedAt when the last subscribed stream ended. Zero:
	// never.
	SubscribedAt, DisconnectedAt time.Time
	// LastCatchUp is when the last complete catch-up of every handled
	// kind started (the oldest of their marks; zero: some kind never).
	LastCatchUp time.Time
}

type counters struct {
	connects, subscribes, streamErrors          atomic.Uint64
	events, badEvents, foreign, own             atomic.Uint64
	claimedStream, claimedCatchUp, duplicates   atomic.Uint64
	started, done, failed, skipped, queueFull   atomic.Uint64
	catchUps, catchUpErrors, recovered, reports atomic.Uint64
	subscribed                                  atomic.Bool
	clientID                                    atomic.Pointer[string]
	// subscribedAt and disconnectedAt are Unix nanoseconds, 0 for never.
	subscribedAt, disconnectedAt atomic.Int64
}

func unixNanoTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// Stats returns the counters.
func (r *Realtime) Stats() Stats {
	c := &r.stats
	s := Stats{
		Connects: c.connects.Load(), Subscribes: c.subscribes.Load(), StreamErrors: c.streamErrors.Load(),
		Events: c.events.Load(), BadEvents: c.badEvents.Load(), Foreign: c.foreign.Load(), Own: c.own.Load(),
		ClaimedStream: c.claimedStream.Load(), ClaimedCatchUp: c.claimedCatchUp.Load(), Duplicates: c.duplicates.Load(),
		Started: c.started.Load(), Done: c.done.Load(), Failed: c.failed.Load(), Skipped: c.skipped.Load(),
		QueueFull: c.queueFull.Load(), CatchUps: c.catchUps.Load(), CatchUpErrors: c.catchUpErrors.Load(),
		Recovered: c.recovered.Load(), Reports: c.reports.Load(),
		Subscribed: c.subscribed.Load(), LastCatchUp: r.lastCatchUp(),
		SubscribedAt: unixNanoTime(c.subscribedAt.Load()), DisconnectedAt: unixNanoTime(c.disconnectedAt.Load()),
	}
	if id := c.clientID.Load(); id != nil {
		s.ClientID = *id
	}
	return s
}

// lastCatchUp is the oldest catch-up mark of the handled kinds.
func (r *Realtime) lastCatchUp() time.Time {
	var oldest time.Time
	for i, k := range r.kinds() {
		t := r.store.LastCatchUp(k)
		if t.IsZero() {
			return time.Time{}
		}
		if i == 0 || t.Before(oldest) {
			oldest = t
		}
	}
	return oldest
}
