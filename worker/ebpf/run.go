package ebpf

import (
	"context"
	"sync"

	"google.golang.org/grpc"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Tracer is the part of the broker client that runs traces;
// brokerv1.BrokerServiceClient satisfies it.
type Tracer interface {
	RunTrace(ctx context.Context, in *brokerv1.RunTraceRequest, opts ...grpc.CallOption) (*brokerv1.RunTraceResponse, error)
}

// DefaultParallel matches the broker's default limit on concurrent traces;
// starting more at once would only be refused.
const DefaultParallel = 4

// RunAll converts programs, runs the traceable ones through the broker, at
// most parallel at a time (DefaultParallel when 0 or less), and returns the
// turn's results in the model's order. Every item gets a result, traced or
// not.
func RunAll(ctx context.Context, broker Tracer, programs []Program, parallel int) Turn {
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	traces := make([]Trace, len(programs))
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, p := range programs {
		traces[i].Conversion = Convert(p)
		spec := traces[i].Conversion.Spec
		if spec == nil {
			continue
		}
		wg.Add(1)
		go func(tr *Trace) {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				tr.Err = ctx.Err()
				return
			}
			defer func() { <-slots }()
			tr.Response, tr.Err = broker.RunTrace(ctx, &brokerv1.RunTraceRequest{Spec: spec})
		}(&traces[i])
	}
	wg.Wait()
	return Results(traces)
}
