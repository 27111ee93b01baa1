package execute

import (
	"context"
	"fmt"
	"sync"
)

// gate bounds concurrent runs, with a short queue in front; beyond the
// queue a run is refused at once rather than piling up. Its sizes can
// change while runs hold slots (a policy reload): a smaller limit takes
// effect as runs end, a larger one at once.
type gate struct {
	mu       sync.Mutex
	limit    int
	maxQueue int
	running  int
	queued   int
	// changed is closed, and replaced, whenever a slot frees or the
	// limit grows, to wake the waiters.
	changed chan struct{}
}

func newGate(limit, queue int) *gate {
	return &gate{limit: limit, maxQueue: queue, changed: make(chan struct{})}
}

func (g *gate) acquire(ctx context.Context) error {
	g.mu.Lock()
	if g.running < g.limit {
		g.running++
		g.mu.Unlock()
		return nil
	}
	if g.queued >= g.maxQueue {
		limit, queue := g.limit, g.maxQueue
		g.mu.Unlock()
		return fmt.Errorf("%w: %d running and %d waiting", ErrBusy, limit, queue)
	}
	g.queued++
	defer func() {
		g.mu.Lock()
		g.queued--
		g.mu.Unlock()
	}()
	for {
		changed := g.changed
		g.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for a run slot: %w", ErrBusy, ctx.Err())
		}
		g.mu.Lock()
		if g.running < g.limit {
			g.running++
			g.mu.Unlock()
			return nil
		}
	}
}

func (g *gate) release() {
	g.mu.Lock()
	g.running--
	g.wakeLocked()
	g.mu.Unlock()
}

// resize sets the number of slots and of queue places.
func (g *gate) resize(limit, queue int) {
	g.mu.Lock()
	g.limit, g.maxQueue = limit, queue
	g.wakeLocked()
	g.mu.Unlock()
}

func (g *gate) wakeLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// size reports the number of slots and of queue places.
func (g *gate) size() (limit, queue int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit, g.maxQueue
}

// Gate reports how many runs that take a slot may go at once, and how many
// may wait for one.
func (r *Runner) Gate() (running, waiting int) { return r.gate.size() }
