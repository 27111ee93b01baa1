package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/test/stack"
)

// TestEveryRPCIsDecidedAndLogged sends every RPC, allowed and refused,
// and a method outside the table, as the worker's account through the
// real broker, and finds the decision line of each, with the worker's uid.
func TestEveryRPCIsDecidedAndLogged(t *testing.T) {
	requireRoot(t)
	host, err := os.Hostname()
	if err != nil || strings.ContainsAny(host, "._") {
		t.Skipf("hostname %q cannot be a Proxmox node name", host)
	}
	pve := fakeProxmox(t, host)
	// A guest config that is a link out of the node's directory: pmxcfs
	// reads refuse it.
	root := strings.Fields(pve[strings.Index(pve, "pmxcfs_root:"):])[1]
	if err := os.Symlink("/etc/shadow", filepath.Join(root, "nodes", host, "lxc", "101.conf")); err != nil {
		t.Fatal(err)
	}
	policy := pve + `commands:
  - {id: "true", program: /usr/bin/true}
traces:
  bpftrace: /usr/bin/bpftrace
  kinds: [tracepoint]
  rules:
    - {id: trace-sched, kind: tracepoint, target: "sched:*"}
`
	s := startStack(t, stack.Options{Policy: policy})
	c, conn := workerClient(t, s)
	ctx := ctxT(t)
	type sent struct {
		rpc, decision string
		call          func() error
	}
	cmd := func(argv ...string) func() error {
		return func() error {
			_, err := c.RunCommand(ctx, &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: argv}}})
			return err
		}
	}
	traceSpec := func(kind brokerv1.TraceKind, target string) func() error {
		return func() error {
			_, err := c.RunTrace(ctx, &brokerv1.RunTraceRequest{Spec: &brokerv1.TraceSpec{Kind: kind, Target: target, Program: target, Duration: durationpb.New(200 * time.Millisecond)}})
			return err
		}
	}
	pget := func(path string) func() error {
		return func() error {
			_, err := c.ProxmoxGet(ctx, &brokerv1.ProxmoxGetRequest{Path: path})
			if status.Code(err) == codes.PermissionDenied {
				return nil
			}
			return err
		}
	}
	calls := []sent{
		{"Probe", "allow", func() error { _, err := c.Probe(ctx, &brokerv1.ProbeRequest{}); return err }},
		{"CollectMetrics", "allow", func() error { _, err := c.CollectMetrics(ctx, &brokerv1.CollectMetricsRequest{}); return err }},
		{"RunCommand", "allow", cmd("true")},
		{"RunCommand", "deny", cmd("id")},
		{"RunTrace", "deny", traceSpec(brokerv1.TraceKind_TRACE_KIND_RAW, "BEGIN { exit(); }")},
		{"ProxmoxGet", "allow", pget("/cluster/status")},
		{"ProxmoxGet", "deny", pget("/nodes/" + host + "/lxc/101/config")},
		{"ProxmoxGet", "deny", pget("/nodes/other/status")},
		{"RunPatch", "deny", func() error {
			script := []byte("#!/bin/sh\n")
			sum := sha256.Sum256(script)
			resp, err := c.RunPatch(ctx, &brokerv1.RunPatchRequest{OperationId: "op", Script: script, Sha256: hex.EncodeToString(sum[:]), Mode: brokerv1.PatchMode_PATCH_MODE_DRY_RUN})
			if err == nil && resp.GetState() != brokerv1.PatchState_PATCH_STATE_REFUSED {
				return fmt.Errorf("default policy: %v", resp)
			}
			return err
		}},
		// No run of "op" exists: NotFound, logged as an error.
		{"PatchResult", "error", func() error {
			_, err := c.PatchResult(ctx, &brokerv1.PatchResultRequest{OperationId: "op"})
			if status.Code(err) == codes.NotFound {
				return nil
			}
			return err
		}},
		{"Reboot", "deny", func() error { _, err := c.Reboot(ctx, &brokerv1.RebootRequest{RebootId: "r"}); return err }},
	}
	if _, err := os.Stat("/sys/kernel/tracing/events/sched"); err == nil {
		calls = append(calls, sent{"RunTrace", "allow", traceSpec(brokerv1.TraceKind_TRACE_KIND_TRACEPOINT, "sched:sched_process_exec")})
	} else {
		t.Logf("tracefs not mounted: no allowed trace (%v)", err)
	}
	for _, sc := range calls {
		if err := sc.call(); err != nil {
			t.Fatalf("%s (%s): %v", sc.rpc, sc.decision, err)
		}
	}
	err = conn.Invoke(ctx, "/nannyagent.broker.v1.BrokerService/Exec", &brokerv1.ProbeRequest{}, &brokerv1.ProbeResponse{})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("unknown method: %v", err)
	}
	calls = append(calls, sent{rpc: "unknown /nannyagent.broker.v1.BrokerService/Exec", decision: "deny"})

	lines := decisions(t, s)
	used := make([]bool, len(lines))
	for _, sc := range calls {
		found := false
		for i, l := range lines {
			if !used[i] && l["rpc"] == sc.rpc && l["decision"] == sc.decision && l["peer_uid"] == float64(s.Worker.UID) {
				used[i], found = true, true
				break
			}
		}
		if !found {
			t.Errorf("no %s decision line for %s from uid %d", sc.decision, sc.rpc, s.Worker.UID)
		}
	}
	if t.Failed() {
		t.Logf("decision lines: %v", lines)
	}
	for i, l := range lines {
		if used[i] && (l["policy_sha256"] == "" || l["rule"] == nil) {
			t.Errorf("incomplete decision line %v", l)
		}
	}
}

