package opstate

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configure a Store.
type Options struct {
	// Dir is the state directory (created 0700 if missing).
	Dir string
	// MaxAge prunes entries with no activity for this long (default 30
	// days). Running entries and entries still listed by catch-ups stay.
	MaxAge time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DefaultMaxAge is how long a finished entry is kept.
const DefaultMaxAge = 30 * 24 * time.Hour

// listedStep is how far LastListed must move before it is written again:
// it only keeps entries from being pruned, so a day's precision is plenty
// and a catch-up every minute does not rewrite the file.
const listedStep = 24 * time.Hour

// Errors of the state transitions.
var (
	ErrClosed      = errors.New("operation state store closed")
	ErrNotHeld     = errors.New("operation not claimed by this process")
	ErrNotReceived = errors.New("operation is no longer waiting to start")
	ErrUnknown     = errors.New("operation not recorded")
	ErrLocked      = errors.New("state directory is in use by another process")
)

// Store is the record of handled operations. It is safe for concurrent
// use; every change is on disk before the method returns.
type Store struct {
	dir    string
	path   string
	maxAge time.Duration
	now    func() time.Time
	lock   *os.File

	// wmu serializes file writes; written is the last gen on disk.
	wmu     sync.Mutex
	written uint64

	mu          sync.Mutex
	gen         uint64
	entries     map[key]*Entry
	held        map[key]bool
	lastCatchUp map[Kind]time.Time
	corrupt     *CorruptError
	closed      bool
}

// Open locks dir and loads its state file. A corrupt file is set aside
// (see Degraded) and the store starts empty; only I/O failures and a
// directory locked by another process are errors.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("opstate: no state directory")
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("opstate: %w", err)
	}
	lock, err := lockDir(opts.Dir)
	if err != nil {
		return nil, err
	}
	s := &Store{dir: opts.Dir, path: filepath.Join(opts.Dir, FileName), maxAge: opts.MaxAge, now: opts.Now,
		lock: lock, entries: map[key]*Entry{}, held: map[key]bool{}, lastCatchUp: map[Kind]time.Time{}}
	if err := s.load(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	if _, err := s.Prune(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return s, nil
}

func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opstate: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("opstate %s: %w", dir, ErrLocked)
		}
		return nil, fmt.Errorf("opstate: lock %s: %w", path, err)
	}
	return f, nil
}

func (s *Store) load() error {
	data, err := readFile(s.path)
	if err != nil {
		return fmt.Errorf("opstate: %w", err)
	}
	if data == nil {
		return nil
	}
	snap, derr := Decode(data)
	if derr != nil {
		aside, err := setAside(s.path, s.now())
		if err != nil {
			return fmt.Errorf("opstate: %w (after: %v)", err, derr)
		}
		s.corrupt = &CorruptError{Path: aside, Err: derr}
		return nil
	}
	for k, t := range snap.LastCatchUp {
		s.lastCatchUp[k] = t
	}
	for i := range snap.Entries {
		e := snap.Entries[i]
		s.entries[key{e.Kind, e.ID}] = &e
	}
	return nil
}

// Close releases the directory lock. Later calls fail with ErrClosed.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Close()
}

// Dir returns the state directory.
func (s *Store) Dir() string { return s.dir }

// Degraded returns why the store cannot vouch for what ran before: a
// corrupt state file was found at Open or is still kept in the directory.
// It is nil once an operator has removed every set-aside file.
func (s *Store) Degraded() error {
	files, err := corruptFiles(s.dir)
	if err != nil || len(files) == 0 {
		return nil
	}
	s.mu.Lock()
	c := s.corrupt
	s.mu.Unlock()
	if c != nil && slices.Contains(files, c.Path) {
		return c
	}
	return &CorruptError{Path: files[len(files)-1], Err: errors.New("set aside by an earlier start")}
}

// Writes are group-committed: a change bumps gen under mu; commit then
// writes the whole state unless a write that started after the change has
// already put it on disk. Changes that queue up behind one slow fsync share
// the next one.

// changedLocked notes a change; the caller holds s.mu and passes the
// result to commit after unlocking.
func (s *Store) changedLocked() uint64 {
	s.gen++
	return s.gen
}

