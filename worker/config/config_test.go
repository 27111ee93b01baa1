package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// referenceConfig is the reference agent's config.yaml with nested keys.
const referenceConfig = `nannyapi_url: "https://api.example.test"
portal_url: "https://portal.example.test"
token_path: /var/lib/nannyagent/token.json
metrics_interval: 45
proxmox_interval: 600
debug: false
agent_id: "6ybfg6bq7mxtjoj"
token_renewal_threshold_days: 10
http_transport:
  max_idle_conns: 20
  max_idle_conns_per_host: 0
  response_header_timeout_sec: 60
  disable_http2: true
`

func TestLoadReferenceFile(t *testing.T) {
	path := writeFile(t, referenceConfig)
	c, err := Load([]string{"--config", path}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"api url", c.APIURL, "https://api.example.test"},
		{"portal", c.PortalURL, "https://portal.example.test"},
		{"metrics", c.MetricsInterval, 45 * time.Second},
		{"proxmox", c.ProxmoxInterval, 600 * time.Second},
		{"agent id", c.AgentID, "6ybfg6bq7mxtjoj"},
		{"threshold", c.TokenRenewal.ThresholdDays, 10},
		{"nested int", c.HTTP.MaxIdleConns, 20},
		{"nested zero keeps default", c.HTTP.MaxIdleConnsPerHost, 5},
		{"nested seconds", c.HTTP.ResponseHeaderTimeout, time.Minute},
		{"nested bool", c.HTTP.DisableHTTP2, true},
		{"default socket", c.WorkerSocket, "/run/nannyagent/worker.sock"},
	}
	for _, tc := range checks {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
	if len(c.Warnings) != 0 {
		t.Errorf("unexpected warnings %v", c.Warnings)
	}
}

func TestPrecedence(t *testing.T) {
	path := writeFile(t, "nannyapi_url: https://file.test\nmetrics_interval: 40\nproxmox_interval: 400\n")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantURL string
		wantMet time.Duration
	}{
		{"file only", nil, nil, "https://file.test", 40 * time.Second},
		{"reference env beats file", nil, map[string]string{"NANNYAPI_URL": "https://env.test"}, "https://env.test", 40 * time.Second},
		{"derived env beats file", nil, map[string]string{"NANNYAGENT_METRICS_INTERVAL": "50"}, "https://file.test", 50 * time.Second},
		{"flag beats env", []string{"--api-url", "https://flag.test"}, map[string]string{"NANNYAPI_URL": "https://env.test"}, "https://flag.test", 40 * time.Second},
		{"flag beats derived env", []string{"--metrics-interval=60"}, map[string]string{"NANNYAGENT_METRICS_INTERVAL": "50"}, "https://file.test", time.Minute},
		{"duration syntax", []string{"--metrics-interval=1m30s"}, nil, "https://file.test", 90 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(append([]string{"--config", path}, tc.args...), envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.APIURL != tc.wantURL || c.MetricsInterval != tc.wantMet {
				t.Errorf("got url %q metrics %v, want %q %v", c.APIURL, c.MetricsInterval, tc.wantURL, tc.wantMet)
			}
		})
	}
}

