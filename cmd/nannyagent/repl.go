package main

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// maxIssueLine bounds one line typed at the prompt.
const maxIssueLine = 64 << 10

// runInteractive is the reference agent's prompt: one issue per line,
// "quit" or "exit" (or end of input) leaves. Each issue is one diagnosis
// the worker runs, exactly as `nannyagent diagnose "ISSUE"` would; the CLI
// only reads lines and prints events. It exits 0 when the user leaves, 1
// when the worker cannot be reached.
func runInteractive(o *options, stdin io.Reader, stdout, stderr io.Writer) int {
	cc, client, err := connect(o.socket)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent:", err)
		return exitFailed
	}
	defer cc.Close()
	// With --json, stdout carries only events; the prompt goes to stderr.
	prompt := stdout
	if o.json {
		prompt = stderr
	}
	fmt.Fprintln(prompt, "NannyAgent interactive diagnosis: describe an issue (at least 10 characters and 3 words); \"quit\" or \"exit\" leaves.")
	in := bufio.NewScanner(stdin)
	in.Buffer(make([]byte, 0, 4096), maxIssueLine)
	for {
		fmt.Fprint(prompt, "> ")
		if !in.Scan() {
			break
		}
		line := strings.TrimSpace(in.Text())
		switch strings.ToLower(line) {
		case "":
			continue
		case "quit", "exit":
			fmt.Fprintln(prompt, "Goodbye!")
			return exitOK
		}
		if problem := validIssue(line); problem != "" {
			fmt.Fprintln(prompt, "The issue is", problem)
			continue
		}
		p := &eventPrinter{w: stdout, json: o.json, verbose: o.verbose}
		code := diagnose(o, client, line, p, stderr)
		p.end(code)
		fmt.Fprintln(prompt)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(stderr, "nannyagent: reading the prompt:", err)
		return exitFailed
	}
	fmt.Fprintln(prompt, "\nGoodbye!")
	return exitOK
}
