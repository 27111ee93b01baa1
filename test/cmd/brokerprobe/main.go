// Command brokerprobe sends one Probe to a broker socket and prints the JSON
// answer. Tests run it as other uids to check who the broker serves.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
)

func main() {
	socket := flag.String("socket", "", "broker socket")
	flag.Parse()
	conn, err := unixsock.Dial(*socket, 16<<20)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := brokerv1.NewBrokerServiceClient(conn).Probe(ctx, &brokerv1.ProbeRequest{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, _ := protojson.Marshal(resp)
	fmt.Println(string(out))
}
