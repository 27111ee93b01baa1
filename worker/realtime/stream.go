package realtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	sse "github.com/tmaxmax/go-sse"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// The stream uses go-sse's parser (sse.Read) on a body opened by
// nannyapi.Client.OpenRealtime, and this package owns the reconnect loop
// rather than go-sse's Connection, because:
//   - every connect must take the current token from the credentials;
//     a Connection re-sends the request it was built with, so a refreshed
//     token would never be used;
//   - the PocketBase handshake (PB_CONNECT → clientId → subscribe → a
//     catch-up) belongs to each connection, and a subscribe failure must
//     end it; with our loop that is a plain return;
//   - a clean close after a healthy session must reconnect at once (the
//     backend closes idle streams every 5 minutes), while go-sse always
//     waits its backoff interval;
//   - nannyapi's request keeps its origin, TLS and first-byte rules.

// pbConnect is the event name of PocketBase's first frame.
const pbConnect = "PB_CONNECT"

var (
	errIdle   = errors.New("stream idle for longer than the idle timeout")
	errClosed = errors.New("stream closed by the server")
)

// streamLoop keeps a subscribed stream open until ctx ends.
func (r *Realtime) streamLoop(ctx context.Context) {
	failures := 0
	for {
		began := time.Now()
		subscribed, err := r.session(ctx)
		r.stats.subscribed.Store(false)
		if subscribed {
			r.stats.disconnectedAt.Store(time.Now().UnixNano())
		}
		if ctx.Err() != nil {
			return
		}
		lasted := time.Since(began)
		if subscribed && lasted >= r.cfg.BackoffMin && (errors.Is(err, errClosed) || errors.Is(err, errIdle)) {
			failures = 0
			r.log.Info("realtime stream ended; reconnecting", "reason", err.Error(), "lasted", lasted.Round(time.Millisecond))
			continue
		}
		failures++
		r.stats.streamErrors.Add(1)
		wait := r.backoff(failures)
		r.log.Warn("realtime stream failed; reconnecting", "error", err.Error(), "attempt", failures, "wait", wait.Round(time.Millisecond))
		if !sleep(ctx, wait) {
			return
		}
	}
}

// backoff is the wait before reconnect number n (1-based): doubling from
// BackoffMin, capped at BackoffMax, each between half and all of the step.
func (r *Realtime) backoff(n int) time.Duration {
	step := r.cfg.BackoffMin
	for i := 1; i < n && step < r.cfg.BackoffMax; i++ {
		step *= 2
	}
	step = min(step, r.cfg.BackoffMax)
	half := step / 2
	return half + time.Duration(r.cfg.rand()*float64(step-half))
}

// session opens one stream and reads it until it ends. subscribed tells
// whether a subscribe succeeded on it.
func (r *Realtime) session(ctx context.Context) (subscribed bool, err error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	body, err := r.api.OpenRealtime(sctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}
	defer body.Close()
	r.stats.connects.Add(1)
	return r.readStream(sctx, body, cancel)
}

// readStream reads SSE events from body: PB_CONNECT frames subscribe, the
// others are dispatched once subscribed. It stops the stream by calling
// stop(errIdle) when nothing arrived for IdleTimeout.
func (r *Realtime) readStream(ctx context.Context, body io.Reader, stop context.CancelCauseFunc) (subscribed bool, err error) {
	idle := newIdleReader(body, r.cfg.IdleTimeout, func() { stop(errIdle) })
	defer idle.stop()
	for ev, rerr := range sse.Read(idle, &sse.ReadConfig{MaxEventSize: r.cfg.MaxEventBytes}) {
		if rerr != nil {
			if errors.Is(context.Cause(ctx), errIdle) {
				return subscribed, errIdle
			}
			return subscribed, fmt.Errorf("read stream: %w", rerr)
		}
		if ev.Type == pbConnect {
			if err := r.subscribe(ctx, ev.Data); err != nil {
				return subscribed, err
			}
			subscribed = true
			continue
		}
		if !subscribed {
			r.log.Debug("realtime frame before PB_CONNECT ignored", "event", clipText(ev.Type, 64))
			continue
		}
		r.handleFrame(ev.Type, ev.Data)
	}
	if errors.Is(context.Cause(ctx), errIdle) {
		return subscribed, errIdle
	}
	return subscribed, errClosed
}

// subscribe answers a PB_CONNECT frame: every connect has a new clientId,
// which must be subscribed again; then a catch-up finds whatever was sent
// while no subscription existed.
func (r *Realtime) subscribe(ctx context.Context, data string) error {
	clientID, err := nannyapi.DecodeConnect([]byte(data))
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := r.api.Subscribe(ctx, clientID, r.collections()); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	r.stats.subscribes.Add(1)
	r.stats.subscribedAt.Store(time.Now().UnixNano())
	r.stats.subscribed.Store(true)
	r.stats.clientID.Store(&clientID)
	r.log.Info("realtime subscribed", "client_id", clientID)
	kick(r.catchUpKick)
	return nil
}

// collections are the subscribed topics: the kinds that have a handler.
func (r *Realtime) collections() []string {
	var out []string
	for _, k := range r.kinds() {
		out = append(out, collectionOf(k))
	}
	return out
}

// idleReader calls onIdle when no byte arrived for d.
type idleReader struct {
	r io.Reader
	d time.Duration
	t *time.Timer
}

func newIdleReader(r io.Reader, d time.Duration, onIdle func()) *idleReader {
	return &idleReader{r: r, d: d, t: time.AfterFunc(d, onIdle)}
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.t.Reset(i.d)
	}
	return n, err
}

func (i *idleReader) stop() { i.t.Stop() }
