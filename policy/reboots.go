package policy

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultWall is where wall(1) lives; a policy may name another.
const DefaultWall = "/usr/bin/wall"

// Reboot guard defaults and bounds. A hostile backend must not be able to
// put the node in a reboot loop, so host reboots are spaced by MinInterval
// and none happens until the host has been up MinUptime.
const (
	DefaultRebootMinInterval = time.Hour
	DefaultRebootMinUptime   = 10 * time.Minute
	DefaultRebootTimeout     = 2 * time.Minute
	maxRebootMinInterval     = 30 * 24 * time.Hour
	maxRebootMinUptime       = 24 * time.Hour
	maxRebootTimeout         = 5 * time.Minute
)

// Reboots is the reboots section: whether the backend may have this host
// or its LXC containers rebooted, and the guards around host reboots.
type Reboots struct {
	Enabled bool `json:"enabled"`
	// Host allows `systemctl reboot` of this host.
	Host bool `json:"host"`
	// Containers are vmid patterns of the LXC containers `pct reboot` may
	// restart: "105", a range "200-299", a glob over the digits "1??",
	// or "*" for every container.
	Containers []string `json:"containers"`
	// MinInterval is the least time between two host reboots the broker
	// starts (counted from the last attempt, kept in the broker's state
	// directory across restarts and reboots).
	MinInterval time.Duration `json:"min_interval"`
	// MinUptime: no host reboot before the host has been up this long.
	MinUptime time.Duration `json:"min_uptime"`
	// Timeout bounds the reboot command (systemctl reboot, pct reboot).
	Timeout time.Duration `json:"timeout"`
	// Programs, absolute paths.
	Systemctl string `json:"systemctl"`
	Pct       string `json:"pct"`
	Wall      string `json:"wall"`
}

