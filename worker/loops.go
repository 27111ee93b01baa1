package worker

import (
	"context"
	"time"

	"github.com/nannyai/nannyagent/worker/metrics"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/proxmox"
)

// agentPoster sends each post with the session's current credentialed
// client, which a registration may replace while the loops run.
type agentPoster struct{ s *session }

func (p agentPoster) IngestMetrics(ctx context.Context, r nannyapi.MetricsReport) error {
	return p.s.client().IngestMetrics(ctx, r)
}

func (p agentPoster) PostProxmoxNode(ctx context.Context, v nannyapi.ProxmoxNode) (string, error) {
	return p.s.client().PostProxmoxNode(ctx, v)
}

func (p agentPoster) PostProxmoxCluster(ctx context.Context, v nannyapi.ProxmoxCluster) (string, error) {
	return p.s.client().PostProxmoxCluster(ctx, v)
}

func (p agentPoster) PostProxmoxLXC(ctx context.Context, v nannyapi.ProxmoxLXC) (string, error) {
	return p.s.client().PostProxmoxLXC(ctx, v)
}

func (p agentPoster) PostProxmoxQEMU(ctx context.Context, v nannyapi.ProxmoxQEMU) (string, error) {
	return p.s.client().PostProxmoxQEMU(ctx, v)
}

// newLoops builds the metrics and Proxmox loops; they start with the agent.
func (w *Worker) newLoops() error {
	poster := agentPoster{w.session}
	m, err := metrics.NewLoop(metrics.LoopConfig{Interval: w.cfg.MetricsInterval, Version: w.version, Logger: w.log}, w.broker, poster)
	if err != nil {
		return &configError{"metrics_interval", err}
	}
	p, err := proxmox.NewLoop(proxmox.LoopConfig{Interval: w.cfg.ProxmoxInterval, Logger: w.log}, w.broker, w.broker, poster)
	if err != nil {
		return &configError{"proxmox_interval", err}
	}
	w.metrics, w.proxmox = m, p
	return nil
}

// lastSuccesses is the last successful post of each kind, for status.
func (w *Worker) lastSuccesses() map[string]time.Time {
	out := w.health.copy()
	if t := w.metrics.LastSuccess(); !t.IsZero() {
		out["metrics"] = t
	}
	if t := w.proxmox.Status().LastSuccess; !t.IsZero() {
		out["proxmox"] = t
	}
	return out
}

type configError struct {
	key string
	err error
}

func (e *configError) Error() string { return "config " + e.key + ": " + e.err.Error() }
func (e *configError) Unwrap() error { return e.err }
