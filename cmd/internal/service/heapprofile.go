package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"syscall"
)

// HeapProfileEnv names a directory; when it is set, SIGUSR1 makes the
// process write a heap profile there (make footprint uses it to say what
// holds memory). Only whoever sets the service's environment sets it.
// GODEBUG=memprofilerate=1 makes the profile exact instead of sampled.
const HeapProfileEnv = "NANNYAGENT_HEAP_PROFILE_DIR"

// Heap profiling is off unless asked for. gRPC links runtime/pprof, which
// keeps the runtime's allocation sampling on: a hash table of stack buckets
// and a bucket per sampled call site, about 0.4 MiB of each process's
// RssAnon (make footprint). This runs during package initialisation, before
// the mains' own allocations are sampled.
func init() {
	if os.Getenv(HeapProfileEnv) == "" {
		runtime.MemProfileRate = 0
	}
}

// HeapProfileOnSignal writes <dir>/<name>-<pid>.pprof after a GC each time
// SIGUSR1 arrives, and before it <name>-<pid>.memclasses: the runtime's
// /memory/classes/* figures (heap objects, unused span space, free and
// released pages, stacks, runtime metadata), which say what the part of
// RssAnon outside the live heap is. It runs until ctx ends. Without HeapProfileEnv it does nothing
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
			// The classes first, right after a GC: writing the profile
			// allocates.
			runtime.GC()
			classes := strings.TrimSuffix(path, ".pprof") + ".memclasses"
			if err := writeMemoryClasses(classes); err != nil {
				log.Warn("memory classes", "path", classes, "error", err.Error())
			}
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
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func writeMemoryClasses(path string) error {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		if strings.HasPrefix(d.Name, "/memory/classes/") && d.Kind == metrics.KindUint64 {
			samples = append(samples, metrics.Sample{Name: d.Name})
		}
	}
	metrics.Read(samples)
	var b strings.Builder
	for _, s := range samples {
		fmt.Fprintf(&b, "%-50s %8.1f KiB\n", s.Name, float64(s.Value.Uint64())/1024)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(b.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
