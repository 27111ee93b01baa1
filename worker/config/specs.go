package config

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// spec binds one setting to its flag, its config.yaml key and its
// environment names.
type spec struct {
	flag string
	yaml string
	// env are extra environment names (the reference agent's); ff also
	// reads NANNYAGENT_<FLAG>.
	env []string
	// envFilter rewrites or drops an environment value (DEBUG can only
	// set true).
	envFilter func(string) (string, bool)
	// zeroDefault keeps the default for a zero or negative value in the
	// file, as the reference agent re-defaulted those keys.
	zeroDefault bool
	isString    bool
	define      func(fs *flag.FlagSet)
}

func str(p *string, name, yaml, def, help string, env ...string) spec {
	return spec{flag: name, yaml: yaml, env: env, isString: true,
		define: func(fs *flag.FlagSet) { fs.StringVar(p, name, def, help) }}
}

func boolean(p *bool, name, yaml string, def bool, help string, env ...string) spec {
	return spec{flag: name, yaml: yaml, env: env,
		define: func(fs *flag.FlagSet) { fs.BoolVar(p, name, def, help) }}
}

func integer(p *int, name, yaml string, def int, help string) spec {
	return spec{flag: name, yaml: yaml,
		define: func(fs *flag.FlagSet) { fs.IntVar(p, name, def, help) }}
}

func secs(p *time.Duration, name, yaml string, def time.Duration, help string) spec {
	return spec{flag: name, yaml: yaml,
		define: func(fs *flag.FlagSet) {
			*p = def
			fs.Var((*seconds)(p), name, help+" (seconds, or a duration such as 1m30s)")
		}}
}

func withZeroDefault(s spec) spec {
	s.zeroDefault = true
	return s
}

