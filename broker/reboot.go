package broker

import (
	"context"
	"strings"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/reboot"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// DefaultStateDir is the broker's own state directory (0700 root): patch
// runs and their results, the last host reboot. The worker never writes
// there.
const DefaultStateDir = "/var/lib/nannyagent-broker"

// Reboot judges a host or container reboot against the policy and the
// guards (a patch running, another reboot, min_uptime, min_interval) and,
// unless the request only checks, warns logged-in users and runs the
// reboot command. A refusal is a normal answer with the reason.
func (s *Server) Reboot(ctx context.Context, req *brokerv1.RebootRequest) (*brokerv1.RebootResponse, error) {
	lp := policyOf(ctx, s)
	rb := lp.policy.Reboots()
	a := auditFrom(ctx)
	argv := reboot.Command(rb, req.GetVmid())
	a.stages = [][]string{argv}
	rule, err := lp.policy.CheckReboot(req.GetVmid())
	if err != nil {
		a.decision, a.reason = decisionDeny, err.Error()
		return &brokerv1.RebootResponse{Reason: err.Error()}, nil
	}
	a.ruleID = rule
	lim := lp.policy.Limits()
	// The policy's child limits bound wall, systemctl and pct like any
	// other child; the reboots section's timeout bounds the command.
	child := execute.Limits{ChildTasks: lim.ChildTasks, ChildMemory: lim.ChildMemory}
	out := s.rebooter.Reboot(ctx, rb, child, reboot.Request{
		ID: req.GetRebootId(), VMID: req.GetVmid(), Reason: req.GetReason(), CheckOnly: req.GetCheckOnly(),
	})
	resp := &brokerv1.RebootResponse{Allowed: out.Allowed, Reason: out.Reason, RuleId: rule, Started: out.Started,
		ExitCode: int32(out.ExitCode), Output: out.Output, Warned: out.Warned}
	switch {
	case !out.Allowed:
		a.decision, a.reason = decisionDeny, out.Reason
	case req.GetCheckOnly():
		a.decision, a.reason = decisionAllow, "check only: "+req.GetRebootId()+" would be allowed now"
	case !out.Started:
		a.decision, a.reason = decisionError, strings.TrimSpace(out.Reason+": "+out.Output)
	default:
		a.decision, a.reason = decisionAllow, "reboot "+req.GetRebootId()+" started"
	}
	return resp, nil
}
