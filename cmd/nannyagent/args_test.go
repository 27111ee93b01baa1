package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func TestParseArgsBothSpellings(t *testing.T) {
	cases := []struct {
		args    []string
		command string
		issue   string
		check   func(*options) bool
	}{
		{[]string{"status"}, cmdStatus, "", nil},
		{[]string{"--status"}, cmdStatus, "", nil},
		{[]string{"-status"}, cmdStatus, "", nil},
		{[]string{"--status", "--json"}, cmdStatus, "", func(o *options) bool { return o.json }},
		{[]string{"status", "--json", "--timeout", "5s"}, cmdStatus, "", func(o *options) bool { return o.json && o.timeout == 5*time.Second }},
		{[]string{"--register"}, cmdRegister, "", nil},
		{[]string{"-register", "-force"}, cmdRegister, "", func(o *options) bool { return o.force }},
		{[]string{"register", "--force"}, cmdRegister, "", func(o *options) bool { return o.force }},
		{[]string{"--diagnose", "the disk is slow"}, cmdDiagnose, "the disk is slow", nil},
		{[]string{"-diagnose=the disk is slow"}, cmdDiagnose, "the disk is slow", nil},
		{[]string{"diagnose", "the", "disk", "is", "slow", "-v"}, cmdDiagnose, "the disk is slow", func(o *options) bool { return o.verbose }},
		{[]string{"diagnose", "--json", "--", "-x flag is", "slow"}, cmdDiagnose, "-x flag is slow", func(o *options) bool { return o.json }},
		{[]string{"--debug", "diagnose", "the disk is slow"}, cmdDiagnose, "the disk is slow", func(o *options) bool { return o.verbose }},
		{[]string{"--debug=false", "diagnose", "the disk is slow"}, cmdDiagnose, "the disk is slow", func(o *options) bool { return !o.verbose && o.set["debug"] }},
		{[]string{"diagnose"}, cmdInteractive, "", nil},
		{[]string{}, cmdInteractive, "", nil},
		{[]string{"--debug"}, cmdInteractive, "", nil},
		{[]string{"--version"}, cmdVersion, "", nil},
		{[]string{"-version"}, cmdVersion, "", nil},
		{[]string{"version"}, cmdVersion, "", nil},
		{[]string{"--help"}, cmdHelp, "", nil},
		{[]string{"-h"}, cmdHelp, "", nil},
		{[]string{"-help"}, cmdHelp, "", nil},
		{[]string{"--daemon"}, cmdDaemon, "", nil},
		{[]string{"daemon"}, cmdDaemon, "", nil},
		// The reference agent's precedence: version, help, status, register, diagnose, daemon.
		{[]string{"--status", "--version"}, cmdVersion, "", nil},
		{[]string{"--register", "--status"}, cmdStatus, "", nil},
		{[]string{"--daemon", "--diagnose", "the disk is slow"}, cmdDiagnose, "the disk is slow", nil},
		{[]string{"--api-url", "https://api.example", "--status"}, cmdStatus, "", func(o *options) bool {
			return o.apiURL == "https://api.example" && o.set["api-url"]
		}},
		{[]string{"--metrics-interval", "60", "--proxmox-interval=300", "--agent-id", "abc", "--token-path", "/x/t.json", "--portal-url", "https://p", "status"}, cmdStatus, "",
			func(o *options) bool {
				return o.metricsInterval == 60 && o.proxmoxInterval == 300 && o.agentID == "abc" && o.tokenPath == "/x/t.json" && o.portalURL == "https://p"
			}},
		{[]string{"--socket", "/tmp/w.sock", "status"}, cmdStatus, "", func(o *options) bool { return o.socket == "/tmp/w.sock" }},
		{[]string{"diagnose", "the disk is slow", "--priority", "high"}, cmdDiagnose, "the disk is slow", func(o *options) bool { return o.priority == "high" }},
	}
	for _, c := range cases {
		o, err := parseArgs(c.args, noEnv)
		if err != nil {
			t.Errorf("%q: %v", c.args, err)
			continue
		}
		if o.command != c.command || o.issue != c.issue {
			t.Errorf("%q: command %q issue %q, want %q %q", c.args, o.command, o.issue, c.command, c.issue)
		}
		if c.check != nil && !c.check(o) {
			t.Errorf("%q: options %+v", c.args, o)
		}
	}
}

