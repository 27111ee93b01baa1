// Package proxmox sends a Proxmox VE node's inventory to NannyAPI: every
// proxmox_interval it reads the cluster status, the local node's status and
// the cluster's resources through the broker (three pvesh runs, whatever the
// number of guests), the guest configs (which the broker reads from pmxcfs),
// and posts the node, the cluster and each LXC container and QEMU VM on the
// local node as nannyapi's own bodies (nannyapi.ProxmoxNode, ProxmoxCluster,
// ProxmoxLXC, ProxmoxQEMU), with the values the real backend accepts
// (nannyapi-backend.md §4.6).
//
// NannyAPI's PocketBase validation treats a numeric 0 as blank in required
// fields. The builders therefore fill Proxmox's own defaults where a config
// omits a required field, and refuse (ErrBackendRejects) a record the
// backend would refuse anyway, instead of posting it to get a 400.
package proxmox
