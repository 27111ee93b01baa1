package realtime

import (
	"context"
	"strings"
	"testing"
)

// checkQueued fails if anything queued is not this agent's.
func checkQueued(t *testing.T, r *Realtime) {
	t.Helper()
	for _, o := range r.queued() {
		if o.agent != testAgent {
			t.Fatalf("queued a record of agent %q: %+v", o.agent, o)
		}
		if o.status != openStatus(o.kind) {
			t.Fatalf("queued a record in status %q", o.status)
		}
	}
}

// FuzzHandleFrame: any event name and data never panics and never
// dispatches a record of another agent.
func FuzzHandleFrame(f *testing.F) {
	foreign := strings.ReplaceAll(dataPatch, testAgent, "otheragent00001")
	for _, s := range []struct{ name, data string }{
		{"investigations", dataInv},
		{"patch_operations", dataPatch},
		{"reboot_operations", dataReboot},
		{"reboot_operations", dataTimeout},
		{"patch_operations", foreign},
		{"investigations", strings.Replace(dataInv, `"user"`, `"agent"`, 1)},
		{"investigations", strings.Replace(dataInv, `"agent_id":"6ybfg6bq7mxtjoj",`, ``, 1)},
		{"investigations", dataPatch},
		{"PB_CONNECT", `{"clientId":"GAw35aAhqSFVTsm9YkfYkMnBhqWzxwHkj5P02Ovg"}`},
		{"sbom_scans", `{"record":{"id":"a"},"action":"create"}`},
		{"investigations", `{"record":null,"action":"create"}`},
		{"", ""},
	} {
		f.Add(s.name, s.data)
	}
	r := newTestRealtime(f, &stubAPI{}, func(c *Config) { c.Now = clockAt("2026-11-25 21:41:13.000Z") })
	f.Fuzz(func(t *testing.T, name, data string) {
		r.handleFrame(name, data)
		checkQueued(t, r)
	})
}

// FuzzReadStream: any byte stream (after a valid PB_CONNECT) never panics,
// ends with an error, and never dispatches a record of another agent.
func FuzzReadStream(f *testing.F) {
	f.Add([]byte(frame("investigations", dataInv) + frame("reboot_operations", dataReboot)))
	f.Add([]byte("event:investigations\ndata:" + dataInv[:100] + "\ndata:" + dataInv[100:] + "\n\n"))
	f.Add([]byte("retry: 5\n: comment\nid:\x00\nevent:patch_operations\r\ndata:" + dataPatch + "\r\n\r\n"))
	f.Add([]byte(frameConnect + frame("patch_operations", strings.ReplaceAll(dataPatch, testAgent, "zzzzzzzzzzzzzzz"))))
	f.Add([]byte("event:PB_CONNECT\ndata:{\"clientId\":\"x\"}\n\n"))
	r := newTestRealtime(f, &stubAPI{}, func(c *Config) {
		c.Now = clockAt("2026-11-25 21:41:13.000Z")
		c.MaxEventBytes = 64 << 10
	})
	f.Fuzz(func(t *testing.T, raw []byte) {
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		_, err := r.readStream(ctx, strings.NewReader(frameConnect+string(raw)), cancel)
		if err == nil {
			t.Fatal("a stream ended without an error")
		}
		checkQueued(t, r)
	})
}
