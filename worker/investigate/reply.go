// Package investigate runs one investigation: it sends the issue and the
// host's facts to the model, runs the commands and traces the model asks for
// through the broker, sends the evidence back, and stops at a resolution, a
// turn cap or a deadline. A command the policy refuses comes back to the
// model as "denied: <reason>" so it can rephrase. A person watching gets
// an Event for each step: the model's reasoning, each command's decision
// and outcome, each trace's numbers or failure, and the resolution.
package investigate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// ReplyKind is what a model answer asks for.
type ReplyKind int

const (
	// ReplyOther is anything that is neither a diagnostic nor a resolution.
	ReplyOther ReplyKind = iota
	// ReplyDiagnostic asks for commands and traces.
	ReplyDiagnostic
	// ReplyResolution ends the investigation.
	ReplyResolution
)

// Command is one command the model asked for.
type Command struct {
	ID          string
	Text        string
	Description string
}

// Reply is a parsed model answer.
type Reply struct {
	Kind           ReplyKind
	Reasoning      string
	Commands       []Command
	Programs       []json.RawMessage
	RootCause      string
	ResolutionPlan string
	Confidence     string
	EBPFEvidence   string
	// Content is the answer with any code fence removed; it goes back into
	// the conversation as the assistant's message.
	Content string
}

// Limits on what one answer may ask for, so a hostile answer cannot make
// the worker queue unbounded work.
const (
	maxCommands    = 32
	maxPrograms    = 8
	maxCommandText = 4096
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

type wireReply struct {
	ResponseType   string            `json:"response_type"`
	Reasoning      string            `json:"reasoning"`
	Commands       []json.RawMessage `json:"commands"`
	EBPFPrograms   []json.RawMessage `json:"ebpf_programs"`
	RootCause      string            `json:"root_cause"`
	ResolutionPlan string            `json:"resolution_plan"`
	Confidence     json.RawMessage   `json:"confidence"`
	EBPFEvidence   json.RawMessage   `json:"ebpf_evidence"`
}

type wireCommand struct {
	ID          string `json:"id"`
	Command     string `json:"command"`
	Description string `json:"description"`
}

// ParseReply reads a model answer. Commands may be strings (what the
// reference agent accepts) or objects {id, command, description} (what the
// backend's docs and fake model send). An answer that is not JSON, or whose
// response_type is neither diagnostic nor resolution, is ReplyOther with an
// error saying why.
func ParseReply(content string) (Reply, error) {
	r := Reply{Content: stripFence(content)}
	var w wireReply
	dec := json.NewDecoder(strings.NewReader(r.Content))
	if err := dec.Decode(&w); err != nil {
		return r, fmt.Errorf("not a JSON object: %w", err)
	}
	switch w.ResponseType {
	case "diagnostic":
		return parseDiagnostic(r, w)
	case "resolution":
		return parseResolution(r, w)
	default:
		return r, fmt.Errorf("response_type %q is neither diagnostic nor resolution", w.ResponseType)
	}
}

func parseDiagnostic(r Reply, w wireReply) (Reply, error) {
	r.Kind = ReplyDiagnostic
	r.Reasoning = w.Reasoning
	if len(w.Commands) > maxCommands {
		return r, fmt.Errorf("%d commands in one answer; at most %d", len(w.Commands), maxCommands)
	}
	if len(w.EBPFPrograms) > maxPrograms {
		return r, fmt.Errorf("%d eBPF programs in one answer; at most %d", len(w.EBPFPrograms), maxPrograms)
	}
	seen := map[string]bool{}
	for i, raw := range w.Commands {
		c, err := parseCommand(raw, i+1)
		if err != nil {
			return r, fmt.Errorf("commands[%d]: %w", i, err)
		}
		if seen[c.ID] {
			c.ID = "cmd_" + strconv.Itoa(i+1)
		}
		seen[c.ID] = true
		r.Commands = append(r.Commands, c)
	}
	r.Programs = w.EBPFPrograms
	if len(r.Commands) == 0 && len(r.Programs) == 0 {
		return r, errors.New("a diagnostic answer with no commands and no ebpf_programs")
	}
	return r, nil
}

func parseCommand(raw json.RawMessage, n int) (Command, error) {
	c := Command{ID: "cmd_" + strconv.Itoa(n)}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		c.Text = text
	} else {
		var wc wireCommand
		if err := json.Unmarshal(raw, &wc); err != nil {
			return c, errors.New("neither a string nor an object {id, command, description}")
		}
		c.Text, c.Description = wc.Command, wc.Description
		if idPattern.MatchString(wc.ID) {
			c.ID = wc.ID
		}
	}
	c.Text = strings.TrimSpace(c.Text)
	switch {
	case c.Text == "":
		return c, errors.New("empty command")
	case len(c.Text) > maxCommandText:
		return c, fmt.Errorf("command longer than %d bytes", maxCommandText)
	}
	return c, nil
}

func parseResolution(r Reply, w wireReply) (Reply, error) {
	r.Kind = ReplyResolution
	r.RootCause = w.RootCause
	r.ResolutionPlan = w.ResolutionPlan
	r.Confidence = looseString(w.Confidence)
	r.EBPFEvidence = looseString(w.EBPFEvidence)
	if strings.TrimSpace(r.ResolutionPlan) == "" {
		return r, errors.New("a resolution without a resolution_plan")
	}
	return r, nil
}

// looseString accepts a string or renders any other JSON value as text.
func looseString(raw json.RawMessage) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// stripFence removes a surrounding ``` or ```json fence, as models add them.
func stripFence(s string) string {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "```") {
		return s
	}
	s = strings.TrimPrefix(s, "```")
	if nl := strings.IndexByte(s, '\n'); nl >= 0 && !bytes.ContainsAny([]byte(s[:nl]), "{[") {
		s = s[nl+1:]
	}
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(s, "```")
	return strings.TrimSpace(s)
}
