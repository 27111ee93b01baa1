package broker

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/policy"
)

// largestCommand is the largest RunCommandRequest the limits admit: every
// stage at its argument count and bytes, the longest id and command line.
func largestCommand(l policy.Limits) *brokerv1.RunCommandRequest {
	req := &brokerv1.RunCommandRequest{Id: strings.Repeat("i", maxIDBytes), CommandLine: strings.Repeat("c", policy.MaxCommandLine)}
	for range l.PipelineStages {
		argv := make([]string, l.ArgvCount)
		per := l.ArgvBytes / l.ArgvCount
		for i := range argv {
			argv[i] = strings.Repeat("a", per)
		}
		argv[0] += strings.Repeat("a", l.ArgvBytes-per*l.ArgvCount)
		req.Stages = append(req.Stages, &brokerv1.Stage{Argv: argv, StdoutToNull: true, StderrToNull: true, StderrToStdout: true})
	}
	return req
}

// largestRequests is, for each request kind, the largest request the
// limits admit.
func largestRequests(l policy.Limits) map[string]proto.Message {
	patch := &brokerv1.RunPatchRequest{OperationId: strings.Repeat("o", maxIDBytes), Script: make([]byte, l.PatchScriptBytes),
		Sha256: strings.Repeat("f", 64), Vmid: "999999999", Mode: brokerv1.PatchMode_PATCH_MODE_APPLY,
		ScriptName: strings.Repeat("s", maxIDBytes), CheckOnly: true}
	for range maxExclusions {
		patch.Exclusions = append(patch.Exclusions, strings.Repeat("p", maxSmallField))
	}
	return map[string]proto.Message{
		"Probe":          &brokerv1.ProbeRequest{},
		"CollectMetrics": &brokerv1.CollectMetricsRequest{},
		"RunCommand":     largestCommand(l),
		"RunTrace": &brokerv1.RunTraceRequest{Spec: &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_RAW,
			Program: strings.Repeat("p", 64<<10), Name: strings.Repeat("n", 256), Target: strings.Repeat("t", 256), Description: strings.Repeat("d", 4096)}},
		"ProxmoxGet":  &brokerv1.ProxmoxGetRequest{Path: "/" + strings.Repeat("p", 255)},
		"RunPatch":    patch,
		"PatchResult": &brokerv1.PatchResultRequest{OperationId: strings.Repeat("o", maxIDBytes)},
		"Reboot": &brokerv1.RebootRequest{RebootId: strings.Repeat("r", maxIDBytes), Vmid: strings.Repeat("9", maxIDBytes), CheckOnly: true,
			Reason: strings.Repeat("w", maxRebootReasonBytes)},
	}
}

// TestPatchRequestFitsRequestBytes: with the least request_bytes the
// policy accepts for its patch_script_bytes, the largest RunPatch request
// the shape admits still fits the transport's receive limit, so a script
// of patch_script_bytes can always reach the broker.
func TestPatchRequestFitsRequestBytes(t *testing.T) {
	for name, l := range map[string]policy.Limits{"defaults": policy.DefaultLimits(), "hard caps": policy.HardCaps()} {
		l.RequestBytes = l.PatchScriptBytes + policy.PatchRequestRoom
		b, err := proto.Marshal(largestRequests(l)["RunPatch"])
		if err != nil {
			t.Fatal(err)
		}
		if max := patchShape.max(l); int64(max) > l.RequestBytes || int64(len(b)) > l.RequestBytes {
			t.Errorf("%s: the shape admits %d bytes, the largest request is %d, request_bytes %d", name, max, len(b), l.RequestBytes)
		}
	}
}

// decodeAs runs a message through the codec as the server would.
func decodeAs(t testing.TB, e request, l policy.Limits, b []byte) *inbound {
	t.Helper()
	in := &inbound{rpc: e.name, shape: e.shape, limits: l, msg: e.newMsg()}
	if err := newCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, in); err != nil {
		t.Fatalf("%s: %v", e.name, err)
	}
	return in
}

// TestShapesAdmitTheLargestRequests: the largest request of each kind the
// limits admit is decoded, at the default limits and at the hard caps; one
// stage, argument or byte more is refused before decoding.
func TestShapesAdmitTheLargestRequests(t *testing.T) {
	s := &Server{}
	for name, lim := range map[string]policy.Limits{"defaults": policy.DefaultLimits(), "hard caps": policy.HardCaps()} {
		for _, e := range s.requestTable() {
			msg := largestRequests(lim)[e.name]
			b, err := proto.Marshal(msg)
			if err != nil {
				t.Fatal(err)
			}
			if in := decodeAs(t, e, lim, b); in.refused != "" || !proto.Equal(in.msg, msg) {
				t.Errorf("%s, %s (%d bytes): refused %q", name, e.name, len(b), in.refused)
			}
		}
	}
	lim := policy.DefaultLimits()
	e, _ := (&Server{table: s.requestTable()}).lookup(brokerv1.BrokerService_RunCommand_FullMethodName)
	over := map[string]func(*brokerv1.RunCommandRequest){
		"one stage more": func(r *brokerv1.RunCommandRequest) {
			r.CommandLine, r.Stages = "", append(r.Stages, &brokerv1.Stage{Argv: []string{"true"}})
		},
		"one argument more": func(r *brokerv1.RunCommandRequest) {
			r.Stages[1].Argv = append(r.Stages[1].Argv[:len(r.Stages[1].Argv)-1], "", "")
		},
		"one byte more": func(r *brokerv1.RunCommandRequest) { r.Stages[2].Argv[3] += "x" },
	}
	want := map[string]string{
		"one stage more":    "a pipeline may have at most 4 stages; this one has 5",
		"one argument more": "stage 2: too many arguments (65; the limit is 64)",
		"one byte more":     "stage 3: arguments too long (16385 bytes; the limit is 16384)",
	}
	for name, change := range over {
		req := largestCommand(lim)
		change(req)
		b, _ := proto.Marshal(req)
		if in := decodeAs(t, e, lim, b); in.refused != want[name] || proto.Size(in.msg) != 0 {
			t.Errorf("%s: refused %q, want %q (decoded %d bytes)", name, in.refused, want[name], proto.Size(in.msg))
		}
	}
	b, _ := proto.Marshal(&brokerv1.ProbeRequest{})
	b = append(b, 0x0a, 0x01, 'x') // an unknown field: Probe takes none
	pe, _ := (&Server{table: s.requestTable()}).lookup(brokerv1.BrokerService_Probe_FullMethodName)
	if in := decodeAs(t, pe, lim, b); !strings.Contains(in.refused, "a Probe request within this policy's limits is at most 0 bytes; this one is 3") {
		t.Errorf("probe with a field: %q", in.refused)
	}
}

