package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nannyai/nannyagent/policy"
)

// Exit codes of `nannyagent policy`.
const (
	policyExitOK      = 0 // valid / explained / allowed
	policyExitInvalid = 1 // the policy does not load
	policyExitUsage   = 2 // bad arguments
	policyExitDenied  = 3 // test: the command is denied (unparseable lines included)
)

const policyUsage = `usage:
  nannyagent policy check   [--strict] [--json] [FILE|DIR ...]
  nannyagent policy explain [--json] [FILE|DIR ...]
  nannyagent policy test    [--json] [FILE|DIR ...] --command 'COMMAND LINE'

The first FILE is the vendor policy; the others are local files merged in the
order given (a DIR stands for its *.yaml files in lexical order). Without
FILE: /usr/share/nannyagent/policy.yaml and /etc/nannyagent/policy.d/*.yaml,
checked as the broker checks them (root-owned, not group/other-writable).

check    validates; exit 0 valid, 1 invalid. Ownership problems of given files
         are warnings unless --strict.
explain  says in plain words what the merged policy lets the broker do as root.
test     says what the policy decides for a command line, without running it;
         exit 0 allowed, 3 denied (a line that does not parse is denied with
         the parser's reason), 1 invalid policy.
`

// policyArgs are the parsed arguments of one policy subcommand.
type policyArgs struct {
	json, strict bool
	command      *string
	files        []string
}

// runPolicy runs `nannyagent policy SUBCOMMAND ...`; args are the words after
// "policy". It returns the process exit code.
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return policyExitUsage
	}
	sub := args[0]
	switch sub {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, policyUsage)
		return policyExitOK
	case "check", "explain", "test":
	default:
		fmt.Fprintf(stderr, "nannyagent policy: unknown subcommand %q\n%s", sub, policyUsage)
		return policyExitUsage
	}
	pa, err := parsePolicyArgs(sub, args[1:])
	if err != nil {
		fmt.Fprintf(stderr, "nannyagent policy %s: %v\n%s", sub, err, policyUsage)
		return policyExitUsage
	}
	vendor, locals, installed, err := policyFiles(pa.files)
	if err != nil {
		fmt.Fprintf(stderr, "nannyagent policy %s: %v\n", sub, err)
		return policyExitInvalid
	}
	switch sub {
	case "check":
		return policyCheck(pa, vendor, locals, installed, stdout, stderr)
	case "explain":
		p, code := loadForReview(vendor, locals, installed, stderr)
		if p == nil {
			return code
		}
		e := p.Explain()
		e.Confinement = hostConfinement()
		if err := writeReport(pa.json, e, stdout); err != nil {
			fmt.Fprintf(stderr, "nannyagent policy explain: %v\n", err)
			return policyExitInvalid
		}
		return policyExitOK
	default:
		p, code := loadForReview(vendor, locals, installed, stderr)
		if p == nil {
			return code
		}
		res := p.Test(*pa.command)
		if err := writeReport(pa.json, res, stdout); err != nil {
			fmt.Fprintf(stderr, "nannyagent policy test: %v\n", err)
			return policyExitInvalid
		}
		if res.Allowed {
			return policyExitOK
		}
		return policyExitDenied
	}
}

func parsePolicyArgs(sub string, args []string) (policyArgs, error) {
	var pa policyArgs
	flagsDone := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case flagsDone || !strings.HasPrefix(a, "-") || a == "-":
			pa.files = append(pa.files, a)
		case a == "--":
			flagsDone = true
		case a == "--json":
			pa.json = true
		case a == "--strict" && sub == "check":
			pa.strict = true
		case (a == "--command" || strings.HasPrefix(a, "--command=")) && sub == "test":
			if pa.command != nil {
				return pa, errors.New("--command given twice")
			}
			v, ok := strings.CutPrefix(a, "--command=")
			if !ok {
				if i+1 >= len(args) {
					return pa, errors.New("--command needs a command line")
				}
				i++
				v = args[i]
			}
			pa.command = &v
		default:
			return pa, fmt.Errorf("unknown flag %s", a)
		}
	}
	if sub == "test" && pa.command == nil {
		return pa, errors.New("--command is required")
	}
	return pa, nil
}

// policyFiles turns FILE|DIR arguments into a vendor file and local files;
// none means the installed set.
func policyFiles(args []string) (vendor string, locals []string, installed bool, err error) {
	if len(args) == 0 {
		locals, err = policy.LocalFiles(policy.LoadOptions{}, policy.DefaultLocalDir)
		return policy.DefaultVendorPath, locals, true, err
	}
	var all []string
	for _, a := range args {
		fi, statErr := os.Stat(a)
		if statErr == nil && fi.IsDir() {
			files, err := policy.LocalFiles(policy.LoadOptions{}, a)
			if err != nil {
				return "", nil, false, err
			}
			all = append(all, files...)
			continue
		}
		all = append(all, a)
	}
	if len(all) == 0 {
		return "", nil, false, errors.New("no policy files found")
	}
	return all[0], all[1:], false, nil
}

func policyCheck(pa policyArgs, vendor string, locals []string, installed bool, stdout, stderr io.Writer) int {
	res := policy.Check(policy.CheckOptions{Strict: pa.strict || installed, WorkerAccount: policy.DefaultWorkerAccount}, vendor, locals...)
	if err := writeReport(pa.json, res, stdout); err != nil {
		fmt.Fprintf(stderr, "nannyagent policy check: %v\n", err)
		return policyExitInvalid
	}
	if !res.Valid {
		return policyExitInvalid
	}
	return policyExitOK
}

// loadForReview loads the policy as the broker would for installed files,
// and without ownership checks for a working copy.
func loadForReview(vendor string, locals []string, installed bool, stderr io.Writer) (*policy.Policy, int) {
	opts := policy.LoadOptions{RequireRootOwned: installed, WorkerAccount: policy.DefaultWorkerAccount}
	p, err := policy.Load(opts, vendor, locals...)
	if err != nil {
		fmt.Fprintf(stderr, "invalid policy:\n%v\n", err)
		return nil, policyExitInvalid
	}
	return p, policyExitOK
}

type textReport interface{ WriteText(io.Writer) error }

func writeReport(asJSON bool, r textReport, w io.Writer) error {
	if asJSON {
		return policy.WriteJSON(w, r)
	}
	return r.WriteText(w)
}
