package opstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names inside the state directory.
const (
	// FileName is the state file.
	FileName = "operations.json"
	// LockName is the lock file that keeps a second process out.
	LockName = "operations.lock"
	// corruptInfix marks a state file set aside because it was corrupt.
	corruptInfix = ".corrupt-"
)

// fileVersion is the format written; another version is refused.
const fileVersion = 1

// MaxFileBytes bounds the state file; a larger one is treated as corrupt.
const MaxFileBytes = 64 << 20

// maxEntries bounds the entries of one file.
const maxEntries = 1 << 20

// Snapshot is the decoded content of a state file.
type Snapshot struct {
	// LastCatchUp is, per kind, when the last complete catch-up of that
	// kind started (absent: never).
	LastCatchUp map[Kind]time.Time
	// Entries in file order.
	Entries []Entry
}

type fileData struct {
	Version     int                `json:"version"`
	LastCatchUp map[Kind]time.Time `json:"last_catch_up,omitempty"`
	Entries     []Entry            `json:"entries"`
}

// Decode parses a state file strictly: one JSON object of the current
// version, no unknown fields, every entry valid, no id twice. The error
// says what is wrong.
func Decode(data []byte) (Snapshot, error) {
	if len(data) > MaxFileBytes {
		return Snapshot{}, fmt.Errorf("state file larger than %d bytes", MaxFileBytes)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Snapshot{}, errors.New("state file is empty")
	}
	if trimmed[0] != '{' {
		return Snapshot{}, errors.New("state file is not a json object")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var f fileData
	if err := dec.Decode(&f); err != nil {
		return Snapshot{}, fmt.Errorf("state file: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Snapshot{}, errors.New("state file: trailing data after the object")
	}
	if f.Version != fileVersion {
		return Snapshot{}, fmt.Errorf("state file version %d, this worker reads version %d", f.Version, fileVersion)
	}
	if f.Entries == nil {
		return Snapshot{}, errors.New("state file has no entries array")
	}
	if len(f.Entries) > maxEntries {
		return Snapshot{}, fmt.Errorf("state file has more than %d entries", maxEntries)
	}
	for k, t := range f.LastCatchUp {
		if !k.valid() {
			return Snapshot{}, fmt.Errorf("state file: last_catch_up of unknown kind %q", clip(string(k)))
		}
		if t.IsZero() {
			return Snapshot{}, fmt.Errorf("state file: last_catch_up of %s is zero", k)
		}
	}
	seen := make(map[key]bool, len(f.Entries))
	for i := range f.Entries {
		e := &f.Entries[i]
		if err := e.check(); err != nil {
			return Snapshot{}, fmt.Errorf("state file entry %d: %w", i, err)
		}
		k := key{e.Kind, e.ID}
		if seen[k] {
			return Snapshot{}, fmt.Errorf("state file entry %d: %s/%s listed twice", i, e.Kind, e.ID)
		}
		seen[k] = true
	}
	return Snapshot{LastCatchUp: f.LastCatchUp, Entries: f.Entries}, nil
}

// Encode renders a snapshot in the file format (entries sorted by kind and
// id, so the file is stable).
func Encode(s Snapshot) ([]byte, error) {
	entries := slices.Clone(s.Entries)
	if entries == nil {
		entries = []Entry{}
	}
	slices.SortFunc(entries, func(a, b Entry) int {
		if c := strings.Compare(string(a.Kind), string(b.Kind)); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	data, err := json.MarshalIndent(fileData{Version: fileVersion, LastCatchUp: s.LastCatchUp, Entries: entries}, "", " ")
	if err != nil {
		return nil, fmt.Errorf("encode state: %w", err)
	}
	return append(data, '\n'), nil
}

// writeAtomic replaces path with data: temp file in the same directory,
// fsync, rename, fsync of the directory. A crash leaves either the old or
// the new file, never a torn one.
func writeAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err = tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: fsync: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// readFile reads the state file; (nil, nil) when there is none.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return data, nil
}

// CorruptError says a state file could not be decoded and where it was
// kept.
type CorruptError struct {
	// Path is where the corrupt file now is.
	Path string
	// Err is the decoding error.
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("operation state file was corrupt (%v); kept at %s: review it, then remove it to leave degraded mode", e.Err, e.Path)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// setAside renames a corrupt state file so it is kept, not overwritten.
func setAside(path string, now time.Time) (string, error) {
	aside := path + corruptInfix + now.UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(path, aside); err != nil {
		return "", fmt.Errorf("set aside corrupt %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return "", err
	}
	return aside, nil
}

// corruptFiles lists the set-aside files in dir, oldest first.
func corruptFiles(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, FileName+corruptInfix+"*"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	return files, nil
}
