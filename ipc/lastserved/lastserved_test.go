package lastserved

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestTrackerRecordsAndPersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "served.json")
	tr, err := NewTracker(path)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)}
	tr.now = c.now
	guest := Peer{Transport: TransportVsock, CID: 101, Guest: "pve-worker", Key: "sha256:aa"}
	tr.Served(guest, "Probe")
	c.t = c.t.Add(time.Minute)
	tr.Served(Peer{Transport: TransportUnix, UID: 0}, "CollectMetrics")
	c.t = c.t.Add(time.Minute)
	guest.Key = "sha256:bb" // rotated
	tr.Served(guest, "RunCommand")

	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("record file: %v %v, want mode 0600", err, fi)
	}
	r, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Peers) != 2 {
		t.Fatalf("peers %+v", r.Peers)
	}
	g := r.Peers[0] // most recently served first
	if g.CID != 101 || g.Guest != "pve-worker" || g.Key != "sha256:bb" || g.Requests != 2 || g.LastRequest != "RunCommand" ||
		!g.FirstServed.Equal(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)) || !g.LastServed.Equal(time.Date(2026, 5, 1, 10, 2, 0, 0, time.UTC)) {
		t.Errorf("guest %+v", g)
	}
	if u := r.Peers[1]; u.Transport != TransportUnix || u.UID != 0 || u.Requests != 1 {
		t.Errorf("unix peer %+v", u)
	}
	// A new broker (after an idle exit) carries the record on.
	tr2, err := NewTracker(path)
	if err != nil {
		t.Fatal(err)
	}
	tr2.Served(guest, "Probe")
	if s := tr2.Snapshot(); len(s.Peers) != 2 || s.Peers[0].Requests != 3 {
		t.Errorf("reloaded record %+v", s.Peers)
	}
	// Nothing new: no write.
	os.Remove(path)
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Error("a flush without news wrote the file")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".served.json.*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestTrackerBoundsItsPeers(t *testing.T) {
	tr, _ := NewTracker("")
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	tr.now = c.now
	for uid := uint32(0); uid < maxPeers+10; uid++ {
		c.t = c.t.Add(time.Second)
		tr.Served(Peer{Transport: TransportUnix, UID: uid}, "Probe")
	}
	s := tr.Snapshot()
	if len(s.Peers) != maxPeers || s.Peers[len(s.Peers)-1].UID != 10 {
		t.Errorf("%d peers, oldest uid %d; want %d, the 10 oldest dropped", len(s.Peers), s.Peers[len(s.Peers)-1].UID, maxPeers)
	}
	if err := tr.Flush(); err != nil {
		t.Errorf("an in-memory tracker must flush to nowhere: %v", err)
	}
}

func TestCorruptRecordIsReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "served.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := NewTracker(path)
	if err == nil {
		t.Error("a corrupt record must be reported")
	}
	tr.Served(Peer{Transport: TransportUnix, UID: 7}, "Probe")
	if err := tr.Flush(); err != nil {
		t.Fatal(err)
	}
	if r, err := Read(path); err != nil || len(r.Peers) != 1 {
		t.Errorf("record not replaced: %+v %v", r, err)
	}
}

func TestRunFlushesAndStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "served.json")
	tr, _ := NewTracker(path)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tr.Run(ctx, 10*time.Millisecond, func(err error) { t.Error(err) }) }()
	tr.Served(Peer{Transport: TransportUnix, UID: 1}, "Probe")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run never wrote the record")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr.Served(Peer{Transport: TransportUnix, UID: 2}, "Probe")
	cancel()
	<-done
	// The last news is written on the way out.
	if r, err := Read(path); err != nil || len(r.Peers) != 2 {
		t.Errorf("final flush: %+v %v", r, err)
	}
}

func TestDecodeRefuses(t *testing.T) {
	for name, tc := range map[string]struct{ data, want string }{
		"version":   {`{"version":2,"peers":[]}`, "version 2"},
		"unknown":   {`{"version":1,"peers":[],"extra":1}`, "unknown field"},
		"transport": {`{"version":1,"peers":[{"transport":"tcp"}]}`, `unknown transport "tcp"`},
		"trailing":  {`{"version":1,"peers":[]} {}`, "trailing data"},
		"too big":   {strings.Repeat(" ", maxFileBytes+1), "larger than"},
		"too many":  {`{"version":1,"peers":[` + strings.Repeat(`{"transport":"unix"},`, maxPeers) + `{"transport":"unix"}]}`, "at most 64"},
	} {
		if _, err := Decode([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"updated_at":"2026-05-01T10:00:00Z","peers":[{"transport":"vsock","cid":101,"guest":"g","key":"sha256:aa","first_served":"2026-05-01T10:00:00Z","last_served":"2026-05-01T10:00:00Z","last_request":"Probe","requests":3}]}`))
	f.Add([]byte(`{"version":1,"peers":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decode(data)
		if err != nil {
			return
		}
		if len(r.Peers) > maxPeers {
			t.Fatalf("%d peers accepted", len(r.Peers))
		}
		path := filepath.Join(t.TempDir(), "r.json")
		if err := Write(path, r); err != nil {
			t.Fatal(err)
		}
		if _, err := Read(path); err != nil {
			t.Fatalf("a decoded record does not survive a write: %v", err)
		}
	})
}
