package broker

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// RunPatch refuses every patch run, naming why: the policy's patches
// section is off, or this broker does not run patch scripts yet. The
// refusal is a normal answer (state FAILED_TO_START and the reason) and a
// "deny" in the decision log.
func (s *Server) RunPatch(ctx context.Context, req *brokerv1.RunPatchRequest) (*brokerv1.RunPatchResponse, error) {
	reason := patchesRefusal(policyOf(ctx, s))
	a := auditFrom(ctx)
	a.decision, a.reason = decisionDeny, reason
	return &brokerv1.RunPatchResponse{OperationId: req.GetOperationId(), State: brokerv1.PatchState_PATCH_STATE_FAILED_TO_START, Reason: reason}, nil
}

// PatchResult answers that no patch run exists, and why.
func (s *Server) PatchResult(ctx context.Context, req *brokerv1.PatchResultRequest) (*brokerv1.PatchResultResponse, error) {
	reason := patchesRefusal(policyOf(ctx, s))
	a := auditFrom(ctx)
	a.decision, a.reason = decisionDeny, reason
	return &brokerv1.PatchResultResponse{OperationId: req.GetOperationId(), State: brokerv1.PatchState_PATCH_STATE_UNKNOWN, Error: reason}, nil
}

func patchesRefusal(lp *loadedPolicy) string {
	if !lp.policy.Patches().Enabled {
		return "patch scripts are disabled by policy (patches: enabled is false)"
	}
	return "patch scripts are enabled by policy (patches), but this broker does not run them yet"
}
