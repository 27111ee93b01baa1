package fakeapi

import (
	"context"
	"errors"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// AgentClient registers a new agent of the default user and returns the real
// NannyAPI client holding its access token, retrying once at most, for
// tests that exercise the worker's packages against the fake. The fake's
// own answers never use the client's code.
func (s *Server) AgentClient(hostname, platformFamily string) (*nannyapi.Client, AgentCredentials, error) {
	agent := s.AddAgent("", hostname, platformFamily)
	c, err := nannyapi.New(nannyapi.Config{BaseURL: s.URL(), Version: "test",
		Retry: nannyapi.RetryPolicy{Attempts: 1, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
	if err != nil {
		return nil, AgentCredentials{}, err
	}
	return c.WithCredentials(fixedToken(agent.AccessToken)), agent, nil
}

// fixedToken is credentials that never refresh.
type fixedToken string

func (f fixedToken) Token(context.Context) (string, error) { return string(f), nil }

func (f fixedToken) Rejected(context.Context, string) (string, error) {
	return "", errors.New("fakeapi: a fixed test token cannot be refreshed")
}
