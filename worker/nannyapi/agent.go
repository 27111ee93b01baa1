package nannyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
)

const (
	pathAgent   = "/api/agent"
	contentJSON = "application/json"
)

// agentCall builds a POST /api/agent call. The backend requires
// Content-Type: application/json (without it: 400 "unknown action").
func (c *Client) agentCall(action string, body any) (call, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return call{}, fmt.Errorf("nannyapi %s: encode: %w", action, err)
	}
	return call{op: action, method: http.MethodPost, url: c.apiURL(pathAgent), body: data, ctype: contentJSON}, nil
}

// DeviceAuthStart starts the device flow (anonymous). Not retried once it
// reached the server (each start creates a code).
func (c *Client) DeviceAuthStart(ctx context.Context) (DeviceAuth, error) {
	cl, err := c.agentCall("device-auth-start", map[string]string{"action": "device-auth-start"})
	if err != nil {
		return DeviceAuth{}, err
	}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return DeviceAuth{}, err
	}
	return DecodeDeviceAuth(resp.body)
}

type registerBody struct {
	Action     string `json:"action"`
	DeviceCode string `json:"device_code"`
	HostMetadata
}

// Register polls once with an authorized device code (anonymous). Before
// approval it fails with APIError 400 "device not authorized yet"
// (MsgDeviceNotAuthorized). It consumes the code, so it is not retried once
// it reached the server.
func (c *Client) Register(ctx context.Context, deviceCode string, host HostMetadata) (TokenResponse, error) {
	if !validToken(deviceCode) {
		return TokenResponse{}, invalidInput("device code malformed")
	}
	cl, err := c.agentCall("register", registerBody{Action: "register", DeviceCode: deviceCode, HostMetadata: host})
	if err != nil {
		return TokenResponse{}, err
	}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return TokenResponse{}, err
	}
	return DecodeToken(resp.body)
}

// Refresh exchanges the refresh token for a new access token (anonymous).
// The backend answers "refresh_token":"" (no rotation): the caller keeps its
// refresh token then. 401 "invalid refresh token" means revoked or unknown,
// 401 "refresh token expired" means its 30 days are over. Not retried once
// it reached the server, because a rotating backend would have spent the
// old token.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (TokenResponse, error) {
	return c.tokenAction(ctx, "refresh", refreshToken)
}

// RenewRefreshToken asks a newer backend for a new refresh token (the old
// one is invalidated). An older backend answers 400 "unknown action"
// (IsUnknownAction). The answer must carry a new refresh_token.
func (c *Client) RenewRefreshToken(ctx context.Context, refreshToken string) (TokenResponse, error) {
	t, err := c.tokenAction(ctx, "renew-refresh-token", refreshToken)
	if err != nil {
		return TokenResponse{}, err
	}
	if t.RefreshToken == "" {
		return TokenResponse{}, decodeErrf("renew-refresh-token answer", "no new refresh_token")
	}
	return t, nil
}

func (c *Client) tokenAction(ctx context.Context, action, refreshToken string) (TokenResponse, error) {
	if !validToken(refreshToken) {
		return TokenResponse{}, invalidInput("%s: refresh token empty or malformed", action)
	}
	cl, err := c.agentCall(action, map[string]string{"action": action, "refresh_token": refreshToken})
	if err != nil {
		return TokenResponse{}, err
	}
	cl.secrets = []string{refreshToken}
	resp, err := c.do(ctx, cl)
	if err != nil {
		return TokenResponse{}, err
	}
	return DecodeToken(resp.body)
}

type registerWithTokenBody struct {
	Action string `json:"action"`
	HostMetadata
}

// RegisterWithToken registers with a static nsk_ token (newer backends).
// agentID, when known, goes in X-Agent-ID. An older backend answers 400
// "unknown action" (IsUnknownAction). Not retried once it reached the server.
func (c *Client) RegisterWithToken(ctx context.Context, staticToken, agentID string, host HostMetadata) (string, error) {
	st := StaticToken{Token: staticToken, AgentID: agentID}
	if err := st.Check(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidInput, err)
	}
	cl, err := c.agentCall("register-with-token", registerWithTokenBody{Action: "register-with-token", HostMetadata: host})
	if err != nil {
		return "", err
	}
	cl.bearer = staticToken
	cl.agentID = agentID
	resp, err := c.do(ctx, cl)
	if err != nil {
		return "", err
	}
	return DecodeRegisterWithToken(resp.body)
}

type ingestBody struct {
	Action string `json:"action"`
	MetricsReport
}

// IngestMetrics posts one metrics sample (agent). 200, 201 and an empty 204
// are success. The report is checked first (platform_family required,
// percentages 0…100, nothing negative), because the backend answers those
// with 400 or an opaque 500. An upsert, so it is retried on 502/503/504.
func (c *Client) IngestMetrics(ctx context.Context, m MetricsReport) error {
	if err := m.Check(); err != nil {
		return fmt.Errorf("nannyapi ingest-metrics: %w", err)
	}
	if m.SystemMetrics.Filesystems == nil {
		m.SystemMetrics.Filesystems = []Filesystem{}
	}
	cl, err := c.agentCall("ingest-metrics", ingestBody{Action: "ingest-metrics", MetricsReport: m})
	if err != nil {
		return err
	}
	cl.auth = true
	cl.idempotent = true
	resp, err := c.do(ctx, cl)
	if err != nil {
		return err
	}
	return DecodeSuccess(resp.body)
}

// Check reports what the backend would refuse in m.
func (m MetricsReport) Check() error {
	if m.PlatformFamily == "" {
		return invalidInput("platform_family is required")
	}
	s := m.SystemMetrics
	for name, pct := range map[string]float64{"cpu_percent": s.CPUPercent, "memory_percent": s.MemoryPercent, "disk_usage_percent": s.DiskUsagePercent} {
		if !(pct >= 0 && pct <= 100) {
			return invalidInput("%s %v outside 0…100", name, pct)
		}
	}
	values := []float64{s.MemoryUsedGB, s.MemoryTotalGB, s.DiskUsedGB, s.DiskTotalGB, float64(s.CPUCores),
		s.LoadAverage.OneMin, s.LoadAverage.FiveMin, s.LoadAverage.FifteenMin, s.NetworkStats.InGB, s.NetworkStats.OutGB}
	for _, fs := range s.Filesystems {
		values = append(values, fs.UsedGB, fs.FreeGB, fs.TotalGB, fs.UsagePercent)
	}
	for _, v := range values {
		if !(v >= 0) || math.IsInf(v, 0) {
			return invalidInput("metric value %v is negative or not a number", v)
		}
	}
	return nil
}
