package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/opstate"
	"github.com/nannyai/nannyagent/worker/patching"
	"github.com/nannyai/nannyagent/worker/realtime"
	"github.com/nannyai/nannyagent/worker/rebooting"
)

// newRealtime builds the stream for agentID; investigations that arrive on
// it run like the CLI's, without a CLI to stream to.
func (w *Worker) newRealtime(ctx context.Context, agentID string) (*realtime.Realtime, error) {
	client := w.session.client()
	patches := &patching.Handler{API: client, Broker: w.broker, Poll: w.cfg.PatchPollInterval, MaxWait: patchMaxWait, Log: w.log}
	reboots := &rebooting.Handler{API: client, Broker: w.broker, Hold: w.hold, PatchRunning: w.patchRunning,
		Lifetime: ctx, Logger: w.log}
	rt, err := realtime.New(realtime.Config{
		AgentID:         agentID,
		API:             client,
		Store:           w.ops,
		Investigations:  investigationHandler{w},
		Patches:         patches,
		PatchRecovery:   patchRecovery{patches},
		RecoverInterval: w.cfg.PatchPollInterval,
		Reboots:         reboots,
		RebootChanged:   w.hold.Changed,
		Reporter:        realtime.APIReporter{API: client},
		Logger:          w.log,
	})
	if err != nil {
		return nil, err
	}
	reboots.Acknowledging = rt.RebootAcknowledging
	return rt, nil
}

// patchMaxWait bounds the wait for a detached patch run: above the
// longest run a policy allows (4h), since the broker ends the run itself.
const patchMaxWait = 4*time.Hour + 30*time.Minute

// patchRecovery resolves patch runs a previous worker process left running.
type patchRecovery struct{ h *patching.Handler }

func (p patchRecovery) RecoverPatch(ctx context.Context, e opstate.Entry) (realtime.PatchRecoveryResult, error) {
	r, err := p.h.Recover(ctx, e.ID, e.LXCID)
	if err != nil {
		return realtime.PatchRecoveryResult{}, err
	}
	switch r.State {
	case patching.StillRunning:
		return realtime.PatchRecoveryResult{Outcome: realtime.PatchStillRunning}, nil
	case patching.NeverStarted:
		return realtime.PatchRecoveryResult{Outcome: realtime.PatchNeverStarted}, nil
	}
	return realtime.PatchRecoveryResult{Outcome: realtime.PatchFinished, Succeeded: r.Succeeded, Note: r.Note}, nil
}

// investigationHandler runs an investigation the portal started.
type investigationHandler struct{ w *Worker }

func (h investigationHandler) HandleInvestigation(ctx context.Context, inv nannyapi.Investigation) error {
	h.w.log.Info("investigation from NannyAPI", "investigation", inv.ID)
	_, err := h.w.investigate(ctx, inv.ID, inv.UserPrompt, originPortal, nil)
	return err
}

// errNoStream: the realtime stream is not running (not registered yet).
var errNoStream = errors.New("this host is not registered: run `nannyagent register` as root first")

// beginOwnInvestigation marks an investigation this worker is about to
// create, so the stream's echo of it is not run a second time.
func (w *Worker) beginOwnInvestigation() (func(id string) error, error) {
	w.runMu.Lock()
	rt := w.realtimeNow
	w.runMu.Unlock()
	if rt == nil {
		return nil, errNoStream
	}
	return rt.BeginOwnInvestigation(), nil
}
