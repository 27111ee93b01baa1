// Package registration enrols this host with NannyAPI: the device flow
// (device-auth-start, the user approves a code in the portal, register is
// polled) and static nsk_ tokens (register-with-token, newer backends).
//
// It sends the full host metadata the caller supplies (never a hard-coded
// version), streams the user code and the backend's verification_uri
// through a callback, and refuses to replace a live registration unless
// forced. Tokens go to a tokenstore.Manager (or anything with Install).
package registration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// API is what registration needs from NannyAPI (*nannyapi.Client has it).
type API interface {
	DeviceAuthStart(ctx context.Context) (nannyapi.DeviceAuth, error)
	Register(ctx context.Context, deviceCode string, host nannyapi.HostMetadata) (nannyapi.TokenResponse, error)
	RegisterWithToken(ctx context.Context, staticToken, agentID string, host nannyapi.HostMetadata) (string, error)
}

// Tokens is where a registration's token goes (*tokenstore.Manager has it).
type Tokens interface {
	// Registered returns the current agent id and whether it is live.
	Registered() (agentID string, live bool)
	// Install stores the new token and makes it current.
	Install(ctx context.Context, tok tokenstore.Token) error
}

// Errors a caller branches on.
var (
	// ErrAlreadyRegistered: a live registration exists and Force was not set.
	ErrAlreadyRegistered = errors.New("this host is already registered; use force to replace the registration")
	// ErrCodeExpired: nobody approved the device code in time.
	ErrCodeExpired = errors.New("device code expired before it was approved")
	// ErrStaticTokensUnsupported: the backend has no register-with-token.
	ErrStaticTokensUnsupported = errors.New("this NannyAPI backend does not support static tokens (register-with-token is unknown to it); use the device flow or upgrade the backend")
)

// Modes of a Result (match workerv1.Registered.mode).
const (
	ModeOAuth  = "oauth"
	ModeStatic = "static"
)

// Result is a finished registration.
type Result struct {
	AgentID string
	Mode    string
}

// DeviceCode is what the user enters in the portal; stream it to the CLI.
type DeviceCode struct {
	UserCode string
	// VerificationURI is the backend's own link (it includes the code).
	VerificationURI string
	ExpiresIn       time.Duration
	ExpiresAt       time.Time
}

// Registrar runs registrations.
type Registrar struct {
	api    API
	tokens Tokens
}

// New returns a Registrar.
func New(api API, tokens Tokens) *Registrar {
	return &Registrar{api: api, tokens: tokens}
}

// DeviceFlowOptions configure a device-flow registration.
type DeviceFlowOptions struct {
	// Host is this host's metadata (NormalizeHost is applied).
	Host nannyapi.HostMetadata
	// Force replaces a live registration (only after the new one succeeds).
	Force bool
	// PollInterval is the wait between register polls (default 5s).
	PollInterval time.Duration
	// OnDeviceCode receives the code once, before polling starts.
	OnDeviceCode func(DeviceCode)
	// OnProgress receives short progress lines (optional).
	OnProgress func(string)
}

// DeviceFlow registers through the device flow: it gets a code, hands it to
// OnDeviceCode and polls register every PollInterval until the code is
// approved or expires. "device not authorized yet" and transport failures
// keep polling; any other backend answer ends it.
func (r *Registrar) DeviceFlow(ctx context.Context, opts DeviceFlowOptions) (Result, error) {
	host, err := NormalizeHost(opts.Host)
	if err != nil {
		return Result{}, err
	}
	if err := r.checkForce(opts.Force); err != nil {
		return Result{}, err
	}
	progress := opts.OnProgress
	if progress == nil {
		progress = func(string) {}
	}
	interval := opts.PollInterval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	da, err := r.api.DeviceAuthStart(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("start device authorization: %w", err)
	}
	code := DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI,
		ExpiresIn: time.Duration(da.ExpiresIn) * time.Second}
	code.ExpiresAt = time.Now().Add(code.ExpiresIn)
	if opts.OnDeviceCode != nil {
		opts.OnDeviceCode(code)
	}
	deadline := code.ExpiresAt
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for attempt := 1; ; attempt++ {
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("device authorization: %w", ctx.Err())
		case <-timer.C:
		}
		resp, err := r.api.Register(ctx, da.DeviceCode, host)
		if err == nil {
			return r.finishDeviceFlow(ctx, resp)
		}
		if done, ferr := pollFailure(err); done {
			return Result{}, ferr
		}
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("device authorization: %w", ctx.Err())
		}
		if !time.Now().Add(interval).Before(deadline) {
			return Result{}, fmt.Errorf("%w (after %s)", ErrCodeExpired, code.ExpiresIn)
		}
		if !nannyapi.HasMessage(err, 400, nannyapi.MsgDeviceNotAuthorized) {
			progress(fmt.Sprintf("poll %d failed, retrying: %v", attempt, err))
		}
		timer.Reset(interval)
	}
}

