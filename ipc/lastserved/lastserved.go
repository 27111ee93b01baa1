// Package lastserved is the small record the broker keeps of when it last
// served each peer: the worker on the unix socket, or a worker in a VM
// guest over vsock. `nannyagent status` reads it on the host, where a
// worker that runs in a guest is out of the CLI's reach. The broker writes
// the file (root-only, replaced atomically); the CLI only reads it.
package lastserved

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"
)

// DefaultPath is where the broker keeps the record, in its own state
// directory.
const DefaultPath = "/var/lib/nannyagent-broker/served.json"

// Limits: the record is small by construction (a peer is an account or a
// guest the policy allows), and bounded anyway.
const (
	maxPeers     = 64
	maxFileBytes = 64 << 10
)

// Transports a peer may have used.
const (
	TransportUnix  = "unix"
	TransportVsock = "vsock"
)

// Peer is one peer the broker served and when it last did.
type Peer struct {
	Transport string `json:"transport"`
	// UID is a unix peer's uid.
	UID uint32 `json:"uid,omitempty"`
	// CID, Guest and Key describe a vsock peer: its context id, the
	// policy's name for it, and the pin of the key it proved.
	CID   uint32 `json:"cid,omitempty"`
	Guest string `json:"guest,omitempty"`
	Key   string `json:"key,omitempty"`

	FirstServed time.Time `json:"first_served"`
	LastServed  time.Time `json:"last_served"`
	LastRequest string    `json:"last_request"`
	Requests    uint64    `json:"requests"`
}

// id is what makes two sightings the same peer.
func (p Peer) id() string {
	if p.Transport == TransportVsock {
		return "vsock:" + strconv.FormatUint(uint64(p.CID), 10)
	}
	return p.Transport + ":" + strconv.FormatUint(uint64(p.UID), 10)
}

// Record is the file's content.
type Record struct {
	Version   int       `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	// Peers, most recently served first.
	Peers []Peer `json:"peers"`
}

// Decode reads a record strictly: version 1, known keys only, known
// transports, at most 64 peers.
func Decode(data []byte) (Record, error) {
	if len(data) > maxFileBytes {
		return Record{}, fmt.Errorf("served record: larger than %d bytes", maxFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("served record: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("served record: trailing data")
	}
	if r.Version != 1 {
		return Record{}, fmt.Errorf("served record: version %d (this reader knows 1)", r.Version)
	}
	if len(r.Peers) > maxPeers {
		return Record{}, fmt.Errorf("served record: %d peers, at most %d", len(r.Peers), maxPeers)
	}
	for _, p := range r.Peers {
		if p.Transport != TransportUnix && p.Transport != TransportVsock {
			return Record{}, fmt.Errorf("served record: unknown transport %q", p.Transport)
		}
	}
	return r, nil
}

// Read reads the record at path.
func Read(path string) (Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return Record{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return Record{}, fmt.Errorf("served record %s: %w", path, err)
	}
	return Decode(data)
}

// Write replaces the record at path atomically (a temporary file in the
// same directory, synced, then renamed), mode 0600.
func Write(path string, r Record) error {
	r.Version = 1
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("served record: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("served record: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("served record %s: %w", path, err)
	}
	return nil
}

// Tracker keeps the record in memory and writes it when it changed. Safe
// for concurrent use.
type Tracker struct {
	path string
	now  func() time.Time

	mu    sync.Mutex
	peers map[string]*Peer
	dirty bool
}

// NewTracker starts from the record at path, if there is a readable one
// (an unreadable or corrupt record is replaced; the error says why). An
// empty path keeps the record in memory only.
func NewTracker(path string) (*Tracker, error) {
	t := &Tracker{path: path, now: time.Now, peers: map[string]*Peer{}}
	if path == "" {
		return t, nil
	}
	r, err := Read(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return t, err
	}
	for _, p := range r.Peers {
		t.peers[p.id()] = &p
	}
	return t, nil
}

// Served notes that the broker answered a request from p (its Transport
// and identity fields; the times and counts are the tracker's).
func (t *Tracker) Served(p Peer, request string) {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.peers[p.id()]
	isNew := cur == nil
	if isNew {
		p.FirstServed, p.Requests = now, 0
		cur = &p
		t.peers[p.id()] = cur
	}
	// A guest may be renamed or move to a new key; the latest wins.
	cur.Guest, cur.Key = p.Guest, p.Key
	cur.LastServed, cur.LastRequest = now, request
	cur.Requests++
	t.dirty = true
	if isNew {
		t.evict()
	}
}

// evict drops the least recently served peers beyond the bound.
func (t *Tracker) evict() {
	for len(t.peers) > maxPeers {
		var oldest string
		for id, p := range t.peers {
			if oldest == "" || p.LastServed.Before(t.peers[oldest].LastServed) {
				oldest = id
			}
		}
		delete(t.peers, oldest)
	}
}

// Snapshot returns the record as it stands.
func (t *Tracker) Snapshot() Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := Record{Version: 1, UpdatedAt: t.now()}
	for _, p := range t.peers {
		r.Peers = append(r.Peers, *p)
	}
	slices.SortFunc(r.Peers, func(a, b Peer) int {
		return cmp.Or(b.LastServed.Compare(a.LastServed), cmp.Compare(a.id(), b.id()))
	})
	return r
}

// Flush writes the record if it changed since the last write.
func (t *Tracker) Flush() error {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = false
	t.mu.Unlock()
	if !dirty || t.path == "" {
		return nil
	}
	if err := Write(t.path, t.Snapshot()); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, then once more. Errors go to
// report (which may be nil).
func (t *Tracker) Run(ctx context.Context, every time.Duration, report func(error)) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	flush := func() {
		if err := t.Flush(); err != nil && report != nil {
			report(err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-tick.C:
			flush()
		}
	}
}
