package patch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakePct stands in for Proxmox's pct on a test-only path. It logs each
// call's argv (one argument per field, tab-separated) and where its stdin
// points, and acts on a directory that stands for the container's root:
// push copies the source there (and keeps a copy of what it received),
// exec runs the command with container paths under that root (the
// interpreter itself is the host's), and "exec -- /bin/rm" removes the
// pushed file. FAIL_PUSH in the root makes push fail.
const fakePct = `#!/bin/bash
log=@LOG@
root=@ROOT@
{ printf '%s' "$(readlink /proc/$$/fd/0)"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$log"
cmd=$1 vmid=$2
shift 2
case $cmd in
push)
	[ -e "$root/FAIL_PUSH" ] && { echo "pct: container $vmid is not running" >&2; exit 255; }
	mkdir -p "$root$(dirname "$2")"
	cat "$1" > "$root$2" && cp "$root$2" "$root/pushed-copy" ;;
exec)
	[ "$1" = -- ] || exit 90
	shift
	args=()
	for a in "$@"; do
		case $a in /run/nannyagent-patch-*) args+=("$root$a") ;; *) args+=("$a") ;; esac
	done
	exec "${args[@]}" ;;
*) exit 91 ;;
esac
`

type pctBed struct {
	pct, log, root string
}

func newPctBed(t *testing.T) pctBed {
	t.Helper()
	dir := t.TempDir()
	b := pctBed{pct: filepath.Join(dir, "bin", "pct"), log: filepath.Join(dir, "pct.log"), root: filepath.Join(dir, "ct")}
	for _, d := range []string{filepath.Dir(b.pct), b.root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script := strings.NewReplacer("@LOG@", b.log, "@ROOT@", b.root).Replace(fakePct)
	if err := os.WriteFile(b.pct, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

// calls are pct's invocations: stdin target, then argv.
func (b pctBed) calls(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile(b.log)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	for _, l := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		out = append(out, strings.Split(l, "\t"))
	}
	return out
}

func (b pctBed) settings() Settings {
	s := testSettings()
	s.Pct = b.pct
	return s
}

// alpine is an Alpine-style script: plain sh, no bash. It prints which
// program runs it, its arguments, stdin and environment (but PWD, and
// SHLVL, which the fake pct adds as a bash script).
const alpine = `#!/bin/sh
echo "interpreter: $(readlink /proc/$$/exe)"
echo "args: $*"
echo "stdin: $(readlink /proc/$$/fd/0)"
echo "env: $(env | grep -v -e '^PWD=' -e '^SHLVL=' | sort | tr '\n' ' ')"
echo "to stderr" >&2
exit 3
`

func TestContainerRun(t *testing.T) {
	b := newPctBed(t)
	l := &execLauncher{}
	m, _ := newManagerCfg(t, Config{Launcher: l, Runner: testRunner(t)})
	req := request("op1", alpine, DryRun, "musl", "busybox")
	req.VMID = "100"
	st, err := m.Start(req, b.settings())
	if err != nil || st.State != Running {
		t.Fatalf("start: %+v %v", st, err)
	}
	r := waitDone(t, m, "op1")
	dest := "/run/nannyagent-patch-op1"
	// The exact command lines, in order, each with stdin /dev/null.
	want := [][]string{
		{"/dev/null", "push", "100", "/dev/fd/3", dest},
		{"/dev/null", "exec", "100", "--", "/bin/sh", dest, "--dry-run", "--exclude", "musl,busybox"},
		{"/dev/null", "exec", "100", "--", "/bin/rm", "-f", "--", dest},
	}
	if got := b.calls(t); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("pct calls\n got %q\nwant %q", got, want)
	}
	// The pushed bytes are the checked bytes; the file is gone afterwards.
	if pushed, err := os.ReadFile(filepath.Join(b.root, "pushed-copy")); err != nil || string(pushed) != alpine {
		t.Errorf("pushed bytes %q (%v), want the checked script", pushed, err)
	}
	if _, err := os.Stat(filepath.Join(b.root, dest)); !os.IsNotExist(err) {
		t.Errorf("the pushed script was not removed: %v", err)
	}
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	out := string(r.Stdout)
	for _, w := range []string{"interpreter: " + sh + "\n", "args: --dry-run --exclude musl,busybox\n", "stdin: /dev/null\n",
		"env: DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \n"} {
		if !strings.Contains(out, w) {
			t.Errorf("stdout lacks %q:\n%s", w, out)
		}
	}
	if r.State != Finished || r.ExitCode != 3 || r.Error != "" || r.VMID != "100" || string(r.Stderr) != "to stderr\n" {
		t.Errorf("record %+v stderr %q", r, r.Stderr)
	}
	if got := strings.Join(r.Argv, " "); got != b.pct+" exec 100 -- /bin/sh "+dest+" --dry-run --exclude musl,busybox" {
		t.Errorf("recorded argv %q", got)
	}
	// What the launcher started is the runner, with the script on fd 3.
	spec := l.calls()[0]
	if spec.Argv[1] != RunnerCommand || len(spec.Files) != 1 || !slices.Contains(spec.Argv, "--vmid") {
		t.Errorf("launch %q", spec.Argv)
	}
}

func TestContainerPushFails(t *testing.T) {
	b := newPctBed(t)
	if err := os.WriteFile(filepath.Join(b.root, "FAIL_PUSH"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m, _ := newManagerCfg(t, Config{Launcher: &execLauncher{}, Runner: testRunner(t)})
	req := request("op1", alpine, Apply)
	req.VMID = "101"
	if _, err := m.Start(req, b.settings()); err != nil {
		t.Fatal(err)
	}
	r := waitDone(t, m, "op1")
	if r.State != FailedToStart || r.ExitCode != -1 || !strings.Contains(r.Error, "could not be pushed into container 101 (pct push exit status 255)") ||
		!strings.Contains(string(r.Stderr), "container 101 is not running") {
		t.Errorf("record %+v stderr %q", r, r.Stderr)
	}
	// Nothing ran, and nothing was left to remove.
	if calls := b.calls(t); len(calls) != 1 || calls[0][1] != "push" {
		t.Errorf("pct calls %q", calls)
	}
}

func TestContainerRefusals(t *testing.T) {
	b := newPctBed(t)
	l := &execLauncher{}
	m, _ := newManagerCfg(t, Config{Launcher: l, Runner: testRunner(t)})
	noRunner, _ := newManagerCfg(t, Config{Launcher: l})
	for name, c := range map[string]struct {
		m      *Manager
		script string
		vmid   string
		pct    string
		want   string
	}{
		"env":        {m, "#!/usr/bin/env bash\necho hi\n", "100", b.pct, "container's PATH"},
		"not listed": {m, "#!/usr/bin/perl\nprint 1\n", "100", b.pct, "patches.interpreters"},
		"bad vmid":   {m, alpine, "10a", b.pct, "vmid"},
		"no pct":     {m, alpine, "100", "pct", "patches.pct"},
		"no runner":  {noRunner, alpine, "100", b.pct, "runner"},
	} {
		req := request("op-"+strings.ReplaceAll(name, " ", "-"), c.script, DryRun)
		req.VMID = c.vmid
		s := b.settings()
		s.Pct = c.pct
		if _, err := c.m.Start(req, s); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %s", name, err, c.want)
		}
	}
	if n := len(l.calls()); n != 0 || len(b.calls(t)) != 0 {
		t.Errorf("%d launches, pct calls %q", n, b.calls(t))
	}
}
