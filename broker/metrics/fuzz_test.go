package metrics

import (
	"testing"
)

func FuzzParseOSRelease(f *testing.F) {
	f.Add([]byte(fakeOSRelease))
	f.Add([]byte("ID=\"a\\\"b\"\nID_LIKE='x y'\n"))
	f.Add([]byte("PRETTY_NAME=\"\\\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseOSRelease(data)
		if err != nil && r.ID != "" {
			t.Fatalf("error with data: %v %+v", err, r)
		}
		if r.PlatformFamily() == "" {
			t.Fatal("empty platform family")
		}
	})
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte(fakeStat))
	f.Add([]byte("cpu 1 2 3 4\n"))
	f.Add([]byte("cpu 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0\ncpu0 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseProcStat(data)
		if err == nil && st == nil {
			t.Fatal("nil result without error")
		}
	})
}

func FuzzDefaultRouteInterface(f *testing.F) {
	f.Add([]byte(fakeRoute))
	f.Add([]byte("h\nx\t00000000\t0\tzz\t0\t0\t1\t00000000\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = defaultRouteInterface(data)
	})
}
