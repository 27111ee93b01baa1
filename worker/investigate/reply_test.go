package investigate

import (
	"strings"
	"testing"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		kind     ReplyKind
		wantErr  string
		commands []Command
		programs int
		wantPlan string
		wantConf string
	}{
		{
			name:     "strings as the reference agent reads them",
			content:  `{"response_type":"diagnostic","reasoning":"r","commands":["uptime","free -m"]}`,
			kind:     ReplyDiagnostic,
			commands: []Command{{ID: "cmd_1", Text: "uptime"}, {ID: "cmd_2", Text: "free -m"}},
		},
		{
			name:     "objects as the backend's fake model sends them",
			content:  `{"response_type": "diagnostic", "reasoning": "x", "commands": [{"id": "uptime", "command": "uptime", "description": "Load averages"}, {"id": "mem", "command": "free -m", "description": "Memory usage"}], "ebpf_programs": []}`,
			kind:     ReplyDiagnostic,
			commands: []Command{{ID: "uptime", Text: "uptime", Description: "Load averages"}, {ID: "mem", Text: "free -m", Description: "Memory usage"}},
		},
		{
			name:     "fenced, with a bad id and a duplicate id",
			content:  "```json\n{\"response_type\":\"diagnostic\",\"commands\":[{\"id\":\"a b\",\"command\":\"uptime\"},{\"id\":\"x\",\"command\":\"id\"},{\"id\":\"x\",\"command\":\"w\"}]}\n```",
			kind:     ReplyDiagnostic,
			commands: []Command{{ID: "cmd_1", Text: "uptime"}, {ID: "x", Text: "id"}, {ID: "cmd_3", Text: "w"}},
		},
		{
			name:     "programs only",
			content:  `{"response_type":"diagnostic","ebpf_programs":[{"name":"o","type":"syscall","target":"openat","duration":5}]}`,
			kind:     ReplyDiagnostic,
			programs: 1,
		},
		{
			name:     "resolution",
			content:  `{"response_type":"resolution","root_cause":"disk full","resolution_plan":"1. rotate logs","confidence":"High"}`,
			kind:     ReplyResolution,
			wantPlan: "1. rotate logs", wantConf: "High",
		},
		{
			name:     "resolution with a numeric confidence",
			content:  `{"response_type":"resolution","resolution_plan":"p","confidence":0.9}`,
			kind:     ReplyResolution,
			wantPlan: "p", wantConf: "0.9",
		},
		{name: "plain text", content: "I think the disk is full.", kind: ReplyOther, wantErr: "not a JSON object"},
		{name: "unknown type", content: `{"response_type":"chat"}`, kind: ReplyOther, wantErr: "neither diagnostic nor resolution"},
		{name: "empty diagnostic", content: `{"response_type":"diagnostic","commands":[]}`, kind: ReplyDiagnostic, wantErr: "no commands"},
		{name: "resolution without plan", content: `{"response_type":"resolution","root_cause":"x"}`, kind: ReplyResolution, wantErr: "without a resolution_plan"},
		{name: "command of the wrong type", content: `{"response_type":"diagnostic","commands":[42]}`, kind: ReplyDiagnostic, wantErr: "neither a string nor an object"},
		{name: "empty command", content: `{"response_type":"diagnostic","commands":["  "]}`, kind: ReplyDiagnostic, wantErr: "empty command"},
		{name: "too many commands", content: `{"response_type":"diagnostic","commands":[` + strings.Repeat(`"id",`, 40) + `"id"]}`, kind: ReplyDiagnostic, wantErr: "at most 32"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseReply(tc.content)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tc.kind || len(r.Programs) != tc.programs || r.ResolutionPlan != tc.wantPlan || r.Confidence != tc.wantConf {
				t.Errorf("got %+v", r)
			}
			if len(r.Commands) != len(tc.commands) {
				t.Fatalf("commands %+v, want %+v", r.Commands, tc.commands)
			}
			for i := range tc.commands {
				if r.Commands[i] != tc.commands[i] {
					t.Errorf("command %d = %+v, want %+v", i, r.Commands[i], tc.commands[i])
				}
			}
			if strings.HasPrefix(r.Content, "```") {
				t.Errorf("fence kept in %q", r.Content)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	for _, seed := range []string{
		`{"response_type":"diagnostic","commands":["uptime"]}`,
		"```json\n{\"response_type\":\"resolution\",\"resolution_plan\":\"x\"}\n```",
		`{"response_type":"diagnostic","commands":[{"id":"a","command":"free -m"}],"ebpf_programs":[{}]}`,
		"```", "", "{", `{"response_type":"resolution","confidence":{"a":1},"resolution_plan":"p"}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, content string) {
		r, err := ParseReply(content)
		if err != nil {
			return
		}
		if len(r.Commands) > maxCommands || len(r.Programs) > maxPrograms {
			t.Fatalf("limits exceeded: %d commands, %d programs", len(r.Commands), len(r.Programs))
		}
		ids := map[string]bool{}
		for _, c := range r.Commands {
			if c.Text == "" || len(c.Text) > maxCommandText || !idPattern.MatchString(c.ID) || ids[c.ID] {
				t.Fatalf("bad command %+v", c)
			}
			ids[c.ID] = true
		}
		if r.Kind == ReplyResolution && strings.TrimSpace(r.ResolutionPlan) == "" {
			t.Fatal("resolution without plan accepted")
		}
	})
}
