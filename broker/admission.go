package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/policy"
)

// Where a request's bytes live before the broker decodes it. gRPC reads a
// request message whole into memory before any handler sees it: each
// stream may hold up to the receive limit (request_bytes), and the
// transport allows MaxConnections × MaxConcurrentStreams streams. So the
// broker admits a stream only with a share of a fixed budget: when the
// stream's headers arrive (InTapHandle, before a byte of the message is
// read), it reserves request_bytes; the reservation is returned once the
// message is decoded or refused, or when the stream ends. A stream that
// finds the budget spent is refused at once, and logged. A reservation is
// also held at most readTimeout: a client that opens a stream and never
// sends its message loses the stream.

// readSlots is how many requests the broker reads at once; the budget is
// readSlots × request_bytes.
const readSlots = policy.RequestsReadAtOnce

// defaultReadTimeout bounds the time from a request's headers to its
// decoded message.
const defaultReadTimeout = 10 * time.Second

// errReadTimeout ends a stream whose message did not arrive in time.
var errReadTimeout = errors.New("the request message did not arrive in time")

// readBudget is the bytes of requests being read across all connections.
type readBudget struct {
	mu      sync.Mutex
	free    int64
	each    int64
	timeout time.Duration
}

func newReadBudget(requestBytes int64, timeout time.Duration) *readBudget {
	return &readBudget{free: readSlots * requestBytes, each: requestBytes, timeout: timeout}
}

// reservation is one stream's share of the budget.
type reservation struct {
	b     *readBudget
	once  sync.Once
	timer *time.Timer
}

type reservationKey struct{}

func (b *readBudget) reserve() (*reservation, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.free < b.each {
		return nil, false
	}
	b.free -= b.each
	return &reservation{b: b}, true
}

// release returns the share; only the first call counts.
func (r *reservation) release() {
	r.once.Do(func() {
		if r.timer != nil {
			r.timer.Stop()
		}
		r.b.mu.Lock()
		r.b.free += r.b.each
		r.b.mu.Unlock()
	})
}

// released returns the reservation of the request in ctx, if any, now that
// its message is read.
func released(ctx context.Context) {
	if r, ok := ctx.Value(reservationKey{}).(*reservation); ok {
		r.release()
	}
}

// tap admits a new stream: a method in the table, and a share of the read
// budget. It runs in the connection's reader before anything of the
// message is read, so it must not block.
func (s *Server) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	p, _ := peercred.FromContext(ctx)
	if _, ok := s.lookup(info.FullMethodName); !ok {
		s.dlog.request(p, unknownRPC(info.FullMethodName), &audit{decision: decisionDeny, reason: reasonUnknownMethod}, 0, nil)
		return nil, status.Error(codes.PermissionDenied, "request type not permitted")
	}
	r, ok := s.budget.reserve()
	if !ok {
		e, _ := s.lookup(info.FullMethodName)
		reason := fmt.Sprintf("busy: %d requests are being read at once; try again", readSlots)
		s.dlog.request(p, e.name, &audit{decision: decisionDeny, reason: reason}, 0, nil)
		return nil, status.Error(codes.ResourceExhausted, reason)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	r.timer = time.AfterFunc(s.budget.timeout, func() { cancel(errReadTimeout) })
	// Whatever happens to the stream, its end returns the share.
	context.AfterFunc(ctx, r.release)
	return context.WithValue(ctx, reservationKey{}, r), nil
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
	p, _ := peercred.FromContext(stream.Context())
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
	p, _ := peercred.FromContext(ctx)
	reason := "refused by the transport"
	if end.Error != nil {
		reason = status.Convert(end.Error).Message()
	}
	l.s.dlog.request(p, name, &audit{decision: decisionDeny, reason: reason}, time.Since(c.start), nil)
}

func (l callLog) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (l callLog) HandleConn(context.Context, stats.ConnStats) {}
