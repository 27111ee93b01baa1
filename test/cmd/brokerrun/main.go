// Command brokerrun sends RunCommand requests to a broker socket, one per
// command line read from standard input, and prints each answer as one
// line of JSON, in input order. Tests run it as the worker's account, so
// the broker judges the requests exactly as it judges the real worker's.
// A line the command-line parser refuses is sent as its blank-separated
// words, as a compromised worker would.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/policy"
)

func main() {
	socket := flag.String("socket", "", "broker socket")
	parallel := flag.Int("parallel", 1, "requests in flight at once")
	timeout := flag.Duration("timeout", 30*time.Second, "bound on each request")
	flag.Parse()
	conn, err := unixsock.Dial(*socket, 16<<20)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := brokerv1.NewBrokerServiceClient(conn)
	var lines []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := sc.Text(); strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	out := make([]string, len(lines))
	sem := make(chan struct{}, max(*parallel, 1))
	var wg sync.WaitGroup
	for i, line := range lines {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = send(client, line, *timeout)
		})
	}
	wg.Wait()
	for _, o := range out {
		fmt.Println(o)
	}
}

func send(c brokerv1.BrokerServiceClient, line string, timeout time.Duration) string {
	req := &brokerv1.RunCommandRequest{CommandLine: line}
	stages, err := policy.ParseCommandLine(line)
	if err != nil {
		req.Stages = []*brokerv1.Stage{{Argv: strings.Fields(line)}}
	}
	for _, st := range stages {
		req.Stages = append(req.Stages, &brokerv1.Stage{Argv: st.Argv, StdoutToNull: st.StdoutToNull, StderrToNull: st.StderrToNull, StderrToStdout: st.StderrToStdout})
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := c.RunCommand(ctx, req)
	if err != nil {
		resp = &brokerv1.RunCommandResponse{Error: "rpc: " + err.Error(), ExitCode: -2}
	}
	b, _ := protojson.Marshal(resp)
	return string(b)
}
