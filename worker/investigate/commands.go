package investigate

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// CommandBroker is the part of the broker client that runs commands.
type CommandBroker interface {
	RunCommand(ctx context.Context, in *brokerv1.RunCommandRequest, opts ...grpc.CallOption) (*brokerv1.RunCommandResponse, error)
}

// ParseFunc turns a model's command line into pipeline stages, or says
// precisely why it cannot (the policy package's parser).
type ParseFunc func(commandLine string) ([]*brokerv1.Stage, error)

// CommandResult is one command's outcome in the reference agent's shape
// (contract §5), with a few additions the model can use.
type CommandResult struct {
	ID          string `json:"id"`
	Command     string `json:"command"`
	Description string `json:"description"`
	Output      string `json:"output"`
	ExitCode    int    `json:"exit_code"`
	Error       string `json:"error,omitempty"`
	Denied      bool   `json:"denied,omitempty"`
	Truncated   bool   `json:"truncated,omitempty"`
	TimedOut    bool   `json:"timed_out,omitempty"`

	// What a person watching sees besides; the model does not get these.

	// Rules are the policy rules that allowed each stage, or the rule of
	// the stage that was refused (none when no rule named the program).
	Rules []string `json:"-"`
	// DeniedBy is "broker" or "parser" for a denied command.
	DeniedBy string `json:"-"`
	// Reason is why the command was denied or could not run, without the
	// "denied: " prefix the model reads.
	Reason   string        `json:"-"`
	Duration time.Duration `json:"-"`
}

// Who refused a command.
const (
	DeniedByBroker = "broker"
	DeniedByParser = "parser"
)

// Commands runs the commands of one turn through the broker.
type Commands struct {
	Broker CommandBroker
	Parse  ParseFunc
	// Redact removes secrets from what goes back to the model.
	Redact func(string) string
	// Parallel bounds commands in flight; the broker has its own limit.
	Parallel int
}

// Run runs cmds concurrently (at most Parallel at once) and returns their
// results in the order given.
func (c *Commands) Run(ctx context.Context, cmds []Command) []CommandResult {
	results := make([]CommandResult, len(cmds))
	sem := make(chan struct{}, max(c.Parallel, 1))
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				results[i] = c.runOne(ctx, cmd)
			case <-ctx.Done():
				results[i] = failed(cmd, "not run: "+ctx.Err().Error())
			}
		}()
	}
	wg.Wait()
	return results
}

func (c *Commands) runOne(ctx context.Context, cmd Command) CommandResult {
	stages, err := c.Parse(cmd.Text)
	if err != nil {
		return denied(cmd, DeniedByParser, err.Error(), nil)
	}
	start := time.Now()
	resp, err := c.Broker.RunCommand(ctx, &brokerv1.RunCommandRequest{Id: cmd.ID, CommandLine: cmd.Text, Stages: stages})
	if err != nil {
		r := failed(cmd, "broker: "+err.Error())
		r.Reason, r.Duration = r.Error, time.Since(start)
		return r
	}
	d := resp.GetDecision()
	if !d.GetAllowed() {
		return denied(cmd, DeniedByBroker, d.GetReason(), refusingRule(d))
	}
	r := CommandResult{
		ID: cmd.ID, Command: cmd.Text, Description: cmd.Description,
		Output:    c.redact(combinedOutput(resp)),
		ExitCode:  int(resp.GetExitCode()),
		Error:     c.redact(resp.GetError()),
		Truncated: resp.GetStdoutTruncated() || resp.GetStderrTruncated(),
		TimedOut:  resp.GetTimedOut(),
		Duration:  resp.GetDuration().AsDuration(),
	}
	for _, st := range d.GetStages() {
		r.Rules = append(r.Rules, st.GetRuleId())
	}
	if r.TimedOut && r.Error == "" {
		r.Error = "timed out: the output is what the command wrote before the broker's time limit killed it"
	}
	r.Reason = r.Error
	return r
}

func denied(cmd Command, by, reason string, rules []string) CommandResult {
	r := failed(cmd, "denied: "+reason)
	r.Denied, r.DeniedBy, r.Reason, r.Rules = true, by, reason, rules
	return r
}

// refusingRule is the rule of the first refused stage, when one named the
// program.
func refusingRule(d *brokerv1.Decision) []string {
	for _, st := range d.GetStages() {
		if !st.GetAllowed() {
			if st.GetRuleId() == "" {
				return nil
			}
			return []string{st.GetRuleId()}
		}
	}
	return nil
}

func (c *Commands) redact(s string) string {
	if c.Redact == nil {
		return s
	}
	return c.Redact(s)
}

// combinedOutput is stdout then stderr, as the reference agent sent them,
// with markers where the broker cut the output.
func combinedOutput(resp *brokerv1.RunCommandResponse) string {
	var b strings.Builder
	b.Write(resp.GetStdout())
	if resp.GetStdoutTruncated() {
		b.WriteString("\n[stdout truncated]\n")
	}
	if len(resp.GetStderr()) > 0 {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
		b.Write(resp.GetStderr())
		if resp.GetStderrTruncated() {
			b.WriteString("\n[stderr truncated]\n")
		}
	}
	if resp.GetTimedOut() {
		if b.Len() > 0 && !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
		b.WriteString("[cut: the command was killed by its time limit; the output above is what it wrote until then]\n")
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

func failed(cmd Command, msg string) CommandResult {
	return CommandResult{ID: cmd.ID, Command: cmd.Text, Description: cmd.Description, ExitCode: 1, Error: msg}
}
