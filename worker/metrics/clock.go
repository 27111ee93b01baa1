package metrics

import "time"

// Clock is the loop's source of time, injectable for tests.
type Clock interface {
	Now() time.Time
	NewTicker(d time.Duration) Ticker
	// After is used for retry backoff.
	After(d time.Duration) <-chan time.Time
}

// Ticker is the part of *time.Ticker the loop uses.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (SystemClock) NewTicker(d time.Duration) Ticker { return systemTicker{time.NewTicker(d)} }

// After wraps time.After.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

type systemTicker struct{ t *time.Ticker }

func (s systemTicker) C() <-chan time.Time { return s.t.C }
func (s systemTicker) Stop()               { s.t.Stop() }
