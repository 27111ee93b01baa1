package investigate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// Message is one chat message as NannyAPI's proxy takes it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Model answers one turn of an investigation (NannyAPI's proxy).
type Model interface {
	Turn(ctx context.Context, investigationID string, messages []Message) (content string, err error)
}

// Reporter marks an investigation failed with the reason, so it does not
// stay pending forever.
type Reporter interface {
	Fail(ctx context.Context, investigationID, reason string) error
}

// Tracer runs the eBPF programs of one turn and returns the reference
// agent's keys (ebpf_results, executed_ebpf_programs, ebpf_evidence_summary)
// for the turn's message.
type Tracer interface {
	Run(ctx context.Context, programs []json.RawMessage) map[string]any
}

// Loop drives one investigation.
type Loop struct {
	Model    Model
	Commands *Commands
	// Tracer may be nil: programs are then answered as unavailable.
	Tracer   Tracer
	Reporter Reporter
	// MaxTurns bounds the conversation; the reference agent had no cap.
	MaxTurns int
	// Timeout bounds the whole investigation.
	Timeout time.Duration
	// Progress, if set, receives each step for the CLI.
	Progress func(*workerv1.DiagnoseResponse)
}

// Defaults for a Loop that leaves them zero.
const (
	DefaultMaxTurns = 12
	DefaultTimeout  = 30 * time.Minute
)

// ErrNoResolution is returned when the turns run out.
var ErrNoResolution = errors.New("no resolution")

// Run converses until the model resolves the issue. On any failure it
// reports the investigation failed with the reason before returning.
func (l *Loop) Run(ctx context.Context, investigationID, firstMessage string) (*Reply, error) {
	timeout := l.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	reply, err := l.converse(ctx, investigationID, firstMessage)
	if err != nil && l.Reporter != nil {
		// The investigation's own context may be spent; the report gets its own.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer rcancel()
		if rerr := l.Reporter.Fail(rctx, investigationID, "nannyagent: "+err.Error()); rerr != nil {
			err = fmt.Errorf("%w (and reporting the failure failed: %v)", err, rerr)
		}
	}
	return reply, err
}

func (l *Loop) converse(ctx context.Context, id, first string) (*Reply, error) {
	maxTurns := l.MaxTurns
	if maxTurns <= 0 {
		maxTurns = DefaultMaxTurns
	}
	messages := []Message{{Role: "user", Content: first}}
	corrected := false
	for turn := 1; turn <= maxTurns; turn++ {
		content, err := l.Model.Turn(ctx, id, messages)
		if err != nil {
			return nil, fmt.Errorf("turn %d: %w", turn, err)
		}
		reply, perr := ParseReply(content)
		messages = append(messages, Message{Role: "assistant", Content: reply.Content})
		switch {
		case perr == nil && reply.Kind == ReplyResolution:
			l.progress(&workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Resolution{Resolution: &workerv1.DiagnoseResolution{
				RootCause: reply.RootCause, ResolutionPlan: reply.ResolutionPlan, Confidence: reply.Confidence, EbpfEvidence: reply.EBPFEvidence,
			}}})
			return &reply, nil
		case perr != nil:
			if corrected {
				return nil, fmt.Errorf("turn %d: unusable answer: %w", turn, perr)
			}
			corrected = true
			messages = append(messages, Message{Role: "user", Content: correction(perr)})
			continue
		}
		corrected = false
		next, err := l.runTurn(ctx, turn, reply)
		if err != nil {
			return nil, err
		}
		messages = append(messages, Message{Role: "user", Content: next})
	}
	return nil, fmt.Errorf("%w after %d turns", ErrNoResolution, maxTurns)
}

// runTurn runs the turn's commands and traces at the same time and builds
// the next user message.
func (l *Loop) runTurn(ctx context.Context, turn int, reply Reply) (string, error) {
	var (
		results []CommandResult
		ebpf    map[string]any
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		if len(reply.Programs) > 0 {
			ebpf = l.traces(ctx, reply.Programs)
		}
	}()
	results = l.Commands.Run(ctx, reply.Commands)
	<-done
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("turn %d: %w", turn, err)
	}
	l.progress(stepEvent(turn, reply, results))
	return TurnMessage(results, ebpf)
}

func (l *Loop) traces(ctx context.Context, programs []json.RawMessage) map[string]any {
	if l.Tracer != nil {
		return l.Tracer.Run(ctx, programs)
	}
	summary := make([]string, len(programs))
	for i := range programs {
		summary[i] = fmt.Sprintf("program %d: not run (eBPF tracing is not available)", i)
	}
	return map[string]any{"ebpf_results": []any{}, "executed_ebpf_programs": 0, "ebpf_evidence_summary": summary}
}

func (l *Loop) progress(ev *workerv1.DiagnoseResponse) {
	if l.Progress != nil {
		l.Progress(ev)
	}
}

// correction asks the model once to answer in the agreed format.
func correction(err error) string {
	return fmt.Sprintf("Your last answer could not be used (%v). Answer with one JSON object: "+
		`{"response_type":"diagnostic","reasoning":"…","commands":["…"],"ebpf_programs":[]} to gather evidence, or `+
		`{"response_type":"resolution","root_cause":"…","resolution_plan":"…","confidence":"High|Medium|Low"} to conclude.`, err)
}

// TurnMessage is the JSON the next user message carries: the reference
// agent's keys (command_results, executed_commands, and the eBPF keys when
// there were programs), pretty-printed as it did.
func TurnMessage(results []CommandResult, ebpf map[string]any) (string, error) {
	msg := map[string]any{"command_results": results, "executed_commands": len(results)}
	if results == nil {
		msg["command_results"] = []CommandResult{}
	}
	for k, v := range ebpf {
		msg[k] = v
	}
	out, err := json.MarshalIndent(msg, "", "  ")
	if err != nil {
		return "", fmt.Errorf("encode turn results: %w", err)
	}
	return string(out), nil
}

func stepEvent(turn int, reply Reply, results []CommandResult) *workerv1.DiagnoseResponse {
	step := &workerv1.DiagnoseStep{Turn: int32(turn), Reasoning: reply.Reasoning}
	for _, r := range results {
		reason := r.Error
		step.Items = append(step.Items, &workerv1.StepItem{Kind: "command", Text: r.Command, Denied: r.Denied, Reason: reason, ExitCode: int32(r.ExitCode)})
	}
	for range reply.Programs {
		step.Items = append(step.Items, &workerv1.StepItem{Kind: "trace"})
	}
	return &workerv1.DiagnoseResponse{Event: &workerv1.DiagnoseResponse_Step{Step: step}}
}
