package nannyapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// call describes one API call.
type call struct {
	op     string
	method string
	url    *url.URL
	body   []byte
	ctype  string
	accept string
	// auth sends the client's credentials (agent calls).
	auth bool
	// bearer sends this token instead (register-with-token).
	bearer  string
	agentID string
	// idempotent calls are retried on 502/503/504 and lost connections;
	// others only when no connection was ever obtained.
	idempotent bool
	// headerTimeout bounds the time to the first response byte; timeout
	// the whole call. Zero means the ordinary defaults; a negative timeout
	// means none (streams).
	headerTimeout time.Duration
	timeout       time.Duration
	maxBytes      int64
	// stream returns the open body instead of reading it.
	stream bool
	// secrets are removed from error text (tokens in the request body).
	secrets []string
}

// response is a read answer.
type response struct {
	status int
	header http.Header
	body   []byte
	stream io.ReadCloser
}

// transportError is a failed attempt and whether it provably never reached
// the server (no connection was obtained).
type transportError struct {
	err     error
	reached bool
}

// do runs c with retries and the one 401 replay, and returns a 2xx answer
// or an error (an *APIError for other statuses).
func (c *Client) do(ctx context.Context, cl call) (*response, error) {
	if cl.auth && c.creds == nil {
		return nil, fmt.Errorf("nannyapi %s: %w", cl.op, ErrNoCredentials)
	}
	token := cl.bearer
	if cl.auth {
		var err error
		if token, err = c.creds.Token(ctx); err != nil {
			return nil, fmt.Errorf("nannyapi %s: get token: %w", cl.op, err)
		}
	}
	secrets := append([]string{}, cl.secrets...)
	replayed := false
	for attempt := 1; ; attempt++ {
		resp, terr := c.once(ctx, cl, token)
		if terr != nil {
			err := fmt.Errorf("nannyapi %s: %w", cl.op, scrub(terr.err, append(secrets, token)))
			if ctx.Err() != nil || attempt >= c.cfg.Retry.Attempts || (terr.reached && !cl.idempotent) {
				return nil, err
			}
			if werr := c.wait(ctx, cl.op, attempt, err, 0); werr != nil {
				return nil, err
			}
			continue
		}
		if resp.status == http.StatusUnauthorized && cl.auth && !replayed {
			resp.close()
			replayed = true
			secrets = append(secrets, token)
			fresh, err := c.creds.Rejected(ctx, token)
			if err != nil {
				apiErr := c.apiError(cl, resp, append(secrets, token))
				apiErr.Err = err
				return nil, apiErr
			}
			token = fresh
			attempt--
			continue
		}
		if resp.status >= 200 && resp.status < 300 {
			return resp, nil
		}
		resp.close()
		apiErr := c.apiError(cl, resp, append(secrets, token))
		if !cl.idempotent || !retryableStatus(resp.status) || attempt >= c.cfg.Retry.Attempts {
			return nil, apiErr
		}
		if werr := c.wait(ctx, cl.op, attempt, apiErr, retryAfter(resp.header)); werr != nil {
			return nil, apiErr
		}
	}
}

func (r *response) close() {
	if r.stream != nil {
		_ = r.stream.Close()
	}
}

