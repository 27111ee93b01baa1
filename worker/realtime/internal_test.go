package realtime

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

const testAgent = "6ybfg6bq7mxtjoj"

// stubAPI answers the handshake and lists nothing.
type stubAPI struct {
	mu         sync.Mutex
	subscribed []string
	topics     []string
	subErr     error
}

func (s *stubAPI) OpenRealtime(context.Context) (io.ReadCloser, error) {
	return nil, errors.New("stub: no stream")
}

func (s *stubAPI) Subscribe(_ context.Context, clientID string, collections []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subscribed = append(s.subscribed, clientID)
	s.topics = collections
	return s.subErr
}

func (s *stubAPI) ListInvestigations(context.Context, nannyapi.RecordQuery) ([]nannyapi.Investigation, error) {
	return nil, nil
}

func (s *stubAPI) ListPatchOperations(context.Context, nannyapi.RecordQuery) ([]nannyapi.PatchOperation, error) {
	return nil, nil
}

func (s *stubAPI) ListRebootOperations(context.Context, nannyapi.RecordQuery) ([]nannyapi.RebootOperation, error) {
	return nil, nil
}

type nopHandler struct{}

func (nopHandler) HandleInvestigation(context.Context, nannyapi.Investigation) error { return nil }
func (nopHandler) HandlePatch(context.Context, nannyapi.PatchOperation) error        { return nil }
func (nopHandler) HandleReboot(context.Context, nannyapi.RebootOperation) error      { return nil }

