// Package redact removes tokens, keys and credentials from text before it
// leaves the host: command output, trace output and file contents the worker
// sends to the model, and the argv the broker writes to its decision log.
//
// A secret is replaced by a marker, and the label around it is kept so the
// evidence stays readable: "password=[REDACTED]", "Authorization: Bearer
// [REDACTED]", "https://bob:[REDACTED]@host", "[REDACTED:github-token]".
// Values are redacted because of what labels them (a secret-looking key, an
// Authorization header, a password flag) or because their shape names them
// (a private-key block, a JWT, a GitHub or AWS key id). Unlabelled hex
// strings, UUIDs, digests and ids are evidence and are left alone.
//
// The functions never panic, never modify their input, and are idempotent:
// redacting redacted text changes nothing. Input without secrets is returned
// as is, without allocating.
package redact

import "unsafe"

// Marker replaces a secret whose label says what it is (password=[REDACTED]).
// A secret recognised by its shape carries its kind: "[REDACTED:jwt]".
const Marker = "[REDACTED]"

// markerPrefix starts every marker; a value that starts with it is already
// redacted.
const markerPrefix = "[REDACTED"

// String returns s with every secret it recognises replaced by a marker. It
// returns s itself when there is nothing to redact.
func String(s string) string {
	if s == "" {
		return s
	}
	// The scanner only reads its input, so viewing the string's bytes
	// without a copy is safe and keeps the no-secret path allocation free.
	in := unsafe.Slice(unsafe.StringData(s), len(s))
	out, changed := redact(in)
	if !changed {
		return s
	}
	// out was allocated by redact and is never written again.
	return unsafe.String(unsafe.SliceData(out), len(out))
}

// Bytes returns b with every secret it recognises replaced by a marker. When
// there is nothing to redact it returns b itself; otherwise a new slice. b is
// never modified.
func Bytes(b []byte) []byte {
	out, _ := redact(b)
	return out
}

// redact scans in and rebuilds it when something must go.
func redact(in []byte) ([]byte, bool) {
	if len(in) == 0 {
		return in, false
	}
	var s scanner
	s.in = in
	s.scan()
	if len(s.spans) == 0 {
		return in, false
	}
	return s.rewrite(), true
}
