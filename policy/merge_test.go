package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLoadInstalledMergeOrder(t *testing.T) {
	p, err := LoadInstalled(LoadOptions{WorkerAccount: testWorker}, "testdata/example.yaml", "testdata/policy.d")
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	var origins []Origin
	for _, f := range p.Files() {
		paths = append(paths, f.Path)
		origins = append(origins, f.Origin)
		data, err := os.ReadFile(f.Path)
		if err != nil {
			t.Fatal(err)
		}
		if f.SHA256 != sha256hex(data) {
			t.Errorf("%s: sha256 %s does not match the file", f.Path, f.SHA256)
		}
	}
	wantPaths := []string{"testdata/example.yaml", "testdata/policy.d/10-site.yaml", "testdata/policy.d/20-later.yaml"}
	if !reflect.DeepEqual(paths, wantPaths) {
		t.Errorf("files %v, want %v (lexical order, dotfiles and non-yaml skipped)", paths, wantPaths)
	}
	if !reflect.DeepEqual(origins, []Origin{OriginVendor, OriginLocal, OriginLocal}) {
		t.Errorf("origins %v", origins)
	}
	// The last file that sets a setting wins.
	if got := p.Limits().CommandTimeout; got != 30*time.Second {
		t.Errorf("command_timeout %v, want 30s from 20-later.yaml", got)
	}
	if src := p.SettingSource("limits.command_timeout"); src != "testdata/policy.d/20-later.yaml:4" {
		t.Errorf("setting source %q", src)
	}
	// Disabled vendor rules are gone; the local rule is added.
	if got := p.DisabledRules(); !reflect.DeepEqual(got, []string{"ping", "trace-tcp-kprobes"}) {
		t.Errorf("disabled %v", got)
	}
	if d := decide(t, p, "ping -c 1 127.0.0.1"); d.Allowed || !strings.Contains(d.Reason, `no rule allows program "ping"`) {
		t.Errorf("disabled ping: %+v", d)
	}
	if _, err := p.CheckTrace("kprobe", "tcp_connect"); err == nil {
		t.Error("disabled trace rule still allows tcp_connect")
	}
	if d := decide(t, p, "uptime -p"); !d.Allowed || d.Stages[0].RuleID != "site-uptime" {
		t.Errorf("local rule: %+v", d)
	}
	if err := p.CheckPath("/etc/backup-keys/k", []string{"/etc"}); err == nil {
		t.Error("local deny_paths rule not applied")
	}
	vendor := loadExample(t)
	if got, want := p.RuleCounts()["commands"], vendor.RuleCounts()["commands"]; got != want {
		t.Errorf("commands %d, want %d (one disabled, one added)", got, want)
	}
	if p.RuleCounts()["deny_paths"] != vendor.RuleCounts()["deny_paths"]+1 {
		t.Errorf("deny_paths counts %v vs %v", p.RuleCounts(), vendor.RuleCounts())
	}
	dis := p.Disabled()
	if len(dis) != 2 || dis[0].Section != "commands" || !strings.HasPrefix(dis[0].DisabledBy, "testdata/policy.d/10-site.yaml:") ||
		!strings.HasPrefix(dis[0].DefinedAt, "testdata/example.yaml:") {
		t.Errorf("disabled details %+v", dis)
	}
}

func TestMergedSHA256(t *testing.T) {
	a := loadExample(t)
	b := loadExample(t)
	if a.SHA256() != b.SHA256() || len(a.SHA256()) != 64 {
		t.Fatalf("sha256 not stable: %s %s", a.SHA256(), b.SHA256())
	}
	dir := t.TempDir()
	one := writeFile(t, dir, "1.yaml", "version: 1\nlimits: {pipeline_stages: 2}\n")
	two := writeFile(t, dir, "2.yaml", "version: 1\nlimits: {pipeline_stages: 3}\n")
	ab, err := Load(LoadOptions{}, "testdata/example.yaml", one, two)
	if err != nil {
		t.Fatal(err)
	}
	ba, err := Load(LoadOptions{}, "testdata/example.yaml", two, one)
	if err != nil {
		t.Fatal(err)
	}
	if ab.SHA256() == ba.SHA256() || ab.SHA256() == a.SHA256() {
		t.Error("the merged sha256 must change with the files and their order")
	}
	if ab.Limits().PipelineStages != 3 || ba.Limits().PipelineStages != 2 {
		t.Errorf("last file wins: %d %d", ab.Limits().PipelineStages, ba.Limits().PipelineStages)
	}
}

