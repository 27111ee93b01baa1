// Package tokenstore keeps the agent's NannyAPI tokens: the on-disk store,
// compatible with the reference agent's token.json and .refresh_token, and
// the Manager that refreshes the access token and tracks the refresh
// token's 30-day life.
//
// Files are 0600 in a 0700 directory owned by the worker account, written
// atomically (temp file in the same directory, fsync, rename, fsync the
// directory), so a crash or a full disk never loses the old token. Tokens
// never appear in logs or error strings: Token's String, GoString and
// LogValue hide them.
package tokenstore

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// TokenTypeStatic marks the static-mode token file (no tokens inside).
const TokenTypeStatic = "static"

// Token is what the store holds.
type Token struct {
	AccessToken  string
	RefreshToken string
	// TokenType is "" for device-flow tokens (the backend sends none) and
	// "static" for the static-mode marker.
	TokenType string
	// ExpiresAt is when the access token is treated as expired.
	ExpiresAt time.Time
	AgentID   string

	// RefreshIssuedAt is when the refresh token was issued, or first seen
	// when RefreshIssuedEstimated (a token migrated from the reference agent).
	RefreshIssuedAt        time.Time
	RefreshIssuedEstimated bool
	// RefreshExpiresAt is the refresh token's expiry when the backend said
	// it (refresh_token_expires_in); zero means issued + lifetime.
	RefreshExpiresAt time.Time
}

// Static reports the static-mode marker.
func (t Token) Static() bool { return t.TokenType == TokenTypeStatic }

// String hides the tokens.
func (t Token) String() string {
	return fmt.Sprintf("Token{agent_id=%q type=%q expires_at=%s access_token=%s refresh_token=%s}",
		t.AgentID, t.TokenType, t.ExpiresAt.Format(time.RFC3339), hidden(t.AccessToken), hidden(t.RefreshToken))
}

// GoString hides the tokens from %#v.
func (t Token) GoString() string { return t.String() }

// LogValue hides the tokens from slog.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("agent_id", t.AgentID), slog.String("type", t.TokenType),
		slog.Time("expires_at", t.ExpiresAt), slog.String("access_token", hidden(t.AccessToken)),
		slog.String("refresh_token", hidden(t.RefreshToken)))
}

func hidden(s string) string {
	if s == "" {
		return "none"
	}
	return "[redacted]"
}

// StaticMarker is the token file written after a static-token registration,
// as the reference agent writes it: no tokens, type "static", expiry 100
// years ahead.
func StaticMarker(agentID string, now time.Time) Token {
	return Token{TokenType: TokenTypeStatic, ExpiresAt: now.AddDate(100, 0, 0), AgentID: agentID}
}

// TokenFromResponse builds a Token from a register or renew answer issued
// at now. The access expiry is expires_in, else the JWT's exp, else an hour.
func TokenFromResponse(r nannyapi.TokenResponse, now time.Time) Token {
	t := Token{
		AccessToken:     r.AccessToken,
		RefreshToken:    r.RefreshToken,
		TokenType:       r.TokenType,
		ExpiresAt:       accessExpiry(r, now),
		AgentID:         r.AgentID,
		RefreshIssuedAt: now,
	}
	if r.RefreshTokenExpiresIn > 0 {
		t.RefreshExpiresAt = now.Add(time.Duration(r.RefreshTokenExpiresIn) * time.Second)
	}
	return t
}

func accessExpiry(r nannyapi.TokenResponse, now time.Time) time.Time {
	if r.ExpiresIn > 0 {
		return now.Add(time.Duration(r.ExpiresIn) * time.Second)
	}
	if exp, ok := jwtExpiry(r.AccessToken); ok && exp.After(now) {
		return exp
	}
	return now.Add(time.Hour)
}

// jwtExpiry reads the unverified exp claim; only used to schedule a refresh.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// fileToken is token.json. The first five keys are the reference agent's
// (it decodes them with encoding/json into a struct, so it ignores
// "worker"); "worker" holds what only we track.
type fileToken struct {
	AccessToken  string      `json:"access_token"`
	RefreshToken string      `json:"refresh_token"`
	TokenType    string      `json:"token_type"`
	ExpiresAt    time.Time   `json:"expires_at"`
	AgentID      string      `json:"agent_id"`
	Worker       *workerMeta `json:"worker,omitempty"`
}

type workerMeta struct {
	RefreshIssuedAt        *time.Time `json:"refresh_token_issued_at,omitempty"`
	RefreshIssuedEstimated bool       `json:"refresh_token_issued_at_estimated,omitempty"`
	RefreshExpiresAt       *time.Time `json:"refresh_token_expires_at,omitempty"`
}

func (t Token) file() fileToken {
	f := fileToken{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType,
		ExpiresAt: t.ExpiresAt, AgentID: t.AgentID}
	if t.RefreshToken != "" && !t.RefreshIssuedAt.IsZero() {
		m := &workerMeta{RefreshIssuedEstimated: t.RefreshIssuedEstimated}
		issued := t.RefreshIssuedAt
		m.RefreshIssuedAt = &issued
		if !t.RefreshExpiresAt.IsZero() {
			exp := t.RefreshExpiresAt
			m.RefreshExpiresAt = &exp
		}
		f.Worker = m
	}
	return f
}

func (f fileToken) token() Token {
	t := Token{AccessToken: f.AccessToken, RefreshToken: f.RefreshToken, TokenType: f.TokenType,
		ExpiresAt: f.ExpiresAt, AgentID: f.AgentID}
	if f.Worker != nil {
		if f.Worker.RefreshIssuedAt != nil {
			t.RefreshIssuedAt = *f.Worker.RefreshIssuedAt
			t.RefreshIssuedEstimated = f.Worker.RefreshIssuedEstimated
		}
		if f.Worker.RefreshExpiresAt != nil {
			t.RefreshExpiresAt = *f.Worker.RefreshExpiresAt
		}
	}
	return t
}
