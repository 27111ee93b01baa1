package nannyapi

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// PlainHTTPPolicy says when the client may talk to NannyAPI over plain HTTP,
// where the bearer token crosses the network in clear text.
//
// Decision: the default is PlainHTTPLAN. A reference install migrated with
// nannyapi_url "http://192.168.1.10:8090" keeps working, because its token
// never leaves the local network, but the client reports an "insecure"
// warning that the worker logs at start and shows in `status`. Plain HTTP to
// a public address or a public DNS name is refused unless the administrator
// chooses PlainHTTPAny; loopback is always allowed without a warning.
type PlainHTTPPolicy string

const (
	// PlainHTTPLAN allows http:// to loopback silently and to private
	// networks with a warning: RFC 1918, CGNAT 100.64/10, IPv6 ULA and
	// link-local literals, single-label names and names under .lan, .local,
	// .internal, .home.arpa and .localdomain. For a name, every address the
	// client connects to must also be private, checked at dial time.
	// Anything else is refused. This is the default (also for "").
	PlainHTTPLAN PlainHTTPPolicy = "lan"
	// PlainHTTPRefuse requires https:// for every non-loopback host.
	PlainHTTPRefuse PlainHTTPPolicy = "refuse"
	// PlainHTTPAny allows http:// to any host, with a warning.
	PlainHTTPAny PlainHTTPPolicy = "any"
)

// ParsePlainHTTPPolicy reads a config value: "lan" (or empty), "refuse" or "any".
func ParsePlainHTTPPolicy(s string) (PlainHTTPPolicy, error) {
	switch p := PlainHTTPPolicy(strings.ToLower(strings.TrimSpace(s))); p {
	case "", PlainHTTPLAN:
		return PlainHTTPLAN, nil
	case PlainHTTPRefuse, PlainHTTPAny:
		return p, nil
	default:
		return "", fmt.Errorf("plain http policy %q: want lan, refuse or any", s)
	}
}

// RetryPolicy bounds retries. Delays grow exponentially from BaseDelay to
// MaxDelay with jitter (each wait is between half and all of the step).
type RetryPolicy struct {
	// Attempts is the total number of tries, the first included (default 4).
	Attempts int
	// BaseDelay is the first step (default 500ms).
	BaseDelay time.Duration
	// MaxDelay caps every wait, also one asked for by Retry-After (default 15s).
	MaxDelay time.Duration
}

// Config builds a Client. Only BaseURL is required; zero values take the
// documented defaults.
type Config struct {
	// BaseURL is nannyapi_url, e.g. "https://api.nannyai.dev". A path
	// prefix is kept ("https://host/nanny" → "https://host/nanny/api/…").
	BaseURL string
	// PlainHTTP decides when http:// is acceptable (default PlainHTTPLAN).
	PlainHTTP PlainHTTPPolicy
	// Version is our agent version, sent in User-Agent.
	Version string

	// DialTimeout bounds the TCP connect (default 10s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 10s).
	TLSHandshakeTimeout time.Duration
	// ResponseHeaderTimeout bounds the time from sending a request to its
	// first response byte for ordinary calls (default 30s). The AI turn
	// does not use it.
	ResponseHeaderTimeout time.Duration
	// RequestTimeout bounds an ordinary call, reading the answer included
	// (default 60s).
	RequestTimeout time.Duration
	// AITurnTimeout bounds an AI proxy turn, from sending to the end of the
	// answer (default 10m; the backend itself waits up to 5m for the model).
	AITurnTimeout time.Duration
	// UploadTimeout bounds a patch result upload (default 5m).
	UploadTimeout time.Duration

	// Retry bounds retries of safe calls.
	Retry RetryPolicy
	// MaxResponseBytes caps a JSON answer (default 8 MiB).
	MaxResponseBytes int64
	// MaxScriptBytes caps a patch script download (default 1 MiB).
	MaxScriptBytes int64

	// TLSConfig adds roots or pins for HTTPS; MinVersion is raised to 1.2.
	TLSConfig *tls.Config
	// Logger receives retry notices; nil discards them. Tokens are never logged.
	Logger *slog.Logger
	// OnRetry, if set, is called before each retry wait (for counters).
	OnRetry func(op string, attempt int, err error)
}

const (
	defaultDialTimeout      = 10 * time.Second
	defaultTLSTimeout       = 10 * time.Second
	defaultHeaderTimeout    = 30 * time.Second
	defaultRequestTimeout   = 60 * time.Second
	defaultAITurnTimeout    = 10 * time.Minute
	defaultUploadTimeout    = 5 * time.Minute
	defaultAttempts         = 4
	defaultBaseDelay        = 500 * time.Millisecond
	defaultMaxDelay         = 15 * time.Second
	defaultMaxResponseBytes = 8 << 20
	defaultMaxScriptBytes   = 1 << 20
)

