package policy

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const standInSum = "89c839cc25343154e994e43a1244cb561842101d0482948d6873670d4afe493e"

func TestPatchDefaults(t *testing.T) {
	x := mustLoadYAML(t, "version: 1\n").Patches()
	want := Patches{Enabled: false, Mode: PatchPinned, Modes: []string{"dry-run"},
		Interpreters: []string{"/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"},
		Path:         "/usr/sbin:/usr/bin:/sbin:/bin", Pct: DefaultPct, Targets: []string{"host", "lxc"}}
	if !reflect.DeepEqual(x, want) {
		t.Errorf("defaults\n got %+v\nwant %+v", x, want)
	}
	lim := mustLoadYAML(t, "version: 1\n").Limits()
	if lim.PatchMaxRuntime.Minutes() != 30 {
		t.Errorf("patch timeout defaults to %v, want 30m", lim.PatchMaxRuntime)
	}
}

func TestPatchSettingsDecode(t *testing.T) {
	p := mustLoadYAML(t, `version: 1
patches:
  enabled: true
  modes: [dry-run, apply]
  interpreters: [/bin/bash]
  path: /opt/fake/bin:/usr/bin
`)
	x := p.Patches()
	if !reflect.DeepEqual(x.Modes, []string{"dry-run", "apply"}) || !reflect.DeepEqual(x.Interpreters, []string{"/bin/bash"}) || x.Path != "/opt/fake/bin:/usr/bin" {
		t.Errorf("settings not applied: %+v", x)
	}
	if src := p.SettingSource("patches.path"); !strings.HasSuffix(src, "policy.yaml:6") {
		t.Errorf("patches.path source %q", src)
	}
	for body, want := range map[string]string{
		"modes: [dry-run, reboot]":        `"reboot" is not dry-run or apply`,
		"interpreters: [bash]":            "clean absolute path",
		"interpreters: [/bin/../bin/sh]":  "clean absolute path",
		"path: /usr/bin::/bin":            `entry ""`,
		"path: bin:/usr/bin":              `entry "bin"`,
		"path: /usr/bin/":                 `entry "/usr/bin/"`,
		"path: ''":                        "is empty",
		"interpreter: [/bin/sh]":          "interpreter",
		"modes: {dry-run: true}":          "patches.modes",
		"path: [/usr/bin]":                "patches.path",
		"path: /usr/bin:/b\u00e4d":        "plain ASCII",
		"interpreters: /usr/bin/python3*": "no globs",
	} {
		_, err := loadYAML(t, "version: 1\npatches:\n  "+body+"\n")
		var list *ErrorList
		if err == nil || !errors.As(err, &list) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ":3:") {
			t.Errorf("%s: got %v, want an error at line 3 containing %q", body, err, want)
		}
	}
}

