package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// decision is one line of the broker's decision log.
type decision struct {
	Time     time.Time `json:"time"`
	Msg      string    `json:"msg"`
	RPC      string    `json:"rpc"`
	Decision string    `json:"decision"`
	Rule     string    `json:"rule"`
	Policy   string    `json:"policy_sha256"`
	Program  string    `json:"program"`
	Argv     []string  `json:"argv"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error"`
	Duration float64   `json:"duration_ms"`
}

// formatDecisions writes the decision log's commands and traces since
// `since` as a person reads them: when, the decision, the request, the
// rule, the reason for a refusal, and a count of the other requests.
func formatDecisions(log string, since time.Time) string {
	var b strings.Builder
	others := map[string]int{}
	policies := map[string]bool{}
	for _, line := range strings.Split(log, "\n") {
		var d decision
		if json.Unmarshal([]byte(line), &d) != nil || d.Msg != "decision" || d.Time.Before(since) {
			continue
		}
		policies[d.Policy] = true
		if d.RPC != "RunCommand" && d.RPC != "RunTrace" {
			others[d.RPC]++
			continue
		}
		what := request(d)
		fmt.Fprintf(&b, "  %s  %-5s  %-10s  rule %-22s %s\n", d.Time.Local().Format("15:04:05.000"),
			strings.ToUpper(d.Decision), d.RPC, d.Rule, what)
		if d.Reason != "" {
			fmt.Fprintf(&b, "  %12s  reason: %s\n", "", d.Reason)
		}
		if d.Error != "" {
			fmt.Fprintf(&b, "  %12s  error: %s\n", "", d.Error)
		}
	}
	if b.Len() == 0 {
		b.WriteString("  (no command or trace reached the broker)\n")
	}
	if len(others) > 0 {
		names := make([]string, 0, len(others))
		for rpc, n := range others {
			names = append(names, fmt.Sprintf("%d %s", n, rpc))
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "  and %s (host facts and status), each logged the same way\n", strings.Join(names, ", "))
	}
	for sha := range policies {
		fmt.Fprintf(&b, "  every decision names the policy in force: sha256 %s\n", sha)
	}
	return b.String()
}

// request is the command line the broker judged, stage by stage (the log
// keeps the programs joined by "|" and the stages' arguments split by "|"),
// or for a trace the probes of the program the broker wrote.
func request(d decision) string {
	if d.RPC == "RunTrace" {
		return "bpftrace program written by the broker, attached to " + probes(d.Argv)
	}
	programs := strings.Split(d.Program, "|")
	stages := [][]string{{}}
	for _, a := range d.Argv {
		if a == "|" {
			stages = append(stages, []string{})
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], a)
	}
	parts := make([]string, 0, len(programs))
	for i, prog := range programs {
		part := prog
		if i < len(stages) && len(stages[i]) > 0 {
			part += " " + strings.Join(stages[i], " ")
		}
		parts = append(parts, part)
	}
	if what := strings.TrimSpace(strings.Join(parts, " | ")); what != "" {
		return what
	}
	return "(refused before a program was chosen)"
}

// probes lists the probe specs of a bpftrace program (the last argument):
// the lines that open a block, without the timer and END the broker adds.
func probes(argv []string) string {
	if len(argv) == 0 {
		return "(no program)"
	}
	var out []string
	for _, line := range strings.Split(argv[len(argv)-1], "\n") {
		if !strings.HasSuffix(line, "{") || strings.HasPrefix(line, "\t") || strings.HasPrefix(line, "interval:") || strings.HasPrefix(line, "END") {
			continue
		}
		out = append(out, strings.Fields(line)[0])
	}
	if len(out) == 0 {
		return "(no probe)"
	}
	return strings.Join(out, ", ")
}
