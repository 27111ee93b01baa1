package nannyapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// RecordQuery selects records of one collection through the PocketBase
// records API. The backend already limits an agent to its own records;
// AgentID narrows it explicitly as well.
type RecordQuery struct {
	// Status, e.g. "pending" (patches, investigations) or "sent" (reboots).
	Status string
	// AgentID, usually this agent's id.
	AgentID string
	// PerPage is the page size (default 100); all pages are fetched, up to MaxPages.
	PerPage int
	// MaxPages bounds the pages fetched (default 20).
	MaxPages int
}

// Filter returns the PocketBase filter expression, e.g.
// status='pending' && agent_id='6ybfg6bq7mxtjoj'. Values must be ids or
// simple words so they cannot break out of the quotes.
func (q RecordQuery) Filter() (string, error) {
	var parts []string
	for _, f := range []struct{ name, value string }{{"status", q.Status}, {"agent_id", q.AgentID}} {
		if f.value == "" {
			continue
		}
		if !ValidID(f.value) {
			return "", invalidInput("filter %s value %q", f.name, f.value)
		}
		parts = append(parts, f.name+"='"+f.value+"'")
	}
	return strings.Join(parts, " && "), nil
}

// ListInvestigations lists investigations records.
func (c *Client) ListInvestigations(ctx context.Context, q RecordQuery) ([]Investigation, error) {
	return listRecords[Investigation](ctx, c, CollectionInvestigations, q)
}

// ListPatchOperations lists patch_operations records.
func (c *Client) ListPatchOperations(ctx context.Context, q RecordQuery) ([]PatchOperation, error) {
	return listRecords[PatchOperation](ctx, c, CollectionPatchOperations, q)
}

// ListRebootOperations lists reboot_operations records.
func (c *Client) ListRebootOperations(ctx context.Context, q RecordQuery) ([]RebootOperation, error) {
	return listRecords[RebootOperation](ctx, c, CollectionRebootOperations, q)
}

func listRecords[T recordID](ctx context.Context, c *Client, collection string, q RecordQuery) ([]T, error) {
	op := "GET /api/collections/" + collection + "/records"
	filter, err := q.Filter()
	if err != nil {
		return nil, fmt.Errorf("nannyapi %s: %w", op, err)
	}
	perPage, maxPages := q.PerPage, q.MaxPages
	if perPage <= 0 {
		perPage = 100
	}
	if maxPages <= 0 {
		maxPages = 20
	}
	var out []T
	for page := 1; page <= maxPages; page++ {
		v := url.Values{}
		v.Set("page", strconv.Itoa(page))
		v.Set("perPage", strconv.Itoa(perPage))
		if filter != "" {
			v.Set("filter", filter)
		}
		resp, err := c.do(ctx, call{op: op, method: http.MethodGet,
			url: c.apiURL("/api/collections/" + collection + "/records?" + v.Encode()), auth: true, idempotent: true})
		if err != nil {
			return nil, err
		}
		p, err := DecodePage[T](collection, resp.body)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Items...)
		if page >= p.TotalPages || len(p.Items) == 0 {
			return out, nil
		}
	}
	return out, fmt.Errorf("nannyapi %s: more than %d pages", op, maxPages)
}
