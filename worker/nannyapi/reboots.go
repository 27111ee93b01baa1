package nannyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
)

// AcknowledgeReboot tells the backend the agent is about to reboot (it sets
// "rebooting"). The backend marks the reboot completed at the next metrics
// post after this, so acknowledge only right before acting. Acknowledging
// again sets the same state, so it is retried on 502/503/504.
func (c *Client) AcknowledgeReboot(ctx context.Context, rebootID string) error {
	if !ValidID(rebootID) {
		return invalidInput("reboot id %q malformed", rebootID)
	}
	resp, err := c.do(ctx, call{op: "POST /api/reboot/acknowledge", method: http.MethodPost,
		url: c.apiURL("/api/reboot/" + rebootID + "/acknowledge"), ctype: contentJSON, auth: true, idempotent: true})
	if err != nil {
		return err
	}
	return DecodeSuccess(resp.body)
}

// GetReboot reads a reboot operation (GET /api/reboot/<id>), to learn
// whether the backend has moved it on (completed, timeout).
func (c *Client) GetReboot(ctx context.Context, rebootID string) (RebootOperation, error) {
	if !ValidID(rebootID) {
		return RebootOperation{}, invalidInput("reboot id %q malformed", rebootID)
	}
	resp, err := c.do(ctx, call{op: "GET /api/reboot", method: http.MethodGet,
		url: c.apiURL("/api/reboot/" + rebootID), auth: true, idempotent: true})
	if err != nil {
		return RebootOperation{}, err
	}
	return DecodeReboot(resp.body)
}

// FailReboot reports a failed reboot on backends that have the route. The
// observed backend has none and answers 404 (StatusOf(err) == 404): the
// caller then records the failure locally only.
func (c *Client) FailReboot(ctx context.Context, rebootID, message string) error {
	if !ValidID(rebootID) {
		return invalidInput("reboot id %q malformed", rebootID)
	}
	body, err := json.Marshal(map[string]string{"error": message})
	if err != nil {
		return fmt.Errorf("nannyapi reboot fail: encode: %w", err)
	}
	resp, err := c.do(ctx, call{op: "POST /api/reboot/fail", method: http.MethodPost,
		url: c.apiURL("/api/reboot/" + rebootID + "/fail"), body: body, ctype: contentJSON, auth: true, idempotent: true})
	if err != nil {
		return err
	}
	return DecodeSuccess(resp.body)
}
