// Command nannyagent is the administrator's CLI. It talks to the worker on
// worker.sock (status, register, diagnose) and, for `policy …`, reads policy
// files itself. It never talks to the broker.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `usage: nannyagent <command> [flags]

commands:
  status                     the worker, the broker, the registration and the API
  register [--force]         register this host with NannyAPI (root only)
  diagnose "ISSUE"           investigate an issue and show the root cause
  policy check|explain|test  review policy files
  version                    print the version

flags common to worker commands:
  --socket PATH              the worker's socket (env NANNYAGENT_WORKER_SOCKET,
                             config key worker_socket)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "nannyagent", version)
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	case "status":
		return runStatus(rest, stdout, stderr)
	case "register":
		return runRegister(rest, stdout, stderr)
	case "diagnose":
		return runDiagnose(rest, stdout, stderr)
	case "policy":
		return runPolicy(rest, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "nannyagent: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
}
