package realtime

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// Realtime receives this agent's operations from the stream and the
// catch-up and hands each to its handler once. Create it with New, start
// it with Run.
type Realtime struct {
	cfg   Config
	log   *slog.Logger
	store *opstate.Store
	api   API

	// queues per kind; workers take jobs from them.
	queues map[opstate.Kind]chan job

	// kicks wake the maintenance loop (buffered 1, never block).
	catchUpKick chan struct{}
	reportKick  chan struct{}

	ownMu       sync.Mutex
	ownCreating int
	ownDeferred bool
	// deferrals counts records a catch-up left for later.
	deferrals atomic.Uint64

	started atomic.Bool
	stats   counters
}

// job is a claimed operation waiting for a worker.
type job struct {
	op op
}

// New checks cfg and builds a Realtime.
func New(cfg Config) (*Realtime, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	r := &Realtime{
		cfg:         cfg,
		log:         cfg.Logger,
		store:       cfg.Store,
		api:         cfg.API,
		queues:      map[opstate.Kind]chan job{},
		catchUpKick: make(chan struct{}, 1),
		reportKick:  make(chan struct{}, 1),
	}
	for _, k := range r.kinds() {
		r.queues[k] = make(chan job, cfg.QueueSize)
	}
	return r, nil
}

// kinds lists the kinds that have a handler.
func (r *Realtime) kinds() []opstate.Kind {
	var out []opstate.Kind
	if r.cfg.Investigations != nil {
		out = append(out, opstate.Investigation)
	}
	if r.cfg.Patches != nil {
		out = append(out, opstate.Patch)
	}
	if r.cfg.Reboots != nil {
		out = append(out, opstate.Reboot)
	}
	return out
}

func (r *Realtime) workers(k opstate.Kind) int {
	switch k {
	case opstate.Investigation:
		return r.cfg.InvestigationWorkers
	case opstate.Patch:
		return r.cfg.PatchWorkers
	default:
		return r.cfg.RebootWorkers
	}
}

// Run receives and runs operations until ctx ends. It first recovers what
// a previous process left running, then keeps the stream connected and
// catches up after every (re)connect and every CatchUpInterval. Every
// goroutine it starts has stopped when it returns; operations running at
// that moment stay "running" in the store and are recovered by the next
// Run. Run may be called once.
func (r *Realtime) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("realtime: Run called twice")
	}
	if err := r.store.Degraded(); err != nil {
		r.log.Error("operation record degraded: patch apply and reboots are refused until an operator acts", "error", err.Error())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, k := range r.kinds() {
		for range r.workers(k) {
			wg.Go(func() { r.work(ctx, k) })
		}
	}
	wg.Go(func() { r.maintain(ctx) })
	wg.Go(func() { r.streamLoop(ctx) })
	<-ctx.Done()
	wg.Wait()
	r.drainQueues()
	return nil
}

// drainQueues releases claims still waiting when Run stops; they stay
// Received and are taken again by the next Run's catch-up.
func (r *Realtime) drainQueues() {
	for k, q := range r.queues {
		for len(q) > 0 {
			r.store.Release(k, (<-q).op.id)
		}
	}
}

// RecordOwnInvestigation records an investigation this worker created
// itself, right after the create call returned its id, so that neither its
// echo on the stream nor a catch-up ever runs it. BeginOwnInvestigation
// also closes the window before the create returns.
func (r *Realtime) RecordOwnInvestigation(id string) error {
	return r.store.MarkOwn(id)
}

// BeginOwnInvestigation is called right before this worker creates an
// investigation itself; call the returned function once the create
// returned, with the new id ("" if it failed). In between, catch-ups do
// not start investigations whose origin they cannot see (the records API
// loses metadata.initiated_by) but look again once done is called.
func (r *Realtime) BeginOwnInvestigation() (done func(id string) error) {
	r.ownMu.Lock()
	r.ownCreating++
	r.ownMu.Unlock()
	var once sync.Once
	return func(id string) error {
		var err error
		once.Do(func() {
			if id != "" {
				err = r.store.MarkOwn(id)
			}
			r.ownMu.Lock()
			r.ownCreating--
			again := r.ownCreating == 0 && r.ownDeferred
			if again {
				r.ownDeferred = false
			}
			r.ownMu.Unlock()
			if again {
				kick(r.catchUpKick)
			}
		})
		return err
	}
}

// deferWhileCreating reports that an own create is in flight (and notes
// that a catch-up must look again).
func (r *Realtime) deferWhileCreating() bool {
	r.ownMu.Lock()
	defer r.ownMu.Unlock()
	if r.ownCreating == 0 {
		return false
	}
	r.ownDeferred = true
	r.deferrals.Add(1)
	return true
}

// RebootAcknowledging records, on disk, that the reboot is about to be
// acknowledged to the backend. The reboot handler calls it right before
// the acknowledge call; after a restart the reboot counts as done only if
// the host booted after this moment.
func (r *Realtime) RebootAcknowledging(id string) error {
	return r.store.Acknowledge(id)
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// clipText makes text from the backend or an error safe and short for
// logs and notes.
func clipText(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// permanent reports a report error that retrying will not fix.
func permanent(err error) bool {
	if errors.Is(err, ErrNotSupported) {
		return true
	}
	st := nannyapi.StatusOf(err)
	return st >= 400 && st < 500 && st != 401 && st != 408 && st != 429
}
