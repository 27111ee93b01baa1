package patching

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

const script = "#!/bin/sh\necho upgraded\n"

func scriptHash() string {
	sum := sha256.Sum256([]byte(script))
	return hex.EncodeToString(sum[:])
}

// fakeAPI records every call in order.
type fakeAPI struct {
	mu        sync.Mutex
	calls     []string
	hash      string
	body      string
	download  error
	uploadErr []error // consumed one per upload
	results   []nannyapi.PatchResult
	updates   []nannyapi.PatchUpdate
}

func (f *fakeAPI) note(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeAPI) ResolveScriptURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host != "" {
		return nil, fmt.Errorf("script url: %w", nannyapi.ErrForeignOrigin)
	}
	return u, nil
}

func (f *fakeAPI) ValidateScript(_ context.Context, id string) (nannyapi.ScriptInfo, error) {
	f.note("validate " + id)
	return nannyapi.ScriptInfo{ID: id, Name: "apt-update.sh", SHA256: f.hash}, nil
}

func (f *fakeAPI) DownloadScript(context.Context, string) ([]byte, error) {
	f.note("download")
	if f.download != nil {
		return nil, f.download
	}
	if f.body != "" {
		return []byte(f.body), nil
	}
	return []byte(script), nil
}

func (f *fakeAPI) UpdatePatch(_ context.Context, _ string, u nannyapi.PatchUpdate) error {
	f.note("update " + u.Status)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, u)
	return nil
}

func (f *fakeAPI) UploadPatchResult(_ context.Context, _ string, r nannyapi.PatchResult) error {
	f.note("upload")
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.uploadErr) > 0 {
		err := f.uploadErr[0]
		f.uploadErr = f.uploadErr[1:]
		if err != nil {
			return err
		}
	}
	f.results = append(f.results, r)
	return nil
}

func (f *fakeAPI) errorMsg() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, u := range f.updates {
		if u.Status == "failed" {
			return u.ErrorMsg
		}
	}
	return ""
}

// fakeBroker answers check-only requests with check, runs with start
// (one per call; the last repeats), and results with finish after polls.
type fakeBroker struct {
	mu       sync.Mutex
	got      []*brokerv1.RunPatchRequest
	checkErr error
	check    *brokerv1.RunPatchResponse
	runErr   error
	start    []brokerv1.PatchState
	polls    int
	running  int // PatchResult answers RUNNING this many times first
	finish   *brokerv1.PatchResultResponse
	finishEr error
}

func (b *fakeBroker) RunPatch(_ context.Context, in *brokerv1.RunPatchRequest, _ ...grpc.CallOption) (*brokerv1.RunPatchResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, in)
	if in.GetCheckOnly() {
		if b.checkErr != nil {
			return nil, b.checkErr
		}
		if b.check != nil {
			return b.check, nil
		}
		return &brokerv1.RunPatchResponse{State: brokerv1.PatchState_PATCH_STATE_ALLOWED, RuleId: "apt"}, nil
	}
	if b.runErr != nil {
		return nil, b.runErr
	}
	st := b.start[0]
	if len(b.start) > 1 {
		b.start = b.start[1:]
	}
	return &brokerv1.RunPatchResponse{State: st, Reason: "another patch run is in progress (operation x)"}, nil
}

func (b *fakeBroker) PatchResult(context.Context, *brokerv1.PatchResultRequest, ...grpc.CallOption) (*brokerv1.PatchResultResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.polls++
	if b.polls <= b.running {
		return &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_RUNNING}, nil
	}
	return b.finish, b.finishEr
}

func op(mode string) nannyapi.PatchOperation {
	return nannyapi.PatchOperation{ID: "op1", Mode: mode,
		ScriptURL: "/api/files/pbc_1/abcdefghij12345/apt_update.sh", Exclusions: []string{"linux-image-generic"}}
}

func handler(api *fakeAPI, b *fakeBroker) *Handler {
	return &Handler{API: api, Broker: b, Poll: time.Millisecond, MaxWait: 5 * time.Second}
}

var running = []brokerv1.PatchState{brokerv1.PatchState_PATCH_STATE_RUNNING}

func finished(code int32, stdout, stderr string) *brokerv1.PatchResultResponse {
	return &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_FINISHED, ExitCode: code, Stdout: []byte(stdout), Stderr: []byte(stderr)}
}

