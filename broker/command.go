package broker

import (
	"context"
	"errors"
	"strings"

	"github.com/nannyai/nannyagent/broker/execute"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
)

// RunCommand judges a pipeline against the policy and, when every stage is
// allowed, runs it. A hand-built request is judged exactly like one the
// worker's parser produced: the broker never trusts the worker's view. A
// denial, or a run refused before anything started (a path that does not
// resolve safely, a limit), is a normal response with the reason.
func (s *Server) RunCommand(ctx context.Context, req *brokerv1.RunCommandRequest) (*brokerv1.RunCommandResponse, error) {
	lp := policyOf(ctx, s)
	a := auditFrom(ctx)
	// The request's shape was measured before it was decoded (inbound):
	// the stages here are within the policy's counts.
	stages := make([]policy.Stage, len(req.GetStages()))
	for i, st := range req.GetStages() {
		stages[i] = policy.Stage{Argv: st.GetArgv(), StdoutToNull: st.GetStdoutToNull(), StderrToNull: st.GetStderrToNull(), StderrToStdout: st.GetStderrToStdout()}
	}
	a.stages = stageArgvs(stages)
	decision := lp.policy.Evaluate(stages)
	out := &brokerv1.RunCommandResponse{Id: req.GetId(), Decision: decisionProto(decision, lp.policy.SHA256())}
	a.ruleID = ruleIDs(decision)
	if !decision.Allowed {
		a.decision, a.reason = decisionDeny, decision.Reason
		out.ExitCode = -1
		return out, nil
	}
	// Log what really runs: the policy's absolute programs.
	approved := make([][]string, len(decision.Stages))
	for i, sd := range decision.Stages {
		approved[i] = sd.Argv
	}
	a.stages = approved
	res, err := s.runner.Run(ctx, execute.Request{Stages: executeStages(decision, stages), Limits: executeLimits(lp.policy.Limits()), Judge: lp.policy})
	if err != nil {
		return refusedRun(out, a, err), nil
	}
	a.decision = decisionAllow
	if len(res.MissingOperands) > 0 {
		a.reason = "no such file: " + strings.Join(res.MissingOperands, ", ") + " (the tool reported it itself)"
	}
	ran := res.Proto()
	ran.Id, ran.Decision = out.Id, out.Decision
	return ran, nil
}

// refusedRun turns a run that never started into a denial when the cause
// is the request (a path, a limit, too many runs) and into an error result
// otherwise.
func refusedRun(out *brokerv1.RunCommandResponse, a *audit, err error) *brokerv1.RunCommandResponse {
	out.ExitCode = -1
	switch {
	case errors.Is(err, execute.ErrNotInstalled):
		// What a shell says: the program is missing here, exit 127. The
		// policy allowed it; the model can try another tool.
		out.ExitCode = 127
		out.Stderr = []byte(err.Error() + "\n")
		a.decision, a.reason = decisionAllow, err.Error()
	case errors.Is(err, execute.ErrPathRefused), errors.Is(err, execute.ErrLimit),
		errors.Is(err, execute.ErrInvalid), errors.Is(err, execute.ErrBusy):
		out.Decision.Allowed = false
		out.Decision.Reason = err.Error()
		a.decision, a.reason = decisionDeny, err.Error()
	default:
		out.Error = err.Error()
		a.decision, a.reason = decisionError, err.Error()
	}
	return out
}

func executeStages(d policy.Decision, stages []policy.Stage) []execute.Stage {
	out := make([]execute.Stage, len(d.Stages))
	for i, sd := range d.Stages {
		paths := make([]execute.PathOperand, len(sd.Paths))
		for j, p := range sd.Paths {
			paths[j] = execute.PathOperand{Index: p.Index, Prefix: p.Prefix, Path: p.Path, Roots: p.Roots,
				Open: openModes[p.Open], CharDevices: p.CharDevices}
		}
		out[i] = execute.Stage{
			Program: sd.Program, Argv: sd.Argv, RunAs: sd.RunAs, Paths: paths, Writes: sd.Writes,
			InspectsProcesses: sd.InspectsProcesses,
			StdoutToNull:      stages[i].StdoutToNull, StderrToNull: stages[i].StderrToNull, StderrToStdout: stages[i].StderrToStdout,
		}
	}
	return out
}

// openModes maps the policy's open modes onto the runner's; an unset
// mode stays unset and the runner refuses it.
var openModes = map[policy.OpenMode]execute.OpenMode{
	policy.OpenFD: execute.OpenFD, policy.OpenCheckOnly: execute.OpenCheckOnly, policy.OpenDevice: execute.OpenDevice,
}

func executeLimits(l policy.Limits) execute.Limits {
	return execute.Limits{
		Timeout:     l.CommandTimeout,
		StdoutBytes: int(l.StdoutBytes),
		StderrBytes: int(l.StderrBytes),
		MaxStages:   l.PipelineStages,
		MaxArgs:     l.ArgvCount,
		MaxArgBytes: l.ArgvBytes,
		ChildTasks:  l.ChildTasks,
		ChildMemory: l.ChildMemory,
	}
}

func decisionProto(d policy.Decision, sha string) *brokerv1.Decision {
	out := &brokerv1.Decision{Allowed: d.Allowed, Reason: d.Reason, PolicySha256: sha}
	for _, sd := range d.Stages {
		out.Stages = append(out.Stages, &brokerv1.StageDecision{
			Allowed: sd.Allowed, RuleId: sd.RuleID, Reason: sd.Reason, Program: sd.Program, Argv: sd.Argv, RunAs: sd.RunAs,
		})
	}
	return out
}

func ruleIDs(d policy.Decision) string {
	ids := make([]string, 0, len(d.Stages))
	for _, sd := range d.Stages {
		if sd.RuleID != "" {
			ids = append(ids, sd.RuleID)
		}
	}
	return strings.Join(ids, "|")
}

// stageArgvs is the argv of every stage, program first, for the log.
func stageArgvs(stages []policy.Stage) [][]string {
	out := make([][]string, len(stages))
	for i, st := range stages {
		out[i] = st.Argv
	}
	return out
}
