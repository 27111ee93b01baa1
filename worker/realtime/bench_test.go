package realtime

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// countingHandler counts handled investigations.
type countingHandler struct{ n atomic.Int64 }

func (c *countingHandler) HandleInvestigation(context.Context, nannyapi.Investigation) error {
	c.n.Add(1)
	return nil
}

// BenchmarkDispatch is one create event through the whole path: SSE data
// decoded, filtered, claimed (durable), queued, started (durable), handled
// by a no-op handler and finished (durable). Three fsyncs per event,
// shared between the two investigation workers.
func BenchmarkDispatch(b *testing.B) {
	h := &countingHandler{}
	r := newTestRealtime(b, &stubAPI{}, func(c *Config) {
		c.Investigations, c.Patches, c.Reboots = h, nil, nil
		c.BackoffMin = time.Hour // the stub stream never connects; keep it quiet
		c.CatchUpInterval = time.Hour
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	defer func() { cancel(); <-done }()
	const id = "8vdpgwejcaa7p3q"
	i := 0
	for b.Loop() {
		i++
		r.handleFrame("investigations", strings.Replace(dataInv, id, fmt.Sprintf("inv%012d", i), 1))
	}
	for h.n.Load() < int64(i) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDuplicateEvent is an event for an id already handled: decoded,
// filtered and refused by the claim, without a write.
func BenchmarkDuplicateEvent(b *testing.B) {
	r := newTestRealtime(b, &stubAPI{}, nil)
	r.handleFrame("investigations", dataInv)
	r.queued()
	if _, err := r.store.Skip("investigation", "8vdpgwejcaa7p3q", "bench"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		r.handleFrame("investigations", dataInv)
	}
	if len(r.queued()) != 0 {
		b.Fatal("a handled id was queued again")
	}
}

// BenchmarkForeignEvent is an event of another agent: decoded and dropped.
func BenchmarkForeignEvent(b *testing.B) {
	r := newTestRealtime(b, &stubAPI{}, nil)
	data := strings.ReplaceAll(dataInv, testAgent, "otheragent00001")
	for b.Loop() {
		r.handleFrame("investigations", data)
	}
}
