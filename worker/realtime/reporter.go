package realtime

import (
	"context"
	"fmt"
	"net/http"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// SkipExitCode is the exit code uploaded for a patch operation the worker
// did not run; the reason goes in stderr.
const SkipExitCode = 1

// ReportAPI is the part of *nannyapi.Client that APIReporter uses.
type ReportAPI interface {
	UpdateInvestigation(ctx context.Context, id string, u nannyapi.InvestigationUpdate) error
	UploadPatchResult(ctx context.Context, operationID string, r nannyapi.PatchResult) error
	UpdatePatch(ctx context.Context, operationID string, u nannyapi.PatchUpdate) error
	FailReboot(ctx context.Context, rebootID, message string) error
}

// APIReporter is the Reporter that talks to NannyAPI: an investigation is
// PATCHed "failed" with the reason as its resolution plan, a patch gets a
// result upload with SkipExitCode and the reason as stderr, then the reason
// as its error_msg (PATCH /api/patches?id=…), a reboot goes
// to /api/reboot/<id>/fail (404 on the observed backend: ErrNotSupported).
type APIReporter struct {
	API ReportAPI
}

// FailInvestigation implements Reporter.
func (a APIReporter) FailInvestigation(ctx context.Context, id, reason string) error {
	return a.API.UpdateInvestigation(ctx, id, nannyapi.InvestigationUpdate{Status: nannyapi.StatusFailed, ResolutionPlan: reason})
}

// FailPatch implements Reporter.
func (a APIReporter) FailPatch(ctx context.Context, id, lxcID, reason string) error {
	if err := a.API.UploadPatchResult(ctx, id, nannyapi.PatchResult{ExitCode: SkipExitCode, LXCID: lxcID, Stderr: []byte("nannyagent: " + reason + "\n")}); err != nil {
		return err
	}
	// The upload made the operation failed; a lost error_msg only loses
	// the portal's summary, the reason is in stderr, so this is not retried.
	_ = a.API.UpdatePatch(ctx, id, nannyapi.PatchUpdate{Status: "failed", ErrorMsg: reason})
	return nil
}

// FailReboot implements Reporter.
func (a APIReporter) FailReboot(ctx context.Context, id, reason string) error {
	err := a.API.FailReboot(ctx, id, reason)
	if nannyapi.StatusOf(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}
