package nannyapi

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client calls NannyAPI. It is safe for concurrent use. Anonymous calls
// (device flow, refresh, health) work on any Client; agent calls need one
// returned by WithCredentials.
type Client struct {
	cfg   Config
	ep    endpoint
	http  *http.Client
	ua    string
	creds Credentials
	// jitter returns a float in [0,1); replaced in tests only.
	jitter func() float64
}

// New checks cfg and builds a Client. It refuses a plain-HTTP URL that
// cfg.PlainHTTP does not allow (see PlainHTTPPolicy for the default).
func New(cfg Config) (*Client, error) {
	cfg = cfg.withDefaults()
	ep, err := parseEndpoint(cfg.BaseURL, cfg.PlainHTTP)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}
	if ep.lanOnly && hostClass(ep.base.Hostname()) == classPrivate {
		dialer.Control = lanDialControl
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSConfig != nil {
		tlsConf = cfg.TLSConfig.Clone()
		if tlsConf.MinVersion < tls.VersionTLS12 {
			tlsConf.MinVersion = tls.VersionTLS12
		}
	}
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   cfg.TLSHandshakeTimeout,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          8,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	c := &Client{
		cfg: cfg,
		ep:  ep,
		ua:  userAgent(cfg.Version),
		// Timeouts are per call (see call), so the http.Client has none.
		http:   &http.Client{Transport: transport},
		jitter: rand.Float64,
	}
	c.http.CheckRedirect = c.checkRedirect
	return c, nil
}

func userAgent(version string) string {
	if version == "" {
		version = "dev"
	}
	return "nannyagent-worker/" + version
}

// WithCredentials returns a Client that sends creds on agent calls. It
// shares the connection pool with c.
func (c *Client) WithCredentials(creds Credentials) *Client {
	cp := *c
	cp.creds = creds
	return &cp
}

// Close drops idle connections. In-flight calls are not affected.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// BaseURL returns the NannyAPI base URL.
func (c *Client) BaseURL() string { return c.ep.base.String() }

// Insecure reports that the token travels over plain HTTP to a non-loopback
// host; Warning says so in words for the log and `status`.
func (c *Client) Insecure() bool { return c.ep.warning != "" }

// Warning returns the insecure-transport warning, or "".
func (c *Client) Warning() string { return c.ep.warning }

// sameOrigin reports whether u is on the NannyAPI origin (scheme, host, port).
func (c *Client) sameOrigin(u *url.URL) bool {
	return strings.EqualFold(u.Scheme, c.ep.base.Scheme) && strings.EqualFold(hostPort(u), hostPort(c.ep.base))
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// checkRedirect follows redirects only within the NannyAPI origin, so the
// token and request bodies never go elsewhere.
func (c *Client) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	if !c.sameOrigin(req.URL) {
		return fmt.Errorf("redirect to %s: %w", redactURL(req.URL), ErrForeignOrigin)
	}
	return nil
}

// apiURL joins an API path ("/api/agent", with query) to the base URL.
func (c *Client) apiURL(pathAndQuery string) *url.URL {
	u := *c.ep.base
	path, query, _ := strings.Cut(pathAndQuery, "?")
	u.Path = c.ep.base.Path + path
	u.RawQuery = query
	return &u
}

// backoff returns the wait before retry number n (1-based): the step grows
// from BaseDelay, doubling, capped at MaxDelay; the wait is between half and
// all of it.
func (c *Client) backoff(n int) time.Duration {
	step := c.cfg.Retry.BaseDelay
	for i := 1; i < n && step < c.cfg.Retry.MaxDelay; i++ {
		step *= 2
	}
	step = min(step, c.cfg.Retry.MaxDelay)
	half := step / 2
	return half + time.Duration(c.jitter()*float64(step-half))
}
