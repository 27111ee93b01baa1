package broker

import (
	"context"
	"sync/atomic"
	"time"
)

// idleTracker knows whether any request is in flight and when the last one
// ended.
type idleTracker struct {
	inflight atomic.Int64
	lastEnd  atomic.Int64 // unix nanoseconds
	// busy reports work that outlives requests (detached runs); the
	// broker is not idle while it does, and the idle time counts from
	// when it ends.
	busy func() bool
}

func (t *idleTracker) begin() { t.inflight.Add(1) }

func (t *idleTracker) end() {
	t.lastEnd.Store(time.Now().UnixNano())
	t.inflight.Add(-1)
}

// idleSince reports how long the broker has been idle at now; zero while a
// request is in flight.
func (t *idleTracker) idleSince(start, now time.Time) time.Duration {
	if t.inflight.Load() > 0 {
		return 0
	}
	if t.busy != nil && t.busy() {
		t.lastEnd.Store(now.UnixNano())
		return 0
	}
	last := time.Unix(0, t.lastEnd.Load())
	if last.Before(start) {
		last = start
	}
	return now.Sub(last)
}

// waitIdle returns true once the broker has been idle for limit, false if
// ctx ends first.
func (t *idleTracker) waitIdle(ctx context.Context, limit time.Duration) bool {
	start := time.Now()
	tick := time.NewTicker(min(limit/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case now := <-tick.C:
			if t.idleSince(start, now) >= limit {
				return true
			}
		}
	}
}
