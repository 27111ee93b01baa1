package rebooting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nannyai/nannyagent/worker/nannyapi"
)

// HoldFile is the hold's file in the worker's state directory.
const HoldFile = "reboot-hold.json"

// Heartbeats is the metrics loop: the backend marks an acknowledged
// reboot completed at the first heartbeat after the acknowledge.
type Heartbeats interface {
	Pause()
	Resume()
}

// RecordReader reads a reboot record from the backend.
type RecordReader interface {
	GetReboot(ctx context.Context, rebootID string) (nannyapi.RebootOperation, error)
}

// HoldConfig configures a Hold.
type HoldConfig struct {
	// Dir is the worker's state directory.
	Dir string
	// Metrics is paused while a hold is in force.
	Metrics Heartbeats
	// Records reads the held reboot's record; nil: only the cap and the
	// stream's updates end a hold.
	Records RecordReader
	// MonitorTick is the backend's reboot monitor period (default 30s); a
	// hold lasts at most acknowledged_at + timeout_seconds + two ticks.
	MonitorTick time.Duration
	// Poll is how often the held record is read (default 15s).
	Poll time.Duration
	// BootTime is when the host booted (default: now minus sysinfo(2)'s
	// uptime).
	BootTime func() (time.Time, error)
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default: discard).
	Logger *slog.Logger
}

// Hold keeps metrics heartbeats paused while a reboot is in the backend's
// hands, so the backend never marks a reboot completed that did not
// happen: from right before the acknowledge until the record shows it
// finished (timeout, failed, completed), the host has rebooted, a
// container reboot succeeded, or the cap has passed. It is kept on disk,
// so a worker restart does not lift it.
type Hold struct {
	cfg  HoldConfig
	path string
	log  *slog.Logger
	kick chan struct{}

	mu  sync.Mutex
	cur *HoldState
}

// HoldState is the hold in force.
type HoldState struct {
	// RebootID is the held reboot operation.
	RebootID string `json:"reboot_id"`
	// VMID is the container for a container reboot, "" for the host.
	VMID string `json:"vmid,omitempty"`
	// Since is when heartbeats were paused, right before the acknowledge.
	Since time.Time `json:"since"`
	// Acknowledged is when the acknowledge returned (zero: not yet, or it
	// failed).
	Acknowledged time.Time `json:"acknowledged,omitzero"`
	// Until is the cap: the hold ends then whatever the record says.
	Until time.Time `json:"until"`
	// Reason says why heartbeats are held.
	Reason string `json:"reason"`
}

