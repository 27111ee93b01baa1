package main

import (
	"fmt"
	"io"
	"time"

	"github.com/nannyai/nannyagent/ipc/lastserved"
)

// hostStatus answers `nannyagent status` on a host whose worker runs in a
// VM guest: no worker.sock here, but the broker's record names the guest
// and when the broker last served it. ok is false when the record names
// no guest (the worker is then simply not running).
func hostStatus(w io.Writer, o *options, noWorker error) (code int, ok bool) {
	rec, err := lastserved.Read(o.servedRecord)
	if err != nil || !hasGuest(rec) {
		return 0, false
	}
	if o.json {
		writeJSON(w, struct {
			Worker string            `json:"worker"`
			Record lastserved.Record `json:"served_record"`
		}{"in a VM guest (not on this host)", rec})
		return exitOK, true
	}
	fmt.Fprintf(w, "%-14s %s\n", "worker:", clean("not on this host ("+noWorker.Error()+"); it runs in a VM guest and reaches the broker over vsock"))
	printServed(w, rec, o.servedRecord)
	return exitOK, true
}

func hasGuest(r lastserved.Record) bool {
	for _, p := range r.Peers {
		if p.Transport == lastserved.TransportVsock {
			return true
		}
	}
	return false
}

// printServed writes one line per peer the broker served, most recent
// first.
func printServed(w io.Writer, r lastserved.Record, path string) {
	for _, p := range r.Peers {
		var who string
		if p.Transport == lastserved.TransportVsock {
			who = fmt.Sprintf("guest %q (vsock context id %d, key %s)", p.Guest, p.CID, p.Key)
		} else {
			who = fmt.Sprintf("unix uid %d", p.UID)
		}
		fmt.Fprintf(w, "%-14s %s\n", "served:", clean(fmt.Sprintf("%s: last served %s (%s ago, %s), %d request(s) since %s", who,
			p.LastServed.Local().Format(time.RFC3339), time.Since(p.LastServed).Round(time.Second), p.LastRequest,
			p.Requests, p.FirstServed.Local().Format(time.RFC3339))))
	}
	fmt.Fprintf(w, "%-14s %s\n", "broker record:", clean(fmt.Sprintf("%s, written %s", path, r.UpdatedAt.Local().Format(time.RFC3339))))
}
