package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
)

// HeapProfileEnv names a directory; when it is set, SIGUSR1 makes the
// process write a heap profile there (make footprint uses it to say what
// holds memory). Only whoever sets the service's environment sets it.
// GODEBUG=memprofilerate=1 makes the profile exact instead of sampled.
const HeapProfileEnv = "NANNYAGENT_HEAP_PROFILE_DIR"

// HeapProfileOnSignal writes <dir>/<name>-<pid>.pprof after a GC each time
// SIGUSR1 arrives, until ctx ends. Without HeapProfileEnv it does nothing
// and installs no handler.
func HeapProfileOnSignal(ctx context.Context, log *slog.Logger, name string) {
	dir := os.Getenv(HeapProfileEnv)
	if dir == "" {
		return
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	defer signal.Stop(sig)
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", name, os.Getpid()))
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			if err := writeHeapProfile(path); err != nil {
				log.Warn("heap profile", "path", path, "error", err.Error())
			}
		}
	}
}

func writeHeapProfile(path string) error {
	// O_NOFOLLOW: the broker is root and the directory may be shared.
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