// commit makes every change up to gen durable.
func (s *Store) commit(gen uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.written >= gen {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	cur := s.gen
	snap := Snapshot{LastCatchUp: maps.Clone(s.lastCatchUp), Entries: make([]Entry, 0, len(s.entries))}
	for _, e := range s.entries {
		snap.Entries = append(snap.Entries, *e)
	}
	s.mu.Unlock()
	data, err := Encode(snap)
	if err != nil {
		return err
	}
	if err := writeAtomic(s.path, data); err != nil {
		return fmt.Errorf("opstate: %w", err)
	}
	s.written = cur
	return nil
}

// ClaimInfo is what the caller knows about an operation when it claims it.
type ClaimInfo struct {
	// NotBefore: the record did not exist before this time (zero = unknown).
	NotBefore time.Time
	// Mode and LXCID describe a patch or reboot for recovery.
	Mode  string
	LXCID string
}

// ClaimStatus is the answer of Claim.
type ClaimStatus int

const (
	// Claimed: this caller holds the operation and may start it.
	Claimed ClaimStatus = iota
	// Held: another path of this process holds it.
	Held
	// Handled: it ran, runs (maybe in a process that crashed) or was
	// skipped; never start it.
	Handled
)

func (c ClaimStatus) String() string {
	switch c {
	case Claimed:
		return "claimed"
	case Held:
		return "held"
	case Handled:
		return "handled"
	}
	return "unknown"
}

// Claim takes hold of an operation. A new id is recorded as Received (on
// disk before Claim returns); an id already Received and not held is taken
// again (it never started: the process stopped or its queue was full).
// Anything else is Held or Handled and must not be started.
func (s *Store) Claim(kind Kind, id string, info ClaimInfo) (Entry, ClaimStatus, error) {
	r := s.ClaimAll([]ClaimRequest{{Kind: kind, ID: id, Info: info}})[0]
	return r.Entry, r.Status, r.Err
}

// ClaimRequest names an operation to claim.
type ClaimRequest struct {
	Kind Kind
	ID   string
	Info ClaimInfo
}

// ClaimResult is the answer for one ClaimRequest; on Err the operation is
// not claimed (Status is Handled) and must not be started.
type ClaimResult struct {
	Entry  Entry
	Status ClaimStatus
	Err    error
}

// ClaimAll claims several operations with one write (a catch-up's list),
// each as Claim would.
func (s *Store) ClaimAll(reqs []ClaimRequest) []ClaimResult {
	out := make([]ClaimResult, len(reqs))
	var fresh []int
	s.mu.Lock()
	for i, r := range reqs {
		out[i] = s.claimLocked(r)
		if out[i].Err == nil && out[i].Status == Claimed && out[i].Entry.FirstSeen.IsZero() {
			fresh = append(fresh, i)
		}
	}
	var gen uint64
	if len(fresh) > 0 {
		now := s.now()
		for _, i := range fresh {
			e := s.entries[key{reqs[i].Kind, reqs[i].ID}]
			e.FirstSeen = now
			out[i].Entry = *e
		}
		gen = s.changedLocked()
	}
	s.mu.Unlock()
	if len(fresh) == 0 {
		return out
	}
	if err := s.commit(gen); err != nil {
		s.mu.Lock()
		for _, i := range fresh {
			k := key{reqs[i].Kind, reqs[i].ID}
			delete(s.entries, k)
			delete(s.held, k)
			out[i] = ClaimResult{Status: Handled, Err: err}
		}
		s.mu.Unlock()
	}
	return out
}

// claimLocked decides one claim; a new entry gets a zero FirstSeen, which
// ClaimAll fills in and commits.
func (s *Store) claimLocked(r ClaimRequest) ClaimResult {
	if !r.Kind.valid() || !ValidID(r.ID) {
		return ClaimResult{Status: Handled, Err: fmt.Errorf("opstate: claim %q/%q: malformed", clip(string(r.Kind)), clip(r.ID))}
	}
	if s.closed {
		return ClaimResult{Status: Handled, Err: ErrClosed}
	}
	k := key{r.Kind, r.ID}
	e, ok := s.entries[k]
	switch {
	case s.held[k]:
		return ClaimResult{Entry: *e, Status: Held}
	case ok && e.State != Received:
		return ClaimResult{Entry: *e, Status: Handled}
	case ok:
		s.held[k] = true
		return ClaimResult{Entry: *e, Status: Claimed}
	}
	e = &Entry{Kind: r.Kind, ID: r.ID, State: Received, NotBefore: r.Info.NotBefore, Mode: r.Info.Mode, LXCID: r.Info.LXCID}
	if e.LXCID != "" && !ValidID(e.LXCID) {
		e.LXCID = ""
	}
	if len(e.Mode) > 32 {
		e.Mode = e.Mode[:32]
	}
	s.entries[k] = e
	s.held[k] = true
	return ClaimResult{Entry: *e, Status: Claimed}
}

// Start moves a held, Received operation to Running, on disk, before the
// caller runs it. ErrNotReceived means it was skipped meanwhile (an update
// from the backend); the caller then releases it.
func (s *Store) Start(kind Kind, id string) (Entry, error) {
	k := key{kind, id}
	s.mu.Lock()
	e, ok := s.entries[k]
	switch {
	case s.closed:
		s.mu.Unlock()
		return Entry{}, ErrClosed
	case !ok || !s.held[k]:
		s.mu.Unlock()
		return Entry{}, ErrNotHeld
	case e.State != Received:
		st := e.State
		s.mu.Unlock()
		return Entry{}, fmt.Errorf("%w (%s)", ErrNotReceived, st)
	}
	e.State, e.Started = Running, s.now()
	started, gen := *e, s.changedLocked()
	s.mu.Unlock()
	if err := s.commit(gen); err != nil {
		s.mu.Lock()
		if e.State == Running {
			e.State, e.Started = Received, time.Time{}
			s.changedLocked()
		}
		s.mu.Unlock()
		return Entry{}, err
	}
	return started, nil
}

// Outcome is how an operation ended.
type Outcome struct {
	// State is Done, Failed or Skipped.
	State State
	// Note says why (failed, skipped).
	Note string
	// Report is a reason the backend must still be told ("" = nothing).
	Report string
}

// Finish records a Received or Running operation's final state and
// releases it. If the write fails the state still changes in memory (the
// operation must not run again in this process) and the error is returned;
// the next successful write carries it.
func (s *Store) Finish(kind Kind, id string, o Outcome) error {
	if !o.State.Final() {
		return fmt.Errorf("opstate: finish %s/%s with state %q", kind, id, o.State)
	}
	k := key{kind, id}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	e, ok := s.entries[k]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("opstate: finish %s/%s: %w", kind, id, ErrUnknown)
	}
	delete(s.held, k)
	if e.State.Final() {
		s.mu.Unlock()
		return nil
	}
	e.State, e.Finished = o.State, s.now()
	e.Note, e.Report = cutNote(o.Note), cutNote(o.Report)
	gen := s.changedLocked()
	s.mu.Unlock()
	return s.commit(gen)
}

