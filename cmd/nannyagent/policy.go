package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/nannyai/nannyagent/policy"
)

// runPolicy implements `nannyagent policy check [--strict] FILE…`.
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: nannyagent policy check [--strict] FILE…")
		return 2
	}
	fs := flag.NewFlagSet("nannyagent policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	strict := fs.Bool("strict", false, "ownership and mode problems are errors")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() == 0 {
		return 2
	}
	code := 0
	for _, file := range fs.Args() {
		if _, err := policy.Load(policy.LoadOptions{}, file); err != nil {
			fmt.Fprintln(stderr, "invalid:", err)
			code = 1
			continue
		}
		if err := policy.CheckOwnership(file); err != nil {
			if *strict {
				fmt.Fprintln(stderr, "invalid:", err)
				code = 1
				continue
			}
			fmt.Fprintln(stderr, "warning:", err, "(the broker would refuse it once installed)")
		}
		fmt.Fprintln(stdout, "valid:", file)
	}
	return code
}
