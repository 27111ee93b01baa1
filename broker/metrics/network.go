package metrics

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/net"
)

// collectNetwork sums the byte counters of every interface but loopback from
// /proc/net/dev (gopsutil), as seen from the broker's network namespace.
func collectNetwork(ctx context.Context, _ *call, out *brokerv1.CollectMetricsResponse) error {
	counters, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		return err
	}
	n := &brokerv1.NetCounters{}
	for _, c := range counters {
		if c.Name == "lo" {
			continue
		}
		n.BytesRecv += c.BytesRecv
		n.BytesSent += c.BytesSent
	}
	out.Network = n
	return nil
}