func newTestRealtime(t testing.TB, api API, mod func(*Config)) *Realtime {
	t.Helper()
	s, err := opstate.Open(opstate.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	cfg := Config{AgentID: testAgent, API: api, Store: s, Investigations: nopHandler{}, Patches: nopHandler{}, Reboots: nopHandler{}}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// queued drains and returns the queued operations.
func (r *Realtime) queued() []op {
	var out []op
	for _, q := range r.queues {
		for len(q) > 0 {
			j := <-q
			r.store.Release(j.op.kind, j.op.id)
			out = append(out, j.op)
		}
	}
	return out
}

// Verbatim frames from nannyapi-backend.md §4.2 (agent 6ybfg6bq7mxtjoj).
const (
	frameConnect = "id:GAw35aAhqSFVTsm9YkfYkMnBhqWzxwHkj5P02Ovg\nevent:PB_CONNECT\ndata:{\"clientId\":\"GAw35aAhqSFVTsm9YkfYkMnBhqWzxwHkj5P02Ovg\"}\n\n"
	dataInv      = `{"record":{"agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_59972043","collectionName":"investigations","completed_at":"","episode_id":"","id":"8vdpgwejcaa7p3q","initiated_at":"2026-11-25 21:40:25.847Z","metadata":{"initiated_by":"user"},"priority":"high","resolution_plan":"","status":"pending","user_id":"9a28tbg81y2935k","user_prompt":"High CPU usage on process mysqld, slow queries"},"action":"create"}`
	dataPatch    = `{"record":{"agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_2550880806","collectionName":"patch_operations","completed_at":"","error_msg":"","exclusions":["linux-image-generic"],"exit_code":0,"id":"dc1h4ypytwvcu0e","lxc_id":"","mode":"dry-run","output_path":"","script_id":"nl52d78j6pgcswd","script_url":"/api/files/pbc_1280174292/nl52d78j6pgcswd/apt_update_0m7hixffos.sh","started_at":"","status":"pending","stderr_file":"","stdout_file":"","user_id":"9a28tbg81y2935k","vmid":""},"action":"create"}`
	dataReboot   = `{"record":{"acknowledged_at":"","agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"","id":"6c1av7nfmxl556j","lxc_id":"","reason":"Kernel update applied","requested_at":"2026-11-25 21:41:12.007Z","status":"sent","timeout_seconds":120,"user_id":"9a28tbg81y2935k","vmid":""},"action":"create"}`
	dataTimeout  = `{"record":{"acknowledged_at":"","agent_id":"6ybfg6bq7mxtjoj","collectionId":"pbc_3109392152","collectionName":"reboot_operations","completed_at":"","error_message":"Agent did not acknowledge reboot command","id":"rb5n24qezyw0n12","lxc_id":"7sfzjqlwhc0ptu5","reason":"LXC restart","requested_at":"2026-11-25 21:42:07.952Z","status":"timeout","timeout_seconds":300,"user_id":"9a28tbg81y2935k","vmid":"100"},"action":"update"}`
)

func frame(event, data string) string {
	return "id:GAw35aAhqSFVTsm9YkfYkMnBhqWzxwHkj5P02Ovg\nevent:" + event + "\ndata:" + data + "\n\n"
}

// clockAt makes the reboot above fresh.
func clockAt(s string) func() time.Time {
	t := nannyapi.ParseTime(s)
	return func() time.Time { return t }
}

func TestReadStream(t *testing.T) {
	foreignInv := strings.Replace(dataInv, `"agent_id":"6ybfg6bq7mxtjoj"`, `"agent_id":"otheragent00001"`, 1)
	tests := []struct {
		name    string
		stream  string
		subErr  error
		want    []string // queued ids
		subs    int
		wantErr string
	}{
		{"verbatim handshake and creates", frameConnect + frame("investigations", dataInv) + frame("patch_operations", dataPatch) +
			frame("reboot_operations", dataReboot), nil, []string{"6c1av7nfmxl556j", "8vdpgwejcaa7p3q", "dc1h4ypytwvcu0e"}, 1, "closed"},
		{"frames before PB_CONNECT are ignored", frame("investigations", dataInv) + frameConnect, nil, nil, 1, "closed"},
		{"another agent's record", frameConnect + frame("investigations", foreignInv), nil, nil, 1, "closed"},
		{"updates do not start anything", frameConnect + frame("reboot_operations", dataTimeout), nil, nil, 1, "closed"},
		{"malformed event data", frameConnect + frame("investigations", `{"record":[],"action":"create"}`) +
			frame("investigations", `not json`) + frame("investigations", dataInv), nil, []string{"8vdpgwejcaa7p3q"}, 1, "closed"},
		{"other collection", frameConnect + frame("sbom_scans", `{"record":{"id":"x"},"action":"create"}`), nil, nil, 1, "closed"},
		{"a second PB_CONNECT subscribes again", frameConnect + strings.ReplaceAll(frameConnect, "GAw35", "XYZ99"), nil, nil, 2, "closed"},
		{"malformed PB_CONNECT", "event:PB_CONNECT\ndata:{\"clientId\":\"\"}\n\n", nil, nil, 0, "handshake"},
		{"subscribe refused", frameConnect + frame("investigations", dataInv), errors.New("403"), nil, 1, "subscribe: 403"},
		{"event too large", frameConnect + frame("investigations", strings.Repeat("x", 5000)), nil, nil, 1, "read stream"},
		{"no final blank line", frameConnect + strings.TrimSuffix(frame("investigations", dataInv), "\n"), nil, nil, 1, "closed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			api := &stubAPI{subErr: tc.subErr}
			r := newTestRealtime(t, api, func(c *Config) {
				c.Now = clockAt("2026-11-25 21:41:13.000Z")
				c.MaxEventBytes = 4096
			})
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			_, err := r.readStream(ctx, strings.NewReader(tc.stream), cancel)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			var ids []string
			for _, o := range r.queued() {
				ids = append(ids, o.id)
			}
			slices.Sort(ids)
			if !slices.Equal(ids, tc.want) {
				t.Errorf("queued %v, want %v", ids, tc.want)
			}
			if len(api.subscribed) != tc.subs {
				t.Errorf("subscribed %v", api.subscribed)
			}
			if tc.subs > 0 && (api.subscribed[0] != "GAw35aAhqSFVTsm9YkfYkMnBhqWzxwHkj5P02Ovg" ||
				!slices.Equal(api.topics, []string{"investigations", "patch_operations", "reboot_operations"})) {
				t.Errorf("subscribe %v %v", api.subscribed, api.topics)
			}
		})
	}
}

// Only kinds with a handler are subscribed, listed and taken.
func TestOnlyHandledKindsAreTaken(t *testing.T) {
	api := &stubAPI{}
	r := newTestRealtime(t, api, func(c *Config) { c.Patches, c.Reboots = nil, nil })
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	_, _ = r.readStream(ctx, strings.NewReader(frameConnect+frame("patch_operations", dataPatch)+frame("investigations", dataInv)), cancel)
	if !slices.Equal(api.topics, []string{"investigations"}) {
		t.Errorf("topics %v", api.topics)
	}
	got := r.queued()
	if len(got) != 1 || got[0].kind != opstate.Investigation {
		t.Errorf("queued %+v", got)
	}
	if _, ok := r.store.Get(opstate.Patch, "dc1h4ypytwvcu0e"); ok {
		t.Error("a patch was recorded without a patch handler")
	}
}

// A stream that sends nothing is ended after IdleTimeout.
func TestIdleStreamIsEnded(t *testing.T) {
	r := newTestRealtime(t, &stubAPI{}, func(c *Config) { c.IdleTimeout = 50 * time.Millisecond })
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	pr, pw := io.Pipe()
	defer pw.Close()
	stop := context.AfterFunc(ctx, func() { _ = pr.CloseWithError(context.Cause(ctx)) })
	defer stop()
	go func() { _, _ = io.WriteString(pw, frameConnect) }()
	start := time.Now()
	subscribed, err := r.readStream(ctx, pr, cancel)
	if !errors.Is(err, errIdle) || !subscribed {
		t.Fatalf("err %v subscribed %v", err, subscribed)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestBackoff(t *testing.T) {
	r := newTestRealtime(t, &stubAPI{}, func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, 10*time.Second })
	tests := []struct {
		n        int
		rand     float64
		min, max time.Duration
	}{
		{1, 0, 500 * time.Millisecond, 500 * time.Millisecond},
		{1, 0.999, 500 * time.Millisecond, time.Second},
		{2, 0, time.Second, time.Second},
		{4, 0.999, 4 * time.Second, 8 * time.Second},
		{5, 0, 5 * time.Second, 5 * time.Second},
		{50, 0.999, 5 * time.Second, 10 * time.Second},
	}
	for _, tc := range tests {
		r.cfg.rand = func() float64 { return tc.rand }
		if got := r.backoff(tc.n); got < tc.min || got > tc.max {
			t.Errorf("backoff(%d) with rand %v = %v, want in [%v, %v]", tc.n, tc.rand, got, tc.min, tc.max)
		}
	}
}

func TestParseBootTime(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		wantErr  string
	}{
		{"proc stat", "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764106872\nprocesses 42\n", 1764106872, ""},
		{"missing", "cpu 1\n", 0, "no btime"},
		{"garbage", "btime soon\n", 0, "malformed"},
		{"negative", "btime -5\n", 0, "malformed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBootTime([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v", err)
				}
				return
			}
			if err != nil || got.Unix() != tc.want {
				t.Fatalf("got %v %v", got, err)
			}
		})
	}
	if _, err := os.Stat("/proc/stat"); err == nil {
		bt, err := procBootTime()
		if err != nil || bt.After(time.Now()) || bt.Before(time.Now().Add(-10*365*24*time.Hour)) {
			t.Errorf("this host's boot time %v %v", bt, err)
		}
	}
}

