package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/lastserved"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// runStatus prints what works and what does not. It exits 1 when the
// worker reports a problem (or cannot be asked), so monitoring can call it.
// On a host whose worker runs in a VM guest there is no worker here; the
// broker's served record then says where it runs and when it was served.
func runStatus(o *options, stdout, stderr io.Writer) int {
	cc, client, err := connect(o.socket)
	if errors.Is(err, errNoWorker) {
		if code, ok := hostStatus(stdout, o, err); ok {
			return code
		}
	}
	if err != nil {
		if o.json {
			writeJSON(stdout, map[string]any{"worker": map[string]any{"reachable": false, "error": err.Error()},
				"problems": []map[string]string{{"what": err.Error(), "fix": "systemctl start nannyagent-worker"}}})
		}
		fmt.Fprintln(stderr, "nannyagent:", err)
		return exitFailed
	}
	defer cc.Close()
	ctx, cancel := withTimeout(o, statusTimeout)
	defer cancel()
	st, err := client.Status(ctx, &workerv1.StatusRequest{})
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, o.socket))
		return exitFailed
	}
	if o.json {
		out, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true}.Marshal(st)
		if err != nil {
			fmt.Fprintln(stderr, "nannyagent:", err)
			return exitFailed
		}
		stdout.Write(append(escapeJSON(out), '\n'))
	} else {
		printStatus(stdout, st, time.Now())
		// Root on a host reads the broker's record of whom it served.
		if rec, err := lastserved.Read(o.servedRecord); err == nil {
			printServed(stdout, rec, o.servedRecord)
		}
	}
	if len(st.GetProblems()) > 0 {
		return exitFailed
	}
	return exitOK
}

func writeJSON(w io.Writer, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		w.Write(append(escapeJSON(data), '\n'))
	}
}

// statusLine prints "label:        value" lines; every value from the
// worker is cleaned for the terminal.
type statusLine struct {
	w   io.Writer
	now time.Time
}

func (s statusLine) p(label, format string, a ...any) {
	if label != "" {
		label += ":"
	}
	fmt.Fprintf(s.w, "%-14s %s\n", label, clean(fmt.Sprintf(format, a...)))
}

func printStatus(w io.Writer, st *workerv1.StatusResponse, now time.Time) {
	s := statusLine{w: w, now: now}
	if n := len(st.GetProblems()); n > 0 {
		fmt.Fprintf(w, "DEGRADED: %s (see the end)\n\n", plural(int32(n), "problem"))
	}
	up := ""
	if st.GetStartedAt() != nil {
		up = fmt.Sprintf(" (up %s)", now.Sub(st.GetStartedAt().AsTime()).Round(time.Second))
	}
	s.p("worker", "running, version %s%s", st.GetVersion(), up)
	printBroker(s, st.GetBroker())
	printRegistration(s, st.GetRegistration(), st.GetSettings())
	printRealtime(s, st.GetRealtime())
	api := st.GetApi()
	apiLine := api.GetUrl()
	if api.GetInsecure() {
		apiLine += " (INSECURE: plain http)"
	}
	if api.GetError() != "" {
		apiLine += " — " + api.GetError()
	}
	s.p("api", "%s", apiLine)
	kinds := make([]string, 0, len(st.GetLastSuccess()))
	for k := range st.GetLastSuccess() {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		s.p("last "+k, "%s", s.when(st.GetLastSuccess()[k].AsTime()))
	}
	printOperations(w, st.GetOperations(), now)
	for _, warning := range st.GetWarnings() {
		s.p("warning", "%s", warning)
	}
	if len(st.GetProblems()) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, pr := range st.GetProblems() {
			fmt.Fprintf(w, "  - %s\n    fix: %s\n", clean(pr.GetWhat()), clean(pr.GetFix()))
		}
	}
}

// when is a time with how long ago or ahead it is.
func (s statusLine) when(t time.Time) string {
	d := s.now.Sub(t)
	rel := humanDuration(d) + " ago"
	if d < 0 {
		rel = "in " + humanDuration(-d)
	}
	return t.Local().Format("2006-01-02 15:04:05 MST") + " (" + rel + ")"
}

func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d >= time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return d.Round(time.Second).String()
}

