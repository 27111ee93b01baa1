package broker

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/broker/proxmox"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// ProxmoxGet reads an allowed Proxmox API path on the local node: through
// pvesh for cluster and node status, from pmxcfs for guest configs.
func (s *Server) ProxmoxGet(ctx context.Context, req *brokerv1.ProxmoxGetRequest) (*brokerv1.ProxmoxGetResponse, error) {
	lp := policyOf(ctx, s)
	a := auditFrom(ctx)
	program := lp.policy.Proxmox().Pvesh
	if lp.caps.proxmox.Source(req.GetPath()) == proxmox.SourcePmxcfs {
		program = proxmox.SourcePmxcfs
	}
	a.stages = [][]string{{program, "get", req.GetPath()}}
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
		// A path pmxcfs refuses (a link out of the node's directory, a
		// malformed id) is a refusal like the policy's, not a failure.
		switch status.Code(err) {
		case codes.PermissionDenied, codes.InvalidArgument:
			a.decision, a.reason = decisionDeny, status.Convert(err).Message()
		default:
			a.decision, a.reason = decisionError, status.Convert(err).Message()
		}
		return nil, err
	}
	a.decision = decisionAllow
	return resp, nil
}
