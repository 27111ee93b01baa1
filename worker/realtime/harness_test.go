package realtime_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/realtime"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFor bounds every wait in these tests.
const waitFor = 10 * time.Second

// recorder is a recording handler for all three kinds.
type recorder struct {
	mu      sync.Mutex
	calls   map[string]int // "kind/id" → calls
	running map[string]bool
	// block makes the handler of these keys wait until ctx ends or the
	// channel is closed.
	block map[string]chan struct{}
	// fail makes the handler of these keys return an error.
	fail    map[string]error
	changed chan struct{}
	// rt, when set, is told about reboot acknowledges.
	rt *realtime.Realtime
	// deadlines seen by reboot handlers.
	deadlines map[string]time.Time
}

func newRecorder() *recorder {
	return &recorder{calls: map[string]int{}, running: map[string]bool{}, block: map[string]chan struct{}{},
		fail: map[string]error{}, changed: make(chan struct{}), deadlines: map[string]time.Time{}}
}

func key(kind opstate.Kind, id string) string { return string(kind) + "/" + id }

func (r *recorder) handle(ctx context.Context, k string) error {
	r.mu.Lock()
	r.calls[k]++
	r.running[k] = true
	block, err := r.block[k], r.fail[k]
	r.notifyLocked()
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.running[k] = false
		r.notifyLocked()
		r.mu.Unlock()
	}()
	if block != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-block:
		}
	}
	return err
}

func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) HandleInvestigation(ctx context.Context, inv nannyapi.Investigation) error {
	return r.handle(ctx, key(opstate.Investigation, inv.ID))
}

func (r *recorder) HandlePatch(ctx context.Context, op nannyapi.PatchOperation) error {
	return r.handle(ctx, key(opstate.Patch, op.ID))
}

func (r *recorder) HandleReboot(ctx context.Context, op nannyapi.RebootOperation) error {
	r.mu.Lock()
	rt := r.rt
	if d, ok := ctx.Deadline(); ok {
		r.deadlines[op.ID] = d
	}
	r.mu.Unlock()
	if rt != nil {
		if err := rt.RebootAcknowledging(op.ID); err != nil {
			return err
		}
	}
	return r.handle(ctx, key(opstate.Reboot, op.ID))
}

// count returns how often a key's handler was called.
func (r *recorder) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[k]
}

// total is the number of handler calls.
func (r *recorder) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		n += c
	}
	return n
}

// until waits for cond (called with r.mu held).
func (r *recorder) until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitFor)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch := cond(), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s; calls %v", what, r.snapshot())
		}
	}
}

// waitCalled waits until every key was handled at least once.
func (r *recorder) waitCalled(t testing.TB, keys ...string) {
	t.Helper()
	r.until(t, "handlers of "+strings.Join(keys, ", "), func() bool {
		for _, k := range keys {
			if r.calls[k] == 0 {
				return false
			}
		}
		return true
	})
}

func (r *recorder) waitRunning(t testing.TB, k string) {
	t.Helper()
	r.until(t, k+" running", func() bool { return r.running[k] })
}

func (r *recorder) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for k, v := range r.calls {
		out[k] = v
	}
	return out
}

// blockOn makes k's handler wait; close the channel to let it go on.
func (r *recorder) blockOn(k string) chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	r.block[k] = ch
	r.mu.Unlock()
	return ch
}

// exactlyOnce fails unless every key was handled once and nothing else
// was handled.
func (r *recorder) exactlyOnce(t testing.TB, keys ...string) {
	t.Helper()
	got := r.snapshot()
	want := map[string]int{}
	for _, k := range keys {
		want[k] = 1
	}
	for k, n := range got {
		if want[k] != n {
			t.Errorf("%s handled %d times, want %d", k, n, want[k])
		}
	}
	for k := range want {
		if got[k] == 0 {
			t.Errorf("%s never handled", k)
		}
	}
}

// bearer is static agent credentials that count Token calls.
type bearer struct {
	mu     sync.Mutex
	tokens []string
	calls  int
}

func (b *bearer) Token(context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok := b.tokens[min(b.calls, len(b.tokens)-1)]
	b.calls++
	return tok, nil
}

