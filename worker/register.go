package worker

import (
	"context"
	"fmt"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/registration"
)

// Register enrols the host (the local API has already checked that the
// caller is root): the static token when one is configured, else the
// device flow, whose code and link go to the CLI as soon as they exist.
func (w *Worker) Register(ctx context.Context, force bool, send func(*workerv1.RegisterResponse) error) error {
	host, err := hostMetadata(ctx, w.broker, w.version)
	if err != nil {
		return err
	}
	reg := registration.New(w.session.api, w.session.tokens)
	var res registration.Result
	if w.cfg.UseStaticToken() {
		_ = send(progress("registering with the static token"))
		res, err = reg.Static(ctx, registration.StaticOptions{Token: w.cfg.StaticToken, AgentID: w.cfg.AgentID, Host: host, Force: force})
	} else {
		var sendErr error
		res, err = reg.DeviceFlow(ctx, registration.DeviceFlowOptions{
			Host: host, Force: force, PollInterval: w.cfg.RegisterPollInterval,
			OnDeviceCode: func(c registration.DeviceCode) {
				sendErr = send(&workerv1.RegisterResponse{Event: &workerv1.RegisterResponse_DeviceCode{DeviceCode: &workerv1.DeviceCode{
					UserCode: c.UserCode, VerificationUri: c.VerificationURI, ExpiresInSeconds: int32(c.ExpiresIn.Seconds()),
				}}})
			},
			OnProgress: func(s string) { _ = send(progress(s)) },
		})
		if sendErr != nil && err == nil {
			err = fmt.Errorf("send device code: %w", sendErr)
		}
	}
	if err != nil {
		return err
	}
	w.session.useCredentials()
	w.log.Info("registered", "agent_id", res.AgentID, "mode", res.Mode)
	w.startAgent()
	return send(&workerv1.RegisterResponse{Event: &workerv1.RegisterResponse_Registered{Registered: &workerv1.Registered{AgentId: res.AgentID, Mode: res.Mode, StoredIn: w.cfg.TokenPath}}})
}

func progress(s string) *workerv1.RegisterResponse {
	return &workerv1.RegisterResponse{Event: &workerv1.RegisterResponse_Progress{Progress: s}}
}
