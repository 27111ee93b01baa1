package worker

import (
	"context"
	"net/url"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	brokerv1 "github.com/nannyai/nannyagent/ipc/broker/v1"
	workerv1 "github.com/nannyai/nannyagent/ipc/worker/v1"
)

// Status gathers what `nannyagent status` shows. It asks the broker for its
// probe, bounded by the broker timeout.
func (w *Worker) Status(ctx context.Context) *workerv1.StatusResponse {
	resp := &workerv1.StatusResponse{
		Version:   w.version,
		StartedAt: timestamppb.New(w.started),
		Broker:    w.brokerStatus(ctx),
		Api:       &workerv1.ApiStatus{Url: w.cfg.APIURL, Insecure: insecureURL(w.cfg.APIURL)},
		Warnings:  append([]string(nil), w.cfg.Warnings...),
	}
	if resp.Api.Insecure {
		resp.Warnings = append(resp.Warnings, "NannyAPI is reached over plain http:// on a non-loopback host: tokens cross the network unencrypted")
	}
	return resp
}

func (w *Worker) brokerStatus(ctx context.Context) *workerv1.BrokerStatus {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.BrokerTimeout)
	defer cancel()
	probe, err := w.broker.Probe(ctx, &brokerv1.ProbeRequest{})
	if err != nil {
		return &workerv1.BrokerStatus{Error: err.Error()}
	}
	return &workerv1.BrokerStatus{Reachable: true, Probe: probe}
}

// insecureURL is plain http to a host that is not loopback.
func insecureURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" {
		return false
	}
	host := u.Hostname()
	return host != "localhost" && !strings.HasPrefix(host, "127.") && host != "::1"
}
