package patch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// State is where a run stands.
type State string

// The states. A record is written Running before the script starts and
// moves to one of the others exactly once.
const (
	Running       State = "running"
	Finished      State = "finished"
	FailedToStart State = "failed_to_start"
	Interrupted   State = "interrupted"
)

func (s State) valid() bool {
	switch s {
	case Running, Finished, FailedToStart, Interrupted:
		return true
	}
	return false
}

// RunnerBroker marks a run that is a child of the broker process: it ends
// when that process does. (Runs in their own systemd unit, which survive
// the broker, will carry another runner and their unit's name.)
const RunnerBroker = "broker"

// Record is one patch run as kept in the state directory.
type Record struct {
	OperationID string   `json:"operation_id"`
	SHA256      string   `json:"sha256"`
	Name        string   `json:"name,omitempty"`
	Mode        Mode     `json:"mode"`
	Exclusions  []string `json:"exclusions,omitempty"`
	// Rule is the policy rule that allowed the run.
	Rule string `json:"rule"`
	// Argv is what ran: the interpreter, the sealed script's
	// /dev/fd/3, the arguments.
	Argv []string `json:"argv"`
	// Runner says what holds the run (RunnerBroker); BrokerPID is the
	// broker process that started it, Unit a systemd unit if any.
	Runner    string `json:"runner"`
	BrokerPID int    `json:"broker_pid"`
	Unit      string `json:"unit,omitempty"`

	State    State  `json:"state"`
	ExitCode int    `json:"exit_code"`
	Signal   string `json:"signal,omitempty"`
	TimedOut bool   `json:"timed_out,omitempty"`
	// Error says, in words for an operator, why the run failed to start,
	// was stopped or interrupted, or hit a limit.
	Error           string    `json:"error,omitempty"`
	StdoutTruncated bool      `json:"stdout_truncated,omitempty"`
	StderrTruncated bool      `json:"stderr_truncated,omitempty"`
	StartedAt       time.Time `json:"started_at"`
	FinishedAt      time.Time `json:"finished_at,omitzero"`

	// Stdout and Stderr are kept in files beside the record.
	Stdout []byte `json:"-"`
	Stderr []byte `json:"-"`
}

// maxRecordBytes bounds a record file; real ones are well under 4 KiB.
const maxRecordBytes = 64 << 10

// DecodeRecord parses and checks a record file.
func DecodeRecord(data []byte) (Record, error) {
	var r Record
	if len(data) > maxRecordBytes {
		return r, fmt.Errorf("record of %d bytes, at most %d", len(data), maxRecordBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("decode record: %w", err)
	}
	if dec.More() {
		return Record{}, errors.New("decode record: trailing data")
	}
	switch {
	case !ValidOperationID(r.OperationID):
		return Record{}, fmt.Errorf("record: operation id %q malformed", clip(r.OperationID))
	case !validSum(r.SHA256):
		return Record{}, fmt.Errorf("record %s: sha256 malformed", r.OperationID)
	case r.Mode != DryRun && r.Mode != Apply:
		return Record{}, fmt.Errorf("record %s: mode %q", r.OperationID, clip(string(r.Mode)))
	case !r.State.valid():
		return Record{}, fmt.Errorf("record %s: state %q", r.OperationID, clip(string(r.State)))
	case r.StartedAt.IsZero():
		return Record{}, fmt.Errorf("record %s: no start time", r.OperationID)
	}
	return r, nil
}

// store keeps records in <state dir>/patches/<operation id>/: record.json,
// stdout and stderr, each replaced atomically.
type store struct {
	dir  string
	lock *os.File
}

const (
	recordFile = "record.json"
	stdoutFile = "stdout"
	stderrFile = "stderr"
)

// openStore checks the state directory (creating it if it is missing) and
// its patches directory.
func openStore(stateDir string) (*store, error) {
	if !filepath.IsAbs(stateDir) {
		return nil, fmt.Errorf("state directory %q is not an absolute path", stateDir)
	}
	dir := filepath.Join(filepath.Clean(stateDir), "patches")
	for _, d := range []string{filepath.Clean(stateDir), dir} {
		if err := ownDir(d); err != nil {
			return nil, err
		}
	}
	// One broker per state directory: a second one would take the first
	// one's running records for leftovers of a dead process.
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("state directory %s is in use by another broker process: %w", stateDir, err)
	}
	return &store{dir: dir, lock: lock}, nil
}

