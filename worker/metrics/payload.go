// Package metrics turns the broker's raw metrics samples into NannyAPI's
// ingest-metrics request and posts one every interval: it computes CPU
// percent (and network rates, kept locally) from successive samples, builds
// the exact wire payload, and runs the heartbeat loop with bounded retries,
// pause and resume.
package metrics

import (
	"errors"
	"math"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// IngestAction is the action name of a metrics heartbeat.
const IngestAction = "ingest-metrics"

// UnknownPlatformFamily is sent when the host's family is not known:
// NannyAPI answers 400 to a heartbeat without platform_family.
const UnknownPlatformFamily = "unknown"

// IngestPayload is the body of POST /api/agent {"action":"ingest-metrics"}
// with the field names the real backend reads (nannyapi-backend.md §4.1)
// and the reference agent sends (contract §8).
type IngestPayload struct {
	Action        string        `json:"action"`
	SystemMetrics SystemMetrics `json:"system_metrics"`
	// OSInfo is the OS's pretty name ("Debian GNU/Linux 12 (bookworm)"), as
	// in the backend's own examples; the reference agent sent the platform ID.
	OSInfo         string   `json:"os_info,omitempty"`
	OSVersion      string   `json:"os_version,omitempty"`
	OSType         string   `json:"os_type,omitempty"`
	PlatformFamily string   `json:"platform_family"`
	Version        string   `json:"version,omitempty"`
	PrimaryIP      string   `json:"primary_ip,omitempty"`
	KernelVersion  string   `json:"kernel_version,omitempty"`
	Arch           string   `json:"arch,omitempty"`
	AllIPs         []string `json:"all_ips,omitempty"`
}

// SystemMetrics is system_metrics: sizes in GiB and percentages, all
// rounded to two decimals and never negative.
type SystemMetrics struct {
	CPUPercent       float64      `json:"cpu_percent"`
	CPUCores         int          `json:"cpu_cores"`
	MemoryUsedGB     float64      `json:"memory_used_gb"`
	MemoryTotalGB    float64      `json:"memory_total_gb"`
	MemoryPercent    float64      `json:"memory_percent"`
	DiskUsedGB       float64      `json:"disk_used_gb"`
	DiskTotalGB      float64      `json:"disk_total_gb"`
	DiskUsagePercent float64      `json:"disk_usage_percent"`
	Filesystems      []Filesystem `json:"filesystems"`
	LoadAverage      LoadAverage  `json:"load_average"`
	NetworkStats     NetworkStats `json:"network_stats"`
	KernelVersion    string       `json:"kernel_version,omitempty"`
}

// Filesystem is one entry of system_metrics.filesystems.
type Filesystem struct {
	Device       string  `json:"device"`
	MountPath    string  `json:"mount_path"`
	UsedGB       float64 `json:"used_gb"`
	FreeGB       float64 `json:"free_gb"`
	TotalGB      float64 `json:"total_gb"`
	UsagePercent float64 `json:"usage_percent"`
}

// LoadAverage is system_metrics.load_average.
type LoadAverage struct {
	OneMin     float64 `json:"one_min"`
	FiveMin    float64 `json:"five_min"`
	FifteenMin float64 `json:"fifteen_min"`
}

// NetworkStats is system_metrics.network_stats: cumulative GiB received and
// sent since boot over non-loopback interfaces. They are totals, not rates,
// because that is what the reference agent sends and the backend stores
// under these names; rates are kept locally (see Rates).
type NetworkStats struct {
	InGB  float64 `json:"in_gb"`
	OutGB float64 `json:"out_gb"`
}

const gib = 1 << 30

// BuildPayload builds the heartbeat from one broker sample, the CPU percent
// computed from it and the previous one, and the agent's version. Missing
// sources give zeros, never an error: a heartbeat also keeps the agent's
// last_seen fresh, so a partial one is better than none.
func BuildPayload(s *brokerv1.CollectMetricsResponse, cpuPercent float64, version string) (*IngestPayload, error) {
	if s == nil {
		return nil, errors.New("no metrics sample")
	}
	host := s.GetHost()
	p := &IngestPayload{
		Action:         IngestAction,
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

func systemMetrics(s *brokerv1.CollectMetricsResponse, cpuPercent float64) SystemMetrics {
	mem := s.GetMemory()
	m := SystemMetrics{
		CPUPercent:    round2(clamp(cpuPercent, 0, 100)),
		CPUCores:      int(max(s.GetLogicalCpus(), 0)),
		MemoryUsedGB:  toGB(mem.GetUsed()),
		MemoryTotalGB: toGB(mem.GetTotal()),
		MemoryPercent: percent(mem.GetUsed(), mem.GetTotal()),
		Filesystems:   []Filesystem{},
		LoadAverage: LoadAverage{
			OneMin:     round2(s.GetLoad().GetOne()),
			FiveMin:    round2(s.GetLoad().GetFive()),
			FifteenMin: round2(s.GetLoad().GetFifteen()),
		},
		NetworkStats: NetworkStats{
			InGB:  toGB(s.GetNetwork().GetBytesRecv()),
			OutGB: toGB(s.GetNetwork().GetBytesSent()),
		},
		KernelVersion: s.GetHost().GetKernelRelease(),
	}
	for _, fs := range s.GetFilesystems() {
		m.Filesystems = append(m.Filesystems, Filesystem{
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
