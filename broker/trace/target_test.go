package trace

import (
	"strings"
	"testing"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func TestValidateTarget(t *testing.T) {
	const (
		tp  = brokerv1.TraceKind_TRACE_KIND_TRACEPOINT
		sc  = brokerv1.TraceKind_TRACE_KIND_SYSCALL
		kp  = brokerv1.TraceKind_TRACE_KIND_KPROBE
		krp = brokerv1.TraceKind_TRACE_KIND_KRETPROBE
	)
	tests := []struct {
		kind   brokerv1.TraceKind
		target string
		errHas string // empty: valid
	}{
		{tp, "syscalls:sys_enter_openat", ""},
		{tp, "sched:sched_process_exec", ""},
		{tp, "block:block_rq_issue", ""},
		{tp, "9p:9p_client_req", ""},
		{tp, "syscalls", "want category:name"},
		{tp, "syscalls:", "tracepoint name is empty"},
		{tp, ":sys_enter_read", "tracepoint category is empty"},
		{tp, "syscalls:sys_enter_*", `character '*'`},
		{tp, "tracepoint:syscalls:sys_enter_read", `character ':'`},
		{tp, "Syscalls:sys_enter_read", `character 'S'`},
		{tp, "syscalls:sys_enter_read { system(\"id\") }", `character ' '`},
		{tp, "syscalls:sys_enter_read/", `character '/'`},
		{tp, "a:" + strings.Repeat("b", 65), "longer than 64"},
		{sc, "openat", ""},
		{sc, "pread64", ""},
		{sc, "sys_enter_read,", `character ','`},
		{sc, "", "syscall name is empty"},
		{sc, "read\n", `character '\n'`},
		{kp, "tcp_connect", ""},
		{kp, "do_sys_openat2.isra.0", ""},
		{kp, "vfs_read+4", `character '+'`},
		{kp, "vfs_*", `character '*'`},
		{krp, "ksys_read", ""},
		{krp, strings.Repeat("f", 129), "longer than 128"},
		{brokerv1.TraceKind_TRACE_KIND_RAW, "x", "no target syntax"},
	}
	for _, tt := range tests {
		err := ValidateTarget(tt.kind, tt.target)
		switch {
		case tt.errHas == "" && err != nil:
			t.Errorf("ValidateTarget(%s, %q) = %v, want valid", tt.kind, tt.target, err)
		case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
			t.Errorf("ValidateTarget(%s, %q) = %v, want error containing %q", tt.kind, tt.target, err, tt.errHas)
		}
	}
}

func TestValidateComm(t *testing.T) {
	for _, ok := range []string{"bash", "postgres", "kworker:1", "php-fpm8.2", "a", "tr-exec-probe", "x_y.z:w-v012345"} {
		if err := ValidateComm(ok); err != nil {
			t.Errorf("ValidateComm(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", `a"b`, `a\b`, "a b", "sixteen-chars-xx", "a/b", "a\nb", "é", "(sd-pam)", "a%s"} {
		if err := ValidateComm(bad); err == nil {
			t.Errorf("ValidateComm(%q) accepted", bad)
		}
	}
}

func TestProbeAllowed(t *testing.T) {
	c := Config{AllowedTargets: []string{"syscalls:sys_enter_*", "tracepoint:sched:*", "kprobe:tcp_*"}}
	for probe, want := range map[string]bool{
		"syscalls:sys_enter_read":  true,
		"syscalls:sys_exit_read":   false,
		"sched:sched_process_exec": true,
		"kprobe:tcp_connect":       true,
		"kretprobe:tcp_connect":    false,
		"kprobe:vfs_read":          false,
		"block:block_rq_issue":     false,
	} {
		if _, err := c.probeAllowed(probe); (err == nil) != want {
			t.Errorf("probeAllowed(%q) = %v, want allowed=%v", probe, err, want)
		}
	}
	if _, err := (Config{}).probeAllowed("sched:sched_switch"); err == nil {
		t.Error("an empty target list allowed a probe: it must deny by default")
	}
}
