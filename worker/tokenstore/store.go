package tokenstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// RefreshBackupName is the reference agent's raw-text refresh token file,
// kept beside token.json.
const RefreshBackupName = ".refresh_token"

// DefaultPath is the reference agent's default token_path.
const DefaultPath = "/var/lib/nannyagent/token.json"

const maxFileBytes = 64 << 10

// ErrNotFound: no token file and no refresh token backup (not registered).
var ErrNotFound = errors.New("no token stored")

// ErrUnsafePermissions: the token directory or a token file is owned by
// another account or writable by group or others, so its content cannot be
// trusted; the store refuses to use it.
var ErrUnsafePermissions = errors.New("unsafe permissions")

// Store reads and writes token.json and .refresh_token. Its methods are safe
// for concurrent use.
type Store struct {
	mu          sync.Mutex
	path        string
	dir         string
	refreshPath string
	uid         int
}

// Open prepares the store for the token file at path (absolute), creating
// its directory with mode 0700 when missing. The directory must be owned by
// the current user and not writable by group or others; wider read bits are
// tightened to 0700.
func Open(path string) (*Store, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("token path %q: must be absolute", path)
	}
	path = filepath.Clean(path)
	s := &Store{path: path, dir: filepath.Dir(path), uid: os.Geteuid()}
	s.refreshPath = filepath.Join(s.dir, RefreshBackupName)
	if _, err := os.Lstat(s.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("create token dir: %w", err)
		}
	}
	if err := s.checkDir(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path returns the token file's path.
func (s *Store) Path() string { return s.path }

// checkDir refuses a directory that is a symlink, owned by someone else or
// writable by group or others, and re-enforces mode 0700.
func (s *Store) checkDir() error {
	fi, err := os.Lstat(s.dir)
	if err != nil {
		return fmt.Errorf("token dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("token dir %s: not a directory (symlinks are refused): %w", s.dir, ErrUnsafePermissions)
	}
	if err := s.checkOwner(s.dir, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(s.dir, 0o700); err != nil {
			return fmt.Errorf("token dir %s: restrict mode: %w", s.dir, err)
		}
	}
	return nil
}

func (s *Store) checkOwner(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information: %w", path, ErrUnsafePermissions)
	}
	if int(st.Uid) != s.uid {
		return fmt.Errorf("%s is owned by uid %d, not the worker account (uid %d); chown it: %w", path, st.Uid, s.uid, ErrUnsafePermissions)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s has mode %04o: writable by group or others: %w", path, fi.Mode().Perm(), ErrUnsafePermissions)
	}
	return nil
}

// readChecked reads a token file without following symlinks, after checking
// its owner and mode; a file readable by others is tightened to 0600.
func (s *Store) readChecked(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink: %w", path, ErrUnsafePermissions)
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, ErrUnsafePermissions)
	}
	if err := s.checkOwner(path, fi); err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := f.Chmod(0o600); err != nil {
			return nil, fmt.Errorf("%s: restrict mode: %w", path, err)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileBytes)
	}
	return data, nil
}

// Load reads the token. When token.json is missing or unreadable as JSON
// but .refresh_token holds a token, it returns a Token with only that
// refresh token (the reference agent's recovery path; a refresh fills in the
// rest). When token.json has no refresh token, the backup's is used. With
// neither file it returns ErrNotFound.
func (s *Store) Load() (Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkDir(); err != nil {
		return Token{}, err
	}
	data, err := s.readChecked(s.path)
	var tok Token
	var mainErr error
	switch {
	case err == nil:
		tok, mainErr = decodeFile(data)
	case errors.Is(err, fs.ErrNotExist):
		mainErr = ErrNotFound
	default:
		return Token{}, fmt.Errorf("read token: %w", err)
	}
	if mainErr == nil && (tok.RefreshToken != "" || tok.Static()) {
		return tok, nil
	}
	backup, berr := s.loadBackup()
	switch {
	case berr == nil && mainErr == nil:
		tok.RefreshToken = backup
		return tok, nil
	case berr == nil:
		return Token{RefreshToken: backup}, nil
	case mainErr == nil:
		return tok, nil
	case errors.Is(berr, fs.ErrNotExist):
		if errors.Is(mainErr, ErrNotFound) {
			return Token{}, ErrNotFound
		}
		return Token{}, mainErr
	default:
		return Token{}, fmt.Errorf("read refresh token backup: %w", berr)
	}
}

func decodeFile(data []byte) (Token, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return Token{}, errors.New("token file is not a json object")
	}
	var f fileToken
	if err := json.Unmarshal(trimmed, &f); err != nil {
		return Token{}, fmt.Errorf("token file: %w", err)
	}
	return f.token(), nil
}

func (s *Store) loadBackup() (string, error) {
	data, err := s.readChecked(s.refreshPath)
	if err != nil {
		return "", err
	}
	rt := string(bytes.TrimSpace(data))
	if !visibleASCII(rt) {
		return "", fmt.Errorf("%s: malformed: %w", s.refreshPath, fs.ErrNotExist)
	}
	return rt, nil
}

func visibleASCII(s string) bool {
	if s == "" || len(s) > 8192 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Save writes the token atomically: token.json first (pretty-printed, as
// the reference agent writes it), then .refresh_token when the token has a
// refresh token (a stale backup is removed when it has none). On any error
// the previous files are left as they were.
func (s *Store) Save(t Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.checkDir(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(t.file(), "", "  ")
	if err != nil {
		return fmt.Errorf("encode token: %w", err)
	}
	if err := writeAtomic(s.dir, s.path, append(data, '\n')); err != nil {
		return fmt.Errorf("save token: %w", err)
	}
	if t.RefreshToken == "" {
		if err := os.Remove(s.refreshPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale refresh token backup: %w", err)
		}
		return nil
	}
	if cur, err := s.loadBackup(); err == nil && cur == t.RefreshToken {
		return nil
	}
	if err := writeAtomic(s.dir, s.refreshPath, []byte(t.RefreshToken)); err != nil {
		return fmt.Errorf("save refresh token backup: %w", err)
	}
	return nil
}

// writeAtomic writes data to a temp file in dir (mode 0600), fsyncs it,
// renames it over path and fsyncs dir. The temp file is removed on failure.
func writeAtomic(dir, path string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
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
