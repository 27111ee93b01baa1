package metrics

import (
	"context"
	"path/filepath"

	"github.com/shirou/gopsutil/v4/common"
)

// Roots are the directories the collector reads instead of /proc, /sys,
// /etc, /run, /dev and /usr/lib.
type Roots struct {
	Proc   string
	Sys    string
	Etc    string
	Run    string
	Dev    string
	UsrLib string
}

// DefaultRoots are the host's real paths.
func DefaultRoots() Roots {
	return Roots{Proc: "/proc", Sys: "/sys", Etc: "/etc", Run: "/run", Dev: "/dev", UsrLib: "/usr/lib"}
}

func (r Roots) withDefaults() Roots {
	d := DefaultRoots()
	pick := func(v, def string) string {
		if v == "" {
			return def
		}
		return filepath.Clean(v)
	}
	return Roots{
		Proc:   pick(r.Proc, d.Proc),
		Sys:    pick(r.Sys, d.Sys),
		Etc:    pick(r.Etc, d.Etc),
		Run:    pick(r.Run, d.Run),
		Dev:    pick(r.Dev, d.Dev),
		UsrLib: pick(r.UsrLib, d.UsrLib),
	}
}

// gopsutilContext hands the roots to gopsutil through its environment
// context, so its readers follow them instead of the process environment.
func (r Roots) gopsutilContext(ctx context.Context) context.Context {
	return context.WithValue(ctx, common.EnvKey, common.EnvMap{
		common.HostProcEnvKey: r.Proc,
		common.HostSysEnvKey:  r.Sys,
		common.HostEtcEnvKey:  r.Etc,
		common.HostRunEnvKey:  r.Run,
		common.HostDevEnvKey:  r.Dev,
	})
}

func (r Roots) proc(elem ...string) string {
	return filepath.Join(append([]string{r.Proc}, elem...)...)
}
func (r Roots) sys(elem ...string) string { return filepath.Join(append([]string{r.Sys}, elem...)...) }
func (r Roots) etc(elem ...string) string { return filepath.Join(append([]string{r.Etc}, elem...)...) }
func (r Roots) run(elem ...string) string { return filepath.Join(append([]string{r.Run}, elem...)...) }
