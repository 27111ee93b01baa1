// Package localapi serves the worker's API to the nannyagent CLI on
// worker.sock. Peers are authenticated in the handshake: root and members of
// the admin group (primary or supplementary) are served; only root may
// register the host.
package localapi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os/user"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nannyai/nannyagent/ipc/peercred"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// StatusSource answers `nannyagent status`.
type StatusSource interface {
	Status(ctx context.Context) *workerv1.StatusResponse
}

// Registrar registers the host, sending each step to the CLI.
type Registrar interface {
	Register(ctx context.Context, force bool, send func(*workerv1.RegisterResponse) error) error
}

// Diagnoser runs one investigation, sending each step to the CLI.
type Diagnoser interface {
	Diagnose(ctx context.Context, req *workerv1.DiagnoseRequest, send func(*workerv1.DiagnoseResponse) error) error
}

// Config wires the server.
type Config struct {
	// AdminGroup is resolved by name at every accept.
	AdminGroup string
	Status     StatusSource
	// Register and Diagnose may be nil until those features are wired; the
	// RPCs then answer Unimplemented (after the permission check).
	Register Registrar
	Diagnose Diagnoser
	Limits   unixsock.Limits
	Log      *slog.Logger
}

// Server is the WorkerService implementation.
type Server struct {
	workerv1.UnimplementedWorkerServiceServer
	cfg  Config
	grpc *grpc.Server
}

// New builds the server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	s := &Server{cfg: cfg}
	creds := peercred.NewServerCredentials(s.authorize, s.refused, cfg.Log)
	s.grpc = grpc.NewServer(unixsock.ServerOptions(creds, cfg.Limits)...)
	workerv1.RegisterWorkerServiceServer(s.grpc, s)
	return s
}

func (s *Server) authorize(p peercred.Peer) error {
	if p.UID == 0 {
		return nil
	}
	g, err := user.LookupGroup(s.cfg.AdminGroup)
	if err != nil {
		return fmt.Errorf("admin group %q cannot be resolved: %w", s.cfg.AdminGroup, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return fmt.Errorf("admin group %q has a bad gid %q", s.cfg.AdminGroup, g.Gid)
	}
	if p.InGroup(uint32(gid)) {
		return nil
	}
	return fmt.Errorf("uid %d is not root and not in group %q", p.UID, s.cfg.AdminGroup)
}

func (s *Server) refused(p peercred.Peer, reason error) {
	s.cfg.Log.Warn("refused CLI connection", "peer_uid", p.UID, "peer_pid", p.PID, "reason", reason.Error())
}

// Serve answers on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(ln) }()
	select {
	case <-ctx.Done():
		s.grpc.GracefulStop()
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// Status reports the worker's state.
func (s *Server) Status(ctx context.Context, _ *workerv1.StatusRequest) (*workerv1.StatusResponse, error) {
	return s.cfg.Status.Status(ctx), nil
}

// Register enrols the host; root only.
func (s *Server) Register(req *workerv1.RegisterRequest, stream grpc.ServerStreamingServer[workerv1.RegisterResponse]) error {
	p, ok := peercred.FromContext(stream.Context())
	if !ok || p.UID != 0 {
		s.cfg.Log.Warn("refused registration", "peer_uid", p.UID)
		return status.Error(codes.PermissionDenied, "only root may register this host")
	}
	if s.cfg.Register == nil {
		return status.Error(codes.Unimplemented, "registration is not available in this build")
	}
	return s.cfg.Register.Register(stream.Context(), req.GetForce(), stream.Send)
}

// Diagnose runs an investigation for the caller.
func (s *Server) Diagnose(req *workerv1.DiagnoseRequest, stream grpc.ServerStreamingServer[workerv1.DiagnoseResponse]) error {
	if s.cfg.Diagnose == nil {
		return status.Error(codes.Unimplemented, "diagnosis is not available in this build")
	}
	return s.cfg.Diagnose.Diagnose(stream.Context(), req, stream.Send)
}
