package realtime_test

import (
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// BenchmarkCatchUpAfterReconnect measures, against the in-process fake,
// the time from the end of an outage (reconnects allowed again) until the
// 6 operations created during it (3 investigations, 2 patches, 1 reboot)
// have all been handed to their handlers. With BackoffMin 20ms the
// reconnect itself waits up to one backoff step.
func BenchmarkCatchUpAfterReconnect(b *testing.B) {
	e := newEnv(b, fakeapi.Options{})
	rec := newRecorder()
	r := e.start(e.config(e.openStore(b.TempDir()), rec), rec)
	e.waitSubscribed()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		end := e.outage(subscribedFunc(func() bool { return r.rt.Stats().Subscribed }))
		keys := []string{
			key(opstate.Investigation, e.createInvestigation("Benchmark investigation one")),
			key(opstate.Investigation, e.createInvestigation("Benchmark investigation two")),
			key(opstate.Investigation, e.createInvestigation("Benchmark investigation three")),
			key(opstate.Patch, e.createPatch("dry-run")),
			key(opstate.Patch, e.createPatch("apply")),
			key(opstate.Reboot, e.createReboot(300)),
		}
		b.StartTimer()
		began := time.Now()
		end()
		rec.waitCalled(b, keys...)
		total += time.Since(began)
		b.StopTimer()
		// The fake allows one pending reboot per agent.
		if err := e.fake.TimeoutReboot(keys[5][len("reboot/"):]); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-caught-up")
}
