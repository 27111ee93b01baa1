package metrics

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/load"
)

// collectLoad fills the 1, 5 and 15 minute load from /proc/loadavg (gopsutil).
func collectLoad(ctx context.Context, _ *call, out *brokerv1.CollectMetricsResponse) error {
	avg, err := load.AvgWithContext(ctx)
	if err != nil {
		return err
	}
	out.Load = &brokerv1.LoadAverage{One: avg.Load1, Five: avg.Load5, Fifteen: avg.Load15}
	return nil
}
