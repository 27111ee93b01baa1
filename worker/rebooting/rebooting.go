// Package rebooting handles a reboot operation on the worker's side, so
// that the backend is never told a reboot happened that did not.
//
// The broker is asked first (policy, a patch running, the loop guards);
// a refusal acknowledges nothing: the record times out on the backend (or
// is reported failed where the backend has /fail), and the refusal is
// logged and kept with its reason in the operation record. When the broker
// allows it, metrics heartbeats are held (see Hold) before the
// acknowledge, because the backend marks an acknowledged reboot completed
// at the next heartbeat; then the reboot is acknowledged and the broker
// warns logged-in users and runs the reboot command. A command that fails
// after the acknowledge keeps the hold until the record shows the backend
// gave up (timeout), so it ends "timeout", never "completed". A container
// reboot that succeeded lifts the hold at once: the host's next heartbeat
// rightly completes it.
package rebooting

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/realtime"
)

// API is what a reboot needs from NannyAPI (*nannyapi.Client has it).
type API interface {
	AcknowledgeReboot(ctx context.Context, rebootID string) error
}

// Broker judges and carries out reboots (the generated client has it).
type Broker interface {
	Reboot(ctx context.Context, in *brokerv1.RebootRequest, opts ...grpc.CallOption) (*brokerv1.RebootResponse, error)
}

// Handler carries out reboot operations; it implements
// realtime.RebootHandler.
type Handler struct {
	API    API
	Broker Broker
	Hold   *Hold
	// Acknowledging records, on disk, that the reboot is about to be
	// acknowledged (realtime.Realtime.RebootAcknowledging).
	Acknowledging func(id string) error
	// PatchRunning names a patch operation this worker is running, if any.
	PatchRunning func() (string, bool)
	// Lifetime ends when the worker stops; the reboot command, once
	// acknowledged, is waited for until then or PerformTimeout, not until
	// the request's deadline.
	Lifetime context.Context
	// PerformTimeout bounds the wait for the broker's reboot (default 10m;
	// the broker bounds the command itself by the policy's timeout).
	PerformTimeout time.Duration
	Logger         *slog.Logger
}

var _ realtime.RebootHandler = (*Handler)(nil)

// HandleReboot carries out one reboot, or refuses it without acknowledging.
func (h *Handler) HandleReboot(ctx context.Context, op nannyapi.RebootOperation) error {
	log := h.logger().With("reboot_id", op.ID)
	vmid := string(op.VMID)
	if reason := h.precheck(op, vmid); reason != "" {
		return &realtime.RefusedError{Reason: reason}
	}
	// The broker admits 256 bytes of reason (and keeps 160 for the
	// warning): a longer text from the backend must not get the reboot
	// refused as an oversize request.
	reason := clip(op.Reason, 240)
	req := &brokerv1.RebootRequest{RebootId: op.ID, Vmid: vmid, Reason: reason}
	check := &brokerv1.RebootRequest{RebootId: op.ID, Vmid: vmid, Reason: reason, CheckOnly: true}
	resp, err := h.Broker.Reboot(ctx, check)
	switch {
	case err != nil:
		return &realtime.RefusedError{Reason: "not acknowledged: the broker could not be asked: " + status.Convert(err).Message()}
	case !resp.GetAllowed():
		return &realtime.RefusedError{Reason: "refused by the broker: " + resp.GetReason()}
	}
	if err := h.Hold.Begin(op); err != nil {
		return &realtime.RefusedError{Reason: "not acknowledged: metrics heartbeats could not be held: " + err.Error()}
	}
	if err := h.Acknowledging(op.ID); err != nil {
		h.Hold.Release(op.ID, "the reboot was not acknowledged")
		return &realtime.RefusedError{Reason: "not acknowledged: the operation record could not be written: " + err.Error()}
	}
	if err := h.API.AcknowledgeReboot(ctx, op.ID); err != nil {
		// The acknowledge may have reached the backend all the same: keep
		// the hold until the record shows the outcome.
		return h.failed(op, "the acknowledge failed: "+err.Error())
	}
	h.Hold.Acknowledged(op.ID, op.TimeoutSeconds)
	log.Info("reboot acknowledged; the broker warns users and reboots", "target", target(vmid), "reason", clip(op.Reason, 200))

	pctx, cancel := h.performContext()
	defer cancel()
	resp, err = h.Broker.Reboot(pctx, req)
	switch {
	case err != nil:
		return h.failed(op, "the broker did not carry out the reboot: "+status.Convert(err).Message())
	case !resp.GetAllowed():
		return h.failed(op, "the broker refused the reboot after it was acknowledged: "+resp.GetReason())
	case !resp.GetStarted():
		msg := "the reboot command failed: " + resp.GetReason()
		if out := resp.GetOutput(); out != "" {
			msg += ": " + out
		}
		return h.failed(op, msg)
	case vmid != "":
		h.Hold.Release(op.ID, "pct reboot "+vmid+" exited 0")
		log.Info("container rebooted", "vmid", vmid, "users_warned", resp.GetWarned())
		return nil
	}
	h.Hold.Keep(op.ID, "systemctl reboot exited 0: the host is going down; heartbeats resume after the boot")
	log.Info("host reboot started; heartbeats stay paused until the host is back", "users_warned", resp.GetWarned())
	return nil
}

// precheck refuses what needs no broker to refuse.
func (h *Handler) precheck(op nannyapi.RebootOperation, vmid string) string {
	switch {
	case op.LXCID != "" && vmid == "":
		return "not acknowledged: a container reboot without a vmid cannot be carried out"
	case vmid != "" && !validVMID(vmid):
		return fmt.Sprintf("not acknowledged: vmid %q is not a container id", clip(vmid, 40))
	}
	if h.PatchRunning != nil {
		if id, ok := h.PatchRunning(); ok {
			return "not acknowledged: patch operation " + id + " is running; a reboot would cut it short"
		}
	}
	return ""
}

// failed is a reboot that went wrong after the acknowledge: the hold stays
// until the backend times it out.
func (h *Handler) failed(op nannyapi.RebootOperation, reason string) error {
	reason += "; metrics heartbeats stay paused until the backend times the reboot out"
	h.Hold.Keep(op.ID, reason)
	h.logger().Error("reboot failed after the acknowledge", "reboot_id", op.ID, "error", reason)
	return &realtime.FailedError{Reason: reason}
}

// performContext outlives the request's deadline (a reboot under way is
// not abandoned midway) but not the worker.
func (h *Handler) performContext() (context.Context, context.CancelFunc) {
	life := h.Lifetime
	if life == nil {
		life = context.Background()
	}
	d := h.PerformTimeout
	if d <= 0 {
		d = 10 * time.Minute
	}
	return context.WithTimeout(life, d)
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

func target(vmid string) string {
	if vmid == "" {
		return "host"
	}
	return "container " + vmid
}

// validVMID: a Proxmox guest id, 100 to 999999999.
func validVMID(s string) bool {
	if len(s) < 3 || len(s) > 9 || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clip makes backend text safe and short for logs and notes.
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
