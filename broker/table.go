package broker

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// request is one entry of the broker's closed request table: the method,
// its name in the decision log, how its wire form is measured, its handler
// and the answer to a request refused before it was decoded.
type request struct {
	method string
	name   string
	shape  shape
	// newMsg returns an empty request message to decode into.
	newMsg func() proto.Message
	// handle serves a decoded request.
	handle func(ctx context.Context, req proto.Message) (any, error)
	// refuse answers a request refused by its shape, with only the reason.
	refuse func(reason string) (any, error)
}

// entry builds a table entry from a typed handler, so that the table
// cannot name a handler that does not exist and a handler cannot take the
// wrong message.
func entry[Req, Resp proto.Message](method, name string, sh shape, handle func(context.Context, Req) (Resp, error), refuse func(string) (Resp, error)) request {
	var zero Req
	typ := zero.ProtoReflect().Type()
	return request{
		method: method, name: name, shape: sh,
		newMsg: func() proto.Message { return typ.New().Interface() },
		handle: func(ctx context.Context, req proto.Message) (any, error) { return handle(ctx, req.(Req)) },
		refuse: func(reason string) (any, error) { return refuse(reason) },
	}
}

// requestTable is every request type the broker serves, each with its
// handler; a method that is not here is refused and logged.
func (s *Server) requestTable() []request {
	return []request{
		entry(brokerv1.BrokerService_Probe_FullMethodName, "Probe", emptyShape, s.Probe, refuseStatus[*brokerv1.ProbeResponse]),
		entry(brokerv1.BrokerService_RunCommand_FullMethodName, "RunCommand", commandShape, s.RunCommand, refuseCommand),
		entry(brokerv1.BrokerService_RunTrace_FullMethodName, "RunTrace", fixedShape(maxTraceSpecBytes), s.RunTrace, refuseTrace),
		entry(brokerv1.BrokerService_CollectMetrics_FullMethodName, "CollectMetrics", emptyShape, s.CollectMetrics, refuseStatus[*brokerv1.CollectMetricsResponse]),
		entry(brokerv1.BrokerService_ProxmoxGet_FullMethodName, "ProxmoxGet", fixedShape(maxProxmoxPathBytes), s.ProxmoxGet, refuseStatus[*brokerv1.ProxmoxGetResponse]),
		entry(brokerv1.BrokerService_RunPatch_FullMethodName, "RunPatch", patchShape, s.RunPatch, refusePatch),
		entry(brokerv1.BrokerService_PatchResult_FullMethodName, "PatchResult", fixedShape(fieldBytes+maxIDBytes), s.PatchResult, refuseStatus[*brokerv1.PatchResultResponse]),
		entry(brokerv1.BrokerService_Reboot_FullMethodName, "Reboot", fixedShape(2*(fieldBytes+maxIDBytes)+2*tagBytes+fieldBytes+maxRebootReasonBytes), s.Reboot, refuseReboot),
	}
}

// serviceDesc registers the table with gRPC. Each method's handler hands
// decoding to the broker (see inbound), so a request is measured before it
// is decoded; gRPC's generated handlers decode first.
func (s *Server) serviceDesc() *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{
		ServiceName: brokerv1.BrokerService_ServiceDesc.ServiceName,
		HandlerType: (*brokerv1.BrokerServiceServer)(nil),
		Metadata:    brokerv1.BrokerService_ServiceDesc.Metadata,
	}
	for _, e := range s.table {
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: methodName(e.method),
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				return s.serve(ctx, e, dec)
			},
		})
	}
	return desc
}

// methodName is the last element of a full method name.
func methodName(full string) string {
	for i := len(full) - 1; i >= 0; i-- {
		if full[i] == '/' {
			return full[i+1:]
		}
	}
	return full
}

func (s *Server) lookup(method string) (request, bool) {
	for _, e := range s.table {
		if e.method == method {
			return e, true
		}
	}
	return request{}, false
}

// refuseStatus answers a refused request of a kind whose refusals are
// gRPC errors.
func refuseStatus[Resp proto.Message](reason string) (Resp, error) {
	var zero Resp
	return zero, status.Error(codes.InvalidArgument, reason)
}

// refuseCommand answers a refused pipeline as a denial, the way the policy
// answers: the model reads "denied: <reason>". No stage is echoed.
func refuseCommand(reason string) (*brokerv1.RunCommandResponse, error) {
	return &brokerv1.RunCommandResponse{ExitCode: -1, Decision: &brokerv1.Decision{Reason: reason}}, nil
}

func refuseTrace(reason string) (*brokerv1.RunTraceResponse, error) {
	return &brokerv1.RunTraceResponse{Refused: true, Error: reason, ExitCode: -1}, nil
}

func refusePatch(reason string) (*brokerv1.RunPatchResponse, error) {
	return &brokerv1.RunPatchResponse{State: brokerv1.PatchState_PATCH_STATE_REFUSED, Reason: reason}, nil
}

func refuseReboot(reason string) (*brokerv1.RebootResponse, error) {
	return &brokerv1.RebootResponse{Reason: reason}, nil
}

// Field numbers the shapes count, read from the generated descriptors so
// that a renumbered field cannot be miscounted.
var (
	commandStagesField   = fieldNumber(&brokerv1.RunCommandRequest{}, "stages")
	stageArgvField       = fieldNumber(&brokerv1.Stage{}, "argv")
	patchScriptField     = fieldNumber(&brokerv1.RunPatchRequest{}, "script")
	patchExclusionsField = fieldNumber(&brokerv1.RunPatchRequest{}, "exclusions")
)

func fieldNumber(m proto.Message, name string) protowire.Number {
	f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if f == nil {
		panic(fmt.Sprintf("%s has no field %q", m.ProtoReflect().Descriptor().FullName(), name))
	}
	return f.Number()
}
