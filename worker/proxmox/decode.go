package proxmox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// StatusItem is one entry of `pvesh get /cluster/status`: a "cluster" item
// (only when the node is in a cluster) or a "node" item per member.
type StatusItem struct {
	Type    string
	ID      string
	Name    string
	IP      string
	Level   string
	Local   int64
	NodeID  int64
	Online  int64
	Nodes   int64
	Quorate int64
	Version int64
}

// Resource is one entry of `pvesh get /cluster/resources`.
type Resource struct {
	Type     string
	ID       string
	Node     string
	Name     string
	Status   string
	VMID     int64
	Uptime   int64
	Template int64
}

// NodeStatus is the part of `pvesh get /nodes/<node>/status` the cycle uses.
type NodeStatus struct {
	PVEVersion string
}

// GuestConfig is a guest's configuration as `pvesh get …/config` prints it.
type GuestConfig map[string]json.RawMessage

// object is one decoded JSON object with lenient field readers.
type object map[string]json.RawMessage

// DecodeClusterStatus decodes /cluster/status. Entries that are not objects
// are skipped; fields of an unexpected type read as zero.
func DecodeClusterStatus(data []byte) ([]StatusItem, error) {
	objs, err := decodeArray(data)
	if err != nil {
		return nil, fmt.Errorf("decode /cluster/status: %w", err)
	}
	items := make([]StatusItem, 0, len(objs))
	for _, o := range objs {
		items = append(items, StatusItem{
			Type: o.str("type"), ID: o.str("id"), Name: o.str("name"), IP: o.str("ip"), Level: o.str("level"),
			Local: o.int("local"), NodeID: o.int("nodeid"), Online: o.int("online"),
			Nodes: o.int("nodes"), Quorate: o.int("quorate"), Version: o.int("version"),
		})
	}
	return items, nil
}

// DecodeResources decodes /cluster/resources.
func DecodeResources(data []byte) ([]Resource, error) {
	objs, err := decodeArray(data)
	if err != nil {
		return nil, fmt.Errorf("decode /cluster/resources: %w", err)
	}
	res := make([]Resource, 0, len(objs))
	for _, o := range objs {
		res = append(res, Resource{
			Type: o.str("type"), ID: o.str("id"), Node: o.str("node"), Name: o.str("name"), Status: o.str("status"),
			VMID: o.int("vmid"), Uptime: o.int("uptime"), Template: o.int("template"),
		})
	}
	return res, nil
}

// DecodeNodeStatus decodes /nodes/<node>/status.
func DecodeNodeStatus(data []byte) (NodeStatus, error) {
	o, err := decodeObject(data)
	if err != nil {
		return NodeStatus{}, fmt.Errorf("decode node status: %w", err)
	}
	return NodeStatus{PVEVersion: o.str("pveversion")}, nil
}

// DecodeGuestConfig decodes /nodes/<node>/{lxc,qemu}/<vmid>/config.
func DecodeGuestConfig(data []byte) (GuestConfig, error) {
	o, err := decodeObject(data)
	if err != nil {
		return nil, fmt.Errorf("decode guest config: %w", err)
	}
	return GuestConfig(o), nil
}

// Str reads a string field (a number reads as its text); "" otherwise.
func (c GuestConfig) Str(key string) string { return object(c).str(key) }

// Int reads an integer field (a numeric string counts) and whether it was
// there and integral.
func (c GuestConfig) Int(key string) (int64, bool) { return object(c).intOK(key) }

// Has says whether key is set.
func (c GuestConfig) Has(key string) bool { _, ok := c[key]; return ok }

func decodeArray(data []byte) ([]object, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, err
	}
	objs := make([]object, 0, len(raw))
	for _, r := range raw {
		var o object
		if json.Unmarshal(r, &o) == nil && o != nil {
			objs = append(objs, o)
		}
	}
	return objs, nil
}

func decodeObject(data []byte) (object, error) {
	var o object
	if err := json.Unmarshal(data, &o); err != nil {
		return nil, err
	}
	if o == nil {
		return nil, errors.New("null, not an object")
	}
	return o, nil
}

func (o object) str(key string) string {
	raw, ok := o[key]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9') {
		var n json.Number
		if json.Unmarshal(raw, &n) == nil {
			return n.String()
		}
	}
	return ""
}

func (o object) int(key string) int64 {
	v, _ := o.intOK(key)
	return v
}

// intOK reads integral numbers, numeric strings and booleans (as 0/1).
func (o object) intOK(key string) (int64, bool) {
	raw, ok := o[key]
	if !ok {
		return 0, false
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		if b {
			return 1, true
		}
		return 0, true
	}
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return 0, false
		}
		n = json.Number(s)
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i, true
	}
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}
