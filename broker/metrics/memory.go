package metrics

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/mem"
)

// collectMemory fills physical memory from /proc/meminfo (gopsutil); used is
// total minus available, as free(1) shows it.
func collectMemory(ctx context.Context, _ *call, out *brokerv1.CollectMetricsResponse) error {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return err
	}
	out.Memory = &brokerv1.Memory{Total: vm.Total, Used: vm.Used, Available: vm.Available, Free: vm.Free}
	return nil
}
