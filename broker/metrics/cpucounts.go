package metrics

import (
	"context"
	"errors"
	"fmt"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/shirou/gopsutil/v4/cpu"
)

// collectCPUCounts fills the logical CPUs (the cpuN lines of /proc/stat,
// cheaper than /proc/cpuinfo, which is slow to generate on big hosts) and
// the physical cores (gopsutil: distinct sysfs core sibling lists).
func collectCPUCounts(ctx context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	st, err := c.procStat()
	if err != nil {
		return err
	}
	if st.cpus == 0 {
		return errors.New("no per-cpu lines in stat")
	}
	cores, err := cpu.CountsWithContext(ctx, false)
	if err != nil {
		return fmt.Errorf("physical cores: %w", err)
	}
	out.LogicalCpus = int32(min(st.cpus, 1<<30))
	out.PhysicalCores = int32(min(cores, 1<<30))
	return nil
}