// TestDecisionLogRedactsSecrets: passwords on command lines (which the
// per-tool rules find only with the program name) and secrets in a denied
// path never reach the log the broker process writes.
func TestDecisionLogRedactsSecrets(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{Policy: `version: 1
commands:
  - id: curl
    program: /usr/bin/curl
    options:
      - {opt: [-u, --user], value: {type: string, pattern: "[a-z]+:[A-Za-z0-9]+"}}
      - {opt: [-s]}
    operands: [{name: url, type: string, pattern: "http://127\\.0\\.0\\.1:9/"}]
  - id: cat
    program: /usr/bin/cat
    operands: [{name: file, type: path, roots: [/var/log], open: fd}]
`})
	c, _ := workerClient(t, s)
	secrets := map[string][][]string{
		"MysqlSecret1": {{"mysql", "-pMysqlSecret1", "-h", "db"}},
		"CurlSecret2":  {{"curl", "-s", "-u", "bob:CurlSecret2", "http://127.0.0.1:9/"}},
		"SshpassSecr3": {{"sshpass", "-p", "SshpassSecr3", "ssh", "host"}},
		"PipeSecret4":  {{"true"}, {"mysql", "--password=PipeSecret4"}},
		"PathSecret5":  {{"cat", "/etc/app/password=PathSecret5"}},
		"ghp_0123456789abcdefghijABCDEFGHIJ012345": {{"cat", "/etc/ghp_0123456789abcdefghijABCDEFGHIJ012345"}},
	}
	for _, stages := range secrets {
		req := &brokerv1.RunCommandRequest{}
		for _, argv := range stages {
			req.Stages = append(req.Stages, &brokerv1.Stage{Argv: argv})
		}
		if _, err := c.RunCommand(ctxT(t), req); err != nil {
			t.Fatal(err)
		}
	}
	log := s.BrokerProcess().Log()
	for secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("%s is in the broker's log", secret)
		}
	}
	// The lines are there, and keep what is not secret.
	var curl, path bool
	for _, l := range decisions(t, s) {
		argv := fmt.Sprint(l["argv"])
		curl = curl || l["program"] == "/usr/bin/curl" && l["decision"] == "allow" && strings.Contains(argv, "bob:[REDACTED]")
		path = path || strings.Contains(fmt.Sprint(l["reason"]), "/etc/app/password=[REDACTED]")
	}
	if !curl || !path {
		t.Errorf("redacted lines missing (curl %v, path %v):\n%s", curl, path, log)
	}
}

