package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/nannyai/nannyagent/ipc/lastserved"
)

// The commands the CLI runs.
const (
	cmdStatus      = "status"
	cmdRegister    = "register"
	cmdDiagnose    = "diagnose"
	cmdInteractive = "interactive"
	cmdDaemon      = "daemon"
	cmdVersion     = "version"
	cmdHelp        = "help"
)

// options are one invocation's command and flags. Both spellings lead
// here: ours (`nannyagent status --json`) and the reference agent's
// (`nannyagent --status`, `-status`, `--diagnose "…"`, flags before a
// legacy positional command).
type options struct {
	command string
	// issue is the diagnose text; empty with command diagnose means the
	// interactive prompt.
	issue string

	socket string
	// servedRecord is the broker's record of whom it served (status).
	servedRecord string
	timeout      time.Duration
	json         bool
	verbose      bool
	force        bool
	priority     string

	// The reference agent's overrides; set records which were given.
	apiURL, portalURL, tokenPath, agentID string
	metricsInterval, proxmoxInterval      int
	debug                                 bool
	set                                   map[string]bool
}

// usageError is a bad command line: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// commandFlags are the reference agent's command flags, in the order it
// picks one when several are given.
var commandFlags = []string{cmdVersion, cmdHelp, cmdStatus, cmdRegister, cmdDiagnose, cmdDaemon}

// newFlagSet defines every flag any command takes; a flag that means
// nothing to the command at hand is harmless (the reference agent took
// all of them everywhere too).
func newFlagSet(o *options, commands map[string]*bool, diagnose *string) *flag.FlagSet {
	fs := flag.NewFlagSet("nannyagent", flag.ContinueOnError)
	// Errors come back from Parse and are printed once, with the usage.
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.socket, "socket", "/run/nannyagent/worker.sock", "the worker's socket")
	fs.DurationVar(&o.timeout, "timeout", 0, "give up after this long")
	fs.StringVar(&o.servedRecord, "served-record", lastserved.DefaultPath, "status: the broker's record of the workers it served (root only)")
	fs.BoolVar(&o.json, "json", false, "print JSON")
	fs.BoolVar(&o.verbose, "v", false, "show each command's first output lines")
	fs.BoolVar(&o.verbose, "verbose", false, "same as -v")
	fs.BoolVar(&o.force, "force", false, "register: replace a live registration")
	fs.StringVar(&o.priority, "priority", "medium", "diagnose: low, medium or high")
	fs.String("config", configFile, "config file (for worker_socket)")
	for _, c := range []string{cmdVersion, cmdHelp, cmdStatus, cmdRegister, cmdDaemon} {
		commands[c] = fs.Bool(c, false, "the reference agent's --"+c)
	}
	fs.StringVar(diagnose, "diagnose", "", "the reference agent's --diagnose \"ISSUE\"")
	fs.StringVar(&o.apiURL, "api-url", "", "reference override (the worker's nannyapi_url)")
	fs.StringVar(&o.portalURL, "portal-url", "", "reference override (ignored, as it was there)")
	fs.StringVar(&o.tokenPath, "token-path", "", "reference override (the worker's token_path)")
	fs.StringVar(&o.agentID, "agent-id", "", "reference override (the worker's agent_id)")
	fs.IntVar(&o.metricsInterval, "metrics-interval", 0, "reference override (the worker's metrics_interval)")
	fs.IntVar(&o.proxmoxInterval, "proxmox-interval", 0, "reference override (the worker's proxmox_interval)")
	fs.BoolVar(&o.debug, "debug", false, "reference override: same as -v")
	return fs
}

// parseArgs reads a command line in either spelling. Flags may come before
// or after the command and the issue's words; "--" ends the flags.
func parseArgs(args []string, getenv func(string) string) (*options, error) {
	o := &options{set: map[string]bool{}}
	commands := map[string]*bool{}
	var diagnose string
	fs := newFlagSet(o, commands, &diagnose)
	flags, words, err := splitArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			o.command = cmdHelp
			return o, nil
		}
		return nil, &usageError{err.Error()}
	}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if o.set["debug"] && o.debug {
		o.verbose = true
	}
	if err := o.pickCommand(words, commands, diagnose); err != nil {
		return nil, err
	}
	if !o.set["socket"] {
		o.socket = workerSocket(getenv, fs.Lookup("config").Value.String(), o.socket)
	}
	switch o.priority {
	case "low", "medium", "high":
	default:
		return nil, &usageError{fmt.Sprintf("--priority %q: use low, medium or high", o.priority)}
	}
	if o.timeout < 0 {
		return nil, &usageError{"--timeout must not be negative"}
	}
	return o, nil
}