// TestHandlePatchFlow: the order NannyAPI and the broker see, the exact
// request, the upload.
func TestHandlePatchFlow(t *testing.T) {
	api := &fakeAPI{hash: strings.ToUpper(scriptHash())}
	b := &fakeBroker{start: running, running: 2, finish: finished(0, "upgraded\n", "")}
	if err := handler(api, b).HandlePatch(context.Background(), op("dry-run")); err != nil {
		t.Fatal(err)
	}
	want := "validate abcdefghij12345,update running,download,upload"
	if got := strings.Join(api.calls, ","); got != want {
		t.Errorf("calls %s, want %s", got, want)
	}
	if len(b.got) != 2 || !b.got[0].GetCheckOnly() || len(b.got[0].GetScript()) != 0 || b.got[1].GetCheckOnly() {
		t.Fatalf("broker requests %v", b.got)
	}
	for _, g := range b.got {
		if g.GetSha256() != scriptHash() || g.GetScriptName() != "apt-update.sh" || g.GetMode() != brokerv1.PatchMode_PATCH_MODE_DRY_RUN ||
			strings.Join(g.GetExclusions(), ",") != "linux-image-generic" || g.GetOperationId() != "op1" {
			t.Errorf("broker asked with %v", g)
		}
	}
	if string(b.got[1].GetScript()) != script {
		t.Errorf("script bytes %q", b.got[1].GetScript())
	}
	r := api.results[0]
	if len(api.results) != 1 || r.ExitCode != 0 || string(r.Stdout) != "upgraded\n" || len(r.Stderr) != 0 || api.errorMsg() != "" {
		t.Errorf("results %+v, error_msg %q", api.results, api.errorMsg())
	}
}

func TestHandlePatchFailures(t *testing.T) {
	pinHint := "patches:\n  pinned:\n    - {id: apt-update-89c839cc2534, sha256: 89c8, name: \"apt-update.sh\"}\n"
	cases := []struct {
		name     string
		api      *fakeAPI
		broker   *fakeBroker
		op       nannyapi.PatchOperation
		wantExit int
		want     []string
		calls    string
	}{
		{"not pinned", &fakeAPI{hash: scriptHash()}, &fakeBroker{check: &brokerv1.RunPatchResponse{State: brokerv1.PatchState_PATCH_STATE_REFUSED,
			Reason: "script apt-update.sh (sha256 89c8) is not pinned by this host's policy (patches.mode is pinned)", PolicyHint: pinHint}},
			op("dry-run"), 1, []string{"refused by this host's policy: script apt-update.sh", "/etc/nannyagent/policy.d/", pinHint}, "validate abcdefghij12345,upload,update failed"},
		{"broker unreachable", &fakeAPI{hash: scriptHash()}, &fakeBroker{checkErr: status.Error(codes.Unavailable, "connection error: desc = \"transport: Error while dialing: dial unix /run/x: connect: no such file\"")},
			op("dry-run"), 1, []string{"nannyagent-broker) is not reachable"}, "validate abcdefghij12345,upload,update failed"},
		{"hash mismatch", &fakeAPI{hash: scriptHash(), body: "#!/bin/sh\nreboot\n"}, &fakeBroker{start: running},
			op("apply"), 1, []string{"does not match", "nothing ran"}, "validate abcdefghij12345,update running,download,upload,update failed"},
		{"foreign url", &fakeAPI{hash: scriptHash()}, &fakeBroker{},
			nannyapi.PatchOperation{ID: "op1", Mode: "dry-run", ScriptURL: "https://evil.example/api/files/a/abcdefghij12345/x.sh"},
			1, []string{"not on this agent's NannyAPI origin", "not contacted"}, "upload,update failed"},
		{"bad mode", &fakeAPI{hash: scriptHash()}, &fakeBroker{}, op("yolo"), 1, []string{"unknown patch mode"}, "upload,update failed"},
		{"download fails", &fakeAPI{hash: scriptHash(), download: errors.New("nannyapi download script: 404 not found")}, &fakeBroker{start: running},
			op("dry-run"), 1, []string{"could not be downloaded", "404"}, "validate abcdefghij12345,update running,download,upload,update failed"},
		{"script fails", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: running, finish: finished(100, "Reading package lists...\n", "E: Could not get lock /var/lib/dpkg/lock-frontend\n")},
			op("apply"), 100, []string{"exited with status 100: E: Could not get lock"}, "validate abcdefghij12345,update running,download,upload,update failed"},
		{"timeout", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: running, finish: &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_FINISHED, ExitCode: -1,
			TimedOut: true, Signal: "SIGKILL", Error: "the script was stopped after 30m0s (the policy's limits.patch_max_runtime) and all its processes were killed"}},
			op("apply"), -1, []string{"stopped after 30m0s"}, "validate abcdefghij12345,update running,download,upload,update failed"},
		{"interrupted", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: running, finish: &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_INTERRUPTED, ExitCode: -1,
			Error: "the broker stopped while the script ran"}},
			op("apply"), 1, []string{"the broker stopped while the script ran"}, "validate abcdefghij12345,update running,download,upload,update failed"},
		{"refused at run", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: []brokerv1.PatchState{brokerv1.PatchState_PATCH_STATE_REFUSED}},
			op("dry-run"), 1, []string{"refused by this host's policy"}, "validate abcdefghij12345,update running,download,upload,update failed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := handler(tc.api, tc.broker).HandlePatch(context.Background(), tc.op)
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Join(tc.api.calls, ","); got != tc.calls {
				t.Errorf("calls %s, want %s", got, tc.calls)
			}
			if len(tc.api.results) != 1 {
				t.Fatalf("%d results uploaded, want exactly 1", len(tc.api.results))
			}
			r := tc.api.results[0]
			msg := tc.api.errorMsg()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) || !strings.Contains(string(r.Stderr), w) || !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from error_msg %q / stderr %q / error %v", w, msg, r.Stderr, err)
				}
			}
			if r.ExitCode != tc.wantExit {
				t.Errorf("exit code %d, want %d", r.ExitCode, tc.wantExit)
			}
			for _, raw := range []string{"rpc error", "code =", "desc ="} {
				if strings.Contains(msg, raw) {
					t.Errorf("error_msg carries a raw gRPC message: %q", msg)
				}
			}
		})
	}
}

