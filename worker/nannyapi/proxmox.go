package nannyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// PostProxmoxCluster upserts the cluster. A non-quorate or single-node
// cluster (quorate 0) is refused by the backend as blank; see MissingFields.
func (c *Client) PostProxmoxCluster(ctx context.Context, v ProxmoxCluster) (string, error) {
	return c.postProxmox(ctx, "cluster", v)
}

// PostProxmoxNode upserts the local node; post it before its guests.
func (c *Client) PostProxmoxNode(ctx context.Context, v ProxmoxNode) (string, error) {
	return c.postProxmox(ctx, "node", v)
}

// PostProxmoxLXC upserts one container; its node must have been posted.
func (c *Client) PostProxmoxLXC(ctx context.Context, v ProxmoxLXC) (string, error) {
	return c.postProxmox(ctx, "lxc", v)
}

// PostProxmoxQEMU upserts one VM; its node must have been posted.
func (c *Client) PostProxmoxQEMU(ctx context.Context, v ProxmoxQEMU) (string, error) {
	return c.postProxmox(ctx, "qemu", v)
}

// postProxmox posts an upsert (retried on 502/503/504) and returns the record id.
func (c *Client) postProxmox(ctx context.Context, kind string, v any) (string, error) {
	op := "POST /api/proxmox/" + kind
	body, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("nannyapi %s: encode: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPost, url: c.apiURL("/api/proxmox/" + kind),
		body: body, ctype: contentJSON, auth: true, idempotent: true})
	if err != nil {
		return "", err
	}
	return DecodeIngestAck(resp.body)
}
