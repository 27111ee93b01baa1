package broker

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/nannyai/nannyagent/policy"
)

// A request is measured before it is decoded. Decoding is where a small
// message grows: 2,000,000 empty argv stages are 8 MB on the wire and over
// 300 MB as Go values, and everything done per element afterwards grows it
// again. So the codec hands the handler's message to inbound.decode, which
// first compares the wire size with the largest request of that kind the
// policy's limits admit (O(1)), then counts the repeated elements without
// decoding them (O(n) time, O(1) memory), and only then decodes. A refused
// request is never decoded: it costs the bytes gRPC already read, and its
// refusal carries one reason.

// shape is how a request kind is measured.
type shape struct {
	// max is the largest wire size a request within lim can have.
	max func(lim policy.Limits) int
	// count checks the elements of repeated fields; nil when the kind has
	// none. It returns the reason for a refusal, or "".
	count func(b []byte, lim policy.Limits) string
	// tooLarge words the refusal of a request over max, naming the limit
	// the caller can act on; nil for the general wording.
	tooLarge func(size int, lim policy.Limits) string
}

// inbound is the message a handler asks the codec to fill.
type inbound struct {
	rpc    string
	shape  shape
	limits policy.Limits
	msg    proto.Message
	// refused says why the request was not decoded.
	refused string
	// size is the request's wire size.
	size    int
	decoded bool
}

// errSecondMessage refuses a second message on a unary call (gRPC reads it
// to check the call's cardinality): it is not decoded either.
var errSecondMessage = errors.New("more than one request message")

// decode measures data and, when it fits the shape, decodes it into msg.
func (in *inbound) decode(data mem.BufferSlice) error {
	if in.decoded {
		return errSecondMessage
	}
	in.decoded = true
	in.size = data.Len()
	if max := in.shape.max(in.limits); in.size > max {
		in.refused = fmt.Sprintf("a %s request within this policy's limits is at most %d bytes; this one is %d", in.rpc, max, in.size)
		if in.shape.tooLarge != nil {
			in.refused = in.shape.tooLarge(in.size, in.limits)
		}
		return nil
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	if in.shape.count != nil {
		if in.refused = in.shape.count(b, in.limits); in.refused != "" {
			return nil
		}
	}
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, in.msg); err != nil {
		return fmt.Errorf("malformed %s request: %w", in.rpc, err)
	}
	return nil
}

// codec is gRPC's proto codec, except that requests the broker reads go
// through inbound.decode.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2(protocodec.Name)} }

func (c codec) Name() string { return protocodec.Name }

func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if in, ok := v.(*inbound); ok {
		return in.decode(data)
	}
	return c.proto.Unmarshal(data, v)
}

// Wire sizes of the parts of a message: a field's tag and a length prefix
// take at most these many bytes.
const (
	tagBytes    = 2
	lengthBytes = 5
	fieldBytes  = tagBytes + lengthBytes
)

// Protocol bounds on fields that no policy limit covers.
const (
	// maxIDBytes bounds ids the caller chooses (a command's id, an
	// operation or reboot id).
	maxIDBytes = 256
	// maxSmallField bounds short identifying fields: a sha256 in hex, a
	// vmid.
	maxSmallField = 128
	// maxTraceSpecBytes bounds a trace spec: a raw program (at most
	// 64 KiB) and short fields.
	maxTraceSpecBytes = 80 << 10
	// maxProxmoxPathBytes bounds a Proxmox API path, with room to spare
	// over what the reader accepts.
	maxProxmoxPathBytes = 1 << 10
	// maxRebootReasonBytes bounds the operator's reason a reboot request
	// carries for the warning to users (the broker keeps 160 bytes of it;
	// the worker clips the backend's text to fit).
	maxRebootReasonBytes = 256
	// maxExclusions bounds the package names a patch run may exclude,
	// each at most maxSmallField bytes.
	maxExclusions = 256
)

// emptyShape is a request with no fields.
var emptyShape = shape{max: func(policy.Limits) int { return 0 }}

// fixedShape is a request of short fields only.
func fixedShape(n int) shape { return shape{max: func(policy.Limits) int { return n }} }

// commandShape measures a RunCommandRequest: id, command line, and
// pipeline_stages stages of at most argv_count arguments and argv_bytes
// bytes each.
var commandShape = shape{
	max: func(l policy.Limits) int {
		stage := l.ArgvBytes + l.ArgvCount*fieldBytes + 3*tagBytes
		return fieldBytes + maxIDBytes + fieldBytes + policy.MaxCommandLine + l.PipelineStages*(fieldBytes+stage)
	},
	count: countCommand,
}

// countCommand counts stages and, in each, arguments and their bytes,
// with the reasons the policy gives for the same refusals.
func countCommand(b []byte, l policy.Limits) string {
	stages := 0
	var refusal string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		if num != commandStagesField || typ != protowire.BytesType {
			return nil
		}
		stages++
		if stages > l.PipelineStages || refusal != "" {
			return nil
		}
		args, bytes := 0, 0
		if err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
			if num == stageArgvField && typ == protowire.BytesType {
				args++
				bytes += len(v)
			}
			return nil
		}); err != nil {
			return err
		}
		switch {
		case args > l.ArgvCount:
			refusal = fmt.Sprintf("stage %d: too many arguments (%d; the limit is %d)", stages, args, l.ArgvCount)
		case bytes > l.ArgvBytes:
			refusal = fmt.Sprintf("stage %d: arguments too long (%d bytes; the limit is %d)", stages, bytes, l.ArgvBytes)
		}
		return nil
	})
	switch {
	case err != nil:
		return "malformed request: " + err.Error()
	case stages > l.PipelineStages:
		return fmt.Sprintf("a pipeline may have at most %d stages; this one has %d", l.PipelineStages, stages)
	}
	return refusal
}

// patchShape measures a RunPatchRequest: the script within
// patch_script_bytes; the operation id and the script's name; the hash,
// vmid and mode; check_only; and a bounded list of exclusions. The policy
// requires request_bytes to hold it (policy.PatchRequestRoom).
var patchShape = shape{
	max: func(l policy.Limits) int {
		return int(l.PatchScriptBytes) + fieldBytes + 2*(fieldBytes+maxIDBytes) + 3*(fieldBytes+maxSmallField) +
			tagBytes + 1 + maxExclusions*(fieldBytes+maxSmallField)
	},
	count: countPatch,
	tooLarge: func(size int, l policy.Limits) string {
		return fmt.Sprintf("the patch request is %d bytes; patch_script_bytes is %d", size, l.PatchScriptBytes)
	},
}

func countPatch(b []byte, l policy.Limits) string {
	exclusions := 0
	var refusal string
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case num == patchScriptField && int64(len(v)) > l.PatchScriptBytes:
			refusal = fmt.Sprintf("the patch script is %d bytes; patch_script_bytes is %d", len(v), l.PatchScriptBytes)
		case num == patchExclusionsField:
			exclusions++
		}
		return nil
	})
	switch {
	case err != nil:
		return "malformed request: " + err.Error()
	case exclusions > maxExclusions:
		return fmt.Sprintf("a patch run may exclude at most %d packages; this one excludes %d", maxExclusions, exclusions)
	}
	return refusal
}

// eachField calls fn with every field of the message b, in wire order; a
// length-delimited field's value is its bytes. It allocates nothing.
func eachField(b []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		if err := fn(num, typ, v); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}