// Release drops this process's hold without changing the state: a
// Received operation can be claimed again, a Running one is left for
// recovery (the process is stopping mid-run).
func (s *Store) Release(kind Kind, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, key{kind, id})
}

// Skip marks an operation that is still waiting (Received, held or not)
// Skipped, e.g. because the backend moved it on. It reports whether it did;
// unknown or started operations are left alone.
func (s *Store) Skip(kind Kind, id string, note string) (bool, error) {
	s.mu.Lock()
	e, ok := s.entries[key{kind, id}]
	if s.closed || !ok || e.State != Received {
		s.mu.Unlock()
		return false, nil
	}
	e.State, e.Finished, e.Note = Skipped, s.now(), cutNote(note)
	gen := s.changedLocked()
	s.mu.Unlock()
	return true, s.commit(gen)
}

// MarkOwn records an investigation this worker created itself, so that
// neither its echo on the stream nor a catch-up (whose answers lose
// metadata.initiated_by) ever starts it. An id not yet started becomes
// Skipped; one already running is left alone (it cannot be ours).
func (s *Store) MarkOwn(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("opstate: own investigation id %q malformed", clip(id))
	}
	k := key{Investigation, id}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	now := s.now()
	e, ok := s.entries[k]
	if !ok {
		e = &Entry{Kind: Investigation, ID: id, State: Skipped, FirstSeen: now, Finished: now, Note: "created by this worker"}
		s.entries[k] = e
	} else if e.State == Received {
		e.State, e.Finished, e.Note = Skipped, now, "created by this worker"
	}
	e.Own = true
	gen := s.changedLocked()
	s.mu.Unlock()
	return s.commit(gen)
}

// Own reports an investigation recorded with MarkOwn.
func (s *Store) Own(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key{Investigation, id}]
	return ok && e.Own
}

