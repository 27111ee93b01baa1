// Package service holds what the broker and worker mains share as
// long-running services: logging setup, signal handling, and the systemd
// notification protocol (READY=1, WATCHDOG=1, STOPPING=1).
package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// NewLogger returns a JSON or text slog logger at the named level.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(normaliseLevel(level)))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json", "":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q: want json or text", format)
	}
}

// normaliseLevel accepts the reference agent's LOG_LEVEL spellings.
func normaliseLevel(level string) string {
	switch strings.ToUpper(strings.TrimSpace(level)) {
	case "", "INFO":
		return "info"
	case "WARNING":
		return "warn"
	default:
		return level
	}
}

// SignalContext returns a context cancelled by SIGTERM or SIGINT, and a
// channel of SIGHUPs. stop releases the signal handlers.
func SignalContext(parent context.Context) (ctx context.Context, hup <-chan os.Signal, stop func()) {
	ctx, cancel := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	hupCh := make(chan os.Signal, 1)
	signal.Notify(hupCh, syscall.SIGHUP)
	return ctx, hupCh, func() {
		signal.Stop(hupCh)
		cancel()
	}
}

// Ready tells systemd the service is up (no-op without NOTIFY_SOCKET).
func Ready(log *slog.Logger) { notify(log, daemon.SdNotifyReady) }

// Stopping tells systemd the service is shutting down.
func Stopping(log *slog.Logger) { notify(log, daemon.SdNotifyStopping) }

func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "error", err.Error())
	}
}

// Watchdog pings systemd's watchdog at half its interval until ctx ends.
// It returns at once when the watchdog is not enabled for this process.
func Watchdog(ctx context.Context, log *slog.Logger) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog settings unreadable", "error", err.Error())
		return
	}
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			notify(log, daemon.SdNotifyWatchdog)
		}
	}
}

// WatchdogWhileAlive pings systemd's watchdog at half its interval, but
// only after alive answered within that half interval. A process whose
// serving path stops answering stops pinging, and systemd restarts it; a
// free-running ticker would keep a hung process alive. It returns at once
// when the watchdog is not enabled for this process.
func WatchdogWhileAlive(ctx context.Context, log *slog.Logger, alive func(context.Context) error) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("watchdog settings unreadable", "error", err.Error())
		return
	}
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		actx, cancel := context.WithTimeout(ctx, interval/2)
		err := alive(actx)
		cancel()
		switch {
		case err == nil:
			if failing {
				log.Info("serving again; watchdog pings resume")
				failing = false
			}
			notify(log, daemon.SdNotifyWatchdog)
		case ctx.Err() != nil:
			return
		case !failing:
			log.Error("not answering; watchdog pings withheld", "error", err.Error())
			failing = true
		}
	}
}

// ReleaseMemory returns freed heap to the kernel shortly after start-up and
// then, every interval until ctx ends, when the heap grew by more than
// releaseSlack since the last release. Start-up (policy parsing, TLS setup)
// and a burst of work leave garbage that the runtime would otherwise keep
// resident for minutes; an idle agent should be small. At rest the heap
// does not grow that much between the runtime's own collections, so an
// idle process pays for no forced collection (make footprint: each is a
// full GC and a scavenge).
func ReleaseMemory(ctx context.Context, first, interval time.Duration) {
	timer := time.NewTimer(first)
	defer timer.Stop()
	var after uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
			if after == 0 || heapRetained() > after+releaseSlack {
				debug.FreeOSMemory()
				after = heapRetained()
			}
			timer.Reset(interval)
		}
	}
}

// releaseSlack is the heap growth that is worth a forced collection.
const releaseSlack = 1 << 20

// heapRetained is the heap memory the process holds from the kernel:
// objects (live or not yet collected), unused span space, and free spans
// not yet returned.
func heapRetained() uint64 {
	samples := []metrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	metrics.Read(samples)
	var sum uint64
	for _, s := range samples {
		if s.Value.Kind() == metrics.KindUint64 {
			sum += s.Value.Uint64()
		}
	}
	return sum
}

// LimitProcs caps GOMAXPROCS at n (and at the CPUs this process may use).
// The agent runs on the host it diagnoses: it must not fan out over every
// core, and each P keeps its own span caches resident.
func LimitProcs(n int) {
	if runtime.GOMAXPROCS(0) > n {
		runtime.GOMAXPROCS(n)
	}
}
