package proxmox

import (
	"encoding/json"
	"testing"
)

func seedDecoders(f *testing.F) {
	f.Add([]byte(`[{"type":"cluster","name":"pxcluster","nodes":3,"quorate":1,"version":2,"id":"cluster-id"},{"type":"node","name":"node3","local":1,"ip":"192.168.1.3","nodeid":3}]`))
	f.Add([]byte(`[{"type":"lxc","node":"node3","vmid":100,"name":"t","id":"lxc/100","status":"running","uptime":1000}]`))
	f.Add([]byte(`{"pveversion":"pve-manager/8.4.14/b502d23c55afcba1","cpuinfo":{"cpus":12}}`))
	f.Add([]byte(`{"kvm":"1","boot":7,"cpu":null,"scsi0":"x,media=cdrom","vmid":1e400,"local":true}`))
	f.Add([]byte(`[1,[2],{"vmid":-1e18,"uptime":"9999999999999999999999"}]`))
}

// FuzzDecodeCluster checks the /cluster/status and /cluster/resources
// decoders and the builders fed from them: no panic, and whatever they
// build is acceptable to the backend.
func FuzzDecodeCluster(f *testing.F) {
	seedDecoders(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if items, err := DecodeClusterStatus(data); err == nil {
			if it, ok := LocalNode(items); ok {
				if p, err := BuildNode(it, "v", "192.0.2.1"); err == nil && (p.IP == "" || p.Name == "") {
					t.Fatalf("node with blank required field: %+v", p)
				}
			}
			if it, ok := ClusterItem(items); ok {
				if p, err := BuildCluster(it); err == nil && (p.Quorate == 0 || p.Nodes == 0 || p.Version == 0) {
					t.Fatalf("cluster with zero required field: %+v", p)
				}
			}
		}
		if res, err := DecodeResources(data); err == nil {
			for _, r := range guestsOn(res, "node3") {
				if r.Type == "lxc" {
					if p, err := BuildLXC(r, GuestConfig{}, "node3"); err == nil && (p.Name == "" || p.OSType == "" || p.Status == "" || p.LXCID == "") {
						t.Fatalf("lxc with blank required field: %+v", p)
					}
				}
			}
		}
	})
}

// FuzzDecodeGuestConfig checks the config and node-status decoders and the
// QEMU builder's defaults.
func FuzzDecodeGuestConfig(f *testing.F) {
	seedDecoders(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = DecodeNodeStatus(data)
		conf, err := DecodeGuestConfig(data)
		if err != nil {
			return
		}
		p, err := BuildQEMU(Resource{Type: "qemu", VMID: 100}, conf, "n")
		if err != nil {
			return
		}
		if p.KVM == 0 || p.Boot == "" || p.CPU == "" || p.OSType == "" || p.Name == "" {
			t.Fatalf("qemu with blank required field: %+v", p)
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatal(err)
		}
	})
}
