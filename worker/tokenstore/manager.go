package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// Refresher is what the Manager needs from NannyAPI (*nannyapi.Client has it).
type Refresher interface {
	Refresh(ctx context.Context, refreshToken string) (nannyapi.TokenResponse, error)
	RenewRefreshToken(ctx context.Context, refreshToken string) (nannyapi.TokenResponse, error)
}

// Options tune a Manager; zero values take the defaults.
type Options struct {
	// RefreshBefore refreshes the access token this long before it expires (default 5m).
	RefreshBefore time.Duration
	// RefreshTokenLifetime is the refresh token's life when the backend does
	// not say it (default 30 days, as the backend sets).
	RefreshTokenLifetime time.Duration
	// WarnBefore raises the refresh-token warning this long before it
	// expires (default 7 days); renewal is tried from then on.
	WarnBefore time.Duration
	// RetryAfterFailure spaces refresh attempts after a failed one (network,
	// 5xx), so callers do not hammer the backend (default 30s).
	RetryAfterFailure time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger gets state changes; nil discards. Tokens are never logged.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.RefreshBefore <= 0 {
		o.RefreshBefore = 5 * time.Minute
	}
	if o.RefreshTokenLifetime <= 0 {
		o.RefreshTokenLifetime = 30 * 24 * time.Hour
	}
	if o.WarnBefore <= 0 {
		o.WarnBefore = 7 * 24 * time.Hour
	}
	if o.RetryAfterFailure <= 0 {
		o.RetryAfterFailure = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrRegistrationRequired: the stored registration cannot be used any more
// (refresh token revoked, expired or missing); run `nannyagent register`.
// Errors carrying it are *RegistrationRequiredError with the reason.
var ErrRegistrationRequired = errors.New("registration required")

// ErrNotRegistered: there is no token at all.
var ErrNotRegistered = errors.New("not registered")

// ErrStaticMode: the store holds the static-token marker; use
// nannyapi.StaticToken for credentials instead of the Manager.
var ErrStaticMode = errors.New("static token mode: the manager has no token to give")

// RegistrationRequiredError says why registration is required.
type RegistrationRequiredError struct{ Reason string }

func (e *RegistrationRequiredError) Error() string {
	return "registration required: " + e.Reason
}

// Is makes errors.Is(err, ErrRegistrationRequired) true.
func (e *RegistrationRequiredError) Is(target error) bool { return target == ErrRegistrationRequired }

// Reasons for "registration required".
const (
	ReasonRevoked      = "the backend does not know the refresh token (revoked in the portal, or replaced): register again"
	ReasonExpired      = "the refresh token expired (this backend gives it 30 days and cannot renew it): register again"
	ReasonNoRefresh    = "no refresh token is stored: register again"
	reasonRejectedFmt  = "the backend refused the refresh token (%s): register again"
	persistWarningText = "the token could not be written to disk (it is kept in memory and written again later): "
)

// renewState is what this process learned about renew-refresh-token.
type renewState int

const (
	renewUnknown renewState = iota
	renewSupported
	renewNotSupported
)

// Manager hands out a valid access token, refreshing it 5 minutes before
// expiry and once when the server rejects it, one refresh at a time. It
// implements nannyapi.Credentials.
type Manager struct {
	store *Store
	api   Refresher
	opts  Options

	// sem is held during a refresh or renew; waiters give up on ctx.
	sem chan struct{}

	mu          sync.Mutex
	tok         Token
	loaded      bool
	terminal    string // reason when registration is required
	lastFailAt  time.Time
	lastFailErr error
	renew       renewState
	dirty       bool
	persistErr  error
}

// NewManager loads the token from store. A missing token is not an error:
// the state is then "not registered" until Install.
func NewManager(store *Store, api Refresher, opts Options) (*Manager, error) {
	m := &Manager{store: store, api: api, opts: opts.withDefaults(), sem: make(chan struct{}, 1)}
	if err := m.Reload(); err != nil {
		return nil, err
	}
	return m, nil
}

// Reload re-reads the token from disk, e.g. after another process wrote it.
func (m *Manager) Reload() error {
	tok, err := m.store.Load()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case errors.Is(err, ErrNotFound):
		m.tok, m.loaded = Token{}, false
	case err != nil:
		return fmt.Errorf("load token: %w", err)
	default:
		if tok.RefreshToken != "" && tok.RefreshIssuedAt.IsZero() {
			// Migrated from the reference agent: its age is unknown, so
			// count from now and say it is an estimate.
			tok.RefreshIssuedAt, tok.RefreshIssuedEstimated = m.opts.Now(), true
			m.dirty = true
		}
		m.tok, m.loaded = tok, true
	}
	m.terminal, m.lastFailErr, m.lastFailAt = "", nil, time.Time{}
	return nil
}

// Install stores a new registration's token and makes it current. The token
// is kept in memory even when writing it fails (the error is returned).
func (m *Manager) Install(ctx context.Context, tok Token) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.unlock()
	m.mu.Lock()
	m.tok, m.loaded, m.terminal = tok, true, ""
	m.lastFailErr, m.lastFailAt = nil, time.Time{}
	m.mu.Unlock()
	return m.persist(tok)
}

