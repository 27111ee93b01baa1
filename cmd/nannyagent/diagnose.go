package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

func runDiagnose(args []string, stdout, stderr io.Writer) int {
	var priority string
	flags, words := splitArgs(args)
	c, err := parseClientFlags("diagnose", flags, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&priority, "priority", "medium", "low, medium or high")
	})
	if err != nil {
		return 2
	}
	issue := strings.TrimSpace(strings.Join(words, " "))
	if issue == "" {
		fmt.Fprintln(stderr, `usage: nannyagent diagnose [--priority P] "describe the issue"`)
		return 2
	}
	cc, client, err := connect(c)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return 1
	}
	defer cc.Close()
	// An investigation runs for minutes; the worker bounds it.
	stream, err := client.Diagnose(context.Background(), &workerv1.DiagnoseRequest{Issue: issue, Priority: priority})
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, c.socket))
		return 1
	}
	resolved := false
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			fmt.Fprintln(stderr, "nannyagent:", explainRPC(err, c.socket))
			return 1
		}
		resolved = printDiagnoseEvent(stdout, ev) || resolved
	}
	if !resolved {
		fmt.Fprintln(stderr, "nannyagent: the investigation ended without a resolution")
		return 1
	}
	return 0
}

// splitArgs separates flags (with their values) from the issue's words, so
// flags may come before or after the issue.
func splitArgs(args []string) (flags, words []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return flags, append(words, args[i+1:]...)
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
			if !strings.Contains(a, "=") && takesValue(a) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		default:
			words = append(words, a)
		}
	}
	return flags, words
}

func takesValue(flagName string) bool {
	switch strings.TrimLeft(flagName, "-") {
	case "socket", "timeout", "config", "priority":
		return true
	}
	return false
}

func printDiagnoseEvent(w io.Writer, ev *workerv1.DiagnoseResponse) (resolved bool) {
	switch e := ev.GetEvent().(type) {
	case *workerv1.DiagnoseResponse_Started:
		fmt.Fprintf(w, "Investigation %s started.\n", e.Started.GetInvestigationId())
	case *workerv1.DiagnoseResponse_Progress:
		fmt.Fprintln(w, e.Progress)
	case *workerv1.DiagnoseResponse_Step:
		printStep(w, e.Step)
	case *workerv1.DiagnoseResponse_Resolution:
		r := e.Resolution
		fmt.Fprintf(w, "\n=== DIAGNOSIS COMPLETE ===\nRoot cause: %s\nConfidence: %s\nResolution plan:\n%s\n", r.GetRootCause(), r.GetConfidence(), r.GetResolutionPlan())
		if r.GetEbpfEvidence() != "" {
			fmt.Fprintf(w, "eBPF evidence: %s\n", r.GetEbpfEvidence())
		}
		return true
	}
	return false
}

func printStep(w io.Writer, st *workerv1.DiagnoseStep) {
	fmt.Fprintf(w, "\n--- turn %d: %s\n", st.GetTurn(), st.GetReasoning())
	for _, it := range st.GetItems() {
		switch {
		case it.GetDenied():
			fmt.Fprintf(w, "  DENIED  %s\n          %s\n", it.GetText(), it.GetReason())
		case it.GetKind() == "trace":
			fmt.Fprintf(w, "  trace   %s %s\n", it.GetText(), it.GetSummary())
		default:
			fmt.Fprintf(w, "  ran     %s (exit %d)\n", it.GetText(), it.GetExitCode())
		}
	}
}
