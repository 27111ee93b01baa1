// Package fakeapi is an in-process fake of NannyAPI's agent-facing contract
// as shared/reference/nannyapi-backend.md records a real server answering:
// the same paths, status codes, error bodies (custom {"error":…} and
// PocketBase {"data","message","status"}), SSE frames and quirks
// ("refresh_token":"", 204 subscribe for garbage tokens, 5-minute idle
// close, no /fail route, a reboot monitor that completes an acknowledged
// reboot once the agent's last_seen passes acknowledged_at).
// It is never more permissive than the real server; where the record is
// silent it chooses the stricter answer.
//
// Tests drive it as "the user" (create investigations, patches, reboots,
// approve device codes), inspect what the agent sent, and inject faults.
package fakeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Options configure a Server; zero values take the defaults.
type Options struct {
	// Addr is the listen address (default "127.0.0.1:0").
	Addr string
	// Now is the server's clock (default time.Now); see Clock.
	Now func() time.Time
	// AccessTokenTTL is the JWT's exp (default 7 days; answers still say
	// expires_in 3600, like the real one).
	AccessTokenTTL time.Duration
	// RefreshTokenTTL is the refresh token's life (default 30 days).
	RefreshTokenTTL time.Duration
	// DeviceCodeTTL is a device code's life (default 10 minutes; expires_in says 600).
	DeviceCodeTTL time.Duration
	// AutoApprove authorizes every device code for the default user as soon
	// as it is created.
	AutoApprove bool
	// RenewRefreshToken enables the newer backend's renew-refresh-token action.
	RenewRefreshToken bool
	// RegisterWithToken enables the newer backend's register-with-token action.
	RegisterWithToken bool
	// RebootFail enables the newer backend's POST /api/reboot/<id>/fail.
	RebootFail bool
	// RebootMonitorInterval is the period of the reboot monitor (default
	// 30s, as the backend's): each tick marks an acknowledged reboot
	// completed when the agent's last_seen is later than acknowledged_at,
	// and times out the rest after timeout_seconds. Negative: no ticker;
	// tests call RunRebootMonitor.
	RebootMonitorInterval time.Duration
	// IdleTimeout closes a realtime stream after this long without a
	// message (default 5 minutes, as PocketBase does).
	IdleTimeout time.Duration
	// AI answers proxy turns; nil answers every turn with a TensorZero error.
	AI AI
	// FrontendURL prefixes verification_uri (default "http://127.0.0.1:8080").
	FrontendURL string
	// MaxBodyBytes caps request bodies (default 32 MiB).
	MaxBodyBytes int64
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AccessTokenTTL <= 0 {
		o.AccessTokenTTL = 7 * 24 * time.Hour
	}
	if o.RefreshTokenTTL <= 0 {
		o.RefreshTokenTTL = 30 * 24 * time.Hour
	}
	if o.DeviceCodeTTL <= 0 {
		o.DeviceCodeTTL = 10 * time.Minute
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.FrontendURL == "" {
		o.FrontendURL = "http://127.0.0.1:8080"
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 32 << 20
	}
	if o.RebootMonitorInterval == 0 {
		o.RebootMonitorInterval = 30 * time.Second
	}
	return o
}

// Server is a running fake NannyAPI.
type Server struct {
	opts Options
	ln   net.Listener
	srv  *http.Server
	mux  *http.ServeMux
	url  string

	ctx         context.Context
	cancel      context.CancelFunc
	serveDone   chan struct{}
	monitorDone chan struct{}
	closeOnce   sync.Once

	mu sync.Mutex
	st state
	// changed is closed and replaced on every state change (for waiters).
	changed chan struct{}
}

// New starts a Server and panics if it cannot listen (like httptest.NewServer).
func New(opts Options) *Server {
	s, err := Start(opts)
	if err != nil {
		panic(fmt.Sprintf("fakeapi: %v", err))
	}
	return s
}

// Start starts a Server.
func Start(opts Options) (*Server, error) {
	opts = opts.withDefaults()
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", opts.Addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts:        opts,
		ln:          ln,
		url:         "http://" + ln.Addr().String(),
		ctx:         ctx,
		cancel:      cancel,
		serveDone:   make(chan struct{}),
		monitorDone: make(chan struct{}),
		st:          newState(),
		changed:     make(chan struct{}),
	}
	s.seed()
	s.mux = s.routes()
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go func() {
		defer close(s.serveDone)
		_ = s.srv.Serve(ln)
	}()
	go s.rebootMonitor()
	return s, nil
}

