// Package stack builds the nannyagent binaries and runs the broker and the
// worker as separate processes on real unix sockets, the way an install
// would: as root the broker runs as root and the worker as an existing
// unprivileged account (daemon by default); otherwise both run as the
// current user. End-to-end tests and `make demo` use it.
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nannyai/nannyagent/test/repo"
)

// Binaries built by Build.
const (
	CLI         = "nannyagent"
	Broker      = "nannyagent-broker"
	Worker      = "nannyagent-worker"
	BrokerProbe = "brokerprobe"
	BrokerRun   = "brokerrun"
	FSWatch     = "fswatch"
	PeerRelay   = "peerrelay"
)

// Build compiles the three binaries and the test helpers into a new
// directory that other uids can read and execute.
func Build(ctx context.Context) (dir string, err error) {
	root, err := repo.Root()
	if err != nil {
		return "", err
	}
	dir, err = WorldReadableTempDir("nannyagent-bin-")
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+"/",
		"./cmd/nannyagent", "./cmd/nannyagent-broker", "./cmd/nannyagent-worker", "./test/cmd/brokerprobe", "./test/cmd/brokerrun", "./test/cmd/fswatch", "./test/cmd/peerrelay")
	cmd.Dir = root
	// Static binaries, as shipped: no libc in the address space.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return dir, nil
}

// WorldReadableTempDir makes a temporary directory with mode 0755, so
// processes running as other uids can reach what is inside.
func WorldReadableTempDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

// Identity is an account a process runs as.
type Identity struct {
	Name string
	UID  uint32
	GID  uint32
}

// LookupIdentity resolves an existing account.
func LookupIdentity(name string) (Identity, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return Identity{}, err
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return Identity{Name: name, UID: uint32(uid), GID: uint32(gid)}, nil
}

// LookupGID resolves an existing group.
func LookupGID(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(gid), err
}

// Options configure a stack.
type Options struct {
	BinDir string
	// Policy is the vendor policy's YAML; a minimal policy when empty.
	Policy string
	// LocalPolicy, when set, is installed as policy.d/50-test.yaml.
	LocalPolicy string
	// BrokerPIDNamespace starts the broker as the first process of a new
	// PID namespace, so a watcher inside it sees the broker's own process
	// tree and nothing else (test/cmd/fswatch).
	BrokerPIDNamespace bool
	// WorkerUser runs the worker when the test runs as root (default
	// daemon); AdminGroup may use the CLI (default staff).
	WorkerUser string
	AdminGroup string
	// APIURL is NannyAPI's URL (a fake one by default).
	APIURL string
	// ExtraBrokerArgs and ExtraWorkerArgs are appended to the commands.
	ExtraBrokerArgs []string
	ExtraWorkerArgs []string
	// WorkerEnv and BrokerEnv are added to the worker's and the broker's
	// environment.
	WorkerEnv []string
	BrokerEnv []string
	// SocketActivated has the stack own the broker's socket, as
	// nannyagent-broker.socket does, and start a broker on it whenever a
	// connection waits and none runs (see activator); the broker gets
	// ExtraBrokerArgs (e.g. --idle-exit) and no --socket.
	SocketActivated bool
	// Cgroups are cgroup directories (cgroup2 or v1) every process of the
	// stack joins, so their CPU, brokers that exited included, can be read
	// from the cgroups (make footprint). Root only.
	Cgroups []string
	// BeforeWorker runs after the broker is up and before the worker
	// starts (to plant a token file, mount a small tmpfs on the state
	// directory, …).
	BeforeWorker func(*Stack) error
}

// Stack is a running broker and worker.
type Stack struct {
	Dir          string
	BinDir       string
	BrokerSocket string
	WorkerSocket string
	PolicyFile   string
	StateDir     string
	// BrokerStateDir is the broker's own state directory (patch runs, the
	// last host reboot), created by the broker, root-only.
	BrokerStateDir string
	// ServedRecord is where the broker records the peers it served.
	ServedRecord string
	Worker       Identity
	AdminGroup   string
	AdminGID     uint32

	broker    *Process
	worker    *Process
	activator *activator
	cgroups   []string

	brokerArgs  []string
	brokerEnv   []string
	brokerClone uintptr
	workerArgs  []string
	workerEnv   []string

	stopMu  sync.Mutex
	stopped bool
}

