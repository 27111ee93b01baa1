package policy

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func pinOf(c byte) string { return "sha256:" + strings.Repeat(string(c), 64) }

func TestTransportSection(t *testing.T) {
	p := mustLoadYAML(t, `version: 1
transport:
  vsock_guests:
    - id: vm-a
      cid: 101
      name: vm-a.example
      worker_keys: [`+pinOf('a')+`, "sha256:`+strings.Repeat("B", 64)+`"]
    - {id: vm-c, cid: 4294967294, name: c, worker_keys: `+pinOf('c')+`}
`)
	tr := p.Transport()
	if len(tr.VsockGuests) != 2 {
		t.Fatalf("guests %+v", tr.VsockGuests)
	}
	a := tr.VsockGuests[0]
	if a.ID != "vm-a" || a.CID != 101 || a.Name != "vm-a.example" || len(a.WorkerKeys) != 2 || a.WorkerKeys[1] != pinOf('b') {
		t.Errorf("guest %+v (pins are kept in lower case)", a)
	}
	if c := tr.VsockGuests[1]; c.CID != 4294967294 || len(c.WorkerKeys) != 1 {
		t.Errorf("guest %+v (one key may be written as a plain string)", c)
	}
	if p.RuleCounts()["transport"] != 2 {
		t.Errorf("counts %v", p.RuleCounts())
	}
	// The accessor hands out copies.
	tr.VsockGuests[0].WorkerKeys[0] = "changed"
	if p.Transport().VsockGuests[0].WorkerKeys[0] != pinOf('a') {
		t.Error("Transport() shares its slices with the policy")
	}
	if got := mustLoadYAML(t, "version: 1\n").Transport().VsockGuests; got == nil || len(got) != 0 {
		t.Errorf("an empty policy: %#v, want no guests (an empty list, for JSON)", got)
	}
}

