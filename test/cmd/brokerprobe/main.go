// Command brokerprobe sends one request to a broker socket and prints the
// JSON answer: a Probe by default, or the RunCommand, RunTrace, RunPatch
// or PatchResult request given as protobuf JSON. Tests run it as other
// uids to check who the broker serves, and inside a booted test system to
// make the socket-activated broker do real work.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
)

func main() {
	socket := flag.String("socket", "", "broker socket")
	call := flag.String("call", "Probe", "Probe, RunCommand, RunTrace, RunPatch or PatchResult")
	request := flag.String("request", "{}", "the request as protobuf JSON")
	timeout := flag.Duration("timeout", 20*time.Second, "how long to wait for the answer")
	flag.Parse()
	if err := send(*socket, *call, *request, *timeout); err != nil {
		fmt.Fprintln(os.Stderr, "brokerprobe:", err)
		os.Exit(1)
	}
}

func send(socket, call, request string, timeout time.Duration) error {
	conn, err := unixsock.Dial(socket, 16<<20)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := brokerv1.NewBrokerServiceClient(conn)
	var resp proto.Message
	switch call {
	case "Probe":
		req := &brokerv1.ProbeRequest{}
		if err := protojson.Unmarshal([]byte(request), req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		resp, err = c.Probe(ctx, req)
	case "RunCommand":
		req := &brokerv1.RunCommandRequest{}
		if err := protojson.Unmarshal([]byte(request), req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		resp, err = c.RunCommand(ctx, req)
	case "RunTrace":
		req := &brokerv1.RunTraceRequest{}
		if err := protojson.Unmarshal([]byte(request), req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		resp, err = c.RunTrace(ctx, req)
	case "RunPatch":
		req := &brokerv1.RunPatchRequest{}
		if err := protojson.Unmarshal([]byte(request), req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		resp, err = c.RunPatch(ctx, req)
	case "PatchResult":
		req := &brokerv1.PatchResultRequest{}
		if err := protojson.Unmarshal([]byte(request), req); err != nil {
			return fmt.Errorf("request: %w", err)
		}
		resp, err = c.PatchResult(ctx, req)
	default:
		return fmt.Errorf("unknown call %q", call)
	}
	if err != nil {
		return err
	}
	out, err := protojson.Marshal(resp)
	if err != nil {
		return err
	}
	fmt.Println(string(out))
	return nil
}