// Process is one started binary and its combined log.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// Log returns everything the process wrote so far.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process (SIGHUP reloads the broker's policy).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Start starts the broker, waits for its socket, then starts the worker
// and waits for worker.sock.
func Start(ctx context.Context, opts Options) (*Stack, error) {
	if opts.APIURL == "" {
		// Nothing listens on the discard port: no traffic leaves loopback.
		opts.APIURL = "http://127.0.0.1:9"
	}
	s, err := prepare(opts)
	if err != nil {
		return nil, err
	}
	s.cgroups = opts.Cgroups
	// The socket unit's broker gets the same arguments but --socket.
	common := append([]string{
		"--socket-group", groupName(s.Worker.GID),
		"--worker-user", s.Worker.Name, "--policy", s.PolicyFile,
		"--policy-dir", filepath.Join(s.Dir, "policy.d"), "--state-dir", s.BrokerStateDir, "--log-format", "json",
		"--served-record", s.ServedRecord,
	}, opts.ExtraBrokerArgs...)
	if opts.SocketActivated {
		if err := s.startActivator(filepath.Join(opts.BinDir, Broker), common, opts.BrokerEnv); err != nil {
			s.cleanup()
			return nil, err
		}
		return s, s.startWorkerAfterBroker(ctx, opts)
	}
	s.brokerArgs = append([]string{"--socket", s.BrokerSocket}, common...)
	s.brokerEnv = opts.BrokerEnv
	if opts.BrokerPIDNamespace {
		s.brokerClone = syscall.CLONE_NEWPID
	}
	if err := s.StartBroker(ctx); err != nil {
		if s.broker == nil {
			s.cleanup()
		} else {
			s.Stop()
		}
		return nil, err
	}
	if err := s.joinCgroups(s.broker.Pid()); err != nil {
		s.Stop()
		return nil, err
	}
	return s, s.startWorkerAfterBroker(ctx, opts)
}

// startWorkerAfterBroker runs BeforeWorker and starts the worker; on
// failure it stops what runs.
func (s *Stack) startWorkerAfterBroker(ctx context.Context, opts Options) error {
	if opts.BeforeWorker != nil {
		if err := opts.BeforeWorker(s); err != nil {
			s.Stop()
			return err
		}
	}
	workerArgs := append([]string{
		"--config", filepath.Join(s.Dir, "no-config.yaml"),
		"--api-url", opts.APIURL, "--worker-socket", s.WorkerSocket, "--broker-socket", s.BrokerSocket,
		"--admin-group", s.AdminGroup, "--state-dir", s.StateDir,
		"--token-path", filepath.Join(s.StateDir, "token.json"), "--log-format", "json",
	}, opts.ExtraWorkerArgs...)
	s.workerArgs, s.workerEnv = workerArgs, opts.WorkerEnv
	if err := s.StartWorker(ctx); err != nil {
		s.Stop()
		return err
	}
	return nil
}

// joinCgroups moves pid into the stack's cgroups.
func (s *Stack) joinCgroups(pid int) error {
	for _, cg := range s.cgroups {
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("join cgroup %s: %w", cg, err)
		}
	}
	return nil
}

// StartBroker starts the broker (again, after StopBroker) with the same
// arguments and waits for its socket.
func (s *Stack) StartBroker(ctx context.Context) error {
	p, err := s.startWith(filepath.Join(s.BinDir, Broker), s.brokerArgs, nil, s.brokerEnv, "broker.log", s.brokerClone)
	if err != nil {
		return err
	}
	s.broker = p
	return waitSocket(ctx, s.BrokerSocket, p)
}

