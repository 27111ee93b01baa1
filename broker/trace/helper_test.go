package trace

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/broker/execute"
)

// testLauncher is the broker's launcher, closed at the end of the test:
// bpftrace, fake or real, runs as the broker runs it.
func testLauncher(t testing.TB) *execute.Runner {
	t.Helper()
	l, err := execute.New(execute.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// The test binary doubles as the processes the tests drive. It is
// exec'd through symlinks, so each role has its own comm:
//   - fake-bpftrace: a stand-in for bpftrace whose behaviour comes from the
//     "mode" file beside the link (the broker gives bpftrace a clean
//     environment, so no variable can carry it);
//   - tr-open-*: opens <dir>/<name>-<i> in a loop until stdin closes;
//   - tr-read: reads /dev/zero in a loop until stdin closes;
//   - tr-exec-probe: exits at once.
func TestMain(m *testing.M) {
	// The launcher's subreaper path re-executes the test binary.
	if execute.IsHelper() {
		execute.HelperMain()
	}
	// Helpers leave through syscall.Exit: under -race, os.Exit waits a
	// second for race reports, which would blur the timing tests.
	name := filepath.Base(os.Args[0])
	switch {
	case name == "fake-bpftrace":
		syscall.Exit(fakeBpftrace())
	case strings.HasPrefix(name, "tr-open-"):
		syscall.Exit(opener(name))
	case name == "tr-read":
		syscall.Exit(reader())
	case name == "tr-exec-probe":
		syscall.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// helperLimit stops a helper whose test forgot it.
const helperLimit = 60 * time.Second

// untilStdinCloses returns a channel closed when stdin reaches EOF or the
// helper limit passes.
func untilStdinCloses() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	stop := make(chan struct{})
	go func() {
		select {
		case <-done:
		case <-time.After(helperLimit):
		}
		close(stop)
	}()
	return stop
}

func opener(name string) int {
	if len(os.Args) < 2 {
		return 2
	}
	dir := os.Args[1]
	stop := untilStdinCloses()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return 0
		case <-time.After(2 * time.Millisecond):
		}
		// The file does not exist: the openat still happens, with this path.
		if f, err := os.Open(filepath.Join(dir, fmt.Sprintf("%s-%d", name, i))); err == nil {
			f.Close()
		}
	}
}

func reader() int {
	f, err := os.Open("/dev/zero")
	if err != nil {
		return 1
	}
	defer f.Close()
	stop := untilStdinCloses()
	buf := make([]byte, 64<<10)
	for i := 1; ; i++ {
		select {
		case <-stop:
			return 0
		default:
		}
		// Sizes from 1 byte to 64 KiB spread the latencies over buckets.
		_, _ = f.Read(buf[:1<<(i%17)])
		if i%64 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
}

// fakeBpftrace behaves as the mode file beside it says.
func fakeBpftrace() int {
	mode, _ := os.ReadFile(filepath.Join(filepath.Dir(os.Args[0]), "mode"))
	out := json.NewEncoder(os.Stdout)
	emit := func(v any) { _ = out.Encode(v) }
	attached := func() { emit(map[string]any{"type": "attached_probes", "data": map[string]int{"probes": 2}}) }
	ints := make(chan os.Signal, 1)
	signal.Notify(ints, syscall.SIGINT)
	switch strings.TrimSpace(string(mode)) {
	case "argv":
		emit(map[string]any{"type": "printf", "data": strings.Join(os.Args[1:], "\x00")})
		emit(map[string]any{"type": "printf", "data": strings.Join(os.Environ(), "\x00")})
		attached()
		emit(map[string]any{"type": "map", "data": map[string]int{"@events": 3}})
	case "containment":
		cg, _ := os.ReadFile("/proc/self/cgroup")
		status, _ := os.ReadFile("/proc/self/status")
		nnp := ""
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "NoNewPrivs:") {
				nnp = l
			}
		}
		emit(map[string]any{"type": "printf", "data": string(cg)})
		emit(map[string]any{"type": "printf", "data": nnp})
		attached()
		emit(map[string]any{"type": "map", "data": map[string]int{"@events": 1}})
	case "memhog":
		attached()
		b := make([]byte, 256<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		emit(map[string]any{"type": "map", "data": map[string]int{"@events": len(b)}})
	case "overrun":
		attached()
		// Tell the test the SIGINT handler is in place.
		_ = os.WriteFile(filepath.Join(filepath.Dir(os.Args[0]), "ready"), nil, 0o600)
		<-ints
		emit(map[string]any{"type": "map", "data": map[string]int{"@events": 7}})
	case "hang":
		signal.Ignore(syscall.SIGINT)
		attached()
		time.Sleep(helperLimit)
	case "noattach":
		<-ints
	case "fail":
		fmt.Fprintln(os.Stderr, `ERROR: Unknown error -1: couldn't set RLIMIT_MEMLOCK for bpftrace. If your program is not loading, you can try "ulimit -l 8192" to fix the problem`)
		fmt.Fprintln(os.Stderr, "stdin:1:1-35: ERROR: tracepoint not found: nope:nope")
		// bpftrace echoes the offending program line under the error.
		fmt.Fprintln(os.Stderr, strings.SplitN(os.Args[len(os.Args)-1], "\n", 2)[0])
		fmt.Fprintln(os.Stderr, "~~~~~~~~~~~~~~~~~~~~")
		return 1
	case "flood":
		attached()
		for i := 0; i < 20000; i++ {
			emit(map[string]any{"type": "printf", "data": fmt.Sprintf("event %d %s\n", i, strings.Repeat("x", 100))})
		}
		emit(map[string]any{"type": "printf", "data": strings.Repeat("y", 3<<20)})
		keys := map[string]int{}
		for i := 0; i < 5000; i++ {
			keys[fmt.Sprintf("%d,proc-%d", 1000+i, i)] = i
		}
		emit(map[string]any{"type": "map", "data": map[string]any{"@by_process": keys}})
		emit(map[string]any{"type": "lost_events", "data": map[string]int{"events": 12}})
		emit(map[string]any{"type": "map", "data": map[string]int{"@events": 20001}})
	case "silent-exit":
		return 0
	case "self-kill":
		attached()
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
		time.Sleep(helperLimit)
	default:
		fmt.Fprintf(os.Stderr, "fake-bpftrace: unknown mode %q\n", mode)
		return 3
	}
	return 0
}
