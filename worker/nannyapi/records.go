package nannyapi

import (
	"encoding/json"
	"time"
)

// Collections the agent subscribes to and lists.
const (
	CollectionInvestigations   = "investigations"
	CollectionPatchOperations  = "patch_operations"
	CollectionRebootOperations = "reboot_operations"
)

// Investigation is an investigations record (realtime or records API).
// Records carry no created/updated fields.
type Investigation struct {
	ID             string   `json:"id"`
	AgentID        string   `json:"agent_id"`
	UserID         string   `json:"user_id"`
	UserPrompt     string   `json:"user_prompt"`
	Priority       string   `json:"priority"`
	Status         string   `json:"status"`
	EpisodeID      string   `json:"episode_id"`
	ResolutionPlan string   `json:"resolution_plan"`
	InitiatedAt    string   `json:"initiated_at"`
	CompletedAt    string   `json:"completed_at"`
	Metadata       Metadata `json:"metadata"`
}

// Metadata is an investigation's metadata; the backend reads it back empty
// in some answers, so InitiatedBy may be "".
type Metadata struct {
	InitiatedBy string `json:"initiated_by"`
}

// UnmarshalJSON takes an object's initiated_by when it is a string and
// treats anything else (null, "", a type mismatch) as empty metadata: it
// only tells who started an investigation, which is not worth losing the
// record over.
func (m *Metadata) UnmarshalJSON(b []byte) error {
	*m = Metadata{}
	var obj map[string]json.RawMessage
	if json.Unmarshal(b, &obj) != nil {
		return nil
	}
	var by string
	if json.Unmarshal(obj["initiated_by"], &by) == nil && printable(by, 64) {
		m.InitiatedBy = by
	}
	return nil
}

// InitiatedByAgent reports an investigation this agent created itself; the
// backend echoes those to the agent's stream as "create".
func (i Investigation) InitiatedByAgent() bool { return i.Metadata.InitiatedBy == "agent" }

// PatchOperation is a patch_operations record. It has no script_args and
// no script_sha256; exclusions is an array or null.
type PatchOperation struct {
	ID          string     `json:"id"`
	AgentID     string     `json:"agent_id"`
	UserID      string     `json:"user_id"`
	Mode        string     `json:"mode"`
	Status      string     `json:"status"`
	ScriptID    string     `json:"script_id"`
	ScriptURL   string     `json:"script_url"`
	ScriptArgs  string     `json:"script_args"`
	LXCID       string     `json:"lxc_id"`
	VMID        FlexString `json:"vmid"`
	Exclusions  []string   `json:"exclusions"`
	ExitCode    int        `json:"exit_code"`
	ErrorMsg    string     `json:"error_msg"`
	StartedAt   string     `json:"started_at"`
	CompletedAt string     `json:"completed_at"`
	StdoutFile  string     `json:"stdout_file"`
	StderrFile  string     `json:"stderr_file"`
	OutputPath  string     `json:"output_path"`
}

// RebootOperation is a reboot_operations record; status is already "sent"
// when it is created.
type RebootOperation struct {
	ID             string     `json:"id"`
	AgentID        string     `json:"agent_id"`
	UserID         string     `json:"user_id"`
	LXCID          string     `json:"lxc_id"`
	VMID           FlexString `json:"vmid"`
	Reason         string     `json:"reason"`
	Status         string     `json:"status"`
	TimeoutSeconds int        `json:"timeout_seconds"`
	RequestedAt    string     `json:"requested_at"`
	AcknowledgedAt string     `json:"acknowledged_at"`
	CompletedAt    string     `json:"completed_at"`
	ErrorMessage   string     `json:"error_message"`
}

// RequestedTime parses requested_at ("2026-11-25 21:41:12.007Z"); the zero
// time when it is empty or malformed.
func (r RebootOperation) RequestedTime() time.Time { return ParseTime(r.RequestedAt) }

// ParseTime parses the backend's timestamps: PocketBase's
// "2006-01-02 15:04:05.000Z" and RFC 3339. Empty or malformed gives zero.
func ParseTime(s string) time.Time {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999Z", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

// Event is one realtime frame for a subscribed collection.
type Event struct {
	// Collection is the frame's event name.
	Collection string
	// Action is "create", "update" or "delete".
	Action string
	// Exactly one of these is set for the three agent collections.
	Investigation *Investigation
	Patch         *PatchOperation
	Reboot        *RebootOperation
	// Record is the raw record, also for other collections.
	Record json.RawMessage
}

// Page is one page of the PocketBase records API.
type Page[T any] struct {
	Page       int `json:"page"`
	PerPage    int `json:"perPage"`
	TotalItems int `json:"totalItems"`
	TotalPages int `json:"totalPages"`
	Items      []T `json:"items"`
}
