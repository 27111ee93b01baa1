package nannyapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// HostMetadata describes this host at registration. The caller fills it
// (the worker gets it from the broker); registration.NormalizeHost fills
// platform_family when it is empty.
type HostMetadata struct {
	Hostname       string   `json:"hostname"`
	OSType         string   `json:"os_type"`
	OSInfo         string   `json:"os_info"`
	OSVersion      string   `json:"os_version"`
	PlatformFamily string   `json:"platform_family"`
	Version        string   `json:"version"`
	KernelVersion  string   `json:"kernel_version"`
	Arch           string   `json:"arch"`
	PrimaryIP      string   `json:"primary_ip"`
	AllIPs         []string `json:"all_ips"`
}

// DeviceAuth is the answer to device-auth-start.
type DeviceAuth struct {
	DeviceCode      string `json:"device_code"`
	UserCode        string `json:"user_code"`
	VerificationURI string `json:"verification_uri"`
	// ExpiresIn is in seconds (the backend says 600; there is no interval).
	ExpiresIn int `json:"expires_in"`
}

// TokenResponse is the answer to register, refresh and renew-refresh-token.
// The backend sends no token_type and, on refresh, "refresh_token":"".
type TokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	// ExpiresIn is in seconds; the backend says 3600 while the JWT lives 7 days.
	ExpiresIn int64 `json:"expires_in"`
	// RefreshTokenExpiresIn is in seconds; only newer backends send it.
	RefreshTokenExpiresIn int64  `json:"refresh_token_expires_in"`
	AgentID               string `json:"agent_id"`
}

// String hides the tokens so a TokenResponse can never be logged with them.
func (t TokenResponse) String() string {
	return fmt.Sprintf("TokenResponse{agent_id=%q expires_in=%d access_token=%s refresh_token=%s}",
		t.AgentID, t.ExpiresIn, redacted(t.AccessToken), redacted(t.RefreshToken))
}

// GoString hides the tokens from %#v too.
func (t TokenResponse) GoString() string { return t.String() }

func redacted(s string) string {
	if s == "" {
		return "\"\""
	}
	return "[redacted]"
}

// MetricsReport is the body of ingest-metrics (without "action", which
// IngestMetrics adds), with the field names the real backend reads
// (nannyapi-backend.md §4.1). worker/metrics builds it from a broker sample.
type MetricsReport struct {
	SystemMetrics SystemMetrics `json:"system_metrics"`
	// OSInfo is the OS's pretty name ("Debian GNU/Linux 12 (bookworm)"), as
	// in the backend's own examples; the reference agent sent the platform ID.
	OSInfo        string `json:"os_info,omitempty"`
	OSVersion     string `json:"os_version,omitempty"`
	OSType        string `json:"os_type,omitempty"`
	Version       string `json:"version,omitempty"`
	PrimaryIP     string `json:"primary_ip,omitempty"`
	KernelVersion string `json:"kernel_version,omitempty"`
	// PlatformFamily is required on every heartbeat: the backend answers
	// 400 "platform_family required" without it.
	PlatformFamily string   `json:"platform_family"`
	Arch           string   `json:"arch,omitempty"`
	AllIPs         []string `json:"all_ips,omitempty"`
}

// SystemMetrics is one sample: sizes in GiB, percentages 0…100, everything
// ≥ 0 (the backend refuses a cpu_percent above 100 and negative numbers).
type SystemMetrics struct {
	CPUPercent       float64      `json:"cpu_percent"`
	CPUCores         int          `json:"cpu_cores"`
	MemoryUsedGB     float64      `json:"memory_used_gb"`
	MemoryTotalGB    float64      `json:"memory_total_gb"`
	MemoryPercent    float64      `json:"memory_percent"`
	DiskUsedGB       float64      `json:"disk_used_gb"`
	DiskTotalGB      float64      `json:"disk_total_gb"`
	DiskUsagePercent float64      `json:"disk_usage_percent"`
	LoadAverage      LoadAverage  `json:"load_average"`
	NetworkStats     NetworkStats `json:"network_stats"`
	// Filesystems is sent as [] when empty, never null.
	Filesystems   []Filesystem `json:"filesystems"`
	KernelVersion string       `json:"kernel_version,omitempty"`
}

