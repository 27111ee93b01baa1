package tokenstore_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/worker/tokenstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func tokenDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	return dir
}

func sampleToken(now time.Time) tokenstore.Token {
	return tokenstore.Token{AccessToken: "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjZ5YmZnNmJxN214dGpvaiJ9.c2ln", RefreshToken: "6c4cc1db4825516cb3b36826c283a7a2",
		ExpiresAt: now.Add(time.Hour), AgentID: "6ybfg6bq7mxtjoj", RefreshIssuedAt: now}
}

// referenceToken is how the reference agent reads token.json: plain
// encoding/json into this struct (unknown keys ignored).
type referenceToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token"`
	TokenType    string    `json:"token_type"`
	ExpiresAt    time.Time `json:"expires_at"`
	AgentID      string    `json:"agent_id"`
}

func TestSaveIsReferenceCompatible(t *testing.T) {
	dir := tokenDir(t)
	s, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 21, 40, 14, 513000000, time.UTC)
	tok := sampleToken(now)
	if err := s.Save(tok); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref referenceToken
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	if ref.AccessToken != tok.AccessToken || ref.RefreshToken != tok.RefreshToken || ref.AgentID != tok.AgentID || !ref.ExpiresAt.Equal(tok.ExpiresAt) {
		t.Errorf("reference view %+v", ref)
	}
	var indented bytes.Buffer
	_ = json.Indent(&indented, bytes.TrimSpace(data), "", "  ")
	if !bytes.Equal(bytes.TrimSpace(data), indented.Bytes()) || !bytes.Contains(data, []byte("\n  \"access_token\": ")) {
		t.Errorf("not pretty-printed with 2 spaces:\n%s", data)
	}
	if !bytes.Contains(data, []byte(`"expires_at": "2026-11-25T22:40:14.513Z"`)) {
		t.Errorf("expires_at not RFC 3339:\n%s", data)
	}
	raw, err := os.ReadFile(filepath.Join(dir, ".refresh_token"))
	if err != nil || string(raw) != tok.RefreshToken {
		t.Errorf(".refresh_token %q %v", raw, err)
	}
	for path, want := range map[string]fs.FileMode{dir: 0o700, filepath.Join(dir, "token.json"): 0o600, filepath.Join(dir, ".refresh_token"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v (%v)", path, fi.Mode().Perm(), want, err)
		}
	}
	got, err := s.Load()
	if err != nil || got.AccessToken != tok.AccessToken || !got.RefreshIssuedAt.Equal(now) || got.RefreshIssuedEstimated {
		t.Errorf("load %v %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("leftover files: %v", entries)
	}
}

// A token.json as the reference agent writes it (nanoseconds, zone offset).
const referenceFile = `{
  "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjZ5YmZnNmJxN214dGpvaiJ9.dBjJ",
  "refresh_token": "6c4cc1db4825516cb3b36826c283a7a2",
  "token_type": "",
  "expires_at": "2026-11-25T22:40:14.513207311+01:00",
  "agent_id": "6ybfg6bq7mxtjoj"
}`

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoadReferenceFileAndBackup(t *testing.T) {
	dir := tokenDir(t)
	path := filepath.Join(dir, "token.json")
	writeFile(t, path, referenceFile, 0o600)
	s, err := tokenstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s.Load()
	if err != nil || tok.AgentID != "6ybfg6bq7mxtjoj" || tok.RefreshToken != "6c4cc1db4825516cb3b36826c283a7a2" || tok.ExpiresAt.Nanosecond() != 513207311 {
		t.Fatalf("load %v %v", tok, err)
	}
	// The reference agent cleared the file's refresh token: the backup is used.
	writeFile(t, path, strings.Replace(referenceFile, "6c4cc1db4825516cb3b36826c283a7a2", "", 1), 0o600)
	writeFile(t, filepath.Join(dir, ".refresh_token"), "0f4cc1db4825516cb3b36826c283a7a9\n", 0o600)
	if tok, err = s.Load(); err != nil || tok.RefreshToken != "0f4cc1db4825516cb3b36826c283a7a9" || tok.AgentID == "" {
		t.Errorf("backup %v %v", tok, err)
	}
	// A corrupt token.json: only the backup's refresh token survives.
	writeFile(t, path, `{"access_token": "eyJ`, 0o600)
	if tok, err = s.Load(); err != nil || tok.RefreshToken != "0f4cc1db4825516cb3b36826c283a7a9" || tok.AccessToken != "" {
		t.Errorf("corrupt %v %v", tok, err)
	}
	// Neither file: not registered.
	_ = os.Remove(path)
	_ = os.Remove(filepath.Join(dir, ".refresh_token"))
	if _, err = s.Load(); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Errorf("empty: %v", err)
	}
	// A corrupt file without backup is an error, not "not registered".
	writeFile(t, path, `garbage`, 0o600)
	if _, err = s.Load(); err == nil || errors.Is(err, tokenstore.ErrNotFound) {
		t.Errorf("garbage: %v", err)
	}
}

