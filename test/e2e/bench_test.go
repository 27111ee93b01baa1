package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
	"github.com/nannyai/nannyagent/test/stack"
	"github.com/nannyai/nannyagent/worker/investigate"
)

func benchStack(b *testing.B, policy string) (*stack.Stack, brokerv1.BrokerServiceClient) {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: the broker's runner creates cgroups")
	}
	s, err := stack.Start(context.Background(), stack.Options{BinDir: binDir, Policy: policy})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop() })
	conn, err := unixsock.Dial(s.BrokerSocket, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return s, brokerv1.NewBrokerServiceClient(conn)
}

const truePolicy = "version: 1\ncommands:\n  - {id: \"true\", program: /usr/bin/true}\n"

// BenchmarkRunCommandTrue is /bin/true through the broker process: policy
// decision, cgroups, fork and exec, and the gRPC round trip.
func BenchmarkRunCommandTrue(b *testing.B) {
	_, c := benchStack(b, truePolicy)
	req := &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"true"}}}}
	ctx := context.Background()
	for b.Loop() {
		resp, err := c.RunCommand(ctx, req)
		if err != nil || resp.GetExitCode() != 0 {
			b.Fatalf("%v %v", resp, err)
		}
	}
}

// BenchmarkExecTrueDirect is the baseline: a direct fork and exec.
func BenchmarkExecTrueDirect(b *testing.B) {
	for b.Loop() {
		if err := exec.Command("/usr/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProbeUnderLoad measures Probe while another connection keeps the
// broker's command runner saturated.
func BenchmarkProbeUnderLoad(b *testing.B) {
	s, probes := benchStack(b, truePolicy)
	conn, err := unixsock.Dial(s.BrokerSocket, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	flood := brokerv1.NewBrokerServiceClient(conn)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"true"}}}}
			for ctx.Err() == nil {
				_, _ = flood.RunCommand(ctx, req)
			}
		}()
	}
	for b.Loop() {
		if _, err := probes.Probe(context.Background(), &brokerv1.ProbeRequest{}); err != nil {
			b.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
}

// BenchmarkRunCommandTrueSpaced is the same with a pause between commands,
// as a model's commands arrive: the runner prepares and removes its run
// cgroups in the background, off the command's path, when it has the time.
func BenchmarkRunCommandTrueSpaced(b *testing.B) {
	_, c := benchStack(b, truePolicy)
	req := &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"true"}}}}
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		if resp, err := c.RunCommand(ctx, req); err != nil || resp.GetExitCode() != 0 {
			b.Fatalf("%v %v", resp, err)
		}
	}
}

// BenchmarkExecTrueDirectSpaced is the baseline with the same pauses.
func BenchmarkExecTrueDirectSpaced(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		time.Sleep(20 * time.Millisecond)
		b.StartTimer()
		if err := exec.Command("/usr/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTurnOfFiveSleeps is one AI turn of five `sleep 1` commands, run
// the way the worker runs a turn (in parallel, through the broker).
func BenchmarkTurnOfFiveSleeps(b *testing.B) {
	_, c := benchStack(b, "version: 1\ncommands:\n  - {id: sleep, program: /usr/bin/sleep, operands: [{name: s, type: number, min: 1, max: 5}]}\n")
	cmds := &investigate.Commands{Broker: c, Parse: parseForBench, Parallel: 8}
	turn := make([]investigate.Command, 5)
	for i := range turn {
		turn[i] = investigate.Command{ID: fmt.Sprintf("cmd_%d", i+1), Text: "sleep 1"}
	}
	for b.Loop() {
		for _, r := range cmds.Run(context.Background(), turn) {
			if r.ExitCode != 0 || r.Error != "" {
				b.Fatalf("%+v", r)
			}
		}
	}
}

func parseForBench(line string) ([]*brokerv1.Stage, error) {
	stages, err := policy.ParseCommandLine(line)
	if err != nil {
		return nil, err
	}
	out := make([]*brokerv1.Stage, len(stages))
	for i, s := range stages {
		out[i] = &brokerv1.Stage{Argv: s.Argv}
	}
	return out, nil
}
