package proxmox

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCycleFromFixtures(t *testing.T) {
	b, be := fixtureBroker(t), newFakeBackend()
	res, err := RunCycle(context.Background(), b, be, CycleConfig{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	want := CycleResult{Node: "node3", NodePosted: true, Cluster: ClusterPosted, LXCPosted: 1, QEMUPosted: 1, PveshReads: 3, ConfigReads: 2}
	if res != want {
		t.Errorf("result = %+v\nwant %+v", res, want)
	}
	order := make([]string, len(be.records))
	for i, r := range be.records {
		order[i] = r.endpoint
	}
	if got := strings.Join(order, ","); got != "node,cluster,lxc,qemu" && got != "node,cluster,qemu,lxc" {
		t.Errorf("post order = %s", got)
	}
	if got := be.byEndpoint("lxc")[0]["ostype"]; got != "alpine" {
		t.Errorf("lxc ostype = %v", got)
	}
	wantCalls := []string{"/cluster/status", "/nodes/node3/status", "/cluster/resources"}
	if strings.Join(b.calls[:3], ",") != strings.Join(wantCalls, ",") {
		t.Errorf("first reads = %v", b.calls[:3])
	}
}

func TestCycle500Guests(t *testing.T) {
	b, be := generatedNode(t, 500), newFakeBackend()
	res, err := RunCycle(context.Background(), b, be, CycleConfig{Concurrency: 8, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if res.LXCPosted != 250 || res.QEMUPosted != 250 || res.Failed != 0 || res.Skipped != 0 {
		t.Errorf("result = %+v", res)
	}
	if res.PveshReads != 3 || res.ConfigReads != 500 {
		t.Errorf("reads: pvesh %d, configs %d; want 3 and 500", res.PveshReads, res.ConfigReads)
	}
	if be.records[0].endpoint != "node" {
		t.Errorf("first post = %s, want node", be.records[0].endpoint)
	}
	if be.maxFlight > 8 {
		t.Errorf("%d posts in flight, bound 8", be.maxFlight)
	}
	stopped := 0
	for _, ep := range []string{"lxc", "qemu"} {
		for _, r := range be.byEndpoint(ep) {
			if r["node"] != "node3" {
				t.Fatalf("guest of another node posted: %v", r)
			}
			if r["status"] == "stopped" {
				stopped++
				if r["uptime"] != 0.0 {
					t.Errorf("stopped guest uptime = %v", r["uptime"])
				}
			}
		}
	}
	if stopped != 50 {
		t.Errorf("stopped guests posted = %d, want 50", stopped)
	}
}

func TestCycleStandaloneNode(t *testing.T) {
	b := newFakeBroker()
	b.set("/cluster/status", []byte(`[{"id":"node/pve","ip":"10.1.1.5","level":"","local":1,"name":"pve","nodeid":0,"online":1,"type":"node"}]`))
	b.set("/nodes/pve/status", []byte(`{"pveversion":"pve-manager/8.2.4/faa83925c9641325","uptime":5}`))
	b.set("/cluster/resources", []byte(`[{"type":"lxc","node":"pve","vmid":100,"id":"lxc/100","name":"ct","status":"stopped"}]`))
	b.set("/nodes/pve/lxc/100/config", []byte(`{"ostype":"ubuntu","hostname":"ct"}`))
	be := newFakeBackend()
	res, err := RunCycle(context.Background(), b, be, CycleConfig{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Cluster != ClusterStandalone || !res.NodePosted || res.LXCPosted != 1 {
		t.Errorf("result = %+v", res)
	}
	node := be.byEndpoint("node")[0]
	if node["nodeid"] != 0.0 || node["name"] != "pve" {
		t.Errorf("node = %v", node)
	}
	if lxc := be.byEndpoint("lxc")[0]; lxc["uptime"] != 0.0 {
		t.Errorf("stopped lxc = %v", lxc)
	}
	if len(be.byEndpoint("cluster")) != 0 {
		t.Error("a cluster was posted for a standalone node")
	}
}

func TestCycleFailures(t *testing.T) {
	boom := errors.New("503 Service Unavailable")
	tests := []struct {
		name    string
		setup   func(b *fakeBroker, be *fakeBackend)
		wantErr bool
		check   func(t *testing.T, res CycleResult, be *fakeBackend)
	}{
		{
			name: "cluster status unreadable",
			setup: func(b *fakeBroker, _ *fakeBackend) {
				b.errs["/cluster/status"] = status.Error(codes.Unavailable, "pvesh failed")
			},
			wantErr: true,
			check: func(t *testing.T, _ CycleResult, be *fakeBackend) {
				if len(be.records) != 0 {
					t.Errorf("posted %d records", len(be.records))
				}
			},
		},
		{
			name: "no local node item",
			setup: func(b *fakeBroker, _ *fakeBackend) {
				b.set("/cluster/status", []byte(`[{"type":"cluster","name":"c"}]`))
			},
			wantErr: true,
		},
		{
			name:    "node post fails: no guests",
			setup:   func(_ *fakeBroker, be *fakeBackend) { be.fail["node"] = boom },
			wantErr: true,
			check: func(t *testing.T, res CycleResult, be *fakeBackend) {
				if len(be.records) != 0 || res.NodePosted {
					t.Errorf("records %d, result %+v", len(be.records), res)
				}
			},
		},
		{
			name: "node status unreadable: probed version used",
			setup: func(b *fakeBroker, _ *fakeBackend) {
				b.errs["/nodes/node3/status"] = status.Error(codes.DeadlineExceeded, "slow")
			},
			check: func(t *testing.T, res CycleResult, be *fakeBackend) {
				if v := be.byEndpoint("node")[0]["pveversion"]; v != "pve-manager/8.4.14/probed" {
					t.Errorf("pveversion = %v", v)
				}
				if res.LXCPosted+res.QEMUPosted != 2 {
					t.Errorf("result = %+v", res)
				}
			},
		},
		{
			name: "lost quorum: cluster skipped, rest posted",
			setup: func(b *fakeBroker, _ *fakeBackend) {
				b.set("/cluster/status", []byte(`[{"type":"cluster","name":"c","nodes":3,"quorate":0,"version":4,"id":"cluster"},{"type":"node","name":"node3","local":1,"ip":"10.0.0.3","nodeid":3,"online":1}]`))
			},
			check: func(t *testing.T, res CycleResult, be *fakeBackend) {
				if !strings.Contains(res.Cluster, "quorate") || len(be.byEndpoint("cluster")) != 0 {
					t.Errorf("cluster outcome %q", res.Cluster)
				}
				if res.LXCPosted != 1 || res.QEMUPosted != 1 {
					t.Errorf("result = %+v", res)
				}
			},
		},
		{
			name:  "cluster post fails: not fatal",
			setup: func(_ *fakeBroker, be *fakeBackend) { be.fail["cluster"] = boom },
			check: func(t *testing.T, res CycleResult, _ *fakeBackend) {
				if !strings.Contains(res.Cluster, "503") || res.LXCPosted != 1 {
					t.Errorf("result = %+v", res)
				}
			},
		},
		{
			name: "one guest's config missing, one guest's post failing, one with kvm 0",
			setup: func(b *fakeBroker, be *fakeBackend) {
				b.set("/cluster/resources", []byte(`[
					{"type":"lxc","node":"node3","vmid":100,"id":"lxc/100","name":"a","status":"running","uptime":1},
					{"type":"lxc","node":"node3","vmid":101,"id":"lxc/101","name":"b","status":"running","uptime":1},
					{"type":"qemu","node":"node3","vmid":103,"id":"qemu/103","name":"c","status":"running","uptime":1},
					{"type":"qemu","node":"node3","vmid":104,"id":"qemu/104","name":"d","status":"running","uptime":1},
					{"type":"qemu","node":"node3","vmid":105,"id":"qemu/105","name":"e","status":"running","uptime":1},
					{"type":"lxc","node":"node3","vmid":7,"id":"lxc/7","name":"bad vmid"}]`))
				b.set("/nodes/node3/qemu/104/config", []byte(`{"kvm":0,"cpu":"host","boot":"order=scsi0"}`))
				b.set("/nodes/node3/qemu/105/config", []byte(`{"ostype":"l26"}`))
				be.fail["qemu/105"] = boom
			},
			check: func(t *testing.T, res CycleResult, _ *fakeBackend) {
				want := CycleResult{Node: "node3", NodePosted: true, Cluster: ClusterPosted, LXCPosted: 1, QEMUPosted: 1,
					Skipped: 1, Failed: 3, PveshReads: 3, ConfigReads: 4}
				if res != want {
					t.Errorf("result = %+v\nwant %+v", res, want)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, be := fixtureBroker(t), newFakeBackend()
			tt.setup(b, be)
			res, err := RunCycle(context.Background(), b, be, CycleConfig{PVEVersion: "pve-manager/8.4.14/probed", Logger: quiet()})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.check != nil {
				tt.check(t, res, be)
			}
		})
	}
}

func TestCycleStopsOnCancel(t *testing.T) {
	b, be := generatedNode(t, 50), newFakeBackend()
	be.gate = make(chan struct{}) // guest posts hang until cancelled
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan CycleResult)
	go func() {
		res, _ := RunCycle(ctx, b, be, CycleConfig{Concurrency: 3, Logger: quiet()})
		done <- res
	}()
	cancel()
	res := <-done
	if res.LXCPosted+res.QEMUPosted != 0 {
		t.Errorf("posted after cancel: %+v", res)
	}
}
