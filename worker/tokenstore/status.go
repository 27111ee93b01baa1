package tokenstore

import (
	"fmt"
	"math"
	"time"
)

// State is the registration state shown by `status` (the strings match
// workerv1.Registration.state).
type State string

// States.
const (
	StateNotRegistered        State = "not registered"
	StateRegistered           State = "registered"
	StateRegistrationRequired State = "registration required"
)

// Mode is how the agent authenticates.
type Mode string

// Modes (the strings match workerv1.Registration.mode).
const (
	ModeOAuth  Mode = "oauth"
	ModeStatic Mode = "static"
)

// RenewSupport is what is known about the backend's renew-refresh-token.
type RenewSupport string

// Renew support values.
const (
	RenewUnknown      RenewSupport = "unknown"
	RenewSupported    RenewSupport = "supported"
	RenewNotSupported RenewSupport = "not supported"
)

// Status is the registration as `status` shows it.
type Status struct {
	State   State
	Mode    Mode
	AgentID string
	// Reason says why registration is required.
	Reason string
	// AccessTokenExpiresAt is when the worker treats the access token as
	// expired (the backend's expires_in, which it understates); the
	// worker refreshes it RefreshBefore earlier, at AccessTokenRefreshAt.
	AccessTokenExpiresAt time.Time
	AccessTokenRefreshAt time.Time
	// AccessTokenClaimExpiresAt is the access token's own exp claim (zero
	// when it has none): when the backend stops accepting it.
	AccessTokenClaimExpiresAt time.Time
	// RefreshTokenIssuedAt is when the refresh token was issued (or first
	// seen, when RefreshTokenIssuedEstimated).
	RefreshTokenIssuedAt          time.Time
	RefreshTokenIssuedAtEstimated bool
	RefreshTokenExpiresAt         time.Time
	// RefreshTokenDaysLeft is whole days until the refresh token expires
	// (0 on its last day, negative when past; meaningless without one).
	RefreshTokenDaysLeft int
	// RefreshTokenWarning is set within WarnBefore of the expiry.
	RefreshTokenWarning bool
	RenewSupport        RenewSupport
	// PersistError is why the current token could not be written to disk
	// (nil when it was).
	PersistError error
	// Warnings are sentences for `status` and the log.
	Warnings []string
}

// Status reports the current state without any network call.
func (m *Manager) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.opts.Now()
	st := Status{State: StateNotRegistered, RenewSupport: RenewUnknown}
	switch m.renew {
	case renewUnknown:
	case renewSupported:
		st.RenewSupport = RenewSupported
	case renewNotSupported:
		st.RenewSupport = RenewNotSupported
	}
	if !m.loaded {
		return st
	}
	st.AgentID = m.tok.AgentID
	if m.tok.Static() {
		st.State, st.Mode = StateRegistered, ModeStatic
		return st
	}
	st.Mode = ModeOAuth
	st.State = StateRegistered
	st.AccessTokenExpiresAt = m.tok.ExpiresAt
	if !m.tok.ExpiresAt.IsZero() {
		st.AccessTokenRefreshAt = m.tok.ExpiresAt.Add(-m.opts.RefreshBefore)
	}
	if exp, ok := jwtExpiry(m.tok.AccessToken); ok {
		st.AccessTokenClaimExpiresAt = exp
	}
	if m.terminal != "" {
		st.State, st.Reason = StateRegistrationRequired, m.terminal
		st.Warnings = append(st.Warnings, "registration required: "+m.terminal)
	}
	if m.tok.RefreshToken != "" {
		exp := m.refreshExpiry(m.tok)
		st.RefreshTokenIssuedAt = m.tok.RefreshIssuedAt
		st.RefreshTokenIssuedAtEstimated = m.tok.RefreshIssuedEstimated
		st.RefreshTokenExpiresAt = exp
		st.RefreshTokenDaysLeft = int(math.Floor(exp.Sub(now).Hours() / 24))
		st.RefreshTokenWarning = exp.Sub(now) <= m.opts.WarnBefore
		if st.RefreshTokenWarning && m.terminal == "" {
			st.Warnings = append(st.Warnings, m.expiryWarning(exp, now))
		}
	}
	if m.persistErr != nil {
		st.PersistError = m.persistErr
		st.Warnings = append(st.Warnings, persistWarningText+m.persistErr.Error())
	}
	return st
}

func (m *Manager) expiryWarning(exp, now time.Time) string {
	estimate := ""
	if m.tok.RefreshIssuedEstimated {
		estimate = " (estimated: the token came from an older install and its age is unknown)"
	}
	left := exp.Sub(now)
	when := fmt.Sprintf("in %d days", int(math.Floor(left.Hours()/24)))
	if left <= 0 {
		when = "now"
	}
	msg := fmt.Sprintf("the refresh token expires %s, on %s%s", when, exp.UTC().Format("2006-01-02 15:04 UTC"), estimate)
	if m.renew == renewNotSupported {
		return msg + "; this backend cannot renew it: run `nannyagent register --force` before then"
	}
	return msg + "; it is renewed automatically where the backend supports it"
}
