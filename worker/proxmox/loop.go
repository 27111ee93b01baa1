package proxmox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/grpc"
)

// Interval bounds and default.
const (
	DefaultInterval = 300 * time.Second
	MinInterval     = 5 * time.Second
	MaxInterval     = 604800 * time.Second
)

// Prober reports what the broker found on this host; the broker's generated
// gRPC client satisfies it as is. Its ProxmoxInfo decides whether a cycle
// runs, so presence is re-checked every interval (a node can be installed
// or removed while the agent runs).
type Prober interface {
	Probe(ctx context.Context, in *brokerv1.ProbeRequest, opts ...grpc.CallOption) (*brokerv1.ProbeResponse, error)
}

// Clock is the loop's source of time, injectable for tests.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
}

// Ticker is the part of *time.Ticker the loop uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (SystemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

type systemTicker struct{ t *time.Ticker }

func (s systemTicker) C() <-chan time.Time { return s.t.C }
func (s systemTicker) Stop()               { s.t.Stop() }

// LoopConfig configures a Loop. Zero values take the defaults.
type LoopConfig struct {
	// Interval between cycles: DefaultInterval, within [MinInterval, MaxInterval].
	Interval time.Duration
	// Concurrency and FallbackIP are passed to every cycle (see CycleConfig).
	Concurrency int
	FallbackIP  func() string
	// CycleTimeout bounds one cycle; the interval if 0.
	CycleTimeout time.Duration
	Clock        Clock
	Logger       *slog.Logger
}

// LoopStatus is what the loop last did.
type LoopStatus struct {
	Detected    bool
	LastCycle   time.Time
	LastSuccess time.Time
	LastError   string
	LastResult  CycleResult
}

// Loop runs an inventory cycle now and every interval while the broker says
// this host is a Proxmox node.
type Loop struct {
	cfg    LoopConfig
	prober Prober
	getter Getter
	poster Poster
	log    *slog.Logger

	mu     sync.Mutex
	status LoopStatus
}

// ErrNotDetected is returned by Once when the broker sees no Proxmox node.
var ErrNotDetected = errors.New("proxmox not detected")

// NewLoop checks cfg and returns a loop.
func NewLoop(cfg LoopConfig, pr Prober, g Getter, p Poster) (*Loop, error) {
	if pr == nil || g == nil || p == nil {
		return nil, errors.New("proxmox loop needs a prober, a getter and a poster")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Interval < MinInterval || cfg.Interval > MaxInterval {
		return nil, fmt.Errorf("proxmox interval %s outside [%s, %s]", cfg.Interval, MinInterval, MaxInterval)
	}
	if cfg.CycleTimeout <= 0 {
		cfg.CycleTimeout = cfg.Interval
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Loop{cfg: cfg, prober: pr, getter: g, poster: p, log: log.With("loop", "proxmox")}, nil
}

// Run cycles now and every interval until ctx ends; it returns nil then.
func (l *Loop) Run(ctx context.Context) error {
	t := l.cfg.Clock.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := l.Once(ctx); err != nil && !errors.Is(err, ErrNotDetected) && ctx.Err() == nil {
			l.log.Warn("proxmox inventory cycle failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// Once probes and, on a Proxmox node, runs one cycle.
func (l *Loop) Once(ctx context.Context) (CycleResult, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.CycleTimeout)
	defer cancel()
	probe, err := l.prober.Probe(ctx, &brokerv1.ProbeRequest{})
	if err != nil {
		return CycleResult{}, l.record(false, CycleResult{}, fmt.Errorf("probe broker: %w", err))
	}
	px := probe.GetProxmox()
	if !px.GetDetected() {
		if l.Status().Detected {
			l.log.Info("proxmox no longer detected, inventory paused")
		}
		return CycleResult{}, l.record(false, CycleResult{}, ErrNotDetected)
	}
	res, err := RunCycle(ctx, l.getter, l.poster, CycleConfig{
		Concurrency: l.cfg.Concurrency,
		FallbackIP:  l.cfg.FallbackIP,
		PVEVersion:  px.GetVersion(),
		Logger:      l.log,
	})
	if err == nil {
		l.log.Debug("proxmox inventory posted", "node", res.Node, "cluster", res.Cluster,
			"lxc", res.LXCPosted, "qemu", res.QEMUPosted, "skipped", res.Skipped, "failed", res.Failed)
	}
	return res, l.record(true, res, err)
}

func (l *Loop) record(detected bool, res CycleResult, err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.cfg.Clock.Now()
	l.status.Detected = detected
	l.status.LastCycle = now
	l.status.LastResult = res
	if errors.Is(err, ErrNotDetected) { // not a failure: nothing to report on this host
		l.status.LastError = ""
		return err
	}
	if err != nil {
		l.status.LastError = err.Error()
		return err
	}
	l.status.LastError = ""
	l.status.LastSuccess = now
	return nil
}

// Status reports what the loop last did.
func (l *Loop) Status() LoopStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}
