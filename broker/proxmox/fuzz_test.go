package proxmox

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func FuzzParseGuestConfig(f *testing.F) {
	f.Add("lxc", []byte("#descr%3A x\narch: amd64\ncores: 2\nlxc.apparmor.profile: unconfined\n[snap]\ncores: 1\n"))
	f.Add("qemu", []byte("boot: order=scsi0;net0\ncpu: host\nkvm: 1\nmemory: 1e400\ncpulimit: 0.5\n[PENDING]\n"))
	f.Add("qemu", []byte("#%ff%fe%\n#%C3\nname: \xff\xfe\n"))
	f.Fuzz(func(t *testing.T, kind string, data []byte) {
		out, err := ParseGuestConfig(kind, data)
		if kind != KindLXC && kind != KindQEMU {
			if err == nil {
				t.Fatal("unknown kind accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		var m map[string]any
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("output is not a JSON object: %v", err)
		}
		if d, _ := m["digest"].(string); len(d) != 40 {
			t.Fatalf("digest = %v", m["digest"])
		}
	})
}

// FuzzPathValidation checks the path judge: whatever the path, an allowed
// one names only the local node, has no dot segments and only safe bytes,
// and a config path carries a vmid in range.
func FuzzPathValidation(f *testing.F) {
	for _, s := range []string{
		"/cluster/status", "/nodes/node3/status", "/nodes/node3/lxc/100/config", "/nodes/node1/status",
		"/nodes/node3/../priv", "/nodes/node3/qemu/999999999/config", "/nodes/node3/qemu/1000000000/config",
		"//", "/nodes/NODE3/status", "/nodes/node3/lxc/100/config/", "/priv/authkey.key",
	} {
		f.Add(s)
	}
	r, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	const local = "node3"
	f.Fuzz(func(t *testing.T, path string) {
		segs, err := splitPath(path, false)
		if err != nil {
			return
		}
		p, vmid, err := r.allow(segs, path, local)
		if err != nil {
			if c := status.Code(err); c != codes.PermissionDenied && c != codes.InvalidArgument {
				t.Fatalf("unexpected code %v", c)
			}
			return
		}
		for _, s := range segs {
			if s == ".." || s == "." || !safeSegment(s) {
				t.Fatalf("allowed %q with segment %q", path, s)
			}
		}
		if len(segs) >= 2 && segs[0] == "nodes" && segs[1] != local {
			t.Fatalf("allowed another node's path %q", path)
		}
		if strings.Contains(path, "priv") {
			t.Fatalf("allowed %q", path)
		}
		if p.guest != "" && (vmid < minVMID || vmid > maxVMID) {
			t.Fatalf("allowed vmid %d in %q", vmid, path)
		}
	})
}
