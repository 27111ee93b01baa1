package opstate

import (
	"fmt"
	"time"
)

// Kind is the kind of operation, one per backend collection.
type Kind string

// The kinds of operation.
const (
	Investigation Kind = "investigation"
	Patch         Kind = "patch"
	Reboot        Kind = "reboot"
)

func (k Kind) valid() bool { return k == Investigation || k == Patch || k == Reboot }

// State is where an operation stands.
type State string

// The states. Received → Running → Done | Failed; Received → Skipped (never
// run); Running stays Running across a crash until recovery finishes it.
const (
	// Received: seen and claimable, not started.
	Received State = "received"
	// Running: "running" was written before the handler started.
	Running State = "running"
	// Done: the handler finished without error.
	Done State = "done"
	// Failed: the handler returned an error, or recovery judged it failed.
	Failed State = "failed"
	// Skipped: never run (too old, the backend moved on, the worker's own
	// investigation, or refused in degraded mode).
	Skipped State = "skipped"
)

func (s State) valid() bool {
	switch s {
	case Received, Running, Done, Failed, Skipped:
		return true
	}
	return false
}

// Final reports a state that is never left again.
func (s State) Final() bool { return s == Done || s == Failed || s == Skipped }

// Entry is one operation's record.
type Entry struct {
	Kind  Kind   `json:"kind"`
	ID    string `json:"id"`
	State State  `json:"state"`
	// Own marks an investigation this worker created itself.
	Own bool `json:"own,omitempty"`
	// Mode is a patch operation's mode ("apply", "dry-run").
	Mode string `json:"mode,omitempty"`
	// LXCID is the container a patch or reboot targets ("" = the host).
	LXCID string `json:"lxc_id,omitempty"`
	// FirstSeen is when this worker first saw the id.
	FirstSeen time.Time `json:"first_seen"`
	// NotBefore bounds the record's creation time from below: the record
	// did not exist before it. Zero means unknown (a backlog found on a
	// fresh install). See the realtime package for how it is set.
	NotBefore time.Time `json:"not_before,omitzero"`
	// Started and Finished are when the handler was started and when the
	// entry reached a final state.
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	// Acknowledged is when a reboot was about to be acknowledged to the
	// backend (written before the acknowledge call).
	Acknowledged time.Time `json:"acknowledged,omitzero"`
	// LastListed is the last time a catch-up still listed the record as
	// open; it keeps the entry from being pruned.
	LastListed time.Time `json:"last_listed,omitzero"`
	// Note says why an entry failed or was skipped.
	Note string `json:"note,omitempty"`
	// Report is a failure reason the backend still has to be told ("" =
	// nothing to tell): set for skips and recoveries the worker decided
	// itself, cleared once reported.
	Report string `json:"report,omitempty"`
}

// lastActivity is the latest time anything happened to e.
func (e *Entry) lastActivity() time.Time {
	t := e.FirstSeen
	for _, u := range []time.Time{e.Started, e.Finished, e.Acknowledged, e.LastListed} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

// check validates a decoded entry.
func (e *Entry) check() error {
	switch {
	case !e.Kind.valid():
		return fmt.Errorf("entry %q: unknown kind %q", clip(e.ID), clip(string(e.Kind)))
	case !ValidID(e.ID):
		return fmt.Errorf("entry of kind %s: id %q malformed", e.Kind, clip(e.ID))
	case !e.State.valid():
		return fmt.Errorf("entry %s/%s: unknown state %q", e.Kind, e.ID, clip(string(e.State)))
	case e.FirstSeen.IsZero():
		return fmt.Errorf("entry %s/%s: no first_seen", e.Kind, e.ID)
	case e.LXCID != "" && !ValidID(e.LXCID):
		return fmt.Errorf("entry %s/%s: lxc_id malformed", e.Kind, e.ID)
	case len(e.Mode) > 32 || len(e.Note) > maxNote || len(e.Report) > maxNote:
		return fmt.Errorf("entry %s/%s: mode, note or report too long", e.Kind, e.ID)
	}
	return nil
}

// maxNote bounds notes and report reasons (they come from error texts).
const maxNote = 2048

// ValidID reports an id that is safe as a key and in a URL path: 1–64
// characters of A-Z, a-z, 0-9, '_' and '-' (the backend's ids are 15
// lowercase alphanumerics).
func ValidID(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// clip keeps garbage short in error texts.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// cutNote shortens a note to maxNote bytes on a rune boundary.
func cutNote(s string) string {
	if len(s) <= maxNote {
		return s
	}
	cut := maxNote - len("…")
	for cut > 0 && s[cut]&0xc0 == 0x80 {
		cut--
	}
	return s[:cut] + "…"
}

type key struct {
	kind Kind
	id   string
}
