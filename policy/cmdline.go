package policy

import "github.com/nannyai/nannyagent/policy/cmdline"

// MaxCommandLine bounds the text ParseCommandLine reads.
const MaxCommandLine = cmdline.MaxLine

// SyntaxError is a command line ParseCommandLine refuses (see cmdline).
type SyntaxError = cmdline.SyntaxError

// ParseCommandLine splits a command line into pipeline stages; see
// cmdline.Parse, which the worker uses without linking the policy.
func ParseCommandLine(s string) ([]Stage, error) { return cmdline.Parse(s) }
