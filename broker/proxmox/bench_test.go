package proxmox

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
)

// writeGuests fills the fake with n guests on the local node (half LXC, half
// QEMU) and a /cluster/resources listing them.
func writeGuests(b testing.TB, f *fakePVE, n int) []string {
	var resources []map[string]any
	var paths []string
	for i := range n {
		vmid := 100 + i
		kind, dir := KindLXC, "lxc"
		conf := fmt.Sprintf("#guest %d%%3A generated\narch: amd64\ncores: 2\nhostname: ct%d\nmemory: 1024\nnet0: name=eth0,bridge=vmbr0,ip=dhcp,type=veth\nostype: debian\nrootfs: local-lvm:vm-%d-disk-0,size=8G\nswap: 512\nunprivileged: 1\n", vmid, vmid, vmid)
		if i%2 == 1 {
			kind, dir = KindQEMU, "qemu"
			conf = fmt.Sprintf("boot: order=scsi0;net0\ncores: 4\ncpu: x86-64-v2-AES\nkvm: 1\nmemory: 4096\nname: vm%d\nnet0: virtio=BC:24:11:00:00:01,bridge=vmbr0\nostype: l26\nscsi0: local-lvm:vm-%d-disk-0,size=32G\nvmgenid: 8869332c-ab8d-4130-973c-ab7547588494\n\n[snap1]\ncores: 2\n", vmid, vmid)
		}
		f.writeConf(kind, vmid, conf)
		resources = append(resources, map[string]any{
			"type": dir, "node": f.node, "vmid": vmid, "name": fmt.Sprintf("g%d", vmid),
			"id": fmt.Sprintf("%s/%d", dir, vmid), "status": "running", "uptime": 1000 + i,
		})
		paths = append(paths, fmt.Sprintf("/nodes/%s/%s/%d/config", f.node, dir, vmid))
	}
	body, err := json.Marshal(resources)
	if err != nil {
		b.Fatal(err)
	}
	f.respond("/cluster/resources", body)
	return paths
}

// BenchmarkCycleReads500 is the broker's side of one worker inventory cycle
// over 500 guests: the three pvesh reads (fake pvesh, a shell script) and
// 500 guest configs from the fake pmxcfs. It reports pvesh runs per cycle.
func BenchmarkCycleReads500(b *testing.B) {
	f := newFakePVE(b, "node3")
	f.respond("/cluster/status", fixture(b, "cluster-status.out"))
	f.respond("/nodes/node3/status", fixture(b, "node-config.out"))
	configs := writeGuests(b, f, 500)
	r := f.reader(nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		for _, p := range []string{"/cluster/status", "/nodes/node3/status", "/cluster/resources"} {
			if _, err := r.Get(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
		for _, p := range configs {
			if _, err := r.Get(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(len(f.pveshCalls()))/float64(b.N), "pvesh-calls/op")
	b.ReportMetric(float64(len(configs)), "configs/op")
}

// BenchmarkGuestConfigRead is one config read from the fake pmxcfs.
func BenchmarkGuestConfigRead(b *testing.B) {
	f := newFakePVE(b, "node3")
	configs := writeGuests(b, f, 2)
	r := f.reader(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Get(context.Background(), configs[1]); err != nil {
			b.Fatal(err)
		}
	}
}
