package nannyapi

import (
	"errors"
	"testing"
)

func TestLANDialControl(t *testing.T) {
	for addr, ok := range map[string]bool{
		"192.168.1.10:8090": true, "127.0.0.1:80": true, "[fd00::1]:80": true, "100.64.0.1:80": true,
		"8.8.8.8:80": false, "[2001:4860::8888]:80": false, "garbage": false,
	} {
		err := lanDialControl("tcp", addr, nil)
		if (err == nil) != ok {
			t.Errorf("%s: %v", addr, err)
		}
		if !ok && addr != "garbage" && !errors.Is(err, ErrInsecureURL) {
			t.Errorf("%s: error kind %v", addr, err)
		}
	}
}

func TestBackoffBounds(t *testing.T) {
	c := &Client{cfg: Config{Retry: RetryPolicy{Attempts: 10, BaseDelay: 100, MaxDelay: 1000}}}
	for _, j := range []float64{0, 0.999} {
		c.jitter = func() float64 { return j }
		for n, want := range map[int][2]int64{1: {50, 100}, 2: {100, 200}, 3: {200, 400}, 4: {400, 800}, 5: {500, 1000}, 30: {500, 1000}} {
			d := int64(c.backoff(n))
			if d < want[0] || d > want[1] {
				t.Errorf("jitter %v attempt %d: %d not in %v", j, n, d, want)
			}
		}
	}
}
