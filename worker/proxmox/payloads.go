// Package proxmox sends a Proxmox VE node's inventory to NannyAPI: every
// proxmox_interval it reads the cluster status, the local node's status and
// the cluster's resources through the broker (three pvesh runs, whatever the
// number of guests), the guest configs (which the broker reads from pmxcfs),
// and posts the node, the cluster and each LXC container and QEMU VM on the
// local node with the field names the real backend accepts
// (nannyapi-backend.md §4.6).
//
// NannyAPI's PocketBase validation treats a numeric 0 as blank in required
// fields. The builders therefore fill Proxmox's own defaults where a config
// omits a required field, and refuse (ErrBackendRejects) a record the
// backend would refuse anyway, instead of posting it to get a 400.
package proxmox

// NodePayload is POST /api/proxmox/node. Required by the backend: ip, name,
// pveversion. nodeid, local and online are optional numbers, so a
// standalone node's nodeid 0 is sent as 0.
type NodePayload struct {
	IP         string `json:"ip"`
	Level      string `json:"level"`
	Local      int64  `json:"local"`
	Name       string `json:"name"`
	NodeID     int64  `json:"nodeid"`
	Online     int64  `json:"online"`
	PVEVersion string `json:"pveversion"`
}

// ClusterPayload is POST /api/proxmox/cluster. Every field is required, so
// none may be 0 or empty.
type ClusterPayload struct {
	Name      string `json:"name"`
	Nodes     int64  `json:"nodes"`
	Quorate   int64  `json:"quorate"`
	Version   int64  `json:"version"`
	ClusterID string `json:"px_cluster_id"`
}

// LXCPayload is POST /api/proxmox/lxc. Required: name, lxc_id, status,
// ostype. uptime (stored as text) and vmid are optional, so a stopped
// container's uptime 0 is sent as 0.
type LXCPayload struct {
	Name   string `json:"name"`
	LXCID  string `json:"lxc_id"`
	Status string `json:"status"`
	OSType string `json:"ostype"`
	Uptime int64  `json:"uptime"`
	VMID   int64  `json:"vmid"`
	Node   string `json:"node"`
}

// QEMUPayload is POST /api/proxmox/qemu. Required: name, qemu_id, status,
// ostype, kvm, boot and cpu (stored as host_cpu); uptime, vmid and vmgenid
// are optional.
type QEMUPayload struct {
	Name    string `json:"name"`
	QemuID  string `json:"qemu_id"`
	Status  string `json:"status"`
	OSType  string `json:"ostype"`
	Uptime  int64  `json:"uptime"`
	VMID    int64  `json:"vmid"`
	VMGenID string `json:"vmgenid,omitempty"`
	KVM     int64  `json:"kvm"`
	Boot    string `json:"boot"`
	CPU     string `json:"cpu"`
	Node    string `json:"node"`
}
