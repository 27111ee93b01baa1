package broker

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/redact"
)

// Decision values written to the decision log.
const (
	decisionAllow = "allow"
	decisionDeny  = "deny"
	decisionError = "error"
)

// Bounds on what one log line carries of a request.
const (
	maxLoggedArgs    = 32
	maxLoggedArgLen  = 256
	maxLoggedText    = 1024
	noRule           = "no rule"
	truncationMarker = "…"
)

// audit is what a handler tells the decision log about its request.
type audit struct {
	// stages are the argv vectors the request names or runs, each with
	// its program first: redaction needs the program to know which
	// options carry secrets (mysql -p, sshpass -p, curl -u).
	stages   [][]string
	decision string
	ruleID   string
	reason   string
	// policy is the policy that judged the request.
	policy *loadedPolicy
}

type auditKey struct{}

// auditFrom returns the request's audit record; handlers fill it in.
func auditFrom(ctx context.Context) *audit {
	if a, ok := ctx.Value(auditKey{}).(*audit); ok {
		return a
	}
	return &audit{}
}

func withAudit(ctx context.Context, lp *loadedPolicy) (context.Context, *audit) {
	a := &audit{policy: lp}
	return context.WithValue(ctx, auditKey{}, a), a
}

// decisionLog writes one structured line per request and per refused
// connection. Everything it writes of a request passes through redact.
type decisionLog struct {
	log    *slog.Logger
	policy func() string
}

func (d decisionLog) request(p peerauth.Peer, rpc string, a *audit, dur time.Duration, err error) {
	decision := a.decision
	if decision == "" {
		decision = decisionAllow
		if err != nil {
			decision = decisionError
		}
	}
	rule := a.ruleID
	if rule == "" {
		rule = noRule
	}
	sha := ""
	if a.policy != nil {
		sha = a.policy.policy.SHA256()
	} else {
		sha = d.policy()
	}
	attrs := append(peerAttrs(p), "rpc", redactText(rpc),
		"decision", decision, "rule", rule, "policy_sha256", sha,
		"duration_ms", float64(dur.Microseconds())/1000)
	if len(a.stages) > 0 {
		program, argv := loggedStages(a.stages)
		attrs = append(attrs, "program", program, "argv", argv)
	}
	if a.reason != "" {
		attrs = append(attrs, "reason", redactText(a.reason))
	}
	if err != nil {
		attrs = append(attrs, "error", redactText(err.Error()))
	}
	d.log.Info("decision", attrs...)
}

func (d decisionLog) refusedConnection(p peerauth.Peer, reason error) {
	d.log.Warn("decision", append(peerAttrs(p), "rpc", "connect", "decision", decisionDeny, "rule", noRule,
		"policy_sha256", d.policy(), "reason", redactText(reason.Error()))...)
}

// loggedStages is the request for the log: the programs joined by "|", and
// the arguments of every stage joined by "|". Each stage is redacted with
// its program, then the whole is bounded.
func loggedStages(stages [][]string) (string, []string) {
	var programs, argv []string
	for i, st := range stages {
		if len(programs) == maxLoggedArgs {
			programs = append(programs, truncationMarker)
			break
		}
		if len(st) == 0 {
			continue
		}
		st = redact.Argv(st[:min(len(st), maxLoggedArgs+1):min(len(st), maxLoggedArgs+1)])
		programs = append(programs, clip(st[0], maxLoggedArgLen))
		if i > 0 {
			argv = append(argv, "|")
		}
		argv = append(argv, st[1:]...)
	}
	return strings.Join(programs, "|"), truncateArgv(argv)
}

// truncateArgv keeps log lines bounded whatever the request carried.
func truncateArgv(argv []string) []string {
	n := min(len(argv), maxLoggedArgs)
	out := make([]string, 0, n+1)
	for _, arg := range argv[:n] {
		out = append(out, clip(arg, maxLoggedArgLen))
	}
	if len(argv) > n {
		out = append(out, truncationMarker)
	}
	return out
}

// redactText removes secrets from text the log writes (a reason quoting a
// denied path, an error quoting a tool), and bounds it.
func redactText(s string) string {
	return clip(redact.String(clip(s, 4*maxLoggedText)), maxLoggedText)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + truncationMarker
}

// policyOf is the policy that judges the request in ctx: the one in force
// when it arrived, also if a reload lands while it is served.
func policyOf(ctx context.Context, s *Server) *loadedPolicy {
	if a, ok := ctx.Value(auditKey{}).(*audit); ok && a.policy != nil {
		return a.policy
	}
	return s.policies.current()
}
