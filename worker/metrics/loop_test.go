package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock lets a test fire ticks and backoff timers by hand. Sends on its
// channels are unbuffered, so each fire waits until the loop takes it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	tick   chan time.Time
	afters chan afterReq
}

type afterReq struct {
	d  time.Duration
	ch chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Unix(1700000000, 0), tick: make(chan time.Time), afters: make(chan afterReq, 16)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) NewTicker(time.Duration) Ticker { return fakeTicker{c.tick} }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.afters <- afterReq{d, ch}
	return ch
}

type fakeTicker struct{ c chan time.Time }

func (t fakeTicker) C() <-chan time.Time { return t.c }
func (t fakeTicker) Stop()               {}

type fakeSampler struct {
	mu    sync.Mutex
	errs  []error // consumed one per call; nil entries succeed
	calls int
	cpu   float64
}

func (s *fakeSampler) CollectMetrics(ctx context.Context, _ *brokerv1.CollectMetricsRequest, _ ...grpc.CallOption) (*brokerv1.CollectMetricsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if len(s.errs) > 0 {
		err := s.errs[0]
		s.errs = s.errs[1:]
		if err != nil {
			return nil, err
		}
	}
	s.cpu += 10
	resp := sampleFixture()
	resp.CollectedAt = timestamppb.New(time.Unix(1700000000+int64(s.calls)*30, 0))
	resp.Cpu = &brokerv1.CpuTimes{User: s.cpu, Idle: s.cpu * 3}
	return resp, nil
}

type fakePoster struct {
	mu    sync.Mutex
	errs  []error
	got   chan nannyapi.MetricsReport
	block chan struct{} // when set, posts wait on it or on ctx
}

func newFakePoster() *fakePoster { return &fakePoster{got: make(chan nannyapi.MetricsReport, 16)} }

