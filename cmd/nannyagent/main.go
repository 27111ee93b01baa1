// Command nannyagent is the administrator's CLI. It talks to the worker on
// worker.sock (status, register, diagnose) and, for `policy …`, reads policy
// files itself. It never talks to the broker, and it runs no diagnosis
// itself: the worker does, and the broker runs what the policy allows.
//
// It also takes the reference agent's command lines (`--status`,
// `-register`, `--diagnose "…"`, legacy positionals, the override flags), so
// scripts written for that agent keep working or fail with one sentence
// saying where the setting lives now.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// Exit codes of the worker commands.
const (
	exitOK     = 0 // done: status healthy, diagnosis resolved, registered
	exitFailed = 1 // failed, or status found something degraded
	exitUsage  = 2 // bad command line, or a flag whose setting lives elsewhere now
)

const usage = `usage: nannyagent COMMAND [flags]

commands:
  status                  what works and what does not, with the fix for each
                          problem; exit 1 when something is degraded
  register [--force]      register this host with NannyAPI (root only)
  diagnose "ISSUE"        investigate an issue: every command (allowed or
                          denied, and by which rule), every trace and the
                          model's reasoning, then the root cause and plan;
                          exit 0 resolved, 1 failed
  diagnose                the same, one issue at a time at a prompt
                          ("quit" or "exit" leaves)
  policy check|explain|test   review policy files (nannyagent policy help)
  version                 print the version

flags:
  --json                  status: one JSON object; diagnose: JSON lines
  -v, --verbose           diagnose: each command's first output lines
  --timeout DURATION      give up after this long (status: 30s by default;
                          register and diagnose: no limit by default, the
                          worker's own limits apply)
  --priority P            diagnose: low, medium (default) or high
  --force                 register: replace a live registration
  --socket PATH           the worker's socket (env NANNYAGENT_WORKER_SOCKET,
                          config key worker_socket)

The reference agent's spellings work too: --status, --register,
--diagnose "ISSUE", --version, --help (or with one dash), and no command for
the prompt. Its overrides --api-url, --token-path, --agent-id,
--metrics-interval and --proxmox-interval are accepted when they match the
worker's settings and refused otherwise (the worker's config.yaml holds
them now); --debug is -v; --portal-url is ignored, as it was there.
--daemon is gone: the daemons are the systemd units.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "policy" {
		return runPolicy(args[1:], stdout, stderr)
	}
	o, err := parseArgs(args, os.Getenv)
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "nannyagent: %v\n(nannyagent --help shows the commands)\n", err)
			return exitUsage
		}
		fmt.Fprintln(stderr, "nannyagent:", err)
		return exitFailed
	}
	switch o.command {
	case cmdVersion:
		// The reference agent's two lines; scripts match the first.
		fmt.Fprintf(stdout, "nannyagent version %s\nLinux diagnostic agent with eBPF capabilities\n", version)
		return exitOK
	case cmdHelp:
		fmt.Fprint(stdout, usage)
		return exitOK
	case cmdDaemon:
		fmt.Fprintln(stderr, daemonGone)
		return exitUsage
	}
	if code, ok := checkOverrides(o, stderr); !ok {
		return code
	}
	switch o.command {
	case cmdStatus:
		return runStatus(o, stdout, stderr)
	case cmdRegister:
		return runRegister(o, stdout, stderr)
	case cmdDiagnose:
		return runDiagnose(o, stdout, stderr)
	default:
		return runInteractive(o, stdin, stdout, stderr)
	}
}

// daemonGone answers the reference agent's --daemon.
const daemonGone = "nannyagent: --daemon is gone: the daemons are the systemd units now " +
	"(nannyagent-worker.service runs the agent, nannyagent-broker.socket starts the root broker on demand); " +
	"start them with: systemctl enable --now nannyagent-worker.service"