// StopBroker stops the broker with SIGTERM, as `systemctl stop` would, and
// fails if it does not exit cleanly.
func (s *Stack) StopBroker() error { return s.broker.stop() }

// StartWorker starts the worker (again, after KillWorker) with the same
// arguments and waits for worker.sock.
func (s *Stack) StartWorker(ctx context.Context) error {
	p, err := s.start(filepath.Join(s.BinDir, Worker), s.workerArgs, s.WorkerCred(), s.workerEnv, "worker.log")
	if err != nil {
		return err
	}
	s.worker = p
	if err := s.joinCgroups(p.Pid()); err != nil {
		return err
	}
	return waitSocket(ctx, s.WorkerSocket, p)
}

// KillWorker kills the worker with SIGKILL, as a crash or the OOM killer
// would, and waits for it to be gone.
func (s *Stack) KillWorker() {
	_ = s.worker.cmd.Process.Signal(syscall.SIGKILL)
	<-s.worker.done
}

func prepare(opts Options) (*Stack, error) {
	worker, admin, err := identities(opts)
	if err != nil {
		return nil, err
	}
	adminGID, err := LookupGID(admin)
	if err != nil {
		return nil, fmt.Errorf("admin group %q: %w", admin, err)
	}
	dir, err := WorldReadableTempDir("nannyagent-stack-")
	if err != nil {
		return nil, err
	}
	s := &Stack{
		Dir: dir, BinDir: opts.BinDir, Worker: worker, AdminGroup: admin, AdminGID: adminGID,
		BrokerSocket:   filepath.Join(dir, "run/nannyagent-broker/broker.sock"),
		WorkerSocket:   filepath.Join(dir, "run/nannyagent/worker.sock"),
		PolicyFile:     filepath.Join(dir, "policy.yaml"),
		StateDir:       filepath.Join(dir, "state"),
		BrokerStateDir: filepath.Join(dir, "broker-state"),
		ServedRecord:   filepath.Join(dir, "served.json"),
	}
	policy := opts.Policy
	if policy == "" {
		policy = "version: 1\n"
	}
	steps := []func() error{
		func() error { return os.MkdirAll(filepath.Join(dir, "run"), 0o755) },
		func() error { return os.WriteFile(s.PolicyFile, []byte(policy), 0o644) },
		func() error {
			if opts.LocalPolicy == "" {
				return nil
			}
			if err := os.Mkdir(filepath.Join(dir, "policy.d"), 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "policy.d", "50-test.yaml"), []byte(opts.LocalPolicy), 0o644)
		},
		// The worker makes worker.sock itself here, so its directory is the
		// worker's; under systemd the directory is root's (tmpfiles.d) and
		// nannyagent-worker.socket makes the socket. State as StateDirectory=.
		func() error { return ownedDir(filepath.Dir(s.WorkerSocket), 0o755, worker) },
		func() error { return ownedDir(s.StateDir, 0o700, worker) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	return s, nil
}

func identities(opts Options) (Identity, string, error) {
	if os.Geteuid() != 0 {
		me, err := user.Current()
		if err != nil {
			return Identity{}, "", err
		}
		id, err := LookupIdentity(me.Username)
		if err != nil {
			return Identity{}, "", err
		}
		return id, groupName(id.GID), nil
	}
	name, admin := opts.WorkerUser, opts.AdminGroup
	if name == "" {
		name = "daemon"
	}
	if admin == "" {
		admin = "staff"
	}
	id, err := LookupIdentity(name)
	return id, admin, err
}

func groupName(gid uint32) string {
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10))
	if err != nil {
		return strconv.FormatUint(uint64(gid), 10)
	}
	return g.Name
}

func ownedDir(path string, mode os.FileMode, id Identity) error {
	if err := os.MkdirAll(path, mode); err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(path, int(id.UID), int(id.GID)); err != nil {
			return err
		}
	}
	return os.Chmod(path, mode)
}

