package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nannyai/nannyagent/ipc/keypin"
)

const keygenUsage = `usage: nannyagent-broker keygen --out BASE
       nannyagent-broker pin FILE...

keygen writes an Ed25519 key pair for the vsock transport: BASE.key (the
private key, 0600) and BASE.pub (the public key), and prints the key's pin.
Make one for the broker (--out /etc/nannyagent/vsock/broker; the worker
pins it as broker_key_pins) and one per guest worker (copy BASE.key into
the guest; the policy pins it under transport.vsock_guests[].worker_keys).
It never replaces an existing file.

pin prints the pin of each key file (a .key or a .pub).
`

// runKeygen makes a key pair and prints its pin.
func runKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nannyagent-broker keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, keygenUsage) }
	out := fs.String("out", "", "write BASE.key and BASE.pub")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *out == "" || fs.NArg() != 0 {
		fmt.Fprint(stderr, keygenUsage)
		return 2
	}
	base := strings.TrimSuffix(*out, ".key")
	pin, err := keypin.Generate(base)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent-broker keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "wrote %s.key (private, 0600) and %s.pub\n%s\n", base, base, pin)
	return 0
}

// runPin prints the pin of each key file.
func runPin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprint(stderr, keygenUsage)
		return 2
	}
	code := 0
	for _, path := range args {
		data, err := os.ReadFile(path)
		if err == nil {
			var pin string
			if pin, err = keypin.PinOfPEM(data); err == nil {
				fmt.Fprintf(stdout, "%s  %s\n", pin, path)
				continue
			}
		}
		fmt.Fprintf(stderr, "nannyagent-broker pin: %s: %v\n", path, err)
		code = 1
	}
	return code
}