func TestTransportSectionErrors(t *testing.T) {
	guest := func(body string) string {
		return "version: 1\ntransport:\n  vsock_guests:\n    - " + body + "\n"
	}
	tests := []struct{ name, yaml, want string }{
		{"unknown key", "version: 1\ntransport:\n  tcp: []\n", `unknown key "tcp"`},
		{"unknown guest key", guest(`{id: g, cid: 5, name: g, worker_keys: [` + pinOf('a') + `], port: 5101}`), `unknown key "port"`},
		{"hypervisor", guest(`{id: g, cid: 0, name: g, worker_keys: [` + pinOf('a') + `]}`), "0 is not a guest context id"},
		{"loopback", guest(`{id: g, cid: 1, name: g, worker_keys: [` + pinOf('a') + `]}`), "1 is not a guest context id"},
		{"host", guest(`{id: g, cid: 2, name: g, worker_keys: [` + pinOf('a') + `]}`), "2 is not a guest context id"},
		{"any", guest(`{id: g, cid: 4294967295, name: g, worker_keys: [` + pinOf('a') + `]}`), "4294967295 is not a guest context id"},
		{"negative", guest(`{id: g, cid: -3, name: g, worker_keys: [` + pinOf('a') + `]}`), "-3 is not a guest context id"},
		{"cid as string", guest(`{id: g, cid: "5", name: g, worker_keys: [` + pinOf('a') + `]}`), "expected a whole number"},
		{"missing cid", guest(`{id: g, name: g, worker_keys: [` + pinOf('a') + `]}`), "missing cid"},
		{"missing name", guest(`{id: g, cid: 5, worker_keys: [` + pinOf('a') + `]}`), "missing name"},
		{"bad name", guest(`{id: g, cid: 5, name: "a b", worker_keys: [` + pinOf('a') + `]}`), "must be 1 to 64 letters"},
		{"missing keys", guest(`{id: g, cid: 5, name: g}`), "missing worker_keys"},
		{"no keys", guest(`{id: g, cid: 5, name: g, worker_keys: []}`), "at least one key"},
		{"bad pin prefix", guest(`{id: g, cid: 5, name: g, worker_keys: [md5:abcd]}`), `must start with "sha256:"`},
		{"short pin", guest(`{id: g, cid: 5, name: g, worker_keys: [sha256:abcd]}`), "64 hex digits"},
		{"repeated pin", guest(`{id: g, cid: 5, name: g, worker_keys: [` + pinOf('a') + `, ` + pinOf('A') + `]}`), "is listed twice"},
		{"missing id", guest(`{cid: 5, name: g, worker_keys: [` + pinOf('a') + `]}`), "missing id"},
		{"same cid twice", guest(`{id: g, cid: 5, name: g, worker_keys: [`+pinOf('a')+`]}`) + `    - {id: h, cid: 5, name: h, worker_keys: [` + pinOf('b') + `]}`, "context id 5 is already allowed by g"},
		{"same key twice", guest(`{id: g, cid: 5, name: g, worker_keys: [`+pinOf('a')+`]}`) + `    - {id: h, cid: 6, name: h, worker_keys: [` + pinOf('a') + `]}`, "is also pinned for g (context id 5)"},
		{"id shared with a command rule", guest(`{id: cat, cid: 5, name: g, worker_keys: [`+pinOf('a')+`]}`) + "commands:\n  - {id: cat, program: /usr/bin/cat}\n", `duplicate id "cat"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadYAML(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// A local file moves a guest to new keys without a second rule for the
// same CID: it disables the vendor-or-earlier rule and defines its own.
func TestTransportGuestsMergeAndDisable(t *testing.T) {
	dir := t.TempDir()
	vendor := writeFile(t, dir, "vendor.yaml", "version: 1\n")
	first := writeFile(t, dir, "10-guests.yaml", `version: 1
transport:
  vsock_guests:
    - {id: vm-a, cid: 101, name: a, worker_keys: [`+pinOf('a')+`]}
    - {id: vm-b, cid: 102, name: b, worker_keys: [`+pinOf('b')+`]}
`)
	second := writeFile(t, dir, "20-rotate.yaml", `version: 1
disable: [vm-a]
transport:
  vsock_guests:
    - {id: vm-a-2027, cid: 101, name: a, worker_keys: [`+pinOf('a')+`, `+pinOf('d')+`]}
`)
	p, err := Load(LoadOptions{}, vendor, first, second)
	if err != nil {
		t.Fatal(err)
	}
	g := p.Transport().VsockGuests
	if len(g) != 2 || g[0].ID != "vm-b" || g[1].ID != "vm-a-2027" || len(g[1].WorkerKeys) != 2 {
		t.Errorf("guests %+v", g)
	}
	if d := p.Disabled(); len(d) != 1 || d[0].Section != "transport" {
		t.Errorf("disabled %+v", d)
	}
	// Without the disable, two rules claim CID 101.
	if _, err := Load(LoadOptions{}, vendor, first, writeFile(t, dir, "30-clash.yaml", `version: 1
transport:
  vsock_guests:
    - {id: vm-a-bis, cid: 101, name: a, worker_keys: [`+pinOf('e')+`]}
`)); err == nil || !strings.Contains(err.Error(), "context id 101 is already allowed by vm-a at "+filepath.Join(dir, "10-guests.yaml")) {
		t.Errorf("clash: %v", err)
	}
}

func TestExplainTransport(t *testing.T) {
	p := loadExample(t)
	var text bytes.Buffer
	if err := p.Explain().WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`vsock guest "pve-worker", context id 101 [rule guest-pve-worker]`,
		"    sha256:3b2a8e5e4f0c1d9a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a\n",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("explain text lacks %q:\n%s", want, text.String())
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, p.Explain()); err != nil {
		t.Fatal(err)
	}
	var back Explanation
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Transport.VsockGuests) != 1 || back.Transport.VsockGuests[0].CID != 101 {
		t.Errorf("JSON transport %+v", back.Transport)
	}
	text.Reset()
	if err := mustLoadYAML(t, "version: 1\n").Explain().WriteText(&text); err != nil || !strings.Contains(text.String(), "vsock guests: none") {
		t.Errorf("an empty policy must say no guest is allowed: %v\n%s", err, text.String())
	}
}