func (c Config) withDefaults() Config {
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&c.DialTimeout, defaultDialTimeout)
	setDur(&c.TLSHandshakeTimeout, defaultTLSTimeout)
	setDur(&c.ResponseHeaderTimeout, defaultHeaderTimeout)
	setDur(&c.RequestTimeout, defaultRequestTimeout)
	setDur(&c.AITurnTimeout, defaultAITurnTimeout)
	setDur(&c.UploadTimeout, defaultUploadTimeout)
	setDur(&c.Retry.BaseDelay, defaultBaseDelay)
	setDur(&c.Retry.MaxDelay, defaultMaxDelay)
	if c.Retry.Attempts <= 0 {
		c.Retry.Attempts = defaultAttempts
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = defaultMaxResponseBytes
	}
	if c.MaxScriptBytes <= 0 {
		c.MaxScriptBytes = defaultMaxScriptBytes
	}
	if c.PlainHTTP == "" {
		c.PlainHTTP = PlainHTTPLAN
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ErrInsecureURL is returned by New for a plain-HTTP URL the policy refuses.
var ErrInsecureURL = errors.New("plain http to a non-local host is refused")

// endpoint is the checked base URL and what the transport policy allows.
type endpoint struct {
	base *url.URL
	// warning is non-empty when the token crosses the network in clear.
	warning string
	// lanOnly makes the dialer refuse non-private addresses.
	lanOnly bool
}

func parseEndpoint(raw string, policy PlainHTTPPolicy) (endpoint, error) {
	if strings.TrimSpace(raw) == "" {
		return endpoint{}, errors.New("nannyapi url is empty")
	}
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return endpoint{}, fmt.Errorf("nannyapi url: %w", err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return endpoint{}, fmt.Errorf("nannyapi url %q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return endpoint{}, fmt.Errorf("nannyapi url %q: no host", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return endpoint{}, fmt.Errorf("nannyapi url %q: must not carry user info, query or fragment", redactURL(u))
	}
	u.Host = strings.ToLower(u.Host)
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	ep := endpoint{base: u}
	if u.Scheme == "https" {
		return ep, nil
	}
	host := u.Hostname()
	switch hostClass(host) {
	case classLoopback:
		return ep, nil
	case classPrivate:
		if policy == PlainHTTPRefuse {
			return endpoint{}, fmt.Errorf("nannyapi url %s: %w (plain http policy %q)", u, ErrInsecureURL, policy)
		}
		ep.warning = fmt.Sprintf("insecure: NannyAPI at %s is plain http; the agent token crosses the local network unencrypted (use https, or set the plain http policy to \"refuse\" once it does)", u)
		ep.lanOnly = policy == PlainHTTPLAN
		return ep, nil
	default:
		if policy != PlainHTTPAny {
			return endpoint{}, fmt.Errorf("nannyapi url %s: %w (plain http policy %q; use https or choose \"any\")", u, ErrInsecureURL, policy)
		}
		ep.warning = fmt.Sprintf("insecure: NannyAPI at %s is plain http to a non-local host; the agent token crosses the network unencrypted", u)
		return ep, nil
	}
}

type addrClass int

const (
	classPublic addrClass = iota
	classPrivate
	classLoopback
)

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// hostClass judges a URL host without resolving it.
func hostClass(host string) addrClass {
	if addr, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ipClass(addr)
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return classLoopback
	}
	if !strings.Contains(name, ".") {
		return classPrivate
	}
	for _, suffix := range []string{".lan", ".local", ".internal", ".home.arpa", ".localdomain"} {
		if strings.HasSuffix(name, suffix) {
			return classPrivate
		}
	}
	return classPublic
}

func ipClass(addr netip.Addr) addrClass {
	addr = addr.Unmap()
	switch {
	case addr.IsLoopback():
		return classLoopback
	case addr.IsPrivate(), addr.IsLinkLocalUnicast(), cgnat.Contains(addr):
		return classPrivate
	default:
		return classPublic
	}
}

// lanDialControl refuses, for a plain-HTTP LAN endpoint named by DNS, any
// address outside loopback and private ranges, so a name that resolves to a
// public address never gets the token in clear.
func lanDialControl(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	if ipClass(addr) == classPublic {
		return fmt.Errorf("dial %s: %w: resolved address is public", address, ErrInsecureURL)
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}