// Registered returns the agent id and whether the stored registration is
// live (usable, or static). A registration that requires re-registering is
// not live.
func (m *Manager) Registered() (agentID string, live bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tok.AgentID, m.loaded && m.terminal == "" && (m.tok.Static() || m.tok.RefreshToken != "" || m.tok.AccessToken != "")
}

// AgentID returns the stored agent id ("" when unknown).
func (m *Manager) AgentID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.tok.AgentID
}

func (m *Manager) lock(ctx context.Context) error {
	select {
	case m.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Manager) unlock() { <-m.sem }

// usable returns the current access token if no refresh is needed, or why
// none can be given.
func (m *Manager) check() (tok Token, fresh bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.loaded:
		return Token{}, false, ErrNotRegistered
	case m.tok.Static():
		return Token{}, false, ErrStaticMode
	case m.terminal != "":
		return Token{}, false, &RegistrationRequiredError{Reason: m.terminal}
	}
	now := m.opts.Now()
	fresh = m.tok.AccessToken != "" && now.Before(m.tok.ExpiresAt.Add(-m.opts.RefreshBefore))
	return m.tok, fresh, nil
}

// Token returns a valid access token, refreshing it first when it expires
// within RefreshBefore. While a refresh fails for a transient reason, a
// still-valid token is returned; an expired one gives the failure.
func (m *Manager) Token(ctx context.Context) (string, error) {
	tok, fresh, err := m.check()
	if err != nil || fresh {
		return tok.AccessToken, err
	}
	if err := m.lock(ctx); err != nil {
		return "", err
	}
	defer m.unlock()
	tok, fresh, err = m.check()
	if err != nil || fresh {
		return tok.AccessToken, err
	}
	if err := m.throttled(tok); err != nil {
		return "", err
	}
	if tok.AccessToken != "" && m.recentFailure() {
		return tok.AccessToken, nil
	}
	return m.refreshLocked(ctx, tok, true)
}

// Rejected refreshes after the server answered 401 to token, unless another
// caller already did, and returns the token to retry with.
func (m *Manager) Rejected(ctx context.Context, token string) (string, error) {
	if err := m.lock(ctx); err != nil {
		return "", err
	}
	defer m.unlock()
	tok, _, err := m.check()
	if err != nil {
		return "", err
	}
	if tok.AccessToken != token && tok.AccessToken != "" && m.opts.Now().Before(tok.ExpiresAt) {
		return tok.AccessToken, nil
	}
	if m.recentFailure() {
		return "", m.failure()
	}
	// The server refused this token, so a failed refresh must not hand it out again.
	return m.refreshLocked(ctx, tok, false)
}

// throttled gives the last failure for an expired token within
// RetryAfterFailure of it.
func (m *Manager) throttled(tok Token) error {
	if !m.recentFailure() {
		return nil
	}
	if tok.AccessToken != "" && m.opts.Now().Before(tok.ExpiresAt) {
		return nil
	}
	return m.failure()
}

func (m *Manager) recentFailure() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastFailErr != nil && m.opts.Now().Sub(m.lastFailAt) < m.opts.RetryAfterFailure
}

func (m *Manager) failure() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Errorf("token refresh failed %s ago, retrying after %s: %w",
		m.opts.Now().Sub(m.lastFailAt).Round(time.Second), m.opts.RetryAfterFailure, m.lastFailErr)
}

// refreshLocked runs a refresh; the caller holds sem. On a transient
// failure it returns the current token while it is valid, if stale is allowed.
func (m *Manager) refreshLocked(ctx context.Context, tok Token, stale bool) (string, error) {
	if tok.RefreshToken == "" {
		return "", m.setTerminal(ReasonNoRefresh)
	}
	resp, err := m.api.Refresh(ctx, tok.RefreshToken)
	now := m.opts.Now()
	if err != nil {
		if reason, terminal := classify(err); terminal {
			return "", m.setTerminal(reason)
		}
		m.mu.Lock()
		m.lastFailErr, m.lastFailAt = err, now
		m.mu.Unlock()
		m.opts.Logger.Warn("token refresh failed", "error", err)
		if stale && tok.AccessToken != "" && now.Before(tok.ExpiresAt) && ctx.Err() == nil {
			return tok.AccessToken, nil
		}
		return "", fmt.Errorf("refresh token: %w", err)
	}
	next := tok
	next.AccessToken = resp.AccessToken
	next.ExpiresAt = accessExpiry(resp, now)
	if resp.RefreshToken != "" && resp.RefreshToken != tok.RefreshToken {
		// A rotating backend: adopt the new refresh token.
		next.RefreshToken = resp.RefreshToken
		next.RefreshIssuedAt, next.RefreshIssuedEstimated, next.RefreshExpiresAt = now, false, time.Time{}
	}
	if resp.RefreshTokenExpiresIn > 0 {
		next.RefreshExpiresAt = now.Add(time.Duration(resp.RefreshTokenExpiresIn) * time.Second)
	}
	if next.AgentID == "" {
		next.AgentID = resp.AgentID
	}
	m.mu.Lock()
	m.tok = next
	m.lastFailErr, m.lastFailAt = nil, time.Time{}
	m.mu.Unlock()
	if err := m.persist(next); err != nil {
		m.opts.Logger.Warn("token refreshed but not saved", "error", err)
	}
	m.opts.Logger.Debug("access token refreshed", "agent_id", next.AgentID, "expires_at", next.ExpiresAt)
	return next.AccessToken, nil
}

