package cmdline

import (
	"errors"
	"reflect"
	"testing"
)

// The parser's cases live with the policy (policy/cmdline_test.go and its
// fuzz corpus, through policy.ParseCommandLine); these pin the package's
// own surface, as the worker uses it.
func TestParse(t *testing.T) {
	got, err := Parse(`ps aux 2>/dev/null | sort -k3 -nr | head -n 5`)
	want := []Stage{{Argv: []string{"ps", "aux"}, StderrToNull: true}, {Argv: []string{"sort", "-k3", "-nr"}}, {Argv: []string{"head", "-n", "5"}}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse = %+v, %v; want %+v", got, err, want)
	}
}

func TestParseRefusesWithOffset(t *testing.T) {
	_, err := Parse(`cat /etc/hosts; id`)
	var se *SyntaxError
	if !errors.As(err, &se) || se.Offset != 14 || se.Token != ";" {
		t.Fatalf("Parse: %v (%+v)", err, se)
	}
}
