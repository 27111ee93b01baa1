package metrics

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/mem"
)

// collectSwap fills swap space (gopsutil: sysinfo(2) and /proc/vmstat).
func collectSwap(ctx context.Context, _ *call, out *brokerv1.CollectMetricsResponse) error {
	sw, err := mem.SwapMemoryWithContext(ctx)
	if err != nil {
		return err
	}
	out.Swap = &brokerv1.Swap{Total: sw.Total, Used: sw.Used, Free: sw.Free}
	return nil
}
