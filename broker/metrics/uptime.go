package metrics

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// collectUptime fills seconds since boot from /proc/uptime and the boot time
// from /proc/stat's btime (falling back to now minus uptime).
func collectUptime(_ context.Context, c *call, out *brokerv1.CollectMetricsResponse) error {
	raw, err := readTrimmed(c.roots.proc("uptime"))
	if err != nil {
		return err
	}
	up, err := parseUptime(raw)
	if err != nil {
		return fmt.Errorf("parse uptime: %w", err)
	}
	boot := uint64(0)
	if st, err := c.procStat(); err == nil {
		boot = st.btime
	}
	if boot == 0 {
		now := c.now().Unix()
		if now > int64(up) {
			boot = uint64(now) - up
		}
	}
	out.UptimeSeconds = up
	out.BootTime = boot
	return nil
}

// parseUptime takes the first field of /proc/uptime ("12345.67 2345.6").
func parseUptime(raw string) (uint64, error) {
	fields := strings.Fields(raw)
	if len(fields) == 0 {
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return 0, err
	}
	if !(v >= 0 && v <= 1e12) { // also rejects NaN
		return 0, fmt.Errorf("out of range: %s", fields[0])
	}
	return uint64(v), nil
}