// WorkerCred runs the worker as its account with the admin group as a
// supplementary group, so it may hand worker.sock to that group as a
// systemd socket unit would. It is nil when the test is not root.
func (s *Stack) WorkerCred() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: s.Worker.UID, Gid: s.Worker.GID, Groups: []uint32{s.Worker.GID, s.AdminGID}}
}

func (s *Stack) start(bin string, args []string, cred *syscall.Credential, env []string, logName string) (*Process, error) {
	return s.startWith(bin, args, cred, env, logName, 0)
}

func (s *Stack) startWith(bin string, args []string, cred *syscall.Credential, env []string, logName string, clone uintptr) (*Process, error) {
	return s.spawn(bin, args, cred, env, logName, clone, nil)
}

// spawn starts bin; extra become its fds 3, 4, ….
func (s *Stack) spawn(bin string, args []string, cred *syscall.Credential, env []string, logName string, clone uintptr, extra []*os.File) (*Process, error) {
	logPath := filepath.Join(s.Dir, logName)
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cmd.Dir = "/"
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: syscall.SIGKILL, Cloneflags: clone}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func waitSocket(ctx context.Context, path string, p *Process) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			conn.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("process exited before %s appeared: %v\n%s", path, p.waitErr, p.Log())
		case <-ctx.Done():
			return fmt.Errorf("%s did not appear: %w\n%s", path, ctx.Err(), p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// BrokerProcess and WorkerProcess expose the processes. A socket-activated
// broker is the last one started (nil before the first connection).
func (s *Stack) BrokerProcess() *Process {
	if s.activator != nil {
		return s.activator.broker()
	}
	return s.broker
}

// WorkerProcess is the worker's process.
func (s *Stack) WorkerProcess() *Process { return s.worker }

// Result is a finished command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs one of the built binaries, as cred when it is not nil.
func (s *Stack) Run(ctx context.Context, cred *syscall.Credential, bin string, args ...string) Result {
	cmd := exec.CommandContext(ctx, filepath.Join(s.BinDir, bin), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	cmd.Dir = "/"
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	code := 0
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	case err != nil:
		code = -1
		errb.WriteString(err.Error())
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: code}
}

// CLI runs `nannyagent args… --socket <worker.sock>`.
func (s *Stack) CLI(ctx context.Context, cred *syscall.Credential, args ...string) Result {
	return s.Run(ctx, cred, CLI, append(args, "--socket", s.WorkerSocket)...)
}

// ChownToWorker gives path to the worker's account (as root).
func (s *Stack) ChownToWorker(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return os.Chown(path, int(s.Worker.UID), int(s.Worker.GID))
}

// Stop sends SIGTERM to the worker, then the broker, waits up to 10 s for
// each, and returns an error if either did not exit cleanly.
func (s *Stack) Stop() error {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	if s.stopped {
		return nil
	}
	s.stopped = true
	defer s.cleanup()
	var errs []string
	broker := s.broker
	if s.activator != nil {
		s.activator.close()
		broker = s.activator.broker()
	}
	for _, p := range []*Process{s.worker, broker} {
		if p == nil || p.killed() || p.stoppedCleanly() {
			continue
		}
		if err := p.stop(); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

func (p *Process) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within 10s of SIGTERM", filepath.Base(p.cmd.Path))
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s exited uncleanly: %v\n%s", filepath.Base(p.cmd.Path), p.waitErr, p.Log())
	}
	return nil
}

// killed reports a process ended by SIGKILL on purpose (KillWorker).
func (p *Process) killed() bool {
	if !p.Exited() {
		return false
	}
	st, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && st.Signaled() && st.Signal() == syscall.SIGKILL
}

// stoppedCleanly reports a process that already exited with status 0
// (StopBroker).
func (p *Process) stoppedCleanly() bool { return p.Exited() && p.waitErr == nil }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (s *Stack) cleanup() {
	if os.Getenv("NANNYAGENT_KEEP_STACK") != "" {
		return
	}
	os.RemoveAll(s.Dir)
}
