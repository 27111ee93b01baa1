package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

func runStatus(args []string, stdout, stderr io.Writer) int {
	c, err := parseClientFlags("status", args, stderr, nil)
	if err != nil {
		return 2
	}
	cc, client, err := connect(c)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return 1
	}
	defer cc.Close()
	ctx, cancel := withTimeout(c)
	defer cancel()
	st, err := client.Status(ctx, &workerv1.StatusRequest{})
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, c.socket))
		return 1
	}
	if c.json {
		out, _ := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(st)
		fmt.Fprintln(stdout, string(out))
		return 0
	}
	printStatus(stdout, st)
	return 0
}

func printStatus(w io.Writer, st *workerv1.StatusResponse) {
	p := func(label, format string, a ...any) {
		fmt.Fprintf(w, "%-14s %s\n", label+":", fmt.Sprintf(format, a...))
	}
	up := ""
	if st.GetStartedAt() != nil {
		up = fmt.Sprintf(" (up %s)", time.Since(st.GetStartedAt().AsTime()).Round(time.Second))
	}
	p("worker", "running, version %s%s", st.GetVersion(), up)
	printBroker(p, st.GetBroker())
	printRegistration(p, st.GetRegistration())
	api := st.GetApi()
	apiLine := api.GetUrl()
	if api.GetInsecure() {
		apiLine += " (INSECURE: plain http)"
	}
	if api.GetError() != "" {
		apiLine += " — " + api.GetError()
	}
	p("api", "%s", apiLine)
	kinds := make([]string, 0, len(st.GetLastSuccess()))
	for k := range st.GetLastSuccess() {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		p("last "+k, "%s", st.GetLastSuccess()[k].AsTime().Local().Format(time.RFC3339))
	}
	for _, warning := range st.GetWarnings() {
		p("warning", "%s", warning)
	}
}

func printBroker(p func(string, string, ...any), b *workerv1.BrokerStatus) {
	if !b.GetReachable() {
		p("broker", "UNREACHABLE: %s", b.GetError())
		return
	}
	probe := b.GetProbe()
	p("broker", "reachable, version %s", probe.GetBrokerVersion())
	p("kernel", "%s %s", probe.GetKernelRelease(), probe.GetArch())
	bt := probe.GetBpftrace()
	if bt.GetFound() {
		p("bpftrace", "%s (%s)", bt.GetVersion(), bt.GetPath())
	} else {
		p("bpftrace", "not available: %s", bt.GetError())
	}
	k := probe.GetProbeKinds()
	p("probe kinds", "tracepoints %s; kprobes %s; kfuncs %s", kind(k.GetTracepoint()), kind(k.GetKprobe()), kind(k.GetKfunc()))
	if t := probe.GetTracefs(); t.GetMounted() {
		p("tracefs", "%s", t.GetPath())
	} else {
		p("tracefs", "not mounted")
	}
	if px := probe.GetProxmox(); px.GetDetected() {
		p("proxmox", "detected, node %q", px.GetNode())
	} else {
		p("proxmox", "not detected")
	}
	p("confinement", "%s", confinementLine(probe.GetConfinement()))
	p("policy", "%s", policyLine(probe.GetPolicy()))
}

// confinementLine says whether the broker's runs are confined by Landlock
// and at which ABI.
func confinementLine(c *brokerv1.ConfinementInfo) string {
	if c == nil {
		return "unknown (the broker did not say)"
	}
	if !c.GetLandlock() {
		return "runs NOT confined by Landlock: " + c.GetReason() + " (the policy's option tables are the only wall)"
	}
	return fmt.Sprintf("runs confined by Landlock ABI %d: they cannot %s", c.GetLandlockAbi(), strings.Join(c.GetDenies(), ", "))
}

func kind(k *brokerv1.KindSupport) string {
	if k.GetAvailable() {
		return "yes"
	}
	return "no (" + k.GetEvidence() + ")"
}

func policyLine(pol *brokerv1.PolicyInfo) string {
	sections := make([]string, 0, len(pol.GetRuleCounts()))
	for s, n := range pol.GetRuleCounts() {
		sections = append(sections, fmt.Sprintf("%s %d", s, n))
	}
	sort.Strings(sections)
	return fmt.Sprintf("sha256 %s, %d file(s); rules: %s", pol.GetSha256(), len(pol.GetFiles()), strings.Join(sections, ", "))
}

func printRegistration(p func(string, string, ...any), r *workerv1.Registration) {
	if r == nil || r.GetState() == "" {
		p("registration", "unknown")
		return
	}
	line := r.GetState()
	if r.GetAgentId() != "" {
		line += fmt.Sprintf(", agent %s (%s)", r.GetAgentId(), r.GetMode())
	}
	p("registration", "%s", line)
	if exp := r.GetTokenExpiresAt(); exp != nil {
		p("token expires", "%s", exp.AsTime().Local().Format(time.RFC3339))
	}
	if r.GetRefreshTokenIssuedAt() != nil {
		p("refresh token", "%d day(s) left", r.GetRefreshTokenDaysLeft())
	}
}
