package patching

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// RecoveryState is what became of a run a previous worker process asked
// the broker for.
type RecoveryState int

// The recovery states.
const (
	// Reported: the run is over and its result was uploaded now.
	Reported RecoveryState = iota + 1
	// StillRunning: the broker's run goes on; ask again later.
	StillRunning
	// NeverStarted: the broker has no run for the operation; nothing ran.
	NeverStarted
)

// Recovered answers Recover.
type Recovered struct {
	State RecoveryState
	// Succeeded: the reported run's script exited 0 on its own.
	Succeeded bool
	// Note says how the run ended, for the worker's record.
	Note string
}

// Recover finds out what became of operation id, which a previous worker
// process left running, and uploads the result of a run that is over. The
// upload is tried once: an error leaves the operation for a later try, so
// across restarts the result is uploaded once its upload has succeeded.
func (h *Handler) Recover(ctx context.Context, id, lxcID string) (Recovered, error) {
	r, err := h.Broker.PatchResult(ctx, &brokerv1.PatchResultRequest{OperationId: id})
	if status.Code(err) == codes.NotFound {
		return Recovered{State: NeverStarted}, nil
	}
	if err != nil {
		return Recovered{}, errors.New(brokerProblem(err))
	}
	if r.GetState() == brokerv1.PatchState_PATCH_STATE_RUNNING {
		return Recovered{State: StillRunning}, nil
	}
	out := resultOutcome(lxcID, r)
	if err := h.report(ctx, id, out, false); err != nil {
		return Recovered{}, err
	}
	note := out.errMsg
	if note == "" {
		note = "the run finished while the worker restarted; its result was uploaded after the restart"
	}
	return Recovered{State: Reported, Succeeded: out.errMsg == "", Note: note}, nil
}
