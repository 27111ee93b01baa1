package fakeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
)

// AI answers model proxy turns in place of TensorZero.
type AI interface {
	// Turn returns the assistant content for a turn (a string; diagnostic
	// or resolution JSON, or plain text). An error becomes the backend's
	// 400 "TensorZero error: …".
	Turn(ctx context.Context, t AITurn) (string, error)
}

// Message is one chat message as the agent sent it.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// AITurn is one proxy turn.
type AITurn struct {
	InvestigationID string
	AgentID         string
	// Round counts this investigation's turns from 1.
	Round    int
	Model    string
	Messages []Message
}

// AIFunc adapts a function to AI.
type AIFunc func(ctx context.Context, t AITurn) (string, error)

// Turn calls f.
func (f AIFunc) Turn(ctx context.Context, t AITurn) (string, error) { return f(ctx, t) }

var errNoAI = errors.New("fakeapi: no scripted AI answer configured")

// ScriptedAI answers from queues: each investigation gets its own queue if
// one was set with For, else its own copy of the default sequence. When a
// queue runs out the turn fails.
type ScriptedAI struct {
	mu       sync.Mutex
	defaults []string
	queues   map[string][]string
	pos      map[string]int
}

// NewScriptedAI answers every investigation with turns, in order.
func NewScriptedAI(turns ...string) *ScriptedAI {
	return &ScriptedAI{defaults: turns, queues: map[string][]string{}, pos: map[string]int{}}
}

// For sets the queue of one investigation.
func (a *ScriptedAI) For(investigationID string, turns ...string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queues[investigationID] = append([]string(nil), turns...)
	a.pos[investigationID] = 0
}

// Turn answers the next content of the investigation's queue.
func (a *ScriptedAI) Turn(_ context.Context, t AITurn) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	q, ok := a.queues[t.InvestigationID]
	if !ok {
		q = a.defaults
	}
	i := a.pos[t.InvestigationID]
	if i >= len(q) {
		return "", fmt.Errorf("fakeapi: no scripted answer left for investigation %s (turn %d)", t.InvestigationID, t.Round)
	}
	a.pos[t.InvestigationID] = i + 1
	return q[i], nil
}

// Diagnostic builds a diagnostic content with command objects, as the
// backend's documented schema shows them.
func Diagnostic(reasoning string, commands ...string) string {
	type cmd struct {
		ID          string `json:"id"`
		Command     string `json:"command"`
		Description string `json:"description"`
	}
	cs := make([]cmd, 0, len(commands))
	for i, c := range commands {
		cs = append(cs, cmd{ID: fmt.Sprintf("cmd_%d", i+1), Command: c, Description: c})
	}
	data, _ := json.Marshal(map[string]any{"response_type": "diagnostic", "reasoning": reasoning,
		"commands": cs, "ebpf_programs": []any{}})
	return string(data)
}

// Resolution builds a resolution content; a non-empty plan completes the
// investigation.
func Resolution(rootCause, plan string) string {
	data, _ := json.Marshal(map[string]string{"response_type": "resolution", "root_cause": rootCause,
		"resolution_plan": plan, "confidence": "High", "ebpf_evidence": ""})
	return string(data)
}

// LoadScriptedAI reads a JSON file:
//
//	{"turns": [<content>, …], "investigations": {"<id>": [<content>, …]}}
//
// where each content is a string (sent as is) or a JSON value (sent as its
// compact JSON text, e.g. a diagnostic object).
func LoadScriptedAI(path string) (*ScriptedAI, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ai script: %w", err)
	}
	var f struct {
		Turns          []json.RawMessage            `json:"turns"`
		Investigations map[string][]json.RawMessage `json:"investigations"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("ai script %s: %w", path, err)
	}
	turns, err := contents(f.Turns)
	if err != nil {
		return nil, fmt.Errorf("ai script %s: %w", path, err)
	}
	ai := NewScriptedAI(turns...)
	for id, raw := range f.Investigations {
		t, err := contents(raw)
		if err != nil {
			return nil, fmt.Errorf("ai script %s: investigation %s: %w", path, id, err)
		}
		ai.For(id, t...)
	}
	return ai, nil
}

func contents(raw []json.RawMessage) ([]string, error) {
	out := make([]string, 0, len(raw))
	for i, r := range raw {
		var s string
		if json.Unmarshal(r, &s) == nil {
			out = append(out, s)
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, r); err != nil {
			return nil, fmt.Errorf("turn %d: %w", i, err)
		}
		out = append(out, buf.String())
	}
	return out, nil
}

// DemoAI is the standalone fakeapi command's default script: one
// diagnostic turn, then a resolution. (`make demo` scripts its own model.)
func DemoAI() *ScriptedAI {
	return NewScriptedAI(
		Diagnostic("Fake TensorZero: need basic load and memory data first.", "uptime", "free -m"),
		Resolution("Fake TensorZero: the host is idle; nothing is wrong.", "1. Nothing to do.\n2. Watch the load average."),
	)
}
