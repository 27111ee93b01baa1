package broker

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// ProxmoxGet reads an allowed Proxmox API path on the local node: through
// pvesh for cluster and node status, from pmxcfs for guest configs.
func (s *Server) ProxmoxGet(ctx context.Context, req *brokerv1.ProxmoxGetRequest) (*brokerv1.ProxmoxGetResponse, error) {
	lp := s.policies.current()
	a := auditFrom(ctx)
	a.program = lp.policy.Proxmox().Pvesh
	a.argv = []string{"get", req.GetPath()}
	local, err := lp.caps.proxmox.LocalNode()
	if err != nil {
		a.decision, a.reason = decisionDeny, "not a Proxmox VE node: "+err.Error()
		return nil, status.Errorf(codes.FailedPrecondition, "not a Proxmox VE node: %v", err)
	}
	rule, err := lp.policy.CheckProxmoxPath(req.GetPath(), local)
	if err != nil {
		a.decision, a.reason = decisionDeny, err.Error()
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	a.ruleID = rule
	resp, err := lp.caps.proxmox.Get(ctx, req.GetPath())
	if err != nil {
		return nil, err
	}
	a.decision = decisionAllow
	a.program = resp.GetSource()
	return resp, nil
}