// URL returns the base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return s.url }

// Close ends every stream and request and stops the server.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(ctx)
		_ = s.srv.Close()
		<-s.serveDone
		<-s.monitorDone
	})
}

func (s *Server) now() time.Time { return s.opts.Now() }

// notify wakes waiters; the caller holds s.mu.
func (s *Server) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// waitFor waits until cond (called with s.mu held) is true.
func (s *Server) waitFor(ctx context.Context, cond func() bool) error {
	for {
		s.mu.Lock()
		ok := cond()
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return errors.New("fakeapi closed")
		case <-ch:
		}
	}
}

// ServeHTTP records the request, applies injected faults and delays, and
// routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, s.opts.MaxBodyBytes+1))
	if err != nil || int64(len(body)) > s.opts.MaxBodyBytes {
		writePB(w, http.StatusRequestEntityTooLarge, "Request entity too large.", nil)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	route := s.routeOf(r, body)
	s.mu.Lock()
	s.st.hits[route]++
	if len(s.st.requests) >= maxRequestLog {
		s.st.requests = append(s.st.requests[:0], s.st.requests[maxRequestLog/2:]...)
	}
	s.st.requests = append(s.st.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
		Route: route, Header: r.Header.Clone(), Body: body, At: s.now()})
	delay := s.st.slow[route]
	f := s.st.takeFault(route)
	s.notify()
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if f != nil {
		w.Header().Set("Content-Type", f.contentType)
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// maxRequestLog bounds the request log of a long-running demo server; the
// older half is dropped when it is full.
const maxRequestLog = 20000

// routeOf names a request for faults and hit counts (see the Route constants).
func (s *Server) routeOf(r *http.Request, body []byte) string {
	if r.Method == http.MethodPost && r.URL.Path == "/api/agent" {
		var a struct {
			Action string `json:"action"`
		}
		_ = json.Unmarshal(body, &a)
		return "agent/" + a.Action
	}
	if r.Method == http.MethodPost && r.URL.Path == "/api/investigations" {
		var p struct {
			InvestigationID string `json:"investigation_id"`
		}
		if json.Unmarshal(body, &p) == nil && p.InvestigationID != "" {
			return RouteAITurn
		}
	}
	_, pattern := s.mux.Handler(r)
	if pattern == "" || pattern == "/" {
		return r.Method + " " + r.URL.Path
	}
	return pattern
}

// Routes for Fail, Slow and Hits.
const (
	RouteDeviceAuthStart     = "agent/device-auth-start"
	RouteAuthorize           = "agent/authorize"
	RouteRegister            = "agent/register"
	RouteRefresh             = "agent/refresh"
	RouteRenewRefreshToken   = "agent/renew-refresh-token"
	RouteRegisterWithToken   = "agent/register-with-token"
	RouteIngestMetrics       = "agent/ingest-metrics"
	RouteInvestigationCreate = "POST /api/investigations"
	RouteAITurn              = "ai-turn"
	RouteInvestigationPatch  = "PATCH /api/investigations"
	RouteRecords             = "GET /api/collections/{collection}/records"
	RouteScriptValidate      = "GET /api/scripts/{id}/validate"
	RouteFiles               = "GET /api/files/{collection}/{record}/{file}"
	RoutePatchCreate         = "POST /api/patches"
	RoutePatchResult         = "POST /api/patches/{id}/result"
	RoutePatchStatus         = "PATCH /api/patches"
	RouteRebootCreate        = "POST /api/reboot"
	RouteRebootAck           = "POST /api/reboot/{id}/acknowledge"
	RouteRebootGet           = "GET /api/reboot/{id}"
	RouteRebootFail          = "POST /api/reboot/{id}/fail"
	RouteProxmoxCluster      = "POST /api/proxmox/cluster"
	RouteProxmoxNode         = "POST /api/proxmox/node"
	RouteProxmoxLXC          = "POST /api/proxmox/lxc"
	RouteProxmoxQEMU         = "POST /api/proxmox/qemu"
	RouteHealth              = "GET /api/health"
	RouteRealtimeConnect     = "GET /api/realtime"
	RouteRealtimeSubscribe   = "POST /api/realtime"
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/agent", s.handleAgent)
	mux.HandleFunc(RouteHealth, s.handleHealth)
	mux.HandleFunc(RouteRealtimeConnect, s.handleRealtimeConnect)
	mux.HandleFunc(RouteRealtimeSubscribe, s.handleRealtimeSubscribe)
	mux.HandleFunc(RouteInvestigationCreate, s.handleInvestigationsPost)
	mux.HandleFunc(RouteInvestigationPatch, s.handleInvestigationPatch)
	mux.HandleFunc(RouteRecords, s.handleRecords)
	mux.HandleFunc(RouteScriptValidate, s.handleScriptValidate)
	mux.HandleFunc(RouteFiles, s.handleFile)
	mux.HandleFunc(RoutePatchCreate, s.handlePatchCreate)
	mux.HandleFunc(RoutePatchResult, s.handlePatchResult)
	mux.HandleFunc(RoutePatchStatus, s.handlePatchStatus)
	mux.HandleFunc(RouteRebootCreate, s.handleRebootCreate)
	mux.HandleFunc(RouteRebootAck, s.handleRebootAck)
	mux.HandleFunc(RouteRebootGet, s.handleRebootGet)
	if s.opts.RebootFail {
		mux.HandleFunc(RouteRebootFail, s.handleRebootFail)
	}
	mux.HandleFunc(RouteProxmoxCluster, s.handleProxmox("cluster"))
	mux.HandleFunc(RouteProxmoxNode, s.handleProxmox("node"))
	mux.HandleFunc(RouteProxmoxLXC, s.handleProxmox("lxc"))
	mux.HandleFunc(RouteProxmoxQEMU, s.handleProxmox("qemu"))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writePB(w, http.StatusNotFound, "The requested resource wasn't found.", nil)
	})
	return mux
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Message string         `json:"message"`
		Code    int            `json:"code"`
		Data    map[string]any `json:"data"`
	}{"API is healthy.", 200, map[string]any{}})
}

