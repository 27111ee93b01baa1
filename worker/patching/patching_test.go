package patching

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

const script = "#!/bin/sh\necho upgraded\n"

type fakeAPI struct {
	hash     string
	results  []nannyapi.PatchResult
	statuses []string
	download error
}

func (f *fakeAPI) DownloadScript(context.Context, string) ([]byte, error) {
	if f.download != nil {
		return nil, f.download
	}
	return []byte(script), nil
}

func (f *fakeAPI) ValidateScript(context.Context, string) (nannyapi.ScriptInfo, error) {
	return nannyapi.ScriptInfo{SHA256: f.hash}, nil
}

func (f *fakeAPI) SetPatchStatus(_ context.Context, _, s string) error {
	f.statuses = append(f.statuses, s)
	return nil
}

func (f *fakeAPI) UploadPatchResult(_ context.Context, _ string, r nannyapi.PatchResult) error {
	f.results = append(f.results, r)
	return nil
}

type fakeBroker struct {
	got    *brokerv1.RunPatchRequest
	runErr error
	start  brokerv1.PatchState
	polls  int
	finish *brokerv1.PatchResultResponse
}

func (b *fakeBroker) RunPatch(_ context.Context, in *brokerv1.RunPatchRequest, _ ...grpc.CallOption) (*brokerv1.RunPatchResponse, error) {
	b.got = in
	if b.runErr != nil {
		return nil, b.runErr
	}
	return &brokerv1.RunPatchResponse{State: b.start, Reason: "patch scripts are disabled by policy"}, nil
}

func (b *fakeBroker) PatchResult(context.Context, *brokerv1.PatchResultRequest, ...grpc.CallOption) (*brokerv1.PatchResultResponse, error) {
	b.polls++
	if b.polls < 3 {
		return &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_RUNNING}, nil
	}
	return b.finish, nil
}

func scriptHash() string {
	sum := sha256.Sum256([]byte(script))
	return hex.EncodeToString(sum[:])
}

func op(mode string) nannyapi.PatchOperation {
	return nannyapi.PatchOperation{ID: "op1", Mode: mode, LXCID: "lxc1", VMID: "100",
		ScriptURL: "/api/files/pbc_1/abcdefghij12345/apt_update.sh", Exclusions: []string{"linux-image-generic"}}
}

func TestHandlePatch(t *testing.T) {
	finished := &brokerv1.PatchResultResponse{State: brokerv1.PatchState_PATCH_STATE_FINISHED, ExitCode: 0, Stdout: []byte("upgraded\n")}
	tests := []struct {
		name     string
		api      *fakeAPI
		broker   *fakeBroker
		op       nannyapi.PatchOperation
		wantExit int
		wantErr  string
	}{
		{"runs and uploads", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: brokerv1.PatchState_PATCH_STATE_RUNNING, finish: finished}, op("dry-run"), 0, ""},
		{"hash mismatch", &fakeAPI{hash: strings.Repeat("0", 64)}, &fakeBroker{}, op("apply"), 1, "does not match"},
		{"broker refuses", &fakeAPI{hash: scriptHash()}, &fakeBroker{start: brokerv1.PatchState_PATCH_STATE_FAILED_TO_START}, op("apply"), 1, "disabled by policy"},
		{"broker cannot", &fakeAPI{hash: scriptHash()}, &fakeBroker{runErr: status.Error(codes.Unimplemented, "no patch runs here")}, op("apply"), 1, "no patch runs here"},
		{"foreign url", &fakeAPI{hash: scriptHash(), download: nannyapi.ErrForeignOrigin}, &fakeBroker{}, op("dry-run"), 1, "not on the nannyapi origin"},
		{"bad mode", &fakeAPI{hash: scriptHash()}, &fakeBroker{}, op("yolo"), 1, "unknown patch mode"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &Handler{API: tc.api, Broker: tc.broker, Poll: time.Millisecond, MaxWait: 5 * time.Second}
			err := h.HandlePatch(context.Background(), tc.op)
			if (err != nil) != (tc.wantErr != "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err %v, want %q", err, tc.wantErr)
			}
			if len(tc.api.results) != 1 {
				t.Fatalf("%d results uploaded, want exactly 1", len(tc.api.results))
			}
			r := tc.api.results[0]
			if r.ExitCode != tc.wantExit || r.LXCID != "lxc1" {
				t.Errorf("result %+v", r)
			}
			if tc.wantErr != "" && !strings.Contains(string(r.Stderr), tc.wantErr) {
				t.Errorf("stderr %q does not explain %q", r.Stderr, tc.wantErr)
			}
			if tc.wantErr == "" {
				g := tc.broker.got
				if string(g.GetScript()) != script || g.GetSha256() != scriptHash() || g.GetVmid() != "100" ||
					g.GetMode() != brokerv1.PatchMode_PATCH_MODE_DRY_RUN || len(g.GetExclusions()) != 1 {
					t.Errorf("broker asked with %v", g)
				}
				if string(r.Stdout) != "upgraded\n" || len(tc.api.statuses) != 1 {
					t.Errorf("result %+v, statuses %v", r, tc.api.statuses)
				}
			}
		})
	}
}

// FuzzScriptURL: whatever a record's script_url holds, the handler either
// refuses it before any download or names a /api/files/ path.
func FuzzScriptURL(f *testing.F) {
	for _, s := range []string{"/api/files/pbc_1/abcdefghij12345/apt.sh", "http://127.0.0.1:9/api/files/a/b/c", "https://evil.example/x", "", "://", "/api/files/../../etc/passwd"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p := pathOf(raw)
		id, err := nannyapi.ScriptIDFromURL(p)
		if err == nil && (id == "" || !strings.HasPrefix(p, "/api/files/")) {
			t.Fatalf("%q accepted as script %q from path %q", raw, id, p)
		}
	})
}