func TestParseArgsRefusals(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--frobnicate"}, "flag provided but not defined"},
		{[]string{"status", "extra"}, "takes no arguments"},
		{[]string{"--diagnose"}, "flag needs an argument"},
		{[]string{"--diagnose", ""}, "--diagnose needs the issue"},
		{[]string{"--diagnose", "the", "disk", "is", "slow"}, `quote the issue: --diagnose "the disk is slow"`},
		{[]string{"--diagnose", "a b c d e", "diagnose", "f g h i j"}, "give the issue once"},
		{[]string{"diagnose", "the disk is slow", "--priority", "urgent"}, "use low, medium or high"},
		{[]string{"status", "--timeout", "-1s"}, "must not be negative"},
		{[]string{"status", "--timeout", "soon"}, "invalid value"},
	}
	for _, c := range cases {
		_, err := parseArgs(c.args, noEnv)
		var ue *usageError
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.args, err, c.want)
		} else if !asUsage(err, &ue) {
			t.Errorf("%q: %T is not a usage error", c.args, err)
		}
	}
}

func asUsage(err error, target **usageError) bool {
	ue, ok := err.(*usageError)
	*target = ue
	return ok
}

func TestWorkerSocketFromEnvAndConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := dir + "/config.yaml"
	if err := writeFile(cfg, "nannyapi_url: https://x\nstatic_token: nsk_secret\nworker_socket: /srv/w.sock\n"); err != nil {
		t.Fatal(err)
	}
	o, err := parseArgs([]string{"status", "--config", cfg}, noEnv)
	if err != nil || o.socket != "/srv/w.sock" {
		t.Errorf("from config: %v %q", err, o.socket)
	}
	env := func(k string) string {
		if k == "NANNYAGENT_WORKER_SOCKET" {
			return "/env/w.sock"
		}
		return ""
	}
	if o, _ := parseArgs([]string{"status", "--config", cfg}, env); o.socket != "/env/w.sock" {
		t.Errorf("env lost to the config file: %q", o.socket)
	}
	if o, _ := parseArgs([]string{"status", "--config", cfg, "--socket", "/flag.sock"}, env); o.socket != "/flag.sock" {
		t.Errorf("flag lost: %q", o.socket)
	}
}

// The commands that need no worker answer from the CLI alone.
func TestRunWithoutWorker(t *testing.T) {
	cases := []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"--version"}, 0, "nannyagent version dev\nLinux diagnostic agent with eBPF capabilities\n", ""},
		{[]string{"-version"}, 0, "nannyagent version dev", ""},
		{[]string{"--help"}, 0, "usage: nannyagent COMMAND", ""},
		{[]string{"-h"}, 0, "usage: nannyagent COMMAND", ""},
		{[]string{"--daemon"}, 2, "", "the daemons are the systemd units now"},
		{[]string{"daemon"}, 2, "", "systemctl enable --now nannyagent-worker.service"},
		{[]string{"--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{[]string{"diagnose", "slow"}, 2, "", "too short"},
		{[]string{"diagnose", "disk is-slow"}, 2, "", "incomplete"},
		{[]string{"--diagnose", "short"}, 2, "", "too short"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		code := run(append(c.args, "--socket", "/nonexistent/worker.sock"), strings.NewReader(""), &out, &errb)
		if code != c.code || !strings.Contains(out.String(), c.stdout) || !strings.Contains(errb.String(), c.stderr) {
			t.Errorf("%q: exit %d stdout %q stderr %q; want %d, %q, %q", c.args, code, out.String(), errb.String(), c.code, c.stdout, c.stderr)
		}
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
