package probe

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func fakeRunner(version string, versionCode int, attachOut string, attachCode int) CommandRunner {
	return func(_ context.Context, argv []string) ([]byte, int, error) {
		if argv[len(argv)-1] == "--version" {
			return []byte(version), versionCode, nil
		}
		return []byte(attachOut), attachCode, nil
	}
}

func executable(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTracingFacts(t *testing.T) {
	dir := t.TempDir()
	bt := executable(t, dir, "bpftrace")
	const memlock = "ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace.\n"
	tests := []struct {
		name         string
		candidates   []string
		runner       CommandRunner
		wantFound    bool
		wantVersion  string
		wantKfunc    bool
		wantEvidence string
	}{
		{"missing", []string{filepath.Join(dir, "nope")}, fakeRunner("", 0, "", 0), false, "", false, "not found"},
		{"broken", []string{bt}, fakeRunner("segfault", 139, "", 0), false, "", false, ""},
		{"kfuncs fail", []string{bt}, fakeRunner("bpftrace v0.17.0\n", 0,
			memlock+"stdin:1:1-15: ERROR: kfunc/kretfunc not available for your kernel version.\n", 1),
			true, "v0.17.0", false, "kfunc/kretfunc not available"},
		{"kfuncs attach", []string{bt}, fakeRunner("bpftrace v0.20.1\n", 0, memlock, 0), true, "v0.20.1", true, "attach test passed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.BpftraceCandidates = tc.candidates
			cfg.Runner = tc.runner
			p := New(cfg)
			wait := p.Start(context.Background())
			wait()
			resp := p.Probe(context.Background())
			if resp.GetBpftrace().GetFound() != tc.wantFound || resp.GetBpftrace().GetVersion() != tc.wantVersion {
				t.Errorf("bpftrace %v", resp.GetBpftrace())
			}
			k := resp.GetProbeKinds().GetKfunc()
			if k.GetAvailable() != tc.wantKfunc || !strings.Contains(k.GetEvidence(), tc.wantEvidence) {
				t.Errorf("kfunc %v, want available=%v evidence containing %q", k, tc.wantKfunc, tc.wantEvidence)
			}
			if strings.Contains(k.GetEvidence(), "RLIMIT_MEMLOCK") {
				t.Errorf("evidence quotes the MEMLOCK notice instead of the real error: %q", k.GetEvidence())
			}
		})
	}
}

func TestProbeAnswersBeforeSlowChecksFinish(t *testing.T) {
	cfg := DefaultConfig()
	cfg.BpftraceCandidates = []string{executable(t, t.TempDir(), "bpftrace")}
	release := make(chan struct{})
	cfg.Runner = func(ctx context.Context, _ []string) ([]byte, int, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return []byte("bpftrace v1\n"), 0, nil
	}
	p := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	wait := p.Start(ctx)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	resp := p.Probe(short)
	cancelShort()
	if resp.GetBpftrace().GetFound() || !strings.Contains(resp.GetBpftrace().GetError(), "still running") {
		t.Errorf("want a partial answer, got %v", resp.GetBpftrace())
	}
	close(release)
	cancel()
	wait()
}

func TestTracefsAndKinds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.TracefsCandidates = []string{t.TempDir()} // not a tracefs mount
	p := New(cfg)
	resp := p.Probe(canceled())
	if resp.GetTracefs().GetMounted() || resp.GetProbeKinds().GetTracepoint().GetAvailable() || resp.GetProbeKinds().GetKprobe().GetAvailable() {
		t.Errorf("a plain directory counted as tracefs: %v %v", resp.GetTracefs(), resp.GetProbeKinds())
	}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		t.Skip("tracefs not mounted here: " + err.Error())
	}
	resp = New(DefaultConfig()).Probe(canceled())
	if !resp.GetTracefs().GetMounted() || !resp.GetProbeKinds().GetTracepoint().GetAvailable() {
		t.Errorf("mounted tracefs not seen: %v", resp.GetProbeKinds())
	}
	_, err := os.Stat("/sys/kernel/tracing/kprobe_events")
	if got := resp.GetProbeKinds().GetKprobe().GetAvailable(); got != (err == nil) {
		t.Errorf("kprobes available=%v but kprobe_events stat err=%v", got, err)
	}
}

func TestProxmoxVersion(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.PveversionPath = filepath.Join(dir, "pveversion")
	cfg.Runner = func(_ context.Context, argv []string) ([]byte, int, error) {
		if argv[0] == cfg.PveversionPath {
			return []byte("pve-manager/8.2.4/faa83925c9641325 (running kernel: 6.8.12-1-pve)\n"), 0, nil
		}
		return nil, 1, nil
	}
	p := New(cfg)
	p.Start(context.Background())()
	if v := p.Probe(context.Background()).GetProxmox().GetVersion(); v != "" {
		t.Errorf("version %q without pveversion", v)
	}
	executable(t, dir, "pveversion")
	p = New(cfg)
	p.Start(context.Background())()
	if v := p.Probe(context.Background()).GetProxmox().GetVersion(); v != "pve-manager/8.2.4/faa83925c9641325" {
		t.Errorf("version %q", v)
	}
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