func (p *fakePoster) IngestMetrics(ctx context.Context, payload nannyapi.MetricsReport) error {
	p.mu.Lock()
	block := p.block
	var err error
	if len(p.errs) > 0 {
		err, p.errs = p.errs[0], p.errs[1:]
	}
	p.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err != nil {
		return err
	}
	p.got <- payload
	return nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startLoop(t *testing.T, cfg LoopConfig, s Sampler, p MetricsPoster) (*Loop, func()) {
	t.Helper()
	cfg.Logger = quietLogger()
	l, err := NewLoop(cfg, s, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	return l, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	}
}

func receive(t *testing.T, ch <-chan nannyapi.MetricsReport) nannyapi.MetricsReport {
	t.Helper()
	select {
	case p := <-ch:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat posted")
		return nannyapi.MetricsReport{}
	}
}

// settledStatus waits (up to 5 s) for the loop's status to satisfy done and
// returns it. The fake poster hands a heartbeat to the test before Once has
// recorded the outcome, so a status read right after receive races with it.
func settledStatus(l *Loop, done func(Status) bool) Status {
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := l.Status()
		if done(st) || time.Now().After(deadline) {
			return st
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLoopPostsAtOnceThenEveryTick(t *testing.T) {
	clk := newFakeClock()
	s, p := &fakeSampler{}, newFakePoster()
	l, stop := startLoop(t, LoopConfig{Clock: clk, Version: "1.2.3"}, s, p)
	defer stop()

	first := receive(t, p.got)
	if first.Version != "1.2.3" || first.SystemMetrics.CPUPercent != 25 {
		t.Errorf("first heartbeat: version %q cpu %v (want since-boot 25)", first.Version, first.SystemMetrics.CPUPercent)
	}
	clk.advance(30 * time.Second)
	clk.tick <- clk.Now()
	second := receive(t, p.got)
	if second.SystemMetrics.CPUPercent != 25 {
		t.Errorf("second cpu = %v", second.SystemMetrics.CPUPercent)
	}
	if st := settledStatus(l, func(st Status) bool { return st.LastSuccess.Equal(clk.Now()) }); !st.LastSuccess.Equal(clk.Now()) || st.LastError != "" || st.Rates.SinceBoot {
		t.Errorf("status = %+v", st)
	}
}

func TestLoopRetriesWithBackoffThenGivesUp(t *testing.T) {
	clk := newFakeClock()
	boom := errors.New("503 from backend")
	s := &fakeSampler{errs: []error{errors.New("broker restarting")}}
	p := newFakePoster()
	p.errs = []error{boom, boom, boom}
	l, stop := startLoop(t, LoopConfig{Clock: clk, Retries: 3, Backoff: time.Second}, s, p)
	defer stop()

	// Attempt 1 fails on the sampler, 2-4 on the poster: backoffs 1s, 2s, 4s.
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		req := <-clk.afters
		if req.d != want {
			t.Fatalf("backoff = %s, want %s", req.d, want)
		}
		clk.advance(req.d)
		req.ch <- clk.Now()
	}
	// The fourth failure ends the cycle: no more backoff, no post.
	clk.advance(23 * time.Second)
	clk.tick <- clk.Now()
	// The next interval starts afresh and succeeds.
	receive(t, p.got)
	select {
	case req := <-clk.afters:
		t.Fatalf("unexpected backoff %s", req.d)
	default:
	}
	if s.calls != 5 {
		t.Errorf("sampler calls = %d, want 5", s.calls)
	}
	if st := settledStatus(l, func(st Status) bool { return !st.LastSuccess.IsZero() }); st.LastError != "" || st.LastSuccess.IsZero() {
		t.Errorf("status = %+v", st)
	}
}

func TestLoopRetriesNeverRunIntoNextInterval(t *testing.T) {
	clk := newFakeClock()
	p := newFakePoster()
	boom := errors.New("down")
	p.errs = []error{boom, boom}
	// Interval 5 s, backoff 4 s: one retry fits (4 < 5), the next (8 s) does not.
	l, stop := startLoop(t, LoopConfig{Clock: clk, Interval: 5 * time.Second, Retries: 5, Backoff: 4 * time.Second}, &fakeSampler{}, p)
	defer stop()
	req := <-clk.afters
	clk.advance(req.d)
	req.ch <- clk.Now()
	// Gave up after two attempts; the next tick posts.
	clk.tick <- clk.Now()
	receive(t, p.got)
	if st := settledStatus(l, func(st Status) bool { return !st.LastSuccess.IsZero() }); st.LastError != "" {
		t.Errorf("status after success = %+v", st)
	}
}

func TestLoopPauseCancelsInFlightAndSkipsTicks(t *testing.T) {
	clk := newFakeClock()
	p := newFakePoster()
	p.block = make(chan struct{})
	s := &fakeSampler{}
	l, stop := startLoop(t, LoopConfig{Clock: clk, Retries: -1}, s, p)
	defer stop()

	// Wait for the first attempt to be inside the poster.
	for deadline := time.Now().Add(5 * time.Second); ; {
		s.mu.Lock()
		n := s.calls
		s.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("first attempt never started")
		}
		time.Sleep(time.Millisecond)
	}
	l.Pause() // returns only once the blocked post was cancelled
	if st := l.Status(); !st.Paused || st.LastError == "" {
		t.Errorf("after pause: %+v", st)
	}
	p.mu.Lock()
	p.block = nil
	p.mu.Unlock()

	clk.tick <- clk.Now()
	clk.tick <- clk.Now() // the loop took the first tick and came back: nothing was posted
	select {
	case got := <-p.got:
		t.Fatalf("posted while paused: %+v", got)
	default:
	}
	if err := l.Once(context.Background()); !errors.Is(err, errPaused) {
		t.Errorf("Once while paused = %v", err)
	}

	l.Resume()
	clk.tick <- clk.Now()
	receive(t, p.got)
}

func TestLoopStopsOnCancel(t *testing.T) {
	clk := newFakeClock()
	p := newFakePoster()
	p.block = make(chan struct{}) // stuck backend
	l, err := NewLoop(LoopConfig{Clock: clk, Logger: quietLogger()}, &fakeSampler{}, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
}

func TestNewLoopBounds(t *testing.T) {
	tests := []struct {
		interval time.Duration
		ok       bool
	}{
		{0, true}, {5 * time.Second, true}, {604800 * time.Second, true},
		{4 * time.Second, false}, {604801 * time.Second, false}, {-time.Second, false},
	}
	for _, tt := range tests {
		_, err := NewLoop(LoopConfig{Interval: tt.interval}, &fakeSampler{}, newFakePoster())
		if (err == nil) != tt.ok {
			t.Errorf("interval %s: err = %v", tt.interval, err)
		}
	}
	if _, err := NewLoop(LoopConfig{}, nil, newFakePoster()); err == nil {
		t.Error("nil sampler accepted")
	}
}
