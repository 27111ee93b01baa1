package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// Issues shorter than this, or of fewer words, are refused, as the
// reference agent and the backend refuse them.
const (
	minIssueChars = 10
	minIssueWords = 3
)

// outputLines is how many lines of each command's output the worker sends
// for -v and --json.
const outputLines = 10

// validIssue says what is wrong with an issue text, or "".
func validIssue(issue string) string {
	issue = strings.TrimSpace(issue)
	switch {
	case len(issue) < minIssueChars:
		return fmt.Sprintf("too short: describe the issue in at least %d characters, e.g. \"PostgreSQL queries are slow\"", minIssueChars)
	case len(strings.Fields(issue)) < minIssueWords:
		return fmt.Sprintf("incomplete: use at least %d words, e.g. \"nginx returns 502 errors\"", minIssueWords)
	}
	return ""
}

// runDiagnose runs `nannyagent diagnose "ISSUE"`: exit 0 resolved, 1
// failed, 2 usage.
func runDiagnose(o *options, stdout, stderr io.Writer) int {
	if problem := validIssue(o.issue); problem != "" {
		fmt.Fprintln(stderr, "nannyagent: the issue is", problem)
		return exitUsage
	}
	p := &eventPrinter{w: stdout, json: o.json, verbose: o.verbose}
	cc, client, err := connect(o.socket)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		p.failed(err.Error())
		p.end(exitFailed)
		return exitFailed
	}
	defer cc.Close()
	code := diagnose(o, client, o.issue, p, stderr)
	p.end(code)
	return code
}

// diagnose runs one investigation through the worker and prints its
// events. Ctrl-C stops it (the worker marks it failed on the backend);
// --timeout bounds it.
func diagnose(o *options, client workerv1.WorkerServiceClient, issue string, p *eventPrinter, stderr io.Writer) int {
	ctx, cancel := withTimeout(o, 0)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	lines := int32(0)
	if o.verbose || o.json {
		lines = outputLines
	}
	stream, err := client.Diagnose(ctx, &workerv1.DiagnoseRequest{Issue: issue, Priority: o.priority, OutputLines: lines})
	if err != nil {
		return diagnoseFailed(o, ctx, err, p, stderr)
	}
	resolved := false
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return diagnoseFailed(o, ctx, err, p, stderr)
		}
		resolved = p.event(ev) || resolved
	}
	if !resolved {
		return diagnoseFailed(o, ctx, errors.New("the investigation ended without a resolution"), p, stderr)
	}
	return exitOK
}

func diagnoseFailed(o *options, ctx context.Context, err error, p *eventPrinter, stderr io.Writer) int {
	reason := explainRPC(err, o.socket)
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded && o.set["timeout"]:
		reason = fmt.Sprintf("the diagnosis did not finish within --timeout %s; the worker stopped it and marks it failed", o.timeout)
	case errors.Is(ctx.Err(), context.Canceled):
		reason = "interrupted; the worker stopped the investigation and marks it failed"
	}
	p.failed(reason)
	if p.json {
		fmt.Fprintln(stderr, "nannyagent:", reason)
	}
	return exitFailed
}
