package opstate_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/worker/opstate"
)

// BenchmarkLifecycle is one operation's three durable writes (claim,
// start, finish) from an empty store; the store grows by one entry per
// iteration, as it does in use until pruning.
func BenchmarkLifecycle(b *testing.B) {
	s, err := opstate.Open(opstate.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("op%09d", i)
		if _, _, err := s.Claim(opstate.Patch, id, opstate.ClaimInfo{Mode: "dry-run"}); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Start(opstate.Patch, id); err != nil {
			b.Fatal(err)
		}
		if err := s.Finish(opstate.Patch, id, opstate.Outcome{State: opstate.Done}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWrite is one durable write (encode, temp file, fsync, rename,
// fsync of the directory) of a store holding n entries.
func BenchmarkWrite(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			s, err := opstate.Open(opstate.Options{Dir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			reqs := make([]opstate.ClaimRequest, n)
			for i := range reqs {
				reqs[i] = opstate.ClaimRequest{Kind: opstate.Investigation, ID: fmt.Sprintf("seed%06d", i)}
			}
			s.ClaimAll(reqs)
			t := time.Now()
			for b.Loop() {
				t = t.Add(time.Second)
				if err := s.SetLastCatchUp(opstate.Investigation, t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDuplicateClaim is the cost of refusing an id already handled
// (the common case for catch-ups): no write.
func BenchmarkDuplicateClaim(b *testing.B) {
	s, err := opstate.Open(opstate.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if _, _, err := s.Claim(opstate.Investigation, "inv1", opstate.ClaimInfo{}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, st, _ := s.Claim(opstate.Investigation, "inv1", opstate.ClaimInfo{}); st == opstate.Claimed {
			b.Fatal("claimed twice")
		}
	}
}

// BenchmarkParallelLifecycle runs operations from 8 goroutines per CPU, as
// the stream, the catch-up and the workers do: their writes share fsyncs.
func BenchmarkParallelLifecycle(b *testing.B) {
	s, err := opstate.Open(opstate.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	next := 0
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			next++
			id := fmt.Sprintf("op%09d", next)
			mu.Unlock()
			if _, _, err := s.Claim(opstate.Patch, id, opstate.ClaimInfo{}); err != nil {
				b.Error(err)
				return
			}
			if _, err := s.Start(opstate.Patch, id); err != nil {
				b.Error(err)
				return
			}
			if err := s.Finish(opstate.Patch, id, opstate.Outcome{State: opstate.Done}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