// MarshalJSON writes the durations as text ("1h0m0s"), for people reading
// `policy explain --json`.
func (r Reboots) MarshalJSON() ([]byte, error) {
	type plain Reboots
	containers := r.Containers
	if containers == nil {
		containers = []string{}
	}
	return json.Marshal(struct {
		plain
		Containers  []string `json:"containers"`
		MinInterval string   `json:"min_interval"`
		MinUptime   string   `json:"min_uptime"`
		Timeout     string   `json:"timeout"`
	}{plain(r), containers, r.MinInterval.String(), r.MinUptime.String(), r.Timeout.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Reboots) UnmarshalJSON(data []byte) error {
	type plain Reboots
	var v struct {
		plain
		MinInterval string `json:"min_interval"`
		MinUptime   string `json:"min_uptime"`
		Timeout     string `json:"timeout"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*r = Reboots(v.plain)
	for _, d := range []struct {
		s   string
		dst *time.Duration
	}{{v.MinInterval, &r.MinInterval}, {v.MinUptime, &r.MinUptime}, {v.Timeout, &r.Timeout}} {
		if d.s == "" {
			continue
		}
		parsed, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("reboots: %w", err)
		}
		*d.dst = parsed
	}
	return nil
}

func defaultReboots() Reboots {
	return Reboots{Systemctl: DefaultSystemctl, Pct: DefaultPct, Wall: DefaultWall,
		MinInterval: DefaultRebootMinInterval, MinUptime: DefaultRebootMinUptime, Timeout: DefaultRebootTimeout}
}

// Reboot rule names for the decision log.
const (
	RebootRuleHost       = "reboots.host"
	rebootRuleContainers = "reboots.containers"
)

// CheckReboot judges a reboot of the host (vmid "") or of the LXC
// container vmid, by the policy alone, and returns the setting that allows
// it. The guards that depend on the host's state (MinInterval, MinUptime)
// are the broker's to check.
func (p *Policy) CheckReboot(vmid string) (string, error) {
	rb := p.reboots
	switch {
	case !rb.Enabled:
		return "", denied("reboots", "reboots are disabled by policy")
	case vmid == "" && !rb.Host:
		return "", denied("reboots", "host reboots are not allowed by policy")
	case vmid == "":
		return RebootRuleHost, nil
	}
	if !ValidVMID(vmid) {
		return "", denied("reboots", "%q is not a container vmid (a number from 100 to 999999999)", clipText(vmid))
	}
	if len(rb.Containers) == 0 {
		return "", denied("reboots", "container reboots are not allowed by policy")
	}
	for _, pat := range rb.Containers {
		if vmidMatch(pat, vmid) {
			return rebootRuleContainers + "[" + pat + "]", nil
		}
	}
	return "", denied("reboots", "container %s is not among the vmids the policy allows to reboot (%s)", vmid, strings.Join(rb.Containers, ", "))
}

// ValidVMID reports a Proxmox guest id: decimal, 100 to 999999999, no
// leading zero or sign.
func ValidVMID(s string) bool {
	if len(s) < 3 || len(s) > 9 || s[0] == '0' || !isDigits(s) {
		return false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n >= 100
}

func clipText(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// vmidMatch matches a vmid against one pattern: "*", a range "lo-hi", or a
// glob over the digits.
func vmidMatch(pattern, vmid string) bool {
	if lo, hi, ok := vmidRange(pattern); ok {
		n, _ := strconv.ParseUint(vmid, 10, 32)
		return n >= lo && n <= hi
	}
	ok, _ := path.Match(pattern, vmid)
	return ok
}

// vmidRange parses "lo-hi" (both vmids, lo <= hi).
func vmidRange(pattern string) (lo, hi uint64, ok bool) {
	a, b, found := strings.Cut(pattern, "-")
	if !found || !isDigits(a) || !isDigits(b) {
		return 0, 0, false
	}
	lo, err1 := strconv.ParseUint(a, 10, 32)
	hi, err2 := strconv.ParseUint(b, 10, 32)
	return lo, hi, err1 == nil && err2 == nil
}

// checkVMIDPattern validates one containers entry.
func checkVMIDPattern(s string) error {
	if s == "" || len(s) > 32 {
		return fmt.Errorf("%q is not a vmid pattern", s)
	}
	if lo, hi, ok := vmidRange(s); ok {
		a, b, _ := strings.Cut(s, "-")
		if !ValidVMID(a) || !ValidVMID(b) || lo > hi {
			return fmt.Errorf("%q: a range is lo-hi with two vmids (100…999999999), lo first", s)
		}
		return nil
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune("0123456789*?[]!-", rune(s[i])) {
			return fmt.Errorf("%q: a vmid pattern is a vmid, a range lo-hi, or a glob of digits, * and ?", s)
		}
	}
	if _, err := path.Match(s, ""); err != nil {
		return fmt.Errorf("%q is not a valid glob", s)
	}
	if !strings.ContainsAny(s, "*?[") && !ValidVMID(s) {
		return fmt.Errorf("%q is not a vmid (100…999999999)", s)
	}
	return nil
}

func (d *decoder) rebootsSection(doc *fileDoc, n *yaml.Node) {
	m, _ := d.mapping(n, "reboots", "enabled", "host", "containers", "min_interval", "min_uptime", "timeout",
		"systemctl", "pct", "wall")
	if m == nil {
		return
	}
	d.flag(doc, m, "enabled", "reboots.enabled", func(p *Policy, b bool) { p.reboots.Enabled = b })
	d.flag(doc, m, "host", "reboots.host", func(p *Policy, b bool) { p.reboots.Host = b })
	d.program(doc, m, "systemctl", "reboots.systemctl", func(p *Policy, s string) { p.reboots.Systemctl = s })
	d.program(doc, m, "pct", "reboots.pct", func(p *Policy, s string) { p.reboots.Pct = s })
	d.program(doc, m, "wall", "reboots.wall", func(p *Policy, s string) { p.reboots.Wall = s })
	d.rebootDuration(doc, m, "min_interval", 0, maxRebootMinInterval, func(p *Policy, v time.Duration) { p.reboots.MinInterval = v })
	d.rebootDuration(doc, m, "min_uptime", 0, maxRebootMinUptime, func(p *Policy, v time.Duration) { p.reboots.MinUptime = v })
	d.rebootDuration(doc, m, "timeout", time.Second, maxRebootTimeout, func(p *Policy, v time.Duration) { p.reboots.Timeout = v })
	cn, has := m["containers"]
	if !has {
		return
	}
	if r := d.resolve(cn); r != nil && r.Kind == yaml.ScalarNode && r.ShortTag() == "!!bool" {
		d.errorf(cn, `reboots.containers: list the vmids that may be rebooted, e.g. ["105", "200-299"] or ["*"] for all; [] for none`)
		return
	}
	pats, ok := d.strs(cn, "reboots.containers")
	for _, s := range pats {
		if err := checkVMIDPattern(s); err != nil {
			d.errorf(cn, "reboots.containers: %v", err)
			ok = false
		}
	}
	if ok {
		pats = append([]string{}, pats...)
		doc.settings = append(doc.settings, setting{key: "reboots.containers", at: d.at(cn),
			apply: func(p *Policy) { p.reboots.Containers = pats }})
	}
}

func (d *decoder) rebootDuration(doc *fileDoc, m map[string]*yaml.Node, key string, lo, hi time.Duration, apply func(*Policy, time.Duration)) {
	n, has := m[key]
	if !has {
		return
	}
	what := "reboots." + key
	s, ok := d.str(n, what)
	if !ok {
		return
	}
	v, err := parseDuration(s, false)
	if err != nil {
		d.errorf(n, "%s: %v", what, err)
		return
	}
	if v < lo || v > hi {
		d.errorf(n, "%s: %s is outside %s…%s", what, v, lo, hi)
		return
	}
	doc.settings = append(doc.settings, setting{key: what, at: d.at(n), apply: func(p *Policy) { apply(p, v) }})
}

// rebootDangers is the reboots part of Dangers.
func (p *Policy) rebootDangers(src func(string) string) []string {
	rb := p.reboots
	if !rb.Enabled || (!rb.Host && len(rb.Containers) == 0) {
		return nil
	}
	var what []string
	if rb.Host {
		what = append(what, "this host")
	}
	if len(rb.Containers) > 0 {
		what = append(what, "containers "+strings.Join(rb.Containers, ", "))
	}
	out := []string{"reboots are enabled" + src("reboots.enabled") + ": the backend can reboot " + strings.Join(what, " and ") + " at any time"}
	if rb.Host && rb.MinInterval == 0 && rb.MinUptime == 0 {
		out = append(out, "host reboots have no loop guard (min_interval and min_uptime are 0): a hostile backend can keep this host rebooting")
	}
	return out
}

// rebootLint is the reboots part of lint.
func (p *Policy) rebootLint() []string {
	if p.reboots.Enabled && !p.reboots.Host && len(p.reboots.Containers) == 0 {
		return []string{"reboots are enabled but neither host nor any container is: no reboot can happen"}
	}
	return nil
}

func (e Explanation) writeReboots(ew *errWriter) {
	rb := e.Reboots
	ew.printf("\nReboots:\n")
	if !rb.Enabled {
		ew.printf("  disabled\n")
		return
	}
	ew.printf("  host: %s (%s reboot)\n", yesNo(rb.Host), rb.Systemctl)
	if rb.Host {
		ew.printf("    at most one host reboot every %s; none before the host has been up %s\n", rb.MinInterval, rb.MinUptime)
	}
	containers := "none"
	if len(rb.Containers) > 0 {
		containers = strings.Join(rb.Containers, ", ")
	}
	ew.printf("  containers: %s (%s reboot <vmid>)\n", containers, rb.Pct)
	ew.printf("  logged-in users are warned with %s; the reboot command may take %s\n", rb.Wall, rb.Timeout)
	ew.printf("  refused while a patch runs, and asked before the worker acknowledges anything\n")
}
