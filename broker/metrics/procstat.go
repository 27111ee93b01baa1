package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// userHZ is the unit of /proc/stat CPU times: the kernel's ABI fixes
// USER_HZ at 100 on Linux, whatever CONFIG_HZ is.
const userHZ = 100

// procStat is what the collector needs from /proc/stat.
type procStat struct {
	// cpu holds the aggregate "cpu" line's first eight counters in ticks:
	// user nice system idle iowait irq softirq steal.
	cpu [8]uint64
	// cpus counts the per-CPU "cpuN" lines: the logical CPUs online.
	cpus int
	// btime is the boot time in seconds since the epoch, 0 if absent.
	btime uint64
}

func readProcStat(path string) (*procStat, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	st, err := parseProcStat(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return st, nil
}

// parseProcStat reads the aggregate cpu line, counts cpuN lines and picks
// btime. Missing trailing counters (old kernels) stay zero.
func parseProcStat(data []byte) (*procStat, error) {
	st := &procStat{}
	sawCPU := false
	sc := lines(data)
	for sc.Scan() {
		line := sc.Bytes()
		fields := bytes.Fields(line)
		if len(fields) == 0 {
			continue
		}
		key := fields[0]
		switch {
		case string(key) == "cpu":
			if len(fields) < 5 {
				return nil, errors.New("aggregate cpu line has fewer than four counters")
			}
			for i := 0; i < len(st.cpu) && i+1 < len(fields); i++ {
				v, err := strconv.ParseUint(string(fields[i+1]), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("cpu counter %d: %w", i+1, err)
				}
				st.cpu[i] = v
			}
			sawCPU = true
		case len(key) > 3 && bytes.HasPrefix(key, []byte("cpu")) && isDigits(key[3:]):
			st.cpus++
		case string(key) == "btime" && len(fields) >= 2:
			v, err := strconv.ParseUint(string(fields[1]), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("btime: %w", err)
			}
			st.btime = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !sawCPU {
		return nil, errors.New("no aggregate cpu line")
	}
	return st, nil
}

func isDigits(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