func (b *bearer) Rejected(context.Context, string) (string, error) {
	return "", errors.New("test credentials cannot refresh")
}

// env is a fake NannyAPI, an agent on it and its client.
type env struct {
	t      testing.TB
	fake   *fakeapi.Server
	agent  fakeapi.AgentCredentials
	other  fakeapi.AgentCredentials
	client *nannyapi.Client
	creds  *bearer
}

func newEnv(t testing.TB, opts fakeapi.Options) *env {
	t.Helper()
	fake := fakeapi.New(opts)
	t.Cleanup(fake.Close)
	ag := fake.AddAgent("", "host-1", "debian")
	other := fake.AddAgent("", "host-2", "debian")
	creds := &bearer{tokens: []string{ag.AccessToken}}
	c, err := nannyapi.New(nannyapi.Config{BaseURL: fake.URL(), Version: "test",
		Retry: nannyapi.RetryPolicy{Attempts: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &env{t: t, fake: fake, agent: ag, other: other, client: c.WithCredentials(creds), creds: creds}
}

func (e *env) createInvestigation(prompt string) string {
	e.t.Helper()
	id, err := e.fake.CreateInvestigation(e.agent.ID, prompt, "high")
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) createPatch(mode string) string {
	e.t.Helper()
	id, err := e.fake.CreatePatch(e.agent.ID, fakeapi.PatchSpec{Mode: mode})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) createReboot(timeout int) string {
	e.t.Helper()
	id, err := e.fake.CreateReboot(e.agent.ID, fakeapi.RebootSpec{Reason: "kernel update", TimeoutSeconds: timeout})
	if err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) openStore(dir string) *opstate.Store {
	e.t.Helper()
	s, err := opstate.Open(opstate.Options{Dir: dir})
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// running is a Realtime running in the background.
type running struct {
	rt    *realtime.Realtime
	store *opstate.Store
	stop  func()
}

// config is the test configuration: short timings, every handler the
// recorder, the real nannyapi client and reporter.
func (e *env) config(store *opstate.Store, rec *recorder) realtime.Config {
	return realtime.Config{
		AgentID: e.agent.ID, API: e.client, Store: store,
		Investigations: rec, Patches: rec, Reboots: rec,
		Reporter:    realtime.APIReporter{API: e.client},
		Logger:      testLogger(e.t),
		IdleTimeout: 5 * time.Second, BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		CatchUpInterval: time.Hour,
	}
}

// start runs a Realtime until the test ends or stop is called; stop closes
// the store after Run returned.
func (e *env) start(cfg realtime.Config, rec *recorder) *running {
	e.t.Helper()
	rt, err := realtime.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	if rec != nil {
		rec.mu.Lock()
		rec.rt = rt
		rec.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					e.t.Errorf("Run: %v", err)
				}
			case <-time.After(waitFor):
				e.t.Fatal("Run did not return after cancel")
			}
			if err := cfg.Store.Close(); err != nil {
				e.t.Errorf("close store: %v", err)
			}
		})
	}
	e.t.Cleanup(stop)
	return &running{rt: rt, store: cfg.Store, stop: stop}
}

// waitSubscribed waits until the agent has a subscribed client other than
// the ones in not, and returns its id.
func (e *env) waitSubscribed(not ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	for {
		for _, c := range e.fake.Clients() {
			if c.AuthID == e.agent.ID && len(c.Subscriptions) == 3 && !slices.Contains(not, c.ID) {
				return c.ID
			}
		}
		if err := waitChange(ctx); err != nil {
			e.t.Fatalf("no new subscribed client: %v (clients %+v)", err, e.fake.Clients())
		}
	}
}

// waitChange sleeps a little (fakeapi's waiters cannot express "a client
// other than…").
func waitChange(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Millisecond):
		return nil
	}
}

// eventually polls cond until it is true or the wait bound passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// entry returns a store entry or fails.
func entry(t testing.TB, s *opstate.Store, kind opstate.Kind, id string) opstate.Entry {
	t.Helper()
	e, ok := s.Get(kind, id)
	if !ok {
		t.Fatalf("%s/%s not recorded", kind, id)
	}
	return e
}

// testLogger writes to the test log when NANNY_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("NANNY_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
