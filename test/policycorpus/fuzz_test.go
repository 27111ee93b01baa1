package policycorpus

import (
	"reflect"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/policy"
)

// FuzzDefaultPolicy feeds command lines to the parser and the packaged
// policy, seeded with both corpora. A denial always has a reason; an
// allowed pipeline names only programs the policy lists, every path
// operand passes the policy's own path check, and the approved argv
// re-evaluates to the same rule, run_as and path operands.
func FuzzDefaultPolicy(f *testing.F) {
	p, err := policy.Load(policy.LoadOptions{WorkerAccount: policy.DefaultWorkerAccount}, repoRoot+"/"+policyRel)
	if err != nil {
		f.Fatal(err)
	}
	programs := map[string]bool{}
	for _, c := range p.Explain().Commands {
		programs[c.Program] = true
	}
	for _, name := range []string{corpusDangerous, corpusLegitimate} {
		for _, e := range readCorpus(f, name) {
			f.Add(e.Cmd)
		}
	}
	f.Fuzz(func(t *testing.T, line string) {
		res := p.Test(line)
		if !res.Allowed {
			if strings.TrimSpace(res.Reason) == "" {
				t.Fatalf("%q denied without a reason", line)
			}
			return
		}
		for i, sd := range res.Decision.Stages {
			if !programs[sd.Program] || sd.Argv[0] != sd.Program {
				t.Fatalf("%q: stage %d runs %q", line, i, sd.Argv)
			}
			for _, po := range sd.Paths {
				if err := p.CheckPath(po.Path, po.Roots); err != nil {
					t.Fatalf("%q: approved path %q fails the check: %v", line, po.Path, err)
				}
			}
			st := res.Stages[i]
			st.Argv = sd.Argv
			again := p.Evaluate([]policy.Stage{st}).Stages[0]
			if !again.Allowed || again.RuleID != sd.RuleID || again.RunAs != sd.RunAs || !reflect.DeepEqual(again.Paths, sd.Paths) {
				t.Fatalf("%q: approved argv %q re-evaluates as %+v, first %+v", line, sd.Argv, again, sd)
			}
		}
	})
}
