package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/nannyai/nannyagent/broker/execute"
	"github.com/nannyai/nannyagent/broker/patch"
	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
)

// RunPatch judges a patch run against the policy and, unless the request
// only asks whether it would be allowed, starts it detached from the
// request. Refusals are answers (state REFUSED, the reason in words for
// an operator and, where the policy could allow the run, the policy text
// to add), not errors; a malformed request is InvalidArgument.
func (s *Server) RunPatch(ctx context.Context, req *brokerv1.RunPatchRequest) (*brokerv1.RunPatchResponse, error) {
	lp := policyOf(ctx, s)
	lim := lp.policy.Limits()
	a := auditFrom(ctx)
	describePatch(a, req)
	pr := patch.Request{
		OperationID: req.GetOperationId(), Script: req.GetScript(), SHA256: strings.ToLower(req.GetSha256()),
		Mode: patchMode(req.GetMode()), Exclusions: req.GetExclusions(), Name: req.GetScriptName(),
	}
	if err := patch.CheckShape(pr, lim.PatchScriptBytes, req.GetCheckOnly()); err != nil {
		a.decision, a.reason = decisionDeny, err.Error()
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &brokerv1.RunPatchResponse{OperationId: pr.OperationID}
	refuse := func(reason, hint string) (*brokerv1.RunPatchResponse, error) {
		a.decision, a.reason = decisionDeny, reason
		resp.State, resp.Reason, resp.PolicyHint = brokerv1.PatchState_PATCH_STATE_REFUSED, reason, hint
		return resp, nil
	}
	if !req.GetCheckOnly() {
		// The policy judges the hash of the bytes received, never a hash
		// the request merely claims.
		if _, err := patch.Verify(pr.Script, pr.SHA256); err != nil {
			return refuse(err.Error(), "")
		}
	}
	target := policy.PatchTargetHost
	if req.GetVmid() != "" {
		target = policy.PatchTargetLXC
	}
	rule, err := lp.policy.CheckPatch(policy.PatchQuery{SHA256: pr.SHA256, Target: target, Mode: string(pr.Mode), Name: pr.Name})
	var denied *policy.DeniedError
	if errors.As(err, &denied) {
		return refuse(denied.Reason, denied.Hint)
	}
	if err != nil {
		return refuse(err.Error(), "")
	}
	a.ruleID, resp.RuleId = rule, rule
	if target == policy.PatchTargetLXC {
		return refuse("patches in containers are not supported by this version of the broker; nothing ran", "")
	}
	if req.GetCheckOnly() {
		a.decision = decisionAllow
		resp.State = brokerv1.PatchState_PATCH_STATE_ALLOWED
		return resp, nil
	}
	if s.patches == nil {
		a.decision, a.reason = decisionError, s.patchErr
		resp.State, resp.Reason = brokerv1.PatchState_PATCH_STATE_REFUSED, s.patchErr
		return resp, nil
	}
	st, err := s.patches.Start(pr, patchSettings(lp.policy, rule))
	switch {
	case errors.Is(err, patch.ErrBusy):
		a.decision, a.reason = decisionDeny, err.Error()
		resp.State, resp.Reason = brokerv1.PatchState_PATCH_STATE_BUSY, err.Error()
		return resp, nil
	case errors.Is(err, patch.ErrRefused), errors.Is(err, patch.ErrHashMismatch):
		return refuse(err.Error(), "")
	case errors.Is(err, patch.ErrClosed):
		return nil, status.Error(codes.Unavailable, err.Error())
	case err != nil:
		a.decision, a.reason = decisionError, err.Error()
		return nil, status.Errorf(codes.Internal, "patch run not started: %v", err)
	}
	a.decision = decisionAllow
	if len(st.Argv) > 0 {
		a.stages = [][]string{st.Argv}
	}
	if st.Existing {
		a.reason = "operation already ran here; not run again"
	}
	resp.State = patchState(st.State)
	return resp, nil
}

// PatchResult returns a patch run's record and output by operation id.
func (s *Server) PatchResult(ctx context.Context, req *brokerv1.PatchResultRequest) (*brokerv1.PatchResultResponse, error) {
	a := auditFrom(ctx)
	op := req.GetOperationId()
	if !patch.ValidOperationID(op) {
		return nil, status.Errorf(codes.InvalidArgument, "operation id %q is malformed", clipText(op))
	}
	if s.patches == nil {
		return nil, status.Error(codes.NotFound, "no patch run for this operation: "+s.patchErr)
	}
	r, err := s.patches.Result(op)
	if errors.Is(err, patch.ErrNotFound) {
		a.reason = "no run of operation " + op
		return nil, status.Errorf(codes.NotFound, "no patch run for operation %s on this host", op)
	}
	if err != nil {
		return nil, status.Errorf(codes.Internal, "read the record of operation %s: %v", op, err)
	}
	resp := &brokerv1.PatchResultResponse{
		OperationId: r.OperationID, State: patchState(r.State), ExitCode: int32(r.ExitCode),
		Stdout: r.Stdout, Stderr: r.Stderr, StdoutTruncated: r.StdoutTruncated, StderrTruncated: r.StderrTruncated,
		StartedAt: timestamppb.New(r.StartedAt), Error: r.Error, Sha256: r.SHA256, TimedOut: r.TimedOut, Signal: r.Signal,
	}
	if !r.FinishedAt.IsZero() {
		resp.FinishedAt = timestamppb.New(r.FinishedAt)
	}
	return resp, nil
}

// describePatch gives the decision log what a patch request asks for,
// never the script's bytes; a run that starts replaces it with its argv.
func describePatch(a *audit, req *brokerv1.RunPatchRequest) {
	argv := []string{"patch script " + clipText(req.GetScriptName()), "operation=" + clipText(req.GetOperationId()), "sha256=" + clipText(req.GetSha256()),
		"mode=" + req.GetMode().String(), fmt.Sprintf("exclusions=%d", len(req.GetExclusions())),
		fmt.Sprintf("script_bytes=%d", len(req.GetScript()))}
	if req.GetCheckOnly() {
		argv = append(argv, "check_only")
	}
	a.stages = [][]string{argv}
}

func patchSettings(p *policy.Policy, rule string) patch.Settings {
	x, lim := p.Patches(), p.Limits()
	return patch.Settings{
		Rule: rule, Interpreters: x.Interpreters, Path: x.Path, Timeout: lim.PatchMaxRuntime,
		ScriptBytes: lim.PatchScriptBytes, OutputBytes: lim.PatchOutputBytes, MemoryBytes: lim.PatchChildMemory, Tasks: lim.PatchChildTasks,
	}
}

func patchMode(m brokerv1.PatchMode) patch.Mode {
	switch m {
	case brokerv1.PatchMode_PATCH_MODE_DRY_RUN:
		return patch.DryRun
	case brokerv1.PatchMode_PATCH_MODE_APPLY:
		return patch.Apply
	}
	return patch.Mode(m.String())
}

func patchState(st patch.State) brokerv1.PatchState {
	switch st {
	case patch.Running:
		return brokerv1.PatchState_PATCH_STATE_RUNNING
	case patch.Finished:
		return brokerv1.PatchState_PATCH_STATE_FINISHED
	case patch.FailedToStart:
		return brokerv1.PatchState_PATCH_STATE_FAILED_TO_START
	case patch.Interrupted:
		return brokerv1.PatchState_PATCH_STATE_INTERRUPTED
	}
	return brokerv1.PatchState_PATCH_STATE_UNKNOWN
}

func clipText(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// detachedLauncher is the patch runs' launcher: the broker's one launcher
// in its detached mode (StartDetached: the run's own cgroups with the
// patch memory and task caps, no_new_privs, its own session, its
// deadline, the whole tree killed at the end), not tied to any request.
// It takes no concurrent-run slot: patch runs go one at a time on their
// own, and a long upgrade must not hold a diagnostic slot.
//
// No Landlock domain: diagnostic runs are confined so that they write
// nothing, but a patch run's whole purpose is to write where a package
// manager writes (/usr, /etc, /var, /boot), fetch over TCP and start
// maintainer scripts that signal daemons; a ruleset loose enough for
// apt, dpkg and their hooks would block nothing they could not already
// do as root. What bounds a patch run is the pinned script, its fixed
// argv and environment, its deadline and its cgroup.
type detachedLauncher struct{ runner *execute.Runner }

func (l detachedLauncher) Launch(s patch.Spec) (patch.Process, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", s.Program, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("launch %s: %w", s.Program, err)
	}
	// The launch fails fast (program checks, cgroup setup); it never waits
	// for a slot.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	proc, err := l.runner.StartDetached(ctx, execute.Spec{
		Path: s.Program, Argv: s.Argv, Env: s.Env, Stdout: outW, Stderr: errW, Extra: s.Files,
		Limits: execute.Limits{Timeout: s.Timeout, ChildMemory: s.MemoryBytes, ChildTasks: s.Tasks},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("launch %s: %w", s.Program, err)
	}
	return &detachedRun{proc: proc, stdout: captureCapped(outR, s.OutputBytes), stderr: captureCapped(errR, s.OutputBytes)}, nil
}

