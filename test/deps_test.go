// Package test pins the dependency direction between the broker and the
// worker (design.md invariant 8), and the slim graphs that keep the worker
// and the CLI small (make footprint).
package test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"
)

const module = "github.com/nannyai/nannyagent"

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg)
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestDependencyDirection(t *testing.T) {
	tests := []struct {
		binary    string
		forbidden []string
		// exact are forbidden themselves, their subpackages not.
		exact    []string
		required []string
	}{
		{
			binary: "./cmd/nannyagent-broker",
			forbidden: []string{
				module + "/worker",          // any worker package, token code included
				"github.com/tmaxmax/go-sse", // the realtime client
			},
			required: []string{module + "/broker", module + "/policy"},
		},
		{
			binary: "./cmd/nannyagent-worker",
			forbidden: []string{
				module + "/broker",           // exec, bpftrace, metrics readers
				"github.com/shirou/gopsutil", // host readers belong to the broker
				"go.yaml.in/yaml/v3",         // the policy's YAML: the worker only parses command lines
			},
			// The evaluator and its tables; policy/cmdline is the parser.
			exact:    []string{module + "/policy"},
			required: []string{module + "/worker", module + "/policy/cmdline"},
		},
		{
			binary: "./cmd/nannyagent",
			forbidden: []string{
				module + "/broker",
				module + "/worker",           // worker/config was linked for one constant
				"gopkg.in/yaml.v2",           // a second YAML decoder, ff's
				"github.com/peterbourgon/ff", // the worker's flag and config parser
			},
			required: []string{module + "/policy"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.binary, func(t *testing.T) {
			list := deps(t, tc.binary)
			for _, dep := range list {
				for _, bad := range tc.forbidden {
					if dep == bad || strings.HasPrefix(dep, bad+"/") {
						t.Errorf("%s depends on %s", tc.binary, dep)
					}
				}
				for _, bad := range tc.exact {
					if dep == bad {
						t.Errorf("%s depends on %s", tc.binary, dep)
					}
				}
			}
			for _, want := range tc.required {
				found := false
				for _, dep := range list {
					found = found || dep == want
				}
				if !found {
					t.Errorf("%s does not depend on %s: the check would pass vacuously", tc.binary, want)
				}
			}
		})
	}
}
