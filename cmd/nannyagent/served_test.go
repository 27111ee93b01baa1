package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nannyai/nannyagent/ipc/lastserved"
)

func writeRecord(t *testing.T, peers ...lastserved.Peer) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "served.json")
	if err := lastserved.Write(path, lastserved.Record{UpdatedAt: time.Now(), Peers: peers}); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStatusOnAHostWhoseWorkerRunsInAGuest(t *testing.T) {
	at := time.Now().Add(-3 * time.Minute)
	guest := lastserved.Peer{Transport: lastserved.TransportVsock, CID: 101, Guest: "pve-worker", Key: "sha256:ab",
		FirstServed: at.Add(-time.Hour), LastServed: at, LastRequest: "CollectMetrics", Requests: 42}
	record := writeRecord(t, guest)
	noWorker := filepath.Join(t.TempDir(), "worker.sock")

	var out, errb bytes.Buffer
	code := run([]string{"status", "--socket", noWorker, "--served-record", record}, strings.NewReader(""), &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	for _, want := range []string{
		"worker:        not on this host", "runs in a VM guest",
		`served:        guest "pve-worker" (vsock context id 101, key sha256:ab): last served ` + at.Local().Format(time.RFC3339) + " (3m",
		" ago, CollectMetrics), 42 request(s)",
		"broker record: " + record,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if code := run([]string{"status", "--json", "--socket", noWorker, "--served-record", record}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("json: exit %d", code)
	}
	var js struct {
		Worker string            `json:"worker"`
		Record lastserved.Record `json:"served_record"`
	}
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || len(js.Record.Peers) != 1 || js.Record.Peers[0].CID != 101 {
		t.Errorf("json %s: %v", out.String(), err)
	}
}

func TestStatusWithoutWorkerOrGuestStillFails(t *testing.T) {
	noWorker := filepath.Join(t.TempDir(), "worker.sock")
	for name, record := range map[string]string{
		"no record":       filepath.Join(t.TempDir(), "absent.json"),
		"unix peers only": writeRecord(t, lastserved.Peer{Transport: lastserved.TransportUnix, UID: 998, LastServed: time.Now()}),
		"corrupt record":  func() string { p := writeRecord(t); return p + ".x" }(),
	} {
		var out, errb bytes.Buffer
		code := run([]string{"status", "--socket", noWorker, "--served-record", record}, strings.NewReader(""), &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), "the worker is not running") {
			t.Errorf("%s: exit %d, stderr %q: want the worker reported not running", name, code, errb.String())
		}
	}
}
