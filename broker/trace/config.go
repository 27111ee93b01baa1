// Package trace runs the eBPF traces the broker writes itself. A structured
// brokerv1.TraceSpec is validated against strict syntax and the policy's
// limits, turned into a bpftrace program from fixed templates that aggregate
// in the kernel and print a bounded sample of events, run with
// `bpftrace -f json` (never --unsafe, -c or -p) under a clean environment,
// and its JSON records are parsed into a bounded brokerv1.RunTraceResponse.
//
// A run is judged by bpftrace's exit status and its JSON records: an unknown
// tracepoint or a failed attach is an error carrying bpftrace's own words,
// never "success, 0 events". Everything bpftrace writes on stderr is passed
// along as warnings.
package trace

import (
	"time"
)

// Hard limits that no configuration can raise.
const (
	// DefaultMaxDuration is the longest trace when the configuration sets
	// no limit; the broker passes the policy's trace_max_duration.
	DefaultMaxDuration = 60 * time.Second
	// DefaultDuration is used when a spec asks for no duration.
	DefaultDuration = 10 * time.Second
	// hardMaxRawBytes keeps a raw program well under the kernel's 128 KiB
	// limit for one argv string.
	hardMaxRawBytes = 64 << 10
	// hardMaxSamples bounds the printed events kept per trace.
	hardMaxSamples = 1000
	// minOutputCap is the smallest response budget; below it not even an
	// error and the program would fit.
	minOutputCap = 4 << 10
)

// Kind names as the policy writes them.
const (
	KindTracepoint = "tracepoint"
	KindSyscall    = "syscall"
	KindKprobe     = "kprobe"
	KindKretprobe  = "kretprobe"
	KindRaw        = "raw"
)

// Config is what the policy and the broker's Probe decide for traces. The
// zero value allows nothing: AllowedKinds and AllowedTargets are default-deny.
type Config struct {
	// BpftracePath is the absolute path of bpftrace; empty means
	// /usr/bin/bpftrace.
	BpftracePath string
	// MaxDuration caps a trace's duration; 0 means DefaultMaxDuration.
	MaxDuration time.Duration
	// MaxConcurrent is how many traces may run at once (default 4); one more
	// is refused at once.
	MaxConcurrent int
	// Slots, when set, counts running traces across Runners: the broker
	// makes a new Runner for each policy it loads while traces of the old
	// one may still run. NewRunner sets its limit to MaxConcurrent.
	Slots *Slots
	// ChildMemory and ChildTasks cap bpftrace's memory and tasks (its run
	// cgroup); zero takes the launcher's defaults.
	ChildMemory int64
	ChildTasks  int
	// OutputCap bounds the marshalled size of a response in bytes
	// (default 64 KiB, at least 4 KiB).
	OutputCap int
	// SampleLimit is how many printed events a trace keeps (default 20).
	SampleLimit int
	// MapEntryLimit is how many keys of each map a response keeps, the top
	// ones by value (default 20).
	MapEntryLimit int
	// AllowRaw lets caller-written programs run (still without --unsafe).
	AllowRaw bool
	// RawMaxBytes caps a raw program's size (default 8 KiB, at most 64 KiB).
	RawMaxBytes int
	// AllowedKinds names the templated kinds the policy allows:
	// "tracepoint", "syscall", "kprobe", "kretprobe". Raw programs are
	// governed by AllowRaw alone.
	AllowedKinds []string
	// AllowedTargets are glob patterns (path.Match syntax) that every probe
	// a templated program attaches to must match: "syscalls:sys_enter_*",
	// "sched:*" for tracepoints (a "tracepoint:" prefix is optional),
	// "kprobe:tcp_*" and "kretprobe:vfs_*" for kernel functions.
	AllowedTargets []string
	// KprobesAvailable and KfuncsAvailable come from the broker's Probe.
	// A kprobe spec is refused, with the reason, when kprobes are not
	// available.
	KprobesAvailable bool
	KfuncsAvailable  bool

	// StartTimeout bounds the time from start to attached probes
	// (default 30 s; compiling can be slow on a loaded host).
	StartTimeout time.Duration
	// ExitGrace is how long a program may overrun its own exit before it is
	// interrupted (default 10 s: printing maps on a loaded host is slow).
	ExitGrace time.Duration
	// KillGrace is how long bpftrace has after SIGINT to print its maps and
	// exit before SIGKILL (default 5 s).
	KillGrace time.Duration
	// MaxRecordBytes bounds one line of bpftrace output (default 1 MiB);
	// longer lines are skipped and the response is marked truncated.
	MaxRecordBytes int
}

// withDefaults fills in every zero limit and clamps to the hard limits.
func (c Config) withDefaults() Config {
	if c.BpftracePath == "" {
		c.BpftracePath = "/usr/bin/bpftrace"
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = DefaultMaxDuration
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 4
	}
	if c.OutputCap <= 0 {
		c.OutputCap = 64 << 10
	}
	if c.OutputCap < minOutputCap {
		c.OutputCap = minOutputCap
	}
	if c.SampleLimit <= 0 {
		c.SampleLimit = 20
	}
	if c.SampleLimit > hardMaxSamples {
		c.SampleLimit = hardMaxSamples
	}
	if c.MapEntryLimit <= 0 {
		c.MapEntryLimit = 20
	}
	if c.RawMaxBytes <= 0 {
		c.RawMaxBytes = 8 << 10
	}
	if c.RawMaxBytes > hardMaxRawBytes {
		c.RawMaxBytes = hardMaxRawBytes
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.ExitGrace <= 0 {
		c.ExitGrace = 10 * time.Second
	}
	if c.KillGrace <= 0 {
		c.KillGrace = 5 * time.Second
	}
	if c.MaxRecordBytes <= 0 {
		c.MaxRecordBytes = 1 << 20
	}
	return c
}
