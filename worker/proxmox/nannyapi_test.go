package proxmox

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// loopbackAPI starts the fake NannyAPI on 127.0.0.1 with one registered
// agent and returns it with a real client holding that agent's token.
func loopbackAPI(t *testing.T) (*fakeapi.Server, *nannyapi.Client) {
	t.Helper()
	srv := fakeapi.New(fakeapi.Options{})
	t.Cleanup(srv.Close)
	c, _, err := srv.AgentClient("node3", "debian")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return srv, c
}

// TestCycleThroughTheRealClient runs cycles with *nannyapi.Client as the
// Poster (no adapter) against the fake backend, which applies NannyAPI's
// validation, and checks that it stored exactly what the builders made.
func TestCycleThroughTheRealClient(t *testing.T) {
	standalone := newFakeBroker()
	standalone.set("/cluster/status", []byte(`[{"id":"node/pve","ip":"10.1.1.5","level":"","local":1,"name":"pve","nodeid":0,"online":1,"type":"node"}]`))
	standalone.set("/nodes/pve/status", []byte(`{"pveversion":"pve-manager/8.2.4/faa83925c9641325"}`))
	standalone.set("/cluster/resources", []byte(`[{"type":"lxc","node":"pve","vmid":100,"id":"lxc/100","name":"ct","status":"stopped"},`+
		`{"type":"qemu","node":"pve","vmid":101,"id":"qemu/101","name":"vm","status":"stopped"}]`))
	standalone.set("/nodes/pve/lxc/100/config", []byte(`{"ostype":"ubuntu"}`))
	standalone.set("/nodes/pve/qemu/101/config", []byte(`{"scsi0":"local:vm-101-disk-0"}`))

	tests := []struct {
		name   string
		broker *fakeBroker
		want   CycleResult
		bodies map[string]string // kind → the JSON the backend must have stored
	}{
		{
			name:   "fixtures",
			broker: fixtureBroker(t),
			want:   CycleResult{Node: "node3", NodePosted: true, Cluster: ClusterPosted, LXCPosted: 1, QEMUPosted: 1, PveshReads: 3, ConfigReads: 2},
			bodies: map[string]string{
				"node":    `{"ip":"192.168.1.3","level":"","local":1,"name":"node3","nodeid":3,"online":0,"pveversion":"pve-manager/8.4.14/b502d23c55afcba1"}`,
				"cluster": `{"name":"pxcluster","nodes":3,"quorate":1,"version":2,"px_cluster_id":"cluster-id"}`,
				"lxc":     `{"name":"testcontainer","lxc_id":"lxc/100","status":"running","ostype":"alpine","uptime":1000,"vmid":100,"node":"node3"}`,
				"qemu": `{"name":"tensorzero","qemu_id":"qemu/103","status":"running","ostype":"l26","uptime":2000,"vmid":103,` +
					`"vmgenid":"8869332c-ab8d-4130-973c-ab7547588494","kvm":1,"boot":"order=scsi0;net0","cpu":"host","node":"node3"}`,
			},
		},
		{
			name:   "standalone node, nodeid 0, stopped guests with uptime 0",
			broker: standalone,
			want:   CycleResult{Node: "pve", NodePosted: true, Cluster: ClusterStandalone, LXCPosted: 1, QEMUPosted: 1, PveshReads: 3, ConfigReads: 2},
			bodies: map[string]string{
				"node": `{"ip":"10.1.1.5","level":"","local":1,"name":"pve","nodeid":0,"online":1,"pveversion":"pve-manager/8.2.4/faa83925c9641325"}`,
				"lxc":  `{"name":"ct","lxc_id":"lxc/100","status":"stopped","ostype":"ubuntu","uptime":0,"vmid":100,"node":"pve"}`,
				"qemu": `{"name":"vm","qemu_id":"qemu/101","status":"stopped","ostype":"other","uptime":0,"vmid":101,"kvm":1,"boot":"order=scsi0","cpu":"kvm64","node":"pve"}`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, client := loopbackAPI(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := RunCycle(ctx, tt.broker, client, CycleConfig{Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			if res != tt.want {
				t.Errorf("result = %+v\nwant %+v", res, tt.want)
			}
			posts := srv.ProxmoxPosts()
			if len(posts) != len(tt.bodies) {
				t.Fatalf("backend stored %d records, want %d: %+v", len(posts), len(tt.bodies), posts)
			}
			if posts[0].Kind != "node" {
				t.Errorf("first record = %s, want node", posts[0].Kind)
			}
			for _, p := range posts {
				var want map[string]any
				if err := json.Unmarshal([]byte(tt.bodies[p.Kind]), &want); err != nil {
					t.Fatalf("%s: %v", p.Kind, err)
				}
				if p.ID == "" || !reflect.DeepEqual(p.Body, want) {
					t.Errorf("%s record %q\n got %v\nwant %v", p.Kind, p.ID, p.Body, want)
				}
			}
		})
	}
}
