// Package probe finds out what this host can do for diagnostics: kernel,
// bpftrace and the probe kinds that really attach, tracefs, cgroups and
// Proxmox. Slow facts are gathered once, in the background, and cached; cheap
// ones are re-read on every call.
package probe

import (
	"context"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Config says where to look. Tests point the paths at fakes.
type Config struct {
	// BpftraceCandidates are absolute paths tried in order.
	BpftraceCandidates []string
	// TracefsCandidates are tracefs mount points tried in order.
	TracefsCandidates []string
	// PveversionPath is run once, when it exists, for the Proxmox VE
	// version; whether this host is a node is the Proxmox reader's call.
	PveversionPath string
	// AttachTimeout bounds each bpftrace attach test.
	AttachTimeout time.Duration
	// Runner runs the probe's own fixed commands (bpftrace --version, the
	// attach test, pveversion). The broker's runs them through its
	// launcher, like every child it starts; nil runs nothing and reports
	// bpftrace as unchecked.
	Runner CommandRunner
}

// CommandRunner runs a fixed argv and returns its combined output.
type CommandRunner func(ctx context.Context, argv []string) (output []byte, exitCode int, err error)

// DefaultConfig is the production layout, without a Runner.
func DefaultConfig() Config {
	return Config{
		BpftraceCandidates: []string{"/usr/bin/bpftrace", "/usr/sbin/bpftrace", "/usr/local/bin/bpftrace"},
		TracefsCandidates:  []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"},
		PveversionPath:     "/usr/bin/pveversion",
		AttachTimeout:      10 * time.Second,
	}
}

// Prober answers Probe requests from cached facts.
type Prober struct {
	cfg    Config
	static *brokerv1.ProbeResponse

	once    sync.Once
	ready   chan struct{}
	mu      sync.Mutex
	tracing *tracingFacts
	fs      fsFacts
}

// fsFactsTTL bounds how stale the tracefs facts may be: a stat on tracefs
// costs as much as the rest of a Probe, and mounts change rarely.
const fsFactsTTL = 10 * time.Second

// fsFacts are what tracefs says, and when it was asked.
type fsFacts struct {
	at          time.Time
	tracefs     *brokerv1.TracefsInfo
	tracepoints *brokerv1.KindSupport
	kprobes     *brokerv1.KindSupport
}

// tracingFacts are the slow facts: they need bpftrace runs.
type tracingFacts struct {
	bpftrace   *brokerv1.BpftraceInfo
	kfunc      *brokerv1.KindSupport
	pveVersion string
}

// New returns a Prober; Start begins the slow checks.
func New(cfg Config) *Prober {
	return &Prober{cfg: cfg, static: hostFacts(), ready: make(chan struct{})}
}

// Start runs the slow checks in the background; they end with ctx or when
// done. Call it once; Probe waits for them.
func (p *Prober) Start(ctx context.Context) (wait func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.once.Do(func() {
			facts := p.checkSlow(ctx)
			p.mu.Lock()
			p.tracing = facts
			p.mu.Unlock()
			close(p.ready)
		})
	}()
	return func() { <-done }
}

// Probe returns the host's facts. It waits for the slow checks until ctx
// ends, then answers with what it has.
func (p *Prober) Probe(ctx context.Context) *brokerv1.ProbeResponse {
	select {
	case <-p.ready:
	case <-ctx.Done():
	}
	resp := proto.Clone(p.static).(*brokerv1.ProbeResponse)
	now := time.Now()
	resp.ProbedAt = timestamppb.New(now)
	resp.Bpftrace = &brokerv1.BpftraceInfo{Error: "bpftrace check still running"}
	kfunc := &brokerv1.KindSupport{Evidence: "attach test still running"}
	p.mu.Lock()
	fs := p.fsFactsAt(now)
	resp.Tracefs = fs.tracefs
	resp.Proxmox = &brokerv1.ProxmoxInfo{}
	resp.ProbeKinds = &brokerv1.ProbeKinds{Tracepoint: fs.tracepoints, Kprobe: fs.kprobes, Kfunc: kfunc}
	if p.tracing != nil {
		resp.Bpftrace = p.tracing.bpftrace
		resp.ProbeKinds.Kfunc = p.tracing.kfunc
		resp.Proxmox.Version = p.tracing.pveVersion
	}
	p.mu.Unlock()
	return resp
}

// fsFactsAt returns the tracefs facts, re-reading them when older than the
// TTL. The caller holds p.mu.
func (p *Prober) fsFactsAt(now time.Time) fsFacts {
	if p.fs.tracefs == nil || now.Sub(p.fs.at) > fsFactsTTL {
		tfs := p.tracefs()
		p.fs = fsFacts{at: now, tracefs: tfs, tracepoints: p.tracepoints(tfs), kprobes: p.kprobes(tfs)}
	}
	return p.fs
}

func hostFacts() *brokerv1.ProbeResponse {
	var u unix.Utsname
	resp := &brokerv1.ProbeResponse{}
	if err := unix.Uname(&u); err == nil {
		resp.KernelRelease = unix.ByteSliceToString(u.Release[:])
		resp.Arch = unix.ByteSliceToString(u.Machine[:])
	}
	return resp
}

func (p *Prober) tracefs() *brokerv1.TracefsInfo {
	for _, dir := range p.cfg.TracefsCandidates {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TRACEFS_MAGIC {
			return &brokerv1.TracefsInfo{Mounted: true, Path: dir}
		}
	}
	return &brokerv1.TracefsInfo{}
}

func (p *Prober) tracepoints(tfs *brokerv1.TracefsInfo) *brokerv1.KindSupport {
	if !tfs.Mounted {
		return &brokerv1.KindSupport{Evidence: "tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)"}
	}
	events := tfs.Path + "/events"
	if fi, err := os.Stat(events); err != nil || !fi.IsDir() {
		return &brokerv1.KindSupport{Evidence: events + " is missing"}
	}
	return &brokerv1.KindSupport{Available: true, Evidence: events + " exists"}
}

func (p *Prober) kprobes(tfs *brokerv1.TracefsInfo) *brokerv1.KindSupport {
	if !tfs.Mounted {
		return &brokerv1.KindSupport{Evidence: "tracefs is not mounted"}
	}
	path := tfs.Path + "/kprobe_events"
	if _, err := os.Stat(path); err != nil {
		return &brokerv1.KindSupport{Evidence: path + " is missing: the kernel has no kprobe support"}
	}
	return &brokerv1.KindSupport{Available: true, Evidence: path + " exists"}
}
