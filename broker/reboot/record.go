package reboot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// RecordName is the file, inside the broker's state directory, that holds
// the last host reboot the broker started.
const RecordName = "last-host-reboot.json"

// recordVersion is the format written; another version is refused.
const recordVersion = 1

// maxRecordBytes bounds the record file.
const maxRecordBytes = 4096

// Record is the last host reboot the broker started.
type Record struct {
	Version int `json:"version"`
	// At is when the broker started the reboot command.
	At time.Time `json:"at"`
	// RebootID is the backend's operation id.
	RebootID string `json:"reboot_id"`
}

// DecodeRecord parses a record file strictly: one JSON object of the
// current version, no unknown fields, a time and an id.
func DecodeRecord(data []byte) (Record, error) {
	if len(data) > maxRecordBytes {
		return Record{}, fmt.Errorf("larger than %d bytes", maxRecordBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var r Record
	if err := dec.Decode(&r); err != nil {
		return Record{}, fmt.Errorf("not a reboot record: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Record{}, errors.New("trailing data after the record")
	}
	switch {
	case r.Version != recordVersion:
		return Record{}, fmt.Errorf("version %d, this broker reads version %d", r.Version, recordVersion)
	case r.At.IsZero():
		return Record{}, errors.New("no time")
	case !ValidID(r.RebootID):
		return Record{}, errors.New("no valid reboot id")
	}
	return r, nil
}

// stateDir is the broker's own state directory: root's (the broker's
// account's) alone, never the worker's.
type stateDir struct {
	path string
}

// check refuses a directory another account could write or read: the
// loop guard is only as good as the record nobody else can change.
func (d stateDir) check() error {
	if d.path == "" {
		return errNoStateDir
	}
	fi, err := os.Lstat(d.path)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory", d.path)
	case !ok || int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%s is not owned by the broker's account (uid %d)", d.path, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("%s has mode %v; it must be 0700", d.path, fi.Mode().Perm())
	}
	return nil
}

// errNoStateDir: a broker started without a state directory has nowhere
// to keep the loop guard's record, so it refuses host reboots.
var errNoStateDir = errors.New("the broker has no state directory (--state-dir)")

// ensure creates the directory 0700 if it is missing, then checks it.
func (d stateDir) ensure() error {
	if d.path == "" {
		return errNoStateDir
	}
	if err := os.Mkdir(d.path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("state directory: %w", err)
	}
	return d.check()
}

// last reads the record; ok is false when there is none yet.
func (d stateDir) last() (rec Record, ok bool, err error) {
	if err := d.check(); err != nil {
		return Record{}, false, err
	}
	p := filepath.Join(d.path, RecordName)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecordBytes+1))
	if err != nil {
		return Record{}, false, fmt.Errorf("%s: %w", p, err)
	}
	rec, err = DecodeRecord(data)
	if err != nil {
		return Record{}, false, fmt.Errorf("%s: %w", p, err)
	}
	return rec, true, nil
}

// write replaces the record atomically and durably: the host may go down
// a moment later, and the record must survive that.
func (d stateDir) write(rec Record) error {
	if err := d.ensure(); err != nil {
		return err
	}
	rec.Version = recordVersion
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d.path, RecordName+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.path, RecordName)); err != nil {
		return err
	}
	dir, err := os.Open(d.path)
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// ValidID reports a backend operation id safe for logs and files: 1–64
// characters of A-Z, a-z, 0-9, '_' and '-'.
func ValidID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
