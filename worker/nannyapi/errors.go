package nannyapi

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
)

// APIError is a non-success answer from NannyAPI. It carries the status and
// the backend's message: {"error":…} from custom handlers, or PocketBase's
// {"data":{field:{code,message}},"message":…,"status":N}.
type APIError struct {
	// Op names the call ("refresh", "ingest-metrics", "POST /api/investigations").
	Op string
	// Status is the HTTP status code.
	Status int
	// Message is the backend's error text, with any token we sent removed.
	Message string
	// Fields holds PocketBase validation errors by field name.
	Fields map[string]FieldError
	// AgentID is set by "device code already used".
	AgentID string
	// Err is a further cause, e.g. why a token refresh after a 401 failed.
	Err error
}

// FieldError is one PocketBase field validation error.
type FieldError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nannyapi %s: %d", e.Op, e.Status)
	if e.Message != "" {
		b.WriteString(" ")
		b.WriteString(e.Message)
	} else {
		b.WriteString(" ")
		b.WriteString(strings.ToLower(http.StatusText(e.Status)))
	}
	if len(e.Fields) > 0 {
		names := make([]string, 0, len(e.Fields))
		for name := range e.Fields {
			names = append(names, name)
		}
		sort.Strings(names)
		parts := make([]string, 0, len(names))
		for _, name := range names {
			parts = append(parts, name+": "+e.Fields[name].Code)
		}
		b.WriteString(" (")
		b.WriteString(strings.Join(parts, ", "))
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the further cause, if any.
func (e *APIError) Unwrap() error { return e.Err }

// Messages the backend uses that callers branch on.
const (
	MsgUnknownAction        = "unknown action"
	MsgDeviceNotAuthorized  = "device not authorized yet"
	MsgDeviceCodeExpired    = "device code expired"
	MsgDeviceCodeUsed       = "device code already used"
	MsgInvalidDeviceCode    = "invalid device code"
	MsgInvalidRefreshToken  = "invalid refresh token"
	MsgRefreshTokenExpired  = "refresh token expired"
	MsgRefreshTokenRequired = "refresh_token required"
)

// AsAPIError finds an *APIError in err's chain.
func AsAPIError(err error) (*APIError, bool) {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae, true
	}
	return nil, false
}

// StatusOf returns the HTTP status of an APIError in err's chain, or 0.
func StatusOf(err error) int {
	if ae, ok := AsAPIError(err); ok {
		return ae.Status
	}
	return 0
}

// IsUnknownAction reports a 400 "unknown action": the backend does not have
// the action (older NannyAPI for renew-refresh-token and register-with-token).
func IsUnknownAction(err error) bool {
	ae, ok := AsAPIError(err)
	return ok && ae.Status == http.StatusBadRequest && ae.Message == MsgUnknownAction
}

// HasMessage reports an APIError in err's chain with the given status (0 = any)
// and backend message.
func HasMessage(err error, status int, msg string) bool {
	ae, ok := AsAPIError(err)
	return ok && (status == 0 || ae.Status == status) && ae.Message == msg
}

// Errors of the client itself (no answer judged).
var (
	// ErrForeignOrigin: a URL from a record names another host; the client
	// does not fetch it and never sends the token there.
	ErrForeignOrigin = errors.New("url is not on the nannyapi origin")
	// ErrBadURL: a URL from a record is not a NannyAPI file path.
	ErrBadURL = errors.New("url is not a nannyapi file path")
	// ErrTooLarge: an answer exceeded its size cap.
	ErrTooLarge = errors.New("answer exceeds size cap")
	// ErrHeaderTimeout: no response header within the call's first-byte timeout.
	ErrHeaderTimeout = errors.New("timeout awaiting response headers")
	// ErrCallTimeout: the whole call exceeded its overall timeout.
	ErrCallTimeout = errors.New("call timeout")
	// ErrNoCredentials: an agent call on a client built without credentials.
	ErrNoCredentials = errors.New("no agent credentials configured")
	// ErrInvalidInput: a caller-supplied value would make a bad request.
	ErrInvalidInput = errors.New("invalid input")
)

// DecodeError is an answer that is not what the contract says.
type DecodeError struct {
	What string
	Err  error
}

func (e *DecodeError) Error() string { return "decode " + e.What + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *DecodeError) Unwrap() error { return e.Err }

func decodeErr(what string, err error) error { return &DecodeError{What: what, Err: err} }

func decodeErrf(what, format string, args ...any) error {
	return &DecodeError{What: what, Err: fmt.Errorf(format, args...)}
}

func invalidInput(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}
