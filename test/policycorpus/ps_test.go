package policycorpus

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/policy"
)

// psTokens are arguments the ps rules deal with; random sequences of them
// probe the rules against the real procps.
var psTokens = [][]string{
	{"-e"}, {"-f"}, {"-F"}, {"-l"}, {"-H"}, {"-w"}, {"-L"}, {"-T"}, {"-j"}, {"-y"}, {"-M"}, {"-A"}, {"-N"},
	{"-ef"}, {"-eF"}, {"-efH"}, {"-elf"}, {"-efww"}, {"-eLf"}, {"-eLF"}, {"-Af"}, {"-AF"},
	{"--forest"}, {"--no-headers"}, {"--sort=-%cpu"}, {"--sort=pid"}, {"--sort", "-rss"},
	{"-o", "pid,ppid,cmd"}, {"-opid,comm"}, {"-eo", "pid,args"}, {"o", "pid,etime,args"},
	{"a"}, {"u"}, {"x"}, {"aux"}, {"auxf"}, {"auxww"}, {"f"}, {"w"}, {"j"}, {"l"}, {"v"}, {"m"}, {"r"}, {"c"}, {"n"}, {"S"}, {"H"},
	{"-p", "1"}, {"p", "1"}, {"-u", "root"}, {"-U", "0"}, {"--ppid", "1"}, {"-C", "sleep"}, {"-C", "init"},
	{"-x"}, {"e"}, {"-u", "eve"},
}

// psEvery are the every-process forms models write.
var psEvery = [][]string{{"-e"}, {"-ef"}, {"-eF"}, {"-eLf"}, {"-eo", "pid,ppid,cmd,%mem,%cpu"}, {"-ely"}, {"-efH"}}

// TestPSNeverPrintsEnvironments runs every ps form the policy allows in the
// legitimate corpus, and a few hundred random ones it allows, against the
// real procps, with a process whose environment holds a marker. No
// allowed form may print the marker (procps prints environments for BSD e,
// including when it re-reads rejected SysV options as BSD ones). The
// control, "ps e", must print it, so the check can fail.
func TestPSNeverPrintsEnvironments(t *testing.T) {
	psPath := "/usr/bin/ps"
	if _, err := os.Stat(psPath); err != nil {
		t.Skipf("needs procps at %s: %v", psPath, err)
	}
	marker := fmt.Sprintf("NANNYCORPUSMARKER%d", os.Getpid())
	sleeper := exec.Command("sleep", "60")
	sleeper.Env = append(os.Environ(), marker+"=1")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sleeper.Process.Kill()
		_ = sleeper.Wait()
	})
	runPS := func(args []string) string {
		ctx, cancel := context.WithTimeout(context.Background(), execTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, psPath, args...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		_ = cmd.Run() // a failing ps is fine; a leaking one is not
		return out.String()
	}
	if out := runPS([]string{"e", "-p", fmt.Sprint(sleeper.Process.Pid)}); !strings.Contains(out, marker) {
		t.Fatalf("control: ps e does not show the marker, so this test could not see a leak:\n%s", out)
	}

	p := loadPolicy(t)
	var forms [][]string
	for _, e := range readCorpus(t, corpusLegitimate) {
		res := p.Test(e.Cmd)
		if !res.Allowed {
			continue
		}
		for _, st := range res.Decision.Stages {
			if st.Program == psPath {
				forms = append(forms, st.Argv[1:])
			}
		}
	}
	fromCorpus := len(forms)
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for tries := 0; tries < 50000 && len(forms) < fromCorpus+500; tries++ {
		argv := []string{"ps"}
		if tries%2 == 0 {
			// Half start from an every-process form, the ones procps
			// re-reads as BSD e when the rest fails its SysV reading.
			argv = append(argv, psEvery[rng.IntN(len(psEvery))]...)
		}
		for n := 1 + rng.IntN(4); n > 0; n-- {
			argv = append(argv, psTokens[rng.IntN(len(psTokens))]...)
		}
		key := strings.Join(argv, "\x00")
		if seen[key] {
			continue
		}
		seen[key] = true
		if d := p.Evaluate([]policy.Stage{{Argv: argv}}); d.Allowed {
			forms = append(forms, argv[1:])
		}
	}
	if len(forms)-fromCorpus < 100 {
		t.Fatalf("only %d random ps forms were allowed; the probe is too weak", len(forms)-fromCorpus)
	}
	for _, args := range forms {
		if out := runPS(args); strings.Contains(out, marker) {
			t.Errorf("allowed form ps %s prints a process environment", strings.Join(args, " "))
		}
	}
	t.Logf("ran %d allowed ps forms (%d from the corpus, %d random) against %s", len(forms), fromCorpus, len(forms)-fromCorpus, psPath)
}