// A refusal's hint is policy text: added as a local file, it must load and
// allow exactly the run that was refused.
func TestPatchRefusalHintAllowsTheRun(t *testing.T) {
	cases := []struct {
		name, vendor string
		q            PatchQuery
		reason       string
	}{
		{"disabled", "version: 1\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "dry-run", Name: "apt-update.sh"}, "disabled"},
		{"disabled apply", "version: 1\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "apply", Name: "apt-update.sh"}, "disabled"},
		{"not pinned", "version: 1\npatches: {enabled: true}\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "dry-run", Name: "apt-update.sh"}, "not pinned"},
		{"apply not allowed", "version: 1\npatches:\n  enabled: true\n  pinned: [{id: p, sha256: " + standInSum + "}]\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "apply"}, "modes"},
		{"target", "version: 1\npatches:\n  enabled: true\n  mode: trust_backend\n  targets: [lxc]\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "dry-run"}, "target"},
		{"hostile name", "version: 1\npatches: {enabled: true}\n", PatchQuery{SHA256: standInSum, Target: "host", Mode: "dry-run",
			Name: "x\"}\n  mode: trust_backend\n#\u202e"}, "not pinned"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			vendor := writeFile(t, dir, "vendor.yaml", c.vendor)
			p, err := Load(LoadOptions{WorkerAccount: testWorker}, vendor)
			if err != nil {
				t.Fatal(err)
			}
			_, err = p.CheckPatch(c.q)
			var d *DeniedError
			if !errors.As(err, &d) || !strings.Contains(d.Reason, c.reason) || d.Hint == "" {
				t.Fatalf("refusal %v, want a reason with %q and a hint", err, c.reason)
			}
			local := writeFile(t, dir, "local.yaml", "version: 1\n"+d.Hint)
			p2, err := Load(LoadOptions{WorkerAccount: testWorker}, vendor, local)
			if err != nil {
				t.Fatalf("the hint does not load:\n%s\n%v", d.Hint, err)
			}
			if rule, err := p2.CheckPatch(c.q); err != nil || rule == "" {
				t.Errorf("with the hint added, still refused: %v\nhint:\n%s", err, d.Hint)
			}
			if p2.Patches().Mode != p.Patches().Mode {
				t.Errorf("the hint changed patches.mode to %s:\n%s", p2.Patches().Mode, d.Hint)
			}
			other := c.q
			other.SHA256 = strings.Repeat("0", 64)
			if p2.Patches().Mode == PatchPinned {
				if _, err := p2.CheckPatch(other); err == nil {
					t.Errorf("the hint allows other scripts too:\n%s", d.Hint)
				}
			}
		})
	}
}

func TestPatchPinnedHintIsOneLine(t *testing.T) {
	p := mustLoadYAML(t, "version: 1\npatches: {enabled: true}\n")
	_, err := p.CheckPatch(PatchQuery{SHA256: strings.ToUpper(standInSum), Target: "host", Mode: "dry-run", Name: "apt-update.sh"})
	var d *DeniedError
	if !errors.As(err, &d) {
		t.Fatal(err)
	}
	want := "patches:\n  pinned:\n    - {id: apt-update-89c839cc2534, sha256: " + standInSum + `, name: "apt-update.sh"}` + "\n"
	if d.Hint != want {
		t.Errorf("hint\n%q\nwant\n%q", d.Hint, want)
	}
	if !strings.Contains(d.Reason, "apt-update.sh") || !strings.Contains(d.Reason, standInSum) {
		t.Errorf("reason does not name the script and its hash: %s", d.Reason)
	}
}

func TestExplainPatches(t *testing.T) {
	dir := t.TempDir()
	vendor := writeFile(t, dir, "vendor.yaml", `version: 1
limits: {patch_max_runtime: 45min}
patches:
  enabled: true
  modes: [dry-run, apply]
  path: /opt/fake/bin:/usr/bin
  pinned:
    - {id: apt-update, sha256: `+standInSum+`, name: apt-update.sh}
    - {id: nameless, sha256: `+strings.Repeat("1", 64)+`}
`)
	p, err := Load(LoadOptions{WorkerAccount: testWorker}, vendor)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := p.Explain().WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"run modes allowed: dry-run, apply",
		"PATH=/opt/fake/bin:/usr/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive",
		"/bin/sh, /bin/bash",
		"stopped after 45m",
		"capped at 2GiB of memory and 1024 tasks (limits.patch_child_memory, patch_child_tasks); no Landlock",
		"apt-update.sh sha256 " + standInSum + " [rule apt-update]",
		"(no name) sha256 " + strings.Repeat("1", 64) + " [rule nameless]",
		"the 2 pinned script(s) can be run as root",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("explain lacks %q:\n%s", want, out)
		}
	}
	trust := writeFile(t, dir, "trust.yaml", "version: 1\npatches: {enabled: true, mode: trust_backend}\n")
	p, err = Load(LoadOptions{WorkerAccount: testWorker}, trust)
	if err != nil {
		t.Fatal(err)
	}
	buf.Reset()
	_ = p.Explain().WriteText(&buf)
	if out := buf.String(); !strings.Contains(out, "WARNING") || !strings.Contains(out, "anyone who takes over the worker, can run any script as root") {
		t.Errorf("trust_backend explain lacks the warning:\n%s", out)
	}
}
