package investigate

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

type cannedBroker struct{ resp *brokerv1.RunCommandResponse }

func (b cannedBroker) RunCommand(context.Context, *brokerv1.RunCommandRequest, ...grpc.CallOption) (*brokerv1.RunCommandResponse, error) {
	return b.resp, nil
}

// A command killed by its time limit keeps what it wrote, and the model
// is told the output was cut there.
func TestTimedOutOutputIsKeptAndMarked(t *testing.T) {
	c := &Commands{
		Broker: cannedBroker{&brokerv1.RunCommandResponse{
			Decision: &brokerv1.Decision{Allowed: true}, ExitCode: -1, TimedOut: true,
			Stdout: []byte("64 bytes from 127.0.0.1: icmp_seq=1"),
		}},
		Parse: func(string) ([]*brokerv1.Stage, error) { return []*brokerv1.Stage{{Argv: []string{"ping"}}}, nil },
	}
	r := c.Run(context.Background(), []Command{{ID: "c1", Text: "ping -c 10 127.0.0.1"}})[0]
	if !r.TimedOut || !strings.HasPrefix(r.Output, "64 bytes from 127.0.0.1: icmp_seq=1\n") ||
		!strings.Contains(r.Output, "[cut: the command was killed by its time limit") || !strings.Contains(r.Error, "timed out") {
		t.Errorf("result %+v", r)
	}
}
