package main

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// runRegister registers the host through the worker (root only; the
// worker checks). A device-flow registration waits for a person, so there
// is no time limit unless --timeout sets one.
func runRegister(o *options, stdout, stderr io.Writer) int {
	cc, client, err := connect(o.socket)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return exitFailed
	}
	defer cc.Close()
	ctx, cancel := withTimeout(o, 0)
	defer cancel()
	stream, err := client.Register(ctx, &workerv1.RegisterRequest{Force: o.force})
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", registerError(o, err))
		return exitFailed
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return exitOK
		}
		if err != nil {
			fmt.Fprintln(stderr, "nannyagent:", registerError(o, err))
			return exitFailed
		}
		printRegisterEvent(stdout, ev)
	}
}

func registerError(o *options, err error) string {
	if status.Code(err) == codes.DeadlineExceeded && o.set["timeout"] {
		return fmt.Sprintf("registration did not finish within --timeout %s", o.timeout)
	}
	return explainRPC(err, o.socket)
}

func printRegisterEvent(w io.Writer, ev *workerv1.RegisterResponse) {
	switch e := ev.GetEvent().(type) {
	case *workerv1.RegisterResponse_DeviceCode:
		fmt.Fprintf(w, "To register this host, open:\n  %s\nand enter the code:\n  %s\n(the code expires in %d seconds)\n",
			clean(e.DeviceCode.GetVerificationUri()), clean(e.DeviceCode.GetUserCode()), e.DeviceCode.GetExpiresInSeconds())
	case *workerv1.RegisterResponse_Progress:
		fmt.Fprintln(w, clean(e.Progress))
	case *workerv1.RegisterResponse_Registered:
		r := e.Registered
		id := clean(r.GetAgentId())
		fmt.Fprintf(w, "Registered: agent %s (%s)\n", id, clean(r.GetMode()))
		if r.GetStoredIn() != "" {
			fmt.Fprintf(w, "The agent id is stored in %s (key agent_id); `nannyagent status` shows it.\n", clean(r.GetStoredIn()))
		}
		if r.GetMode() == "static" {
			fmt.Fprintf(w, "To keep this id if that file is lost, add this line to %s:\n  agent_id: %s\n", configFile, id)
		}
		fmt.Fprintln(w, "Next: nannyagent status")
	}
}