func TestJudge(t *testing.T) {
	now := nannyapi.ParseTime("2026-11-25 21:45:00.000Z")
	reboot := func(requested string, timeout int) op {
		return rebootOp(nannyapi.RebootOperation{ID: "rb", AgentID: testAgent, Status: "sent", RequestedAt: requested, TimeoutSeconds: timeout})
	}
	patch := func(mode string) op {
		return patchOp(nannyapi.PatchOperation{ID: "p", AgentID: testAgent, Status: "pending", Mode: mode})
	}
	inv := investigationOp(nannyapi.Investigation{ID: "i", AgentID: testAgent, Status: "pending"})
	tests := []struct {
		name      string
		op        op
		notBefore time.Time
		skip      string // "" = runs
	}{
		{"reboot in time", reboot("2026-11-25 21:41:12.007Z", 300), time.Time{}, ""},
		{"reboot past deadline", reboot("2026-11-25 21:41:12.007Z", 120), time.Time{}, "deadline"},
		{"reboot exactly at deadline", reboot("2026-11-25 21:44:00.000Z", 60), time.Time{}, "deadline"},
		{"reboot without requested_at", reboot("", 300), time.Time{}, "requested_at"},
		{"reboot with garbage requested_at", reboot("yesterday", 300), time.Time{}, "requested_at"},
		{"reboot RFC 3339 requested_at", reboot("2026-11-25T21:44:00Z", 300), time.Time{}, ""},
		{"apply from a fresh backlog", patch("apply"), time.Time{}, "age is unknown"},
		{"apply seen 1h ago", patch("apply"), now.Add(-time.Hour), ""},
		{"apply maybe 2 days old", patch("apply"), now.Add(-48 * time.Hour), "longer than"},
		{"unknown mode counts as apply", patch("upgrade-all"), time.Time{}, "age is unknown"},
		{"dry-run from a fresh backlog", patch("dry-run"), time.Time{}, ""},
		{"old investigation", inv, time.Time{}, ""},
	}
	r := newTestRealtime(t, &stubAPI{}, func(c *Config) { c.Now = func() time.Time { return now } })
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := r.judge(tc.op, opstate.Entry{NotBefore: tc.notBefore})
			if (tc.skip == "") == v.skip || !strings.Contains(v.reason, tc.skip) {
				t.Fatalf("verdict %+v, want skip containing %q", v, tc.skip)
			}
			if v.skip && !v.report {
				t.Error("a skip the backend should hear of is not reported")
			}
			if tc.op.kind == opstate.Reboot && !v.skip && !v.deadline.After(now) {
				t.Errorf("deadline %v", v.deadline)
			}
		})
	}
}