func printBroker(s statusLine, b *workerv1.BrokerStatus) {
	if !b.GetReachable() {
		s.p("broker", "UNREACHABLE: %s", b.GetError())
		return
	}
	probe := b.GetProbe()
	s.p("broker", "reachable, version %s", probe.GetBrokerVersion())
	s.p("kernel", "%s %s", probe.GetKernelRelease(), probe.GetArch())
	bt := probe.GetBpftrace()
	if bt.GetFound() {
		s.p("bpftrace", "%s (%s)", bt.GetVersion(), bt.GetPath())
	} else {
		s.p("bpftrace", "not available: %s", bt.GetError())
	}
	k := probe.GetProbeKinds()
	s.p("probe kinds", "tracepoints %s; kprobes %s; kfuncs %s", kind(k.GetTracepoint()), kind(k.GetKprobe()), kind(k.GetKfunc()))
	if t := probe.GetTracefs(); t.GetMounted() {
		s.p("tracefs", "%s", t.GetPath())
	} else {
		s.p("tracefs", "not mounted")
	}
	if px := probe.GetProxmox(); px.GetDetected() {
		s.p("proxmox", "detected, node %q", px.GetNode())
	} else {
		s.p("proxmox", "not detected")
	}
	s.p("confinement", "%s", confinementLine(probe.GetConfinement()))
	s.p("policy", "%s", policyLine(probe.GetPolicy()))
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

func printRegistration(s statusLine, r *workerv1.Registration, set *workerv1.Settings) {
	if r == nil || r.GetState() == "" {
		s.p("registration", "unknown")
		return
	}
	line := r.GetState()
	if r.GetAgentId() != "" {
		line += fmt.Sprintf(", agent %s (%s)", r.GetAgentId(), r.GetMode())
	}
	s.p("registration", "%s", line)
	printAgentID(s, r, set)
	if exp := r.GetTokenExpiresAt(); exp != nil {
		line := s.when(exp.AsTime())
		if exp.AsTime().Before(s.now) {
			line = "EXPIRED " + line + "; the worker gets a new one with the refresh token at its next call"
		}
		if r.GetTokenExpirySource() == "exp claim" {
			line += ", from the token's exp claim"
		}
		s.p("access token", "valid until %s", line)
		if at := r.GetTokenRefreshAt(); at != nil && at.AsTime().After(s.now) {
			s.p("", "  refreshed at %s (the backend's expires_in)", s.when(at.AsTime()))
		}
	}
	if r.GetRefreshTokenIssuedAt() != nil {
		issued := r.GetRefreshTokenIssuedAt().AsTime()
		age := fmt.Sprintf("issued %s", s.when(issued))
		if r.GetRefreshTokenIssuedEstimated() {
			age = fmt.Sprintf("first seen %s (its real age is unknown: it came from the reference agent)", s.when(issued))
		}
		s.p("refresh token", "%s", age)
		if exp := r.GetRefreshTokenExpiresAt(); exp != nil {
			if exp.AsTime().Before(s.now) {
				s.p("", "  EXPIRED %s: no new access token can be had; run `nannyagent register --force`", s.when(exp.AsTime()))
				return
			}
			renew := "this backend cannot renew it: run `nannyagent register --force` before then"
			switch r.GetRenewSupport() {
			case "supported":
				renew = "renewed automatically before then"
			case "unknown", "":
				renew = "renewed automatically if the backend supports it; otherwise run `nannyagent register --force` before then"
			}
			s.p("", "  expires %s, %d day(s) left of its 30; %s", s.when(exp.AsTime()), r.GetRefreshTokenDaysLeft(), renew)
		}
	}
}

// printAgentID says where the agent id lives: the reference agent kept it
// in config.yaml, which the worker may not write.
func printAgentID(s statusLine, r *workerv1.Registration, set *workerv1.Settings) {
	id := set.GetAgentId()
	if id == "" {
		return
	}
	switch set.GetAgentIdSource() {
	case "config":
		s.p("agent id", "%s, from agent_id in %s (or NANNYAI_AGENT_ID)", id, configFile)
	default:
		line := fmt.Sprintf("%s, stored in %s (key agent_id)", id, set.GetTokenPath())
		if r.GetMode() == "static" {
			line += fmt.Sprintf("; to keep it if that file is lost, add `agent_id: %s` to %s", id, configFile)
		}
		s.p("agent id", "%s", line)
	}
}

func printRealtime(s statusLine, rt *workerv1.RealtimeStatus) {
	switch {
	case !rt.GetEnabled():
		s.p("realtime", "not running (the host is not registered)")
	case rt.GetConnected():
		s.p("realtime", "connected since %s (%d connects, %d stream errors)", s.when(rt.GetConnectedSince().AsTime()), rt.GetConnects(), rt.GetStreamErrors())
	case rt.GetDisconnectedSince() != nil:
		s.p("realtime", "DISCONNECTED since %s (%d stream errors); reconnecting", s.when(rt.GetDisconnectedSince().AsTime()), rt.GetStreamErrors())
	default:
		s.p("realtime", "not connected yet (%d stream errors)", rt.GetStreamErrors())
	}
	if rt.GetLastCatchUp() != nil {
		s.p("last catch-up", "%s", s.when(rt.GetLastCatchUp().AsTime()))
	}
}

// printOperations lists the recent operations by kind, whatever kinds the
// worker recorded: a section appears for each.
func printOperations(w io.Writer, ops []*workerv1.Operation, now time.Time) {
	if len(ops) == 0 {
		fmt.Fprintln(w, "operations:    none recorded yet")
		return
	}
	s := statusLine{w: w, now: now}
	current := ""
	for _, op := range ops {
		if op.GetKind() != current {
			current = op.GetKind()
			fmt.Fprintf(w, "recent %s:\n", clean(kindTitle(current)))
		}
		line := fmt.Sprintf("  %s  %s", op.GetId(), strings.ToUpper(op.GetState()))
		var facts []string
		if op.GetOwn() {
			facts = append(facts, "from the CLI")
		}
		if op.GetMode() != "" {
			facts = append(facts, "mode "+op.GetMode())
		}
		if op.GetLxcId() != "" {
			facts = append(facts, "container "+op.GetLxcId())
		}
		if t := latestTime(op); !t.IsZero() {
			facts = append(facts, s.when(t))
		}
		if len(facts) > 0 {
			line += " (" + strings.Join(facts, ", ") + ")"
		}
		fmt.Fprintln(w, clean(line))
		if op.GetIssue() != "" {
			fmt.Fprintf(w, "      issue: %s\n", clean(op.GetIssue()))
		}
		if op.GetRootCause() != "" {
			fmt.Fprintf(w, "      root cause: %s\n", clean(op.GetRootCause()))
		}
		if op.GetNote() != "" {
			fmt.Fprintf(w, "      %s\n", clean(op.GetNote()))
		}
	}
}

func kindTitle(kind string) string {
	switch kind {
	case "patch":
		return "patches"
	case "":
		return "operations"
	}
	return kind + "s"
}

func latestTime(op *workerv1.Operation) time.Time {
	for _, t := range []*timestamppb.Timestamp{op.GetFinished(), op.GetStarted(), op.GetFirstSeen()} {
		if t != nil {
			return t.AsTime()
		}
	}
	return time.Time{}
}