// detachedRun is a started patch run and the capture of its output.
type detachedRun struct {
	proc           *execute.Process
	stdout, stderr <-chan capturedOutput
}

func (r *detachedRun) Wait() patch.Exit {
	x, err := r.proc.Wait(context.Background())
	// The launcher has killed and reaped the whole tree: no writer of the
	// pipes is left, so both captures reach EOF.
	out, errOut := <-r.stdout, <-r.stderr
	ex := patch.Exit{
		Code: x.Code, Signal: x.Signal, Stdout: out.b, Stderr: errOut.b,
		StdoutTruncated: out.truncated, StderrTruncated: errOut.truncated,
		TimedOut: x.TimedOut, Killed: x.Killed, MemoryLimitHit: x.MemoryLimitHit, TaskLimitHit: x.TaskLimitHit,
		Duration: x.End.Sub(x.Start),
	}
	if err != nil {
		ex.Lost = err
	}
	return ex
}

func (r *detachedRun) Kill() { r.proc.Kill() }

type capturedOutput struct {
	b         []byte
	truncated bool
}

// captureCapped reads f to EOF on its own goroutine, keeping at most limit
// bytes and reading (and dropping) the rest, so the script never blocks on
// a full pipe. It closes f.
func captureCapped(f *os.File, limit int64) <-chan capturedOutput {
	ch := make(chan capturedOutput, 1)
	go func() {
		defer f.Close()
		b, _ := io.ReadAll(io.LimitReader(f, limit))
		n, _ := io.Copy(io.Discard, f)
		ch <- capturedOutput{b: b, truncated: n > 0}
	}()
	return ch
}
