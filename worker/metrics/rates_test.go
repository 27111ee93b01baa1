package metrics

import (
	"testing"
	"time"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestCPUPercent(t *testing.T) {
	ct := func(user, system, idle, iowait float64) *brokerv1.CpuTimes {
		return &brokerv1.CpuTimes{User: user, System: system, Idle: idle, Iowait: iowait}
	}
	tests := []struct {
		name      string
		prev, cur *brokerv1.CpuTimes
		want      float64
		sinceBoot bool
	}{
		{"first sample: since-boot average", nil, ct(100, 50, 800, 50), 15, true},
		{"quarter busy", ct(100, 50, 800, 50), ct(125, 75, 950, 50), 25, false},
		{"fully busy", ct(100, 0, 100, 0), ct(200, 0, 100, 0), 100, false},
		{"idle", ct(100, 0, 100, 0), ct(100, 0, 200, 0), 0, false},
		{"iowait counts as not busy", ct(0, 0, 0, 0), ct(10, 0, 0, 30), 25, false},
		{"no time passed", ct(1, 1, 1, 1), ct(1, 1, 1, 1), 0, false},
		{"counters went back (reboot): since-boot", ct(1000, 0, 1000, 0), ct(30, 0, 70, 0), 30, true},
		{"no current sample", ct(1, 1, 1, 1), nil, 0, false},
		{"all zero, first", nil, ct(0, 0, 0, 0), 0, true},
		{"steal, irq, softirq and nice are busy", ct(0, 0, 0, 0),
			&brokerv1.CpuTimes{Nice: 1, Irq: 1, Softirq: 1, Steal: 1, Idle: 4}, 50, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sb := CPUPercent(tt.prev, tt.cur)
			if got != tt.want || sb != tt.sinceBoot {
				t.Errorf("got %v (since boot %v), want %v (%v)", got, sb, tt.want, tt.sinceBoot)
			}
		})
	}
}

func TestRateTracker(t *testing.T) {
	at := func(sec int64, recv, sent uint64, busy, idle float64) *brokerv1.CollectMetricsResponse {
		return &brokerv1.CollectMetricsResponse{
			CollectedAt: timestamppb.New(time.Unix(sec, 0)),
			Cpu:         &brokerv1.CpuTimes{User: busy, Idle: idle},
			Network:     &brokerv1.NetCounters{BytesRecv: recv, BytesSent: sent},
		}
	}
	var tr RateTracker
	r := tr.Update(at(1000, 1000, 500, 10, 90))
	if !r.SinceBoot || r.CPUPercent != 10 || r.RecvBytesPerSec != 0 || r.Window != 0 {
		t.Errorf("first: %+v", r)
	}
	r = tr.Update(at(1030, 4000, 2000, 25, 105))
	if r.SinceBoot || r.CPUPercent != 50 || r.RecvBytesPerSec != 100 || r.SentBytesPerSec != 50 || r.Window != 30*time.Second {
		t.Errorf("second: %+v", r)
	}
	// A sample without CPU does not replace the reference sample.
	r = tr.Update(&brokerv1.CollectMetricsResponse{CollectedAt: timestamppb.New(time.Unix(1040, 0))})
	if r.CPUPercent != 0 {
		t.Errorf("cpu-less sample: %+v", r)
	}
	// Counter reset: interface gone.
	r = tr.Update(at(1060, 10, 10, 40, 120))
	if r.RecvBytesPerSec != 0 || r.SentBytesPerSec != 0 || r.CPUPercent != 50 {
		t.Errorf("after reset: %+v", r)
	}
}
