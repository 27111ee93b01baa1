package keypin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGenerateWritesAPairWithOnePin(t *testing.T) {
	base := filepath.Join(t.TempDir(), "keys", "worker")
	pin, err := Generate(base)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParsePin(pin); err != nil {
		t.Fatalf("Generate returned a malformed pin: %v", err)
	}
	for path, mode := range map[string]os.FileMode{base + ".key": 0o600, base + ".pub": 0o644} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %04o, want %04o", path, fi.Mode().Perm(), mode)
		}
		data, _ := os.ReadFile(path)
		got, err := PinOfPEM(data)
		if err != nil || got != pin {
			t.Errorf("%s pins to %q (%v), want %q", path, got, err, pin)
		}
	}
	id, err := LoadIdentity(base+".key", "worker")
	if err != nil {
		t.Fatal(err)
	}
	if id.Pin != pin {
		t.Errorf("identity pin %s, want %s", id.Pin, pin)
	}
	certPin, err := PinOfCertificate(id.Certificate.Certificate[0])
	if err != nil || certPin != pin {
		t.Errorf("the certificate carries pin %s (%v), want %s", certPin, err, pin)
	}
	// A second identity from the same key is a new certificate with the
	// same pin: that is what lets either side restart freely.
	id2, _ := LoadIdentity(base+".key", "worker")
	if string(id2.Certificate.Certificate[0]) == string(id.Certificate.Certificate[0]) || id2.Pin != pin {
		t.Error("want a fresh certificate with the same pin")
	}
	if _, err := Generate(base); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("Generate over an existing pair: %v, want a refusal", err)
	}
	if b, _ := os.ReadFile(base + ".pub"); len(b) == 0 {
		t.Error("the refused Generate damaged the existing pair")
	}
}

func TestLoadIdentityRefusals(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "k")
	if _, err := Generate(base); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open.key")
	data, _ := os.ReadFile(base + ".key")
	if err := os.WriteFile(open, data, 0o640); err != nil {
		t.Fatal(err)
	}
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	writeKey := func(name string, k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := filepath.Join(dir, "garbage.key")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ name, path, want string }{
		{"group-readable", open, "lets group or other read it"},
		{"rsa", writeKey("rsa.key", rsaKey), "not an Ed25519 or ECDSA P-256 key"},
		{"p384", writeKey("p384.key", p384), "only ECDSA P-256 or Ed25519"},
		{"garbage", garbage, `no "PRIVATE KEY" PEM block`},
		{"missing", filepath.Join(dir, "none.key"), "no such file"},
		{"public half", base + ".pub", `no "PRIVATE KEY" PEM block`},
		{"directory", dir, "not a regular file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "public half" {
				os.Chmod(tc.path, 0o600)
			}
			if tc.name == "directory" {
				os.Chmod(dir, 0o700)
			}
			_, err := LoadIdentity(tc.path, "x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestECDSAP256IsAccepted(t *testing.T) {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	id, err := NewIdentity(k, "p256")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := PinOf(k.Public())
	if id.Pin != want {
		t.Errorf("pin %s, want %s", id.Pin, want)
	}
}

func TestParsePin(t *testing.T) {
	good := "sha256:" + strings.Repeat("ab", 32)
	if got, err := ParsePin("sha256:" + strings.Repeat("AB", 32)); err != nil || got != good {
		t.Errorf("upper-case hex: %q %v, want %q", got, err, good)
	}
	for _, bad := range []string{"", "sha256:", strings.Repeat("ab", 32), "sha1:" + strings.Repeat("ab", 20),
		"sha256:" + strings.Repeat("ab", 31), "sha256:" + strings.Repeat("zz", 32), "sha256:" + strings.Repeat("ab", 33)} {
		if _, err := ParsePin(bad); err == nil {
			t.Errorf("ParsePin(%q) accepted", bad)
		}
	}
}
