// Package keypin makes and reads the key pairs that the broker and a worker
// in a VM guest prove to each other over AF_VSOCK, and the pins that name
// them. A pin is "sha256:" and the hex SHA-256 of the public key's
// SubjectPublicKeyInfo (DER), the value curl's --pinnedpubkey and HPKP hash;
// it names a key, not a certificate, so a certificate made afresh from the
// same key at every start keeps the pin.
package keypin

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Prefix starts every pin.
const Prefix = "sha256:"

// maxKeyFileBytes bounds a key file: a PEM key is a few hundred bytes.
const maxKeyFileBytes = 16 << 10

// ParsePin checks a pin's spelling and returns it in canonical form
// (lower-case hex).
func ParsePin(s string) (string, error) {
	hexPart, ok := strings.CutPrefix(s, Prefix)
	if !ok {
		return "", fmt.Errorf("pin %q must start with %q", s, Prefix)
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("pin %q: want %s and 64 hex digits", s, Prefix)
	}
	return Prefix + hex.EncodeToString(b), nil
}

// PinOf returns the pin of a public key.
func PinOf(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("pin: %w", err)
	}
	return pinOfSPKI(der), nil
}

func pinOfSPKI(spki []byte) string {
	sum := sha256.Sum256(spki)
	return Prefix + hex.EncodeToString(sum[:])
}

// PinOfCertificate returns the pin of the key in a DER certificate, as a
// TLS peer presents it.
func PinOfCertificate(der []byte) (string, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("peer certificate: %w", err)
	}
	return pinOfSPKI(cert.RawSubjectPublicKeyInfo), nil
}

// Identity is a private key and the self-signed certificate that carries
// it in a TLS handshake. Nobody checks the certificate's name, issuer or
// dates: the peer pins the key.
type Identity struct {
	Certificate tls.Certificate
	// Pin names the public key.
	Pin string
}

// NewIdentity wraps a private key (Ed25519 or ECDSA P-256) in a
// self-signed certificate named commonName.
func NewIdentity(key crypto.Signer, commonName string) (*Identity, error) {
	switch k := key.(type) {
	case ed25519.PrivateKey:
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("key: only ECDSA P-256 or Ed25519 keys are accepted")
		}
	default:
		return nil, fmt.Errorf("key: %T is not an Ed25519 or ECDSA P-256 key", key)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return nil, fmt.Errorf("certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		// The dates are not checked (the key is pinned); they are wide so
		// that a guest with a wrong clock still presents a sane certificate.
		NotBefore:   now.Add(-24 * time.Hour),
		NotAfter:    now.Add(100 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	pin, err := PinOf(key.Public())
	if err != nil {
		return nil, err
	}
	return &Identity{Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, Pin: pin}, nil
}

// LoadIdentity reads a PEM private key (PKCS#8, as Generate writes it) and
// wraps it in a certificate named commonName. The file must not be
// readable by group or other: it is a secret.
func LoadIdentity(path, commonName string) (*Identity, error) {
	data, err := readPrivate(path)
	if err != nil {
		return nil, err
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	id, err := NewIdentity(key, commonName)
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	return id, nil
}

func readPrivate(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key %s: not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s: mode %04o lets group or other read it; chmod 0600", path, fi.Mode().Perm())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("key %s: %w", path, err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, fmt.Errorf("key %s: larger than %d bytes", path, maxKeyFileBytes)
	}
	return data, nil
}

// ParsePrivateKey decodes the first "PRIVATE KEY" PEM block.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block := firstBlock(data, "PRIVATE KEY")
	if block == nil {
		return nil, errors.New(`no "PRIVATE KEY" PEM block`)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PKCS#8 private key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%T cannot sign", k)
	}
	return signer, nil
}

// PinOfPEM returns the pin of the key in a PEM file's bytes: a public key
// ("PUBLIC KEY") or a private key ("PRIVATE KEY"), so an operator can pin
// from either half.
func PinOfPEM(data []byte) (string, error) {
	if block := firstBlock(data, "PUBLIC KEY"); block != nil {
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return "", fmt.Errorf("public key: %w", err)
		}
		return PinOf(pub)
	}
	key, err := ParsePrivateKey(data)
	if err != nil {
		return "", fmt.Errorf(`no "PUBLIC KEY" block, and %w`, err)
	}
	return PinOf(key.Public())
}

func firstBlock(data []byte, typ string) *pem.Block {
	for len(data) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil
		}
		if block.Type == typ {
			return block
		}
	}
	return nil
}

// Generate makes an Ed25519 key pair and writes base.key (the private key,
// mode 0600) and base.pub (the public key, 0644). It refuses to replace an
// existing file. It returns the pin.
func Generate(base string) (string, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", fmt.Errorf("encode private key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encode public key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(base), 0o700); err != nil {
		return "", fmt.Errorf("key directory: %w", err)
	}
	keyPath, pubPath := base+".key", base+".pub"
	if err := writeNew(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), 0o600); err != nil {
		return "", err
	}
	if err := writeNew(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		os.Remove(keyPath)
		return "", err
	}
	return pinOfSPKI(pubDER), nil
}

// writeNew creates path with exactly mode (whatever the umask) and data,
// and never replaces an existing file.
func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// CheckOwner refuses a key file that uid does not own: the broker's key
// must be root's, or whoever owns the file could read the secret it proves.
func CheckOwner(path string, uid uint32) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("key %s: cannot read its owner", path)
	}
	if st.Uid != uid {
		return fmt.Errorf("key %s: owned by uid %d, must be owned by uid %d", path, st.Uid, uid)
	}
	return nil
}
