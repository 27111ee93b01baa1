package patching

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// localPolicyDir is where an operator adds policy text.
const localPolicyDir = "/etc/nannyagent/policy.d/"

// refusal explains a broker refusal; with a hint, the policy text that
// would allow the run and where it goes.
func refusal(resp *brokerv1.RunPatchResponse) string {
	msg := "refused by this host's policy: " + strings.TrimSuffix(resp.GetReason(), ".")
	if hint := resp.GetPolicyHint(); hint != "" {
		msg += ". To allow it, add this to a file in " + localPolicyDir + " (the broker reads it at its next start or on SIGHUP):\n" + hint
	}
	return msg
}

// brokerProblem says in words for an operator why a broker call failed. The
// broker's own messages are written for people; transport errors are not
// passed on.
func brokerProblem(err error) string {
	st := status.Convert(err)
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		return "the agent's privileged helper (nannyagent-broker) is not reachable; is nannyagent-broker.socket running?"
	case codes.DeadlineExceeded, codes.Canceled:
		return "the agent's privileged helper (nannyagent-broker) did not answer in time"
	case codes.Unimplemented:
		return "this nannyagent-broker cannot run patches; install the same version as the worker"
	case codes.InvalidArgument:
		return "the broker rejected the request: " + msg
	case codes.PermissionDenied:
		return "the broker refused the request: " + msg
	case codes.NotFound:
		return msg
	case codes.ResourceExhausted:
		return "the request or its answer is larger than the broker's limits allow"
	}
	return "the broker could not carry out the request: " + msg
}

// scriptURLProblem explains a script_url that is not fetched.
func scriptURLProblem(raw string, err error) string {
	if errors.Is(err, nannyapi.ErrForeignOrigin) {
		return fmt.Sprintf("the script_url %q is not on this agent's NannyAPI origin; scripts are fetched only from there, and that host was not contacted; nothing ran", clip(raw, 200))
	}
	return fmt.Sprintf("the script_url %q is not a NannyAPI file path (/api/files/<collection>/<record>/<file>); nothing ran", clip(raw, 200))
}

// resultOutcome turns a finished, failed or interrupted run into what is
// uploaded. A script that exited 0 on its own is a success; anything else
// is a failure with its explanation in error_msg and at the end of stderr.
func resultOutcome(lxcID string, r *brokerv1.PatchResultResponse) outcome {
	res := nannyapi.PatchResult{ExitCode: int(r.GetExitCode()), LXCID: lxcID, Stdout: r.GetStdout(), Stderr: r.GetStderr()}
	var msg string
	switch r.GetState() {
	case brokerv1.PatchState_PATCH_STATE_FINISHED:
		switch {
		case r.GetTimedOut():
			msg = r.GetError()
		case r.GetSignal() != "":
			msg = "the update script was killed by " + r.GetSignal()
		case r.GetExitCode() != 0:
			msg = fmt.Sprintf("the update script exited with status %d", r.GetExitCode())
			if line := lastLine(r.GetStderr()); line != "" {
				msg += ": " + line
			}
		}
		if msg != "" && r.GetError() != "" && !strings.Contains(msg, r.GetError()) {
			msg += "; " + r.GetError()
		}
	case brokerv1.PatchState_PATCH_STATE_FAILED_TO_START, brokerv1.PatchState_PATCH_STATE_INTERRUPTED:
		res.ExitCode = failExitCode
		msg = r.GetError()
	default:
		res.ExitCode = failExitCode
		msg = fmt.Sprintf("the broker reported the run in state %s: %s", r.GetState(), r.GetError())
	}
	if msg == "" && res.ExitCode != 0 {
		msg = fmt.Sprintf("the update script ended with status %d", res.ExitCode)
	}
	note := msg
	if note == "" {
		note = r.GetError() // a success with a note (truncated output)
	}
	if note != "" {
		res.Stderr = append(append([]byte(nil), res.Stderr...), []byte(ensureNewline(res.Stderr)+"nannyagent: "+note+"\n")...)
	}
	return outcome{result: res, errMsg: msg}
}

func ensureNewline(b []byte) string {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return "\n"
	}
	return ""
}

// lastLine is the last non-empty line of a script's stderr, clipped.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n \t"), "\n")
	return clip(strings.TrimSpace(lines[len(lines)-1]), 200)
}

func sha256Hex(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

func displayName(name string) string {
	if name == "" {
		return "the script"
	}
	return clip(name, 80)
}

// clip keeps text from the backend or a script short and printable.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > n {
		s = strings.ToValidUTF8(s[:n], "") + "…"
	}
	return s
}
