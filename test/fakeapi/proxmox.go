package fakeapi

import (
	"encoding/json"
	"io"
	"net/http"
)

type pxCluster struct {
	Name      string `json:"name"`
	Nodes     int    `json:"nodes"`
	Quorate   int    `json:"quorate"`
	Version   int    `json:"version"`
	ClusterID string `json:"px_cluster_id"`
}

type pxNode struct {
	IP         string `json:"ip"`
	Level      string `json:"level"`
	Local      int    `json:"local"`
	Name       string `json:"name"`
	NodeID     int    `json:"nodeid"`
	Online     int    `json:"online"`
	PVEVersion string `json:"pveversion"`
}

type pxLXC struct {
	Name   string `json:"name"`
	LXCID  string `json:"lxc_id"`
	Status string `json:"status"`
	OSType string `json:"ostype"`
	Uptime int    `json:"uptime"`
	VMID   int    `json:"vmid"`
	Node   string `json:"node"`
}

type pxQEMU struct {
	Name    string `json:"name"`
	QemuID  string `json:"qemu_id"`
	Status  string `json:"status"`
	OSType  string `json:"ostype"`
	Uptime  int    `json:"uptime"`
	VMID    int    `json:"vmid"`
	VMGenID string `json:"vmgenid"`
	KVM     int    `json:"kvm"`
	Boot    string `json:"boot"`
	CPU     string `json:"cpu"`
	Node    string `json:"node"`
}

// required lists PocketBase field names and whether each is blank; numeric
// 0 counts as blank, as PocketBase's "required" does.
type required []struct {
	field string
	blank bool
}

func (q required) errors() map[string]any {
	out := map[string]any{}
	for _, f := range q {
		if f.blank {
			out[f.field] = map[string]string{"code": "validation_required", "message": "Cannot be blank."}
		}
	}
	return out
}

// handleProxmox serves POST /api/proxmox/{cluster,node,lxc,qemu}: agent
// token only (a user token or none is 401 "unauthorized"); a body that does
// not bind is 400 "Invalid request body"; guests need their node first
// (400 "Node not found: X"); blank required fields are the 400 PocketBase
// validation shape.
func (s *Server) handleProxmox(kind string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		defer s.mu.Unlock()
		p := s.authLocked(r)
		if p.kind != kindAgent {
			writeErr(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		key, check, node, msg, ok := bindProxmox(kind, p.id, body, r)
		if !ok {
			writeErr(w, http.StatusBadRequest, "Invalid request body")
			return
		}
		if node != "" {
			if _, found := s.st.proxmoxIDs["node/"+p.id+"/"+node]; !found {
				writeErr(w, http.StatusBadRequest, "Node not found: "+node)
				return
			}
		}
		if errs := check.errors(); len(errs) > 0 {
			writePB(w, http.StatusBadRequest, "Something went wrong while processing your request.", errs)
			return
		}
		id, found := s.st.proxmoxIDs[key]
		if !found {
			id = pbID()
			s.st.proxmoxIDs[key] = id
		}
		var raw map[string]any
		_ = json.Unmarshal(body, &raw)
		s.st.proxmox = append(s.st.proxmox, ProxmoxPost{Kind: kind, AgentID: p.id, ID: id, Body: raw})
		s.notify()
		writeJSON(w, http.StatusOK, struct {
			ID      string `json:"id"`
			Message string `json:"message"`
		}{id, msg})
	}
}

// bindProxmox decodes the body for kind and returns the upsert key (the
// cluster's is global, like px_cluster_id; the others are per agent), the
// required-field check, the node a guest needs, and the success message.
func bindProxmox(kind, agentID string, body []byte, r *http.Request) (key string, check required, node, msg string, ok bool) {
	if !isJSON(r) {
		return "", nil, "", "", false
	}
	switch kind {
	case "cluster":
		var c pxCluster
		if json.Unmarshal(body, &c) != nil {
			return "", nil, "", "", false
		}
		return "cluster//" + c.ClusterID, required{{"cluster_name", c.Name == ""}, {"nodes", c.Nodes == 0},
			{"quorate", c.Quorate == 0}, {"version", c.Version == 0},
			{"px_cluster_id", c.ClusterID == ""}}, "", "Cluster ingested successfully", true
	case "node":
		var n pxNode
		if json.Unmarshal(body, &n) != nil {
			return "", nil, "", "", false
		}
		return "node/" + agentID + "/" + n.Name, required{{"ip", n.IP == ""}, {"name", n.Name == ""}, {"pve_version", n.PVEVersion == ""}},
			"", "Node ingested successfully", true
	case "lxc":
		var l pxLXC
		if json.Unmarshal(body, &l) != nil {
			return "", nil, "", "", false
		}
		return "lxc/" + agentID + "/" + l.Node + "/" + itoa(l.VMID), required{{"name", l.Name == ""}, {"lxc_id", l.LXCID == ""},
			{"status", l.Status == ""}, {"ostype", l.OSType == ""}}, l.Node, "LXC ingested successfully", true
	default:
		var q pxQEMU
		if json.Unmarshal(body, &q) != nil {
			return "", nil, "", "", false
		}
		return "qemu/" + agentID + "/" + q.Node + "/" + itoa(q.VMID), required{{"name", q.Name == ""}, {"qemu_id", q.QemuID == ""},
			{"status", q.Status == ""}, {"ostype", q.OSType == ""}, {"kvm", q.KVM == 0},
			{"host_cpu", q.CPU == ""}, {"boot", q.Boot == ""}}, q.Node, "QEMU VM ingested successfully", true
	}
}

func itoa(n int) string {
	data, _ := json.Marshal(n)
	return string(data)
}