// TestOversizeRequestsRefusedBeforeDecoding: the attack of issue 12 as
// the worker's account. A RunCommand of 2,000,000 empty stages is refused
// with one reason and no per-stage decision; a request above request_bytes
// never reaches a handler and is logged; one stage, argument or byte over
// the policy's limits is refused with the policy's words, and exactly at
// them is judged by the rules.
func TestOversizeRequestsRefusedBeforeDecoding(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{Policy: `version: 1
limits: {request_bytes: 16MiB, pipeline_stages: 3, argv_count: 4, argv_bytes: 64}
commands:
  - {id: echo, program: /usr/bin/echo, operands: [{type: string, pattern: ".*", count: 0-3}]}
`,
		// The test's client marshals 2,000,000 stages after it sent the
		// headers; under the race detector that can outlast the default
		// read timeout.
		ExtraBrokerArgs: []string{"--read-timeout", "60s"}})
	c, _ := workerClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	huge := &brokerv1.RunCommandRequest{Stages: make([]*brokerv1.Stage, 2_000_000)}
	empty := &brokerv1.Stage{Argv: []string{""}}
	for i := range huge.Stages {
		huge.Stages[i] = empty
	}
	resp, err := c.RunCommand(ctx, huge)
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDecision(); d.GetAllowed() || len(d.GetStages()) != 0 || !strings.Contains(d.GetReason(), "this one is 8000000") {
		t.Errorf("2,000,000 stages: allowed %v, %d stage decisions, reason %q", d.GetAllowed(), len(d.GetStages()), d.GetReason())
	}
	_, err = c.RunCommand(ctx, &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"echo", strings.Repeat("A", 17<<20)}}}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("17 MiB request: %v, want ResourceExhausted", err)
	}
	echo := func(stages ...[]string) *brokerv1.Decision {
		req := &brokerv1.RunCommandRequest{}
		for _, argv := range stages {
			req.Stages = append(req.Stages, &brokerv1.Stage{Argv: argv})
		}
		r, err := c.RunCommand(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r.GetDecision()
	}
	at := []string{"echo", strings.Repeat("b", 20), strings.Repeat("c", 20), strings.Repeat("d", 20)} // 4 arguments, 64 bytes
	if d := echo(at, at, at); !d.GetAllowed() {
		t.Errorf("at every limit: %v", d)
	}
	for name, tc := range map[string]struct {
		stages [][]string
		reason string
	}{
		"a stage too many":     {[][]string{at, at, at, at}, "a pipeline may have at most 3 stages; this one has 4"},
		"an argument too many": {[][]string{at, append(at[:3:3], "e", "f")}, "stage 2: too many arguments (5; the limit is 4)"},
		"a byte too many":      {[][]string{at, at, append(at[:3:3], strings.Repeat("d", 21))}, "stage 3: arguments too long (65 bytes; the limit is 64)"},
	} {
		if d := echo(tc.stages...); d.GetAllowed() || d.GetReason() != tc.reason || len(d.GetStages()) != 0 {
			t.Errorf("%s: %q (%d stage decisions), want %q", name, d.GetReason(), len(d.GetStages()), tc.reason)
		}
	}
	var sawHuge, sawLimit bool
	for _, l := range decisions(t, s) {
		reason := fmt.Sprint(l["reason"])
		sawHuge = sawHuge || l["rpc"] == "RunCommand" && l["decision"] == "deny" && strings.Contains(reason, "8000000")
		sawLimit = sawLimit || l["rpc"] == "RunCommand" && l["decision"] == "deny" && strings.Contains(reason, "larger than max")
	}
	if !sawHuge || !sawLimit {
		t.Errorf("refusals not logged (2,000,000 stages %v, over request_bytes %v)", sawHuge, sawLimit)
	}
}

