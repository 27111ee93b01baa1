// Command patchbed is the fake NannyAPI for a booted test machine's patch
// checks (test/units): it serves test/fakeapi on -listen, approves the
// machine's registration, and once the agent is subscribed creates the
// patch operations -ops names, each after the one before ended. It keeps
// what became of them in files under -dir for a checks script to read:
// "url" at start, "patch-id-N" once operation N exists, and "state-N"
// (rewritten every 100 ms: the number of result uploads, the record's
// status, each upload's exit code, lxc_id, stdout and stderr).
//
//	patchbed -listen 127.0.0.1:8089 -dir /run/patchbed -ops apply,dry-run:105:7sfzjqlwhc0ptu5
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "patchbed:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("patchbed", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "listen address")
	dir := fs.String("dir", "/run/patchbed", "directory for url, patch-id and state")
	ops := fs.String("ops", "dry-run", "operations, comma-separated: MODE or MODE:VMID:LXC_ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var specs []fakeapi.PatchSpec
	for _, op := range strings.Split(*ops, ",") {
		f := strings.Split(op, ":")
		switch len(f) {
		case 1:
			specs = append(specs, fakeapi.PatchSpec{Mode: f[0]})
		case 3:
			specs = append(specs, fakeapi.PatchSpec{Mode: f[0], VMID: f[1], LXCID: f[2]})
		default:
			return fmt.Errorf("-ops: %q is not MODE or MODE:VMID:LXC_ID", op)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	srv, err := fakeapi.Start(fakeapi.Options{Addr: *listen, AutoApprove: true})
	if err != nil {
		return err
	}
	defer srv.Close()
	if err := write(*dir, "url", srv.URL()); err != nil {
		return err
	}
	agent, err := waitAgent(ctx, srv)
	if err != nil {
		return err
	}
	if _, err := srv.WaitSubscribed(ctx, agent, "patch_operations"); err != nil {
		return fmt.Errorf("agent %s never subscribed to patch_operations: %w", agent, err)
	}
	// After its catch-up: an operation the worker finds in the backlog
	// of a fresh install is not run (its age is unknown).
	if err := waitCatchUp(ctx, srv); err != nil {
		return err
	}
	var ids []string
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		// The next operation once the last one ended.
		if len(ids) < len(specs) && (len(ids) == 0 || ended(srv, ids[len(ids)-1])) {
			id, err := srv.CreatePatch(agent, specs[len(ids)])
			if err != nil {
				return err
			}
			if err := write(*dir, fmt.Sprintf("patch-id-%d", len(ids)), id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		for i, id := range ids {
			if err := write(*dir, fmt.Sprintf("state-%d", i), state(srv, id)); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ended: the operation is completed or failed, with its error_msg (which
// follows the result upload) in.
func ended(srv *fakeapi.Server, id string) bool {
	rec, ok := srv.Record("patch_operations", id)
	return ok && (rec["status"] == "completed" || rec["status"] == "failed" && rec["error_msg"] != "")
}

// waitAgent waits for the machine's registration and returns its agent id.
func waitAgent(ctx context.Context, srv *fakeapi.Server) (string, error) {
	for {
		if regs := srv.Registrations(); len(regs) > 0 {
			return regs[0].AgentID, nil
		}
		select {
		case <-ctx.Done():
			return "", errors.New("no registration")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitCatchUp waits until the worker listed the patch operations after
// subscribing, and a moment more for it to finish with the list.
func waitCatchUp(ctx context.Context, srv *fakeapi.Server) error {
	for {
		for _, r := range srv.Requests() {
			if r.Route == fakeapi.RouteRecords && strings.Contains(r.Path, "/patch_operations/") {
				time.Sleep(time.Second)
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("the worker never caught up on patch operations")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// state describes the operation: one "key=value" per line.
func state(srv *fakeapi.Server, id string) string {
	var b strings.Builder
	var uploads []fakeapi.PatchResultPost
	for _, r := range srv.PatchResults() {
		if r.OperationID == id {
			uploads = append(uploads, r)
		}
	}
	fmt.Fprintf(&b, "uploads=%d\n", len(uploads))
	if rec, ok := srv.Record("patch_operations", id); ok {
		fmt.Fprintf(&b, "status=%v\nerror_msg=%q\n", rec["status"], rec["error_msg"])
	}
	for i, u := range uploads {
		fmt.Fprintf(&b, "upload%d_exit_code=%s\nupload%d_lxc_id=%s\nupload%d_stdout=%q\nupload%d_stderr=%q\n",
			i, strings.Join(u.Fields["exit_code"], ","), i, strings.Join(u.Fields["lxc_id"], ","), i, u.Stdout, i, u.Stderr)
	}
	return b.String()
}

// write replaces dir/name with text.
func write(dir, name, text string) error {
	tmp := filepath.Join(dir, "."+name)
	if err := os.WriteFile(tmp, []byte(text+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}
