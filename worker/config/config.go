// Package config reads the worker's and the CLI's settings with the
// precedence flags > environment > config file > defaults. It reads the
// reference agent's /etc/nannyagent/config.yaml keys (nested ones included)
// and its environment variable names unchanged, so an existing install
// switches without edits. The static token is read from the file or the
// environment (or a file named by a flag), never from a command-line value.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
)

// DefaultConfigFile is where the reference agent keeps its settings.
const DefaultConfigFile = "/etc/nannyagent/config.yaml"

// Config is the worker's configuration.
type Config struct {
	ConfigFile string

	APIURL          string
	PortalURL       string
	TokenPath       string
	AgentID         string
	StaticToken     string
	MetricsInterval time.Duration
	ProxmoxInterval time.Duration
	Debug           bool
	LogLevel        string
	LogFormat       string
	// PlainHTTP is when plain http:// to NannyAPI is accepted: "lan",
	// "refuse" or "any".
	PlainHTTP string

	TokenRenewal TokenRenewal
	HTTP         HTTPTransport

	WorkerSocket string
	// BrokerSocket is the broker's unix socket path, or vsock://2:PORT when
	// the worker runs in a VM guest and the broker on the host.
	BrokerSocket string
	// BrokerVsockKey is the worker's private key for a vsock broker, and
	// BrokerKeyPins the pins of the broker keys it accepts (vsock.go).
	BrokerVsockKey string
	BrokerKeyPins  []string
	AdminGroup     string
	StateDir       string

	// Timeouts for calls the worker makes.
	BrokerTimeout time.Duration
	APITimeout    time.Duration
	AITurnTimeout time.Duration

	// Investigations.
	InvestigationTimeout  time.Duration
	InvestigationMaxTurns int

	// RegisterPollInterval spaces device-flow polls (5 s against a real
	// backend; tests shorten it).
	RegisterPollInterval time.Duration

	// RebootMonitorInterval is the backend's reboot monitor period (30 s):
	// metrics stay held after a failed reboot for at most
	// acknowledged_at + timeout_seconds + two of these.
	RebootMonitorInterval time.Duration
	// RebootPollInterval is how often a held reboot's record is read.
	RebootPollInterval time.Duration
	// PatchPollInterval spaces the checks of a running patch run (and of
	// one a previous worker process left running).
	PatchPollInterval time.Duration

	// Warnings are problems that did not stop loading (unknown keys).
	Warnings []string
}

// TokenRenewal mirrors the reference agent's renewal keys.
type TokenRenewal struct {
	ThresholdDays int
	CheckInterval time.Duration
	RetryInterval time.Duration
}

// WarnBefore is how long before the refresh token's expiry the worker
// warns and tries to renew it.
func (r TokenRenewal) WarnBefore() time.Duration {
	return time.Duration(r.ThresholdDays) * 24 * time.Hour
}

// HTTPTransport mirrors the reference agent's http_transport keys.
type HTTPTransport struct {
	MaxIdleConns            int
	MaxIdleConnsPerHost     int
	IdleConnTimeout         time.Duration
	ResponseHeaderTimeout   time.Duration
	DisableHTTP2            bool
	TransportResetThreshold int
	InitialRetryDelay       time.Duration
	MaxRetryDelay           time.Duration
}

// Error is a configuration problem; it names the key.
type Error struct {
	Key    string
	Reason string
}

func (e *Error) Error() string { return fmt.Sprintf("config %s: %s", e.Key, e.Reason) }

