package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestRebootsOffByDefault(t *testing.T) {
	for name, p := range map[string]*Policy{
		"minimal": mustLoadYAML(t, "version: 1\n"),
		"example": loadExample(t),
	} {
		for _, vmid := range []string{"", "100"} {
			if _, err := p.CheckReboot(vmid); err == nil || !strings.Contains(err.Error(), "reboots are disabled by policy") {
				t.Errorf("%s: reboot %q: %v", name, vmid, err)
			}
		}
		rb := p.Reboots()
		if rb.MinInterval != DefaultRebootMinInterval || rb.MinUptime != DefaultRebootMinUptime || rb.Timeout != DefaultRebootTimeout ||
			rb.Wall != DefaultWall || rb.Systemctl != DefaultSystemctl || rb.Pct != DefaultPct {
			t.Errorf("%s: defaults %+v", name, rb)
		}
	}
}

func TestCheckReboot(t *testing.T) {
	p := mustLoadYAML(t, `version: 1
reboots:
  enabled: true
  host: true
  containers: ["105", "200-299", "3?0", 4000]
  min_interval: 6h
  min_uptime: 15min
  timeout: 90s
  systemctl: /bin/systemctl
  wall: /usr/local/bin/wall
`)
	tests := []struct {
		vmid, rule, refusal string
	}{
		{"", RebootRuleHost, ""},
		{"105", "reboots.containers[105]", ""},
		{"200", "reboots.containers[200-299]", ""},
		{"299", "reboots.containers[200-299]", ""},
		{"310", "reboots.containers[3?0]", ""},
		{"4000", "reboots.containers[4000]", ""},
		{"301", "", "container 301 is not among the vmids"},
		{"106", "", "not among"},
		{"1050", "", "not among"},
		{"099", "", "is not a container vmid"},
		{"99", "", "is not a container vmid"},
		{"-1", "", "is not a container vmid"},
		{"1e3", "", "is not a container vmid"},
		{"105 ", "", "is not a container vmid"},
		{"1000000000", "", "is not a container vmid"},
	}
	for _, tc := range tests {
		rule, err := p.CheckReboot(tc.vmid)
		switch {
		case tc.refusal == "" && (err != nil || rule != tc.rule):
			t.Errorf("vmid %q: rule %q err %v, want %q", tc.vmid, rule, err, tc.rule)
		case tc.refusal != "" && (err == nil || !strings.Contains(err.Error(), tc.refusal)):
			t.Errorf("vmid %q: rule %q err %v, want a refusal with %q", tc.vmid, rule, err, tc.refusal)
		}
	}
	rb := p.Reboots()
	if rb.MinInterval != 6*time.Hour || rb.MinUptime != 15*time.Minute || rb.Timeout != 90*time.Second ||
		rb.Systemctl != "/bin/systemctl" || rb.Wall != "/usr/local/bin/wall" {
		t.Errorf("settings %+v", rb)
	}

	hostOnly := mustLoadYAML(t, "version: 1\nreboots: {enabled: true, host: true}\n")
	if _, err := hostOnly.CheckReboot("105"); err == nil || !strings.Contains(err.Error(), "container reboots are not allowed") {
		t.Errorf("containers not named: %v", err)
	}
	lxcOnly := mustLoadYAML(t, "version: 1\nreboots: {enabled: true, containers: ['*']}\n")
	if _, err := lxcOnly.CheckReboot(""); err == nil || !strings.Contains(err.Error(), "host reboots are not allowed") {
		t.Errorf("host not allowed: %v", err)
	}
	if rule, err := lxcOnly.CheckReboot("999999999"); err != nil || rule != "reboots.containers[*]" {
		t.Errorf("*: %q %v", rule, err)
	}
}

// A later file overrides the reboots settings key by key; a local file
// can switch reboots off again.
func TestRebootsMerge(t *testing.T) {
	dir := t.TempDir()
	vendor := writeFile(t, dir, "vendor.yaml", "version: 1\nreboots: {enabled: true, host: true, containers: ['100'], min_interval: 2h}\n")
	local := writeFile(t, dir, "50-local.yaml", "version: 1\nreboots: {containers: ['200'], min_uptime: 1h}\n")
	p, err := Load(LoadOptions{WorkerAccount: testWorker}, vendor, local)
	if err != nil {
		t.Fatal(err)
	}
	rb := p.Reboots()
	if !rb.Enabled || !rb.Host || strings.Join(rb.Containers, ",") != "200" || rb.MinInterval != 2*time.Hour || rb.MinUptime != time.Hour {
		t.Errorf("merged %+v", rb)
	}
	off := writeFile(t, dir, "90-off.yaml", "version: 1\nreboots: {enabled: false}\n")
	p, err = Load(LoadOptions{WorkerAccount: testWorker}, vendor, local, off)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.CheckReboot(""); err == nil {
		t.Error("a local file could not switch reboots off")
	}
}

