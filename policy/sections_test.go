package policy

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsDefaultsAndCaps(t *testing.T) {
	p := mustLoadYAML(t, "version: 1\n")
	l := p.Limits()
	if l != DefaultLimits() {
		t.Errorf("an empty policy has limits %+v, want the defaults", l)
	}
	if l.CommandTimeout != 10*time.Second || l.StdoutBytes != 256*1024 || l.StderrBytes != 256*1024 || l.ConcurrentTraces != 4 {
		t.Errorf("defaults %+v", l)
	}
	caps := HardCaps()
	for _, f := range limitFields {
		if f.def > f.cap || f.def <= 0 {
			t.Errorf("%s: default %d not within (0, cap %d]", f.key, f.def, f.cap)
		}
		if f.get(&caps) != f.cap {
			t.Errorf("%s: HardCaps has %d", f.key, f.get(&caps))
		}
	}
	// Exactly the cap is fine; one above is an error.
	p = mustLoadYAML(t, "version: 1\nlimits:\n  command_timeout: 5min\n  stdout_bytes: 16MiB\n  child_memory: 1G\n  argv_bytes: 1024\n")
	if l := p.Limits(); l.CommandTimeout != 5*time.Minute || l.StdoutBytes != 16<<20 || l.ChildMemory != 1<<30 || l.ArgvBytes != 1024 {
		t.Errorf("limits %+v", l)
	}
	if _, err := loadYAML(t, "version: 1\nlimits:\n  stdout_bytes: 16777217\n"); err == nil || !strings.Contains(err.Error(), "above the hard cap 16MiB") {
		t.Errorf("above cap: %v", err)
	}
}

