package investigate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
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
// for the turn's message, and one outcome per program for the person.
type Tracer interface {
	Run(ctx context.Context, programs []json.RawMessage) TraceRun
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
	// Progress, if set, receives each event for the CLI, in order, from
	// the goroutine that called Run.
	Progress func(Event)
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
			l.progress(Resolved{Reply: reply})
			return &reply, nil
		case perr != nil:
			if corrected {
				return nil, fmt.Errorf("turn %d: unusable answer: %w", turn, perr)
			}
			corrected = true
			l.progress(Retried{Turn: turn, Problem: perr.Error()})
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
// Events go out as each part finishes: the commands (quick) before the
// traces (seconds), each in the model's order.
func (l *Loop) runTurn(ctx context.Context, turn int, reply Reply) (string, error) {
	l.progress(TurnStarted{Turn: turn, Reasoning: reply.Reasoning, Commands: len(reply.Commands), Traces: len(reply.Programs)})
	var (
		traces TraceRun
		done   = make(chan struct{})
	)
	go func() {
		defer close(done)
		if len(reply.Programs) > 0 {
			traces = l.traces(ctx, reply.Programs)
		}
	}()
	results := l.Commands.Run(ctx, reply.Commands)
	for _, r := range results {
		l.progress(CommandDone{Turn: turn, Result: r})
	}
	<-done
	for _, t := range traces.Outcomes {
		l.progress(TraceDone{Turn: turn, Trace: t})
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("turn %d: %w", turn, err)
	}
	return TurnMessage(results, traces.Fields)
}

func (l *Loop) traces(ctx context.Context, programs []json.RawMessage) TraceRun {
	if l.Tracer != nil {
		return l.Tracer.Run(ctx, programs)
	}
	return unavailableTraces(programs)
}

func (l *Loop) progress(ev Event) {
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
