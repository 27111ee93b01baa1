package proxmox

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nannyai/nannyagent/test/repo"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fixture reads a shared pvesh fixture without its shell-command first line.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := repo.ProxmoxFixture(name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// fakeBroker answers ProxmoxGet from canned bodies, like the broker would:
// config paths as "pmxcfs", the rest as "pvesh".
type fakeBroker struct {
	mu     sync.Mutex
	bodies map[string][]byte
	errs   map[string]error
	calls  []string
}

func newFakeBroker() *fakeBroker {
	return &fakeBroker{bodies: map[string][]byte{}, errs: map[string]error{}}
}

func (b *fakeBroker) set(path string, body []byte) { b.bodies[path] = body }

func (b *fakeBroker) ProxmoxGet(_ context.Context, in *brokerv1.ProxmoxGetRequest, _ ...grpc.CallOption) (*brokerv1.ProxmoxGetResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, in.GetPath())
	if err := b.errs[in.GetPath()]; err != nil {
		return nil, err
	}
	body, ok := b.bodies[in.GetPath()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no %s", in.GetPath())
	}
	src := "pvesh"
	if strings.HasSuffix(in.GetPath(), "/config") {
		src = "pmxcfs"
	}
	return &brokerv1.ProxmoxGetResponse{Json: body, Source: src}, nil
}

// fixtureBroker serves the shared fixtures for node3: LXC 100 gets the LXC
// fixture's config, QEMU 103 the QEMU fixture's.
func fixtureBroker(t testing.TB) *fakeBroker {
	b := newFakeBroker()
	b.set("/cluster/status", fixture(t, "cluster-status.out"))
	b.set("/cluster/resources", fixture(t, "cluster-resources.out"))
	b.set("/nodes/node3/status", fixture(t, "node-config.out"))
	b.set("/nodes/node3/lxc/100/config", fixture(t, "lxc-config.out"))
	b.set("/nodes/node3/qemu/103/config", fixture(t, "qemu-config.out"))
	return b
}

// posted is one record the fake backend received.
type posted struct {
	endpoint string
	body     map[string]any
}

// fakeBackend is a Poster that applies NannyAPI's validation: PocketBase
// "required" fields, where "" and numeric 0 count as blank, and guests only
// for a node it already has.
type fakeBackend struct {
	mu        sync.Mutex
	records   []posted
	nodes     map[string]bool
	fail      map[string]error // by endpoint or "lxc/<vmid>"-style id
	inFlight  int
	maxFlight int
	gate      chan struct{} // when set, guest posts wait on it
}

func newFakeBackend() *fakeBackend {
	return &fakeBackend{nodes: map[string]bool{}, fail: map[string]error{}}
}

var requiredFields = map[string][]string{
	"node":    {"ip", "name", "pveversion"},
	"cluster": {"name", "nodes", "quorate", "version", "px_cluster_id"},
	"lxc":     {"name", "lxc_id", "status", "ostype"},
	"qemu":    {"name", "qemu_id", "status", "ostype", "kvm", "boot", "cpu"},
}

// accept stores payload if the backend would, and returns its record id
// (the fake uses the upsert key).
func (f *fakeBackend) accept(ctx context.Context, endpoint, id string, payload any) (string, error) {
	if err := f.store(ctx, endpoint, id, payload); err != nil {
		return "", err
	}
	return id, nil
}

func (f *fakeBackend) store(ctx context.Context, endpoint, id string, payload any) error {
	raw, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		return err
	}
	f.mu.Lock()
	f.inFlight++
	f.maxFlight = max(f.maxFlight, f.inFlight)
	gate := f.gate
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if gate != nil && (endpoint == "lxc" || endpoint == "qemu") {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[endpoint]; err != nil {
		return err
	}
	if err := f.fail[id]; err != nil {
		return err
	}
	for _, field := range requiredFields[endpoint] {
		switch v := body[field].(type) {
		case string:
			if v == "" {
				return fmt.Errorf("400 %s: %s: Cannot be blank", endpoint, field)
			}
		case float64:
			if v == 0 {
				return fmt.Errorf("400 %s: %s: Cannot be blank", endpoint, field)
			}
		default:
			return fmt.Errorf("400 %s: %s missing", endpoint, field)
		}
	}
	switch endpoint {
	case "node":
		f.nodes[body["name"].(string)] = true
	case "lxc", "qemu":
		if !f.nodes[body["node"].(string)] {
			return fmt.Errorf(`400 {"error":"Node not found: %s"}`, body["node"])
		}
	}
	f.records = append(f.records, posted{endpoint, body})
	return nil
}

