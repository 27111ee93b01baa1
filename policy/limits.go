package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Limits are the broker's limits on everything it runs. Every field is set:
// a policy value where the policy gives one, the default otherwise, and never
// above the hard cap compiled into the broker.
type Limits struct {
	// CommandTimeout is the wall-clock limit of one pipeline.
	CommandTimeout time.Duration `json:"command_timeout"`
	// StdoutBytes and StderrBytes cap what one pipeline returns; the rest is
	// cut and the result marked truncated.
	StdoutBytes int64 `json:"stdout_bytes"`
	StderrBytes int64 `json:"stderr_bytes"`
	// ConcurrentCommands is how many pipelines run at once.
	ConcurrentCommands int `json:"concurrent_commands"`
	// PipelineStages is the most stages one pipeline may have.
	PipelineStages int `json:"pipeline_stages"`
	// ArgvCount and ArgvBytes bound one stage's argv (elements, total bytes).
	ArgvCount int `json:"argv_count"`
	ArgvBytes int `json:"argv_bytes"`
	// ChildTasks is the most tasks (processes and threads) in one run's tree.
	ChildTasks int `json:"child_tasks"`
	// ChildMemory is the memory one run's tree may use.
	ChildMemory int64 `json:"child_memory"`
	// ConcurrentTraces is how many bpftrace runs go at once.
	ConcurrentTraces int `json:"concurrent_traces"`
	// TraceMaxDuration is the longest a trace may run.
	TraceMaxDuration time.Duration `json:"trace_max_duration"`
	// TraceOutputBytes caps what one trace returns.
	TraceOutputBytes int64 `json:"trace_output_bytes"`
	// PatchMaxRuntime is the longest a patch script may run.
	PatchMaxRuntime time.Duration `json:"patch_max_runtime"`
	// PatchScriptBytes is the largest patch script accepted.
	PatchScriptBytes int64 `json:"patch_script_bytes"`
	// PatchOutputBytes caps each of a patch run's stdout and stderr.
	PatchOutputBytes int64 `json:"patch_output_bytes"`
	// PatchChildMemory and PatchChildTasks cap a patch run's tree (the
	// package manager, dpkg, maintainer scripts and what they start).
	PatchChildMemory int64 `json:"patch_child_memory"`
	PatchChildTasks  int   `json:"patch_child_tasks"`
	// ProxmoxTimeout is the limit of one pvesh call.
	ProxmoxTimeout time.Duration `json:"proxmox_timeout"`
	// ProxmoxOutputBytes caps one Proxmox answer.
	ProxmoxOutputBytes int64 `json:"proxmox_output_bytes"`
	// RequestBytes is the largest request message the broker reads.
	RequestBytes int64 `json:"request_bytes"`
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

type limitKind int

const (
	limitDuration limitKind = iota
	limitSize
	limitCount
)

// limitField describes one key of the limits section: its default and the
// hard cap that no policy may exceed.
type limitField struct {
	key  string
	kind limitKind
	def  int64
	cap  int64
	get  func(*Limits) int64
	set  func(*Limits, int64)
	help string
}

var limitFields = []limitField{
	{"command_timeout", limitDuration, int64(10 * time.Second), int64(5 * time.Minute),
		func(l *Limits) int64 { return int64(l.CommandTimeout) }, func(l *Limits, v int64) { l.CommandTimeout = time.Duration(v) },
		"wall-clock limit of one command pipeline"},
	{"stdout_bytes", limitSize, 256 * kib, 16 * mib,
		func(l *Limits) int64 { return l.StdoutBytes }, func(l *Limits, v int64) { l.StdoutBytes = v },
		"stdout returned from one pipeline"},
	{"stderr_bytes", limitSize, 256 * kib, 16 * mib,
		func(l *Limits) int64 { return l.StderrBytes }, func(l *Limits, v int64) { l.StderrBytes = v },
		"stderr returned from one pipeline"},
	{"concurrent_commands", limitCount, 8, 32,
		func(l *Limits) int64 { return int64(l.ConcurrentCommands) }, func(l *Limits, v int64) { l.ConcurrentCommands = int(v) },
		"commands (pipelines and pvesh calls) running at once; as many more may wait for a slot"},
	{"pipeline_stages", limitCount, 4, 8,
		func(l *Limits) int64 { return int64(l.PipelineStages) }, func(l *Limits, v int64) { l.PipelineStages = int(v) },
		"stages in one pipeline"},
	{"argv_count", limitCount, 64, 1024,
		func(l *Limits) int64 { return int64(l.ArgvCount) }, func(l *Limits, v int64) { l.ArgvCount = int(v) },
		"arguments of one stage, program included"},
	{"argv_bytes", limitSize, 16 * kib, 256 * kib,
		func(l *Limits) int64 { return int64(l.ArgvBytes) }, func(l *Limits, v int64) { l.ArgvBytes = int(v) },
		"total bytes of one stage's arguments"},
	{"child_tasks", limitCount, 64, 4096,
		func(l *Limits) int64 { return int64(l.ChildTasks) }, func(l *Limits, v int64) { l.ChildTasks = int(v) },
		"processes and threads in one run's tree (a command, a trace's bpftrace, a pvesh call)"},
	{"child_memory", limitSize, 512 * mib, 8 * gib,
		func(l *Limits) int64 { return l.ChildMemory }, func(l *Limits, v int64) { l.ChildMemory = v },
		"memory of one run's tree (a command, a trace's bpftrace, a pvesh call)"},
	{"concurrent_traces", limitCount, 4, 16,
		func(l *Limits) int64 { return int64(l.ConcurrentTraces) }, func(l *Limits, v int64) { l.ConcurrentTraces = int(v) },
		"bpftrace runs at once"},
	{"trace_max_duration", limitDuration, int64(60 * time.Second), int64(10 * time.Minute),
		func(l *Limits) int64 { return int64(l.TraceMaxDuration) }, func(l *Limits, v int64) { l.TraceMaxDuration = time.Duration(v) },
		"longest trace"},
	{"trace_output_bytes", limitSize, 1 * mib, 16 * mib,
		func(l *Limits) int64 { return l.TraceOutputBytes }, func(l *Limits, v int64) { l.TraceOutputBytes = v },
		"output returned from one trace"},
	{"patch_max_runtime", limitDuration, int64(30 * time.Minute), int64(4 * time.Hour),
		func(l *Limits) int64 { return int64(l.PatchMaxRuntime) }, func(l *Limits, v int64) { l.PatchMaxRuntime = time.Duration(v) },
		"longest patch script run"},
	{"patch_script_bytes", limitSize, 1 * mib, 16 * mib,
		func(l *Limits) int64 { return l.PatchScriptBytes }, func(l *Limits, v int64) { l.PatchScriptBytes = v },
		"largest patch script"},
	{"patch_output_bytes", limitSize, 1 * mib, 64 * mib,
		func(l *Limits) int64 { return l.PatchOutputBytes }, func(l *Limits, v int64) { l.PatchOutputBytes = v },
		"each of a patch run's stdout and stderr"},
	// A package upgrade is not a diagnostic: apt-get update runs a fetch
	// method per source plus gpgv; dpkg's maintainer scripts run
	// update-initramfs (dozens of processes), compressors with a thread
	// per CPU and DKMS builds (make -j, a cc1 of a few hundred MiB each).
	// 512MiB and 64 tasks kill such runs halfway through an upgrade, the
	// worst place to stop; 2GiB and 1024 tasks bound a runaway script yet
	// fit those. The run's cgroup counts page cache, which it reclaims
	// before killing anything.
	{"patch_child_memory", limitSize, 2 * gib, 16 * gib,
		func(l *Limits) int64 { return l.PatchChildMemory }, func(l *Limits, v int64) { l.PatchChildMemory = v },
		"memory of a patch run's tree (the package manager, dpkg, maintainer scripts)"},
	{"patch_child_tasks", limitCount, 1024, 8192,
		func(l *Limits) int64 { return int64(l.PatchChildTasks) }, func(l *Limits, v int64) { l.PatchChildTasks = int(v) },
		"processes and threads in a patch run's tree"},
	{"proxmox_timeout", limitDuration, int64(30 * time.Second), int64(5 * time.Minute),
		func(l *Limits) int64 { return int64(l.ProxmoxTimeout) }, func(l *Limits, v int64) { l.ProxmoxTimeout = time.Duration(v) },
		"one pvesh call"},
	{"proxmox_output_bytes", limitSize, 8 * mib, 64 * mib,
		func(l *Limits) int64 { return l.ProxmoxOutputBytes }, func(l *Limits, v int64) { l.ProxmoxOutputBytes = v },
		"one Proxmox answer"},
	{"request_bytes", limitSize, 4 * mib, 32 * mib,
		func(l *Limits) int64 { return l.RequestBytes }, func(l *Limits, v int64) { l.RequestBytes = v },
		fmt.Sprintf("largest request message the broker reads, at most %d at once; applies at start-up (gRPC cannot change it later)", RequestsReadAtOnce)},
}

// RequestsReadAtOnce is how many request messages the broker reads at
// once: its read budget is RequestsReadAtOnce × request_bytes.
const RequestsReadAtOnce = 16

// PatchRequestRoom is what a RunPatch request carries besides its script
// (operation id, hash, mode, script name, up to 256 excluded package
// names, field tags): request_bytes must exceed patch_script_bytes by at
// least this much, or the largest script allowed could never arrive.
const PatchRequestRoom = 64 * kib

// checkRequestRoom refuses limits under which a patch script of
// patch_script_bytes does not fit in a request of request_bytes. It
// blames the later of the two settings (settings are in merge order):
// where the operator raised one past the other.
func checkRequestRoom(l Limits, settings []setting, errs *ErrorList) {
	if l.RequestBytes >= l.PatchScriptBytes+PatchRequestRoom {
		return
	}
	at := pos{File: "limits"}
	for _, s := range settings {
		if s.key == "limits.request_bytes" || s.key == "limits.patch_script_bytes" {
			at = s.at
		}
	}
	errs.add(&Error{File: at.File, Line: at.Line, Msg: fmt.Sprintf(
		"limits: request_bytes (%s) must be at least patch_script_bytes (%s) plus %s, the rest of a patch request, or the largest patch script allowed could never reach the broker; raise request_bytes or lower patch_script_bytes",
		formatSize(l.RequestBytes), formatSize(l.PatchScriptBytes), formatSize(PatchRequestRoom))})
}

func limitKeys() []string {
	out := make([]string, len(limitFields))
	for i, f := range limitFields {
		out[i] = f.key
	}
	return out
}

// DefaultLimits are the limits of a policy that sets none.
func DefaultLimits() Limits {
	var l Limits
	for _, f := range limitFields {
		f.set(&l, f.def)
	}
	return l
}

// HardCaps are the largest values any policy may set; a policy above one is
// refused, not silently clamped.
func HardCaps() Limits {
	var l Limits
	for _, f := range limitFields {
		f.set(&l, f.cap)
	}
	return l
}

func formatLimit(kind limitKind, v int64) string {
	switch kind {
	case limitDuration:
		return time.Duration(v).String()
	case limitSize:
		return formatSize(v)
	}
	return strconv.FormatInt(v, 10)
}

// formatSize writes a byte count in the largest binary unit that divides it.
func formatSize(v int64) string {
	switch {
	case v >= gib && v%gib == 0:
		return fmt.Sprintf("%dGiB", v/gib)
	case v >= mib && v%mib == 0:
		return fmt.Sprintf("%dMiB", v/mib)
	case v >= kib && v%kib == 0:
		return fmt.Sprintf("%dKiB", v/kib)
	}
	return fmt.Sprintf("%dB", v)
}

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"k": kib, "kib": kib, "kb": 1000,
	"m": mib, "mib": mib, "mb": 1000 * 1000,
	"g": gib, "gib": gib, "gb": 1000 * 1000 * 1000,
	"t": 1 << 40, "tib": 1 << 40, "tb": 1000 * 1000 * 1000 * 1000,
}

