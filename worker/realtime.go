package worker

import (
	"context"
	"errors"
	"time"

	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/patching"
	"github.com/nannyai/nannyagent/worker/realtime"
	"github.com/nannyai/nannyagent/worker/rebooting"
)

// newRealtime builds the stream for agentID; investigations that arrive on
// it run like the CLI's, without a CLI to stream to.
func (w *Worker) newRealtime(ctx context.Context, agentID string) (*realtime.Realtime, error) {
	client := w.session.client()
	reboots := &rebooting.Handler{API: client, Broker: w.broker, Hold: w.hold, PatchRunning: w.patchRunning,
		Lifetime: ctx, Logger: w.log}
	rt, err := realtime.New(realtime.Config{
		AgentID:        agentID,
		API:            client,
		Store:          w.ops,
		Investigations: investigationHandler{w},
		Patches:        &patching.Handler{API: client, Broker: w.broker, Poll: patchPoll, MaxWait: patchMaxWait},
		Reboots:        reboots,
		RebootChanged:  w.hold.Changed,
		Reporter:       realtime.APIReporter{API: client},
		Logger:         w.log,
	})
	if err != nil {
		return nil, err
	}
	reboots.Acknowledging = rt.RebootAcknowledging
	return rt, nil
}

// patchPoll and patchMaxWait pace the wait for a detached patch run; the
// broker bounds the run itself.
const (
	patchPoll    = 2 * time.Second
	patchMaxWait = 2 * time.Hour
)

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