// LoadAverage is /proc/loadavg's three numbers.
type LoadAverage struct {
	OneMin     float64 `json:"one_min"`
	FiveMin    float64 `json:"five_min"`
	FifteenMin float64 `json:"fifteen_min"`
}

// NetworkStats is network traffic in GiB: cumulative totals received and
// sent since boot over non-loopback interfaces, not rates, because that is
// what the reference agent sends and the backend stores under these names.
type NetworkStats struct {
	InGB  float64 `json:"in_gb"`
	OutGB float64 `json:"out_gb"`
}

// Filesystem is one mounted filesystem.
type Filesystem struct {
	Device       string  `json:"device"`
	MountPath    string  `json:"mount_path"`
	UsedGB       float64 `json:"used_gb"`
	FreeGB       float64 `json:"free_gb"`
	TotalGB      float64 `json:"total_gb"`
	UsagePercent float64 `json:"usage_percent"`
}

// InvestigationCreated is the 201 answer to an investigation create.
type InvestigationCreated struct {
	ID             string          `json:"id"`
	UserID         string          `json:"user_id"`
	AgentID        string          `json:"agent_id"`
	EpisodeID      string          `json:"episode_id"`
	UserPrompt     string          `json:"user_prompt"`
	Priority       string          `json:"priority"`
	Status         string          `json:"status"`
	ResolutionPlan string          `json:"resolution_plan"`
	InitiatedAt    string          `json:"initiated_at"`
	CompletedAt    *string         `json:"completed_at"`
	Metadata       json.RawMessage `json:"metadata"`
	InferenceCount int             `json:"inference_count"`
}

// ChatMessage is one message of an AI conversation. Content is always a
// string: the backend answers 400 to content-part arrays.
type ChatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// DefaultModel is the model name sent on AI turns (the backend ignores it).
const DefaultModel = "tensorzero::function_name::diagnose_and_heal"

// ChatCompletion is the backend's re-serialised TensorZero answer.
type ChatCompletion struct {
	ID        string   `json:"id"`
	EpisodeID string   `json:"episode_id"`
	Model     string   `json:"model"`
	Choices   []Choice `json:"choices"`
	Usage     Usage    `json:"usage"`
}

// Content returns choices[0].message.content (DecodeChatCompletion checks it exists).
func (c ChatCompletion) Content() string {
	if len(c.Choices) == 0 {
		return ""
	}
	return c.Choices[0].Message.Content
}

// Choice is one completion choice.
type Choice struct {
	Index        int         `json:"index"`
	FinishReason string      `json:"finish_reason"`
	Message      ChatMessage `json:"message"`
}

// Usage is the token count of a turn.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// InvestigationUpdate is the only body the backend takes on
// PATCH /api/investigations?id=: status, resolution_plan and episode_id.
// Empty fields are left out.
type InvestigationUpdate struct {
	Status         string `json:"status,omitempty"`
	ResolutionPlan string `json:"resolution_plan,omitempty"`
	EpisodeID      string `json:"episode_id,omitempty"`
}

