package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/config"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// session is the worker's standing with NannyAPI: the anonymous client, the
// token manager (device-flow mode) or the static token, and the client that
// carries the credentials for agent calls.
type session struct {
	cfg    *config.Config
	api    *nannyapi.Client
	tokens *tokenstore.Manager
	// agent is the credentialed client; it changes when a static-mode
	// registration learns the agent id.
	agent atomic.Pointer[nannyapi.Client]
}

func newSession(cfg *config.Config, version string) (*session, error) {
	plain, err := nannyapi.ParsePlainHTTPPolicy(cfg.PlainHTTP)
	if err != nil {
		return nil, &config.Error{Key: "plain_http", Reason: err.Error()}
	}
	api, err := nannyapi.New(nannyapi.Config{
		BaseURL:               cfg.APIURL,
		PlainHTTP:             plain,
		Version:               version,
		ResponseHeaderTimeout: cfg.HTTP.ResponseHeaderTimeout,
		RequestTimeout:        cfg.APITimeout,
		AITurnTimeout:         cfg.AITurnTimeout,
	})
	if err != nil {
		return nil, &config.Error{Key: "nannyapi_url", Reason: err.Error()}
	}
	store, err := tokenstore.Open(cfg.TokenPath)
	if err != nil {
		api.Close()
		return nil, &config.Error{Key: "token_path", Reason: err.Error()}
	}
	tokens, err := tokenstore.NewManager(store, api, tokenstore.Options{
		WarnBefore: cfg.TokenRenewal.WarnBefore(),
	})
	if err != nil {
		api.Close()
		return nil, err
	}
	s := &session{cfg: cfg, api: api, tokens: tokens}
	s.useCredentials()
	return s, nil
}

// useCredentials points agent calls at the static token (with the agent id
// once known) or at the token manager.
func (s *session) useCredentials() {
	if s.cfg.UseStaticToken() {
		s.agent.Store(s.api.WithCredentials(nannyapi.StaticToken{Token: s.cfg.StaticToken, AgentID: s.agentID()}.Credentials()))
		return
	}
	s.agent.Store(s.api.WithCredentials(s.tokens))
}

// agentID is the configured id (static mode), else the token file's.
func (s *session) agentID() string {
	if s.cfg.AgentID != "" {
		return s.cfg.AgentID
	}
	return s.tokens.AgentID()
}

// registered reports whether agent calls can be made.
func (s *session) registered() bool {
	if s.cfg.UseStaticToken() {
		return s.agentID() != ""
	}
	_, live := s.tokens.Registered()
	return live
}

// client is the credentialed client for agent calls.
func (s *session) client() *nannyapi.Client { return s.agent.Load() }

func (s *session) close() { s.api.Close() }

// hostMetadata describes this host for registration, from the broker's
// metrics sample (the worker reads nothing of the host itself).
func hostMetadata(ctx context.Context, broker brokerv1.BrokerServiceClient, version string) (nannyapi.HostMetadata, error) {
	m, err := broker.CollectMetrics(ctx, &brokerv1.CollectMetricsRequest{})
	if err != nil {
		return nannyapi.HostMetadata{}, fmt.Errorf("host facts from the broker: %w", err)
	}
	h := m.GetHost()
	if h.GetHostname() == "" {
		return nannyapi.HostMetadata{}, errors.New("host facts from the broker: no hostname")
	}
	osInfo := h.GetOsPrettyName()
	if osInfo == "" {
		osInfo = h.GetPlatform()
	}
	return nannyapi.HostMetadata{
		Hostname:       h.GetHostname(),
		OSType:         h.GetOsType(),
		OSInfo:         osInfo,
		OSVersion:      h.GetPlatformVersion(),
		PlatformFamily: h.GetPlatformFamily(),
		Version:        version,
		KernelVersion:  h.GetKernelRelease(),
		Arch:           h.GetArch(),
		PrimaryIP:      m.GetPrimaryIp(),
		AllIPs:         m.GetIps(),
	}, nil
}