// NewHold reads a hold a previous process left and, if there is one,
// pauses heartbeats at once (call it before the metrics loop starts). A
// hold file that cannot be read is kept aside and heartbeats are paused
// for the longest a hold could last.
func NewHold(cfg HoldConfig) (*Hold, error) {
	if cfg.Dir == "" || cfg.Metrics == nil {
		return nil, errors.New("rebooting: hold needs a state directory and the metrics loop")
	}
	if cfg.MonitorTick <= 0 {
		cfg.MonitorTick = 30 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 15 * time.Second
	}
	if cfg.BootTime == nil {
		cfg.BootTime = sysBootTime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Hold{cfg: cfg, path: filepath.Join(cfg.Dir, HoldFile), log: cfg.Logger, kick: make(chan struct{}, 1)}
	cur, err := h.load()
	if err != nil {
		return nil, err
	}
	if cur != nil {
		h.cur = cur
		cfg.Metrics.Pause()
		h.log.Warn("metrics heartbeats stay paused: a reboot was in the backend's hands when the worker stopped",
			"reboot_id", cur.RebootID, "until", cur.Until.UTC().Format(time.RFC3339))
	}
	return h, nil
}

// maxHold bounds a hold whose file is unreadable: the longest timeout the
// portal offers is not known, an hour covers every observed default.
const maxHold = time.Hour

func (h *Hold) load() (*HoldState, error) {
	data, err := readSmall(h.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("rebooting: %w", err)
	}
	st, err := DecodeHold(data)
	if err == nil {
		return &st, nil
	}
	aside := h.path + ".corrupt"
	_ = os.Rename(h.path, aside)
	now := h.cfg.Now()
	h.log.Error("the reboot hold file is unreadable and was set aside; metrics heartbeats stay paused for the longest a hold lasts",
		"file", aside, "error", err.Error())
	st = HoldState{RebootID: "unknown", Since: now, Until: now.Add(maxHold), Reason: "the hold file was unreadable: " + err.Error()}
	if werr := h.write(&st); werr != nil {
		return nil, werr
	}
	return &st, nil
}

// DecodeHold parses a hold file strictly.
func DecodeHold(data []byte) (HoldState, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var st HoldState
	if err := dec.Decode(&st); err != nil {
		return HoldState{}, fmt.Errorf("hold file: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return HoldState{}, errors.New("hold file: trailing data")
	}
	switch {
	case !nannyapi.ValidID(st.RebootID):
		return HoldState{}, errors.New("hold file: reboot_id missing or malformed")
	case st.Since.IsZero() || st.Until.IsZero() || st.Until.Before(st.Since):
		return HoldState{}, errors.New("hold file: since and until missing or out of order")
	case st.VMID != "" && !validVMID(st.VMID):
		return HoldState{}, errors.New("hold file: vmid malformed")
	case len(st.Reason) > maxReasonBytes:
		return HoldState{}, errors.New("hold file: reason too long")
	}
	return st, nil
}

const maxHoldBytes = 16 << 10

// maxReasonBytes bounds the hold's reason on disk: a longer one is read
// back as a corrupt file, so write clips to it.
const maxReasonBytes = 2048

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHoldBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxHoldBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxHoldBytes)
	}
	return data, nil
}

// write replaces the hold file atomically and durably.
func (h *Hold) write(st *HoldState) error {
	st.Reason = clip(st.Reason, maxReasonBytes-len("…"))
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(h.cfg.Dir, HoldFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("rebooting: hold file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), h.path)
	}
	if err != nil {
		return fmt.Errorf("rebooting: hold file: %w", err)
	}
	return nil
}

// cap is the latest a hold lasts after base: the backend times an
// acknowledged reboot out timeout_seconds after acknowledged_at, and its
// monitor notices within a tick; one more tick covers the clocks.
func (h *Hold) capAfter(base time.Time, timeoutSeconds int) time.Time {
	return base.Add(time.Duration(timeoutSeconds)*time.Second + 2*h.cfg.MonitorTick)
}

// Begin pauses heartbeats for a reboot about to be acknowledged, on disk
// first. It returns once no heartbeat is in flight.
func (h *Hold) Begin(op nannyapi.RebootOperation) error {
	now := h.cfg.Now()
	st := &HoldState{RebootID: op.ID, VMID: string(op.VMID), Since: now, Until: h.capAfter(now, op.TimeoutSeconds),
		Reason: "reboot " + op.ID + " is being acknowledged and carried out"}
	h.mu.Lock()
	if err := h.write(st); err != nil {
		h.mu.Unlock()
		return err
	}
	h.cur = st
	h.wake()
	h.mu.Unlock()
	// Outside the lock: Pause waits out a heartbeat in flight.
	h.cfg.Metrics.Pause()
	h.mu.Lock()
	if h.cur == nil {
		// Released meanwhile: that release's Resume came before this Pause.
		h.cfg.Metrics.Resume()
	}
	h.mu.Unlock()
	h.log.Info("metrics heartbeats paused for a reboot", "reboot_id", op.ID, "until", st.Until.UTC().Format(time.RFC3339))
	return nil
}

// Acknowledged moves the cap to the acknowledge (taken after the call
// returned, so it is never before the backend's acknowledged_at).
func (h *Hold) Acknowledged(id string, timeoutSeconds int) {
	h.update(id, func(st *HoldState) {
		st.Acknowledged = h.cfg.Now()
		st.Until = h.capAfter(st.Acknowledged, timeoutSeconds)
	})
}

// Keep records why a hold goes on (the reboot failed after the
// acknowledge, or the host is going down).
func (h *Hold) Keep(id, reason string) {
	h.update(id, func(st *HoldState) { st.Reason = reason })
}

func (h *Hold) update(id string, change func(*HoldState)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil || h.cur.RebootID != id {
		return
	}
	next := *h.cur
	change(&next)
	if err := h.write(&next); err != nil {
		// The file keeps the older, earlier cap: a restart lifts the hold
		// sooner but never later than the backend decides.
		h.log.Error("cannot update the reboot hold file", "reboot_id", id, "error", err.Error())
	}
	h.cur = &next
	h.wake()
}

// Release ends the hold on reboot id (if it is the one held) and resumes
// heartbeats.
func (h *Hold) Release(id, why string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil || (id != "" && h.cur.RebootID != id) {
		return
	}
	h.releaseLocked(why)
}

func (h *Hold) releaseLocked(why string) {
	held := h.cur
	if err := os.Remove(h.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Kept paused: a hold that cannot be lifted on disk would come
		// back at the next start anyway; try again at the next poll.
		h.log.Error("cannot remove the reboot hold file; heartbeats stay paused", "error", err.Error())
		return
	}
	h.cur = nil
	h.cfg.Metrics.Resume()
	h.log.Info("metrics heartbeats resumed", "reboot_id", held.RebootID, "why", why)
}

// Current is the hold in force, if any.
func (h *Hold) Current() (HoldState, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cur == nil {
		return HoldState{}, false
	}
	return *h.cur, true
}

// Changed takes a stream update of a reboot record: a held reboot the
// backend finished ends the hold.
func (h *Hold) Changed(op nannyapi.RebootOperation) {
	if finished(op.Status) {
		h.Release(op.ID, "the backend marked the reboot "+clip(op.Status, 32))
	}
}

// finished: the backend has moved the reboot on; a heartbeat can no longer
// change its outcome.
func finished(status string) bool { return status != "sent" && status != "rebooting" }

func (h *Hold) wake() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// Run ends holds when their reboot is over, until ctx ends: at once when
// the host has booted since a held host reboot, when the record (read
// every Poll) shows the reboot finished, or at the cap.
func (h *Hold) Run(ctx context.Context) error {
	h.checkBoot()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-h.kick:
		case <-t.C:
			h.check(ctx)
		}
		wait := h.cfg.Poll
		if st, ok := h.Current(); ok {
			wait = min(wait, max(st.Until.Sub(h.cfg.Now()), time.Millisecond))
		}
		t.Reset(wait)
	}
}

