package proxmox

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// ErrBackendRejects marks a record NannyAPI would refuse with 400 (a
// required field that is empty or numeric 0), so it is not posted.
var ErrBackendRejects = errors.New("backend would reject the record")

// Default values Proxmox itself uses when a config omits a field the backend
// requires.
const (
	// DefaultLXCOSType is what Proxmox sets for a container whose
	// distribution it does not manage.
	DefaultLXCOSType = "unmanaged"
	// DefaultQEMUOSType is qemu-server's reading of a missing ostype.
	DefaultQEMUOSType = "other"
	// DefaultQEMUCPU is the CPU model qemu-server starts an x86 VM with when
	// its config has no cpu line, on every PVE version: the newer
	// x86-64-v2-AES default (PVE ≥ 8) is what the web UI writes into new
	// configs, so a config without the line still runs kvm64.
	DefaultQEMUCPU = "kvm64"
	// DefaultQEMUCPUAArch64 is the same for an aarch64 VM (arch: aarch64).
	DefaultQEMUCPUAArch64 = "cortex-a57"
	// LegacyBootOrder is qemu-server's legacy default boot string (disk,
	// CD-ROM, network), sent when a config names no bootable device at all.
	LegacyBootOrder = "cdn"
	// UnknownStatus is what Proxmox reports for a guest it cannot see.
	UnknownStatus = "unknown"
)

// LocalNode finds the item of the local node (type "node", local 1).
func LocalNode(items []StatusItem) (StatusItem, bool) {
	for _, it := range items {
		if it.Type == "node" && it.Local == 1 {
			return it, true
		}
	}
	return StatusItem{}, false
}

// ClusterItem finds the cluster item; a standalone node has none.
func ClusterItem(items []StatusItem) (StatusItem, bool) {
	for _, it := range items {
		if it.Type == "cluster" {
			return it, true
		}
	}
	return StatusItem{}, false
}

// BuildNode builds the node record from its /cluster/status item and its
// pve-manager version. fallbackIP (the agent's primary IP) stands in for a
// missing node address. A standalone node's nodeid 0 is sent as is: the
// backend stores it in an optional field.
func BuildNode(it StatusItem, pveVersion, fallbackIP string) (nannyapi.ProxmoxNode, error) {
	p := nannyapi.ProxmoxNode{
		IP: it.IP, Level: it.Level, Local: it.Local, Name: it.Name,
		NodeID: it.NodeID, Online: it.Online, PVEVersion: pveVersion,
	}
	if p.IP == "" {
		p.IP = fallbackIP
	}
	var missing []string
	for field, v := range map[string]string{"ip": p.IP, "name": p.Name, "pveversion": p.PVEVersion} {
		if v == "" {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		return nannyapi.ProxmoxNode{}, fmt.Errorf("node %q: %w: required %s empty", p.Name, ErrBackendRejects, strings.Join(sorted(missing), ", "))
	}
	return p, nil
}

// BuildCluster builds the cluster record. A cluster that has lost quorum
// (quorate 0) cannot be stored: the backend treats the 0 as blank.
func BuildCluster(it StatusItem) (nannyapi.ProxmoxCluster, error) {
	p := nannyapi.ProxmoxCluster{Name: it.Name, Nodes: it.Nodes, Quorate: it.Quorate, Version: it.Version, ClusterID: it.ID}
	var missing []string
	if p.Name == "" {
		missing = append(missing, "name")
	}
	if p.ClusterID == "" {
		missing = append(missing, "px_cluster_id")
	}
	for field, v := range map[string]int64{"nodes": p.Nodes, "quorate": p.Quorate, "version": p.Version} {
		if v <= 0 {
			missing = append(missing, field)
		}
	}
	if len(missing) > 0 {
		return nannyapi.ProxmoxCluster{}, fmt.Errorf("cluster %q: %w: required %s zero or empty", p.Name, ErrBackendRejects, strings.Join(sorted(missing), ", "))
	}
	return p, nil
}

// BuildLXC builds a container record from its resource entry and config.
// Uptime is the resource's (0 when stopped, sent as 0: the field is
// optional). A missing name falls back to the hostname, then to Proxmox's
// "CT<vmid>"; a missing ostype to "unmanaged".
func BuildLXC(r Resource, conf GuestConfig, node string) (nannyapi.ProxmoxLXC, error) {
	if err := checkGuest(r, "lxc"); err != nil {
		return nannyapi.ProxmoxLXC{}, err
	}
	p := nannyapi.ProxmoxLXC{
		Name:   firstNonEmpty(r.Name, conf.Str("hostname"), fmt.Sprintf("CT%d", r.VMID)),
		LXCID:  firstNonEmpty(r.ID, fmt.Sprintf("lxc/%d", r.VMID)),
		Status: firstNonEmpty(r.Status, UnknownStatus),
		OSType: firstNonEmpty(conf.Str("ostype"), DefaultLXCOSType),
		Uptime: max(r.Uptime, 0),
		VMID:   r.VMID,
		Node:   node,
	}
	return p, nil
}

// BuildQEMU builds a VM record from its resource entry and config, filling
// qemu-server's defaults for what the backend requires: kvm 1, cpu kvm64
// (cortex-a57 for aarch64), ostype "other", and a boot order derived from
// the config's disks, CD-ROMs and NICs (legacy "cdn" if it has none). A VM
// with kvm explicitly 0 cannot be stored (the backend reads 0 as blank).
func BuildQEMU(r Resource, conf GuestConfig, node string) (nannyapi.ProxmoxQEMU, error) {
	if err := checkGuest(r, "qemu"); err != nil {
		return nannyapi.ProxmoxQEMU{}, err
	}
	kvm, ok := conf.Int("kvm")
	if !ok {
		kvm = 1
	}
	if kvm == 0 {
		return nannyapi.ProxmoxQEMU{}, fmt.Errorf("qemu %d: %w: kvm is 0 (hardware virtualisation off) and kvm is a required number", r.VMID, ErrBackendRejects)
	}
	p := nannyapi.ProxmoxQEMU{
		Name:    firstNonEmpty(r.Name, conf.Str("name"), fmt.Sprintf("VM %d", r.VMID)),
		QemuID:  firstNonEmpty(r.ID, fmt.Sprintf("qemu/%d", r.VMID)),
		Status:  firstNonEmpty(r.Status, UnknownStatus),
		OSType:  firstNonEmpty(conf.Str("ostype"), DefaultQEMUOSType),
		Uptime:  max(r.Uptime, 0),
		VMID:    r.VMID,
		VMGenID: conf.Str("vmgenid"),
		KVM:     kvm,
		Boot:    firstNonEmpty(conf.Str("boot"), DefaultBootOrder(conf)),
		CPU:     firstNonEmpty(conf.Str("cpu"), defaultCPU(conf)),
		Node:    node,
	}
	return p, nil
}

func checkGuest(r Resource, kind string) error {
	if r.Type != kind {
		return fmt.Errorf("resource %q is a %q, not a %s", r.ID, r.Type, kind)
	}
	if r.VMID < 100 || r.VMID > 999999999 {
		return fmt.Errorf("resource %q: vmid %d out of range", r.ID, r.VMID)
	}
	return nil
}

func defaultCPU(conf GuestConfig) string {
	if conf.Str("arch") == "aarch64" {
		return DefaultQEMUCPUAArch64
	}
	return DefaultQEMUCPU
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
