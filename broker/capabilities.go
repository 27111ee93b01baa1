package broker

import (
	"fmt"
	"os"
	"strings"

	"github.com/nannyai/nannyagent/broker/proxmox"
	"github.com/nannyai/nannyagent/broker/trace"
	"github.com/nannyai/nannyagent/policy"
)

// capabilities are the runtime objects a policy configures. They are built
// with the policy and replaced with it on reload, so a handler always works
// with the limits and allow-lists of one policy.
type capabilities struct {
	tracer *trace.Runner
	// traceRules maps a trace pattern to the policy rule it came from, for
	// the decision log.
	traceRules map[string]string
	proxmox    *proxmox.Reader
}

// kprobeEvents marks a kernel with kprobe support (tracefs mounted).
var kprobeEvents = []string{"/sys/kernel/tracing/kprobe_events", "/sys/kernel/debug/tracing/kprobe_events"}

// capabilitiesFor builds what p configures, on the server's launcher and
// its trace slots (shared across policies, so a reload cannot double the
// traces running at once).
func (s *Server) capabilitiesFor(p *policy.Policy) (*capabilities, error) {
	tcfg, rules := traceConfig(p)
	tcfg.Slots = s.traceSlots
	tracer, err := trace.NewRunner(tcfg, s.runner, s.log)
	if err != nil {
		return nil, fmt.Errorf("trace settings from policy %s: %w", p.SHA256(), err)
	}
	px := p.Proxmox()
	lim := p.Limits()
	paths := make([]string, 0, len(px.Paths))
	for _, r := range px.Paths {
		paths = append(paths, r.Path)
	}
	reader, err := proxmox.New(proxmox.Config{
		PveshPath: px.Pvesh, PmxcfsRoot: px.PmxcfsRoot, AllowedPaths: paths,
		Timeout: lim.ProxmoxTimeout, OutputCap: int(lim.ProxmoxOutputBytes),
		Launcher: s.runner, ChildMemory: lim.ChildMemory, ChildTasks: lim.ChildTasks,
	})
	if err != nil {
		return nil, fmt.Errorf("proxmox settings from policy %s: %w", p.SHA256(), err)
	}
	return &capabilities{tracer: tracer, traceRules: rules, proxmox: reader}, nil
}

// traceConfig turns the policy's traces section and limits into the trace
// runner's settings. Rule targets become the probe names the runner checks
// every attached probe against: a tracepoint glob as written, a syscall
// name as its enter and exit tracepoints, a kernel function with its kind.
func traceConfig(p *policy.Policy) (trace.Config, map[string]string) {
	t := p.Traces()
	lim := p.Limits()
	rules := map[string]string{}
	add := func(pattern, id string) {
		if _, dup := rules[pattern]; !dup {
			rules[pattern] = id
		}
	}
	for _, r := range t.Rules {
		switch r.Kind {
		case trace.KindTracepoint:
			add(r.Target, r.ID)
		case trace.KindSyscall:
			if strings.Contains(r.Target, ":") {
				add(r.Target, r.ID)
				continue
			}
			add("syscalls:sys_enter_"+r.Target, r.ID)
			add("syscalls:sys_exit_"+r.Target, r.ID)
		case trace.KindKprobe, trace.KindKretprobe:
			add(r.Kind+":"+r.Target, r.ID)
		}
	}
	targets := make([]string, 0, len(rules))
	for pattern := range rules {
		targets = append(targets, pattern)
	}
	cfg := trace.Config{
		BpftracePath:     t.Bpftrace,
		MaxDuration:      lim.TraceMaxDuration,
		MaxConcurrent:    lim.ConcurrentTraces,
		OutputCap:        int(lim.TraceOutputBytes),
		AllowRaw:         t.AllowRawPrograms,
		AllowedKinds:     t.Kinds,
		AllowedTargets:   targets,
		KprobesAvailable: anyExists(kprobeEvents),
		ChildMemory:      lim.ChildMemory,
		ChildTasks:       lim.ChildTasks,
	}
	return cfg, rules
}

func anyExists(paths []string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}