// Investigation statuses worth sending (the backend does not validate).
const (
	StatusPending    = "pending"
	StatusInProgress = "in_progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// ScriptInfo is the answer to GET /api/scripts/<id>/validate.
type ScriptInfo struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// PatchResult is what the agent uploads after a patch run. The backend
// judges only exit_code ("0" is completed, anything else failed).
type PatchResult struct {
	ExitCode int
	// LXCID is sent only when the operation targeted a container.
	LXCID  string
	Stdout []byte
	Stderr []byte
}

// The Proxmox bodies below are built by worker/proxmox. Every integer is an
// int64, as decoded from pvesh. Required fields use PocketBase "required"
// semantics, where numeric 0 counts as blank (nannyapi-backend.md §4.6);
// MissingFields lists what a body lacks. Optional numbers are sent even
// when 0, because 0 is a real value there (a standalone node's nodeid, a
// stopped guest's uptime).

// ProxmoxCluster is the body of POST /api/proxmox/cluster. Every field is
// required, so a non-quorate cluster (quorate 0) cannot be stored.
type ProxmoxCluster struct {
	Name      string `json:"name"`
	Nodes     int64  `json:"nodes"`
	Quorate   int64  `json:"quorate"`
	Version   int64  `json:"version"`
	ClusterID string `json:"px_cluster_id"`
}

// ProxmoxNode is the body of POST /api/proxmox/node. Required: ip, name,
// pveversion. nodeid, local and online are optional numbers, so a
// standalone node's nodeid 0 is sent as 0.
type ProxmoxNode struct {
	IP         string `json:"ip"`
	Level      string `json:"level"`
	Local      int64  `json:"local"`
	Name       string `json:"name"`
	NodeID     int64  `json:"nodeid"`
	Online     int64  `json:"online"`
	PVEVersion string `json:"pveversion"`
}

// ProxmoxLXC is the body of POST /api/proxmox/lxc. Required: name, lxc_id,
// status, ostype; node must have been posted first. uptime (stored as
// text) and vmid are optional, so a stopped container's uptime 0 is sent.
type ProxmoxLXC struct {
	Name   string `json:"name"`
	LXCID  string `json:"lxc_id"`
	Status string `json:"status"`
	OSType string `json:"ostype"`
	Uptime int64  `json:"uptime"`
	VMID   int64  `json:"vmid"`
	Node   string `json:"node"`
}

// ProxmoxQEMU is the body of POST /api/proxmox/qemu. Required: name,
// qemu_id, status, ostype, kvm, boot and cpu (stored as host_cpu); node
// must have been posted first. kvm, boot and cpu are always sent, never
// left out: they are required, and a body that lacks one is a bug for
// MissingFields to report, not something to hide. uptime, vmid and vmgenid
// are optional.
type ProxmoxQEMU struct {
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

// MissingFields lists required fields that the backend would reject as blank.
func (c ProxmoxCluster) MissingFields() []string {
	return blanks(map[string]bool{"name": c.Name == "", "nodes": c.Nodes == 0, "quorate": c.Quorate == 0,
		"version": c.Version == 0, "px_cluster_id": c.ClusterID == ""})
}

// MissingFields lists required fields that the backend would reject as blank.
func (n ProxmoxNode) MissingFields() []string {
	return blanks(map[string]bool{"ip": n.IP == "", "name": n.Name == "", "pveversion": n.PVEVersion == ""})
}

// MissingFields lists required fields that the backend would reject as blank.
func (l ProxmoxLXC) MissingFields() []string {
	return blanks(map[string]bool{"name": l.Name == "", "lxc_id": l.LXCID == "", "status": l.Status == "",
		"ostype": l.OSType == "", "node": l.Node == ""})
}

// MissingFields lists required fields that the backend would reject as blank.
func (q ProxmoxQEMU) MissingFields() []string {
	return blanks(map[string]bool{"name": q.Name == "", "qemu_id": q.QemuID == "", "status": q.Status == "",
		"ostype": q.OSType == "", "kvm": q.KVM == 0, "boot": q.Boot == "", "cpu": q.CPU == "", "node": q.Node == ""})
}

func blanks(m map[string]bool) []string {
	var out []string
	for _, name := range sortedKeys(m) {
		if m[name] {
			out = append(out, name)
		}
	}
	return out
}

// FlexString decodes a JSON string or number (the backend sends vmid as
// either) and null as "".
type FlexString string

// UnmarshalJSON accepts a string, a number or null.
func (f *FlexString) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*f = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*f = FlexString(s)
		return nil
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return fmt.Errorf("want string or number, got %.20q", b)
		}
		if _, err := strconv.ParseFloat(n.String(), 64); err != nil {
			return fmt.Errorf("want string or number: %w", err)
		}
		*f = FlexString(n.String())
		return nil
	}
}
