package realtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// procBootTime reads the host's boot time from /proc/stat.
func procBootTime() (time.Time, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	return parseBootTime(data)
}

// parseBootTime finds the "btime <seconds since the epoch>" line.
func parseBootTime(data []byte) (time.Time, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("btime "))
		if !ok {
			continue
		}
		secs, err := strconv.ParseInt(string(bytes.TrimSpace(rest)), 10, 64)
		if err != nil || secs <= 0 {
			return time.Time{}, fmt.Errorf("boot time: malformed btime line %q", clipText(sc.Text(), 60))
		}
		return time.Unix(secs, 0), nil
	}
	if err := sc.Err(); err != nil {
		return time.Time{}, fmt.Errorf("boot time: %w", err)
	}
	return time.Time{}, errors.New("boot time: no btime line in /proc/stat")
}
