package metrics

import (
	"context"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// loopbackAPI starts the fake NannyAPI on 127.0.0.1 with one registered
// agent and returns it with a real client holding that agent's token.
func loopbackAPI(t *testing.T) (*fakeapi.Server, *nannyapi.Client) {
	t.Helper()
	srv := fakeapi.New(fakeapi.Options{})
	t.Cleanup(srv.Close)
	c, _, err := srv.AgentClient("peer-test-01", "debian")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return srv, c
}

// ingestBodies returns the raw bodies of the ingest-metrics requests the
// fake backend received, in order.
func ingestBodies(srv *fakeapi.Server) [][]byte {
	var out [][]byte
	for _, r := range srv.Requests() {
		if r.Route == fakeapi.RouteIngestMetrics {
			out = append(out, r.Body)
		}
	}
	return out
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestLoopPostsThroughTheRealClient wires the loop to *nannyapi.Client as
// is (no adapter) and checks the fake backend stored the heartbeat.
func TestLoopPostsThroughTheRealClient(t *testing.T) {
	srv, client := loopbackAPI(t)
	l, err := NewLoop(LoopConfig{Version: "0.2.0", Clock: newFakeClock(), Logger: quietLogger()}, &fakeSampler{}, client)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Once(testCtx(t)); err != nil {
		t.Fatalf("heartbeat through the client: %v", err)
	}
	posts := srv.Metrics()
	if len(posts) != 1 {
		t.Fatalf("backend stored %d heartbeats, want 1", len(posts))
	}
	body := posts[0].Body
	sm, _ := body["system_metrics"].(map[string]any)
	if body["action"] != "ingest-metrics" || body["platform_family"] != "debian" || body["version"] != "0.2.0" || sm["cpu_percent"] != 25.0 {
		t.Errorf("stored heartbeat = %v", body)
	}
	if st := l.Status(); st.LastError != "" || st.LastSuccess.IsZero() {
		t.Errorf("status = %+v", st)
	}
}
