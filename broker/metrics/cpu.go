package metrics

import (
	"context"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// collectCPUTimes fills the cumulative CPU seconds over all CPUs from the
// aggregate /proc/stat line. User time includes guest time, as the kernel
// counts it; the worker derives percentages from two samples.
func collectCPUTimes(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	st, err := c.procStat()
	if err != nil {
		return err
	}
	sec := func(i int) float64 { return float64(st.cpu[i]) / userHZ }
	out.Cpu = &brokerv1.CpuTimes{
		User: sec(0), Nice: sec(1), System: sec(2), Idle: sec(3),
		Iowait: sec(4), Irq: sec(5), Softirq: sec(6), Steal: sec(7),
	}
	return nil
}
