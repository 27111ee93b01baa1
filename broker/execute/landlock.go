package execute

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	llsyscall "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Landlock is the second wall behind the option tables: every run is
// confined so that it cannot create, write, truncate, rename or remove a
// file anywhere except /dev/null and the places its rule names, and, where
// the kernel's ABI allows, cannot bind a TCP port or signal a process
// outside its own run. The descriptors a run inherits (its pipes, the
// files the broker opened for it) are not path accesses and stay usable.
//
// Landlock confines a thread and what it starts. The broker must never be
// confined itself, so each run gets a fresh OS thread that enters the
// run's own domain, forks the stages (or the subreaper helper) and stays
// until the run is over, then ends. A domain per run also keeps
// concurrent runs from signalling each other.

// LandlockMode selects whether runs are confined.
type LandlockMode int

const (
	// LandlockAuto confines runs where the kernel has Landlock, with every
	// restriction the kernel's ABI offers.
	LandlockAuto LandlockMode = iota
	// LandlockOff never confines runs (a test switch: the option tables
	// must hold on their own).
	LandlockOff
)

// Landlock ABI versions that add what runs are denied.
const (
	abiRefer    = 2 // rename and link across directories
	abiTruncate = 3 // truncate(2) and O_TRUNC
	abiNet      = 4 // TCP bind and connect
	abiScoped   = 6 // signals and abstract sockets outside the domain
)

// confinement is the Landlock setup of a runner: what every run's ruleset
// handles (and so denies unless a rule allows it).
type confinement struct {
	abi    int
	fs     uint64
	net    uint64
	scoped uint64
	// why runs are not confined, when fs is zero.
	why string
}

// writeRights are the file-system rights a run is denied, by ABI.
func writeRights(abi int) uint64 {
	r := uint64(llsyscall.AccessFSWriteFile | llsyscall.AccessFSRemoveDir | llsyscall.AccessFSRemoveFile |
		llsyscall.AccessFSMakeChar | llsyscall.AccessFSMakeDir | llsyscall.AccessFSMakeReg |
		llsyscall.AccessFSMakeSock | llsyscall.AccessFSMakeFifo | llsyscall.AccessFSMakeBlock | llsyscall.AccessFSMakeSym)
	if abi >= abiRefer {
		r |= llsyscall.AccessFSRefer
	}
	if abi >= abiTruncate {
		r |= llsyscall.AccessFSTruncate
	}
	return r
}

// fileRights are the rights that a rule on a single file (not a
// directory) may carry.
const fileRights = llsyscall.AccessFSWriteFile | llsyscall.AccessFSTruncate

func newConfinement(mode LandlockMode) confinement {
	if mode == LandlockOff {
		return confinement{why: "turned off"}
	}
	abi, err := llsyscall.LandlockGetABIVersion()
	if err != nil {
		why := fmt.Sprintf("the kernel has no Landlock (%v)", err)
		if errors.Is(err, unix.EOPNOTSUPP) {
			why = "Landlock is built into the kernel but not enabled (add landlock to the lsm= boot parameter)"
		}
		return confinement{why: why}
	}
	c := confinement{abi: abi, fs: writeRights(abi)}
	if abi >= abiNet {
		c.net = llsyscall.AccessNetBindTCP
	}
	if abi >= abiScoped {
		c.scoped = llsyscall.ScopeSignal
	}
	return c
}

// enabled reports whether runs are confined.
func (c confinement) enabled() bool { return c.fs != 0 }

// denies lists in words what a confined run cannot do.
func (c confinement) denies() []string {
	if !c.enabled() {
		return nil
	}
	out := []string{"create, write or remove files (except /dev/null and a rule's writes)"}
	if c.fs&llsyscall.AccessFSRefer != 0 {
		out = append(out, "rename or link across directories")
	}
	if c.fs&llsyscall.AccessFSTruncate != 0 {
		out = append(out, "truncate files")
	}
	if c.net != 0 {
		out = append(out, "bind TCP ports")
	}
	if c.scoped != 0 {
		out = append(out, "signal processes outside the run")
	}
	return out
}

// ruleset builds one run's ruleset: the handled rights are denied except
// writing /dev/null and everything beneath the writes. The caller closes
// the descriptor once the run's thread has entered it.
func (c confinement) ruleset(writes []string) (int, error) {
	attr := llsyscall.RulesetAttr{HandledAccessFS: c.fs, HandledAccessNet: c.net, Scoped: c.scoped}
	fd, err := llsyscall.LandlockCreateRuleset(&attr, 0)
	if err != nil {
		return -1, fmt.Errorf("landlock ruleset: %w", err)
	}
	for _, p := range append([]string{"/dev/null"}, writes...) {
		if err := c.allow(fd, p); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, nil
}

// allow lets the run write beneath p (a directory) or write p (a file).
func (c confinement) allow(rulesetFD int, p string) error {
	dir, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("landlock: open %s: %w", p, err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return fmt.Errorf("landlock: stat %s: %w", p, err)
	}
	rights := c.fs
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		rights &= fileRights
	}
	attr := llsyscall.PathBeneathAttr{AllowedAccess: rights, ParentFd: dir}
	if err := llsyscall.LandlockAddPathBeneathRule(rulesetFD, &attr, 0); err != nil {
		return fmt.Errorf("landlock: allow writing %s: %w", p, err)
	}
	return nil
}

// confinedDo runs fn on a new OS thread that set no_new_privs and entered
// the ruleset's domain. The thread waits until release is called and then
// ends with its goroutine (still locked, so Go retires it): processes fn
// forked keep their parent thread, and so Pdeathsig, until the run is
// over. On error fn did not run.
func confinedDo(rulesetFD int, fn func()) (release func(), err error) {
	errc := make(chan error, 1)
	rel := make(chan struct{})
	go func() {
		// Never unlocked: this thread is confined for good and must not
		// run anything else.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			errc <- fmt.Errorf("set no_new_privs: %w", err)
			return
		}
		if err := llsyscall.LandlockRestrictSelf(rulesetFD, 0); err != nil {
			errc <- fmt.Errorf("landlock restrict: %w", err)
			return
		}
		fn()
		errc <- nil
		<-rel
	}()
	if err := <-errc; err != nil {
		return func() {}, fmt.Errorf("%w: %w", ErrStart, err)
	}
	return func() { close(rel) }, nil
}

// ConfinementInfo says how runs are confined.
type ConfinementInfo struct {
	// Landlock is true when every run gets a Landlock domain.
	Landlock bool
	// ABI is the kernel's Landlock ABI version (0 without Landlock).
	ABI int
	// Denies lists what a confined run cannot do; Reason says why runs
	// are not confined when Landlock is false.
	Denies []string
	Reason string
}

// String is a one-line summary for logs and status.
func (i ConfinementInfo) String() string {
	if !i.Landlock {
		return "not confined: " + i.Reason
	}
	return fmt.Sprintf("Landlock ABI %d: runs cannot %s", i.ABI, strings.Join(i.Denies, ", "))
}

// LandlockABI reports the kernel's Landlock ABI version, or 0 and why
// there is none. It needs no privilege.
func LandlockABI() (int, string) {
	c := newConfinement(LandlockAuto)
	return c.abi, c.why
}