// specs lists every setting. The reference agent's keys and environment
// names come first, then ours.
func (c *Config) specs(staticTokenFile *string, getenv func(string) string) []spec {
	h := &c.HTTP
	r := &c.TokenRenewal
	debug := spec{flag: "debug", yaml: "debug", env: []string{"DEBUG"},
		envFilter: func(v string) (string, bool) { return "true", v == "true" || v == "1" },
		define:    func(fs *flag.FlagSet) { fs.BoolVar(&c.Debug, "debug", false, "debug logging") }}
	return []spec{
		{flag: "config", isString: true, define: func(fs *flag.FlagSet) {
			fs.StringVar(&c.ConfigFile, "config", configFileDefault(getenv), "config file (YAML)")
		}},
		str(&c.APIURL, "api-url", "nannyapi_url", "", "NannyAPI base URL", "NANNYAPI_URL"),
		str(&c.PortalURL, "portal-url", "portal_url", "https://nannyai.dev", "NannyAI portal URL", "NANNYAI_PORTAL_URL"),
		str(&c.TokenPath, "token-path", "token_path", "/var/lib/nannyagent/token.json", "token file", "TOKEN_PATH"),
		str(&c.AgentID, "agent-id", "agent_id", "", "agent id (static-token mode)", "NANNYAI_AGENT_ID"),
		secs(&c.MetricsInterval, "metrics-interval", "metrics_interval", 30*time.Second, "metrics interval"),
		secs(&c.ProxmoxInterval, "proxmox-interval", "proxmox_interval", 300*time.Second, "Proxmox inventory interval"),
		debug,
		str(&c.LogLevel, "log-level", "log_level", "info", "debug, info, warn or error", "LOG_LEVEL"),
		str(&c.LogFormat, "log-format", "log_format", "json", "json or text"),
		str(&c.PlainHTTP, "plain-http", "plain_http", "lan", "when plain http:// to NannyAPI is accepted: lan (loopback and private networks, with a warning), refuse, or any"),
		secs(&c.AITurnTimeout, "ai-turn-timeout", "ai_turn_timeout", 10*time.Minute, "timeout of one AI turn through NannyAPI"),
		secs(&c.InvestigationTimeout, "investigation-timeout", "investigation_timeout", 30*time.Minute, "timeout of a whole investigation"),
		integer(&c.InvestigationMaxTurns, "investigation-max-turns", "investigation_max_turns", 12, "most AI turns in one investigation"),
		secs(&c.RegisterPollInterval, "register-poll-interval", "register_poll_interval", 5*time.Second, "wait between device-flow polls"),
		secs(&c.PatchPollInterval, "patch-poll-interval", "patch_poll_interval", 5*time.Second, "wait between checks of a running patch run"),
		secs(&c.RebootMonitorInterval, "reboot-monitor-interval", "reboot_monitor_interval", 30*time.Second, "the backend's reboot monitor period (bounds how long metrics stay held after a failed reboot)"),
		secs(&c.RebootPollInterval, "reboot-poll-interval", "reboot_poll_interval", 15*time.Second, "how often a held reboot's record is read"),
		withZeroDefault(integer(&r.ThresholdDays, "token-renewal-threshold-days", "token_renewal_threshold_days", 7, "warn and renew this many days before the refresh token expires")),
		withZeroDefault(secs(&r.CheckInterval, "token-renewal-check-interval", "token_renewal_check_interval_secs", 6*time.Hour, "how often to check the token")),
		withZeroDefault(secs(&r.RetryInterval, "token-renewal-retry-interval", "token_renewal_retry_interval_secs", time.Hour, "retry interval after a failed renewal")),
		withZeroDefault(integer(&h.MaxIdleConns, "http-max-idle-conns", "http_transport.max_idle_conns", 10, "idle HTTP connections")),
		withZeroDefault(integer(&h.MaxIdleConnsPerHost, "http-max-idle-conns-per-host", "http_transport.max_idle_conns_per_host", 5, "idle HTTP connections per host")),
		withZeroDefault(secs(&h.IdleConnTimeout, "http-idle-conn-timeout", "http_transport.idle_conn_timeout_sec", 30*time.Second, "idle connection timeout")),
		withZeroDefault(secs(&h.ResponseHeaderTimeout, "http-response-header-timeout", "http_transport.response_header_timeout_sec", 30*time.Second, "response header timeout (not applied to AI turns)")),
		boolean(&h.DisableHTTP2, "http-disable-http2", "http_transport.disable_http2", false, "force HTTP/1.1"),
		withZeroDefault(integer(&h.TransportResetThreshold, "http-transport-reset-threshold", "http_transport.transport_reset_threshold", 3, "connection errors before the transport is rebuilt")),
		withZeroDefault(secs(&h.InitialRetryDelay, "http-initial-retry-delay", "http_transport.initial_retry_delay_sec", 30*time.Second, "first retry delay")),
		withZeroDefault(secs(&h.MaxRetryDelay, "http-max-retry-delay", "http_transport.max_retry_delay_sec", 1800*time.Second, "longest retry delay")),
		str(&c.WorkerSocket, "worker-socket", "worker_socket", "/run/nannyagent/worker.sock", "socket the CLI talks to"),
		str(&c.BrokerSocket, "broker-socket", "broker_socket", "/run/nannyagent-broker/broker.sock", "the broker's socket, or vsock://2:PORT from a VM guest"),
		str(&c.BrokerVsockKey, "broker-vsock-key", "broker_vsock_key", vsockKeyDefault(getenv), "the worker's private key for a broker reached over vsock"),
		pinList(&c.BrokerKeyPins, "broker-key-pins", "broker_key_pins", "pins (sha256:…) of the broker keys accepted over vsock; several during a rotation"),
		str(&c.AdminGroup, "admin-group", "admin_group", "nannyagent-admin", "group whose members may use the CLI"),
		str(&c.StateDir, "state-dir", "state_dir", "/var/lib/nannyagent", "worker state directory"),
		secs(&c.BrokerTimeout, "broker-timeout", "broker_timeout", 30*time.Second, "timeout of a broker call"),
		secs(&c.APITimeout, "api-timeout", "api_timeout", 30*time.Second, "timeout of an ordinary NannyAPI call"),
		{flag: "static-token-file", isString: true, define: func(fs *flag.FlagSet) {
			fs.StringVar(staticTokenFile, "static-token-file", "", "file holding the nsk_ static token")
		}},
	}
}

// seconds is a duration flag that also takes a bare number of seconds, as
// the reference agent's integer keys do.
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Set(v string) error {
	v = strings.TrimSpace(v)
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n > int64(time.Duration(1<<62)/time.Second) {
			return fmt.Errorf("%s seconds is too long", v)
		}
		*s = seconds(time.Duration(n) * time.Second)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds or a duration such as 90s")
	}
	*s = seconds(d)
	return nil
}
