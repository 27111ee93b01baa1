package broker

import (
	"context"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
)

// TestLargestAnswerFitsTheTransport: the largest answer the policy's hard
// caps allow (a pipeline's stdout and stderr, a patch result's output)
// fits the send limit, and so what the worker accepts: a policy that
// allows 16 MiB of stdout is not cut short by the transport.
func TestLargestAnswerFitsTheTransport(t *testing.T) {
	caps := policy.HardCaps()
	cmd := &brokerv1.RunCommandResponse{Id: strings.Repeat("i", maxIDBytes), Stdout: make([]byte, caps.StdoutBytes), Stderr: make([]byte, caps.StderrBytes),
		Decision: &brokerv1.Decision{Reason: "allowed", PolicySha256: strings.Repeat("f", 64)}}
	for range caps.PipelineStages {
		argv := make([]string, caps.ArgvCount)
		for i := range argv {
			argv[i] = strings.Repeat("a", caps.ArgvBytes/caps.ArgvCount)
		}
		cmd.Decision.Stages = append(cmd.Decision.Stages, &brokerv1.StageDecision{Allowed: true, RuleId: "rule", Program: "/usr/bin/tool", Argv: argv})
		cmd.Stages = append(cmd.Stages, &brokerv1.StageResult{Program: "/usr/bin/tool"})
	}
	patch := &brokerv1.PatchResultResponse{Stdout: make([]byte, caps.PatchOutputBytes), Stderr: make([]byte, caps.PatchOutputBytes), Error: strings.Repeat("e", 4096)}
	for name, m := range map[string]proto.Message{
		"RunCommand":  cmd,
		"PatchResult": patch,
		"ProxmoxGet":  &brokerv1.ProxmoxGetResponse{Json: make([]byte, caps.ProxmoxOutputBytes), Source: "pvesh"},
	} {
		if n := proto.Size(m); n > unixsock.DefaultLimits.MaxSendMsgSize {
			t.Errorf("largest %s answer is %d bytes, over the send limit of %d", name, n, unixsock.DefaultLimits.MaxSendMsgSize)
		}
	}
}

// TestReloadAppliesLimits: concurrent_commands and concurrent_traces take
// the reloaded policy's values.
func TestReloadAppliesLimits(t *testing.T) {
	b := startBrokerWith(t, 0, "version: 1\nlimits: {concurrent_commands: 2, concurrent_traces: 1}\n")
	if l, q := b.srv.runner.Gate(); l != 2 || q != 2 {
		t.Errorf("commands: %d running, %d waiting", l, q)
	}
	if err := os.WriteFile(b.policy, []byte("version: 1\nlimits: {concurrent_commands: 5, concurrent_traces: 3}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if l, q := b.srv.runner.Gate(); l != 5 || q != 5 {
		t.Errorf("commands after reload: %d running, %d waiting", l, q)
	}
	if got := b.srv.policies.current().caps.tracer.Config().MaxConcurrent; got != 3 || b.srv.policies.current().caps.tracer.Config().Slots != b.srv.traceSlots {
		t.Errorf("traces after reload: %d, shared slots %v", got, b.srv.policies.current().caps.tracer.Config().Slots == b.srv.traceSlots)
	}
}

// TestProbeChecksGoThroughTheLauncher: the probe's own commands run as
// every child does, in a run cgroup with no_new_privs.
func TestProbeChecksGoThroughTheLauncher(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: run cgroups")
	}
	b := startBroker(t, 0)
	out, code, err := b.srv.probeRunner(context.Background(), []string{"/bin/sh", "-c", "cat /proc/self/cgroup; grep NoNewPrivs /proc/self/status"})
	if err != nil || code != 0 || !strings.Contains(string(out), "/nannyagent-exec/run-") || !strings.Contains(string(out), "NoNewPrivs:\t1") {
		t.Errorf("probe check ran outside the launcher: %d %v\n%s", code, err, out)
	}
}

// TestMemoryCeiling follows the limits it is computed from.
func TestMemoryCeiling(t *testing.T) {
	l := policy.DefaultLimits()
	base := MemoryCeiling(l)
	l.ConcurrentCommands++
	if MemoryCeiling(l)-base != 2*max(l.StdoutBytes+l.StderrBytes, l.ProxmoxOutputBytes) {
		t.Error("a command slot more does not raise the ceiling by its output, twice")
	}
	l.RequestBytes += 1 << 20
	if MemoryCeiling(l) <= base {
		t.Error("request_bytes does not count")
	}
}
