package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestNormalisePath(t *testing.T) {
	cases := []struct {
		in, want string
		err      string
	}{
		{"/etc/hosts", "/etc/hosts", ""},
		{"/etc//hosts", "/etc/hosts", ""},
		{"/etc/./hosts", "/etc/hosts", ""},
		{"/var/log/../../etc/shadow", "/etc/shadow", ""},
		{"/../../etc/shadow", "/etc/shadow", ""},
		{"/etc/ssh/", "/etc/ssh", ""},
		{"/", "/", ""},
		// The /proc aliases of one process fold into one spelling.
		{"/proc/self/environ", "/proc/self/environ", ""},
		{"/proc/thread-self/environ", "/proc/self/environ", ""},
		{"/proc/self/task/42/environ", "/proc/self/environ", ""},
		{"/proc/thread-self/task/42/environ", "/proc/self/environ", ""},
		{"/proc/123/task/456/environ", "/proc/123/environ", ""},
		{"/proc/123/task/456/task/789/status", "/proc/123/status", ""},
		{"/proc//123/./task/456/../456/mem", "/proc/123/mem", ""},
		{"/proc/123/task", "/proc/123/task", ""},
		{"/proc/123/task/self/status", "/proc/123/task/self/status", ""},
		{"/proc/net/tcp", "/proc/net/tcp", ""},
		{"/dev/fd/3", "", "magic link"},
		{"/dev/stdin", "", "magic link"},
		{"/dev/null", "/dev/null", ""},
		// Paths through magic links are refused outright.
		{"/proc/1/root/etc/shadow", "", "magic link"},
		{"/proc/1/root", "", "magic link"},
		{"/proc/self/root/etc/shadow", "", "magic link"},
		{"/proc/thread-self/root/etc/shadow", "", "magic link"},
		{"/proc/1/task/1/root/etc/shadow", "", "magic link"},
		{"/proc/1/cwd/secret", "", "magic link"},
		{"/proc/1/exe", "", "magic link"},
		{"/proc/1/fd/3", "", "magic link"},
		{"/proc/self/fd/0", "", "magic link"},
		{"/proc/1/map_files/7f00-7f01", "", "magic link"},
		{"/proc/1/fd", "/proc/1/fd", ""},
		{"/proc/1/task/2/fd/3", "", "magic link"},
		// Relative paths and hidden characters are refused.
		{"etc/hosts", "", "absolute path"},
		{"./etc/hosts", "", "absolute path"},
		{"", "", "empty"},
		{"/etc/ho\x00sts", "", "NUL"},
		{"/etc/ho\nsts", "", "control character"},
		{"/etc/ho\u202ests", "", "invisible"},
		{"/etc/\xffhosts", "", "invalid UTF-8"},
	}
	for _, c := range cases {
		got, err := NormalisePath(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("NormalisePath(%q) = %q, %v; want error %q", c.in, got, err, c.err)
			}
			var pe *PathError
			if err != nil && !errors.As(err, &pe) {
				t.Errorf("NormalisePath(%q): error %T, want *PathError", c.in, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("NormalisePath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestCheckPathDenyWinsOverRoots(t *testing.T) {
	p := loadExample(t)
	roots := []string{"/etc", "/proc", "/home", "/root"}
	cases := []struct {
		path string
		rule string // deny rule id, "" = allowed, "roots" = outside roots, "magic"
	}{
		{"/etc/hosts", ""},
		{"/etc/ssh/sshd_config", ""},
		{"/etc/shadow", "deny-shadow"},
		{"/etc//shadow", "deny-shadow"},
		{"/etc/ssh/../shadow", "deny-shadow"},
		{"/var/log/../../etc/shadow", "deny-shadow"},
		{"/etc/shadow-", "deny-shadow"},
		{"/etc/shadowx", ""},
		{"/etc/ssh/ssh_host_ed25519_key", "deny-ssh-keys"},
		{"/etc/ssh/ssh_host_ed25519_key.pub", ""},
		{"/root/.ssh/id_rsa", "deny-ssh-keys"},
		{"/root/.ssh", "deny-ssh-keys"},
		{"/home/alice/.ssh/authorized_keys", "deny-ssh-keys"},
		{"/etc/ssl/private/server.key", "deny-tls-keys"},
		{"/etc/letsencrypt/live/example.org/privkey.pem", "deny-tls-keys"},
		{"/etc/pve/priv/authkey.key", "deny-proxmox-secrets"},
		{"/etc/pve/nodes/pve1/pve-ssl.key", "deny-proxmox-secrets"},
		{"/etc/pve/nodes/pve1/pve-ssl.pem", ""},
		{"/etc/nannyagent/config.yaml", "deny-nannyagent"},
		{"/proc/1/status", ""},
		{"/proc/1/environ", "deny-proc-secrets"},
		{"/proc/self/environ", "deny-proc-secrets"},
		{"/proc/thread-self/environ", "deny-proc-secrets"},
		{"/proc/self/task/7/environ", "deny-proc-secrets"},
		{"/proc/1/task/1/environ", "deny-proc-secrets"},
		{"/proc/1/task/1/mem", "deny-proc-secrets"},
		{"/proc/1/maps", "deny-proc-secrets"},
		{"/proc/1/fd", "deny-proc-secrets"},
		{"/proc/kcore", "deny-proc-secrets"},
		{"/proc/1/root/etc/hosts", "magic"},
		{"/proc/self/cwd/x", "magic"},
		{"/var/log/syslog", "roots"},
		{"/etcetera/x", "roots"},
	}
	for _, c := range cases {
		err := p.CheckPath(c.path, roots)
		var pe *PathError
		switch {
		case c.rule == "":
			if err != nil {
				t.Errorf("CheckPath(%q) = %v, want allowed", c.path, err)
			}
		case !errors.As(err, &pe):
			t.Errorf("CheckPath(%q) = %v, want *PathError (%s)", c.path, err, c.rule)
		case c.rule == "roots":
			if pe.RuleID != "" || !strings.Contains(pe.Reason, "not under the allowed roots") {
				t.Errorf("CheckPath(%q) = %v, want outside roots", c.path, err)
			}
		case c.rule == "magic":
			if !strings.Contains(pe.Reason, "magic link") {
				t.Errorf("CheckPath(%q) = %v, want magic link", c.path, err)
			}
		default:
			if pe.RuleID != c.rule {
				t.Errorf("CheckPath(%q) denied by %q (%v), want %q", c.path, pe.RuleID, err, c.rule)
			}
		}
	}
	// Roots may be globs, and a root admits its subtree but not siblings.
	if err := p.CheckPath("/proc/42/status", []string{"/proc/*/status"}); err != nil {
		t.Errorf("glob root: %v", err)
	}
	if err := p.CheckPath("/proc/42/stat", []string{"/proc/*/status"}); err == nil {
		t.Error("/proc/42/stat allowed by root /proc/*/status")
	}
	if err := p.CheckPath("/etc/hosts", nil); err == nil {
		t.Error("no roots must allow nothing")
	}
}

func TestExpandBraces(t *testing.T) {
	got, err := expandBraces("/proc/*/{environ,mem}/{a,b}")
	want := []string{"/proc/*/environ/a", "/proc/*/environ/b", "/proc/*/mem/a", "/proc/*/mem/b"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("expandBraces = %q, %v", got, err)
	}
	for _, bad := range []string{"/a/{b", "/a/b}", "/a/{b{c,d}}", "/a/{b}"} {
		if _, err := expandBraces(bad); err == nil {
			t.Errorf("expandBraces(%q) accepted", bad)
		}
	}
}

func TestPathPatternCompile(t *testing.T) {
	for _, bad := range []string{"etc", "/etc/", "/etc//x", "/etc/../x", "/etc/[", "/etc/**/x", "/e\x00"} {
		if _, err := compilePathPattern(bad); err == nil {
			t.Errorf("compilePathPattern(%q) accepted", bad)
		}
	}
	pp, err := compilePathPattern("/home/*/.ssh")
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/home/a/.ssh": true, "/home/a/.ssh/id_rsa": true, "/home/.ssh": false, "/home/a/b/.ssh": false, "/home/a/.sshx": false,
	} {
		comps := strings.Split(path[1:], "/")
		if got := pp.matchPrefix(comps); got != want {
			t.Errorf("/home/*/.ssh vs %s = %v, want %v", path, got, want)
		}
	}
}