// Degraded mode refuses only what must never run twice.
func TestJudgeDegraded(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, opstate.FileName), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	r, err := New(Config{AgentID: testAgent, API: &stubAPI{}, Store: s, Investigations: nopHandler{}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	fresh := opstate.Entry{NotBefore: now}
	for _, tc := range []struct {
		op   op
		skip bool
	}{
		{patchOp(nannyapi.PatchOperation{Mode: "apply"}), true},
		{rebootOp(nannyapi.RebootOperation{RequestedAt: now.UTC().Format(time.RFC3339), TimeoutSeconds: 300}), true},
		{patchOp(nannyapi.PatchOperation{Mode: "dry-run"}), false},
		{investigationOp(nannyapi.Investigation{}), false},
	} {
		if v := r.judge(tc.op, fresh); v.skip != tc.skip || (v.skip && !strings.Contains(v.reason, "degraded")) {
			t.Errorf("%s %s: %+v", tc.op.kind, tc.op.mode(), v)
		}
	}
}

func TestNewChecksConfig(t *testing.T) {
	s, err := opstate.Open(opstate.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ok := Config{AgentID: testAgent, API: &stubAPI{}, Store: s, Investigations: nopHandler{}}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no agent", func(c *Config) { c.AgentID = "" }},
		{"bad agent", func(c *Config) { c.AgentID = "a'b" }},
		{"no api", func(c *Config) { c.API = nil }},
		{"no store", func(c *Config) { c.Store = nil }},
		{"no handler", func(c *Config) { c.Investigations = nil }},
	} {
		cfg := ok
		tc.mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	r, err := New(ok)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Run(ctx); err == nil {
		t.Error("Run twice accepted")
	}
}