func TestDisableErrors(t *testing.T) {
	dir := t.TempDir()
	vendor := writeFile(t, dir, "vendor.yaml", "version: 1\ncommands:\n  - id: a\n    program: /usr/bin/a\n")
	cases := []struct {
		locals []string
		want   string
	}{
		{[]string{"version: 1\ndisable: [nope]\n"}, `no earlier file defines a rule "nope"`},
		{[]string{"version: 1\ndisable: [b]\ncommands:\n  - id: b\n    program: /usr/bin/b\n"}, "defined in this same file"},
		{[]string{"version: 1\ndisable: [a]\n", "version: 1\ndisable: [a]\n"}, `rule "a" is already disabled`},
		{[]string{"version: 1\ndisable: [a]\ncommands:\n  - id: a\n    program: /usr/bin/a\n"}, `duplicate id "a"`},
		{[]string{"version: 1\ncommands:\n  - id: a\n    program: /usr/bin/a\n"}, `duplicate id "a" (first used at ` + vendor + ":3)"},
	}
	for i, c := range cases {
		var locals []string
		for j, body := range c.locals {
			locals = append(locals, writeFile(t, dir, strings.Repeat("x", i+1)+string(rune('a'+j))+".yaml", body))
		}
		_, err := Load(LoadOptions{}, vendor, locals...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: %v, want %q", i, err, c.want)
		}
	}
	// A later local file may disable an earlier local file's rule.
	l1 := writeFile(t, dir, "l1.yaml", "version: 1\ncommands:\n  - id: b\n    program: /usr/bin/b\n")
	l2 := writeFile(t, dir, "l2.yaml", "version: 1\ndisable: [a, b]\n")
	p, err := Load(LoadOptions{}, vendor, l1, l2)
	if err != nil {
		t.Fatal(err)
	}
	if p.RuleCounts()["commands"] != 0 || len(p.DisabledRules()) != 2 {
		t.Errorf("counts %v disabled %v", p.RuleCounts(), p.DisabledRules())
	}
}

func TestLoadInstalledMissingDir(t *testing.T) {
	p, err := LoadInstalled(LoadOptions{}, "testdata/example.yaml", filepath.Join(t.TempDir(), "absent"))
	if err != nil || len(p.Files()) != 1 {
		t.Fatalf("missing policy.d: %v", err)
	}
	if _, err := Load(LoadOptions{}, filepath.Join(t.TempDir(), "absent.yaml")); err == nil {
		t.Error("a missing vendor file loaded")
	}
}

func TestRequireRootOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: files must be chowned to another account")
	}
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "version: 1\n")
	if _, err := Load(LoadOptions{RequireRootOwned: true}, good); err != nil {
		t.Fatalf("root-owned 0644 file refused: %v", err)
	}
	writable := writeFile(t, dir, "writable.yaml", "version: 1\n")
	if err := os.Chmod(writable, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(LoadOptions{RequireRootOwned: true}, writable); err == nil || !strings.Contains(err.Error(), "writable by group or other") {
		t.Errorf("group-writable file: %v", err)
	}
	if _, err := Load(LoadOptions{}, writable); err != nil {
		t.Errorf("without RequireRootOwned the file loads: %v", err)
	}
	owned := writeFile(t, dir, "owned.yaml", "version: 1\n")
	if err := os.Chown(owned, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(LoadOptions{RequireRootOwned: true}, owned); err == nil || !strings.Contains(err.Error(), "must be owned by root") {
		t.Errorf("nobody-owned file: %v", err)
	}
	// The policy.d directory itself must not be writable by others.
	ld := filepath.Join(dir, "policy.d")
	if err := os.Mkdir(ld, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(ld, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadInstalled(LoadOptions{RequireRootOwned: true}, good, ld); err == nil || !strings.Contains(err.Error(), "writable by group or other") {
		t.Errorf("world-writable policy.d: %v", err)
	}
	if err := CheckOwnership(owned); err == nil {
		t.Error("CheckOwnership accepted a nobody-owned file")
	}
	if err := CheckOwnership(ld); err == nil {
		t.Error("CheckOwnership accepted a directory")
	}
	// A FIFO is not a policy file (and must not block the loader).
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	var list *ErrorList
	if _, err := Load(LoadOptions{}, good, fifo); !errors.As(err, &list) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("fifo: %v", err)
	}
}
