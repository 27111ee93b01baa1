package patch

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// seals are what a script's memfd is sealed with: no write, no growth, no
// shrinking, and no change of the seals themselves.
const seals = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK | unix.F_SEAL_SEAL

// sealedCopy puts script into a new memfd and seals it. Nothing else holds
// the descriptor until it is sealed, so the sealed content is exactly
// script.
func sealedCopy(name string, script []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("nannyagent-patch-"+name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), "memfd:nannyagent-patch-"+name)
	for rest := script; len(rest) > 0; {
		n, err := f.Write(rest)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("write the script into its memfd: %w", err)
		}
		rest = rest[n:]
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the script's memfd: %w", err)
	}
	return f, nil
}

// verifySealed checks that f carries every seal and that its whole content
// hashes to sum. It reads with pread, so the file offset stays at 0 for
// whoever reads the script next.
func verifySealed(f *os.File, sum string) error {
	got, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("read the memfd's seals: %w", err)
	}
	if got&seals != seals {
		return fmt.Errorf("%w: the script's memfd is not sealed (seals %#x)", ErrRefused, got)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return fmt.Errorf("read back the script's memfd: %w", err)
	}
	if have := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(have, sum) {
		return fmt.Errorf("%w: the sealed copy hashes to %s, not %s; nothing ran", ErrHashMismatch, have, clip(sum))
	}
	return nil
}