// classify tells a refresh failure that needs a new registration from a
// transient one.
func classify(err error) (reason string, terminal bool) {
	ae, ok := nannyapi.AsAPIError(err)
	if !ok {
		return "", false
	}
	switch {
	case ae.Status == http.StatusUnauthorized && ae.Message == nannyapi.MsgRefreshTokenExpired:
		return ReasonExpired, true
	case ae.Status == http.StatusUnauthorized && ae.Message == nannyapi.MsgInvalidRefreshToken:
		return ReasonRevoked, true
	case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
		return fmt.Sprintf(reasonRejectedFmt, ae.Message), true
	case ae.Status == http.StatusBadRequest && ae.Message == nannyapi.MsgRefreshTokenRequired:
		return ReasonNoRefresh, true
	}
	return "", false
}

func (m *Manager) setTerminal(reason string) error {
	m.mu.Lock()
	changed := m.terminal != reason
	m.terminal = reason
	m.mu.Unlock()
	if changed {
		m.opts.Logger.Error("registration required", "reason", reason)
	}
	return &RegistrationRequiredError{Reason: reason}
}

// persist writes tok; on failure it stays dirty and Maintain writes it again.
func (m *Manager) persist(tok Token) error {
	err := m.store.Save(tok)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dirty, m.persistErr = err != nil, err
	return err
}

// Maintain is the periodic housekeeping: refresh the access token when it
// is due, renew the refresh token within WarnBefore of its expiry where the
// backend supports renew-refresh-token (an "unknown action" answer is
// remembered for the process lifetime), and write a token that could not be
// written before. Call it every few minutes; it returns the first error.
func (m *Manager) Maintain(ctx context.Context) error {
	if _, err := m.Token(ctx); err != nil {
		if errors.Is(err, ErrStaticMode) {
			return nil
		}
		return err
	}
	if err := m.maybeRenew(ctx); err != nil {
		return err
	}
	m.mu.Lock()
	tok, dirty := m.tok, m.dirty
	m.mu.Unlock()
	if dirty {
		if err := m.lock(ctx); err != nil {
			return err
		}
		defer m.unlock()
		return m.persist(tok)
	}
	return nil
}

// Run calls Maintain every interval until ctx ends; failures are logged.
func (m *Manager) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := m.Maintain(ctx); err != nil && ctx.Err() == nil {
			m.opts.Logger.Warn("token maintenance", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *Manager) maybeRenew(ctx context.Context) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.unlock()
	m.mu.Lock()
	tok, renew := m.tok, m.renew
	m.mu.Unlock()
	now := m.opts.Now()
	if renew == renewNotSupported || tok.RefreshToken == "" || m.refreshExpiry(tok).Sub(now) > m.opts.WarnBefore {
		return nil
	}
	resp, err := m.api.RenewRefreshToken(ctx, tok.RefreshToken)
	if err != nil {
		if nannyapi.IsUnknownAction(err) {
			m.mu.Lock()
			m.renew = renewNotSupported
			m.mu.Unlock()
			m.opts.Logger.Warn("backend cannot renew refresh tokens; register again before the refresh token expires",
				"expires_at", m.refreshExpiry(tok))
			return nil
		}
		if reason, terminal := classify(err); terminal {
			return m.setTerminal(reason)
		}
		return fmt.Errorf("renew refresh token: %w", err)
	}
	next := TokenFromResponse(resp, now)
	if next.AgentID == "" || tok.AgentID != "" {
		next.AgentID = tok.AgentID
	}
	if next.TokenType == "" {
		next.TokenType = tok.TokenType
	}
	m.mu.Lock()
	m.tok, m.renew = next, renewSupported
	m.mu.Unlock()
	m.opts.Logger.Info("refresh token renewed", "agent_id", next.AgentID)
	return m.persist(next)
}

func (m *Manager) refreshExpiry(t Token) time.Time {
	if !t.RefreshExpiresAt.IsZero() {
		return t.RefreshExpiresAt
	}
	return t.RefreshIssuedAt.Add(m.opts.RefreshTokenLifetime)
}
