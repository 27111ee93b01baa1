package broker

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// CollectMetrics returns one raw sample of the host's counters and facts.
// The broker keeps no state between samples; the worker computes rates.
func (s *Server) CollectMetrics(ctx context.Context, _ *brokerv1.CollectMetricsRequest) (*brokerv1.CollectMetricsResponse, error) {
	return s.metrics.Collect(ctx), nil
}
