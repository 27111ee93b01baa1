package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nannyai/nannyagent/test/fakeapi"
)

// demoModel stands in for the LLM. It is scripted, but it reads the
// evidence it is sent: the second turn follows the largest file du found,
// and the resolution names the writer the trace (or lsof) found and the
// usage df reported. What it concludes is only as good as what the broker
// let it see.
type demoModel struct {
	problem *problem
	traces  bool
}

func (m *demoModel) turn(_ context.Context, t fakeapi.AITurn) (string, error) {
	ev := readEvidence(t.Messages, m.problem.mount)
	switch t.Round {
	case 1:
		return diagnostic(
			"The disk under "+m.problem.mount+" is filling up. First: how full the filesystem is and what takes the space. "+
				"Also read the host's SSH key, to see whether the host was re-imaged recently.",
			[]command{
				{"df -h " + m.problem.mount, "how full the filesystem is"},
				{"du -ah " + m.problem.mount + " | sort -rh | head -n 5", "the largest files"},
				{"cat /etc/ssh/ssh_host_ed25519_key", "the host key (a secret: the policy must refuse it)"},
			}, nil), nil
	case 2:
		biggest := ev.biggest
		if biggest == "" {
			biggest = m.problem.mount
		}
		reasoning := fmt.Sprintf("%s is the largest file and the filesystem is %s full. Who holds it open", biggest, orUnknown(ev.usePercent))
		var programs []map[string]any
		if m.traces {
			reasoning += ", and which processes call write() and with what sizes, over 2 seconds?"
			programs = []map[string]any{
				{"name": "writers", "type": "tracepoint", "target": "syscalls:sys_enter_write", "duration": 2,
					"description": "which processes call write(), and how often"},
				{"name": "write sizes", "type": "syscall", "target": "write", "measure": "size", "duration": 2,
					"description": "how many bytes each write() returns"},
			}
		} else {
			reasoning += "?"
		}
		return diagnostic(reasoning, []command{{"lsof +D " + m.problem.mount, "who has files open there"}}, programs), nil
	default:
		return resolution(m.problem, ev), nil
	}
}

type command struct{ text, description string }

func diagnostic(reasoning string, cmds []command, programs []map[string]any) string {
	type wireCmd struct {
		ID          string `json:"id"`
		Command     string `json:"command"`
		Description string `json:"description"`
	}
	wc := make([]wireCmd, len(cmds))
	for i, c := range cmds {
		wc[i] = wireCmd{ID: fmt.Sprintf("cmd_%d", i+1), Command: c.text, Description: c.description}
	}
	if programs == nil {
		programs = []map[string]any{}
	}
	data, _ := json.Marshal(map[string]any{"response_type": "diagnostic", "reasoning": reasoning, "commands": wc, "ebpf_programs": programs})
	return string(data)
}

func resolution(p *problem, ev evidence) string {
	writer := "an unidentified process"
	switch {
	case ev.topWriter != "":
		writer = ev.topWriter
	case ev.lsofWriter != "":
		writer = ev.lsofWriter
	}
	file := ev.biggest
	if file == "" {
		file = p.log
	}
	root := fmt.Sprintf("%s keeps appending to %s (%s), which fills the filesystem at %s (%s used)",
		writer, file, orUnknown(ev.biggestSize), p.mount, orUnknown(ev.usePercent))
	if ev.writeRate != "" {
		root += fmt.Sprintf("; the trace saw it call write() %s", ev.writeRate)
	}
	plan := fmt.Sprintf("1. Stop the writer: %s (the demo stops it itself when it ends).\n"+
		"2. Free the space: truncate -s 0 %s, or rotate it.\n"+
		"3. Keep it from coming back: a logrotate rule with maxsize for %s, or a quieter log level.", stopCommand(ev), file, file)
	evidenceText := ""
	if ev.topWriter != "" {
		evidenceText = "syscalls:sys_enter_write: writer " + ev.topWriter
	}
	data, _ := json.Marshal(map[string]string{"response_type": "resolution", "root_cause": root,
		"resolution_plan": plan, "confidence": "High", "ebpf_evidence": evidenceText})
	return string(data)
}