// close releases the directory lock.
func (s *store) close() error { return s.lock.Close() }

// ownDir makes sure d is a directory only this process's user can use:
// not a link, owned by us, no access for group or others. Root never
// writes into a directory another account could change.
func ownDir(d string) error {
	if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create state directory %s: %w", d, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(d, &st); err != nil {
		return fmt.Errorf("state directory %s: %w", d, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("state directory %s is not a directory (a link?)", d)
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("state directory %s is owned by uid %d, not %d", d, st.Uid, os.Geteuid())
	case st.Mode&0o077 != 0:
		return fmt.Errorf("state directory %s has mode %04o; it must be 0700 (only its owner may use it)", d, st.Mode&0o7777)
	}
	return nil
}

func (s *store) runDir(op string) string { return filepath.Join(s.dir, op) }

// create makes the run's directory; fs.ErrExist means the operation has
// a record already.
func (s *store) create(r Record) error {
	if err := os.Mkdir(s.runDir(r.OperationID), 0o700); err != nil {
		return err
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	return s.save(r)
}

// save writes the record (not its output) atomically.
func (s *store) save(r Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record %s: %w", r.OperationID, err)
	}
	return writeAtomic(s.runDir(r.OperationID), recordFile, append(data, '\n'))
}

// saveOutput writes the run's output files, then the record.
func (s *store) saveOutput(r Record) error {
	dir := s.runDir(r.OperationID)
	if err := writeAtomic(dir, stdoutFile, r.Stdout); err != nil {
		return err
	}
	if err := writeAtomic(dir, stderrFile, r.Stderr); err != nil {
		return err
	}
	return s.save(r)
}

// load reads a record and, unless maxOutput is negative, its output;
// ErrNotFound when there is none.
func (s *store) load(op string, maxOutput int64) (Record, error) {
	dir := s.runDir(op)
	data, err := readCapped(filepath.Join(dir, recordFile), maxRecordBytes)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, err
	}
	r, err := DecodeRecord(data)
	if err != nil {
		return Record{}, fmt.Errorf("%s: %w", dir, err)
	}
	if r.OperationID != op {
		return Record{}, fmt.Errorf("%s: record names operation %s", dir, r.OperationID)
	}
	if maxOutput < 0 {
		return r, nil
	}
	for name, dst := range map[string]*[]byte{stdoutFile: &r.Stdout, stderrFile: &r.Stderr} {
		b, err := readCapped(filepath.Join(dir, name), maxOutput)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Record{}, err
		}
		*dst = b
	}
	return r, nil
}

// list returns every record, oldest start first; unreadable ones are
// returned as errors beside the list.
func (s *store) list() ([]Record, []error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []error{err}
	}
	var out []Record
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || !ValidOperationID(e.Name()) {
			continue
		}
		data, err := readCapped(filepath.Join(s.dir, e.Name(), recordFile), maxRecordBytes)
		if err == nil {
			var r Record
			if r, err = DecodeRecord(data); err == nil {
				out = append(out, r)
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", e.Name(), err))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out, errs
}

func (s *store) remove(op string) error { return os.RemoveAll(s.runDir(op)) }

// readCapped reads a regular file of at most max bytes, without following
// a link in its last component.
func readCapped(p string, max int64) ([]byte, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s is %d bytes, more than %d", p, fi.Size(), max)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// writeAtomic replaces dir/name with data: a temporary file written and
// fsynced, renamed over the old one, and the directory fsynced.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("replace %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
