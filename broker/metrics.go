package broker

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// CollectMetrics returns one raw sample of the host's counters and facts.
// The broker keeps no state between samples; the worker computes rates.
func (s *Server) CollectMetrics(ctx context.Context, _ *brokerv1.CollectMetricsRequest) (*brokerv1.CollectMetricsResponse, error) {
	if !policyOf(ctx, s).policy.Metrics().Enabled {
		a := auditFrom(ctx)
		a.decision, a.reason = decisionDeny, "metrics are disabled by policy"
		return nil, status.Error(codes.PermissionDenied, "metrics are disabled by policy")
	}
	return s.metrics.Collect(ctx), nil
}
