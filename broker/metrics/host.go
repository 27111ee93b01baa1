package metrics

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"golang.org/x/sys/unix"
)

// collectHost fills the host's identity: hostname and kernel release from
// procfs, architecture from uname(2), and the OS from os-release(5)
// (<etc>/os-release, else <usr/lib>/os-release). It deliberately does not
// use gopsutil's host.Info, which may run lsb_release and loginctl.
func collectHost(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	var errs []error
	h := &brokerv1.HostFacts{OsType: runtime.GOOS, Arch: machine()}
	if name, err := readTrimmed(c.roots.proc("sys", "kernel", "hostname")); err == nil {
		h.Hostname = name
	} else {
		errs = append(errs, err)
	}
	if rel, err := readTrimmed(c.roots.proc("sys", "kernel", "osrelease")); err == nil {
		h.KernelRelease = rel
	} else {
		errs = append(errs, err)
	}
	osr, err := c.osRelease()
	if err != nil {
		errs = append(errs, err)
	}
	h.Platform = osr.ID
	h.PlatformFamily = osr.PlatformFamily()
	h.PlatformVersion = osr.VersionID
	if h.PlatformVersion == "" && h.PlatformFamily == "debian" {
		// Debian testing/sid have no VERSION_ID; debian_version says "trixie/sid".
		if v, err := readTrimmed(c.roots.etc("debian_version")); err == nil {
			h.PlatformVersion = v
		}
	}
	h.OsPrettyName = prettyName(osr)
	out.Host = h
	return errors.Join(errs...)
}

func (c *call) osRelease() (OSRelease, error) {
	var errs []error
	for _, p := range []string{c.roots.etc("os-release"), c.roots.UsrLib + "/os-release"} {
		data, err := readFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := ParseOSRelease(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("parse %s: %w", p, err))
			continue
		}
		return r, nil
	}
	return OSRelease{}, errors.Join(errs...)
}

func prettyName(r OSRelease) string {
	switch {
	case r.PrettyName != "":
		return r.PrettyName
	case r.Name != "" && r.Version != "":
		return r.Name + " " + r.Version
	case r.Name != "":
		return r.Name
	default:
		return r.ID
	}
}

// machine is uname(2)'s machine field ("x86_64"), the reference agent's arch.
func machine() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return runtime.GOARCH
	}
	if m := unix.ByteSliceToString(u.Machine[:]); m != "" {
		return m
	}
	return runtime.GOARCH
}
