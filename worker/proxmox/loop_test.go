package proxmox

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/grpc"
)

type fakeClock struct{ tick chan time.Time }

func (c fakeClock) Now() time.Time                 { return time.Unix(1700000000, 0) }
func (c fakeClock) NewTicker(time.Duration) Ticker { return fakeTicker(c) }

type fakeTicker struct{ tick chan time.Time }

func (t fakeTicker) C() <-chan time.Time { return t.tick }
func (t fakeTicker) Stop()               {}

type fakeProber struct {
	mu       sync.Mutex
	detected []bool // one per probe; the last repeats
	err      error
	probes   chan struct{}
}

// Probe answers and then reports the probe on p.probes (unbuffered in the
// loop test, so the loop waits in each probe until the test has looked).
func (p *fakeProber) Probe(ctx context.Context, _ *brokerv1.ProbeRequest, _ ...grpc.CallOption) (*brokerv1.ProbeResponse, error) {
	p.mu.Lock()
	d := p.detected[0]
	if len(p.detected) > 1 {
		p.detected = p.detected[1:]
	}
	err := p.err
	p.mu.Unlock()
	select {
	case p.probes <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err != nil {
		return nil, err
	}
	return &brokerv1.ProbeResponse{Proxmox: &brokerv1.ProxmoxInfo{Detected: d, Version: "pve-manager/8.4.14/x", Node: "node3"}}, nil
}

func TestLoopRechecksPresenceEveryInterval(t *testing.T) {
	clk := fakeClock{tick: make(chan time.Time)}
	pr := &fakeProber{detected: []bool{false, true, false}, probes: make(chan struct{})}
	b, be := fixtureBroker(t), newFakeBackend()
	l, err := NewLoop(LoopConfig{Clock: clk, Logger: quiet()}, pr, b, be)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.Run(ctx) }()

	<-pr.probes // first cycle: not a Proxmox node
	clk.tick <- time.Now()
	if st := l.Status(); st.Detected || st.LastError != "" || !st.LastSuccess.IsZero() {
		t.Errorf("status after undetected probe: %+v", st)
	}
	if n := len(be.byEndpoint("node")); n != 0 {
		t.Errorf("posted without Proxmox: %d node records", n)
	}
	<-pr.probes // second: detected, cycle runs
	clk.tick <- time.Now()
	st := l.Status()
	if !st.Detected || st.LastError != "" || st.LastResult.QEMUPosted != 1 || st.LastSuccess.IsZero() {
		t.Errorf("status after a cycle: %+v", st)
	}
	<-pr.probes // third: gone again
	clk.tick <- time.Now()
	if l.Status().Detected {
		t.Error("still detected after the broker said no")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if n := len(be.byEndpoint("node")); n != 1 {
		t.Errorf("node posted %d times, want once", n)
	}
}

func TestLoopOnceReportsProbeFailure(t *testing.T) {
	pr := &fakeProber{detected: []bool{true}, err: errors.New("broker down"), probes: make(chan struct{}, 1)}
	l, err := NewLoop(LoopConfig{Logger: quiet()}, pr, newFakeBroker(), newFakeBackend())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Once(context.Background()); err == nil {
		t.Error("probe failure not reported")
	}
}

func TestNewLoopBounds(t *testing.T) {
	pr := &fakeProber{detected: []bool{true}}
	for _, tc := range []struct {
		d  time.Duration
		ok bool
	}{{0, true}, {5 * time.Second, true}, {604800 * time.Second, true}, {time.Second, false}, {605000 * time.Second, false}} {
		if _, err := NewLoop(LoopConfig{Interval: tc.d}, pr, newFakeBroker(), newFakeBackend()); (err == nil) != tc.ok {
			t.Errorf("interval %s: %v", tc.d, err)
		}
	}
	if _, err := NewLoop(LoopConfig{}, nil, newFakeBroker(), newFakeBackend()); err == nil {
		t.Error("nil prober accepted")
	}
}
