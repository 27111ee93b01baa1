package broker

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/nannyai/nannyagent/ipc/peerauth"
	"github.com/nannyai/nannyagent/policy"
)

// Where a request's bytes live before the broker decodes it. gRPC reads a
// request message whole into memory, inside the handler's call to decode
// it: only then does it open the stream's flow-control window to the
// message's length, up to the receive limit (request_bytes). Before that a
// stream holds at most its fixed 64 KiB window (unixsock.ServerOptions).
// So the broker takes a read slot before it lets gRPC read a message, and
// returns it once the message is decoded or refused: at most
// RequestsReadAtOnce messages, each at most request_bytes, are in memory
// across all connections and streams. A request waits for a slot (the
// stream holds its window meanwhile) rather than being refused. A stream
// must be read within the read timeout of its headers, waiting included:
// a client that opens streams and never sends their messages loses them.

// readSlots is how many requests the broker reads at once.
const readSlots = policy.RequestsReadAtOnce

// defaultReadTimeout bounds the time from a request's headers to its
// decoded message.
const defaultReadTimeout = 10 * time.Second

// errReadTimeout ends a stream whose message did not arrive in time.
var errReadTimeout = errors.New("the request was not read within the read timeout")

// readSlotsSem is the read slots.
type readSlotsSem chan struct{}

// acquire waits for a slot until ctx ends.
func (r readSlotsSem) acquire(ctx context.Context) error {
	select {
	case r <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (r readSlotsSem) release() { <-r }

// readDeadline is the timer that ends a stream not read in time.
type readDeadline struct{ timer *time.Timer }

type readDeadlineKey struct{}

// read marks the request in ctx as read: its deadline no longer applies.
func read(ctx context.Context) {
	if d, ok := ctx.Value(readDeadlineKey{}).(*readDeadline); ok {
		d.timer.Stop()
	}
}

// tap admits a new stream when its headers arrive, before anything of the
// message is read: only methods in the table, each with a read deadline.
// It runs in the connection's reader and must not block.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if _, ok := s.lookup(info.FullMethodName); !ok {
		p, _ := peerauth.FromContext(ctx)
		s.dlog.request(p, unknownRPC(info.FullMethodName), &audit{decision: decisionDeny, reason: reasonUnknownMethod}, 0, nil)
		return nil, status.Error(codes.PermissionDenied, "request type not permitted")
	}
	ctx, cancel := context.WithCancelCause(ctx)
	d := &readDeadline{timer: time.AfterFunc(s.cfg.ReadTimeout, func() { cancel(errReadTimeout) })}
	// The stream's end stops the timer too (the context is then done).
	context.AfterFunc(ctx, func() { d.timer.Stop() })
	return context.WithValue(ctx, readDeadlineKey{}, d), nil
}

// reasonUnknownMethod is the decision log's reason for a method that is
// not in the request table.
const reasonUnknownMethod = "request type not in the broker's table"

// unknownRPC is an unknown method's name for the log, bounded: the caller
// chose it.
func unknownRPC(method string) string {
	const maxLogged = 128
	if len(method) > maxLogged {
		method = method[:maxLogged] + truncationMarker
	}
	return "unknown " + method
}

// unknownMethod answers a method gRPC does not know. The admission tap
// refuses these first; this keeps the refusal, and its log line, even
// without it.
func (s *Server) unknownMethod(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	p, _ := peerauth.FromContext(stream.Context())
	if c := callFrom(stream.Context()); c != nil {
		c.logged.Store(true)
	}
	s.dlog.request(p, unknownRPC(method), &audit{decision: decisionDeny, reason: reasonUnknownMethod}, 0, nil)
	return status.Error(codes.PermissionDenied, "request type not permitted")
}

// call follows one RPC through gRPC, so that one refused before any
// handler ran (an unsupported encoding, a malformed header) still reaches
// the decision log.
type call struct {
	method string
	start  time.Time
	logged atomic.Bool
}

type callKey struct{}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// callLog is the gRPC stats handler that logs RPCs no handler logged.
type callLog struct{ s *Server }

func (l callLog) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, callKey{}, &call{method: info.FullMethodName, start: time.Now()})
}

func (l callLog) HandleRPC(ctx context.Context, st stats.RPCStats) {
	end, ok := st.(*stats.End)
	c := callFrom(ctx)
	if !ok || c == nil || c.logged.Load() {
		return
	}
	name := unknownRPC(c.method)
	if e, ok := l.s.lookup(c.method); ok {
		name = e.name
	}
	p, _ := peerauth.FromContext(ctx)
	reason := "refused by the transport"
	if end.Error != nil {
		reason = status.Convert(end.Error).Message()
	}
	l.s.dlog.request(p, name, &audit{decision: decisionDeny, reason: reason}, time.Since(c.start), nil)
}

func (l callLog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (l callLog) HandleConn(context.Context, stats.ConnStats) {}
