package broker

import (
	"context"
	"sync"

	"github.com/nannyai/nannyagent/broker/probe"
)

// lazyProbe starts the prober's slow checks (bpftrace --version and a
// kfunc attach test, pveversion) at the first Probe request rather than
// at start-up. A socket-activated broker starts for every metrics sample
// of an idle host; those checks cost it about half a second of CPU each
// time (make footprint), for facts only Probe reports.
type lazyProbe struct {
	mu      sync.Mutex
	ctx     context.Context // Serve's; nil outside it
	wait    func()
	started bool
}

// serve arms the checks for the life of Serve's ctx.
func (l *lazyProbe) serve(ctx context.Context) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ctx = ctx
}

// start begins the slow checks once, while Serve runs.
func (l *lazyProbe) start(p *probe.Prober) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started || l.ctx == nil {
		return
	}
	l.started = true
	l.wait = p.Start(l.ctx)
}

// stop disarms the checks and waits for them if they started.
func (l *lazyProbe) stop() {
	l.mu.Lock()
	l.ctx = nil
	wait := l.wait
	l.mu.Unlock()
	if wait != nil {
		wait()
	}
}
