package metrics

import (
	"net/netip"
	"reflect"
	"testing"
)

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    OSRelease
		family  string
		wantErr bool
	}{
		{
			name:   "debian",
			in:     fakeOSRelease,
			want:   OSRelease{ID: "debian", Name: "Debian GNU/Linux", VersionID: "12", Version: "12 (bookworm)", PrettyName: "Debian GNU/Linux 12 (bookworm)"},
			family: "debian",
		},
		{
			name:   "ubuntu via ID",
			in:     "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 22.04.3 LTS\"\nVERSION_ID=\"22.04\"\n",
			want:   OSRelease{ID: "ubuntu", IDLike: []string{"debian"}, Name: "Ubuntu", PrettyName: "Ubuntu 22.04.3 LTS", VersionID: "22.04"},
			family: "debian",
		},
		{
			name:   "unknown ID, family from ID_LIKE",
			in:     "ID=mydistro\nID_LIKE=\"centos rhel fedora\"\n",
			want:   OSRelease{ID: "mydistro", IDLike: []string{"centos", "rhel", "fedora"}},
			family: "rhel",
		},
		{
			name:   "opensuse leap",
			in:     "ID=\"opensuse-leap\"\nID_LIKE=\"suse opensuse\"\nVERSION_ID=\"15.5\"\n",
			want:   OSRelease{ID: "opensuse-leap", IDLike: []string{"suse", "opensuse"}, VersionID: "15.5"},
			family: "suse",
		},
		{name: "arch", in: "ID=arch\n", want: OSRelease{ID: "arch"}, family: "arch"},
		{name: "alpine", in: "ID=alpine\nVERSION_ID=3.19.1\n", want: OSRelease{ID: "alpine", VersionID: "3.19.1"}, family: "alpine"},
		{name: "fedora maps to rhel", in: "ID=fedora\n", want: OSRelease{ID: "fedora"}, family: "rhel"},
		{name: "upper-case ID is lowered", in: "ID=Debian\n", want: OSRelease{ID: "debian"}, family: "debian"},
		{name: "unrecognised", in: "ID=plan9\n", want: OSRelease{ID: "plan9"}, family: "unknown"},
		{
			name:   "quotes, escapes, comments and junk",
			in:     "# comment\n\nPRETTY_NAME=\"A \\\"quoted\\\" \\$name\"\nNAME='single $quoted'\nbad line\nlower=x\nVERSION=\"unterminated\nID=x\n",
			want:   OSRelease{ID: "x", PrettyName: `A "quoted" $name`, Name: "single $quoted"},
			family: "unknown",
		},
		{name: "empty", in: "", wantErr: true, family: "unknown"},
		{name: "only junk", in: "hello\n=\n", wantErr: true, family: "unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseOSRelease([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
			if f := got.PlatformFamily(); f != tt.family {
				t.Errorf("family = %q, want %q", f, tt.family)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *procStat
		wantErr bool
	}{
		{name: "full", in: fakeStat, want: &procStat{cpu: [8]uint64{10000, 200, 3000, 50000, 400, 50, 60, 70}, cpus: 4, btime: 1700000000}},
		{name: "old kernel, four counters", in: "cpu 1 2 3 4\ncpu0 1 2 3 4\n", want: &procStat{cpu: [8]uint64{1, 2, 3, 4}, cpus: 1}},
		{name: "no aggregate line", in: "cpu0 1 2 3 4\n", wantErr: true},
		{name: "too few counters", in: "cpu 1 2\n", wantErr: true},
		{name: "non-numeric", in: "cpu 1 2 x 4\n", wantErr: true},
		{name: "bad btime", in: "cpu 1 2 3 4\nbtime -1\n", wantErr: true},
		{name: "cpufreq-like keys are not cpus", in: "cpu 1 2 3 4\ncpux 1\ncpu 1 2 3 4\n", want: &procStat{cpu: [8]uint64{1, 2, 3, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseProcStat([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestDefaultRouteInterface(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"lowest metric wins", fakeRoute, "vmbr0"},
		{"no default route", "Iface\tDestination\n" + "eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n", ""},
		{"down route ignored", "h\n" + "eth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0\n", ""},
		{"garbage", "h\nx y z\n\n", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		if got := defaultRouteInterface([]byte(tt.in)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestPrimaryAndAllAddresses(t *testing.T) {
	a := netip.MustParseAddr
	ifaces := []ifaceAddrs{
		{name: "lo", up: true, loop: true, addrs: []netip.Addr{a("127.0.0.1"), a("::1")}},
		{name: "docker0", up: false, addrs: []netip.Addr{a("172.17.0.1")}},
		{name: "eth0", up: true, addrs: []netip.Addr{a("fe80::1"), a("10.0.0.5")}},
		{name: "vmbr0", up: true, addrs: []netip.Addr{a("2001:db8::5"), a("192.168.1.3"), a("192.168.1.4")}},
	}
	tests := []struct{ name, def, want string }{
		{"default-route interface preferred", "vmbr0", "192.168.1.3"},
		{"no default route: first up interface", "", "10.0.0.5"},
		{"default route on a down interface falls back", "docker0", "10.0.0.5"},
	}
	for _, tt := range tests {
		if got := primaryAddress(ifaces, tt.def); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := primaryAddress(ifaces[:2], ""); got != "" {
		t.Errorf("only loopback and a down interface: got %q, want empty", got)
	}
	want := []string{"10.0.0.5", "172.17.0.1", "192.168.1.3", "192.168.1.4", "2001:db8::5", "fe80::1"}
	if got := allAddresses(ifaces); !reflect.DeepEqual(got, want) {
		t.Errorf("all addresses = %v, want %v", got, want)
	}
}

func TestParseUptime(t *testing.T) {
	for in, want := range map[string]uint64{"12345.67 1.0": 12345, "0.00 0.00": 0, "5": 5} {
		if got, err := parseUptime(in); err != nil || got != want {
			t.Errorf("parseUptime(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "1e13", "NaN"} {
		if _, err := parseUptime(bad); err == nil {
			t.Errorf("parseUptime(%q) accepted", bad)
		}
	}
}
