package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
	"github.com/nannyai/nannyagent/test/stack"
)

// benchRequest is one kind of request sent as the worker would not.
type benchRequest struct {
	method string
	msg    proto.Message
}

// largestAdmitted is, per RPC, the largest request the default limits
// admit (it passes the broker's measure and is decoded).
func largestAdmitted(l policy.Limits) map[string]benchRequest {
	cmd := &brokerv1.RunCommandRequest{Id: strings.Repeat("i", 256), CommandLine: strings.Repeat("c", policy.MaxCommandLine)}
	for range l.PipelineStages {
		argv := make([]string, l.ArgvCount)
		for i := range argv {
			argv[i] = strings.Repeat("a", l.ArgvBytes/l.ArgvCount)
		}
		cmd.Stages = append(cmd.Stages, &brokerv1.Stage{Argv: argv})
	}
	patch := &brokerv1.RunPatchRequest{OperationId: "op", Script: make([]byte, l.PatchScriptBytes), Sha256: strings.Repeat("f", 64)}
	for range 256 {
		patch.Exclusions = append(patch.Exclusions, strings.Repeat("p", 128))
	}
	return map[string]benchRequest{
		"Probe":          {brokerv1.BrokerService_Probe_FullMethodName, &brokerv1.ProbeRequest{}},
		"CollectMetrics": {brokerv1.BrokerService_CollectMetrics_FullMethodName, &brokerv1.CollectMetricsRequest{}},
		"RunCommand":     {brokerv1.BrokerService_RunCommand_FullMethodName, cmd},
		"RunTrace": {brokerv1.BrokerService_RunTrace_FullMethodName, &brokerv1.RunTraceRequest{Spec: &brokerv1.TraceSpec{
			Kind: brokerv1.TraceKind_TRACE_KIND_RAW, Program: strings.Repeat("p", 64<<10), Description: strings.Repeat("d", 4096)}}},
		"ProxmoxGet":  {brokerv1.BrokerService_ProxmoxGet_FullMethodName, &brokerv1.ProxmoxGetRequest{Path: "/" + strings.Repeat("p", 255)}},
		"RunPatch":    {brokerv1.BrokerService_RunPatch_FullMethodName, patch},
		"PatchResult": {brokerv1.BrokerService_PatchResult_FullMethodName, &brokerv1.PatchResultRequest{OperationId: strings.Repeat("o", 256)}},
		"Reboot":      {brokerv1.BrokerService_Reboot_FullMethodName, &brokerv1.RebootRequest{RebootId: strings.Repeat("r", 256), Vmid: "100", Reason: strings.Repeat("w", 256)}},
	}
}

// largestHostile is, per RPC, a request just under request_bytes: the
// largest the transport reads, which the broker refuses by its measure. For
// RunCommand it is the attack of issue 12: empty stages, as many as fit.
func largestHostile(l policy.Limits) map[string]benchRequest {
	n := int(l.RequestBytes) - 1024
	stages := &brokerv1.RunCommandRequest{Stages: make([]*brokerv1.Stage, n/4)}
	empty := &brokerv1.Stage{Argv: []string{""}}
	for i := range stages.Stages {
		stages.Stages[i] = empty
	}
	filler := &brokerv1.ProxmoxGetRequest{Path: strings.Repeat("x", n)}
	out := map[string]benchRequest{}
	for name, r := range largestAdmitted(l) {
		out[name] = benchRequest{r.method, filler}
	}
	out["RunCommand"] = benchRequest{brokerv1.BrokerService_RunCommand_FullMethodName, stages}
	out["RunPatch"] = benchRequest{brokerv1.BrokerService_RunPatch_FullMethodName, &brokerv1.RunPatchRequest{Script: make([]byte, n)}}
	return out
}

// BenchmarkBrokerMemoryUnderLargestRequests sends, as the worker's account,
// 4 concurrent requests of the largest size the default limits admit for
// each RPC (and, as "hostile", of the largest size the transport reads,
// refused by the broker's measure), and reports the broker's VmHWM above
// its idle VmRSS in MiB. Each kind gets a fresh broker.
func BenchmarkBrokerMemoryUnderLargestRequests(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the worker's account")
	}
	lim := policy.DefaultLimits()
	for _, scenario := range []struct {
		name string
		reqs map[string]benchRequest
	}{{"admitted", largestAdmitted(lim)}, {"hostile", largestHostile(lim)}} {
		for _, rpc := range []string{"Probe", "RunCommand", "RunTrace", "CollectMetrics", "ProxmoxGet", "RunPatch", "PatchResult", "Reboot"} {
			r := scenario.reqs[rpc]
			b.Run(scenario.name+"/"+rpc, func(b *testing.B) {
				s, err := stack.Start(context.Background(), stack.Options{BinDir: binDir})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Stop()
				_, conn := workerClient(b, s)
				idle := settle(b, s, conn)
				pid := s.BrokerProcess().Pid()
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					var wg sync.WaitGroup
					for range 4 {
						wg.Go(func() {
							ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
							defer cancel()
							// Refusals are the expected answers here,
							// and any answer fits Empty.
							_ = conn.Invoke(ctx, r.method, r.msg, new(emptypb.Empty))
						})
					}
					wg.Wait()
				}
				hwm, err := procKiB(pid, "VmHWM")
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric((hwm-idle)/1024, "MiB-above-idle")
				b.ReportMetric(float64(proto.Size(r.msg))/(1<<20), "MiB-request")
			})
		}
	}
}

// settle waits until the broker is up and idle, and returns its VmRSS in KiB.
func settle(b *testing.B, s *stack.Stack, conn *grpc.ClientConn) float64 {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := conn.Invoke(ctx, brokerv1.BrokerService_Probe_FullMethodName, &brokerv1.ProbeRequest{}, new(brokerv1.ProbeResponse)); err != nil {
		b.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the start-up release of freed memory
	rss, err := procKiB(s.BrokerProcess().Pid(), "VmRSS")
	if err != nil {
		b.Fatal(err)
	}
	return rss
}
