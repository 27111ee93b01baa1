package metrics

import (
	"context"
	"os"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// collectProcesses counts the numeric directories of procfs: one per
// process (threads live under task/ and are not counted). It reads names
// only, never a process's files.
func collectProcesses(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	d, err := os.Open(c.roots.Proc)
	if err != nil {
		return err
	}
	defer d.Close()
	var n uint64
	for {
		names, err := d.Readdirnames(1024)
		for _, name := range names {
			if isDigits([]byte(name)) {
				n++
			}
		}
		if err != nil {
			break
		}
	}
	out.ProcessCount = n
	return nil
}
