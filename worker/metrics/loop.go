package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"google.golang.org/grpc"
)

// Interval bounds and defaults.
const (
	DefaultInterval       = 30 * time.Second
	MinInterval           = 5 * time.Second
	MaxInterval           = 604800 * time.Second
	DefaultRetries        = 3
	DefaultBackoff        = 2 * time.Second
	DefaultAttemptTimeout = 20 * time.Second
)

// Sampler returns one raw metrics sample. The broker's generated gRPC
// client (brokerv1.BrokerServiceClient) satisfies it as is.
type Sampler interface {
	CollectMetrics(ctx context.Context, in *brokerv1.CollectMetricsRequest, opts ...grpc.CallOption) (*brokerv1.CollectMetricsResponse, error)
}

// MetricsPoster sends one heartbeat to NannyAPI. A *nannyapi.Client with
// credentials (Client.WithCredentials) satisfies it as is.
type MetricsPoster interface {
	IngestMetrics(ctx context.Context, r nannyapi.MetricsReport) error
}

var _ MetricsPoster = (*nannyapi.Client)(nil)

// LoopConfig configures a Loop. Zero values take the defaults.
type LoopConfig struct {
	// Interval between heartbeats: DefaultInterval, within [MinInterval, MaxInterval].
	Interval time.Duration
	// Version is the agent version sent in every heartbeat.
	Version string
	// Retries after a failed attempt (sample or post) in one interval;
	// DefaultRetries if 0, none if negative.
	Retries int
	// Backoff before the first retry, doubled after each; DefaultBackoff if 0.
	// Retries never run into the next interval.
	Backoff time.Duration
	// AttemptTimeout bounds one sample plus post; DefaultAttemptTimeout if 0.
	AttemptTimeout time.Duration
	Clock          Clock
	Logger         *slog.Logger
}

// Status is what the loop last did, for the local API and `nannyagent status`.
type Status struct {
	Paused      bool
	LastSuccess time.Time
	LastAttempt time.Time
	LastError   string
	Rates       Rates
}

// Loop posts a heartbeat now and then every interval until its context
// ends. It runs in the caller's goroutine (Run) and never blocks anyone
// else; Pause stops heartbeats (a host reboot in progress needs that,
// because NannyAPI marks an acknowledged reboot completed at the next
// heartbeat).
type Loop struct {
	cfg     LoopConfig
	sampler Sampler
	poster  MetricsPoster
	log     *slog.Logger

	// attemptMu is held for a whole attempt (sample, build, post): Pause
	// takes it to wait out an attempt in flight.
	attemptMu sync.Mutex

	mu            sync.Mutex // guards the fields below
	paused        bool
	cancelAttempt context.CancelFunc
	tracker       RateTracker
	status        Status
}

// NewLoop checks cfg and returns a loop that samples from s and posts to p.
func NewLoop(cfg LoopConfig, s Sampler, p MetricsPoster) (*Loop, error) {
	if s == nil || p == nil {
		return nil, errors.New("metrics loop needs a sampler and a poster")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Interval < MinInterval || cfg.Interval > MaxInterval {
		return nil, fmt.Errorf("metrics interval %s outside [%s, %s]", cfg.Interval, MinInterval, MaxInterval)
	}
	if cfg.Retries == 0 {
		cfg.Retries = DefaultRetries
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Loop{cfg: cfg, sampler: s, poster: p, log: log.With("loop", "metrics")}, nil
}

// Run posts a heartbeat at once and then every interval until ctx ends. It
// returns nil when ctx is cancelled.
func (l *Loop) Run(ctx context.Context) error {
	t := l.cfg.Clock.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		l.cycle(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// cycle makes up to 1+Retries attempts, backing off between them, and gives
// up early rather than run into the next interval.
func (l *Loop) cycle(ctx context.Context) {
	start := l.cfg.Clock.Now()
	deadline := start.Add(l.cfg.Interval)
	backoff := l.cfg.Backoff
	for attempt := 0; ; attempt++ {
		err := l.Once(ctx)
		if err == nil || errors.Is(err, errPaused) || ctx.Err() != nil {
			return
		}
		if attempt >= l.cfg.Retries || !l.cfg.Clock.Now().Add(backoff).Before(deadline) {
			l.log.Warn("metrics heartbeat failed, waiting for the next interval", "attempts", attempt+1, "err", err)
			return
		}
		l.log.Info("metrics heartbeat failed, retrying", "attempt", attempt+1, "backoff", backoff, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-l.cfg.Clock.After(backoff):
		}
		backoff *= 2
	}
}

// errPaused is returned by Once while the loop is paused.
var errPaused = errors.New("metrics heartbeats paused")

// Once samples, builds and posts one heartbeat now, unless paused. The
// startup connectivity check can use it; Run calls it every interval.
func (l *Loop) Once(ctx context.Context) error {
	l.attemptMu.Lock()
	defer l.attemptMu.Unlock()

	l.mu.Lock()
	if l.paused {
		l.mu.Unlock()
		return errPaused
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AttemptTimeout)
	defer cancel()
	l.cancelAttempt = cancel
	l.status.LastAttempt = l.cfg.Clock.Now()
	l.mu.Unlock()

	err := l.attempt(ctx)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.cancelAttempt = nil
	if err != nil {
		l.status.LastError = err.Error()
		return err
	}
	l.status.LastError = ""
	l.status.LastSuccess = l.cfg.Clock.Now()
	return nil
}

func (l *Loop) attempt(ctx context.Context) error {
	sample, err := l.sampler.CollectMetrics(ctx, &brokerv1.CollectMetricsRequest{})
	if err != nil {
		return fmt.Errorf("collect metrics from broker: %w", err)
	}
	for _, e := range sample.GetErrors() {
		l.log.Debug("metrics source failed on the broker", "source", e.GetSource(), "err", e.GetError())
	}
	l.mu.Lock()
	rates := l.tracker.Update(sample)
	l.status.Rates = rates
	l.mu.Unlock()
	report, err := BuildPayload(sample, rates.CPUPercent, l.cfg.Version)
	if err != nil {
		return err
	}
	if err := l.poster.IngestMetrics(ctx, report); err != nil {
		return fmt.Errorf("post metrics: %w", err)
	}
	return nil
}

// Pause stops heartbeats until Resume. It cancels an attempt in flight and
// returns once that attempt has ended, so no heartbeat starts after it.
func (l *Loop) Pause() {
	l.mu.Lock()
	l.paused = true
	if l.cancelAttempt != nil {
		l.cancelAttempt()
	}
	l.mu.Unlock()
	// Taking the attempt lock waits out the attempt in flight; later
	// attempts see paused and stop.
	l.attemptMu.Lock()
	//lint:ignore SA2001 the empty critical section is the wait
	l.attemptMu.Unlock()
}

// Resume lets heartbeats run again from the next interval on.
func (l *Loop) Resume() {
	l.mu.Lock()
	l.paused = false
	l.mu.Unlock()
}

// Status reports what the loop last did.
func (l *Loop) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.status
	s.Paused = l.paused
	return s
}

// LastSuccess is when a heartbeat was last accepted; zero if never.
func (l *Loop) LastSuccess() time.Time { return l.Status().LastSuccess }
