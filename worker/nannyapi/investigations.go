package nannyapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

const pathInvestigations = "/api/investigations"

// CreateInvestigation creates an investigation as this agent (the backend
// marks it metadata.initiated_by "agent" and echoes it to the agent's stream
// as "create"). issue must be at least 10 characters after trimming. Not
// retried once it reached the server, so it is never created twice.
func (c *Client) CreateInvestigation(ctx context.Context, agentID, issue, priority string) (InvestigationCreated, error) {
	const op = "POST /api/investigations"
	if !ValidID(agentID) {
		return InvestigationCreated{}, invalidInput("agent id %q malformed", agentID)
	}
	if len([]rune(strings.TrimSpace(issue))) < 10 {
		return InvestigationCreated{}, invalidInput("issue must be at least 10 characters long")
	}
	if priority == "" {
		priority = "medium"
	}
	body, err := json.Marshal(map[string]string{"agent_id": agentID, "issue": issue, "priority": priority})
	if err != nil {
		return InvestigationCreated{}, fmt.Errorf("nannyapi %s: encode: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPost, url: c.apiURL(pathInvestigations),
		body: body, ctype: contentJSON, auth: true})
	if err != nil {
		return InvestigationCreated{}, err
	}
	return DecodeInvestigationCreated(resp.body)
}

type aiTurnBody struct {
	Model           string        `json:"model"`
	Messages        []ChatMessage `json:"messages"`
	InvestigationID string        `json:"investigation_id"`
}

// AITurn sends the conversation so far through the backend's model proxy
// and returns the answer. It uses the long AITurnTimeout (header and
// overall), never the ordinary 30 s header timeout, and is not retried once
// it reached the server, so a slow turn is never sent twice.
func (c *Client) AITurn(ctx context.Context, investigationID string, messages []ChatMessage) (ChatCompletion, error) {
	const op = "ai turn"
	if !ValidID(investigationID) {
		return ChatCompletion{}, invalidInput("investigation id %q malformed", investigationID)
	}
	if len(messages) == 0 {
		return ChatCompletion{}, invalidInput("no messages")
	}
	for i, m := range messages {
		switch m.Role {
		case "user", "assistant", "system":
		default:
			return ChatCompletion{}, invalidInput("message %d: role %q", i, m.Role)
		}
	}
	body, err := json.Marshal(aiTurnBody{Model: DefaultModel, Messages: messages, InvestigationID: investigationID})
	if err != nil {
		return ChatCompletion{}, fmt.Errorf("nannyapi %s: encode: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPost, url: c.apiURL(pathInvestigations),
		body: body, ctype: contentJSON, accept: contentJSON, auth: true,
		headerTimeout: c.cfg.AITurnTimeout, timeout: c.cfg.AITurnTimeout})
	if err != nil {
		return ChatCompletion{}, err
	}
	return DecodeChatCompletion(resp.body)
}

// UpdateInvestigation PATCHes an investigation. The backend takes only
// status, resolution_plan and episode_id, so InvestigationUpdate has only
// those. Setting the same values again is harmless, so it is retried on
// 502/503/504.
func (c *Client) UpdateInvestigation(ctx context.Context, id string, u InvestigationUpdate) error {
	const op = "PATCH /api/investigations"
	if !ValidID(id) {
		return invalidInput("investigation id %q malformed", id)
	}
	switch u.Status {
	case "", StatusPending, StatusInProgress, StatusCompleted, StatusFailed:
	default:
		return invalidInput("status %q", u.Status)
	}
	if u == (InvestigationUpdate{}) {
		return invalidInput("empty update")
	}
	body, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("nannyapi %s: encode: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPatch,
		url: c.apiURL(pathInvestigations + "?id=" + url.QueryEscape(id)), body: body, ctype: contentJSON,
		auth: true, idempotent: true})
	if err != nil {
		return err
	}
	return DecodeSuccess(resp.body)
}
