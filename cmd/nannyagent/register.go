package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

func runRegister(args []string, stdout, stderr io.Writer) int {
	var force bool
	c, err := parseClientFlags("register", args, stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "replace a live registration")
	})
	if err != nil {
		return 2
	}
	cc, client, err := connect(c)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return 1
	}
	defer cc.Close()
	// Device-flow registration waits for a person; no client timeout.
	stream, err := client.Register(context.Background(), &workerv1.RegisterRequest{Force: force})
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, c.socket))
		return 1
	}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, c.socket))
			return 1
		}
		printRegisterEvent(stdout, ev)
	}
}

func printRegisterEvent(w io.Writer, ev *workerv1.RegisterResponse) {
	switch e := ev.GetEvent().(type) {
	case *workerv1.RegisterResponse_DeviceCode:
		fmt.Fprintf(w, "To register this host, open:\n  %s\nand enter the code:\n  %s\n(the code expires in %d seconds)\n",
			e.DeviceCode.GetVerificationUri(), e.DeviceCode.GetUserCode(), e.DeviceCode.GetExpiresInSeconds())
	case *workerv1.RegisterResponse_Progress:
		fmt.Fprintln(w, e.Progress)
	case *workerv1.RegisterResponse_Registered:
		fmt.Fprintf(w, "Registered: agent %s (%s)\n", e.Registered.GetAgentId(), e.Registered.GetMode())
	}
}