func TestRebootsSectionErrors(t *testing.T) {
	tests := map[string]string{
		"reboots: {containers: true}":                    "list the vmids that may be rebooted",
		"reboots: {containers: ['abc']}":                 "a vmid pattern is",
		"reboots: {containers: ['99']}":                  "is not a vmid",
		"reboots: {containers: ['300-200']}":             "a range is lo-hi",
		"reboots: {containers: ['050-200']}":             "a range is lo-hi",
		"reboots: {containers: ['1[0-']}":                "not a valid glob",
		"reboots: {containers: ['']}":                    "is not a vmid pattern",
		"reboots: {min_interval: 1000d}":                 "reboots.min_interval: 24000h0m0s is outside",
		"reboots: {min_interval: soon}":                  "reboots.min_interval: duration",
		"reboots: {min_uptime: 2d}":                      "reboots.min_uptime",
		"reboots: {timeout: 0s}":                         "reboots.timeout: 0s is outside 1s…5m0s",
		"reboots: {timeout: 10m}":                        "reboots.timeout",
		"reboots: {wall: wall}":                          "reboots.wall",
		"reboots: {enabled: yes please}":                 "reboots.enabled: expected true or false",
		"reboots: {host: true, hosts: true}":             `unknown key "hosts"`,
		"reboots: {enabled: true, min_interval: 1h30mx}": "reboots.min_interval",
	}
	for body, want := range tests {
		_, err := loadYAML(t, "version: 1\n"+body+"\n")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", body, err, want)
		}
	}
}

func TestRebootsExplained(t *testing.T) {
	p := mustLoadYAML(t, "version: 1\nreboots: {enabled: true, host: true, containers: ['105', '200-299'], min_interval: 6h, min_uptime: 15min}\n")
	var buf bytes.Buffer
	if err := p.Explain().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"Reboots:\n  host: allowed (/usr/bin/systemctl reboot)",
		"at most one host reboot every 6h0m0s; none before the host has been up 15m0s",
		"containers: 105, 200-299 (/usr/sbin/pct reboot <vmid>)",
		"warned with /usr/bin/wall",
		"refused while a patch runs",
		"WARNING: reboots are enabled",
		"reboot this host and containers 105, 200-299 at any time",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, p.Explain()); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Reboots map[string]any `json:"reboots"`
	}
	if err := json.Unmarshal(js.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Reboots["min_interval"] != "6h0m0s" || doc.Reboots["min_uptime"] != "15m0s" || doc.Reboots["timeout"] != "2m0s" ||
		doc.Reboots["wall"] != DefaultWall {
		t.Errorf("json %v", doc.Reboots)
	}
	noGuard := mustLoadYAML(t, "version: 1\nreboots: {enabled: true, host: true, min_interval: 0s, min_uptime: 0s}\n")
	if d := strings.Join(noGuard.Dangers(), "\n"); !strings.Contains(d, "no loop guard") {
		t.Errorf("dangers %q", d)
	}
	idle := mustLoadYAML(t, "version: 1\nreboots: {enabled: true}\n")
	if w := strings.Join(idle.lint(), "\n"); !strings.Contains(w, "no reboot can happen") {
		t.Errorf("lint %q", w)
	}
}

func TestRebootsJSONRoundTrip(t *testing.T) {
	in := mustLoadYAML(t, "version: 1\nreboots: {enabled: true, host: true, containers: ['105'], min_interval: 90min}\n").Reboots()
	data, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Reboots
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	if out.MinInterval != 90*time.Minute || out.Timeout != in.Timeout || !out.Host || out.Containers[0] != "105" || out.Wall != in.Wall {
		t.Errorf("round trip %s → %+v", data, out)
	}
	if err := json.Unmarshal([]byte(`{"min_interval":"soon"}`), &out); err == nil {
		t.Error("bad duration accepted")
	}
}
