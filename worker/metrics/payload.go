// Package metrics turns the broker's raw metrics samples into NannyAPI's
// ingest-metrics request and posts one every interval: it computes CPU
// percent (and network rates, kept locally) from successive samples, builds
// the wire body (nannyapi.MetricsReport, the client's own type), and runs
// the heartbeat loop with bounded retries, pause and resume.
package metrics

import (
	"errors"
	"math"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// UnknownPlatformFamily is sent when the host's family is not known:
// NannyAPI answers 400 to a heartbeat without platform_family.
const UnknownPlatformFamily = "unknown"

const gib = 1 << 30

// BuildPayload builds the heartbeat from one broker sample, the CPU percent
// computed from it and the previous one, and the agent's version. Missing
// sources give zeros, never an error: a heartbeat also keeps the agent's
// last_seen fresh, so a partial one is better than none. The report always
// passes nannyapi's MetricsReport.Check: platform_family is filled
// (UnknownPlatformFamily when the host does not say), every number is
// rounded to two decimals and never negative, percentages stay within
// 0…100, and filesystems is [] rather than null.
func BuildPayload(s *brokerv1.CollectMetricsResponse, cpuPercent float64, version string) (nannyapi.MetricsReport, error) {
	if s == nil {
		return nannyapi.MetricsReport{}, errors.New("no metrics sample")
	}
	host := s.GetHost()
	p := nannyapi.MetricsReport{
		SystemMetrics:  systemMetrics(s, cpuPercent),
		OSInfo:         host.GetOsPrettyName(),
		OSVersion:      host.GetPlatformVersion(),
		OSType:         host.GetOsType(),
		PlatformFamily: host.GetPlatformFamily(),
		Version:        version,
		PrimaryIP:      s.GetPrimaryIp(),
		KernelVersion:  host.GetKernelRelease(),
		Arch:           host.GetArch(),
		AllIPs:         s.GetIps(),
	}
	if p.OSInfo == "" {
		p.OSInfo = host.GetPlatform()
	}
	if p.PlatformFamily == "" {
		p.PlatformFamily = UnknownPlatformFamily
	}
	return p, nil
}

func systemMetrics(s *brokerv1.CollectMetricsResponse, cpuPercent float64) nannyapi.SystemMetrics {
	mem := s.GetMemory()
	m := nannyapi.SystemMetrics{
		CPUPercent:    round2(clamp(cpuPercent, 0, 100)),
		CPUCores:      int(max(s.GetLogicalCpus(), 0)),
		MemoryUsedGB:  toGB(mem.GetUsed()),
		MemoryTotalGB: toGB(mem.GetTotal()),
		MemoryPercent: percent(mem.GetUsed(), mem.GetTotal()),
		Filesystems:   []nannyapi.Filesystem{},
		LoadAverage: nannyapi.LoadAverage{
			OneMin:     round2(s.GetLoad().GetOne()),
			FiveMin:    round2(s.GetLoad().GetFive()),
			FifteenMin: round2(s.GetLoad().GetFifteen()),
		},
		// Totals since boot, not rates: see nannyapi.NetworkStats.
		NetworkStats: nannyapi.NetworkStats{
			InGB:  toGB(s.GetNetwork().GetBytesRecv()),
			OutGB: toGB(s.GetNetwork().GetBytesSent()),
		},
		KernelVersion: s.GetHost().GetKernelRelease(),
	}
	for _, fs := range s.GetFilesystems() {
		m.Filesystems = append(m.Filesystems, nannyapi.Filesystem{
			Device:    fs.GetDevice(),
			MountPath: fs.GetMountPath(),
			UsedGB:    toGB(fs.GetUsed()),
			FreeGB:    toGB(fs.GetFree()),
			TotalGB:   toGB(fs.GetTotal()),
			// As df(1) and gopsutil: reserved blocks count as neither.
			UsagePercent: percent(fs.GetUsed(), fs.GetUsed()+fs.GetFree()),
		})
		if fs.GetMountPath() == "/" {
			m.DiskUsedGB = toGB(fs.GetUsed())
			m.DiskTotalGB = toGB(fs.GetTotal())
			m.DiskUsagePercent = percent(fs.GetUsed(), fs.GetTotal())
		}
	}
	return m
}

func toGB(bytes uint64) float64 { return round2(float64(bytes) / gib) }

// percent is part/whole×100, clamped to [0, 100], 0 for an empty whole.
func percent(part, whole uint64) float64 {
	if whole == 0 {
		return 0
	}
	return round2(clamp(float64(part)/float64(whole)*100, 0, 100))
}

// round2 rounds to two decimals like the reference agent; NaN, infinities
// and negatives become 0, because the backend rejects negative numbers.
func round2(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return 0
	}
	return math.Round(v*100) / 100
}

func clamp(v, lo, hi float64) float64 {
	if math.IsNaN(v) {
		return lo
	}
	return math.Min(math.Max(v, lo), hi)
}