func retryableStatus(s int) bool {
	return s == http.StatusBadGateway || s == http.StatusServiceUnavailable || s == http.StatusGatewayTimeout
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(h.Get("Retry-After"))); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// wait sleeps before retry number attempt, or returns ctx's error.
func (c *Client) wait(ctx context.Context, op string, attempt int, cause error, atLeast time.Duration) error {
	d := max(c.backoff(attempt), min(atLeast, c.cfg.Retry.MaxDelay))
	if c.cfg.OnRetry != nil {
		c.cfg.OnRetry(op, attempt, cause)
	}
	c.cfg.Logger.Debug("nannyapi retry", "op", op, "attempt", attempt, "wait", d, "error", cause)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// once runs a single attempt.
func (c *Client) once(ctx context.Context, cl call, token string) (*response, *transportError) {
	timeout, headerTimeout := cl.timeout, cl.headerTimeout
	if timeout == 0 {
		timeout = c.cfg.RequestTimeout
	}
	if headerTimeout == 0 {
		headerTimeout = c.cfg.ResponseHeaderTimeout
	}
	callCtx, cancelCall := context.WithCancelCause(ctx)
	var stopTotal func() bool = func() bool { return true }
	if timeout > 0 {
		t := time.AfterFunc(timeout, func() { cancelCall(ErrCallTimeout) })
		stopTotal = t.Stop
	}
	headerTimer := time.AfterFunc(headerTimeout, func() { cancelCall(ErrHeaderTimeout) })

	var reached atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { reached.Store(true) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(callCtx, trace), cl.method, cl.url.String(), bytes.NewReader(cl.body))
	if err != nil {
		headerTimer.Stop()
		stopTotal()
		cancelCall(nil)
		return nil, &transportError{err: err}
	}
	if cl.body == nil {
		req.Body = http.NoBody
		req.GetBody = nil
		req.ContentLength = 0
	}
	c.setHeaders(req, cl, token)

	resp, err := c.http.Do(req)
	headerTimer.Stop()
	if err != nil {
		stopTotal()
		cause := context.Cause(callCtx)
		cancelCall(nil)
		return nil, &transportError{err: explain(err, cause, ctx), reached: reached.Load()}
	}
	out := &response{status: resp.StatusCode, header: resp.Header}
	if cl.stream && resp.StatusCode >= 200 && resp.StatusCode < 300 {
		out.stream = &streamBody{ReadCloser: resp.Body, cancel: func() { stopTotal(); cancelCall(nil) }}
		return out, nil
	}
	defer func() {
		stopTotal()
		cancelCall(nil)
	}()
	limit := cl.maxBytes
	if limit <= 0 {
		limit = c.cfg.MaxResponseBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	_ = resp.Body.Close()
	if err != nil {
		return nil, &transportError{err: fmt.Errorf("read answer: %w", explain(err, context.Cause(callCtx), ctx)), reached: true}
	}
	if int64(len(body)) > limit {
		return nil, &transportError{err: fmt.Errorf("%w (%d bytes)", ErrTooLarge, limit), reached: true}
	}
	out.body = body
	return out, nil
}

// streamBody releases the call's timers when the stream is closed.
type streamBody struct {
	io.ReadCloser
	cancel func()
}

func (s *streamBody) Close() error {
	err := s.ReadCloser.Close()
	s.cancel()
	return err
}

// explain replaces a bare "context canceled" with the timeout that caused it.
func explain(err, cause error, parent context.Context) error {
	if parent.Err() != nil {
		return err
	}
	if errors.Is(cause, ErrHeaderTimeout) || errors.Is(cause, ErrCallTimeout) {
		return fmt.Errorf("%w: %w", cause, stripURL(err))
	}
	return stripURL(err)
}

// stripURL drops the URL from a *url.Error: URLs are ours and add noise;
// the op names the call.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func (c *Client) setHeaders(req *http.Request, cl call, token string) {
	req.Header.Set("User-Agent", c.ua)
	if cl.ctype != "" {
		req.Header.Set("Content-Type", cl.ctype)
	}
	if cl.accept != "" {
		req.Header.Set("Accept", cl.accept)
	}
	// The token goes only to the NannyAPI origin; every call URL is built
	// from the base URL, and this check keeps it that way.
	if token != "" && c.sameOrigin(req.URL) {
		req.Header.Set("Authorization", "Bearer "+token)
		agentID := cl.agentID
		if cl.auth {
			if h, ok := c.creds.(agentIDHeader); ok {
				agentID = h.AgentIDHeader()
			}
		}
		if agentID != "" {
			req.Header.Set("X-Agent-ID", agentID)
		}
	}
}

func (c *Client) apiError(cl call, resp *response, secrets []string) *APIError {
	eb := DecodeErrorBody(resp.body)
	return &APIError{
		Op:      cl.op,
		Status:  resp.status,
		Message: scrubString(eb.Message, secrets),
		Fields:  eb.Fields,
		AgentID: eb.AgentID,
	}
}

// scrub removes secrets from an error's text (a hostile server could echo them).
func scrub(err error, secrets []string) error {
	msg := err.Error()
	clean := scrubString(msg, secrets)
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, err: err}
}

type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

func scrubString(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}
