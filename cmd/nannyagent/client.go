package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/peterbourgon/ff/v3"
	"github.com/peterbourgon/ff/v3/ffyaml"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/ipc/unixsock"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
	"github.com/nannyai/nannyagent/worker/config"
)

// clientFlags are the flags every worker command takes.
type clientFlags struct {
	socket  string
	timeout time.Duration
	json    bool
}

// parseClientFlags reads flags, NANNYAGENT_WORKER_SOCKET and the worker_socket
// key of the config file when this user may read it (an admin-group member
// usually may not; the default path applies then).
func parseClientFlags(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*clientFlags, error) {
	c := &clientFlags{}
	fs := flag.NewFlagSet("nannyagent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.socket, "socket", "/run/nannyagent/worker.sock", "the worker's socket")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the worker")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	var cfgFile string
	fs.StringVar(&cfgFile, "config", config.DefaultConfigFile, "config file")
	if extra != nil {
		extra(fs)
	}
	if v := os.Getenv("NANNYAGENT_WORKER_SOCKET"); v != "" {
		if err := fs.Set("socket", v); err != nil {
			return nil, err
		}
	}
	opts := []ff.Option{ff.WithIgnoreUndefined(true)}
	if readable(configFileArg(args)) {
		opts = append(opts, ff.WithConfigFileFlag("config"), ff.WithAllowMissingConfigFile(true),
			ff.WithConfigFileParser(workerSocketOnly))
	}
	if err := ff.Parse(fs, args, opts...); err != nil {
		return nil, err
	}
	return c, nil
}

// configFileArg finds --config in args without parsing them twice.
func configFileArg(args []string) string {
	for i, a := range args {
		switch {
		case (a == "--config" || a == "-config") && i+1 < len(args):
			return args[i+1]
		case len(a) > 9 && a[:9] == "--config=":
			return a[9:]
		}
	}
	return config.DefaultConfigFile
}

func readable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// workerSocketOnly takes only worker_socket from the worker's config file;
// the CLI has no business with the rest of it (it holds the static token).
func workerSocketOnly(r io.Reader, set func(name, value string) error) error {
	return ffyaml.Parser(r, func(key, value string) error {
		if key == "worker_socket" {
			return set("socket", value)
		}
		return nil
	})
}

// errNoWorker is connect's error when no worker runs on this host (it may
// run in a VM guest: status then reads the broker's record).
var errNoWorker = errors.New("the worker is not running")

// connect checks the socket with a plain dial first, so a missing worker or
// a permission problem gets one clear sentence rather than a gRPC error.
func connect(c *clientFlags) (*grpc.ClientConn, workerv1.WorkerServiceClient, error) {
	conn, err := net.DialTimeout("unix", c.socket, 2*time.Second)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		return nil, nil, fmt.Errorf("%w: nothing answers on %s (start it with: systemctl start nannyagent-worker)", errNoWorker, c.socket)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return nil, nil, fmt.Errorf("permission denied on %s: run as root or as a member of the worker's admin group", c.socket)
	case err != nil:
		return nil, nil, fmt.Errorf("cannot reach the worker on %s: %v", c.socket, err)
	}
	conn.Close()
	cc, err := unixsock.Dial(c.socket, unixsock.DefaultLimits.MaxSendMsgSize)
	if err != nil {
		return nil, nil, err
	}
	return cc, workerv1.NewWorkerServiceClient(cc), nil
}

// explainRPC turns a gRPC error into one sentence for a person.
func explainRPC(err error, socket string) string {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.PermissionDenied:
		return st.Message()
	case codes.Unavailable:
		return fmt.Sprintf("the worker on %s refused this connection: only root and members of its admin group may use it", socket)
	case codes.DeadlineExceeded:
		return "the worker did not answer in time"
	case codes.Unimplemented:
		return st.Message()
	default:
		return st.Message()
	}
}

func withTimeout(c *clientFlags) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.timeout)
}
