package proxmox

import (
	"encoding/json"
	"errors"
	"strconv"
	"testing"
)

func mustDecodeStatus(t *testing.T, data []byte) []StatusItem {
	t.Helper()
	items, err := DecodeClusterStatus(data)
	if err != nil {
		t.Fatal(err)
	}
	return items
}

func mustConf(t *testing.T, data string) GuestConfig {
	t.Helper()
	c, err := DecodeGuestConfig([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuildFromFixtures(t *testing.T) {
	items := mustDecodeStatus(t, fixture(t, "cluster-status.out"))
	resources, err := DecodeResources(fixture(t, "cluster-resources.out"))
	if err != nil {
		t.Fatal(err)
	}
	nodeStatus, err := DecodeNodeStatus(fixture(t, "node-config.out"))
	if err != nil {
		t.Fatal(err)
	}
	local, ok := LocalNode(items)
	if !ok {
		t.Fatal("no local node in the fixture")
	}
	cluster, ok := ClusterItem(items)
	if !ok {
		t.Fatal("no cluster in the fixture")
	}
	lxcConf, err := DecodeGuestConfig(fixture(t, "lxc-config.out"))
	if err != nil {
		t.Fatal(err)
	}
	qemuConf, err := DecodeGuestConfig(fixture(t, "qemu-config.out"))
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		build func() (any, error)
		want  string
	}{
		{
			name:  "node",
			build: func() (any, error) { return BuildNode(local, nodeStatus.PVEVersion, "") },
			// The fixture's node items carry no "online"; it stays 0 (optional).
			want: `{"ip":"192.168.1.3","level":"","local":1,"name":"node3","nodeid":3,"online":0,"pveversion":"pve-manager/8.4.14/b502d23c55afcba1"}`,
		},
		{
			name:  "cluster",
			build: func() (any, error) { return BuildCluster(cluster) },
			want:  `{"name":"pxcluster","nodes":3,"quorate":1,"version":2,"px_cluster_id":"cluster-id"}`,
		},
		{
			name:  "lxc",
			build: func() (any, error) { return BuildLXC(resources[0], lxcConf, "node3") },
			want:  `{"name":"testcontainer","lxc_id":"lxc/100","status":"running","ostype":"alpine","uptime":1000,"vmid":100,"node":"node3"}`,
		},
		{
			name:  "qemu",
			build: func() (any, error) { return BuildQEMU(resources[1], qemuConf, "node3") },
			want: `{"name":"tensorzero","qemu_id":"qemu/103","status":"running","ostype":"l26","uptime":2000,"vmid":103,` +
				`"vmgenid":"8869332c-ab8d-4130-973c-ab7547588494","kvm":1,"boot":"order=scsi0;net0","cpu":"host","node":"node3"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.build()
			if err != nil {
				t.Fatal(err)
			}
			if got := jsonOf(t, p); got != tt.want {
				t.Errorf("payload\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestBuildNodeStandaloneAndFallbacks(t *testing.T) {
	// A standalone node's /cluster/status: one node item, nodeid 0, no cluster.
	standalone := mustDecodeStatus(t, []byte(`[{"id":"node/pve","ip":"10.1.1.5","level":"","local":1,"name":"pve","nodeid":0,"online":1,"type":"node"}]`))
	if _, ok := ClusterItem(standalone); ok {
		t.Error("standalone node has a cluster item")
	}
	it, _ := LocalNode(standalone)
	p, err := BuildNode(it, "pve-manager/8.2.4/faa83925c9641325", "")
	if err != nil {
		t.Fatal(err)
	}
	want := `{"ip":"10.1.1.5","level":"","local":1,"name":"pve","nodeid":0,"online":1,"pveversion":"pve-manager/8.2.4/faa83925c9641325"}`
	if got := jsonOf(t, p); got != want {
		t.Errorf("standalone node\n got %s\nwant %s", got, want)
	}

	noIP := StatusItem{Type: "node", Name: "pve", Local: 1}
	if p, err := BuildNode(noIP, "pve-manager/9.0.3/x", "192.0.2.7"); err != nil || p.IP != "192.0.2.7" {
		t.Errorf("fallback ip: %+v %v", p, err)
	}
	for _, tc := range []struct {
		name    string
		it      StatusItem
		version string
	}{
		{"no ip and no fallback", noIP, "v"},
		{"no version", StatusItem{Name: "pve", IP: "10.0.0.1"}, ""},
		{"no name", StatusItem{IP: "10.0.0.1"}, "v"},
	} {
		if _, err := BuildNode(tc.it, tc.version, ""); !errors.Is(err, ErrBackendRejects) {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestBuildClusterRefusesWhatTheBackendRefuses(t *testing.T) {
	ok := StatusItem{Type: "cluster", Name: "c", Nodes: 1, Quorate: 1, Version: 1, ID: "cluster"}
	if _, err := BuildCluster(ok); err != nil {
		t.Errorf("single-node quorate cluster refused: %v", err)
	}
	for name, mod := range map[string]func(*StatusItem){
		"lost quorum": func(s *StatusItem) { s.Quorate = 0 },
		"no nodes":    func(s *StatusItem) { s.Nodes = 0 },
		"no version":  func(s *StatusItem) { s.Version = 0 },
		"no name":     func(s *StatusItem) { s.Name = "" },
		"no id":       func(s *StatusItem) { s.ID = "" },
	} {
		it := ok
		mod(&it)
		if _, err := BuildCluster(it); !errors.Is(err, ErrBackendRejects) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestBuildGuestDefaults(t *testing.T) {
	lxc := func(id string, vmid int64, name, st string, up int64) Resource {
		return Resource{Type: "lxc", ID: id, VMID: vmid, Name: name, Status: st, Uptime: up}
	}
	qemu := func(vmid int64) Resource {
		return Resource{Type: "qemu", ID: "qemu/" + itoa(vmid), VMID: vmid, Name: "vm", Status: "stopped"}
	}
	tests := []struct {
		name  string
		build func() (any, error)
		want  string
	}{
		{
			name: "stopped container: uptime 0 is sent",
			build: func() (any, error) {
				return BuildLXC(lxc("lxc/101", 101, "web", "stopped", 0), mustConf(t, `{"ostype":"debian"}`), "pve")
			},
			want: `{"name":"web","lxc_id":"lxc/101","status":"stopped","ostype":"debian","uptime":0,"vmid":101,"node":"pve"}`,
		},
		{
			name:  "container without name, id, status or ostype",
			build: func() (any, error) { return BuildLXC(lxc("", 102, "", "", -5), mustConf(t, `{}`), "pve") },
			want:  `{"name":"CT102","lxc_id":"lxc/102","status":"unknown","ostype":"unmanaged","uptime":0,"vmid":102,"node":"pve"}`,
		},
		{
			name: "container name from hostname",
			build: func() (any, error) {
				return BuildLXC(lxc("lxc/103", 103, "", "running", 5), mustConf(t, `{"hostname":"db1","ostype":"alpine"}`), "pve")
			},
			want: `{"name":"db1","lxc_id":"lxc/103","status":"running","ostype":"alpine","uptime":5,"vmid":103,"node":"pve"}`,
		},
		{
			name: "bare VM config: qemu-server defaults",
			build: func() (any, error) {
				return BuildQEMU(qemu(200), mustConf(t, `{"scsi0":"local:vm-200-disk-0","ide2":"none,media=cdrom","net0":"virtio=AA:BB"}`), "pve")
			},
			want: `{"name":"vm","qemu_id":"qemu/200","status":"stopped","ostype":"other","uptime":0,"vmid":200,"kvm":1,"boot":"order=scsi0;ide2;net0","cpu":"kvm64","node":"pve"}`,
		},
		{
			name: "aarch64 VM with nothing bootable",
			build: func() (any, error) {
				return BuildQEMU(Resource{Type: "qemu", VMID: 201}, mustConf(t, `{"arch":"aarch64","kvm":"1"}`), "pve")
			},
			want: `{"name":"VM 201","qemu_id":"qemu/201","status":"unknown","ostype":"other","uptime":0,"vmid":201,"kvm":1,"boot":"cdn","cpu":"cortex-a57","node":"pve"}`,
		},
		{
			name: "legacy boot string kept",
			build: func() (any, error) {
				return BuildQEMU(qemu(202), mustConf(t, `{"boot":"cdn","bootdisk":"virtio0","cpu":"host,flags=+aes","ostype":"win11"}`), "pve")
			},
			want: `{"name":"vm","qemu_id":"qemu/202","status":"stopped","ostype":"win11","uptime":0,"vmid":202,"kvm":1,"boot":"cdn","cpu":"host,flags=+aes","node":"pve"}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.build()
			if err != nil {
				t.Fatal(err)
			}
			if got := jsonOf(t, p); got != tt.want {
				t.Errorf("\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func TestBuildGuestRefusals(t *testing.T) {
	if _, err := BuildQEMU(Resource{Type: "qemu", VMID: 300, ID: "qemu/300"}, mustConf(t, `{"kvm":0}`), "pve"); !errors.Is(err, ErrBackendRejects) {
		t.Errorf("kvm 0: err = %v", err)
	}
	for name, r := range map[string]Resource{
		"wrong type":     {Type: "lxc", VMID: 100},
		"vmid too small": {Type: "qemu", VMID: 99},
		"vmid too big":   {Type: "qemu", VMID: 1000000000},
	} {
		if _, err := BuildQEMU(r, GuestConfig{}, "pve"); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := BuildLXC(Resource{Type: "qemu", VMID: 100}, GuestConfig{}, "pve"); err == nil {
		t.Error("qemu resource built as lxc")
	}
}

func TestDefaultBootOrder(t *testing.T) {
	tests := []struct{ conf, want string }{
		{`{"virtio0":"local:disk","net0":"virtio=x"}`, "order=virtio0;net0"},
		{`{"ide0":"local:d0","sata1":"local:d1","ide2":"cdrom"}`, "order=ide0;ide2"},
		{`{"scsi1":"local:d1","scsi0":"local:d0","net3":"e1000=x","net1":"virtio=y"}`, "order=scsi0;net1"},
		{`{"bootdisk":"scsi1","scsi0":"local:d0","scsi1":"local:d1"}`, "order=scsi1"},
		{`{"bootdisk":"scsi9","scsi0":"local:d0"}`, "order=scsi0"},
		{`{"bootdisk":"ide2","ide2":"none,media=cdrom","sata0":"local:d"}`, "order=sata0;ide2"},
		{`{"efidisk0":"local:efi","tpmstate0":"local:tpm"}`, "cdn"},
		{`{}`, "cdn"},
	}
	for _, tt := range tests {
		if got := DefaultBootOrder(mustConf(t, tt.conf)); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.conf, got, tt.want)
		}
	}
}

func TestDecodersAreLenient(t *testing.T) {
	items := mustDecodeStatus(t, []byte(`[1,"x",null,{"type":"node","local":"1","nodeid":2.0,"name":7,"online":true,"ip":{"a":1}},{"type":"cluster","quorate":1.5}]`))
	if len(items) != 2 {
		t.Fatalf("items = %+v", items)
	}
	n := items[0]
	if n.Local != 1 || n.NodeID != 2 || n.Name != "7" || n.Online != 1 || n.IP != "" {
		t.Errorf("node item = %+v", n)
	}
	if items[1].Quorate != 0 {
		t.Errorf("fractional quorate read as %d", items[1].Quorate)
	}
	for _, bad := range []string{``, `{}`, `null`, `[`, `"x"`} {
		if _, err := DecodeClusterStatus([]byte(bad)); err == nil && bad != `null` {
			t.Errorf("DecodeClusterStatus(%q) accepted", bad)
		}
	}
	for _, bad := range []string{``, `[]`, `null`, `{`} {
		if _, err := DecodeGuestConfig([]byte(bad)); err == nil {
			t.Errorf("DecodeGuestConfig(%q) accepted", bad)
		}
		if _, err := DecodeNodeStatus([]byte(bad)); err == nil {
			t.Errorf("DecodeNodeStatus(%q) accepted", bad)
		}
	}
}