// pollFailure decides whether a failed poll ends the flow.
func pollFailure(err error) (done bool, out error) {
	ae, ok := nannyapi.AsAPIError(err)
	if !ok {
		var de *nannyapi.DecodeError
		if errors.As(err, &de) {
			return true, fmt.Errorf("register: %w", err)
		}
		return false, nil // transport failure: keep polling
	}
	switch {
	case ae.Status == 400 && ae.Message == nannyapi.MsgDeviceNotAuthorized:
		return false, nil
	case ae.Message == nannyapi.MsgDeviceCodeExpired:
		return true, fmt.Errorf("%w: %w", ErrCodeExpired, err)
	case ae.Message == nannyapi.MsgDeviceCodeUsed:
		return true, fmt.Errorf("register: the device code was already used by agent %q; start a new registration: %w", ae.AgentID, err)
	case ae.Status == 502 || ae.Status == 503 || ae.Status == 504:
		return false, nil
	default:
		return true, fmt.Errorf("register: %w", err)
	}
}

func (r *Registrar) finishDeviceFlow(ctx context.Context, resp nannyapi.TokenResponse) (Result, error) {
	if resp.AgentID == "" {
		return Result{}, errors.New("register: the backend answered without an agent_id")
	}
	if resp.RefreshToken == "" {
		return Result{}, errors.New("register: the backend answered without a refresh_token")
	}
	tok := tokenstore.TokenFromResponse(resp, time.Now())
	if err := r.tokens.Install(ctx, tok); err != nil {
		return Result{AgentID: resp.AgentID, Mode: ModeOAuth},
			fmt.Errorf("registered as agent %s but the token could not be saved: %w", resp.AgentID, err)
	}
	return Result{AgentID: resp.AgentID, Mode: ModeOAuth}, nil
}

// StaticOptions configure a static-token registration.
type StaticOptions struct {
	// Token is the nsk_ token (from config or NANNYAI_STATIC_TOKEN, never argv).
	Token string
	// AgentID, when known, is sent as X-Agent-ID.
	AgentID string
	Host    nannyapi.HostMetadata
	Force   bool
}

// Static registers with a static nsk_ token and writes the static marker
// token file (type "static", as the reference agent does). The caller
// saves the returned agent id in its config.
func (r *Registrar) Static(ctx context.Context, opts StaticOptions) (Result, error) {
	host, err := NormalizeHost(opts.Host)
	if err != nil {
		return Result{}, err
	}
	if err := (nannyapi.StaticToken{Token: opts.Token, AgentID: opts.AgentID}).Check(); err != nil {
		return Result{}, err
	}
	if err := r.checkForce(opts.Force); err != nil {
		return Result{}, err
	}
	agentID, err := r.api.RegisterWithToken(ctx, opts.Token, opts.AgentID, host)
	if err != nil {
		if nannyapi.IsUnknownAction(err) {
			return Result{}, fmt.Errorf("%w: %w", ErrStaticTokensUnsupported, err)
		}
		return Result{}, fmt.Errorf("register with static token: %w", err)
	}
	if err := r.tokens.Install(ctx, tokenstore.StaticMarker(agentID, time.Now())); err != nil {
		return Result{AgentID: agentID, Mode: ModeStatic},
			fmt.Errorf("registered as agent %s but the marker token file could not be saved: %w", agentID, err)
	}
	return Result{AgentID: agentID, Mode: ModeStatic}, nil
}

func (r *Registrar) checkForce(force bool) error {
	if force {
		return nil
	}
	if id, live := r.tokens.Registered(); live {
		return fmt.Errorf("%w (agent %s)", ErrAlreadyRegistered, id)
	}
	return nil
}

// NormalizeHost checks the metadata and fills platform_family when empty
// (guessed from os_info like the backend does, else "unknown"), because
// the backend refuses metrics without it. hostname and version are required.
func NormalizeHost(h nannyapi.HostMetadata) (nannyapi.HostMetadata, error) {
	h.Hostname = strings.TrimSpace(h.Hostname)
	h.Version = strings.TrimSpace(h.Version)
	if h.Hostname == "" {
		return h, errors.New("host metadata: hostname is required")
	}
	if h.Version == "" {
		return h, errors.New("host metadata: version is required")
	}
	if h.OSType == "" {
		h.OSType = "linux"
	}
	if strings.TrimSpace(h.PlatformFamily) == "" {
		h.PlatformFamily = GuessPlatformFamily(h.OSInfo)
	}
	if h.AllIPs == nil {
		h.AllIPs = []string{}
	}
	return h, nil
}

// GuessPlatformFamily maps an OS description to a platform family the
// backend's patch scripts know: debian, rhel, arch, suse, alpine, or
// "unknown".
func GuessPlatformFamily(osInfo string) string {
	s := strings.ToLower(osInfo)
	for _, f := range []struct {
		family string
		words  []string
	}{
		{"debian", []string{"ubuntu", "debian", "mint", "pop!_os", "raspbian", "proxmox"}},
		{"rhel", []string{"red hat", "rhel", "centos", "rocky", "alma", "fedora", "oracle linux", "amazon linux"}},
		{"arch", []string{"arch", "manjaro", "endeavouros"}},
		{"suse", []string{"suse", "sles"}},
		{"alpine", []string{"alpine"}},
	} {
		for _, w := range f.words {
			if strings.Contains(s, w) {
				return f.family
			}
		}
	}
	return "unknown"
}
