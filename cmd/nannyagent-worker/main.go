// Command nannyagent-worker is the unprivileged half of nannyagent: it talks
// to NannyAPI, runs the AI conversation and the metrics loops, and asks the
// broker for every privileged action. It serves the nannyagent CLI on
// worker.sock.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/cmd/internal/service"
	"github.com/nannyai/nannyagent/worker"
	"github.com/nannyai/nannyagent/worker/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// maxProcs bounds the worker's parallelism: its work is network I/O and
// small JSON documents.
const maxProcs = 1

func run(args []string, stderr io.Writer) int {
	service.LimitProcs(maxProcs)
	if len(args) == 1 && (args[0] == "--version" || args[0] == "-version") {
		fmt.Println("nannyagent-worker", version)
		return 0
	}
	// The worker holds tokens: no core dumps, and no ptrace by other
	// processes of the same account.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintln(stderr, "nannyagent-worker: PR_SET_DUMPABLE:", err)
		return 1
	}
	cfg, err := config.Load(args, os.Getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "nannyagent-worker:", err)
		return 1
	}
	log, err := service.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		fmt.Fprintln(stderr, "nannyagent-worker:", &config.Error{Key: "log_level", Reason: err.Error()})
		return 1
	}
	ctx, _, stop := service.SignalContext(context.Background())
	defer stop()

	ln, err := worker.Listen(ctx, cfg, log)
	if err != nil {
		log.Error("cannot listen", "error", err.Error())
		return 1
	}
	w, err := worker.New(cfg, version, log)
	if err != nil {
		ln.Close()
		log.Error("cannot start", "error", err.Error())
		return 1
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	err = w.Run(ctx, ln, func() {
		service.Ready(log)
		wg.Add(3)
		go func() { defer wg.Done(); service.HeapProfileOnSignal(ctx, log, "worker") }()
		go func() { defer wg.Done(); service.Watchdog(ctx, log) }()
		go func() { defer wg.Done(); service.ReleaseMemory(ctx, time.Second, time.Minute) }()
	})
	service.Stopping(log)
	stop()
	if err != nil {
		log.Error("worker stopped", "error", err.Error())
		return 1
	}
	log.Info("worker stopped")
	return 0
}
