package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// configFile is where an operator sets what the reference agent's
// override flags set.
const configFile = "/etc/nannyagent/config.yaml"

// override is one of the reference agent's override flags: what the
// worker's value is, and where that setting lives now.
type override struct {
	flag, key string
	given     func(o *options) string
	current   func(s *workerv1.Settings) string
}

var overrides = []override{
	{"api-url", "nannyapi_url", func(o *options) string { return strings.TrimRight(o.apiURL, "/") },
		func(s *workerv1.Settings) string { return strings.TrimRight(s.GetApiUrl(), "/") }},
	{"token-path", "token_path", func(o *options) string { return filepath.Clean(o.tokenPath) },
		func(s *workerv1.Settings) string { return filepath.Clean(s.GetTokenPath()) }},
	{"agent-id", "agent_id", func(o *options) string { return o.agentID },
		func(s *workerv1.Settings) string { return s.GetAgentId() }},
	{"metrics-interval", "metrics_interval", func(o *options) string { return seconds(o.metricsInterval) },
		func(s *workerv1.Settings) string {
			return seconds(int(s.GetMetricsInterval().AsDuration() / time.Second))
		}},
	{"proxmox-interval", "proxmox_interval", func(o *options) string { return seconds(o.proxmoxInterval) },
		func(s *workerv1.Settings) string {
			return seconds(int(s.GetProxmoxInterval().AsDuration() / time.Second))
		}},
}

func seconds(n int) string { return fmt.Sprintf("%ds", n) }

// checkOverrides applies the reference agent's override flags where they
// still mean something: --debug is -v (set while parsing), --portal-url is
// ignored as the reference agent ignored it, and a setting the worker
// holds now is accepted when it matches the worker's and refused with one
// sentence otherwise, so a script written for the reference agent either
// runs unchanged or says what to change.
func checkOverrides(o *options, stderr io.Writer) (code int, ok bool) {
	if o.set["portal-url"] {
		fmt.Fprintln(stderr, "nannyagent: --portal-url is ignored: registration shows the link NannyAPI sends (the reference agent ignored it too)")
	}
	var given []override
	for _, ov := range overrides {
		if !o.set[ov.flag] {
			continue
		}
		// The reference agent applied the intervals only when > 0.
		if (ov.flag == "metrics-interval" && o.metricsInterval <= 0) || (ov.flag == "proxmox-interval" && o.proxmoxInterval <= 0) {
			continue
		}
		given = append(given, ov)
	}
	if len(given) == 0 {
		return exitOK, true
	}
	settings, err := workerSettings(o)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return exitFailed, false
	}
	for _, ov := range given {
		if want, have := ov.given(o), ov.current(settings); want != have {
			fmt.Fprintf(stderr, "nannyagent: --%s %s differs from the worker's %s (%s): the worker holds this setting now; set %s in %s and run: systemctl restart nannyagent-worker\n",
				ov.flag, clean(want), ov.key, clean(orNone(have)), ov.key, configFile)
			return exitUsage, false
		}
	}
	return exitOK, true
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// workerSettings asks the worker for its settings.
func workerSettings(o *options) (*workerv1.Settings, error) {
	cc, client, err := connect(o.socket)
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := withTimeout(o, statusTimeout)
	defer cancel()
	st, err := client.Status(ctx, &workerv1.StatusRequest{})
	if err != nil {
		return nil, fmt.Errorf("%s", explainRPC(err, o.socket))
	}
	return st.GetSettings(), nil
}
