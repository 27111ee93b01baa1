package proxmox

import (
	"context"
	"testing"
)

// BenchmarkCycle500 is the worker's side of one inventory cycle over 500
// guests (decoding, building, 502 posts to an in-memory backend, 4 at a
// time) with the broker answering from memory. The broker's side, with the
// fake pvesh and fake pmxcfs, is broker/proxmox's BenchmarkCycleReads500;
// a cycle costs the sum.
func BenchmarkCycle500(b *testing.B) {
	broker := generatedNode(b, 500)
	var pvesh, posts int
	b.ReportAllocs()
	for b.Loop() {
		be := newFakeBackend()
		res, err := RunCycle(context.Background(), broker, be, CycleConfig{Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		if res.LXCPosted+res.QEMUPosted != 500 {
			b.Fatalf("posted %+v", res)
		}
		pvesh += res.PveshReads
		posts += len(be.records)
	}
	b.ReportMetric(float64(pvesh)/float64(b.N), "pvesh-calls/op")
	b.ReportMetric(float64(posts)/float64(b.N), "posts/op")
}
