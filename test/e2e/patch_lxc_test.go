package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/test/stack"
)

// fakePct stands in for Proxmox's pct on a test-only path: it logs each
// call (where its stdin points, then its arguments, tab-separated), keeps
// a copy of what push received, and runs exec's command on this host with
// the pushed file's container path mapped under ct/ (the script then finds
// the fake apt-get through the run's PATH, as it would in a container).
const fakePct = `#!/bin/bash
dir=$(dirname "$0")
{ printf '%s' "$(readlink /proc/$$/fd/0)"; for a in "$@"; do printf '\t%s' "$a"; done; printf '\n'; } >> "$dir/log"
root=$dir/ct
case $1 in
push) mkdir -p "$root/run" && cat "$3" > "$root$4" && cp "$root$4" "$dir/pushed" ;;
exec) shift 3; args=(); for a in "$@"; do case $a in /run/*) args+=("$root$a") ;; *) args+=("$a") ;; esac; done; exec "${args[@]}" ;;
esac
`

// newFakePct installs the fake in a root-owned directory of its own.
func newFakePct(t *testing.T) string {
	t.Helper()
	dir, err := stack.WorldReadableTempDir("nannyagent-pct-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "pct"), []byte(fakePct), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// A patch for a container: the worker sends the record's vmid, the broker
// (without systemd here, through its runner) pushes the checked bytes with
// pct and runs them with pct exec, and the result is uploaded with the
// record's lxc_id. A container the policy does not name is refused before
// pct is called, and that failure carries the lxc_id too.
func TestPatchInContainer(t *testing.T) {
	bin := newAptBin(t)
	pct := newFakePct(t)
	srv := startFake(t, fakeapi.Options{})
	s, creds := registeredStack(t, srv, patchPolicy(bin, "")+"  pct: "+filepath.Join(pct, "pct")+"\n  vmids: [\"1??\"]\n", patchPoll...)
	id, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", LXCID: "7sfzjqlwhc0ptu5", VMID: "105"})
	if err != nil {
		t.Fatal(err)
	}
	rec := waitPatch(t, s, srv, id)
	if rec["status"] != "completed" {
		t.Errorf("record %v", rec)
	}
	r := oneResult(t, srv, id)
	if !slices.Equal(r.Fields["lxc_id"], []string{"7sfzjqlwhc0ptu5"}) || !slices.Equal(r.Fields["exit_code"], []string{"0"}) ||
		!strings.Contains(string(r.Stdout), "apt-update: would upgrade: openssl") {
		t.Errorf("upload %v stdout %q stderr %q", r.Fields, r.Stdout, r.Stderr)
	}
	dest := "/run/nannyagent-patch-" + id
	log, _ := os.ReadFile(filepath.Join(pct, "log"))
	want := "/dev/null\tpush\t105\t/dev/fd/3\t" + dest + "\n" +
		"/dev/null\texec\t105\t--\t/bin/bash\t" + dest + "\t--dry-run\n" +
		"/dev/null\texec\t105\t--\t/bin/rm\t-f\t--\t" + dest + "\n"
	if string(log) != want {
		t.Errorf("pct calls:\n%s\nwant:\n%s", log, want)
	}
	if pushed, _ := os.ReadFile(filepath.Join(pct, "pushed")); string(pushed) != string(fakeapi.StandInAptUpdate()) {
		t.Errorf("the pushed bytes are not the checked script (%d bytes)", len(pushed))
	}
	br := brokerRecord(t, s, id)
	if br["vmid"] != "105" || br["state"] != "finished" {
		t.Errorf("broker record %v", br)
	}

	// Container 200 is not named: refused, nothing pushed, lxc_id kept.
	id2, err := srv.CreatePatch(creds.ID, fakeapi.PatchSpec{Mode: "dry-run", LXCID: "8zzzzzzzzzzzzzz", VMID: "200"})
	if err != nil {
		t.Fatal(err)
	}
	rec = waitPatch(t, s, srv, id2)
	msg, _ := rec["error_msg"].(string)
	if rec["status"] != "failed" || !strings.Contains(msg, "container 200 is not named") || !strings.Contains(msg, `vmids: ["1??", "200"]`) {
		t.Errorf("record %v", rec)
	}
	r = oneResult(t, srv, id2)
	if !slices.Equal(r.Fields["lxc_id"], []string{"8zzzzzzzzzzzzzz"}) || r.Fields["exit_code"][0] != "1" {
		t.Errorf("refusal upload %v", r.Fields)
	}
	if log2, _ := os.ReadFile(filepath.Join(pct, "log")); string(log2) != want {
		t.Errorf("pct was called for the refused container:\n%s", log2)
	}
	noBrokerRecord(t, s, id2)
	if n := srv.Hits(fakeapi.RouteFiles); n != 1 {
		t.Errorf("%d downloads, want 1 (the refused one is judged by its hash first)", n)
	}
}
