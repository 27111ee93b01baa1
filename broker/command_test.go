package broker

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

func examplePolicy(t testing.TB) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "policy", "testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func stages(argvs ...[]string) []*brokerv1.Stage {
	out := make([]*brokerv1.Stage, len(argvs))
	for i, a := range argvs {
		out[i] = &brokerv1.Stage{Argv: a}
	}
	return out
}

func TestRunCommandAllowedMatchesBash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the runner creates cgroups and switches accounts")
	}
	b := startBrokerWith(t, 0, examplePolicy(t))
	resp, err := b.client.RunCommand(context.Background(), &brokerv1.RunCommandRequest{
		Id: "cmd_1", CommandLine: "cat /etc/passwd | head -n 2",
		Stages: stages([]string{"cat", "/etc/passwd"}, []string{"head", "-n", "2"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := exec.Command("bash", "-c", "cat /etc/passwd | head -n 2").Output()
	if !resp.GetDecision().GetAllowed() || string(resp.GetStdout()) != string(want) || resp.GetExitCode() != 0 || resp.GetId() != "cmd_1" {
		t.Fatalf("response %v\nwant stdout %q", resp, want)
	}
	d := resp.GetDecision()
	if d.GetPolicySha256() == "" || len(d.GetStages()) != 2 || d.GetStages()[0].GetRuleId() != "cat" || d.GetStages()[0].GetProgram() != "/usr/bin/cat" {
		t.Errorf("decision %v", d)
	}
	if !strings.Contains(b.log.String(), `"rule":"cat|head"`) || !strings.Contains(b.log.String(), `"program":"/usr/bin/cat|/usr/bin/head"`) {
		t.Errorf("decision log: %s", b.log.String())
	}
}

func TestRunCommandDenials(t *testing.T) {
	b := startBrokerWith(t, 0, examplePolicy(t))
	canary := filepath.Join(t.TempDir(), "canary")
	cases := map[string][][]string{
		"secret path":                 {{"cat", "/etc/shadow"}},
		"proc alias":                  {{"cat", "/proc/self/root/etc/shadow"}},
		"shell by absolute path":      {{"/bin/sh", "-c", "touch " + canary}},
		"unlisted program":            {{"touch", canary}},
		"recursive grep":              {{"grep", "-r", "root", "/etc"}},
		"writer in a pipeline":        {{"cat", "/etc/hostname"}, {"tee", canary}},
		"program path not the rule's": {{"/tmp/cat", "/etc/hostname"}},
	}
	for name, argvs := range cases {
		t.Run(name, func(t *testing.T) {
			resp, err := b.client.RunCommand(context.Background(), &brokerv1.RunCommandRequest{Stages: stages(argvs...)})
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetDecision().GetAllowed() || resp.GetDecision().GetReason() == "" || len(resp.GetStdout()) != 0 {
				t.Errorf("not denied with a reason: %v", resp)
			}
		})
	}
	if _, err := os.Stat(canary); !os.IsNotExist(err) {
		t.Fatalf("a denied command ran: %v", err)
	}
	if n := strings.Count(b.log.String(), `"decision":"deny"`); n != len(cases) {
		t.Errorf("%d denials logged, want %d", n, len(cases))
	}
}
