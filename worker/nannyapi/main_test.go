package nannyapi_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fastRetry keeps retry waits short in tests.
var fastRetry = nannyapi.RetryPolicy{Attempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}

func newClient(t testing.TB, baseURL string, cfg nannyapi.Config) *nannyapi.Client {
	t.Helper()
	cfg.BaseURL = baseURL
	if cfg.Retry == (nannyapi.RetryPolicy{}) {
		cfg.Retry = fastRetry
	}
	if cfg.Version == "" {
		cfg.Version = "0.9.0-test"
	}
	c, err := nannyapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newFake(t testing.TB, opts fakeapi.Options) *fakeapi.Server {
	t.Helper()
	s := fakeapi.New(opts)
	t.Cleanup(s.Close)
	return s
}

// bearer is OAuth-like test credentials: a token, and a replacement handed
// out once on a 401.
type bearer struct {
	mu        sync.Mutex
	token     string
	next      string
	rejected  []string
	tokenErrs error
}

func (b *bearer) Token(context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.token, b.tokenErrs
}

func (b *bearer) Rejected(_ context.Context, tok string) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rejected = append(b.rejected, tok)
	if b.next == "" {
		return "", errors.New("no fresh token")
	}
	b.token, b.next = b.next, ""
	return b.token, nil
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sampleHost() nannyapi.HostMetadata {
	return nannyapi.HostMetadata{Hostname: "peer-test-01", OSType: "linux", OSInfo: "Ubuntu 22.04.3 LTS", OSVersion: "22.04",
		PlatformFamily: "debian", Version: "0.9.0-test", KernelVersion: "5.15.0-91-generic", Arch: "amd64",
		PrimaryIP: "192.168.1.100", AllIPs: []string{"192.168.1.100", "10.0.0.5"}}
}

func sampleMetrics() nannyapi.MetricsReport {
	return nannyapi.MetricsReport{
		SystemMetrics: nannyapi.SystemMetrics{CPUPercent: 45.2, CPUCores: 8, MemoryUsedGB: 12.5, MemoryTotalGB: 16,
			MemoryPercent: 78.1, DiskUsedGB: 250, DiskTotalGB: 500, DiskUsagePercent: 50,
			LoadAverage:  nannyapi.LoadAverage{OneMin: 2.15, FiveMin: 1.98, FifteenMin: 1.75},
			NetworkStats: nannyapi.NetworkStats{InGB: 125.5, OutGB: 89.3},
			Filesystems:  []nannyapi.Filesystem{{Device: "/dev/sda1", MountPath: "/", UsedGB: 200, FreeGB: 280, TotalGB: 480, UsagePercent: 41.7}}},
		OSInfo: "Ubuntu 22.04.3 LTS", OSVersion: "22.04", Version: "0.9.0-test", PrimaryIP: "192.168.1.100",
		KernelVersion: "5.15.0-91-generic", PlatformFamily: "debian", Arch: "amd64", AllIPs: []string{"192.168.1.100"},
	}
}
