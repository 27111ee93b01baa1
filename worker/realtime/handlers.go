package realtime

import (
	"context"
	"errors"
	"io"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// API is what the realtime client needs from NannyAPI; *nannyapi.Client
// (with agent credentials) implements it. The token comes from the
// client's Credentials on every call, so every (re)connect and subscribe
// uses the current, possibly refreshed, token.
type API interface {
	OpenRealtime(ctx context.Context) (io.ReadCloser, error)
	Subscribe(ctx context.Context, clientID string, collections []string) error
	ListInvestigations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.Investigation, error)
	ListPatchOperations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.PatchOperation, error)
	ListRebootOperations(ctx context.Context, q nannyapi.RecordQuery) ([]nannyapi.RebootOperation, error)
}

// InvestigationHandler runs an investigation the user asked for. It
// reports its own outcome to the backend (completed, or failed with a
// reason); the error it returns is recorded locally. ctx ends when the
// worker stops: the investigation is then left "running" and recovered
// (reported failed) at the next start.
type InvestigationHandler interface {
	HandleInvestigation(ctx context.Context, inv nannyapi.Investigation) error
}

// PatchHandler runs a patch operation (dry-run or apply) and uploads its
// result.
type PatchHandler interface {
	HandlePatch(ctx context.Context, op nannyapi.PatchOperation) error
}

// RebootHandler carries out a reboot. ctx has the reboot's deadline
// (requested_at + timeout_seconds): nothing may happen after it. Right
// before acknowledging to the backend, the handler must call
// Realtime.RebootAcknowledging, so that a restart can tell whether the
// host rebooted since. A reboot it decided not to carry out (refused,
// nothing acknowledged) returns a *RefusedError: it is then recorded
// Skipped with the reason and reported where the backend takes reports.
type RebootHandler interface {
	HandleReboot(ctx context.Context, op nannyapi.RebootOperation) error
}

// Reporter tells the backend about operations the worker decided not to
// run (too old, past the deadline, refused) or found interrupted after a
// restart. APIReporter implements it with NannyAPI. Reports are retried
// at every catch-up until they succeed or fail permanently (ErrNotSupported,
// or a 4xx answer other than 401, 408 and 429).
type Reporter interface {
	// FailInvestigation marks an investigation failed with reason.
	FailInvestigation(ctx context.Context, id, reason string) error
	// FailPatch uploads a failed result (non-zero exit code, reason as
	// stderr) for a patch operation.
	FailPatch(ctx context.Context, id, lxcID, reason string) error
	// FailReboot reports a reboot not carried out.
	FailReboot(ctx context.Context, id, reason string) error
}

// ErrNotSupported is returned by a Reporter when the backend cannot take
// that report (the observed backend has no reboot /fail route); the reason
// is then only logged.
var ErrNotSupported = errors.New("the backend cannot take this report")

// PatchOutcome is what PatchRecovery found out about an interrupted run.
type PatchOutcome int

const (
	// PatchFinished: the detached run finished and its result was uploaded.
	PatchFinished PatchOutcome = iota + 1
	// PatchStillRunning: the detached run goes on; ask again later.
	PatchStillRunning
	// PatchNeverStarted: there is no run for the operation.
	PatchNeverStarted
)

// PatchRecoveryResult answers RecoverPatch.
type PatchRecoveryResult struct {
	Outcome PatchOutcome
	// Succeeded: a finished run exited 0.
	Succeeded bool
	// Note is kept in the local record.
	Note string
}

// PatchRecovery finds out what became of a patch operation that a previous
// worker process left running: it asks the broker for the detached run's
// result by operation id, and when the run finished it uploads that result
// to the backend itself. An error leaves the operation running locally; it
// is asked again at the next catch-up.
type PatchRecovery interface {
	RecoverPatch(ctx context.Context, e opstate.Entry) (PatchRecoveryResult, error)
}
