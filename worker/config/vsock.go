package config

import (
	"flag"
	"path/filepath"
	"strings"

	"github.com/nannyai/nannyagent/ipc/keypin"
	"github.com/nannyai/nannyagent/ipc/vsocknet"
)

// DefaultVsockKey is the worker's vsock key when systemd does not hand it
// over as a credential.
const DefaultVsockKey = "/etc/nannyagent/vsock/worker.key"

// vsockKeyCredential is the credential name the worker's unit loads the key
// under (LoadCredential=vsock.key:…).
const vsockKeyCredential = "vsock.key"

// vsockKeyDefault prefers the systemd credential, which lets the worker
// read a root-only key without any privilege.
func vsockKeyDefault(getenv func(string) string) string {
	if dir := getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if p := filepath.Join(dir, vsockKeyCredential); fileExists(p) {
			return p
		}
	}
	return DefaultVsockKey
}

// pinFlag collects pins from every occurrence: a repeated flag, a YAML
// list (set once per element) or a comma-separated value.
type pinFlag struct{ pins *[]string }

func (f pinFlag) String() string {
	if f.pins == nil {
		return ""
	}
	return strings.Join(*f.pins, ",")
}

func (f pinFlag) Set(v string) error {
	*f.pins = append(*f.pins, strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })...)
	return nil
}

func pinList(p *[]string, name, yaml, help string) spec {
	return spec{flag: name, yaml: yaml, isString: true,
		define: func(fs *flag.FlagSet) { fs.Var(pinFlag{pins: p}, name, help) }}
}

// validateBroker checks the broker address: a unix socket path, or a
// vsock address with the key and pins the handshake needs.
func (c *Config) validateBroker() error {
	if !vsocknet.IsAddr(c.BrokerSocket) {
		return checkAbs("broker_socket", c.BrokerSocket)
	}
	if _, err := vsocknet.ParseAddr(c.BrokerSocket); err != nil {
		return &Error{Key: "broker_socket", Reason: err.Error()}
	}
	if len(c.BrokerKeyPins) == 0 {
		return &Error{Key: "broker_key_pins", Reason: "a broker reached over vsock must be pinned: list the pin nannyagent-broker keygen printed for the broker's key"}
	}
	for i, p := range c.BrokerKeyPins {
		canon, err := keypin.ParsePin(p)
		if err != nil {
			return &Error{Key: "broker_key_pins", Reason: err.Error()}
		}
		c.BrokerKeyPins[i] = canon
	}
	return checkAbs("broker_vsock_key", c.BrokerVsockKey)
}