// pickCommand takes the positional command (ours, or the reference agent's
// legacy one) and the command flags, in the reference agent's precedence.
func (o *options) pickCommand(words []string, commands map[string]*bool, diagnose string) error {
	chosen := map[string]bool{cmdDiagnose: o.set["diagnose"]}
	for name, v := range commands {
		if *v {
			chosen[name] = true
		}
	}
	issueWords := []string(nil)
	if len(words) > 0 {
		switch w := words[0]; w {
		case cmdStatus, cmdRegister, cmdDaemon, cmdVersion, cmdHelp:
			if len(words) > 1 {
				return &usageError{fmt.Sprintf("nannyagent %s takes no arguments (got %q)", w, strings.Join(words[1:], " "))}
			}
			chosen[w] = true
		case cmdDiagnose:
			chosen[w] = true
			issueWords = words[1:]
		default:
			if o.set["diagnose"] {
				return &usageError{fmt.Sprintf("quote the issue: --diagnose %q", strings.Join(append([]string{diagnose}, words...), " "))}
			}
			return &usageError{fmt.Sprintf("unknown command %q", w)}
		}
	}
	for _, c := range commandFlags {
		if chosen[c] {
			o.command = c
			break
		}
	}
	if o.command == "" {
		// The reference agent with no command ran its interactive prompt.
		o.command = cmdInteractive
	}
	if o.command == cmdDiagnose {
		o.issue = strings.TrimSpace(strings.Join(issueWords, " "))
		if o.set["diagnose"] {
			if o.issue != "" && strings.TrimSpace(diagnose) != "" {
				return &usageError{"give the issue once: either --diagnose \"ISSUE\" or diagnose \"ISSUE\""}
			}
			if o.issue == "" {
				o.issue = strings.TrimSpace(diagnose)
				if o.issue == "" {
					return &usageError{"--diagnose needs the issue: --diagnose \"PostgreSQL queries are slow\""}
				}
			}
		}
		if o.issue == "" {
			o.command = cmdInteractive
		}
	}
	return nil
}

// splitArgs separates flags (with their values) from positional words, so
// flags may follow the command and the issue. A flag takes the next
// argument as its value unless it is boolean or written --flag=value.
func splitArgs(fs *flag.FlagSet, args []string) (flags, words []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(words, args[i+1:]...), nil
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if strings.Contains(name, "=") {
				continue
			}
			f := fs.Lookup(name)
			if f == nil || isBool(f) {
				continue
			}
			if i+1 >= len(args) {
				return nil, nil, &usageError{fmt.Sprintf("flag needs an argument: %s", a)}
			}
			i++
			flags = append(flags, args[i])
		default:
			words = append(words, a)
		}
	}
	return flags, words, nil
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// workerSocket is NANNYAGENT_WORKER_SOCKET, else the config file's
// worker_socket when this user may read the file (an admin-group member
// usually may not), else def.
func workerSocket(getenv func(string) string, cfgFile, def string) string {
	if v := getenv("NANNYAGENT_WORKER_SOCKET"); v != "" {
		return v
	}
	f, err := os.Open(cfgFile)
	if err != nil {
		return def
	}
	defer f.Close()
	// Only worker_socket is taken: the rest (the static token among it) is
	// none of the CLI's business. The policy's YAML decoder reads it, so
	// the CLI links one YAML package, not the worker's configuration too.
	var doc struct {
		WorkerSocket string `yaml:"worker_socket"`
	}
	if err := yaml.NewDecoder(io.LimitReader(f, maxConfigBytes)).Decode(&doc); err != nil || doc.WorkerSocket == "" {
		return def
	}
	return doc.WorkerSocket
}

// maxConfigBytes bounds how much of the config file the CLI reads.
const maxConfigBytes = 1 << 20
