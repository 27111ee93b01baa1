package execute

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// lookupAccount resolves a run_as account to its uid, primary gid and
// supplementary groups. Root is refused: a named account must be
// unprivileged, and "" already means root.
func lookupAccount(name string, cache map[string]*credSpec) (*credSpec, error) {
	if c, ok := cache[name]; ok {
		return c, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: run_as account %q: %w", ErrInvalid, name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("%w: run_as account %q has a non-numeric uid or gid", ErrInvalid, name)
	}
	if uid == 0 || gid == 0 {
		return nil, fmt.Errorf("%w: run_as account %q is privileged (uid %d, gid %d)", ErrInvalid, name, uid, gid)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("%w: groups of run_as account %q: %w", ErrInvalid, name, err)
	}
	c := &credSpec{UID: uint32(uid), GID: uint32(gid), Groups: []uint32{}}
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: run_as account %q has group %q", ErrInvalid, name, s)
		}
		if g == 0 {
			return nil, fmt.Errorf("%w: run_as account %q is in group 0", ErrInvalid, name)
		}
		c.Groups = append(c.Groups, uint32(g))
	}
	cache[name] = c
	return c, nil
}

// checkProgram refuses a program that a non-root account could have
// replaced: running it as root would hand that account root. The file and
// its directory (after links) must be owned by root and not writable by
// group or other.
func checkProgram(program string) error {
	real, err := filepath.EvalSymlinks(program)
	if errors.Is(err, fs.ErrNotExist) {
		return &NotInstalledError{Program: program, Err: err}
	}
	if err != nil {
		return fmt.Errorf("%w: program %s: %w", ErrInvalid, program, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("%w: program %s: %w", ErrInvalid, program, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: program %s is not an executable file", ErrInvalid, program)
	}
	for _, p := range []string{real, filepath.Dir(real)} {
		if err := rootOnly(p); err != nil {
			return fmt.Errorf("%w: program %s: %w", ErrInvalid, program, err)
		}
	}
	return nil
}

func rootOnly(p string) error {
	if os.Geteuid() != 0 {
		// A broker that is not root has no root to hand over (tests).
		return nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("no owner for %s", p)
	}
	if st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s can be changed by a non-root account (owner %d, mode %v)", p, st.Uid, fi.Mode().Perm())
	}
	return nil
}
