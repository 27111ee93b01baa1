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

// maxLoggedArgv bounds what one log line carries of a request's argv.
const (
	maxLoggedArgs    = 32
	maxLoggedArgLen  = 256
	noRule           = "no rule"
	truncationMarker = "…"
)

// audit is what a handler tells the decision log about its request.
type audit struct {
	program  string
	argv     []string
	decision string
	ruleID   string
	reason   string
}

type auditKey struct{}

// auditFrom returns the request's audit record; handlers fill it in.
func auditFrom(ctx context.Context) *audit {
	if a, ok := ctx.Value(auditKey{}).(*audit); ok {
		return a
	}
	return &audit{}
}

func withAudit(ctx context.Context) (context.Context, *audit) {
	a := &audit{}
	return context.WithValue(ctx, auditKey{}, a), a
}

// decisionLog writes one structured line per request and per refused
// connection.
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
	attrs := append(peerAttrs(p), "rpc", rpc,
		"decision", decision, "rule", rule, "policy_sha256", d.policy(),
		"duration_ms", float64(dur.Microseconds())/1000)
	if a.program != "" {
		attrs = append(attrs, "program", a.program, "argv", truncateArgv(a.argv))
	}
	if a.reason != "" {
		attrs = append(attrs, "reason", a.reason)
	}
	if err != nil {
		attrs = append(attrs, "error", err.Error())
	}
	d.log.Info("decision", attrs...)
}

func (d decisionLog) refusedConnection(p peerauth.Peer, reason error) {
	d.log.Warn("decision", append(peerAttrs(p), "rpc", "connect", "decision", decisionDeny, "rule", noRule,
		"policy_sha256", d.policy(), "reason", redact.String(reason.Error()))...)
}

// truncateArgv keeps log lines bounded whatever the request carried, after
// removing secrets (a password on a command line must not reach the log).
func truncateArgv(argv []string) []string {
	n := min(len(argv), maxLoggedArgs)
	kept := redact.Argv(argv[:n:n])
	out := make([]string, 0, n+1)
	for _, arg := range kept {
		if len(arg) > maxLoggedArgLen {
			arg = strings.ToValidUTF8(arg[:maxLoggedArgLen], "") + truncationMarker
		}
		out = append(out, arg)
	}
	if len(argv) > n {
		out = append(out, truncationMarker)
	}
	return out
}
