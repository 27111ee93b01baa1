package peercred

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxGroups bounds the buffer; Linux allows NGROUPS_MAX (65536) groups.
const maxGroups = 65536

// peerGroups reads SO_PEERGROUPS. The kernel answers ERANGE with the size it
// needs when the buffer is too small, so grow once and ask again.
func peerGroups(fd int) ([]uint32, error) {
	n := 64
	for {
		buf := make([]byte, 4*n)
		size := uint32(len(buf))
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return decodeGroups(buf[:size]), nil
		case errors.Is(errno, unix.ERANGE) && int(size/4) > n && int(size/4) <= maxGroups:
			n = int(size / 4)
		default:
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", errno)
		}
	}
}

func decodeGroups(b []byte) []uint32 {
	groups := make([]uint32, 0, len(b)/4)
	for len(b) >= 4 {
		groups = append(groups, binary.NativeEndian.Uint32(b))
		b = b[4:]
	}
	return groups
}