func TestParseSizeAndDuration(t *testing.T) {
	sizes := map[string]int64{"512": 512, "1K": 1024, "1KiB": 1024, "1kb": 1000, "2M": 2 << 20, "1 GiB": 1 << 30, "3MB": 3000000}
	for in, want := range sizes {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "K", "1X", "-1", "1.5M", "99999999999999999999"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
	durs := map[string]time.Duration{"10s": 10 * time.Second, "5min": 5 * time.Minute, "1h30m": 90 * time.Minute,
		"1.5s": 1500 * time.Millisecond, "2 days": 48 * time.Hour, "1 hour 30 minutes": 90 * time.Minute, "100ms": 100 * time.Millisecond, "1w": 7 * 24 * time.Hour}
	for in, want := range durs {
		if got, err := parseDuration(in, false); err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "10", "s", "10x", "1hour2", "-1s"} {
		if _, err := parseDuration(bad, false); err == nil {
			t.Errorf("parseDuration(%q) accepted", bad)
		}
	}
	if d, err := parseDuration("30", true); err != nil || d != 30*time.Second {
		t.Errorf("bare seconds: %v %v", d, err)
	}
}

func TestOperandTypes(t *testing.T) {
	spec := func(yaml string) *valueSpec {
		t.Helper()
		p := mustLoadYAML(t, "version: 1\ncommands:\n  - id: x\n    program: /usr/bin/x\n    operands:\n      - "+yaml+"\n")
		return p.commands[0].slots[0].value
	}
	cases := []struct {
		spec string
		good []string
		bad  []string
	}{
		{"{type: unit}", []string{"nginx", "nginx.service", "getty@tty1.service", "sys-kernel-debug.mount", `dev-disk-by\x2duuid.device`},
			[]string{"", "-nginx", ".x", "ssh*", "a b", "a/b"}},
		{"{type: unit, suffixes: [service, timer]}", []string{"nginx", "x.service", "apt.timer"}, []string{"x.socket", "home.mount"}},
		{"{type: pid}", []string{"1", "4194304"}, []string{"0", "-1", "4194305", "1a", "", "+1"}},
		{"{type: pid, list: \",\"}", []string{"1", "1,2,3"}, []string{"1,", ",1", "1,,2", "1,x"}},
		{"{type: user}", []string{"root", "www-data", "_apt", "svc$", "0", "1000"}, []string{"", "-root", "a b", "1root", "x$y", "4294967295"}},
		{"{type: group}", []string{"adm", "100"}, []string{"a:b"}},
		{"{type: host}", []string{"example.org", "localhost", "127.0.0.1", "::1", "fe80::1", "my_host.local", "x."}, []string{"", "-x", "a..b", "a b", "http://x", strings.Repeat("a", 64) + ".org"}},
		{"{type: host, loopback_only: true}", []string{"127.0.0.1", "127.1.2.3", "::1", "localhost", "::ffff:127.0.0.1"}, []string{"10.0.0.1", "example.org", "0.0.0.0", "localhost.evil.org"}},
		{"{type: number, min: -5, max: 5}", []string{"-5", "0", "5"}, []string{"-6", "6", "+1", "1.5", "", "0x1"}},
		{"{type: number, plus: true}", []string{"+5", "5", "0"}, []string{"-1", "++5"}},
		{"{type: size, max: 1M}", []string{"1", "1K", "1M"}, []string{"2M", "1.5K", "-1"}},
		{"{type: duration, max: 1min}", []string{"5", "5s", "1min", "30sec"}, []string{"2min", "x", "-5"}},
		{"{type: time}", []string{"today", "yesterday", "now", "1 hour ago", "2 days ago", "30min ago", "-1h", "+30min", "-1h30min",
			"2026-11-25", "2026-11-25 10:00", "2026-11-25 10:00:00", "2026-11-25T10:00", "10:00", "10:00:00", "2026-11-25 10:00 UTC", "@1700000000"},
			[]string{"", "soon", "1 hour", "2026-13-01", "25:00", "1 hour ago; id", "@x", "-x", strings.Repeat("1", 65)}},
		{"{type: regex, max_length: 16}", []string{"error", "err(or)?", `\berror\b`, `\<word\>`, "[[:alpha:]]+", `a\{2\}`}, []string{"(", "a{1001}", strings.Repeat("a", 17)}},
		{"{type: enum, values: [passwd, group]}", []string{"passwd", "group"}, []string{"shadow", "Passwd", "passwd,group"}},
		{"{type: enum, values: [a, b], list: \",\"}", []string{"a", "a,b", "b,a,a"}, []string{"a,c", ""}},
		{"{type: keyword, word: all}", []string{"all"}, []string{"al", "all "}},
		{"{type: string, pattern: '[a-z]+', max_length: 4}", []string{"abc", "abcd"}, []string{"abcde", "ABC", "", "a\nb"}},
		{"{type: interface}", []string{"eth0", "lo", "br-1a2b", "enp0s31f6", "vmbr0.100"}, []string{"", "..", "a/b", "-x", "averyveryverylongname"}},
	}
	for _, c := range cases {
		v := spec(c.spec)
		for _, s := range c.good {
			if r := v.check(s); r != "" {
				t.Errorf("%s: %q refused: %s", c.spec, s, r)
			}
		}
		for _, s := range c.bad {
			if r := v.check(s); r == "" {
				t.Errorf("%s: %q accepted", c.spec, s)
			}
		}
		if v.describe() == "" {
			t.Errorf("%s: no description", c.spec)
		}
	}
}

func TestCheckTrace(t *testing.T) {
	p := loadExample(t)
	cases := []struct {
		kind, target, rule string
	}{
		{"tracepoint", "syscalls:sys_enter_openat", "trace-syscalls"},
		{"tracepoint", "sched:sched_switch", "trace-sched"},
		{"syscall", "openat", "trace-syscall-any"},
		{"kprobe", "tcp_connect", "trace-tcp-kprobes"},
		{"kprobe", "vfs_read", ""},
		{"kretprobe", "tcp_connect", ""},
		{"tracepoint", "net:netif_rx", ""},
		{"tracepoint", "sched:sched_switch/../x", ""},
		{"tracepoint", "sched:*", ""},
		{"uprobe", "x", ""},
		{TraceRawKind, "BEGIN { cat(\"/etc/shadow\") }", ""},
	}
	for _, c := range cases {
		rule, err := p.CheckTrace(c.kind, c.target)
		if c.rule == "" {
			if err == nil {
				t.Errorf("CheckTrace(%s, %q) allowed by %s", c.kind, c.target, rule)
			}
			continue
		}
		if err != nil || rule != c.rule {
			t.Errorf("CheckTrace(%s, %q) = %q, %v; want %s", c.kind, c.target, rule, err, c.rule)
		}
	}
	raw := mustLoadYAML(t, "version: 1\ntraces:\n  allow_raw_programs: true\n  kinds: [tracepoint]\n")
	if _, err := raw.CheckTrace(TraceRawKind, "BEGIN{}"); err != nil {
		t.Errorf("raw allowed by policy: %v", err)
	}
	if _, err := raw.CheckTrace("kprobe", "x"); err == nil || !strings.Contains(err.Error(), "probe kind \"kprobe\" is not allowed") {
		t.Errorf("kinds: %v", err)
	}
}

func TestCheckProxmoxPath(t *testing.T) {
	p := loadExample(t)
	cases := []struct {
		path, node, rule string
	}{
		{"/cluster/status", "pve1", "pve-cluster-status"},
		{"/cluster/resources", "", "pve-cluster-resources"},
		{"/nodes/pve1/status", "pve1", "pve-node-status"},
		{"/nodes/pve1/lxc/100/config", "pve1", "pve-lxc-config"},
		{"/nodes/pve1/qemu/103/config", "pve1", "pve-qemu-config"},
		{"/nodes/pve2/status", "pve1", ""},
		{"/nodes/pve1/status", "", ""},
		{"/nodes/pve1/lxc/99/config", "pve1", ""},
		{"/nodes/pve1/lxc/abc/config", "pve1", ""},
		{"/nodes/pve1/lxc/100/../../status", "pve1", ""},
		{"/nodes/pve1/lxc/100/config/", "pve1", ""},
		{"//cluster/status", "pve1", ""},
		{"/access/users", "pve1", ""},
		{"/nodes/pve1/execute", "pve1", ""},
		{"cluster/status", "pve1", ""},
	}
	for _, c := range cases {
		rule, err := p.CheckProxmoxPath(c.path, c.node)
		if c.rule == "" {
			if err == nil {
				t.Errorf("CheckProxmoxPath(%q, %q) allowed by %s", c.path, c.node, rule)
			}
			continue
		}
		if err != nil || rule != c.rule {
			t.Errorf("CheckProxmoxPath(%q, %q) = %q, %v; want %s", c.path, c.node, rule, err, c.rule)
		}
	}
	if x := p.Proxmox(); x.PmxcfsRoot != "/etc/pve" || x.Pvesh != "/usr/bin/pvesh" {
		t.Errorf("proxmox section %+v", x)
	}
}

func TestCheckPatch(t *testing.T) {
	const pinned = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
	const other = "0000000000000000000000000000000000000000000000000000000000000000"
	host := func(sum string) PatchQuery {
		return PatchQuery{SHA256: sum, Target: PatchTargetHost, Mode: PatchModeDryRun}
	}
	off := loadExample(t)
	if _, err := off.CheckPatch(host(pinned)); err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("patches disabled: %v", err)
	}
	on := mustLoadYAML(t, `version: 1
patches:
  enabled: true
  targets: [host]
  pinned:
    - {id: p1, sha256: `+strings.ToUpper(pinned)+`, name: apt}
`)
	if rule, err := on.CheckPatch(host(pinned)); err != nil || rule != "p1" {
		t.Errorf("pinned script: %q %v", rule, err)
	}
	if _, err := on.CheckPatch(host(other)); err == nil || !strings.Contains(err.Error(), "not pinned") {
		t.Errorf("unpinned script: %v", err)
	}
	if _, err := on.CheckPatch(PatchQuery{SHA256: pinned, Target: PatchTargetLXC, Mode: PatchModeDryRun}); err == nil {
		t.Error("lxc target allowed")
	}
	if _, err := on.CheckPatch(host("abc")); err == nil {
		t.Error("bad hash accepted")
	}
	if _, err := on.CheckPatch(PatchQuery{SHA256: pinned, Target: PatchTargetHost, Mode: PatchModeApply}); err == nil || !strings.Contains(err.Error(), "modes") {
		t.Errorf("apply allowed without patches.modes naming it: %v", err)
	}
	trust := mustLoadYAML(t, "version: 1\npatches: {enabled: true, mode: trust_backend, vmids: [100]}\n")
	if rule, err := trust.CheckPatch(PatchQuery{SHA256: other, Target: PatchTargetLXC, Mode: PatchModeDryRun, VMID: "100"}); err != nil || rule != "patches.trust_backend" {
		t.Errorf("trust_backend: %q %v", rule, err)
	}
	if m := off.Metrics(); !m.Enabled {
		t.Error("metrics should default to enabled")
	}
}
