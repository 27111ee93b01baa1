package main

import (
	"errors"
	"fmt"

	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// hostConfinement says, for `policy explain`, whether the broker on this
// host can confine its runs with Landlock and what that forbids at this
// kernel's ABI. It asks the kernel directly (no privilege needed); the
// broker reports what it really does in `nannyagent status`.
func hostConfinement() string {
	abi, err := llsyscall.LandlockGetABIVersion()
	switch {
	case errors.Is(err, unix.EOPNOTSUPP):
		return "On this host runs are NOT confined: Landlock is built into the kernel but not enabled (lsm= boot parameter); the option tables above are the only wall."
	case err != nil:
		return fmt.Sprintf("On this host runs are NOT confined: the kernel has no Landlock (%v); the option tables above are the only wall.", err)
	}
	what := "creating, writing or removing files except /dev/null and a rule's writes"
	if abi >= 2 {
		what += ", renaming across directories"
	}
	if abi >= 3 {
		what += ", truncating"
	}
	if abi >= 4 {
		what += ", binding TCP ports"
	}
	if abi >= 6 {
		what += ", signalling processes outside the run"
	}
	return fmt.Sprintf("On this host the broker confines every run with Landlock ABI %d (unless started with --landlock off), forbidding %s. The option tables hold on their own where Landlock is missing.", abi, what)
}