func TestStaticMarker(t *testing.T) {
	dir := tokenDir(t)
	s, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Save(sampleToken(time.Now())); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.Save(tokenstore.StaticMarker("6ybfg6bq7mxtjoj", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".refresh_token")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("stale .refresh_token kept: %v", err)
	}
	var ref referenceToken
	data, _ := os.ReadFile(filepath.Join(dir, "token.json"))
	_ = json.Unmarshal(data, &ref)
	if ref.TokenType != "static" || ref.AccessToken != "" || ref.RefreshToken != "" || ref.ExpiresAt.Year() != now.Year()+100 {
		t.Errorf("marker %+v", ref)
	}
	tok, err := s.Load()
	if err != nil || !tok.Static() {
		t.Errorf("load %v %v", tok, err)
	}
}

func TestStoreRefusesUnsafeFiles(t *testing.T) {
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("needs the nobody account: %v", err)
	}
	nobodyUID, _ := strconv.Atoi(nobody.Uid)
	cases := []struct {
		name   string
		setup  func(t *testing.T, dir string)
		unsafe bool
		check  func(t *testing.T, dir string)
	}{
		{"dir writable by others", func(t *testing.T, dir string) { chmod(t, dir, 0o777) }, true, nil},
		{"dir writable by group", func(t *testing.T, dir string) { chmod(t, dir, 0o770) }, true, nil},
		{"dir readable by others is tightened", func(t *testing.T, dir string) { chmod(t, dir, 0o755) }, false,
			func(t *testing.T, dir string) { wantMode(t, dir, 0o700) }},
		{"file writable by group", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "token.json"), referenceFile, 0o660)
		}, true, nil},
		{"file readable by others is tightened", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "token.json"), referenceFile, 0o644)
		}, false, func(t *testing.T, dir string) { wantMode(t, filepath.Join(dir, "token.json"), 0o600) }},
		{"file owned by another account", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, "token.json"), referenceFile, 0o600)
			chown(t, filepath.Join(dir, "token.json"), nobodyUID)
		}, true, nil},
		{"dir owned by another account", func(t *testing.T, dir string) { chown(t, dir, nobodyUID) }, true, nil},
		{"token.json is a symlink", func(t *testing.T, dir string) {
			target := filepath.Join(filepath.Dir(dir), "elsewhere.json")
			writeFile(t, target, referenceFile, 0o600)
			if err := os.Symlink(target, filepath.Join(dir, "token.json")); err != nil {
				t.Fatal(err)
			}
		}, true, nil},
		{"backup is a symlink", func(t *testing.T, dir string) {
			target := filepath.Join(filepath.Dir(dir), "rt")
			writeFile(t, target, "6c4cc1db4825516cb3b36826c283a7a2", 0o600)
			if err := os.Symlink(target, filepath.Join(dir, ".refresh_token")); err != nil {
				t.Fatal(err)
			}
		}, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 && strings.Contains(tc.name, "another account") {
				t.Skip("needs root: chown to nobody")
			}
			dir := tokenDir(t)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, dir)
			s, err := tokenstore.Open(filepath.Join(dir, "token.json"))
			if err == nil {
				_, err = s.Load()
			}
			if got := errors.Is(err, tokenstore.ErrUnsafePermissions); got != tc.unsafe {
				t.Fatalf("unsafe=%v: %v", got, err)
			}
			if tc.check != nil {
				tc.check(t, dir)
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, path string, uid int) {
	t.Helper()
	if err := os.Lchown(path, uid, -1); err != nil {
		t.Fatal(err)
	}
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v (%v)", path, fi.Mode().Perm(), want, err)
	}
}

// TestFullDiskKeepsOldToken fills a 64 KiB tmpfs and then writes a new
// token: the write fails and the old token is intact and loadable.
func TestFullDiskKeepsOldToken(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a 64k tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Skipf("cannot mount tmpfs here: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	s, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		t.Fatal(err)
	}
	old := sampleToken(time.Now())
	if err := s.Save(old); err != nil {
		t.Fatal(err)
	}
	fill(t, filepath.Join(dir, "filler"))
	next := old
	next.AccessToken = "eyJuZXci.eyJuZXci.bmV3"
	next.RefreshToken = "99999999999999999999999999999999"
	err = s.Save(next)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("save on a full disk: %v, want ENOSPC", err)
	}
	got, err := s.Load()
	if err != nil || got.AccessToken != old.AccessToken || got.RefreshToken != old.RefreshToken {
		t.Fatalf("after a failed save: %v %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[.refresh_token filler token.json]" {
		t.Errorf("files %v (a temp file was left behind?)", names)
	}
	// Space freed: the next save works.
	if err := os.Remove(filepath.Join(dir, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(next); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Load(); got.RefreshToken != next.RefreshToken {
		t.Errorf("after freeing space: %v", got)
	}
}

func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return
		}
	}
}

func TestTokenHidesSecrets(t *testing.T) {
	tok := sampleToken(time.Now())
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok)} {
		if strings.Contains(s, tok.AccessToken) || strings.Contains(s, tok.RefreshToken) {
			t.Errorf("token shown: %s", s)
		}
	}
}

func BenchmarkSave(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "state")
	s, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		b.Fatal(err)
	}
	tok := sampleToken(time.Now())
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tok.AccessToken = fmt.Sprintf("eyJ.%d.sig", i)
		if err := s.Save(tok); err != nil {
			b.Fatal(err)
		}
	}
}
