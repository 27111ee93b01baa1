// Package patching handles a patch operation on the worker's side. It asks
// the broker first whether the policy allows the script NannyAPI names
// (by the hash NannyAPI gives for it, before anything is downloaded),
// marks the operation running, fetches the script only from NannyAPI's own
// origin, checks its sha256, hands the bytes to the broker, waits for the
// detached run and uploads its result as the backend expects (multipart
// exit_code, stdout_file, stderr_file). The broker is the judge and the
// runner; the worker never runs anything itself.
//
// Every failure, a refusal included, reaches the backend in words an
// operator understands: as error_msg (PATCH /api/patches?id=…) and in the
// uploaded stderr. Broker errors are translated, never passed on raw. A
// refusal the policy could lift names the policy text to add.
//
// After a restart, Recover finds out what became of a run a previous
// worker process started and uploads its result once.
package patching

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// API is what a patch needs from NannyAPI (*nannyapi.Client has it).
type API interface {
	ResolveScriptURL(raw string) (*url.URL, error)
	ValidateScript(ctx context.Context, scriptID string) (nannyapi.ScriptInfo, error)
	DownloadScript(ctx context.Context, scriptURL string) ([]byte, error)
	UpdatePatch(ctx context.Context, operationID string, u nannyapi.PatchUpdate) error
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
	// Poll is the wait between result checks of a running patch, and
	// before asking again while another run keeps the broker busy.
	Poll time.Duration
	// MaxWait bounds the wait for a run (the broker bounds the run itself
	// with the policy's patch_max_runtime, at most 4h).
	MaxWait time.Duration
	// Log (default: discard).
	Log *slog.Logger
}

// Exit codes uploaded for a patch that produced none of its own; the
// backend marks anything but "0" failed.
const failExitCode = 1

// Status values the worker PATCHes.
const (
	statusRunning = "running"
	statusFailed  = "failed"
)

// outcome is what is reported for an operation: the result to upload and,
// for a failure, the operator's explanation (error_msg).
type outcome struct {
	result nannyapi.PatchResult
	errMsg string
}

// failed is an operation that ended before a script result existed.
func failed(op nannyapi.PatchOperation, msg string) outcome {
	return outcome{errMsg: msg, result: nannyapi.PatchResult{ExitCode: failExitCode, LXCID: op.LXCID,
		Stderr: []byte("nannyagent: " + msg + "\n")}}
}

// HandlePatch runs one operation and reports its outcome. When ctx ends
// mid-way nothing is reported: the operation stays running in the
// worker's record and Recover resolves it after the restart.
func (h *Handler) HandlePatch(ctx context.Context, op nannyapi.PatchOperation) error {
	out, err := h.run(ctx, op)
	if err != nil {
		return err
	}
	if err := h.report(ctx, op.ID, out, true); err != nil {
		return err
	}
	if out.errMsg != "" {
		return errors.New(out.errMsg)
	}
	return nil
}

func (h *Handler) log() *slog.Logger {
	if h.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Log
}

// run goes through the flow; an error only means ctx ended.
func (h *Handler) run(ctx context.Context, op nannyapi.PatchOperation) (outcome, error) {
	mode, err := patchMode(op.Mode)
	if err != nil {
		return failed(op, err.Error()), nil
	}
	if op.ScriptArgs != "" {
		h.log().Warn("script_args of a patch operation ignored: the broker builds the arguments", "operation", op.ID)
	}
	// The URL is judged before any request: a script_url on another host
	// is never contacted, with or without the token.
	u, err := h.API.ResolveScriptURL(op.ScriptURL)
	if err != nil {
		return failed(op, scriptURLProblem(op.ScriptURL, err)), nil
	}
	scriptID, err := nannyapi.ScriptIDFromURL(u.Path)
	if err != nil {
		return failed(op, scriptURLProblem(op.ScriptURL, err)), nil
	}
	info, err := h.API.ValidateScript(ctx, scriptID)
	if err != nil {
		return h.stop(ctx, op, "NannyAPI did not give the script's sha256 (GET /api/scripts/"+scriptID+"/validate): "+err.Error())
	}
	base := &brokerv1.RunPatchRequest{OperationId: op.ID, Sha256: strings.ToLower(info.SHA256), Vmid: string(op.VMID),
		Mode: mode, Exclusions: op.Exclusions, ScriptName: info.Name}
	// Ask the broker before downloading: in pinned mode an unlisted script
	// is refused by the hash NannyAPI gives for it.
	if out, ok, err := h.check(ctx, op, base); !ok || err != nil {
		return out, err
	}
	if err := h.API.UpdatePatch(ctx, op.ID, nannyapi.PatchUpdate{Status: statusRunning}); err != nil {
		h.log().Warn("cannot mark the patch operation running", "operation", op.ID, "error", err.Error())
	}
	script, err := h.API.DownloadScript(ctx, op.ScriptURL)
	if err != nil {
		return h.stop(ctx, op, "the script could not be downloaded from NannyAPI: "+err.Error())
	}
	if sum := sha256Hex(script); sum != base.Sha256 {
		return failed(op, fmt.Sprintf("the script downloaded from NannyAPI does not match its sha256: it hashes to %s, while NannyAPI gives %s for %s; nothing ran",
			sum, base.Sha256, displayName(info.Name))), nil
	}
	req := cloneRequest(base)
	req.Script = script
	return h.start(ctx, op, req)
}

// stop is a failure unless ctx ended (then nothing is reported now).
func (h *Handler) stop(ctx context.Context, op nannyapi.PatchOperation, msg string) (outcome, error) {
	if err := ctx.Err(); err != nil {
		return outcome{}, err
	}
	return failed(op, msg), nil
}

