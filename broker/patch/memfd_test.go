package patch

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestSealedMemfdRefusesChanges: once sealed, the script's copy cannot be
// written, grown, shrunk or unsealed, not even through a fresh writable
// open of /proc/self/fd/N, which is how a child would reach it.
func TestSealedMemfdRefusesChanges(t *testing.T) {
	script := []byte("#!/bin/sh\necho patched\n")
	f, err := sealedCopy("op1", script)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("X"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to the sealed memfd: %v, want EPERM", err)
	}
	if err := f.Truncate(0); !errors.Is(err, unix.EPERM) {
		t.Errorf("shrink: %v, want EPERM", err)
	}
	if err := f.Truncate(1 << 20); !errors.Is(err, unix.EPERM) {
		t.Errorf("grow: %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_FUTURE_WRITE); !errors.Is(err, unix.EPERM) {
		t.Errorf("changing the seals: %v, want EPERM", err)
	}
	w, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = w.Write([]byte("reboot\n"))
		w.Close()
	}
	if !errors.Is(err, unix.EPERM) {
		t.Errorf("write through a reopened descriptor: %v, want EPERM", err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if string(got) != string(script) {
		t.Errorf("content changed: %q", got)
	}
	if err := verifySealed(f, Sum(script)); err != nil {
		t.Errorf("verify: %v", err)
	}
}

// TestVerifySealedRefuses: a runner handed bytes whose hash does not match,
// or a copy that is not sealed, refuses.
func TestVerifySealedRefuses(t *testing.T) {
	f, err := sealedCopy("op2", []byte("#!/bin/sh\necho one\n"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := verifySealed(f, Sum([]byte("#!/bin/sh\necho two\n"))); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("other hash: %v, want ErrHashMismatch", err)
	}
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	u := os.NewFile(uintptr(fd), "unsealed")
	defer u.Close()
	_, _ = u.Write([]byte("x"))
	if err := verifySealed(u, Sum([]byte("x"))); !errors.Is(err, ErrRefused) {
		t.Errorf("unsealed copy: %v, want ErrRefused", err)
	}
}
