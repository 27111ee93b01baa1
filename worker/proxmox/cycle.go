package proxmox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"google.golang.org/grpc"
)

// Getter reads a Proxmox API path through the broker. The broker's
// generated gRPC client (brokerv1.BrokerServiceClient) satisfies it as is.
type Getter interface {
	ProxmoxGet(ctx context.Context, in *brokerv1.ProxmoxGetRequest, opts ...grpc.CallOption) (*brokerv1.ProxmoxGetResponse, error)
}

// Poster sends inventory records to NannyAPI (POST /api/proxmox/{node,
// cluster,lxc,qemu}) and returns the backend's record id. A *nannyapi.Client
// with credentials (Client.WithCredentials) satisfies it as is.
type Poster interface {
	PostProxmoxNode(ctx context.Context, v nannyapi.ProxmoxNode) (string, error)
	PostProxmoxCluster(ctx context.Context, v nannyapi.ProxmoxCluster) (string, error)
	PostProxmoxLXC(ctx context.Context, v nannyapi.ProxmoxLXC) (string, error)
	PostProxmoxQEMU(ctx context.Context, v nannyapi.ProxmoxQEMU) (string, error)
}

var _ Poster = (*nannyapi.Client)(nil)

// DefaultConcurrency bounds the guest config reads and posts in flight.
const DefaultConcurrency = 4

// CycleConfig tunes one inventory cycle.
type CycleConfig struct {
	// Concurrency bounds guests handled at once; DefaultConcurrency if ≤ 0.
	Concurrency int
	// FallbackIP stands in for a node address /cluster/status lacks (the
	// agent's primary IP); nil for none.
	FallbackIP func() string
	// PVEVersion stands in when /nodes/<node>/status fails (the broker's
	// Probe reports one).
	PVEVersion string
	Logger     *slog.Logger
}

// CycleResult says what one cycle did.
type CycleResult struct {
	Node        string
	NodePosted  bool
	Cluster     string // "posted", "standalone", or why it was not posted
	LXCPosted   int
	QEMUPosted  int
	Skipped     int // guests the backend would reject (see ErrBackendRejects)
	Failed      int // guests whose config read, decoding or post failed
	PveshReads  int // ProxmoxGet answers that came from pvesh
	ConfigReads int // ProxmoxGet answers that came from pmxcfs
}

// Cluster outcomes in CycleResult.
const (
	ClusterPosted     = "posted"
	ClusterStandalone = "standalone"
)

// cycle is one run's state.
type cycle struct {
	get  Getter
	post Poster
	cfg  CycleConfig
	log  *slog.Logger

	mu  sync.Mutex
	res CycleResult
}