// success is the custom handlers' {"success":true,"message":…}.
type success struct {
	Success bool   `json:"success"`
	Message string `json:"message"`
}

// writeJSON writes v as the whole answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = http.StatusInternalServerError, []byte(`{"error":"fakeapi: encode answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// writeErr writes a custom handler's {"error":msg}.
func writeErr(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// writePB writes PocketBase's {"data":{…},"message":…,"status":N}.
func writePB(w http.ResponseWriter, status int, msg string, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	writeJSON(w, status, pbError{Data: data, Message: msg, Status: status})
}

type pbError struct {
	Data    map[string]any `json:"data"`
	Message string         `json:"message"`
	Status  int            `json:"status"`
}

// pbGeneric500 is PocketBase's answer to a handler panic.
func pbGeneric500(w http.ResponseWriter) {
	writePB(w, http.StatusInternalServerError, "Something went wrong while processing your request.", nil)
}

// isJSON reports a JSON Content-Type.
func isJSON(r *http.Request) bool {
	ct := strings.ToLower(strings.TrimSpace(strings.Split(r.Header.Get("Content-Type"), ";")[0]))
	return ct == "application/json"
}

// decodeBody decodes a JSON object body into v.
func decodeBody(r *http.Request, v any) error {
	if !isJSON(r) {
		return errors.New("not json")
	}
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return err
	}
	return nil
}
