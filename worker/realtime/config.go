package realtime

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
)

// Config configures a Realtime. AgentID, API, Store and at least one
// handler are required; zero durations and counts take the defaults.
type Config struct {
	// AgentID is this agent's id; records of any other agent are ignored.
	AgentID string
	// API is the NannyAPI client with the agent's credentials.
	API API
	// Store is the record of handled operations (opened by the caller,
	// who closes it after Run returns).
	Store *opstate.Store

	// Handlers; a nil one leaves that kind untouched (not subscribed, not
	// listed, not recorded), for a later worker version to take.
	Investigations InvestigationHandler
	Patches        PatchHandler
	Reboots        RebootHandler

	// RebootChanged, when set, is told every update of one of this agent's
	// reboot records the stream brings (acknowledged, completed, timeout):
	// the reboot handler's hold on metrics ends when the backend has moved
	// the reboot on. It must not block.
	RebootChanged func(nannyapi.RebootOperation)

	// Reporter reports skipped and interrupted operations; nil only logs.
	Reporter Reporter
	// PatchRecovery looks up interrupted patch runs; nil reports them
	// failed with "outcome unknown".
	PatchRecovery PatchRecovery
	// BootTime returns when the host booted (default: btime from
	// /proc/stat); recovery uses it for interrupted reboots.
	BootTime func() (time.Time, error)

	// Logger (default: discard).
	Logger *slog.Logger
	// Now is the clock for staleness and records (default time.Now).
	// Timers use the real clock.
	Now func() time.Time

	// IdleTimeout ends a stream that delivered no byte for this long
	// (default 5m30s, just above the backend's 5-minute idle close, so a
	// half-open connection cannot stall the worker).
	IdleTimeout time.Duration
	// BackoffMin and BackoffMax bound the jittered, doubling wait before a
	// reconnect after an error (defaults 1s and 30s). A clean close after a
	// subscribed session of at least BackoffMin reconnects at once.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// CatchUpInterval is the period of the catch-up that lists open records
	// (default 60s); one also runs after every subscribe.
	CatchUpInterval time.Duration
	// RecoverInterval spaces the retries of operations a previous process
	// left running that could not be resolved yet, such as a patch run
	// still going in the broker (default 10s).
	RecoverInterval time.Duration
	// Workers per kind: how many operations of the kind run at once
	// (defaults: investigations 2, patches 1, reboots 1).
	InvestigationWorkers int
	PatchWorkers         int
	RebootWorkers        int
	// QueueSize bounds the operations waiting per kind (default 256); a
	// claim that does not fit is released and found again by a catch-up.
	QueueSize int
	// MaxApplyAge: a patch in apply mode that may be older than this is
	// not run (default 24h); see the package documentation.
	MaxApplyAge time.Duration
	// MaxEventBytes bounds one SSE event (default 1 MiB).
	MaxEventBytes int

	// rand returns a float in [0,1) for jitter; tests replace it.
	rand func() float64
}

// Defaults.
const (
	DefaultIdleTimeout     = 5*time.Minute + 30*time.Second
	DefaultBackoffMin      = time.Second
	DefaultBackoffMax      = 30 * time.Second
	DefaultCatchUpInterval = time.Minute
	DefaultRecoverInterval = 10 * time.Second
	DefaultMaxApplyAge     = 24 * time.Hour
	DefaultQueueSize       = 256
	DefaultMaxEventBytes   = 1 << 20
)

func (c Config) withDefaults() Config {
	dur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	num := func(n *int, def int) {
		if *n <= 0 {
			*n = def
		}
	}
	dur(&c.IdleTimeout, DefaultIdleTimeout)
	dur(&c.BackoffMin, DefaultBackoffMin)
	dur(&c.BackoffMax, DefaultBackoffMax)
	dur(&c.CatchUpInterval, DefaultCatchUpInterval)
	dur(&c.RecoverInterval, DefaultRecoverInterval)
	dur(&c.MaxApplyAge, DefaultMaxApplyAge)
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	num(&c.InvestigationWorkers, 2)
	num(&c.PatchWorkers, 1)
	num(&c.RebootWorkers, 1)
	num(&c.QueueSize, DefaultQueueSize)
	num(&c.MaxEventBytes, DefaultMaxEventBytes)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.BootTime == nil {
		c.BootTime = procBootTime
	}
	if c.rand == nil {
		c.rand = rand.Float64
	}
	return c
}

func (c Config) check() error {
	switch {
	case !nannyapi.ValidID(c.AgentID):
		return errors.New("realtime: agent id missing or malformed")
	case c.API == nil:
		return errors.New("realtime: no API")
	case c.Store == nil:
		return errors.New("realtime: no operation store")
	case c.Investigations == nil && c.Patches == nil && c.Reboots == nil:
		return errors.New("realtime: no handler")
	}
	return nil
}