// RunCycle reads the inventory and posts it: the local node first (guests
// need it), then the cluster when there is one, then every LXC and QEMU
// guest on the local node, at most cfg.Concurrency at a time. A guest that
// fails is logged and counted, not fatal. The cycle fails when the node
// cannot be read or posted, because the backend refuses guests of a node it
// does not know.
func RunCycle(ctx context.Context, g Getter, p Poster, cfg CycleConfig) (CycleResult, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &cycle{get: g, post: p, cfg: cfg, log: log}
	err := c.run(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.res, err
}

func (c *cycle) run(ctx context.Context) error {
	raw, err := c.read(ctx, "/cluster/status")
	if err != nil {
		return err
	}
	items, err := DecodeClusterStatus(raw)
	if err != nil {
		return err
	}
	local, ok := LocalNode(items)
	if !ok {
		return errors.New("/cluster/status has no local node item")
	}
	node := local.Name
	c.res.Node = node
	if err := c.postNode(ctx, local); err != nil {
		return err
	}
	c.postCluster(ctx, items)

	raw, err = c.read(ctx, "/cluster/resources")
	if err != nil {
		return err
	}
	resources, err := DecodeResources(raw)
	if err != nil {
		return err
	}
	c.postGuests(ctx, node, guestsOn(resources, node))
	return nil
}

// read asks the broker for path and counts where the answer came from.
func (c *cycle) read(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.get.ProxmoxGet(ctx, &brokerv1.ProxmoxGetRequest{Path: path})
	if err != nil {
		return nil, fmt.Errorf("proxmox get %s: %w", path, err)
	}
	c.mu.Lock()
	switch resp.GetSource() {
	case "pvesh":
		c.res.PveshReads++
	case "pmxcfs":
		c.res.ConfigReads++
	}
	c.mu.Unlock()
	return resp.GetJson(), nil
}

func (c *cycle) postNode(ctx context.Context, local StatusItem) error {
	version := c.cfg.PVEVersion
	raw, err := c.read(ctx, "/nodes/"+local.Name+"/status")
	if err == nil {
		var st NodeStatus
		if st, err = DecodeNodeStatus(raw); err == nil && st.PVEVersion != "" {
			version = st.PVEVersion
		}
	}
	if err != nil {
		c.log.Warn("proxmox node status unreadable, using the probed version", "node", local.Name, "version", version, "err", err)
	}
	fallback := ""
	if c.cfg.FallbackIP != nil {
		fallback = c.cfg.FallbackIP()
	}
	payload, err := BuildNode(local, version, fallback)
	if err != nil {
		return err
	}
	id, err := c.post.PostProxmoxNode(ctx, payload)
	if err != nil {
		return fmt.Errorf("post node %s: %w", payload.Name, err)
	}
	c.log.Debug("proxmox node posted", "node", payload.Name, "record", id)
	c.res.NodePosted = true
	return nil
}

// postCluster posts the cluster item; failures are logged, not fatal: the
// backend links the node and guests whenever the cluster arrives.
func (c *cycle) postCluster(ctx context.Context, items []StatusItem) {
	it, ok := ClusterItem(items)
	if !ok {
		c.res.Cluster = ClusterStandalone
		return
	}
	payload, err := BuildCluster(it)
	if err == nil {
		_, err = c.post.PostProxmoxCluster(ctx, payload)
	}
	if err != nil {
		c.res.Cluster = err.Error()
		c.log.Warn("proxmox cluster not posted", "cluster", it.Name, "err", err)
		return
	}
	c.res.Cluster = ClusterPosted
}

// guestsOn picks the LXC and QEMU guests on node, in vmid order.
func guestsOn(resources []Resource, node string) []Resource {
	var guests []Resource
	for _, r := range resources {
		if (r.Type == "lxc" || r.Type == "qemu") && r.Node == node {
			guests = append(guests, r)
		}
	}
	sort.Slice(guests, func(i, j int) bool { return guests[i].VMID < guests[j].VMID })
	return guests
}

func (c *cycle) postGuests(ctx context.Context, node string, guests []Resource) {
	sem := make(chan struct{}, c.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, g := range guests {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.postGuest(ctx, node, g)
		}()
	}
	wg.Wait()
}

func (c *cycle) postGuest(ctx context.Context, node string, r Resource) {
	err := c.guest(ctx, node, r)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil && r.Type == "lxc":
		c.res.LXCPosted++
	case err == nil:
		c.res.QEMUPosted++
	case errors.Is(err, ErrBackendRejects):
		c.res.Skipped++
		c.log.Warn("proxmox guest not posted", "id", r.ID, "err", err)
	default:
		c.res.Failed++
		c.log.Warn("proxmox guest failed", "id", r.ID, "err", err)
	}
}

func (c *cycle) guest(ctx context.Context, node string, r Resource) error {
	if err := checkGuest(r, r.Type); err != nil {
		return err
	}
	raw, err := c.read(ctx, fmt.Sprintf("/nodes/%s/%s/%d/config", node, r.Type, r.VMID))
	if err != nil {
		return err
	}
	conf, err := DecodeGuestConfig(raw)
	if err != nil {
		return err
	}
	if r.Type == "lxc" {
		p, err := BuildLXC(r, conf, node)
		if err != nil {
			return err
		}
		if _, err := c.post.PostProxmoxLXC(ctx, p); err != nil {
			return fmt.Errorf("post lxc %d: %w", r.VMID, err)
		}
		return nil
	}
	p, err := BuildQEMU(r, conf, node)
	if err != nil {
		return err
	}
	if _, err := c.post.PostProxmoxQEMU(ctx, p); err != nil {
		return fmt.Errorf("post qemu %d: %w", r.VMID, err)
	}
	return nil
}
