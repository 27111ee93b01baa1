package worker

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// successes remembers the last successful post of each kind.
type successes struct {
	mu   sync.Mutex
	last map[string]time.Time
}

func (s *successes) record(kind string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]time.Time{}
	}
	s.last[kind] = at
}

func (s *successes) copy() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.last)+2)
	for k, v := range s.last {
		out[k] = v
	}
	return out
}

// Status gathers what `nannyagent status` shows. It asks the broker for its
// probe and NannyAPI for its health, each bounded by its timeout. It has no
// side effects: no metrics post, no token rewrite.
func (w *Worker) Status(ctx context.Context) *workerv1.StatusResponse {
	now := time.Now()
	resp := &workerv1.StatusResponse{
		Version:      w.version,
		StartedAt:    timestamppb.New(w.started),
		Warnings:     append([]string(nil), w.cfg.Warnings...),
		LastSuccess:  map[string]*timestamppb.Timestamp{},
		Registration: w.registration(),
		Realtime:     w.realtimeStatus(),
		Operations:   w.operations(),
		Settings:     w.settings(),
	}
	for kind, at := range w.lastSuccesses() {
		resp.LastSuccess[kind] = timestamppb.New(at)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); resp.Broker = w.brokerStatus(ctx) }()
	go func() { defer wg.Done(); resp.Api = w.apiStatus(ctx) }()
	wg.Wait()
	if warning := w.session.api.Warning(); warning != "" {
		resp.Warnings = append(resp.Warnings, warning)
	}
	tokens := w.session.tokens.Status()
	// The token's warnings that are problems (registration required, the
	// refresh token's end, a failed write) are listed there instead.
	problems, tokenProblems := w.problems(resp, tokens, now)
	if !tokenProblems {
		resp.Warnings = append(resp.Warnings, tokens.Warnings...)
	}
	resp.Problems = problems
	resp.Warnings = append(resp.Warnings, w.rebootWarnings()...)
	return resp
}

func (w *Worker) registration() *workerv1.Registration {
	if w.cfg.UseStaticToken() {
		r := &workerv1.Registration{Mode: "static", AgentId: w.session.agentID(), State: "not registered"}
		if r.AgentId != "" {
			r.Registered, r.State = true, "registered"
		}
		return r
	}
	st := w.session.tokens.Status()
	r := &workerv1.Registration{AgentId: st.AgentID, Mode: string(st.Mode), State: string(st.State),
		RenewSupport: string(st.RenewSupport), RefreshTokenIssuedEstimated: st.RefreshTokenIssuedAtEstimated}
	r.Registered = st.State == tokenstore.StateRegistered
	if st.Reason != "" {
		r.State += ": " + st.Reason
	}
	// The token's own exp claim is when the backend stops taking it; the
	// backend's expires_in understates it (an hour for a 7-day token).
	switch {
	case !st.AccessTokenClaimExpiresAt.IsZero():
		r.TokenExpiresAt, r.TokenExpirySource = timestamppb.New(st.AccessTokenClaimExpiresAt), "exp claim"
	case !st.AccessTokenExpiresAt.IsZero():
		r.TokenExpiresAt, r.TokenExpirySource = timestamppb.New(st.AccessTokenExpiresAt), "expires_in"
	}
	if !st.AccessTokenRefreshAt.IsZero() {
		r.TokenRefreshAt = timestamppb.New(st.AccessTokenRefreshAt)
	}
	if !st.RefreshTokenIssuedAt.IsZero() {
		r.RefreshTokenIssuedAt = timestamppb.New(st.RefreshTokenIssuedAt)
		r.RefreshTokenDaysLeft = int32(st.RefreshTokenDaysLeft)
	}
	if !st.RefreshTokenExpiresAt.IsZero() {
		r.RefreshTokenExpiresAt = timestamppb.New(st.RefreshTokenExpiresAt)
	}
	return r
}

// settings are the worker's values for the reference agent's override
// flags, so the CLI can tell whether such a flag changes anything.
func (w *Worker) settings() *workerv1.Settings {
	s := &workerv1.Settings{
		ApiUrl: w.session.api.BaseURL(), PortalUrl: w.cfg.PortalURL, TokenPath: w.cfg.TokenPath,
		AgentId: w.session.agentID(), MetricsInterval: durationpb.New(w.cfg.MetricsInterval),
		ProxmoxInterval: durationpb.New(w.cfg.ProxmoxInterval), Debug: w.cfg.Debug, StateDir: w.cfg.StateDir,
	}
	switch {
	case w.cfg.AgentID != "":
		s.AgentIdSource = "config"
	case s.AgentId != "":
		s.AgentIdSource = "token file"
	}
	return s
}

func (w *Worker) realtimeStatus() *workerv1.RealtimeStatus {
	w.runMu.Lock()
	rt := w.realtimeNow
	w.runMu.Unlock()
	if rt == nil {
		return &workerv1.RealtimeStatus{}
	}
	st := rt.Stats()
	r := &workerv1.RealtimeStatus{Enabled: true, Connected: st.Subscribed, Connects: st.Connects, StreamErrors: st.StreamErrors}
	if !st.SubscribedAt.IsZero() {
		r.ConnectedSince = timestamppb.New(st.SubscribedAt)
	}
	if !st.Subscribed && !st.DisconnectedAt.IsZero() {
		r.DisconnectedSince = timestamppb.New(st.DisconnectedAt)
	}
	if !st.LastCatchUp.IsZero() {
		r.LastCatchUp = timestamppb.New(st.LastCatchUp)
	}
	return r
}

func (w *Worker) brokerStatus(ctx context.Context) *workerv1.BrokerStatus {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.BrokerTimeout)
	defer cancel()
	probe, err := w.broker.Probe(ctx, &brokerv1.ProbeRequest{})
	if err != nil {
		return &workerv1.BrokerStatus{Error: err.Error()}
	}
	return &workerv1.BrokerStatus{Reachable: true, Probe: probe}
}

// apiHealthTimeout keeps `status` quick when NannyAPI does not answer.
const apiHealthTimeout = 5 * time.Second

func (w *Worker) apiStatus(ctx context.Context) *workerv1.ApiStatus {
	st := &workerv1.ApiStatus{Url: w.session.api.BaseURL(), Insecure: w.session.api.Insecure()}
	ctx, cancel := context.WithTimeout(ctx, apiHealthTimeout)
	defer cancel()
	if _, err := w.session.api.Health(ctx); err != nil {
		st.Error = err.Error()
		return st
	}
	st.Reachable = true
	return st
}