// check asks the broker whether the policy allows the run; ok is false
// with the failure to report when it does not.
func (h *Handler) check(ctx context.Context, op nannyapi.PatchOperation, base *brokerv1.RunPatchRequest) (outcome, bool, error) {
	req := cloneRequest(base)
	req.CheckOnly = true
	resp, err := h.Broker.RunPatch(ctx, req)
	if err != nil {
		out, serr := h.stop(ctx, op, brokerProblem(err))
		return out, false, serr
	}
	switch resp.GetState() {
	case brokerv1.PatchState_PATCH_STATE_ALLOWED:
		return outcome{}, true, nil
	case brokerv1.PatchState_PATCH_STATE_REFUSED:
		return failed(op, refusal(resp)), false, nil
	}
	return failed(op, fmt.Sprintf("the broker gave an unexpected answer to the policy check (%s)", resp.GetState())), false, nil
}

// start hands the bytes to the broker (waiting while another run keeps
// it busy) and waits for the run, at most MaxWait.
func (h *Handler) start(ctx context.Context, op nannyapi.PatchOperation, req *brokerv1.RunPatchRequest) (outcome, error) {
	wctx, cancel := context.WithTimeout(ctx, h.MaxWait)
	defer cancel()
	for {
		resp, err := h.Broker.RunPatch(wctx, req)
		if err != nil {
			return h.stop(ctx, op, brokerProblem(err))
		}
		switch resp.GetState() {
		case brokerv1.PatchState_PATCH_STATE_REFUSED:
			return failed(op, refusal(resp)), nil
		case brokerv1.PatchState_PATCH_STATE_BUSY:
			h.log().Info("another patch run is in progress; waiting", "operation", op.ID, "reason", resp.GetReason())
			if !sleep(wctx, h.Poll) {
				return h.gaveUp(ctx, op, "another patch run kept the broker busy")
			}
			continue
		}
		return h.wait(ctx, wctx, op)
	}
}

// wait polls the broker until the detached run is over or wctx ends.
func (h *Handler) wait(ctx, wctx context.Context, op nannyapi.PatchOperation) (outcome, error) {
	var lastErr error
	for {
		r, err := h.Broker.PatchResult(wctx, &brokerv1.PatchResultRequest{OperationId: op.ID})
		switch {
		case err == nil && r.GetState() != brokerv1.PatchState_PATCH_STATE_RUNNING:
			return resultOutcome(op.LXCID, r), nil
		case err != nil:
			lastErr = err
			h.log().Warn("cannot read the patch run's state yet", "operation", op.ID, "error", brokerProblem(err))
		}
		if !sleep(wctx, h.Poll) {
			what := "the run did not end"
			if lastErr != nil {
				what += " (last broker answer: " + brokerProblem(lastErr) + ")"
			}
			return h.gaveUp(ctx, op, what)
		}
	}
}

// gaveUp: when the worker is stopping (ctx ended) nothing is reported and
// recovery takes over after the restart; when MaxWait ran out the
// operation is reported failed.
func (h *Handler) gaveUp(ctx context.Context, op nannyapi.PatchOperation, what string) (outcome, error) {
	if err := ctx.Err(); err != nil {
		return outcome{}, err
	}
	return failed(op, fmt.Sprintf("the agent gave up waiting for the patch run after %v: %s", h.MaxWait, what)), nil
}

// report uploads the result (retrying while the backend is unavailable,
// when retry is set) and PATCHes error_msg for a failure. An error means
// the result was not uploaded.
func (h *Handler) report(ctx context.Context, id string, out outcome, retry bool) error {
	if err := h.upload(ctx, id, out.result, retry); err != nil {
		return fmt.Errorf("upload the patch result: %w", err)
	}
	if out.errMsg == "" {
		return nil
	}
	// After the upload, which sets the status from exit_code: the backend
	// stores error_msg from this PATCH.
	if err := h.API.UpdatePatch(ctx, id, nannyapi.PatchUpdate{Status: statusFailed, ErrorMsg: out.errMsg}); err != nil {
		h.log().Warn("cannot store the failure reason on the patch operation", "operation", id, "error", err.Error())
	}
	return nil
}

func (h *Handler) upload(ctx context.Context, id string, r nannyapi.PatchResult, retry bool) error {
	wait := h.Poll
	for {
		err := h.API.UploadPatchResult(ctx, id, r)
		if err == nil || !retry || permanent(err) {
			return err
		}
		h.log().Warn("patch result upload failed; retrying", "operation", id, "error", err.Error(), "retry_in", wait)
		if !sleep(ctx, wait) {
			return err
		}
		wait = min(2*wait, time.Minute)
	}
}

// permanent reports an upload error that retrying will not fix.
func permanent(err error) bool {
	if errors.Is(err, nannyapi.ErrInvalidInput) {
		return true
	}
	st := nannyapi.StatusOf(err)
	return st >= 400 && st < 500 && st != 401 && st != 408 && st != 429
}

func cloneRequest(r *brokerv1.RunPatchRequest) *brokerv1.RunPatchRequest {
	return &brokerv1.RunPatchRequest{OperationId: r.GetOperationId(), Sha256: r.GetSha256(), Vmid: r.GetVmid(),
		Mode: r.GetMode(), Exclusions: append([]string(nil), r.GetExclusions()...), ScriptName: r.GetScriptName()}
}

func patchMode(mode string) (brokerv1.PatchMode, error) {
	switch mode {
	case "dry-run":
		return brokerv1.PatchMode_PATCH_MODE_DRY_RUN, nil
	case "apply":
		return brokerv1.PatchMode_PATCH_MODE_APPLY, nil
	}
	return 0, fmt.Errorf("unknown patch mode %q (NannyAPI sends dry-run or apply); nothing ran", clip(mode, 40))
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
