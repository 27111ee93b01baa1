package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/policy/cmdline"
	"github.com/nannyai/nannyagent/redact"
	"github.com/nannyai/nannyagent/worker/ebpf"
	"github.com/nannyai/nannyagent/worker/investigate"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// minIssueLength is the backend's own minimum (10 characters).
const minIssueLength = 10

// Diagnose creates an investigation for the CLI's issue and runs it,
// streaming each step.
func (w *Worker) Diagnose(ctx context.Context, req *workerv1.DiagnoseRequest, send func(*workerv1.DiagnoseResponse) error) error {
	issue := strings.TrimSpace(req.GetIssue())
	if len(issue) < minIssueLength || len(strings.Fields(issue)) < 3 {
		return errors.New("describe the issue in at least 10 characters and 3 words, e.g. \"PostgreSQL queries are slow\"")
	}
	if !w.session.registered() {
		return errors.New("this host is not registered: run `nannyagent register` as root first")
	}
	priority := req.GetPriority()
	if priority == "" {
		priority = "medium"
	}
	done, err := w.beginOwnInvestigation()
	if err != nil {
		return err
	}
	created, err := w.session.client().CreateInvestigation(ctx, w.session.agentID(), issue, priority)
	if err != nil {
		_ = done("")
		return fmt.Errorf("create investigation: %w", err)
	}
	if err := done(created.ID); err != nil {
		w.log.Warn("could not record the investigation as ours", "investigation", created.ID, "error", err.Error())
	}
	started := &workerv1.DiagnoseStarted{InvestigationId: created.ID, Issue: issue,
		MaxTurns: int32(w.maxTurns()), Timeout: durationpb.New(w.investigationTimeout())}
	if err := send(&workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Started{Started: started}}); err != nil {
		return err
	}
	lines := min(max(int(req.GetOutputLines()), 0), maxOutputLines)
	_, err = w.investigate(ctx, created.ID, issue, originCLI, func(ev investigate.Event) {
		if pb := diagnoseEvent(ev, lines); pb != nil {
			// A CLI that went away cancels ctx; the loop notices there.
			_ = send(pb)
		}
	})
	return err
}

// maxOutputLines caps the output lines one command event carries.
const maxOutputLines = 50

func (w *Worker) maxTurns() int {
	if w.cfg.InvestigationMaxTurns > 0 {
		return w.cfg.InvestigationMaxTurns
	}
	return investigate.DefaultMaxTurns
}

func (w *Worker) investigationTimeout() time.Duration {
	if w.cfg.InvestigationTimeout > 0 {
		return w.cfg.InvestigationTimeout
	}
	return investigate.DefaultTimeout
}

// investigate runs an existing investigation to its end; the realtime
// stream's investigations come here too.
func (w *Worker) investigate(ctx context.Context, id, issue, origin string, progress func(investigate.Event)) (*investigate.Reply, error) {
	w.recent.begin(id, issue, origin, time.Now())
	bctx, cancel := context.WithTimeout(ctx, w.cfg.BrokerTimeout)
	sample, err := w.broker.CollectMetrics(bctx, &brokerv1.CollectMetricsRequest{})
	cancel()
	if err != nil {
		sample = &brokerv1.CollectMetricsResponse{}
		w.log.Warn("host facts for the investigation unavailable", "investigation", id, "error", err.Error())
	}
	client := w.session.client()
	loop := &investigate.Loop{
		Model: model{client},
		Commands: &investigate.Commands{
			Broker: w.broker, Parse: parseStages, Redact: redact.String, Parallel: commandParallel,
		},
		Tracer:   tracer{w.broker},
		Reporter: reporter{client},
		MaxTurns: w.cfg.InvestigationMaxTurns,
		Timeout:  w.cfg.InvestigationTimeout,
		Progress: progress,
	}
	reply, err := loop.Run(ctx, id, investigate.FirstMessage(sample, issue))
	w.recent.end(id, reply, err, time.Now())
	if err != nil {
		w.log.Warn("investigation failed", "investigation", id, "error", err.Error())
		return nil, err
	}
	w.health.record("investigation", time.Now())
	w.log.Info("investigation resolved", "investigation", id, "confidence", reply.Confidence)
	return reply, nil
}

// commandParallel bounds one turn's commands in flight; the broker has its
// own, lower or higher, limit.
const commandParallel = 8

// parseStages is the command-line parser the broker also uses: a refused line comes back
// to the model with the parser's reason.
func parseStages(line string) ([]*brokerv1.Stage, error) {
	stages, err := cmdline.Parse(line)
	if err != nil {
		var se *cmdline.SyntaxError
		if errors.As(err, &se) {
			return nil, errors.New(strings.TrimPrefix(se.Error(), "denied: "))
		}
		return nil, err
	}
	out := make([]*brokerv1.Stage, len(stages))
	for i, s := range stages {
		out[i] = &brokerv1.Stage{Argv: s.Argv, StdoutToNull: s.StdoutToNull, StderrToNull: s.StderrToNull, StderrToStdout: s.StderrToStdout}
	}
	return out, nil
}

// model adapts NannyAPI's proxy to the loop. It is the one place every
// message leaves for the model, so it redacts every message there: command
// output, trace results, the host's facts and the issue text alike.
type model struct{ c *nannyapi.Client }

func (m model) Turn(ctx context.Context, id string, msgs []investigate.Message) (string, error) {
	chat := make([]nannyapi.ChatMessage, len(msgs))
	for i, msg := range msgs {
		chat[i] = nannyapi.ChatMessage{Role: msg.Role, Content: redact.String(msg.Content)}
	}
	resp, err := m.c.AITurn(ctx, id, chat)
	if err != nil {
		return "", err
	}
	return resp.Content(), nil
}

// reporter marks failed investigations on the backend.
type reporter struct{ c *nannyapi.Client }

func (r reporter) Fail(ctx context.Context, id, reason string) error {
	return r.c.UpdateInvestigation(ctx, id, nannyapi.InvestigationUpdate{Status: nannyapi.StatusFailed, ResolutionPlan: reason})
}

// tracer runs a turn's eBPF programs through the broker.
type tracer struct{ broker ebpf.Tracer }

func (t tracer) Run(ctx context.Context, raw []json.RawMessage) investigate.TraceRun {
	programs := make([]ebpf.Program, len(raw))
	for i, item := range raw {
		if err := json.Unmarshal(item, &programs[i]); err != nil {
			programs[i].Problems = append(programs[i].Problems, err.Error())
		}
	}
	turn := ebpf.RunAll(ctx, t.broker, programs, ebpf.DefaultParallel)
	run := investigate.TraceRun{Fields: turn.Fields()}
	for _, r := range turn.Results {
		run.Outcomes = append(run.Outcomes, traceOutcome(r))
	}
	return run
}