// checkBoot lifts a host-reboot hold when the host booted after it began:
// the reboot happened, and the next heartbeat rightly completes it.
func (h *Hold) checkBoot() {
	st, ok := h.Current()
	if !ok || st.VMID != "" {
		return
	}
	boot, err := h.cfg.BootTime()
	if err != nil {
		h.log.Warn("cannot read the boot time", "error", err.Error())
		return
	}
	if boot.After(st.Since) {
		h.Release(st.RebootID, "the host rebooted at "+boot.UTC().Format(time.RFC3339))
	}
}

// check ends the hold at the cap or when the record is finished.
func (h *Hold) check(ctx context.Context) {
	st, ok := h.Current()
	if !ok {
		return
	}
	if !h.cfg.Now().Before(st.Until) {
		h.Release(st.RebootID, "the hold's cap passed (acknowledged_at + timeout_seconds + two monitor ticks)")
		return
	}
	if h.cfg.Records == nil || st.RebootID == "unknown" {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, h.cfg.Poll)
	defer cancel()
	rec, err := h.cfg.Records.GetReboot(rctx, st.RebootID)
	switch {
	case nannyapi.StatusOf(err) == 404:
		h.Release(st.RebootID, "the backend no longer has the reboot")
	case err != nil:
		h.log.Debug("cannot read the held reboot's record", "reboot_id", st.RebootID, "error", err.Error())
	case rec.ID == st.RebootID && finished(rec.Status):
		h.Release(st.RebootID, "the backend marked the reboot "+clip(rec.Status, 32))
	}
}

func sysBootTime() (time.Time, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return time.Time{}, fmt.Errorf("sysinfo: %w", err)
	}
	return time.Now().Add(-time.Duration(si.Uptime) * time.Second), nil
}