// TestHugeRequestIsRefusedUndecoded: the attack of issue 12 (2,000,000
// stages of one empty argument, 8 MB) against a broker over its socket:
// one reason, no per-stage decision, nothing run.
func TestHugeRequestIsRefusedUndecoded(t *testing.T) {
	b := startBrokerWith(t, 0, "version: 1\nlimits: {request_bytes: 16MiB}\ncommands:\n  - {id: \"true\", program: /usr/bin/true}\n")
	req := &brokerv1.RunCommandRequest{Stages: make([]*brokerv1.Stage, 2_000_000)}
	one := &brokerv1.Stage{Argv: []string{""}}
	for i := range req.Stages {
		req.Stages[i] = one
	}
	resp, err := b.client.RunCommand(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	d := resp.GetDecision()
	if d.GetAllowed() || len(d.GetStages()) != 0 || !strings.Contains(d.GetReason(), "a RunCommand request within this policy's limits is at most") {
		t.Errorf("decision: allowed %v, %d stage decisions, reason %q", d.GetAllowed(), len(d.GetStages()), d.GetReason())
	}
	l := logLine(t, b.log.String(), "RunCommand")
	if l["decision"] != "deny" || l["program"] != nil || !strings.Contains(l["reason"].(string), "8000000") {
		t.Errorf("logged as %v", l)
	}
	// Five stages of one argument: small, but one stage too many.
	small := &brokerv1.RunCommandRequest{Stages: []*brokerv1.Stage{one, one, one, one, one}}
	resp, err = b.client.RunCommand(context.Background(), small)
	if err != nil || resp.GetDecision().GetReason() != "a pipeline may have at most 4 stages; this one has 5" || len(resp.GetDecision().GetStages()) != 0 {
		t.Errorf("five stages: %v %v", resp, err)
	}
}

// FuzzCountCommand: counting never fails on any bytes, and whatever it
// admits decodes within the limits.
func FuzzCountCommand(f *testing.F) {
	lim := policy.DefaultLimits()
	lim.PipelineStages, lim.ArgvCount, lim.ArgvBytes = 2, 3, 16
	for _, r := range []*brokerv1.RunCommandRequest{
		{Id: "cmd_1", Stages: []*brokerv1.Stage{{Argv: []string{"ps", "aux"}}, {Argv: []string{"head"}}}},
		{Stages: []*brokerv1.Stage{{Argv: []string{"a", "b", "c", "d"}}}},
		{Stages: []*brokerv1.Stage{{}, {}, {}}},
		{Stages: []*brokerv1.Stage{{Argv: []string{strings.Repeat("x", 20)}, StderrToNull: true}}},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Add([]byte{0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if countCommand(b, lim) != "" {
			return
		}
		var r brokerv1.RunCommandRequest
		if proto.Unmarshal(b, &r) != nil {
			return
		}
		if len(r.GetStages()) > lim.PipelineStages {
			t.Fatalf("%d stages admitted", len(r.GetStages()))
		}
		for _, st := range r.GetStages() {
			n := 0
			for _, a := range st.GetArgv() {
				n += len(a)
			}
			if len(st.GetArgv()) > lim.ArgvCount || n > lim.ArgvBytes {
				t.Fatalf("stage of %d arguments, %d bytes admitted", len(st.GetArgv()), n)
			}
		}
	})
}

// FuzzCountPatch: the same for patch requests.
func FuzzCountPatch(f *testing.F) {
	lim := policy.DefaultLimits()
	lim.PatchScriptBytes = 32
	for _, r := range []*brokerv1.RunPatchRequest{
		{OperationId: "op", Script: []byte("#!/bin/sh\necho hi\n"), Exclusions: []string{"linux-image", "openssl"}},
		{Script: make([]byte, 33)},
	} {
		b, _ := proto.Marshal(r)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if countPatch(b, lim) != "" {
			return
		}
		var r brokerv1.RunPatchRequest
		if proto.Unmarshal(b, &r) != nil {
			return
		}
		if int64(len(r.GetScript())) > lim.PatchScriptBytes || len(r.GetExclusions()) > maxExclusions {
			t.Fatalf("script of %d bytes, %d exclusions admitted", len(r.GetScript()), len(r.GetExclusions()))
		}
	})
}
