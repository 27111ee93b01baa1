package opstate_test

import (
	"reflect"
	"testing"

	"github.com/nannyai/nannyagent/worker/opstate"
)

// FuzzDecode: any bytes either decode into valid entries that survive an
// encode/decode round trip unchanged, or give an error; never a panic.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"version":1,"entries":[]}`))
	f.Add([]byte(`{"version":1,"last_catch_up":{"reboot":"2026-11-25T21:41:12.007Z","patch":"2026-11-25T21:41:12Z"},"entries":[{"kind":"reboot","id":"6c1av7nfmxl556j","state":"running","lxc_id":"7sfzjqlwhc0ptu5","first_seen":"2026-11-25T21:41:12.5Z","not_before":"2026-11-25T21:41:12.5Z","started":"2026-11-25T21:41:13Z","acknowledged":"2026-11-25T21:41:14Z"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"kind":"investigation","id":"8vdpgwejcaa7p3q","state":"skipped","own":true,"first_seen":"2026-11-25T21:40:25Z","note":"created by this worker"}]}`))
	f.Add([]byte(`{"version":1,"entries":[{"kind":"patch","id":"dc1h4ypytwvcu0e","state":"skipped","mode":"apply","first_seen":"2026-11-25T21:40:25Z","report":"age unknown"}]}`))
	f.Add([]byte(`{"version":2,"entries":[]}`))
	f.Add([]byte(`{"version":1,"entries":[{"kind":"patch","id":"a","state":"done","first_seen":"2026-11-25T21:40:00Z"},{"kind":"patch","id":"a","state":"done","first_seen":"2026-11-25T21:40:00Z"}]}`))
	f.Add([]byte("\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := opstate.Decode(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		out, err := opstate.Encode(snap)
		if err != nil {
			t.Fatalf("encode of a decoded snapshot: %v", err)
		}
		again, err := opstate.Decode(out)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, out)
		}
		if len(again.LastCatchUp) != len(snap.LastCatchUp) || len(again.Entries) != len(snap.Entries) {
			t.Fatalf("round trip changed the snapshot")
		}
		for k, v := range snap.LastCatchUp {
			if !again.LastCatchUp[k].Equal(v) {
				t.Fatalf("round trip changed the %s catch-up mark", k)
			}
		}
		byID := map[string]opstate.Entry{}
		for _, e := range snap.Entries {
			byID[string(e.Kind)+"/"+e.ID] = e
		}
		for _, e := range again.Entries {
			orig := byID[string(e.Kind)+"/"+e.ID]
			if !equalEntry(orig, e) {
				t.Fatalf("round trip changed %+v into %+v", orig, e)
			}
		}
	})
}

// equalEntry compares entries, times by instant (the encoding may change
// the location, never the instant).
func equalEntry(a, b opstate.Entry) bool {
	ta := []any{a.FirstSeen, a.NotBefore, a.Started, a.Finished, a.Acknowledged, a.LastListed}
	tb := []any{b.FirstSeen, b.NotBefore, b.Started, b.Finished, b.Acknowledged, b.LastListed}
	for i := range ta {
		x, y := ta[i].(interface{ UnixNano() int64 }), tb[i].(interface{ UnixNano() int64 })
		if x.UnixNano() != y.UnixNano() {
			return false
		}
	}
	a.FirstSeen, a.NotBefore, a.Started, a.Finished, a.Acknowledged, a.LastListed = b.FirstSeen, b.NotBefore, b.Started, b.Finished, b.Acknowledged, b.LastListed
	return reflect.DeepEqual(a, b)
}
