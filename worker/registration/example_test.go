package registration_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nannyai/nannyagent/test/fakeapi"
	"github.com/nannyai/nannyagent/worker/nannyapi"
	"github.com/nannyai/nannyagent/worker/registration"
	"github.com/nannyai/nannyagent/worker/tokenstore"
)

// Example shows how the worker wires the three packages: one client from
// config values, the token store and its manager, the manager as the
// client's credentials, and a device-flow registration that streams the
// user code.
func Example() {
	srv := fakeapi.New(fakeapi.Options{AutoApprove: true})
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	// 1. The client, from nannyapi_url and the plain-HTTP policy.
	api, err := nannyapi.New(nannyapi.Config{BaseURL: srv.URL(), PlainHTTP: nannyapi.PlainHTTPLAN, Version: "0.9.0"})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer api.Close()
	if w := api.Warning(); w != "" {
		slog.Warn(w) // log at start and show in status
	}

	// 2. Tokens: the store at token_path, the manager refreshing through the client.
	store, err := tokenstore.Open(filepath.Join(dir, "token.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	tokens, err := tokenstore.NewManager(store, api, tokenstore.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}

	// 3. Register (the worker streams DeviceCode to the CLI).
	reg := registration.New(api, tokens)
	res, err := reg.DeviceFlow(ctx, registration.DeviceFlowOptions{
		Host:         nannyapi.HostMetadata{Hostname: "host1", Version: "0.9.0", OSInfo: "Debian GNU/Linux 12"},
		PollInterval: 10 * time.Millisecond,
		OnDeviceCode: func(c registration.DeviceCode) { fmt.Println("user code has", len(c.UserCode), "characters") },
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	// 4. Agent calls carry the managed token (refreshed 5 minutes early and once on a 401).
	agent := api.WithCredentials(tokens)
	err = agent.IngestMetrics(ctx, nannyapi.MetricsReport{PlatformFamily: "debian", Version: "0.9.0"})
	fmt.Println(res.Mode, err, tokens.Status().State)
	// Output:
	// user code has 8 characters
	// oauth <nil> registered
}
