package broker

import (
	"context"
	"strings"

	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// RunTrace runs one bpftrace program that the broker writes from the spec.
// A refusal is a normal response (Refused, with the reason); the program
// and the rules that allowed each probe go to the decision log.
func (s *Server) RunTrace(ctx context.Context, req *brokerv1.RunTraceRequest) (*brokerv1.RunTraceResponse, error) {
	lp := policyOf(ctx, s)
	a := auditFrom(ctx)
	bpftrace := lp.policy.Traces().Bpftrace
	spec := req.GetSpec()
	a.stages = [][]string{{bpftrace, "-f", "json", "-e", spec.GetKind().String() + " " + spec.GetTarget()}}
	plan, planErr := lp.caps.tracer.Config().Plan(spec)
	if planErr == nil {
		a.stages = [][]string{{bpftrace, "-f", "json", "-e", plan.Program}}
		a.ruleID = traceRuleIDs(lp.caps.traceRules, plan.Matched)
	}
	resp, err := lp.caps.tracer.Run(ctx, spec)
	if err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if resp.GetRefused() {
		a.decision, a.reason = decisionDeny, resp.GetError()
	} else {
		a.decision = decisionAllow
	}
	return resp, nil
}

func traceRuleIDs(rules map[string]string, matched []string) string {
	var ids []string
	seen := map[string]bool{}
	for _, m := range matched {
		id := rules[m]
		if id == "" {
			id = m
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	return strings.Join(ids, ",")
}
