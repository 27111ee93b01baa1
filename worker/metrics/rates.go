package metrics

import (
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// Rates are what two successive samples say about the time between them.
type Rates struct {
	// CPUPercent is the busy share of all CPUs, in [0, 100]. For the first
	// sample (or after the counters went backwards, as after a reboot) it is
	// the average since boot: the only honest figure one sample gives.
	CPUPercent float64
	// SinceBoot says CPUPercent is the since-boot average.
	SinceBoot bool
	// RecvBytesPerSec and SentBytesPerSec are network rates over
	// non-loopback interfaces; 0 for the first sample or after a counter
	// reset. They are not sent (the wire carries totals), only reported.
	RecvBytesPerSec float64
	SentBytesPerSec float64
	// Window is the time between the two samples, 0 for the first.
	Window time.Duration
}

// RateTracker remembers the previous sample. It is not safe for concurrent
// use; the Loop serialises it.
type RateTracker struct {
	prev *brokerv1.CollectMetricsResponse
}

// Update folds in a new sample and returns the rates since the previous one.
func (t *RateTracker) Update(cur *brokerv1.CollectMetricsResponse) Rates {
	prev := t.prev
	if cur.GetCpu() != nil && cur.GetCollectedAt() != nil {
		t.prev = cur
	}
	r := Rates{}
	r.CPUPercent, r.SinceBoot = CPUPercent(prev.GetCpu(), cur.GetCpu())
	if prev == nil || prev.GetCollectedAt() == nil || cur.GetCollectedAt() == nil {
		return r
	}
	r.Window = cur.GetCollectedAt().AsTime().Sub(prev.GetCollectedAt().AsTime())
	if r.Window <= 0 || prev.GetNetwork() == nil || cur.GetNetwork() == nil {
		return r
	}
	sec := r.Window.Seconds()
	r.RecvBytesPerSec = counterRate(prev.GetNetwork().GetBytesRecv(), cur.GetNetwork().GetBytesRecv(), sec)
	r.SentBytesPerSec = counterRate(prev.GetNetwork().GetBytesSent(), cur.GetNetwork().GetBytesSent(), sec)
	return r
}

func counterRate(prev, cur uint64, sec float64) float64 {
	if cur < prev { // counter reset: interface gone, or a reboot
		return 0
	}
	return float64(cur-prev) / sec
}

// CPUPercent is the busy share of CPU time between prev and cur, in
// [0, 100]. Busy is everything but idle and iowait. With no usable prev
// (nil, or counters that went backwards) it is cur's since-boot average and
// sinceBoot is true. With no cur it is 0.
func CPUPercent(prev, cur *brokerv1.CpuTimes) (pct float64, sinceBoot bool) {
	if cur == nil {
		return 0, false
	}
	busy, total := cpuBusyTotal(cur)
	if prev != nil {
		pb, pt := cpuBusyTotal(prev)
		if total >= pt && busy >= pb {
			db, dt := busy-pb, total-pt
			if dt <= 0 {
				return 0, false
			}
			return clamp(db/dt*100, 0, 100), false
		}
	}
	if total <= 0 {
		return 0, true
	}
	return clamp(busy/total*100, 0, 100), true
}

func cpuBusyTotal(t *brokerv1.CpuTimes) (busy, total float64) {
	busy = t.GetUser() + t.GetNice() + t.GetSystem() + t.GetIrq() + t.GetSoftirq() + t.GetSteal()
	return busy, busy + t.GetIdle() + t.GetIowait()
}
