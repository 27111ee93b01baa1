package nannyapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ValidateScript asks the backend for a script's sha256 (agent).
func (c *Client) ValidateScript(ctx context.Context, scriptID string) (ScriptInfo, error) {
	if !ValidID(scriptID) {
		return ScriptInfo{}, invalidInput("script id %q malformed", scriptID)
	}
	resp, err := c.do(ctx, call{op: "GET /api/scripts/validate", method: http.MethodGet,
		url: c.apiURL("/api/scripts/" + scriptID + "/validate"), auth: true, idempotent: true})
	if err != nil {
		return ScriptInfo{}, err
	}
	return DecodeScriptInfo(resp.body)
}

// ResolveScriptURL turns a record's script_url into an absolute URL on the
// NannyAPI origin. Decision: a URL naming another origin is refused
// (ErrForeignOrigin) and never fetched, with or without the token: the
// backend serves scripts from /api/files/ on its own origin, and fetching
// elsewhere would let a record make the worker reach arbitrary hosts. The
// path must be a PocketBase file path /api/files/<collection>/<record>/<file>.
func (c *Client) ResolveScriptURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return nil, fmt.Errorf("script url: %w", ErrBadURL)
	}
	if u.Scheme != "" || u.Host != "" || u.User != nil {
		if u.User != nil || !c.sameOrigin(u) {
			return nil, fmt.Errorf("script url %s: %w", redactURL(u), ErrForeignOrigin)
		}
		p := strings.TrimPrefix(u.Path, c.ep.base.Path)
		if c.ep.base.Path != "" && p == u.Path {
			return nil, fmt.Errorf("script url %s: %w", redactURL(u), ErrBadURL)
		}
		u.Path = p
	}
	if _, err := ScriptIDFromURL(u.Path); err != nil {
		return nil, err
	}
	return c.apiURL(u.Path), nil
}

// ScriptIDFromURL returns the record id in /api/files/<collection>/<record>/<file>.
func ScriptIDFromURL(p string) (string, error) {
	if q, _, ok := strings.Cut(p, "?"); ok {
		p = q
	}
	if path.Clean(p) != p || !strings.HasPrefix(p, "/api/files/") {
		return "", fmt.Errorf("script url path %q: %w", cleanText(p, 120), ErrBadURL)
	}
	parts := strings.Split(strings.TrimPrefix(p, "/api/files/"), "/")
	if len(parts) != 3 || !ValidID(parts[0]) || !ValidID(parts[1]) || parts[2] == "" || !printable(parts[2], 255) {
		return "", fmt.Errorf("script url path %q: %w", cleanText(p, 120), ErrBadURL)
	}
	return parts[1], nil
}

// DownloadScript fetches a patch script named by a record's script_url,
// capped at MaxScriptBytes. See ResolveScriptURL for what is refused. The
// caller compares the bytes' sha256 with ValidateScript's.
func (c *Client) DownloadScript(ctx context.Context, scriptURL string) ([]byte, error) {
	u, err := c.ResolveScriptURL(scriptURL)
	if err != nil {
		return nil, fmt.Errorf("nannyapi download script: %w", err)
	}
	resp, err := c.do(ctx, call{op: "download script", method: http.MethodGet, url: u, auth: true,
		idempotent: true, maxBytes: c.cfg.MaxScriptBytes})
	if err != nil {
		return nil, err
	}
	return resp.body, nil
}

// UploadPatchResult posts a patch run's result as multipart form data:
// exit_code, lxc_id (only when set), and file parts stdout_file and
// stderr_file. Uploading the same result again overwrites it, so it is
// retried on 502/503/504.
func (c *Client) UploadPatchResult(ctx context.Context, operationID string, r PatchResult) error {
	const op = "POST /api/patches/result"
	if !ValidID(operationID) {
		return invalidInput("operation id %q malformed", operationID)
	}
	if r.LXCID != "" && !ValidID(r.LXCID) {
		return invalidInput("lxc id %q malformed", r.LXCID)
	}
	body, ctype, err := patchResultForm(r)
	if err != nil {
		return fmt.Errorf("nannyapi %s: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPost,
		url: c.apiURL("/api/patches/" + operationID + "/result"), body: body, ctype: ctype,
		auth: true, idempotent: true, timeout: c.cfg.UploadTimeout, headerTimeout: c.cfg.UploadTimeout})
	if err != nil {
		return err
	}
	return DecodeStatusUpdated(resp.body)
}

func patchResultForm(r PatchResult) ([]byte, string, error) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	if err := w.WriteField("exit_code", strconv.Itoa(r.ExitCode)); err != nil {
		return nil, "", err
	}
	if r.LXCID != "" {
		if err := w.WriteField("lxc_id", r.LXCID); err != nil {
			return nil, "", err
		}
	}
	for _, f := range []struct {
		field, name string
		data        []byte
	}{{"stdout_file", "stdout.txt", r.Stdout}, {"stderr_file", "stderr.txt", r.Stderr}} {
		part, err := w.CreateFormFile(f.field, f.name)
		if err != nil {
			return nil, "", err
		}
		if _, err := part.Write(f.data); err != nil {
			return nil, "", err
		}
	}
	if err := w.Close(); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), w.FormDataContentType(), nil
}

// SetPatchStatus PATCHes a patch operation's status (the backend sets
// started_at for "running"). Retried on 502/503/504.
func (c *Client) SetPatchStatus(ctx context.Context, operationID, status string) error {
	return c.UpdatePatch(ctx, operationID, PatchUpdate{Status: status})
}

// PatchUpdate is what an agent may PATCH on its patch operation.
type PatchUpdate struct {
	Status string `json:"status"`
	// ErrorMsg says why the operation failed, in words for the operator
	// reading the portal; the backend stores it when it is not empty.
	ErrorMsg string `json:"error_msg,omitempty"`
}

// MaxErrorMsg bounds the error_msg the worker sends.
const MaxErrorMsg = 2000

// UpdatePatch PATCHes /api/patches?id=… with a status and, for a failure,
// error_msg (clipped to MaxErrorMsg bytes). Retried on 502/503/504.
func (c *Client) UpdatePatch(ctx context.Context, operationID string, u PatchUpdate) error {
	const op = "PATCH /api/patches"
	if !ValidID(operationID) {
		return invalidInput("operation id %q malformed", operationID)
	}
	if !ValidID(u.Status) {
		return invalidInput("status %q", u.Status)
	}
	u.ErrorMsg = cleanLines(u.ErrorMsg, MaxErrorMsg)
	body, err := json.Marshal(u)
	if err != nil {
		return fmt.Errorf("nannyapi %s: encode: %w", op, err)
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodPatch,
		url: c.apiURL("/api/patches?id=" + url.QueryEscape(operationID)), body: body, ctype: contentJSON,
		auth: true, idempotent: true})
	if err != nil {
		return err
	}
	return DecodeSuccess(resp.body)
}

// cleanLines is cleanText that keeps line breaks: an error_msg may carry
// a policy snippet to add.
func cleanLines(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if r != '\n' && unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
