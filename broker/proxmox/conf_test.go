package proxmox

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"reflect"
	"testing"
)

func decode(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%v: %s", err, data)
	}
	return m
}

// TestParseGuestConfigMatchesPvesh writes the config files Proxmox would
// hold for the shared pvesh fixtures and checks that parsing them gives
// back pvesh's JSON (the digest aside, which is the SHA-1 of our file).
func TestParseGuestConfigMatchesPvesh(t *testing.T) {
	for _, tt := range []struct{ kind, fixture string }{
		{KindLXC, "lxc-config.out"},
		{KindQEMU, "qemu-config.out"},
	} {
		t.Run(tt.fixture, func(t *testing.T) {
			want := decode(t, fixture(t, tt.fixture))
			conf := confFromJSON(t, fixture(t, tt.fixture))
			got := decode(t, mustParse(t, tt.kind, conf))
			sum := sha1.Sum([]byte(conf))
			if got["digest"] != hex.EncodeToString(sum[:]) {
				t.Errorf("digest = %v, want sha1 of the file", got["digest"])
			}
			delete(got, "digest")
			delete(want, "digest")
			if !reflect.DeepEqual(got, want) {
				t.Errorf("parsed config differs from pvesh\n got %v\nwant %v", got, want)
			}
		})
	}
}

func mustParse(t *testing.T, kind, conf string) []byte {
	t.Helper()
	out, err := ParseGuestConfig(kind, []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseGuestConfig(t *testing.T) {
	tests := []struct {
		name string
		kind string
		conf string
		want map[string]any
	}{
		{
			name: "snapshots and pending changes are not the current config",
			kind: KindQEMU,
			conf: "boot: order=scsi0\ncores: 2\nname: web\nparent: before-upgrade\n\n[before-upgrade]\ncores: 1\nname: old\nsnaptime: 1700000000\n\n[PENDING]\ncores: 8\n",
			want: map[string]any{"boot": "order=scsi0", "cores": 2.0, "name": "web", "parent": "before-upgrade"},
		},
		{
			name: "pending section first",
			kind: KindQEMU,
			conf: "memory: 2048\n[PENDING]\nmemory: 4096\n",
			want: map[string]any{"memory": 2048.0},
		},
		{
			name: "description with colon, percent and UTF-8",
			kind: KindLXC,
			conf: "#Owner%3A ops team\n#100% sure %zz %C3%A9t%C3%A9\n#\nhostname: ct1\n",
			want: map[string]any{"description": "Owner: ops team\n100% sure %zz été\n\n", "hostname": "ct1"},
		},
		{
			name: "raw lxc keys become pairs",
			kind: KindLXC,
			conf: "arch: amd64\nlxc.cgroup2.devices.allow: c 10:200 rwm\nlxc.mount.entry = /dev/net dev/net none bind,create=dir\n",
			want: map[string]any{"arch": "amd64", "lxc": []any{
				[]any{"lxc.cgroup2.devices.allow", "c 10:200 rwm"},
				[]any{"lxc.mount.entry", "/dev/net dev/net none bind,create=dir"},
			}},
		},
		{
			name: "lxc keys in a qemu config are not raw pairs",
			kind: KindQEMU,
			conf: "lxc.foo: bar\nkvm: 0\n",
			want: map[string]any{"kvm": 0.0},
		},
		{
			name: "numbers where the schema has them, strings elsewhere",
			kind: KindQEMU,
			conf: "cpulimit: 1.5\nsockets: 1\nballoon: abc\nvmgenid: 123\nname: 42\ntags: 1;2\n",
			want: map[string]any{"cpulimit": 1.5, "sockets": 1.0, "balloon": "abc", "vmgenid": "123", "name": "42", "tags": "1;2"},
		},
		{
			name: "junk, empty values, CRLF, a forged digest and whitespace",
			kind: KindLXC,
			conf: "Hostname: upper\nnot a line\nempty:\nostype:   alpine   \r\ndigest: forged\n  \n9x: y\nlxc: forged\n",
			want: map[string]any{"ostype": "alpine"},
		},
		{
			name: "empty file",
			kind: KindLXC,
			conf: "",
			want: map[string]any{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := decode(t, mustParse(t, tt.kind, tt.conf))
			sum := sha1.Sum([]byte(tt.conf))
			if got["digest"] != hex.EncodeToString(sum[:]) {
				t.Errorf("digest = %v", got["digest"])
			}
			delete(got, "digest")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
	if _, err := ParseGuestConfig("openvz", nil); err == nil {
		t.Error("unknown kind accepted")
	}
}
