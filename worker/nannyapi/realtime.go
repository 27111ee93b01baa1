package nannyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
)

// Health calls GET /api/health (anonymous) and returns its message.
func (c *Client) Health(ctx context.Context) (string, error) {
	resp, err := c.do(ctx, call{op: "GET /api/health", method: http.MethodGet, url: c.apiURL("/api/health"), idempotent: true})
	if err != nil {
		return "", err
	}
	return DecodeHealth(resp.body)
}

// OpenRealtime opens the PocketBase realtime stream (GET /api/realtime) and
// returns its body; the caller reads SSE frames from it (the first is
// PB_CONNECT, see DecodeConnect) and closes it. The stream has a first-byte
// timeout but no overall one; cancel ctx to end it. The server closes it
// after 5 idle minutes.
func (c *Client) OpenRealtime(ctx context.Context) (io.ReadCloser, error) {
	resp, err := c.do(ctx, call{op: "GET /api/realtime", method: http.MethodGet, url: c.apiURL("/api/realtime"),
		accept: "text/event-stream", auth: c.creds != nil, timeout: -1, stream: true})
	if err != nil {
		return nil, err
	}
	if mt, _, _ := mime.ParseMediaType(resp.header.Get("Content-Type")); mt != "text/event-stream" {
		resp.close()
		return nil, fmt.Errorf("nannyapi GET /api/realtime: content type %q, want text/event-stream", resp.header.Get("Content-Type"))
	}
	return resp.stream, nil
}

// Subscribe subscribes a realtime client to collections (agent). The
// backend answers 204 even for a bad token and then delivers nothing, so a
// 204 proves only that the clientId exists; 404 means an unknown clientId,
// 403 a different token than the previous subscribe.
func (c *Client) Subscribe(ctx context.Context, clientID string, collections []string) error {
	if !validToken(clientID) || len(clientID) > maxClientID {
		return invalidInput("client id malformed")
	}
	if collections == nil {
		collections = []string{}
	}
	body, err := json.Marshal(map[string]any{"clientId": clientID, "subscriptions": collections})
	if err != nil {
		return fmt.Errorf("nannyapi subscribe: encode: %w", err)
	}
	_, err = c.do(ctx, call{op: "POST /api/realtime", method: http.MethodPost, url: c.apiURL("/api/realtime"),
		body: body, ctype: contentJSON, auth: true, idempotent: true})
	return err
}