// Acknowledge records, on disk, that a running reboot is about to be
// acknowledged to the backend. Call it right before the acknowledge call:
// recovery then counts the reboot done only if the host booted after it.
func (s *Store) Acknowledge(id string) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	e, ok := s.entries[key{Reboot, id}]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("opstate: acknowledge reboot %s: %w", id, ErrUnknown)
	}
	if e.State != Running {
		st := e.State
		s.mu.Unlock()
		return fmt.Errorf("opstate: acknowledge reboot %s in state %s", id, st)
	}
	prev, now := e.Acknowledged, s.now()
	e.Acknowledged = now
	gen := s.changedLocked()
	s.mu.Unlock()
	if err := s.commit(gen); err != nil {
		s.mu.Lock()
		if e.Acknowledged.Equal(now) {
			e.Acknowledged = prev
			s.changedLocked()
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// Orphans lists Running operations no path of this process holds: those a
// previous process left when it stopped or crashed mid-run.
func (s *Store) Orphans() []Entry {
	return s.filter(func(k key, e *Entry) bool { return e.State == Running && !s.held[k] })
}

// PendingReports lists operations whose failure or skip the backend has
// not been told yet.
func (s *Store) PendingReports() []Entry {
	return s.filter(func(k key, e *Entry) bool { return e.Report != "" && !s.held[k] })
}

// Reported clears an operation's pending report.
func (s *Store) Reported(kind Kind, id string) error {
	s.mu.Lock()
	e, ok := s.entries[key{kind, id}]
	if s.closed || !ok || e.Report == "" {
		s.mu.Unlock()
		return nil
	}
	e.Report = ""
	gen := s.changedLocked()
	s.mu.Unlock()
	return s.commit(gen)
}

// Touch notes that a catch-up still listed these operations as open, which
// keeps them from being pruned. It writes at most about once a day.
func (s *Store) Touch(kind Kind, ids []string) error {
	s.mu.Lock()
	now, dirty := s.now(), false
	for _, id := range ids {
		if e, ok := s.entries[key{kind, id}]; ok && now.Sub(e.LastListed) >= listedStep {
			e.LastListed, dirty = now, true
		}
	}
	if !dirty || s.closed {
		s.mu.Unlock()
		return nil
	}
	gen := s.changedLocked()
	s.mu.Unlock()
	return s.commit(gen)
}

// LastCatchUp returns when the last complete catch-up of kind started
// (zero: never on this state).
func (s *Store) LastCatchUp(kind Kind) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastCatchUp[kind]
}

// SetLastCatchUp records that a complete catch-up of kind started at t.
// Kinds are separate because a kind the worker did not list (no handler
// yet) must not look caught up once it gets one.
func (s *Store) SetLastCatchUp(kind Kind, t time.Time) error {
	if !kind.valid() || t.IsZero() {
		return fmt.Errorf("opstate: catch-up mark %q at %v", clip(string(kind)), t)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	prev, had := s.lastCatchUp[kind]
	if !t.After(prev) {
		s.mu.Unlock()
		return nil
	}
	s.lastCatchUp[kind] = t
	gen := s.changedLocked()
	s.mu.Unlock()
	if err := s.commit(gen); err != nil {
		s.mu.Lock()
		if s.lastCatchUp[kind].Equal(t) {
			if had {
				s.lastCatchUp[kind] = prev
			} else {
				delete(s.lastCatchUp, kind)
			}
			s.changedLocked()
		}
		s.mu.Unlock()
		return err
	}
	return nil
}

// Prune removes entries with no activity for MaxAge, except Running ones,
// held ones and those with a report still pending, and returns how many
// it removed.
func (s *Store) Prune() (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, ErrClosed
	}
	cutoff := s.now().Add(-s.maxAge)
	n := 0
	for k, e := range s.entries {
		if e.State == Running || s.held[k] || e.Report != "" || !e.lastActivity().Before(cutoff) {
			continue
		}
		delete(s.entries, k)
		n++
	}
	if n == 0 {
		s.mu.Unlock()
		return 0, nil
	}
	gen := s.changedLocked()
	s.mu.Unlock()
	return n, s.commit(gen)
}

// Get returns an operation's entry.
func (s *Store) Get(kind Kind, id string) (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key{kind, id}]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Entries returns every entry, sorted by kind and id.
func (s *Store) Entries() []Entry {
	return s.filter(func(key, *Entry) bool { return true })
}

func (s *Store) filter(keep func(key, *Entry) bool) []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for k, e := range s.entries {
		if keep(k, e) {
			out = append(out, *e)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}