func (f *fakeBackend) PostProxmoxNode(ctx context.Context, v nannyapi.ProxmoxNode) (string, error) {
	return f.accept(ctx, "node", "node/"+v.Name, v)
}

func (f *fakeBackend) PostProxmoxCluster(ctx context.Context, v nannyapi.ProxmoxCluster) (string, error) {
	return f.accept(ctx, "cluster", "cluster", v)
}

func (f *fakeBackend) PostProxmoxLXC(ctx context.Context, v nannyapi.ProxmoxLXC) (string, error) {
	return f.accept(ctx, "lxc", v.LXCID, v)
}

func (f *fakeBackend) PostProxmoxQEMU(ctx context.Context, v nannyapi.ProxmoxQEMU) (string, error) {
	return f.accept(ctx, "qemu", v.QemuID, v)
}

func (f *fakeBackend) byEndpoint(endpoint string) []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, r := range f.records {
		if r.endpoint == endpoint {
			out = append(out, r.body)
		}
	}
	return out
}

// generatedNode serves a node with n guests (half LXC, half QEMU, every
// tenth stopped) and returns the broker.
func generatedNode(t testing.TB, n int) *fakeBroker {
	b := newFakeBroker()
	b.set("/cluster/status", fixture(t, "cluster-status.out"))
	b.set("/nodes/node3/status", fixture(t, "node-config.out"))
	var resources []map[string]any
	for i := range n {
		vmid := 1000 + i
		kind := "lxc"
		conf := map[string]any{"arch": "amd64", "cores": 2, "hostname": fmt.Sprintf("ct%d", vmid), "memory": 1024, "ostype": "debian",
			"rootfs": fmt.Sprintf("local-lvm:vm-%d-disk-0,size=8G", vmid), "digest": "0123456789abcdef0123456789abcdef01234567"}
		if i%2 == 1 {
			kind = "qemu"
			conf = map[string]any{"boot": "order=scsi0;net0", "cores": 4, "cpu": "x86-64-v2-AES", "kvm": 1, "memory": 4096,
				"name": fmt.Sprintf("vm%d", vmid), "ostype": "l26", "scsi0": "local-lvm:vm-disk,size=32G", "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
				"vmgenid": "8869332c-ab8d-4130-973c-ab7547588494", "digest": "0123456789abcdef0123456789abcdef01234567"}
		}
		st, up := "running", 1000+i
		if i%10 == 0 {
			st, up = "stopped", 0
		}
		res := map[string]any{"type": kind, "node": "node3", "vmid": vmid, "name": fmt.Sprintf("g%d", vmid),
			"id": fmt.Sprintf("%s/%d", kind, vmid), "status": st, "uptime": up}
		resources = append(resources, res)
		body, _ := json.Marshal(conf)
		b.set(fmt.Sprintf("/nodes/node3/%s/%d/config", kind, vmid), body)
	}
	// Guests on other nodes and other resource types must be ignored.
	resources = append(resources,
		map[string]any{"type": "qemu", "node": "node1", "vmid": 50000, "id": "qemu/50000", "status": "running"},
		map[string]any{"type": "storage", "node": "node3", "id": "storage/node3/local", "status": "available"},
		map[string]any{"type": "node", "node": "node3", "id": "node/node3", "status": "online"},
	)
	body, _ := json.Marshal(resources)
	b.set("/cluster/resources", body)
	return b
}
