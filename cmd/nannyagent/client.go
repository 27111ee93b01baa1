package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/ipc/unixsock"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// statusTimeout bounds `status` (and the settings check) when --timeout
// is not given: it answers from memory, the broker's probe and one health
// call, all bounded by the worker.
const statusTimeout = 30 * time.Second

// errNoWorker is connect's error when no worker runs on this host (it may
// run in a VM guest: status then reads the broker's record).
var errNoWorker = errors.New("the worker is not running")

// connect checks the socket with a plain dial first, so a missing worker or
// a permission problem gets one clear sentence rather than a gRPC error.
func connect(socket string) (*grpc.ClientConn, workerv1.WorkerServiceClient, error) {
	conn, err := net.DialTimeout("unix", socket, 2*time.Second)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, nil, fmt.Errorf("%w: nothing answers on %s (start it with: systemctl start nannyagent-worker)", errNoWorker, socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, nil, fmt.Errorf("permission denied on %s: run as root or as a member of the worker's admin group", socket)
	case err != nil:
		return nil, nil, fmt.Errorf("cannot reach the worker on %s: %v", socket, err)
	}
	conn.Close()
	cc, err := unixsock.Dial(socket, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		return nil, nil, err
	}
	return cc, workerv1.NewWorkerServiceClient(cc), nil
}

// explainRPC turns a gRPC error into one sentence for a person. The text
// comes from the worker, so it is cleaned for the terminal.
func explainRPC(err error, socket string) string {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Sprintf("the worker on %s refused this connection or went away: only root and members of its admin group may use it", socket)
	case codes.DeadlineExceeded:
		return "the worker did not answer in time"
	case codes.Canceled:
		return "interrupted"
	}
	return clean(st.Message())
}

// withTimeout bounds a call by --timeout, or by def when --timeout was not
// given (0: no bound).
func withTimeout(o *options, def time.Duration) (context.Context, context.CancelFunc) {
	d := def
	if o.set["timeout"] {
		d = o.timeout
	}
	if d <= 0 {
		return context.WithCancel(context.Background())
	}
	return context.WithTimeout(context.Background(), d)
}
