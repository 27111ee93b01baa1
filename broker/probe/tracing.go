package probe

import (
	"bytes"
	"context"
	"os"
	"strings"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// kfuncTest is a program that attaches one kfunc and exits at once. bpftrace
// --info claims kprobe and kfunc support on kernels where neither attaches,
// so only an attach says the truth.
const kfuncTest = `kfunc:vfs_read { exit(); } interval:ms:100 { exit(); }`

func (p *Prober) checkSlow(ctx context.Context) *tracingFacts {
	facts := p.checkTracing(ctx)
	facts.pveVersion = p.pveVersion(ctx)
	return facts
}

// pveVersion runs pveversion once, when it exists, for the version line
// ("pve-manager/8.2.4/faa83925c9641325 (running kernel: …)").
func (p *Prober) pveVersion(ctx context.Context) string {
	if p.cfg.Runner == nil || firstExecutable([]string{p.cfg.PveversionPath}) == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.AttachTimeout)
	defer cancel()
	out, code, err := p.cfg.Runner(ctx, []string{p.cfg.PveversionPath})
	if err != nil || code != 0 {
		return ""
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	return line
}

func (p *Prober) checkTracing(ctx context.Context) *tracingFacts {
	facts := &tracingFacts{
		bpftrace: &brokerv1.BpftraceInfo{},
		kfunc:    &brokerv1.KindSupport{},
	}
	path := firstExecutable(p.cfg.BpftraceCandidates)
	if path == "" {
		facts.bpftrace.Error = "bpftrace not found in " + strings.Join(p.cfg.BpftraceCandidates, ", ")
		facts.kfunc.Evidence = "bpftrace not found"
		return facts
	}
	facts.bpftrace.Path = path
	if p.cfg.Runner == nil {
		facts.bpftrace.Error = "no command runner configured"
		facts.kfunc.Evidence = facts.bpftrace.Error
		return facts
	}
	actx, cancel := context.WithTimeout(ctx, p.cfg.AttachTimeout)
	defer cancel()
	out, code, err := p.cfg.Runner(actx, []string{path, "--version"})
	if err != nil || code != 0 {
		facts.bpftrace.Error = "bpftrace --version failed: " + firstLine(out, err)
		return facts
	}
	facts.bpftrace.Found = true
	facts.bpftrace.Version = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "bpftrace"))
	facts.kfunc = p.attachTest(actx, path, kfuncTest)
	return facts
}

func (p *Prober) attachTest(ctx context.Context, bpftrace, program string) *brokerv1.KindSupport {
	out, code, err := p.cfg.Runner(ctx, []string{bpftrace, "-e", program})
	if err == nil && code == 0 {
		return &brokerv1.KindSupport{Available: true, Evidence: "attach test passed"}
	}
	return &brokerv1.KindSupport{Evidence: "attach test failed: " + errorLine(out, err)}
}

func firstExecutable(paths []string) string {
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// errorLine picks bpftrace's "ERROR:" line that explains a failure, skipping
// the RLIMIT_MEMLOCK notice it prints on every run.
func errorLine(out []byte, err error) string {
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "ERROR") && !strings.Contains(line, "RLIMIT_MEMLOCK") {
			return strings.TrimSpace(line)
		}
	}
	return firstLine(out, err)
}

func firstLine(out []byte, err error) string {
	if line, _, _ := bytes.Cut(bytes.TrimSpace(out), []byte("\n")); len(line) > 0 {
		return string(line)
	}
	if err != nil {
		return err.Error()
	}
	return "no output"
}
