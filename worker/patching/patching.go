// Package patching handles a patch operation on the worker's side: it
// fetches the script only from NannyAPI's own origin, checks its sha256
// against the backend's record of it, asks the broker to run exactly those
// bytes, waits for the detached run's result and uploads it. The broker
// decides whether the policy allows the script at all; every failure before
// or during the run is uploaded as a failed result with its reason, so no
// operation stays pending.
package patching

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// API is what a patch needs from NannyAPI (*nannyapi.Client has it).
type API interface {
	DownloadScript(ctx context.Context, scriptURL string) ([]byte, error)
	ValidateScript(ctx context.Context, scriptID string) (nannyapi.ScriptInfo, error)
	SetPatchStatus(ctx context.Context, operationID, status string) error
	UploadPatchResult(ctx context.Context, operationID string, r nannyapi.PatchResult) error
}

// Broker runs patch scripts (the generated broker client has it).
type Broker interface {
	RunPatch(ctx context.Context, in *brokerv1.RunPatchRequest, opts ...grpc.CallOption) (*brokerv1.RunPatchResponse, error)
	PatchResult(ctx context.Context, in *brokerv1.PatchResultRequest, opts ...grpc.CallOption) (*brokerv1.PatchResultResponse, error)
}

// Handler runs patch operations.
type Handler struct {
	API    API
	Broker Broker
	// Poll is the wait between result checks of a running patch.
	Poll time.Duration
	// MaxWait bounds how long the handler waits for a run to finish.
	MaxWait time.Duration
}

// failExitCode marks a patch that never produced an exit code of its own;
// the backend marks anything but "0" failed.
const failExitCode = 1

// HandlePatch runs one operation and uploads its result.
func (h *Handler) HandlePatch(ctx context.Context, op nannyapi.PatchOperation) error {
	res, err := h.run(ctx, op)
	if err != nil {
		res = nannyapi.PatchResult{ExitCode: failExitCode, LXCID: op.LXCID, Stderr: []byte("nannyagent: " + err.Error() + "\n")}
	}
	if uerr := h.API.UploadPatchResult(ctx, op.ID, res); uerr != nil {
		return errors.Join(err, fmt.Errorf("upload patch result: %w", uerr))
	}
	return err
}

func (h *Handler) run(ctx context.Context, op nannyapi.PatchOperation) (nannyapi.PatchResult, error) {
	mode, err := patchMode(op.Mode)
	if err != nil {
		return nannyapi.PatchResult{}, err
	}
	script, sum, err := h.fetch(ctx, op)
	if err != nil {
		return nannyapi.PatchResult{}, err
	}
	started, err := h.Broker.RunPatch(ctx, &brokerv1.RunPatchRequest{
		OperationId: op.ID, Script: script, Sha256: sum, Vmid: string(op.VMID), Mode: mode, Exclusions: op.Exclusions,
	})
	if err != nil {
		return nannyapi.PatchResult{}, fmt.Errorf("the broker did not run the script: %s", status.Convert(err).Message())
	}
	if started.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING && started.GetState() != brokerv1.PatchState_PATCH_STATE_FINISHED {
		return nannyapi.PatchResult{}, fmt.Errorf("the broker refused the script: %s", started.GetReason())
	}
	_ = h.API.SetPatchStatus(ctx, op.ID, "running")
	return h.wait(ctx, op)
}

// fetch downloads the script and checks it against the backend's hash.
func (h *Handler) fetch(ctx context.Context, op nannyapi.PatchOperation) ([]byte, string, error) {
	scriptID, err := nannyapi.ScriptIDFromURL(pathOf(op.ScriptURL))
	if err != nil {
		return nil, "", fmt.Errorf("script_url: %w", err)
	}
	script, err := h.API.DownloadScript(ctx, op.ScriptURL)
	if err != nil {
		return nil, "", fmt.Errorf("download script: %w", err)
	}
	info, err := h.API.ValidateScript(ctx, scriptID)
	if err != nil {
		return nil, "", fmt.Errorf("validate script: %w", err)
	}
	digest := sha256.Sum256(script)
	sum := hex.EncodeToString(digest[:])
	if !strings.EqualFold(sum, info.SHA256) {
		return nil, "", fmt.Errorf("script sha256 %s does not match the backend's %s", sum, info.SHA256)
	}
	return script, sum, nil
}

// wait polls the broker until the detached run has finished.
func (h *Handler) wait(ctx context.Context, op nannyapi.PatchOperation) (nannyapi.PatchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, h.MaxWait)
	defer cancel()
	tick := time.NewTicker(h.Poll)
	defer tick.Stop()
	for {
		r, err := h.Broker.PatchResult(ctx, &brokerv1.PatchResultRequest{OperationId: op.ID})
		if err == nil && r.GetState() == brokerv1.PatchState_PATCH_STATE_FINISHED {
			return nannyapi.PatchResult{ExitCode: int(r.GetExitCode()), LXCID: op.LXCID, Stdout: r.GetStdout(), Stderr: r.GetStderr()}, nil
		}
		if err == nil && r.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING {
			return nannyapi.PatchResult{}, fmt.Errorf("patch run ended in state %s: %s", r.GetState(), r.GetError())
		}
		select {
		case <-ctx.Done():
			return nannyapi.PatchResult{}, fmt.Errorf("waiting for the patch run: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func patchMode(mode string) (brokerv1.PatchMode, error) {
	switch mode {
	case "dry-run":
		return brokerv1.PatchMode_PATCH_MODE_DRY_RUN, nil
	case "apply":
		return brokerv1.PatchMode_PATCH_MODE_APPLY, nil
	}
	return 0, fmt.Errorf("unknown patch mode %q (want dry-run or apply)", mode)
}

// pathOf is the path part of a script_url, absolute or relative.
func pathOf(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		rest := raw[i+3:]
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			return rest[j:]
		}
		return "/"
	}
	return raw
}
