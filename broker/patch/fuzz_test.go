package patch

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseShebang: any first line is either refused or yields a plain
// ASCII interpreter and argument without blanks around them.
func FuzzParseShebang(f *testing.F) {
	for _, s := range []string{"#!/bin/sh\n", "#! /bin/bash -e\n", "#!/usr/bin/env bash\n", "echo\n", "#!\t/bin/sh\t-x\t\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		sb, err := parseShebang(script)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("error not a refusal: %v", err)
			}
			return
		}
		if sb.interp == "" || strings.ContainsAny(sb.interp, " \t\n\r") || strings.Trim(sb.arg, " \t") != sb.arg {
			t.Fatalf("parsed %+v", sb)
		}
		for _, s := range []string{sb.interp, sb.arg} {
			for i := 0; i < len(s); i++ {
				if s[i] > 0x7e || (s[i] < 0x20 && s[i] != '\t') {
					t.Fatalf("non-printable byte in %+v", sb)
				}
			}
		}
		s := Settings{Interpreters: []string{"/bin/sh"}, Path: "/nonexistent"}
		if argv, err := interpreterArgv(sb, s, "/dev/fd/3"); err == nil && (argv[0] != "/bin/sh" || argv[len(argv)-1] != "/dev/fd/3" || len(argv) > 3) {
			t.Fatalf("argv %q", argv)
		}
	})
}

// FuzzDecodeRecord: a record file from the state directory decodes into
// a checked record or an error, never a panic.
func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte(`{"operation_id":"dc1h4ypytwvcu0e","sha256":"89c839cc25343154e994e43a1244cb561842101d0482948d6873670d4afe493e","mode":"dry-run","rule":"apt","argv":["/bin/sh","/dev/fd/3","--dry-run"],"runner":"broker","broker_pid":42,"state":"finished","exit_code":0,"started_at":"2026-01-02T03:04:05Z","finished_at":"2026-01-02T03:04:07Z"}`))
	f.Add([]byte(`{"operation_id":"../x"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			return
		}
		if !ValidOperationID(r.OperationID) || !validSum(r.SHA256) || !r.State.valid() {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// FuzzCheckShape: whatever exclusions a request carries, the ones accepted
// turn into exactly two arguments that cannot be taken for options.
func FuzzCheckShape(f *testing.F) {
	f.Add("dc1h4ypytwvcu0e", "linux-image-generic", "openssl")
	f.Add("x", "-rf", "a,b")
	f.Add("op", "a b", "$(reboot)")
	f.Fuzz(func(t *testing.T, op, a, b string) {
		r := Request{OperationID: op, Script: []byte("#!/bin/sh\n"), SHA256: Sum([]byte("#!/bin/sh\n")), Mode: Apply, Exclusions: []string{a, b}}
		if err := CheckShape(r, 1<<20, false); err != nil {
			return
		}
		args := Args(r.Mode, r.Exclusions)
		if len(args) != 2 || args[0] != "--exclude" || strings.HasPrefix(args[1], "-") || strings.Count(args[1], ",") != 1 {
			t.Fatalf("args %q from %q", args, r.Exclusions)
		}
		if strings.ContainsAny(op, "/.") {
			t.Fatalf("operation id %q accepted", op)
		}
	})
}
