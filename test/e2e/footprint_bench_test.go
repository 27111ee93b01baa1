package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/ipc/unixsock"
	"github.com/nannyai/nannyagent/test/repo"
	"github.com/nannyai/nannyagent/test/stack"
)

// mixedRequests and mixedTraces make BenchmarkBrokerMemoryAfterWork's
// load: commands, metrics and Proxmox reads in turn, and a few short
// traces among them.
const (
	mixedRequests = 1000
	mixedTraces   = 10
)

// returnWait is how long the broker gets to give memory back after the
// work (the 60 s); NANNYAGENT_RETURN_WAIT shortens it.
func returnWait() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("NANNYAGENT_RETURN_WAIT")); err == nil {
		return d
	}
	return 60 * time.Second
}

// BenchmarkBrokerMemoryAfterWork: the broker process under the packaged
// policy serves 1,000 mixed requests (commands and pipelines, metrics,
// Proxmox reads against a fake pvesh and pmxcfs tree, and 10 one-second
// tracepoint traces) twice, and reports its RssAnon at start-up, after the
// first round settled (warm), right after the second, and how long it took
// to come back to within 256 KiB of the warm figure (or the figure after
// NANNYAGENT_RETURN_WAIT, 60 s by default). No request should leave memory
// behind.
func BenchmarkBrokerMemoryAfterWork(b *testing.B) {
	requireRootB(b)
	for _, p := range []string{"/usr/bin/bpftrace", "/sys/kernel/tracing/events/syscalls"} {
		if _, err := os.Stat(p); err != nil {
			b.Skip("traces need " + p)
		}
	}
	host, err := os.Hostname()
	if err != nil || strings.ContainsAny(host, "._") {
		b.Skipf("hostname %q cannot be a Proxmox node name", host)
	}
	s, c := mixedStack(b, host)
	ctx := context.Background()
	// Start-up: the policy loaded, the probe answered, the first release
	// of start-up garbage (one second after start) done.
	if _, err := c.Probe(ctx, &brokerv1.ProbeRequest{}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(idleWait)
	pid := s.BrokerProcess().Pid()
	start := rssAnonKiB(b, pid)
	heapProfile(b, pid, "start")

	reqs := mixedLoad(host)
	run := func(peak *float64) {
		for i, do := range reqs {
			if err := do(ctx, c); err != nil {
				b.Fatalf("request %d: %v", i, err)
			}
			if i%50 == 0 {
				*peak = max(*peak, rssAnonKiB(b, pid))
			}
		}
	}
	// A first round pays what the broker builds once, at first use, and
	// keeps: the protobuf type information of each message it had not
	// sent yet, the runtime's metadata for the largest heap it had, grown
	// goroutine stacks. The second round shows whether work leaves
	// anything more behind.
	var warmPeak float64
	run(&warmPeak)
	warm, _ := settleRssAnon(b, pid, start)
	heapProfile(b, pid, "warm")

	var peak float64
	for b.Loop() {
		run(&peak)
	}
	after := rssAnonKiB(b, pid)
	peak = max(peak, after)
	heapProfile(b, pid, "after")
	last, back := settleRssAnon(b, pid, warm)
	heapProfile(b, pid, "settled")
	b.ReportMetric(start/1024, "start-RssAnon-MiB")
	b.ReportMetric(warm/1024, "warm-RssAnon-MiB")
	b.ReportMetric(peak/1024, "peak-RssAnon-MiB")
	b.ReportMetric(after/1024, "after-RssAnon-MiB")
	b.ReportMetric(last/1024, "settled-RssAnon-MiB")
	if back < 0 {
		b.ReportMetric(-1, "return-s")
		b.Logf("RssAnon %.0f KiB %s after the work, %.0f KiB before it: it did not come back", last, returnWait(), warm)
	} else {
		b.ReportMetric(back.Seconds(), "return-s")
	}
}

// settleRssAnon waits up to returnWait for the broker's RssAnon to come back to
// within 256 KiB of target, and returns the last figure and how long it
// took (-1: it did not).
func settleRssAnon(b *testing.B, pid int, target float64) (float64, time.Duration) {
	begun := time.Now()
	last := rssAnonKiB(b, pid)
	for time.Since(begun) < returnWait() {
		if last <= target+256 {
			return last, time.Since(begun)
		}
		time.Sleep(time.Second)
		last = rssAnonKiB(b, pid)
	}
	return last, -1
}

func requireRootB(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root: the broker's runner creates cgroups")
	}
}

func rssAnonKiB(b *testing.B, pid int) float64 {
	v, err := procKiB(pid, "RssAnon")
	if err != nil {
		b.Fatal(err)
	}
	return v
}

