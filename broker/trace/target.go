package trace

import (
	"errors"
	"fmt"
	"path"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Length bounds of the parts of a target.
const (
	maxTracepointPart = 64
	maxSyscallName    = 64
	maxFunctionName   = 128
	maxComm           = 15 // TASK_COMM_LEN - 1
)

// ValidateTarget checks a templated target's syntax strictly:
//   - tracepoint: "category:name", both parts [a-z0-9_]+
//   - syscall: a bare name [a-z0-9_]+ ("openat", not "sys_openat")
//   - kprobe, kretprobe: a kernel function [A-Za-z0-9_.]+
//
// Nothing else can reach a program: no wildcards, no prefixes, no spaces.
func ValidateTarget(kind brokerv1.TraceKind, target string) error {
	switch kind {
	case brokerv1.TraceKind_TRACE_KIND_TRACEPOINT:
		category, name, ok := strings.Cut(target, ":")
		if !ok {
			return fmt.Errorf("tracepoint %q: want category:name, for example syscalls:sys_enter_openat", target)
		}
		if err := checkLower("tracepoint category", category, maxTracepointPart); err != nil {
			return err
		}
		return checkLower("tracepoint name", name, maxTracepointPart)
	case brokerv1.TraceKind_TRACE_KIND_SYSCALL:
		return checkLower("syscall name", target, maxSyscallName)
	case brokerv1.TraceKind_TRACE_KIND_KPROBE, brokerv1.TraceKind_TRACE_KIND_KRETPROBE:
		return checkFunction(target)
	default:
		return fmt.Errorf("trace kind %s has no target syntax", kind)
	}
}

// checkLower accepts 1..max characters of [a-z0-9_].
func checkLower(what, s string, max int) error {
	if s == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if len(s) > max {
		return fmt.Errorf("%s is longer than %d characters", what, max)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return fmt.Errorf("%s %q: character %q is not allowed (only a-z, 0-9 and _)", what, s, c)
		}
	}
	return nil
}

func checkFunction(s string) error {
	if s == "" {
		return errors.New("kernel function name is empty")
	}
	if len(s) > maxFunctionName {
		return fmt.Errorf("kernel function name is longer than %d characters", maxFunctionName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '.' {
			return fmt.Errorf("kernel function %q: character %q is not allowed (only A-Z, a-z, 0-9, _ and .)", s, c)
		}
	}
	return nil
}

// ValidateComm checks a command-name filter: 1..15 characters of
// [A-Za-z0-9_.:-], so no quote or escape can reach the program.
func ValidateComm(comm string) error {
	if comm == "" {
		return errors.New("comm filter is empty")
	}
	if len(comm) > maxComm {
		return fmt.Errorf("comm filter %q is longer than %d characters (the kernel keeps only 15)", comm, maxComm)
	}
	for i := 0; i < len(comm); i++ {
		c := comm[i]
		if !isAlnum(c) && !strings.ContainsRune("_.:-", rune(c)) {
			return fmt.Errorf("comm filter %q: character %q is not allowed (only A-Z, a-z, 0-9, _ . : -)", comm, c)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// kindName is the policy's name for a templated kind.
func kindName(kind brokerv1.TraceKind) string {
	switch kind {
	case brokerv1.TraceKind_TRACE_KIND_TRACEPOINT:
		return KindTracepoint
	case brokerv1.TraceKind_TRACE_KIND_SYSCALL:
		return KindSyscall
	case brokerv1.TraceKind_TRACE_KIND_KPROBE:
		return KindKprobe
	case brokerv1.TraceKind_TRACE_KIND_KRETPROBE:
		return KindKretprobe
	case brokerv1.TraceKind_TRACE_KIND_RAW:
		return KindRaw
	}
	return ""
}

// Check reports configuration mistakes: unknown kind names and malformed
// target patterns. The broker calls it when it loads the policy.
func (c Config) Check() error {
	var errs []error
	for _, k := range c.AllowedKinds {
		switch k {
		case KindTracepoint, KindSyscall, KindKprobe, KindKretprobe:
		case KindRaw:
			errs = append(errs, errors.New(`trace kind "raw" is governed by AllowRaw, not AllowedKinds`))
		default:
			errs = append(errs, fmt.Errorf("unknown trace kind %q", k))
		}
	}
	for _, p := range c.AllowedTargets {
		if _, err := path.Match(normalPattern(p), ""); err != nil {
			errs = append(errs, fmt.Errorf("trace target pattern %q: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func (c Config) kindAllowed(kind brokerv1.TraceKind) error {
	name := kindName(kind)
	for _, k := range c.AllowedKinds {
		if k == name {
			return nil
		}
	}
	return fmt.Errorf("trace kind %q is not allowed by the policy", name)
}

// probeAllowed matches one attached probe ("syscalls:sys_enter_read",
// "kprobe:vfs_read") against the policy's patterns and returns the first
// that matches.
func (c Config) probeAllowed(probe string) (string, error) {
	for _, p := range c.AllowedTargets {
		if ok, err := path.Match(normalPattern(p), probe); err == nil && ok {
			return p, nil
		}
	}
	return "", fmt.Errorf("probe %s is not allowed by the policy's trace targets", probe)
}

func normalPattern(p string) string {
	return strings.TrimPrefix(p, "tracepoint:")
}