func TestBusyThenRuns(t *testing.T) {
	api := &fakeAPI{hash: scriptHash()}
	b := &fakeBroker{start: []brokerv1.PatchState{brokerv1.PatchState_PATCH_STATE_BUSY, brokerv1.PatchState_PATCH_STATE_BUSY, brokerv1.PatchState_PATCH_STATE_RUNNING},
		finish: finished(0, "ok\n", "")}
	if err := handler(api, b).HandlePatch(context.Background(), op("dry-run")); err != nil {
		t.Fatal(err)
	}
	if len(b.got) != 4 || len(api.results) != 1 {
		t.Errorf("%d broker requests, %d uploads", len(b.got), len(api.results))
	}
}

// TestShutdownMidRunReportsNothing: a worker stopping during the wait
// leaves the operation for recovery; nothing is uploaded now.
func TestShutdownMidRunReportsNothing(t *testing.T) {
	api := &fakeAPI{hash: scriptHash()}
	b := &fakeBroker{start: running, running: 1 << 30}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	err := handler(api, b).HandlePatch(ctx, op("dry-run"))
	if !errors.Is(err, context.Canceled) || len(api.results) != 0 {
		t.Errorf("err %v, %d uploads", err, len(api.results))
	}
}

func TestUploadRetriedWhileUnavailable(t *testing.T) {
	api := &fakeAPI{hash: scriptHash(), uploadErr: []error{&nannyapi.APIError{Op: "upload", Status: 503}, &nannyapi.APIError{Op: "upload", Status: 502}}}
	b := &fakeBroker{start: running, finish: finished(0, "ok\n", "")}
	if err := handler(api, b).HandlePatch(context.Background(), op("dry-run")); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(api.calls, ","), "upload"); n != 3 || len(api.results) != 1 {
		t.Errorf("%d upload attempts, %d results", n, len(api.results))
	}
	api = &fakeAPI{hash: scriptHash(), uploadErr: []error{&nannyapi.APIError{Op: "upload", Status: 403, Message: "unauthorized: operation does not belong to agent"}}}
	b = &fakeBroker{start: running, finish: finished(0, "ok\n", "")}
	if err := handler(api, b).HandlePatch(context.Background(), op("dry-run")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("permanent upload error: %v", err)
	}
}

func TestRecover(t *testing.T) {
	api := &fakeAPI{}
	h := handler(api, &fakeBroker{finishEr: status.Error(codes.NotFound, "no patch run for operation op1 on this host")})
	if r, err := h.Recover(context.Background(), "op1", ""); err != nil || r.State != NeverStarted {
		t.Errorf("not found: %+v %v", r, err)
	}
	h = handler(api, &fakeBroker{running: 1, finish: finished(0, "", "")})
	if r, err := h.Recover(context.Background(), "op1", ""); err != nil || r.State != StillRunning {
		t.Errorf("running: %+v %v", r, err)
	}
	h = handler(api, &fakeBroker{finishEr: status.Error(codes.Unavailable, "dial")})
	if _, err := h.Recover(context.Background(), "op1", ""); err == nil || strings.Contains(err.Error(), "dial") {
		t.Errorf("broker down: %v", err)
	}
	// A finished run: its result is uploaded, once the upload succeeds.
	api = &fakeAPI{uploadErr: []error{errors.New("connection refused")}}
	h = handler(api, &fakeBroker{finish: finished(2, "out\n", "E: broken\n")})
	if _, err := h.Recover(context.Background(), "op1", ""); err == nil {
		t.Fatal("a failed upload counts as recovered")
	}
	r, err := h.Recover(context.Background(), "op1", "")
	if err != nil || r.State != Reported || r.Succeeded || !strings.Contains(r.Note, "status 2") {
		t.Errorf("finished: %+v %v", r, err)
	}
	if len(api.results) != 1 || api.results[0].ExitCode != 2 || !strings.Contains(api.errorMsg(), "E: broken") {
		t.Errorf("uploads %+v, error_msg %q", api.results, api.errorMsg())
	}
}