func stopCommand(ev evidence) string {
	if ev.writerPID != "" {
		return "kill " + ev.writerPID
	}
	return "find it with lsof and stop it"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// evidence is what the model learned from the results it was sent.
type evidence struct {
	usePercent, biggest, biggestSize string
	topWriter, writerPID, writeRate  string
	lsofWriter                       string
}

type turnResults struct {
	CommandResults []struct {
		Command string `json:"command"`
		Output  string `json:"output"`
		Error   string `json:"error"`
	} `json:"command_results"`
	EBPFResults []struct {
		Name            string  `json:"name"`
		Success         bool    `json:"success"`
		EventsPerSecond float64 `json:"events_per_second"`
		Aggregates      []struct {
			Name    string `json:"name"`
			Entries []struct {
				Key   string `json:"key"`
				Value int64  `json:"value"`
			} `json:"entries"`
		} `json:"aggregates"`
	} `json:"ebpf_results"`
}

// readEvidence goes through every results message of the conversation.
func readEvidence(msgs []fakeapi.Message, mount string) evidence {
	var ev evidence
	for _, m := range msgs {
		if m.Role != "user" {
			continue
		}
		var tr turnResults
		if json.Unmarshal([]byte(m.Content), &tr) != nil {
			continue
		}
		for _, r := range tr.CommandResults {
			switch {
			case strings.HasPrefix(r.Command, "df "):
				ev.usePercent = dfUse(r.Output)
			case strings.HasPrefix(r.Command, "du "):
				ev.biggestSize, ev.biggest = duLargest(r.Output, mount)
			case strings.HasPrefix(r.Command, "lsof "):
				ev.lsofWriter, ev.writerPID = lsofWriter(r.Output, mount)
			}
		}
		for _, t := range tr.EBPFResults {
			if t.Name != "writers" || !t.Success {
				continue
			}
			for _, a := range t.Aggregates {
				if a.Name == "@by_process" {
					ev.traceWriter(a.Entries, ev.writerPID)
				}
			}
		}
	}
	return ev
}

// traceWriter names the writer from the trace's per-process counts (keys
// "pid,comm", largest first): the process lsof found holding a file open
// for writing on the full filesystem when the trace saw it write, since
// on a busy host the busiest writer may be writing elsewhere; otherwise
// the busiest writer.
func (ev *evidence) traceWriter(entries []struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
}, holderPID string) {
	if len(entries) == 0 {
		return
	}
	pick, rank := 0, "more than any other process"
	for i, e := range entries {
		if pid, _, _ := strings.Cut(e.Key, ","); holderPID != "" && strings.TrimSpace(pid) == holderPID {
			pick = i
			if i > 0 {
				rank = fmt.Sprintf("the busiest writer holding a file there (%d processes wrote more elsewhere)", i)
			}
			break
		}
	}
	pid, comm, _ := strings.Cut(entries[pick].Key, ",")
	ev.topWriter = fmt.Sprintf("%s (pid %s)", strings.TrimSpace(comm), strings.TrimSpace(pid))
	ev.writerPID = strings.TrimSpace(pid)
	ev.writeRate = fmt.Sprintf("%d times in 2 seconds, %s", entries[pick].Value, rank)
}

// dfUse is the Use% column of df's second line.
func dfUse(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 2 {
		return ""
	}
	for _, f := range strings.Fields(lines[1]) {
		if strings.HasSuffix(f, "%") {
			return f
		}
	}
	return ""
}

// duLargest is the first line of `du -ah | sort -rh` that is not the
// directory itself.
func duLargest(out, mount string) (size, path string) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[1] != mount {
			return f[0], f[1]
		}
	}
	return "", ""
}

// lsofWriter is the process holding a file under mount open for writing
// (an FD column ending in w or u).
func lsofWriter(out, mount string) (who, pid string) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.HasPrefix(f[len(f)-1], mount) {
			continue
		}
		if fd := f[3]; strings.HasSuffix(fd, "w") || strings.HasSuffix(fd, "u") {
			return fmt.Sprintf("%s (pid %s)", f[0], f[1]), f[1]
		}
	}
	return "", ""
}