// mixedStack runs the broker under the packaged policy, pointed at a fake
// Proxmox node, and dials it as root.
func mixedStack(b *testing.B, host string) (*stack.Stack, brokerv1.BrokerServiceClient) {
	root, err := repo.Root()
	if err != nil {
		b.Fatal(err)
	}
	vendor, err := os.ReadFile(filepath.Join(root, "packaging", "policy.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	pvesh, pmxcfs := fakeProxmoxFiles(b, host)
	policy := strings.Replace(string(vendor), "pvesh: /usr/bin/pvesh", "pvesh: "+pvesh, 1)
	policy = strings.Replace(policy, "pmxcfs_root: /etc/pve", "pmxcfs_root: "+pmxcfs, 1)
	opts := stack.Options{BinDir: binDir, Policy: policy}
	if dir := os.Getenv(heapProfilesEnv); dir != "" {
		opts.BrokerEnv = []string{"NANNYAGENT_HEAP_PROFILE_DIR=" + dir}
	}
	s, err := stack.Start(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Stop() })
	conn, err := unixsock.Dial(s.BrokerSocket, 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return s, brokerv1.NewBrokerServiceClient(conn)
}

type request func(context.Context, brokerv1.BrokerServiceClient) error

// mixedLoad is mixedRequests requests: a trace every
// mixedRequests/mixedTraces, the rest commands, metrics and Proxmox
// reads in turn.
func mixedLoad(host string) []request {
	stages := func(argvs ...[]string) *brokerv1.RunCommandRequest {
		req := &brokerv1.RunCommandRequest{}
		for _, argv := range argvs {
			req.Stages = append(req.Stages, &brokerv1.Stage{Argv: argv})
		}
		return req
	}
	commands := []*brokerv1.RunCommandRequest{
		stages([]string{"uptime"}),
		stages([]string{"ps", "aux"}, []string{"sort", "-k3", "-nr"}, []string{"head", "-n", "5"}),
		stages([]string{"cat", "/proc/loadavg"}),
		stages([]string{"cat", "/proc/meminfo"}),
		stages([]string{"free", "-m"}),
	}
	paths := []string{"/cluster/status", "/cluster/resources", "/nodes/" + host + "/status", "/nodes/" + host + "/lxc/100/config"}
	trace := &brokerv1.RunTraceRequest{Spec: &brokerv1.TraceSpec{Kind: brokerv1.TraceKind_TRACE_KIND_TRACEPOINT,
		Target: "syscalls:sys_enter_write", Duration: durationpb.New(time.Second)}}
	var reqs []request
	for i := 0; i < mixedRequests; i++ {
		switch {
		case i%(mixedRequests/mixedTraces) == 0:
			reqs = append(reqs, func(ctx context.Context, c brokerv1.BrokerServiceClient) error {
				_, err := c.RunTrace(ctx, trace)
				return err
			})
		case i%3 == 0:
			cmd := commands[(i/3)%len(commands)]
			reqs = append(reqs, func(ctx context.Context, c brokerv1.BrokerServiceClient) error {
				resp, err := c.RunCommand(ctx, cmd)
				if err == nil && !resp.GetDecision().GetAllowed() {
					return fmt.Errorf("%v refused: %v", cmd.GetStages(), resp.GetDecision())
				}
				return err
			})
		case i%3 == 1:
			reqs = append(reqs, func(ctx context.Context, c brokerv1.BrokerServiceClient) error {
				_, err := c.CollectMetrics(ctx, &brokerv1.CollectMetricsRequest{})
				return err
			})
		default:
			path := paths[(i/3)%len(paths)]
			reqs = append(reqs, func(ctx context.Context, c brokerv1.BrokerServiceClient) error {
				_, err := c.ProxmoxGet(ctx, &brokerv1.ProxmoxGetRequest{Path: path})
				return err
			})
		}
	}
	return reqs
}

// heapProfilesEnv names a directory for heap profiles (sampled, as the
// runtime's default rate) and the runtime's memory classes of the broker
// at start-up, after the work and at the end.
const heapProfilesEnv = "NANNYAGENT_BENCH_HEAP_PROFILES"

func heapProfile(b *testing.B, pid int, name string) {
	dir := os.Getenv(heapProfilesEnv)
	if dir == "" {
		return
	}
	written := filepath.Join(dir, fmt.Sprintf("broker-%d.pprof", pid))
	classes := strings.TrimSuffix(written, ".pprof") + ".memclasses"
	_ = os.Remove(written)
	_ = os.Remove(classes)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		b.Fatal(err)
	}
	// The profile is written after the classes.
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		if _, err := os.Stat(written); err == nil {
			time.Sleep(100 * time.Millisecond)
			_ = os.Rename(classes, filepath.Join(dir, name+".memclasses"))
			if err := os.Rename(written, filepath.Join(dir, name+".pprof")); err != nil {
				b.Fatal(err)
			}
			return
		}
	}
	b.Fatalf("no heap profile at %s", written)
}
