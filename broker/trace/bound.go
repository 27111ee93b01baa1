package trace

import (
	"google.golang.org/protobuf/proto"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
)

// bound shrinks resp until its marshalled size is at most limit, giving up
// the least useful evidence first: samples, then the smaller keys of the
// largest maps, then warnings, then text. It marks resp truncated.
func bound(resp *brokerv1.RunTraceResponse, limit int) {
	for proto.Size(resp) > limit {
		resp.Truncated = true
		if !shrinkOnce(resp) {
			break
		}
	}
	if proto.Size(resp) > limit {
		// Nothing left to halve: keep the verdict and clipped text only.
		resp.Maps, resp.Samples = nil, nil
		if len(resp.Warnings) > 1 {
			resp.Warnings = resp.Warnings[:1]
		}
		for i := range resp.Warnings {
			resp.Warnings[i] = clip(resp.Warnings[i], 256)
		}
		resp.Program = clip(resp.Program, limit/4)
		resp.Error = clip(resp.Error, limit/4)
	}
}

func shrinkOnce(resp *brokerv1.RunTraceResponse) bool {
	if n := len(resp.Samples); n > 0 {
		keep := n / 2
		resp.SamplesDropped += int64(n - keep)
		resp.Samples = resp.Samples[:keep]
		return true
	}
	if m := largestMap(resp.Maps); m != nil {
		halve(m)
		return true
	}
	if n := len(resp.Warnings); n > 1 {
		resp.Warnings = resp.Warnings[:n/2]
		return true
	}
	return false
}

// largestMap is the map with the most keys, if any has more than one.
func largestMap(maps []*brokerv1.TraceMap) *brokerv1.TraceMap {
	var best *brokerv1.TraceMap
	bestN := 1
	for _, m := range maps {
		if n := len(m.Entries) + len(m.Histograms) + len(m.Stats); n > bestN {
			best, bestN = m, n
		}
	}
	return best
}

// halve drops the lower half of each kind of key (they are sorted by value).
func halve(m *brokerv1.TraceMap) {
	if n := len(m.Entries); n > 0 {
		m.Dropped += int64(n - n/2)
		m.Entries = m.Entries[:n/2]
	}
	if n := len(m.Histograms); n > 0 {
		m.Dropped += int64(n - n/2)
		m.Histograms = m.Histograms[:n/2]
	}
	if n := len(m.Stats); n > 0 {
		m.Dropped += int64(n - n/2)
		m.Stats = m.Stats[:n/2]
	}
}
