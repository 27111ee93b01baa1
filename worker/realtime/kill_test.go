package realtime_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/realtime"
)

// Environment of the helper process.
const (
	envChildDir   = "NANNY_RT_CHILD_DIR"
	envChildURL   = "NANNY_RT_CHILD_URL"
	envChildAgent = "NANNY_RT_CHILD_AGENT"
	envChildToken = "NANNY_RT_CHILD_TOKEN"
)

// TestKillHelper is the worker process that TestKilledMidRunIsRecovered
// kills: it runs a Realtime whose investigation handler never returns.
func TestKillHelper(t *testing.T) {
	dir := os.Getenv(envChildDir)
	if dir == "" {
		t.Skip("helper process for TestKilledMidRunIsRecovered only")
	}
	c, err := nannyapi.New(nannyapi.Config{BaseURL: os.Getenv(envChildURL), Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	store, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	api := c.WithCredentials(&bearer{tokens: []string{os.Getenv(envChildToken)}})
	rt, err := realtime.New(realtime.Config{AgentID: os.Getenv(envChildAgent), API: api, Store: store,
		Investigations: stuck{}, Reporter: realtime.APIReporter{API: api}})
	if err != nil {
		t.Fatal(err)
	}
	_ = rt.Run(context.Background()) // until killed
}

type stuck struct{}

func (stuck) HandleInvestigation(ctx context.Context, _ nannyapi.Investigation) error {
	<-ctx.Done()
	return ctx.Err()
}

// A worker process killed with SIGKILL in the middle of an investigation:
// the next process gets the state directory (the lock died with the
// process), finds the investigation running, reports it failed and does
// not run it again.
func TestKilledMidRunIsRecovered(t *testing.T) {
	e := newEnv(t, fakeapi.Options{})
	dir := t.TempDir()
	inv := e.createInvestigation("Running when the worker is killed")

	cmd := exec.Command(os.Args[0], "-test.run=^TestKillHelper$")
	cmd.Env = append(os.Environ(), envChildDir+"="+dir, envChildURL+"="+e.fake.URL(),
		envChildAgent+"="+e.agent.ID, envChildToken+"="+e.agent.AccessToken)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	eventually(t, "the investigation running in the child", func() bool {
		data, err := os.ReadFile(filepath.Join(dir, opstate.FileName))
		if err != nil {
			return false
		}
		snap, err := opstate.Decode(data)
		if err != nil {
			return false
		}
		for _, en := range snap.Entries {
			if en.ID == inv && en.State == opstate.Running {
				return true
			}
		}
		return false
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed = true
	if err := cmd.Wait(); err == nil {
		t.Fatalf("child exited cleanly: %s", out.String())
	}

	rec := newRecorder()
	r := e.start(e.config(e.openStore(dir), rec), rec)
	eventually(t, "the killed investigation reported failed", func() bool {
		got, _ := e.fake.Record("investigations", inv)
		return got["status"] == "failed" && got["resolution_plan"] == realtime.ReasonInvestigationRestart
	})
	later := e.createInvestigation("Created after the restart")
	rec.waitCalled(t, key(opstate.Investigation, later))
	time.Sleep(20 * time.Millisecond)
	rec.exactlyOnce(t, key(opstate.Investigation, later))
	if got := entry(t, r.store, opstate.Investigation, inv); got.State != opstate.Failed {
		t.Errorf("entry %+v", got)
	}
}
