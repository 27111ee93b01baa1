package nannyapi

import (
	"context"
	"errors"
	"fmt"
)

// Credentials supplies the bearer token for agent calls. tokenstore.Manager
// implements it for device-flow (OAuth) registrations; StaticToken does for
// nsk_ tokens.
type Credentials interface {
	// Token returns the token to send now, refreshing it first when it is
	// about to expire.
	Token(ctx context.Context) (string, error)
	// Rejected is told that the server answered 401 to token. It returns a
	// token to retry the request with once, or an error (then the request
	// fails with the 401 and that error as its cause).
	Rejected(ctx context.Context, token string) (string, error)
}

// agentIDHeader is implemented by credentials that identify the agent with
// X-Agent-ID (static mode only; OAuth mode never sends it).
type agentIDHeader interface {
	AgentIDHeader() string
}

// ErrStaticTokenRejected: the backend refused the static token; it cannot be
// refreshed, so a new token must be configured.
var ErrStaticTokenRejected = errors.New("static token rejected: configure a valid nsk_ token")

// StaticToken is the credentials of static-token (nsk_) mode: the token is
// sent as is, with X-Agent-ID when the agent id is known. It is never
// refreshed.
type StaticToken struct {
	// Token is the nsk_ token from config or the environment.
	Token string
	// AgentID is sent as X-Agent-ID when not empty.
	AgentID string
}

// Check validates the token's form (nsk_ prefix, 5–512 visible characters).
func (s StaticToken) Check() error {
	if len(s.Token) < 5 || len(s.Token) > 512 || s.Token[:4] != "nsk_" || !validToken(s.Token) {
		return errors.New("static token must start with nsk_ and be 5 to 512 visible characters")
	}
	if s.AgentID != "" && !ValidID(s.AgentID) {
		return fmt.Errorf("agent id %q malformed", s.AgentID)
	}
	return nil
}

// String hides the token.
func (s StaticToken) String() string {
	return fmt.Sprintf("StaticToken{agent_id=%q token=[redacted]}", s.AgentID)
}

// GoString hides the token from %#v too.
func (s StaticToken) GoString() string { return s.String() }

// staticCreds adapts StaticToken to Credentials (a field and a method cannot
// share the name Token).
type staticCreds struct{ s StaticToken }

func (c staticCreds) Token(context.Context) (string, error) { return c.s.Token, nil }

func (c staticCreds) Rejected(context.Context, string) (string, error) {
	return "", ErrStaticTokenRejected
}

func (c staticCreds) AgentIDHeader() string { return c.s.AgentID }

// Credentials returns s as Credentials for Client.WithCredentials.
func (s StaticToken) Credentials() Credentials { return staticCreds{s} }
