package opstate_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/worker/opstate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var t0 = time.Date(2026, 11, 25, 21, 40, 0, 0, time.UTC)

func open(t *testing.T, dir string, now func() time.Time) *opstate.Store {
	t.Helper()
	s, err := opstate.Open(opstate.Options{Dir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustClaim(t *testing.T, s *opstate.Store, kind opstate.Kind, id string, want opstate.ClaimStatus) opstate.Entry {
	t.Helper()
	e, st, err := s.Claim(kind, id, opstate.ClaimInfo{})
	if err != nil {
		t.Fatalf("claim %s/%s: %v", kind, id, err)
	}
	if st != want {
		t.Fatalf("claim %s/%s = %v, want %v (entry %+v)", kind, id, st, want, e)
	}
	return e
}

func TestClaimLifecycleSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	s := open(t, dir, c.Now)
	e := mustClaim(t, s, opstate.Investigation, "inv1", opstate.Claimed)
	if e.State != opstate.Received || !e.FirstSeen.Equal(t0) {
		t.Fatalf("new entry %+v", e)
	}
	mustClaim(t, s, opstate.Investigation, "inv1", opstate.Held)
	// Same id, other kind: a different operation.
	mustClaim(t, s, opstate.Patch, "inv1", opstate.Claimed)
	c.Advance(time.Second)
	if e, err := s.Start(opstate.Investigation, "inv1"); err != nil || e.State != opstate.Running || !e.Started.Equal(t0.Add(time.Second)) {
		t.Fatalf("start: %+v %v", e, err)
	}
	mustClaim(t, s, opstate.Investigation, "inv1", opstate.Held)
	if err := s.Finish(opstate.Investigation, "inv1", opstate.Outcome{State: opstate.Done}); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, opstate.Investigation, "inv1", opstate.Handled)
	if _, err := s.Start(opstate.Investigation, "inv1"); !errors.Is(err, opstate.ErrNotHeld) {
		t.Fatalf("start after finish: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, dir, c.Now)
	got, ok := s2.Get(opstate.Investigation, "inv1")
	if !ok || got.State != opstate.Done || !got.Finished.Equal(t0.Add(time.Second)) {
		t.Fatalf("after reopen: %+v %v", got, ok)
	}
	mustClaim(t, s2, opstate.Investigation, "inv1", opstate.Handled)
	// The patch was claimed but never started: the new process may take it.
	mustClaim(t, s2, opstate.Patch, "inv1", opstate.Claimed)
	if len(s2.Orphans()) != 0 {
		t.Fatalf("orphans %+v", s2.Orphans())
	}
}

func TestClaimIsAtomicInProcess(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	const racers = 32
	var wg sync.WaitGroup
	results := make(chan opstate.ClaimStatus, racers)
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, st, err := s.Claim(opstate.Patch, "p1", opstate.ClaimInfo{Mode: "apply"})
			if err != nil {
				t.Error(err)
			}
			results <- st
		}()
	}
	wg.Wait()
	close(results)
	claimed := 0
	for st := range results {
		if st == opstate.Claimed {
			claimed++
		} else if st != opstate.Held {
			t.Errorf("status %v", st)
		}
	}
	if claimed != 1 {
		t.Fatalf("%d racers claimed the same id", claimed)
	}
}

func TestRunningLeftByAStopIsAnOrphan(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	mustClaim(t, s, opstate.Reboot, "rb1", opstate.Claimed)
	if _, err := s.Start(opstate.Reboot, "rb1"); err != nil {
		t.Fatal(err)
	}
	if len(s.Orphans()) != 0 {
		t.Fatal("a held running entry is not an orphan")
	}
	if err := s.Acknowledge("rb1"); err != nil {
		t.Fatal(err)
	}
	s.Release(opstate.Reboot, "rb1") // the process stops mid-run
	_ = s.Close()

	s2 := open(t, dir, nil)
	orphans := s2.Orphans()
	if len(orphans) != 1 || orphans[0].ID != "rb1" || orphans[0].Acknowledged.IsZero() {
		t.Fatalf("orphans %+v", orphans)
	}
	mustClaim(t, s2, opstate.Reboot, "rb1", opstate.Handled)
	if err := s2.Finish(opstate.Reboot, "rb1", opstate.Outcome{State: opstate.Failed, Note: "n", Report: "r"}); err != nil {
		t.Fatal(err)
	}
	if p := s2.PendingReports(); len(p) != 1 || p[0].Report != "r" {
		t.Fatalf("pending reports %+v", p)
	}
	if err := s2.Reported(opstate.Reboot, "rb1"); err != nil {
		t.Fatal(err)
	}
	if p := s2.PendingReports(); len(p) != 0 {
		t.Fatalf("pending reports after Reported %+v", p)
	}
}

func TestTransitions(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"start unknown", func() error { _, err := s.Start(opstate.Patch, "nope"); return err }, opstate.ErrNotHeld},
		{"acknowledge unknown", func() error { return s.Acknowledge("nope") }, opstate.ErrUnknown},
		{"finish unknown", func() error { return s.Finish(opstate.Patch, "nope", opstate.Outcome{State: opstate.Done}) }, opstate.ErrUnknown},
		{"finish not final", func() error {
			return s.Finish(opstate.Patch, "nope", opstate.Outcome{State: opstate.Running})
		}, errAny},
		{"claim bad id", func() error { _, _, err := s.Claim(opstate.Patch, "a/b", opstate.ClaimInfo{}); return err }, errAny},
		{"claim bad kind", func() error { _, _, err := s.Claim("sbom", "a", opstate.ClaimInfo{}); return err }, errAny},
		{"own bad id", func() error { return s.MarkOwn("x y") }, errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil || (tc.want != errAny && !errors.Is(err, tc.want)) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestSkipWhileQueued(t *testing.T) {
	s := open(t, t.TempDir(), nil)
	mustClaim(t, s, opstate.Investigation, "inv1", opstate.Claimed)
	ok, err := s.Skip(opstate.Investigation, "inv1", "completed on the backend")
	if err != nil || !ok {
		t.Fatalf("skip %v %v", ok, err)
	}
	if _, err := s.Start(opstate.Investigation, "inv1"); !errors.Is(err, opstate.ErrNotReceived) {
		t.Fatalf("start after skip: %v", err)
	}
	s.Release(opstate.Investigation, "inv1")
	mustClaim(t, s, opstate.Investigation, "inv1", opstate.Handled)
	if ok, _ := s.Skip(opstate.Investigation, "unknown", "x"); ok {
		t.Fatal("skipped an unknown id")
	}
}

func TestMarkOwn(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if err := s.MarkOwn("own1"); err != nil {
		t.Fatal(err)
	}
	mustClaim(t, s, opstate.Investigation, "queued", opstate.Claimed)
	if err := s.MarkOwn("queued"); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	s2 := open(t, dir, nil)
	for _, id := range []string{"own1", "queued"} {
		if !s2.Own(id) {
			t.Errorf("%s not own after reopen", id)
		}
		mustClaim(t, s2, opstate.Investigation, id, opstate.Handled)
	}
	if s2.Own("other") {
		t.Error("unknown id reported own")
	}
}

func TestPrune(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	s, err := opstate.Open(opstate.Options{Dir: dir, Now: c.Now, MaxAge: 30 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"done", "listed", "running", "report", "waiting"} {
		mustClaim(t, s, opstate.Patch, id, opstate.Claimed)
	}
	for _, id := range []string{"done", "listed"} {
		if err := s.Finish(opstate.Patch, id, opstate.Outcome{State: opstate.Done}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Finish(opstate.Patch, "report", opstate.Outcome{State: opstate.Failed, Report: "not told yet"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(opstate.Patch, "running"); err != nil {
		t.Fatal(err)
	}
	s.Release(opstate.Patch, "waiting")
	c.Advance(20 * 24 * time.Hour)
	if err := s.Touch(opstate.Patch, []string{"listed"}); err != nil {
		t.Fatal(err)
	}
	c.Advance(11 * 24 * time.Hour)
	n, err := s.Prune()
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("pruned %d, want 2 (done, waiting)", n)
	}
	var ids []string
	for _, e := range s.Entries() {
		ids = append(ids, e.ID)
	}
	if strings.Join(ids, ",") != "listed,report,running" {
		t.Errorf("kept %v", ids)
	}
	_ = s.Close()
	// Pruning also happens at Open.
	c.Advance(40 * 24 * time.Hour)
	s2 := open(t, dir, c.Now)
	if got := len(s2.Entries()); got != 2 {
		t.Errorf("after reopen 40 days later: %d entries, want the running one and the unreported one", got)
	}
}

func TestTouchWritesRarely(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	s := open(t, dir, c.Now)
	mustClaim(t, s, opstate.Investigation, "i1", opstate.Claimed)
	stat := func() time.Time {
		fi, err := os.Stat(filepath.Join(dir, opstate.FileName))
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}
	if err := s.Touch(opstate.Investigation, []string{"i1"}); err != nil {
		t.Fatal(err)
	}
	first := stat()
	time.Sleep(20 * time.Millisecond)
	c.Advance(time.Hour)
	if err := s.Touch(opstate.Investigation, []string{"i1"}); err != nil {
		t.Fatal(err)
	}
	if !stat().Equal(first) {
		t.Error("a touch within a day rewrote the file")
	}
}

func TestLastCatchUpPersistsPerKind(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if !s.LastCatchUp(opstate.Patch).IsZero() {
		t.Fatal("fresh store has a catch-up time")
	}
	if err := s.SetLastCatchUp(opstate.Patch, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.SetLastCatchUp(opstate.Patch, t0.Add(-time.Hour)); err != nil || !s.LastCatchUp(opstate.Patch).Equal(t0) {
		t.Fatalf("went backwards: %v %v", s.LastCatchUp(opstate.Patch), err)
	}
	if err := s.SetLastCatchUp("sbom", t0); err == nil {
		t.Fatal("unknown kind accepted")
	}
	_ = s.Close()
	s2 := open(t, dir, nil)
	if got := s2.LastCatchUp(opstate.Patch); !got.Equal(t0) {
		t.Fatalf("after reopen %v", got)
	}
	// A kind never caught up stays unknown: its backlog's age is unknown.
	if got := s2.LastCatchUp(opstate.Reboot); !got.IsZero() {
		t.Fatalf("reboot mark %v", got)
	}
}

func TestStateFileIsWrittenAtomically(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	for _, id := range []string{"a", "b", "c"} {
		mustClaim(t, s, opstate.Investigation, id, opstate.Claimed)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if strings.Contains(n.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", n.Name())
		}
	}
	path := filepath.Join(dir, opstate.FileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	snap, err := opstate.Decode(data)
	if err != nil || len(snap.Entries) != 3 {
		t.Fatalf("decode written file: %v %+v", err, snap)
	}
}

func TestSecondProcessIsLockedOut(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	if _, err := opstate.Open(opstate.Options{Dir: dir}); !errors.Is(err, opstate.ErrLocked) {
		t.Fatalf("second open: %v", err)
	}
	_ = s.Close()
	s2, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	_ = s2.Close()
	if _, _, err := s.Claim(opstate.Patch, "x", opstate.ClaimInfo{}); !errors.Is(err, opstate.ErrClosed) {
		t.Fatalf("claim on closed store: %v", err)
	}
}

func TestCorruptFileIsKeptAside(t *testing.T) {
	valid := `{"version":1,"entries":[{"kind":"patch","id":"p1","state":"done","first_seen":"2026-11-25T21:40:00Z"}]}`
	tests := []struct {
		name, content, wantErr string
	}{
		{"garbage", "\x00\x01garbage", "not a json object"},
		{"truncated", valid[:60], "unexpected EOF"},
		{"empty", "  \n", "empty"},
		{"newer version", strings.Replace(valid, `"version":1`, `"version":2`, 1), "version 2"},
		{"unknown field", strings.Replace(valid, `"id":"p1"`, `"id":"p1","x":1`, 1), "unknown field"},
		{"bad state", strings.Replace(valid, `"done"`, `"exploded"`, 1), "unknown state"},
		{"bad id", strings.Replace(valid, `"p1"`, `"../p1"`, 1), "malformed"},
		{"duplicate", strings.Replace(valid, `]}`, `,{"kind":"patch","id":"p1","state":"done","first_seen":"2026-11-25T21:40:00Z"}]}`, 1), "twice"},
		{"trailing", valid + "{}", "trailing"},
		{"no entries", `{"version":1}`, "no entries"},
		{"catch-up mark of unknown kind", strings.Replace(valid, `"entries"`, `"last_catch_up":{"sbom":"2026-11-25T21:40:00Z"},"entries"`, 1), "unknown kind"},
		{"catch-up mark as a string", strings.Replace(valid, `"entries"`, `"last_catch_up":"2026-11-25T21:40:00Z","entries"`, 1), "cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, opstate.FileName)
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			s := open(t, dir, nil)
			err := s.Degraded()
			var ce *opstate.CorruptError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("degraded = %v, want a CorruptError containing %q", err, tc.wantErr)
			}
			kept, rerr := os.ReadFile(ce.Path)
			if rerr != nil || !bytes.Equal(kept, []byte(tc.content)) {
				t.Fatalf("corrupt file not kept verbatim at %s: %v", ce.Path, rerr)
			}
			if len(s.Entries()) != 0 {
				t.Fatal("entries from a corrupt file")
			}
			// The store works, and stays degraded across a restart until
			// the set-aside file is removed.
			mustClaim(t, s, opstate.Patch, "p2", opstate.Claimed)
			_ = s.Close()
			s2 := open(t, dir, nil)
			if s2.Degraded() == nil {
				t.Fatal("not degraded after restart while the corrupt file is kept")
			}
			if _, ok := s2.Get(opstate.Patch, "p2"); !ok {
				t.Fatal("entry written after the corruption lost")
			}
			if err := os.Remove(ce.Path); err != nil {
				t.Fatal(err)
			}
			if err := s2.Degraded(); err != nil {
				t.Fatalf("still degraded after the operator removed the file: %v", err)
			}
		})
	}
}

// A full disk: the claim fails and nothing is recorded, so the operation
// is not run and a later catch-up claims it again.
func TestClaimFailsOnFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=12k,mode=0700"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	s, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var failedAt int
	for i := range 1000 {
		id := "id" + strings.Repeat("x", 40) + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('a'+i/676))
		if _, _, err := s.Claim(opstate.Investigation, id, opstate.ClaimInfo{}); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("claim error %v, want ENOSPC", err)
			}
			if _, ok := s.Get(opstate.Investigation, id); ok {
				t.Fatal("a claim that could not be written was recorded")
			}
			failedAt = i
			break
		}
	}
	if failedAt == 0 {
		t.Fatal("the disk never filled")
	}
	before := len(s.Entries())
	_ = s.Close()
	s2, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if got := len(s2.Entries()); got != before {
		t.Fatalf("after the failed write the file has %d entries, memory had %d", got, before)
	}
}

// Concurrent changes share fsyncs (group commit) and every one of them is
// on disk when its call returns.
func TestConcurrentChangesAreAllDurable(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, nil)
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "op" + string(rune('a'+i))
			if _, st, err := s.Claim(opstate.Patch, id, opstate.ClaimInfo{}); err != nil || st != opstate.Claimed {
				t.Errorf("claim %s: %v %v", id, st, err)
				return
			}
			if _, err := s.Start(opstate.Patch, id); err != nil {
				t.Error(err)
			}
			data, err := os.ReadFile(filepath.Join(dir, opstate.FileName))
			if err != nil || !bytes.Contains(data, []byte(`"id": "`+id+`",`+"\n"+`   "state": "running"`)) {
				t.Errorf("%s not running on disk when Start returned: %v", id, err)
			}
		}()
	}
	wg.Wait()
	res := s.ClaimAll([]opstate.ClaimRequest{{Kind: opstate.Patch, ID: "opa"}, {Kind: opstate.Patch, ID: "new1"}, {Kind: opstate.Patch, ID: "new2"}, {Kind: "x", ID: "y"}})
	if res[0].Status != opstate.Held || res[1].Status != opstate.Claimed || res[2].Status != opstate.Claimed || res[3].Err == nil {
		t.Fatalf("claim all: %+v", res)
	}
	_ = s.Close()
	s2 := open(t, dir, nil)
	if got := len(s2.Orphans()); got != n {
		t.Fatalf("%d running entries after reopen, want %d", got, n)
	}
	if _, ok := s2.Get(opstate.Patch, "new2"); !ok {
		t.Fatal("batch claim not on disk")
	}
}
