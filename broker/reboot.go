package broker

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Reboot refuses every reboot, naming why: the policy's reboots section is
// off, or this broker does not perform reboots yet. The refusal is a
// normal answer (allowed false and the reason) and a "deny" in the
// decision log.
func (s *Server) Reboot(ctx context.Context, _ *brokerv1.RebootRequest) (*brokerv1.RebootResponse, error) {
	reason := "reboots are disabled by policy (reboots: enabled is false)"
	if policyOf(ctx, s).policy.Reboots().Enabled {
		reason = "reboots are enabled by policy (reboots), but this broker does not perform them yet"
	}
	a := auditFrom(ctx)
	a.decision, a.reason = decisionDeny, reason
	return &brokerv1.RebootResponse{Reason: reason}, nil
}