// TestRequestBytesIsTheReceiveLimit: the policy's request_bytes, not a
// transport default, decides what the broker reads; patch_script_bytes is
// judged before the script is decoded.
func TestRequestBytesIsTheReceiveLimit(t *testing.T) {
	requireRoot(t)
	script := make([]byte, 3<<20)
	for _, tc := range []struct {
		requestBytes string
		code         codes.Code
		reason       string
	}{
		{"2MiB", codes.ResourceExhausted, ""},
		{"4MiB", codes.OK, "the patch request is 3145737 bytes; patch_script_bytes is 1048576"},
	} {
		s := startStack(t, stack.Options{Policy: "version: 1\nlimits: {request_bytes: " + tc.requestBytes + "}\n"})
		c, _ := workerClient(t, s)
		resp, err := c.RunPatch(ctxT(t), &brokerv1.RunPatchRequest{OperationId: "op", Script: script})
		if status.Code(err) != tc.code || resp.GetReason() != tc.reason {
			t.Errorf("request_bytes %s: %v %v, want %v %q", tc.requestBytes, resp, err, tc.code, tc.reason)
		}
	}
}

// TestReadSlots: at most 16 requests are read at once. With 16 streams
// that sent their headers and stalled, the next request waits for a slot
// (and, given a short deadline, gives up and is logged); once the stalled
// streams reach the read timeout and are dropped, requests are served.
func TestReadSlots(t *testing.T) {
	requireRoot(t)
	s := startStack(t, stack.Options{ExtraBrokerArgs: []string{"--read-timeout", "2s"}})
	relay := startRelay(t, s)
	c, _ := workerClient(t, s)
	if _, err := c.Probe(ctxT(t), &brokerv1.ProbeRequest{}); err != nil {
		t.Fatal(err)
	}
	held := holdStreams(t, relay, brokerv1.BrokerService_Probe_FullMethodName, 16)
	defer held.close()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		_, err = c.Probe(ctx, &brokerv1.ProbeRequest{})
		cancel()
		if err != nil {
			break
		}
	}
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("with every read slot held: %v", err)
	}
	// The stalled streams are dropped at the read timeout, and the slots
	// come back.
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if _, err := c.Probe(ctx, &brokerv1.ProbeRequest{}); err != nil {
		t.Errorf("after the read timeout: %v", err)
	}
	waited, timedOut := 0, 0
	for _, l := range decisions(t, s) {
		reason := fmt.Sprint(l["reason"])
		if l["decision"] == "deny" && strings.Contains(reason, "waited for a read slot") && l["peer_uid"] == float64(s.Worker.UID) {
			waited++
		}
		if l["decision"] == "deny" && strings.Contains(reason, "not read within the read timeout") {
			timedOut++
		}
	}
	if waited == 0 || timedOut != 16 {
		t.Errorf("logged: %d requests that gave up waiting, %d dropped streams (want 16)", waited, timedOut)
	}
}

// TestConcurrentCommandsFollowsReload: concurrent_commands bounds the runs
// (and the same number may wait, the rest are refused at once); after
// SIGHUP the new value applies.
func TestConcurrentCommandsFollowsReload(t *testing.T) {
	requireRoot(t)
	const policy = `version: 1
limits: {concurrent_commands: %d, command_timeout: 20s}
commands:
  - {id: sleep, program: /usr/bin/sleep, operands: [{type: number, min: 1, max: 9}]}
`
	s := startStack(t, stack.Options{Policy: fmt.Sprintf(policy, 1)})
	c, _ := workerClient(t, s)
	burst := func(n int) (ran, busy int, reasons []string) {
		var mu sync.Mutex
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				r, err := c.RunCommand(ctxT(t), &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"sleep", "1"}}}})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Error(err)
				case r.GetDecision().GetAllowed():
					ran++
				default:
					busy++
					reasons = append(reasons, r.GetDecision().GetReason())
				}
			})
		}
		wg.Wait()
		return ran, busy, reasons
	}
	if ran, busy, reasons := burst(3); ran != 2 || busy != 1 || !strings.Contains(reasons[0], "1 running and 1 waiting") {
		t.Errorf("concurrent_commands 1: %d ran, %d refused %v; want 2 and 1", ran, busy, reasons)
	}
	if err := os.WriteFile(s.PolicyFile, []byte(fmt.Sprintf(policy, 3)), 0o644); err != nil {
		t.Fatal(err)
	}
	before := strings.Count(s.BrokerProcess().Log(), "policy reloaded")
	if err := s.BrokerProcess().Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); strings.Count(s.BrokerProcess().Log(), "policy reloaded") == before; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no reload")
		}
	}
	if ran, busy, reasons := burst(8); ran != 6 || busy != 2 || !strings.Contains(reasons[0], "3 running and 3 waiting") {
		t.Errorf("concurrent_commands 3 after SIGHUP: %d ran, %d refused %v; want 6 and 2", ran, busy, reasons)
	}
}