// Load parses args, the environment (through getenv) and the config file.
func Load(args []string, getenv func(string) string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	fs := flag.NewFlagSet("nannyagent-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var staticTokenFile string
	specs := c.specs(&staticTokenFile, getenv)
	for _, s := range specs {
		s.define(fs)
	}
	if err := presetFromEnv(fs, specs, getenv); err != nil {
		return nil, err
	}
	parser := yamlKeys(specs, c)
	err := ff.Parse(fs, args,
		ff.WithConfigFileVia(&c.ConfigFile),
		ff.WithAllowMissingConfigFile(true),
		ff.WithConfigFileParser(parser),
	)
	if err != nil {
		return nil, explain(err, specs)
	}
	if err := c.readStaticToken(staticTokenFile, getenv); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// configFileDefault prefers a systemd credential (LoadCredential=), which
// lets a worker without root read a root-only config file.
func configFileDefault(getenv func(string) string) string {
	if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if p := filepath.Join(dir, "config.yaml"); fileExists(p) {
			return p
		}
	}
	return DefaultConfigFile
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// derivedEnv is our own environment name for a flag: NANNYAGENT_ and the flag
// name in upper case with dashes as underscores.
func derivedEnv(flagName string) string {
	return "NANNYAGENT_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// presetFromEnv applies environment variables before ff parses: the
// reference agent's names, which ff cannot derive from flag names, and our
// NANNYAGENT_* names. Values set here count as provided, so the command line
// still overrides them and the config file does not.
func presetFromEnv(fs *flag.FlagSet, specs []spec, getenv func(string) string) error {
	for _, s := range specs {
		for _, name := range append(s.env, derivedEnv(s.flag)) {
			v := getenv(name)
			if v == "" {
				continue
			}
			if s.envFilter != nil {
				var ok bool
				if v, ok = s.envFilter(v); !ok {
					continue
				}
			}
			if err := fs.Set(s.flag, v); err != nil {
				return &Error{Key: name, Reason: fmt.Sprintf("%q: %v", v, unwrapFlagErr(err))}
			}
			break
		}
	}
	return nil
}

// yamlKeys maps the reference config.yaml keys onto flag names and collects
// unknown keys as warnings: the reference agent ignored them, and a drop-in
// must not refuse a file it accepted.
func yamlKeys(specs []spec, c *Config) ff.ConfigFileParser {
	byKey := map[string]spec{}
	for _, s := range specs {
		if s.yaml != "" {
			byKey[s.yaml] = s
		}
	}
	return func(r io.Reader, set func(name, value string) error) error {
		return ffyaml.Parser(r, func(key, value string) error {
			if key == "static_token" {
				if c.StaticToken == "" {
					c.StaticToken = value
				}
				return nil
			}
			s, ok := byKey[key]
			if !ok {
				c.Warnings = append(c.Warnings, fmt.Sprintf("config file key %q is not used", key))
				return nil
			}
			if value == "" && !s.isString {
				return nil
			}
			if s.zeroDefault && notPositive(value) {
				return nil
			}
			if err := set(s.flag, value); err != nil {
				return &Error{Key: key, Reason: fmt.Sprintf("%q: %v", value, unwrapFlagErr(err))}
			}
			return nil
		})
	}
}

// explain turns ff's error into one naming the key.
func explain(err error, specs []spec) error {
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	msg := err.Error()
	for _, s := range specs {
		if strings.Contains(msg, `"`+s.flag+`"`) || strings.Contains(msg, "-"+s.flag+":") {
			key := s.yaml
			if key == "" {
				key = s.flag
			}
			return &Error{Key: key, Reason: unwrapFlagErr(err).Error()}
		}
	}
	return err
}

func notPositive(v string) bool {
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	return err == nil && n <= 0
}

func unwrapFlagErr(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

func (c *Config) readStaticToken(file string, getenv func(string) string) error {
	if v := getenv("NANNYAI_STATIC_TOKEN"); v != "" {
		c.StaticToken = v
	}
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return &Error{Key: "static-token-file", Reason: err.Error()}
		}
		c.StaticToken = strings.TrimSpace(string(data))
	}
	return nil
}

// UseStaticToken reports whether the worker authenticates with an nsk_ token.
func (c *Config) UseStaticToken() bool { return c.StaticToken != "" }

func (c *Config) validate() error {
	checks := []func() error{
		c.validateURL,
		func() error { return checkURL("portal_url", c.PortalURL, false) },
		func() error { return checkAbs("token_path", c.TokenPath) },
		func() error {
			return checkRange("metrics_interval", c.MetricsInterval, 5*time.Second, 604800*time.Second)
		},
		func() error {
			return checkRange("proxmox_interval", c.ProxmoxInterval, 5*time.Second, 604800*time.Second)
		},
		c.validateStaticToken,
		c.validateAgentID,
		c.validateRenewal,
		c.validateHTTP,
		func() error { return checkAbs("worker_socket", c.WorkerSocket) },
		c.validateBroker,
		func() error { return checkAbs("state_dir", c.StateDir) },
		func() error { return checkPositive("broker_timeout", c.BrokerTimeout) },
		func() error { return checkPositive("api_timeout", c.APITimeout) },
		func() error { return checkPositive("ai_turn_timeout", c.AITurnTimeout) },
		func() error { return checkPositive("investigation_timeout", c.InvestigationTimeout) },
		func() error { return checkPositive("register_poll_interval", c.RegisterPollInterval) },
		func() error {
			return checkRange("patch_poll_interval", c.PatchPollInterval, 100*time.Millisecond, time.Hour)
		},
		func() error {
			return checkRange("reboot_monitor_interval", c.RebootMonitorInterval, 100*time.Millisecond, time.Hour)
		},
		func() error {
			return checkRange("reboot_poll_interval", c.RebootPollInterval, 10*time.Millisecond, time.Hour)
		},
		c.validatePlainHTTP,
		func() error {
			if c.InvestigationMaxTurns < 1 || c.InvestigationMaxTurns > 100 {
				return &Error{Key: "investigation_max_turns", Reason: fmt.Sprintf("%d is out of range 1…100", c.InvestigationMaxTurns)}
			}
			return nil
		},
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (c *Config) validateURL() error {
	if c.APIURL == "" {
		return &Error{Key: "nannyapi_url", Reason: "is required (set it in the config file, NANNYAPI_URL or --api-url)"}
	}
	return checkURL("nannyapi_url", c.APIURL, true)
}

func checkURL(key, raw string, required bool) error {
	if raw == "" && !required {
		return nil
	}
	if len(raw) > 2048 {
		return &Error{Key: key, Reason: "is longer than 2048 characters"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		return &Error{Key: key, Reason: err.Error()}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return &Error{Key: key, Reason: fmt.Sprintf("%q: scheme must be http or https", raw)}
	}
	if u.Host == "" {
		return &Error{Key: key, Reason: fmt.Sprintf("%q has no host", raw)}
	}
	return nil
}

func checkAbs(key, p string) error {
	if !strings.HasPrefix(p, "/") {
		return &Error{Key: key, Reason: fmt.Sprintf("%q must be an absolute path", p)}
	}
	if len(p) > 4096 {
		return &Error{Key: key, Reason: "is longer than 4096 characters"}
	}
	return nil
}

func checkRange(key string, d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return &Error{Key: key, Reason: fmt.Sprintf("%v is out of range %v…%v", seconds(d), seconds(lo), seconds(hi))}
	}
	return nil
}

func checkPositive(key string, d time.Duration) error {
	if d <= 0 {
		return &Error{Key: key, Reason: "must be positive"}
	}
	return nil
}

func (c *Config) validatePlainHTTP() error {
	switch strings.ToLower(c.PlainHTTP) {
	case "lan", "refuse", "any":
		return nil
	}
	return &Error{Key: "plain_http", Reason: fmt.Sprintf("%q: want lan, refuse or any", c.PlainHTTP)}
}

func (c *Config) validateStaticToken() error {
	if c.StaticToken == "" {
		return nil
	}
	if !strings.HasPrefix(c.StaticToken, "nsk_") || len(c.StaticToken) < 5 || len(c.StaticToken) > 512 {
		// Never echo the value: it is a secret even when malformed.
		return &Error{Key: "static_token", Reason: "must start with nsk_ and be 5…512 characters"}
	}
	return nil
}

func (c *Config) validateAgentID() error {
	if len(c.AgentID) > 256 {
		return &Error{Key: "agent_id", Reason: "is longer than 256 characters"}
	}
	if c.AgentID != "" && strings.TrimSpace(c.AgentID) == "" {
		return &Error{Key: "agent_id", Reason: "is only whitespace"}
	}
	return nil
}

func (c *Config) validateRenewal() error {
	r := &c.TokenRenewal
	if r.ThresholdDays < 1 || r.ThresholdDays > 365 {
		return &Error{Key: "token_renewal_threshold_days", Reason: fmt.Sprintf("%d is out of range 1…365", r.ThresholdDays)}
	}
	if err := checkRange("token_renewal_check_interval_secs", r.CheckInterval, time.Second, 2592000*time.Second); err != nil {
		return err
	}
	return checkRange("token_renewal_retry_interval_secs", r.RetryInterval, time.Second, 2592000*time.Second)
}

func (c *Config) validateHTTP() error {
	h := &c.HTTP
	switch {
	case h.MaxIdleConns < 0 || h.MaxIdleConns > 1000:
		return &Error{Key: "http_transport.max_idle_conns", Reason: fmt.Sprintf("%d is out of range 0…1000", h.MaxIdleConns)}
	case h.MaxIdleConnsPerHost < 0 || h.MaxIdleConnsPerHost > 1000 || h.MaxIdleConnsPerHost > h.MaxIdleConns:
		return &Error{Key: "http_transport.max_idle_conns_per_host", Reason: fmt.Sprintf("%d is out of range 0…max_idle_conns", h.MaxIdleConnsPerHost)}
	case h.TransportResetThreshold < 1 || h.TransportResetThreshold > 100:
		return &Error{Key: "http_transport.transport_reset_threshold", Reason: fmt.Sprintf("%d is out of range 1…100", h.TransportResetThreshold)}
	}
	for _, err := range []error{
		checkRange("http_transport.idle_conn_timeout_sec", h.IdleConnTimeout, 0, time.Hour),
		checkRange("http_transport.response_header_timeout_sec", h.ResponseHeaderTimeout, 0, 300*time.Second),
		checkRange("http_transport.initial_retry_delay_sec", h.InitialRetryDelay, time.Second, 86400*time.Second),
		checkRange("http_transport.max_retry_delay_sec", h.MaxRetryDelay, h.InitialRetryDelay, 86400*time.Second),
	} {
		if err != nil {
			return err
		}
	}
	return nil
}
