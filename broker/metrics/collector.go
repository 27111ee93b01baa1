// Package metrics collects the host's raw counters and facts for the broker's
// CollectMetrics RPC: cumulative CPU times, memory, filesystems, load,
// network byte counters, processes, uptime, block devices, OS identity and
// addresses. It keeps no state between calls and never sleeps; rates are the
// worker's job. It never starts a program: every source reads kernel or OS
// files (through gopsutil where that reads files, through small readers of
// its own elsewhere).
//
// Each source lives in its own file and fills only its own fields. A source
// that fails leaves its fields empty and adds a SourceError naming it; the
// rest of the sample is still returned.
package metrics

import (
	"context"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// DefaultMaxFilesystems caps the filesystem list: a Proxmox node with ZFS
// mounts one dataset per container, and the backend stores the list whole.
const DefaultMaxFilesystems = 256

// Config says where the collector reads from. Zero values mean the host's
// real paths.
type Config struct {
	// Roots are the procfs, sysfs, /etc, /run, /dev and /usr/lib roots, like
	// node_exporter's --path.procfs; tests point them at fixture trees.
	Roots Roots
	// MaxFilesystems caps the filesystem list (DefaultMaxFilesystems if 0).
	MaxFilesystems int
	// Now stamps collected_at; time.Now if nil.
	Now func() time.Time
}

// Collector gathers one metrics sample per Collect call.
type Collector struct {
	roots   Roots
	maxFS   int
	now     func() time.Time
	sources []source
}

// source is one collector: it fills its part of the response or fails alone.
type source struct {
	name string
	fill func(ctx context.Context, c *call, out *brokerv1.CollectMetricsResponse) error
}

// call is one Collect invocation: files several sources share are read once.
type call struct {
	*Collector
	stat     *procStat
	statErr  error
	statRead bool
}

// procStat reads and parses <proc>/stat once per call.
func (c *call) procStat() (*procStat, error) {
	if !c.statRead {
		c.statRead = true
		c.stat, c.statErr = readProcStat(c.roots.proc("stat"))
	}
	return c.stat, c.statErr
}

// New returns a collector for cfg.
func New(cfg Config) *Collector {
	c := &Collector{
		roots: cfg.Roots.withDefaults(),
		maxFS: cfg.MaxFilesystems,
		now:   cfg.Now,
	}
	if c.maxFS <= 0 {
		c.maxFS = DefaultMaxFilesystems
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.sources = []source{
		{"cpu", collectCPUTimes},
		{"cpu_counts", collectCPUCounts},
		{"memory", collectMemory},
		{"swap", collectSwap},
		{"filesystems", collectFilesystems},
		{"load", collectLoad},
		{"network", collectNetwork},
		{"processes", collectProcesses},
		{"uptime", collectUptime},
		{"block_devices", collectBlockDevices},
		{"host", collectHost},
		{"addresses", collectAddresses},
	}
	return c
}

// Collect reads every source once. It never fails as a whole: a source that
// fails is named in the response's errors and its fields stay empty.
func (c *Collector) Collect(ctx context.Context) *brokerv1.CollectMetricsResponse {
	ctx = c.roots.gopsutilContext(ctx)
	out := &brokerv1.CollectMetricsResponse{CollectedAt: timestamppb.New(c.now())}
	cl := &call{Collector: c}
	for _, s := range c.sources {
		if err := ctx.Err(); err != nil {
			out.Errors = append(out.Errors, &brokerv1.SourceError{Source: s.name, Error: err.Error()})
			continue
		}
		if err := s.fill(ctx, cl, out); err != nil {
			out.Errors = append(out.Errors, &brokerv1.SourceError{Source: s.name, Error: err.Error()})
		}
	}
	return out
}