// parseSize reads "512", "256K", "256KiB", "1MB" (decimal), "4G". K, M, G and
// T without "B" are binary, as in systemd.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 || i > 18 {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit (K, M, G, KiB, MB, ...)", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use K, M, G, T, KiB, MiB, GiB, KB, MB, GB)", s, t[i:])
	}
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}

var durationUnits = []struct {
	name string
	d    time.Duration
}{
	// Longest names first so "min" is not read as "m" + "in".
	{"minutes", time.Minute}, {"minute", time.Minute}, {"min", time.Minute},
	{"seconds", time.Second}, {"second", time.Second}, {"sec", time.Second},
	{"hours", time.Hour}, {"hour", time.Hour}, {"hr", time.Hour},
	{"days", 24 * time.Hour}, {"day", 24 * time.Hour},
	{"weeks", 7 * 24 * time.Hour}, {"week", 7 * 24 * time.Hour},
	{"ms", time.Millisecond}, {"us", time.Microsecond}, {"ns", time.Nanosecond},
	{"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"d", 24 * time.Hour},
	{"w", 7 * 24 * time.Hour},
}

// parseDuration reads Go durations ("1h30m", "1.5s") and the systemd words
// ("5min", "2 days", "30sec"). With bareSeconds a plain number is seconds;
// otherwise a unit is required.
func parseDuration(s string, bareSeconds bool) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if t == "" || len(t) > 64 {
		return 0, fmt.Errorf("duration %q: want a number and a unit, such as 10s, 5min or 1h30m", s)
	}
	if bareSeconds {
		if n, err := strconv.ParseUint(t, 10, 32); err == nil {
			return time.Duration(n) * time.Second, nil
		}
	}
	var total time.Duration
	for t != "" {
		i := 0
		for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
			i++
		}
		if i == 0 {
			return 0, fmt.Errorf("duration %q: want a number and a unit, such as 10s, 5min or 1h30m", s)
		}
		num, err := strconv.ParseFloat(t[:i], 64)
		if err != nil || num > 1e9 {
			return 0, fmt.Errorf("duration %q: bad number %q", s, t[:i])
		}
		t = strings.TrimLeft(t[i:], " ")
		var unit time.Duration
		for _, u := range durationUnits {
			if strings.HasPrefix(t, u.name) {
				rest := t[len(u.name):]
				if rest != "" && (rest[0] >= 'a' && rest[0] <= 'z') {
					continue
				}
				unit, t = u.d, strings.TrimLeft(rest, " ")
				break
			}
		}
		if unit == 0 {
			return 0, fmt.Errorf("duration %q: missing or unknown unit (use ms, s, min, h, d)", s)
		}
		add := time.Duration(num * float64(unit))
		if add < 0 || total > (1<<62)-add {
			return 0, fmt.Errorf("duration %q is too long", s)
		}
		total += add
	}
	return total, nil
}