// TestOutputLimitIsThePolicys: a policy that allows 16 MiB of stdout gets
// 12 MiB back whole (the runner once clamped to 8 MiB, and the transport
// refused answers over 16 MiB).
func TestOutputLimitIsThePolicys(t *testing.T) {
	requireRoot(t)
	dir, err := stack.WorldReadableTempDir("nannyagent-big-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	big := filepath.Join(dir, "big.log")
	if err := os.WriteFile(big, bytesOf('x', 12<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startStack(t, stack.Options{Policy: fmt.Sprintf(`version: 1
limits: {stdout_bytes: 16MiB, stderr_bytes: 16MiB}
commands:
  - id: cat
    program: /usr/bin/cat
    operands: [{name: file, type: path, roots: [%q], open: fd, count: 1-2}]
`, dir)})
	c, _ := workerClient(t, s)
	resp, err := c.RunCommand(ctxT(t), &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"cat", big}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetStdout()) != 12<<20 || resp.GetStdoutTruncated() || resp.GetExitCode() != 0 {
		t.Errorf("stdout %d bytes, truncated %v, exit %d", len(resp.GetStdout()), resp.GetStdoutTruncated(), resp.GetExitCode())
	}
	// 24 MiB: cut at the policy's 16 MiB, and the answer still arrives.
	resp, err = c.RunCommand(ctxT(t), &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{{Argv: []string{"cat", big, big}}}})
	if err != nil || len(resp.GetStdout()) != 16<<20 || !resp.GetStdoutTruncated() {
		t.Errorf("24 MiB of stdout: %d bytes, truncated %v, %v", len(resp.GetStdout()), resp.GetStdoutTruncated(), err)
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestWatchdogOnlyWhileServing: WATCHDOG=1 goes to systemd while the broker
// answers a real round trip through its socket, stops when it cannot
// (its read budget held by stalled streams), and resumes after.
func TestWatchdogOnlyWhileServing(t *testing.T) {
	requireRoot(t)
	n := listenNotify(t)
	s := startStack(t, stack.Options{BrokerEnv: []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=400000"}})
	start := time.Now()
	if !n.waitPings(start, 2, 5*time.Second) {
		t.Fatalf("no watchdog pings while serving\n%s", s.BrokerProcess().Log())
	}
	held := holdStreams(t, s.BrokerSocket, brokerv1.BrokerService_Probe_FullMethodName, 16)
	// A round trip already under way may still end in a ping.
	time.Sleep(500 * time.Millisecond)
	quiet := time.Now()
	time.Sleep(1500 * time.Millisecond)
	if got := n.since(quiet); got != 0 {
		t.Errorf("%d watchdog pings while the broker could not answer", got)
	}
	held.close()
	if !n.waitPings(time.Now(), 2, 5*time.Second) {
		t.Errorf("pings did not resume\n%s", s.BrokerProcess().Log())
	}
	if !strings.Contains(s.BrokerProcess().Log(), "watchdog pings withheld") {
		t.Error("withheld pings are not logged")
	}
}
