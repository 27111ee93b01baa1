package investigate

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// FirstMessage is the investigation's opening message: the host's facts in
// the reference agent's SYSTEM INFORMATION block (the backend's prompts
// expect it), then the issue.
func FirstMessage(m *brokerv1.CollectMetricsResponse, issue string) string {
	return SystemInfo(m) + "\n" + issue
}

// SystemInfo renders the facts block from a metrics sample.
func SystemInfo(m *brokerv1.CollectMetricsResponse) string {
	h := m.GetHost()
	var b strings.Builder
	line := func(label, value string) { fmt.Fprintf(&b, "- %s: %s\n", label, value) }
	b.WriteString("SYSTEM INFORMATION:\n")
	line("Hostname", h.GetHostname())
	line("Operating System", strings.TrimSpace(h.GetPlatform()+" "+h.GetPlatformVersion()))
	line("Kernel Version", h.GetKernelRelease())
	line("Architecture", h.GetArch())
	line("CPU Cores", fmt.Sprint(m.GetLogicalCpus()))
	line("Total Memory", gib(m.GetMemory().GetTotal()))
	line("System Uptime", uptime(time.Duration(m.GetUptimeSeconds())*time.Second))
	l := m.GetLoad()
	line("Current Load Average", fmt.Sprintf("%.2f, %.2f, %.2f", l.GetOne(), l.GetFive(), l.GetFifteen()))
	line("Root Disk Usage", rootDisk(m.GetFilesystems()))
	line("Private IP Addresses", privateIPs(m.GetIps()))
	line("Go Runtime", runtime.Version())
	b.WriteString("\nISSUE DESCRIPTION:")
	return b.String()
}

func gib(bytes uint64) string {
	return fmt.Sprintf("%.1fGiB", float64(bytes)/(1<<30))
}

func uptime(d time.Duration) string {
	days := int(d.Hours()) / 24
	hours := int(d.Hours()) % 24
	minutes := int(d.Minutes()) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("up %d days, %d hours", days, hours)
	case hours > 0:
		return fmt.Sprintf("up %d hours, %d minutes", hours, minutes)
	default:
		return fmt.Sprintf("up %d minutes", minutes)
	}
}

func rootDisk(fss []*brokerv1.Filesystem) string {
	for _, fs := range fss {
		if fs.GetMountPath() != "/" || fs.GetTotal() == 0 {
			continue
		}
		pct := float64(fs.GetUsed()) / float64(fs.GetTotal()) * 100
		return fmt.Sprintf("Root: %s/%s (%.0f%% used)", gib(fs.GetUsed()), gib(fs.GetTotal()), pct)
	}
	return "unknown"
}

func privateIPs(ips []string) string {
	var out []string
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err == nil && ip.IsPrivate() {
			out = append(out, ip.String())
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