func TestReferenceEnvironmentNames(t *testing.T) {
	env := map[string]string{
		"NANNYAPI_URL":       "https://env.test",
		"TOKEN_PATH":         "/srv/token.json",
		"NANNYAI_PORTAL_URL": "https://portal.env.test",
		"NANNYAI_AGENT_ID":   "agent-from-env",
		"LOG_LEVEL":          "WARN",
		"DEBUG":              "1",
	}
	c, err := Load([]string{"--config", "/nonexistent/config.yaml"}, envOf(env), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIURL != "https://env.test" || c.TokenPath != "/srv/token.json" || c.PortalURL != "https://portal.env.test" ||
		c.AgentID != "agent-from-env" || c.LogLevel != "WARN" || !c.Debug {
		t.Errorf("environment not applied: %+v", c)
	}
}

func TestDebugEnvCannotSetFalse(t *testing.T) {
	path := writeFile(t, "nannyapi_url: https://file.test\ndebug: true\n")
	c, err := Load([]string{"--config", path}, envOf(map[string]string{"DEBUG": "false"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug {
		t.Error("DEBUG=false must not override the file (the reference agent cannot set false)")
	}
}

func TestStaticTokenSources(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("nsk_fromfile\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := writeFile(t, "nannyapi_url: https://file.test\nstatic_token: nsk_fromconfig\n")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"config file", nil, nil, "nsk_fromconfig"},
		{"environment beats file", nil, map[string]string{"NANNYAI_STATIC_TOKEN": "nsk_fromenv"}, "nsk_fromenv"},
		{"token file flag", []string{"--static-token-file", tokenFile}, map[string]string{"NANNYAI_STATIC_TOKEN": "nsk_fromenv"}, "nsk_fromfile"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(append([]string{"--config", cfgFile}, tc.args...), envOf(tc.env), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if c.StaticToken != tc.want || !c.UseStaticToken() {
				t.Errorf("static token %q, want %q", c.StaticToken, tc.want)
			}
		})
	}
	if _, err := Load([]string{"--config", cfgFile, "--static-token", "nsk_x"}, envOf(nil), io.Discard); err == nil {
		t.Error("a --static-token flag must not exist: tokens never go on a command line")
	}
}

func TestBadValuesNameTheKey(t *testing.T) {
	tests := []struct {
		name    string
		file    string
		args    []string
		env     map[string]string
		wantKey string
	}{
		{"missing url", "metrics_interval: 30\n", nil, nil, "nannyapi_url"},
		{"bad scheme", "nannyapi_url: ftp://x\n", nil, nil, "nannyapi_url"},
		{"interval too small", "nannyapi_url: https://x\nmetrics_interval: 3\n", nil, nil, "metrics_interval"},
		{"interval not a number", "nannyapi_url: https://x\nproxmox_interval: soon\n", nil, nil, "proxmox_interval"},
		{"nested not a number", "nannyapi_url: https://x\nhttp_transport:\n  max_idle_conns: many\n", nil, nil, "http_transport.max_idle_conns"},
		{"per host above total", "nannyapi_url: https://x\nhttp_transport:\n  max_idle_conns: 2\n  max_idle_conns_per_host: 3\n", nil, nil, "http_transport.max_idle_conns_per_host"},
		{"relative token path", "nannyapi_url: https://x\ntoken_path: token.json\n", nil, nil, "token_path"},
		{"bad static token", "nannyapi_url: https://x\nstatic_token: abc\n", nil, nil, "static_token"},
		{"bad flag value", "nannyapi_url: https://x\n", []string{"--metrics-interval=abc"}, nil, "metrics_interval"},
		{"bad env value", "nannyapi_url: https://x\n", nil, map[string]string{"NANNYAGENT_PROXMOX_INTERVAL": "x"}, "NANNYAGENT_PROXMOX_INTERVAL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file)
			_, err := Load(append([]string{"--config", path}, tc.args...), envOf(tc.env), io.Discard)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want a config error naming %s, got %v", tc.wantKey, err)
			}
			if ce.Key != tc.wantKey {
				t.Errorf("error names %q, want %q (%v)", ce.Key, tc.wantKey, err)
			}
		})
	}
}

func TestStaticTokenNeverInErrors(t *testing.T) {
	path := writeFile(t, "nannyapi_url: https://x\nstatic_token: secretvalue123\n")
	_, err := Load([]string{"--config", path}, envOf(nil), io.Discard)
	if err == nil || strings.Contains(err.Error(), "secretvalue123") {
		t.Fatalf("error must refuse the token without echoing it: %v", err)
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	path := writeFile(t, "nannyapi_url: https://x\nfuture_key: 1\n")
	c, err := Load([]string{"--config", path}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "future_key") {
		t.Errorf("warnings %v, want one naming future_key", c.Warnings)
	}
}

func TestCredentialsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("nannyapi_url: https://cred.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(nil, envOf(map[string]string{"CREDENTIALS_DIRECTORY": dir}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.APIURL != "https://cred.test" {
		t.Errorf("api url %q: the systemd credential was not read", c.APIURL)
	}
}
