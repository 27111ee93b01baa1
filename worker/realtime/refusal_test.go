package realtime_test

import (
	"strings"
	"sync"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/realtime"
)

// A handler that refuses (RefusedError) leaves the operation Skipped with
// its reason, reported where the backend takes reports (/fail on a newer
// backend, only logged on the observed one), and never run again.
func TestRefusedRebootIsSkippedAndReported(t *testing.T) {
	for _, newer := range []bool{false, true} {
		t.Run(map[bool]string{false: "observed backend", true: "newer backend"}[newer], func(t *testing.T) {
			e := newEnv(t, fakeapi.Options{RebootFail: newer})
			rec := newRecorder()
			cfg := e.config(e.openStore(t.TempDir()), rec)
			var mu sync.Mutex
			var updates []string
			cfg.RebootChanged = func(op nannyapi.RebootOperation) {
				mu.Lock()
				updates = append(updates, op.ID+":"+op.Status)
				mu.Unlock()
			}
			r := e.start(cfg, rec)
			e.waitSubscribed()
			id := e.createReboot(120)
			rec.mu.Lock()
			rec.fail[key(opstate.Reboot, id)] = &realtime.RefusedError{Reason: "the broker refused the reboot: reboots are disabled by policy"}
			rec.mu.Unlock()
			rec.waitCalled(t, key(opstate.Reboot, id))
			eventually(t, "the refusal recorded and reported", func() bool {
				got, ok := r.store.Get(opstate.Reboot, id)
				return ok && got.State == opstate.Skipped && got.Report == ""
			})
			got := entry(t, r.store, opstate.Reboot, id)
			if got.Note != "the broker refused the reboot: reboots are disabled by policy" {
				t.Errorf("entry %+v", got)
			}
			rec.exactlyOnce(t, key(opstate.Reboot, id))
			if newer {
				if fails := e.fake.RebootFails(); len(fails) != 1 || !strings.Contains(fails[0].Body, "disabled by policy") {
					t.Errorf("fail posts %+v", fails)
				}
				eventually(t, "the update handed on", func() bool {
					mu.Lock()
					defer mu.Unlock()
					return len(updates) == 1 && updates[0] == id+":failed"
				})
				return
			}
			if rec, _ := e.fake.Record("reboot_operations", id); rec["status"] != "sent" {
				t.Errorf("backend record %v", rec)
			}
			if err := e.fake.TimeoutReboot(id); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the timeout handed on", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(updates) == 1 && updates[0] == id+":timeout"
			})
		})
	}
}

// A handler's FailedError (it failed after acknowledging) is recorded
// Failed with the reason and reported where the backend takes reports.
func TestFailedRebootIsReported(t *testing.T) {
	e := newEnv(t, fakeapi.Options{RebootFail: true})
	rec := newRecorder()
	r := e.start(e.config(e.openStore(t.TempDir()), rec), rec)
	e.waitSubscribed()
	id := e.createReboot(120)
	rec.mu.Lock()
	rec.fail[key(opstate.Reboot, id)] = &realtime.FailedError{Reason: "the reboot command failed: exit 1"}
	rec.mu.Unlock()
	eventually(t, "the failure recorded and reported", func() bool {
		got, ok := r.store.Get(opstate.Reboot, id)
		return ok && got.State == opstate.Failed && got.Report == "" && got.Note == "the reboot command failed: exit 1"
	})
	if fails := e.fake.RebootFails(); len(fails) != 1 || !strings.Contains(fails[0].Body, "exit 1") {
		t.Errorf("fail posts %+v", fails)
	}
}
