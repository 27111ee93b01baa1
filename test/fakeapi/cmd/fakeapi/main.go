// Command fakeapi runs the fake NannyAPI for `make demo`. It prints the base
// URL and the default user's token (for curl: create investigations,
// patches and reboots as the portal would), then serves until SIGINT or
// SIGTERM.
//
//	fakeapi [-listen 127.0.0.1:0] [-auto-approve] [-ai-script turns.json] [-newer]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fakeapi:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fakeapi", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	autoApprove := fs.Bool("auto-approve", false, "approve every device code as the default user at once")
	aiScript := fs.String("ai-script", "", `JSON file {"turns":[…],"investigations":{"<id>":[…]}} answering AI turns (default: a two-turn demo script)`)
	newer := fs.Bool("newer", false, "behave like a newer backend: renew-refresh-token, register-with-token and /api/reboot/<id>/fail")
	idle := fs.Duration("idle-timeout", 5*time.Minute, "close realtime streams idle this long")
	monitor := fs.Duration("reboot-monitor", 30*time.Second, "period of the reboot monitor that completes or times out reboots")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// Catch signals before printing the URL: whoever reads it may stop us at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var ai fakeapi.AI = fakeapi.DemoAI()
	if *aiScript != "" {
		loaded, err := fakeapi.LoadScriptedAI(*aiScript)
		if err != nil {
			return err
		}
		ai = loaded
	}
	srv, err := fakeapi.Start(fakeapi.Options{Addr: *listen, AutoApprove: *autoApprove, AI: ai, IdleTimeout: *idle,
		RebootMonitorInterval: *monitor, RenewRefreshToken: *newer, RegisterWithToken: *newer, RebootFail: *newer})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Fprintf(out, "FAKEAPI_URL=%s\n", srv.URL())
	fmt.Fprintf(out, "FAKEAPI_USER_ID=%s\n", srv.UserID())
	fmt.Fprintf(out, "FAKEAPI_USER_TOKEN=%s\n", srv.UserToken())
	if *newer {
		fmt.Fprintf(out, "FAKEAPI_STATIC_TOKEN=%s\n", srv.AddStaticToken(""))
	}
	<-ctx.Done()
	return nil
}
