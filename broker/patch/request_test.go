package patch

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	cases := []struct {
		mode Mode
		excl []string
		want []string
	}{
		{DryRun, nil, []string{"--dry-run"}},
		{Apply, nil, nil},
		{DryRun, []string{"linux-image-amd64", "openssl"}, []string{"--dry-run", "--exclude", "linux-image-amd64,openssl"}},
		{Apply, []string{"libc6:amd64"}, []string{"--exclude", "libc6:amd64"}},
	}
	for _, c := range cases {
		if got := Args(c.mode, c.excl); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Args(%s, %v) = %q, want %q", c.mode, c.excl, got, c.want)
		}
	}
}

func TestCheckShape(t *testing.T) {
	ok := request("dc1h4ypytwvcu0e", "#!/bin/sh\necho hi\n", DryRun, "linux-image-generic", "g++", "libstdc++6:i386", "python3.11", "NetworkManager")
	if err := CheckShape(ok, 1<<20, false); err != nil {
		t.Fatalf("a good request refused: %v", err)
	}
	bad := map[string]func(r *Request){
		"empty op":          func(r *Request) { r.OperationID = "" },
		"op with slash":     func(r *Request) { r.OperationID = "../x" },
		"op too long":       func(r *Request) { r.OperationID = strings.Repeat("a", 65) },
		"short sum":         func(r *Request) { r.SHA256 = "abc" },
		"mode":              func(r *Request) { r.Mode = "--apply" },
		"empty script":      func(r *Request) { r.Script = nil },
		"big script":        func(r *Request) { r.Script = make([]byte, 1<<20+1) },
		"comma":             func(r *Request) { r.Exclusions = []string{"a,b"} },
		"option":            func(r *Request) { r.Exclusions = []string{"--allow-downgrades"} },
		"space":             func(r *Request) { r.Exclusions = []string{"a b"} },
		"shell":             func(r *Request) { r.Exclusions = []string{"a;reboot"} },
		"empty name":        func(r *Request) { r.Exclusions = []string{""} },
		"newline":           func(r *Request) { r.Exclusions = []string{"a\nb"} },
		"glob":              func(r *Request) { r.Exclusions = []string{"linux-*"} },
		"too many":          func(r *Request) { r.Exclusions = make([]string, 257) },
		"long package name": func(r *Request) { r.Exclusions = []string{strings.Repeat("a", 129)} },
		"long script name":  func(r *Request) { r.Name = strings.Repeat("a", 256) },
	}
	for name, mut := range bad {
		r := ok
		mut(&r)
		if err := CheckShape(r, 1<<20, false); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	check := ok
	check.Script = nil
	if err := CheckShape(check, 1<<20, true); err != nil {
		t.Errorf("check-only request refused: %v", err)
	}
	if err := CheckShape(ok, 1<<20, true); !errors.Is(err, ErrInvalid) {
		t.Errorf("check-only with a script: %v", err)
	}
}

func TestVerify(t *testing.T) {
	if _, err := Verify([]byte("a"), Sum([]byte("a"))); err != nil {
		t.Error(err)
	}
	if _, err := Verify([]byte("a"), strings.ToUpper(Sum([]byte("a")))); err != nil {
		t.Errorf("upper-case hex refused: %v", err)
	}
	if _, err := Verify([]byte("a"), Sum([]byte("b"))); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("mismatch: %v", err)
	}
}
