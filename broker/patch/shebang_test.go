package patch

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseShebang(t *testing.T) {
	good := map[string]shebang{
		"#!/bin/sh\n":               {interp: "/bin/sh"},
		"#! /bin/bash -e\necho\n":   {interp: "/bin/bash", arg: "-e"},
		"#!/bin/sh\t-eu \r\n":       {interp: "/bin/sh", arg: "-eu"},
		"#!/usr/bin/env bash\n":     {interp: "/usr/bin/env", arg: "bash"},
		"#!/usr/bin/env  -S a b\nx": {interp: "/usr/bin/env", arg: "-S a b"},
	}
	for in, want := range good {
		got, err := parseShebang([]byte(in))
		if err != nil || got != want {
			t.Errorf("parseShebang(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "echo hi\n", "#!/bin/sh", "#!\n", "#!   \n", " #!/bin/sh\n", "#!/bin/sh\x00\n",
		"#!/bin/sh \xe2\x80\xae\n", "#!/" + string(make([]byte, 300)) + "\n"} {
		if sb, err := parseShebang([]byte(in)); !errors.Is(err, ErrRefused) {
			t.Errorf("parseShebang(%q) = %+v, %v; want a refusal", in, sb, err)
		}
	}
}

func TestInterpreterArgv(t *testing.T) {
	bin := t.TempDir()
	for _, name := range []string{"bash", "python3"} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s := Settings{Interpreters: []string{"/bin/sh", filepath.Join(bin, "bash")}, Path: "/nonexistent:" + bin}
	good := map[shebang][]string{
		{interp: "/bin/sh"}:                     {"/bin/sh", "/dev/fd/3"},
		{interp: "/bin/sh", arg: "-eu"}:         {"/bin/sh", "-eu", "/dev/fd/3"},
		{interp: "/usr/bin/env", arg: "bash"}:   {filepath.Join(bin, "bash"), "/dev/fd/3"},
		{interp: "/bin/env", arg: "bash"}:       {filepath.Join(bin, "bash"), "/dev/fd/3"},
		{interp: filepath.Join(bin, "bash")}:    {filepath.Join(bin, "bash"), "/dev/fd/3"},
		{interp: "/bin/sh", arg: "--posix"}:     {"/bin/sh", "--posix", "/dev/fd/3"},
		{interp: "/bin/sh", arg: "-o-pipefail"}: {"/bin/sh", "-o-pipefail", "/dev/fd/3"},
	}
	for sb, want := range good {
		got, err := interpreterArgv(sb, s, "/dev/fd/3")
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: %q %v, want %q", sb, got, err, want)
		}
	}
	for _, sb := range []shebang{
		{interp: "/bin/bash"},                       // not in the list
		{interp: "/bin/../bin/sh"},                  // not clean
		{interp: "/usr/bin/env", arg: "python3"},    // found, not allowed
		{interp: "/usr/bin/env", arg: "perl"},       // not on PATH
		{interp: "/usr/bin/env", arg: "-S bash -e"}, // env options
		{interp: "/usr/bin/env", arg: "../bash"},
		{interp: "/bin/sh", arg: "-c 'rm -rf /'"},
		{interp: "/bin/sh", arg: "x"},
	} {
		if got, err := interpreterArgv(sb, s, "/dev/fd/3"); !errors.Is(err, ErrRefused) {
			t.Errorf("%+v: %q %v, want a refusal", sb, got, err)
		}
	}
}
