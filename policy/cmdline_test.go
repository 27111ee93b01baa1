package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseCommandLineAccepts(t *testing.T) {
	cases := []struct {
		in   string
		want []Stage
	}{
		{`cat /etc/hosts`, []Stage{{Argv: []string{"cat", "/etc/hosts"}}}},
		{"  cat\t/etc/hosts  ", []Stage{{Argv: []string{"cat", "/etc/hosts"}}}},
		{`grep 'a b' "c d" e\ f`, []Stage{{Argv: []string{"grep", "a b", "c d", "e f"}}}},
		{`grep '' ""`, []Stage{{Argv: []string{"grep", "", ""}}}},
		{`grep 'it'\''s'`, []Stage{{Argv: []string{"grep", "it's"}}}},
		{`grep "a\"b\\c\$d\` + "`" + `e\x"`, []Stage{{Argv: []string{"grep", "a\"b\\c$d`e\\x"}}}},
		{`grep '$HOME;|&><*?[~#(){}'`, []Stage{{Argv: []string{"grep", "$HOME;|&><*?[~#(){}"}}}},
		{`grep \*.log \$x \~`, []Stage{{Argv: []string{"grep", "*.log", "$x", "~"}}}},
		{`find /var/log -name '*.log' \( -o \)`, []Stage{{Argv: []string{"find", "/var/log", "-name", "*.log", "(", "-o", ")"}}}},
		{`grep a#b x=y`, []Stage{{Argv: []string{"grep", "a#b", "x=y"}}}},
		{`grep ü€ 'ä'`, []Stage{{Argv: []string{"grep", "ü€", "ä"}}}},
		{`ps aux | sort -k3 -nr | head`, []Stage{{Argv: []string{"ps", "aux"}}, {Argv: []string{"sort", "-k3", "-nr"}}, {Argv: []string{"head"}}}},
		{`ps aux|sort|head`, []Stage{{Argv: []string{"ps", "aux"}}, {Argv: []string{"sort"}}, {Argv: []string{"head"}}}},
		{`a "|" '|'`, []Stage{{Argv: []string{"a", "|", "|"}}}},
		// The three accepted redirections, anywhere in a stage, applied in
		// order as a shell would.
		{`cat /x 2>/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StderrToNull: true}}},
		{`cat 2>/dev/null /x`, []Stage{{Argv: []string{"cat", "/x"}, StderrToNull: true}}},
		{`cat /x 2> /dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StderrToNull: true}}},
		{`cat /x >/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StdoutToNull: true}}},
		{`cat /x>/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StdoutToNull: true}}},
		{`cat /x 1>/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StdoutToNull: true}}},
		{`cat /x 2>&1`, []Stage{{Argv: []string{"cat", "/x"}, StderrToStdout: true}}},
		{`cat /x 2>&1 | grep e`, []Stage{{Argv: []string{"cat", "/x"}, StderrToStdout: true}, {Argv: []string{"grep", "e"}}}},
		{`cat /x >/dev/null 2>&1`, []Stage{{Argv: []string{"cat", "/x"}, StdoutToNull: true, StderrToNull: true}}},
		{`cat /x 2>&1 >/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StdoutToNull: true, StderrToStdout: true}}},
		{`cat /x 2>/dev/null 2>&1`, []Stage{{Argv: []string{"cat", "/x"}, StderrToStdout: true}}},
		{`cat /x 2>&1 2>/dev/null`, []Stage{{Argv: []string{"cat", "/x"}, StderrToNull: true}}},
		{`cat /x 2>/dev/null|head`, []Stage{{Argv: []string{"cat", "/x"}, StderrToNull: true}, {Argv: []string{"head"}}}},
		{`echo 12>/dev/null`, nil},
		{`cat "2">/dev/null`, []Stage{{Argv: []string{"cat", "2"}, StdoutToNull: true}}},
	}
	for _, c := range cases {
		got, err := ParseCommandLine(c.in)
		if c.want == nil {
			if err == nil {
				t.Errorf("ParseCommandLine(%q) = %+v, want a refusal", c.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseCommandLine(%q): %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseCommandLine(%q) = %+v, want %+v", c.in, got, c.want)
		}
	}
}

func TestParseCommandLineRefuses(t *testing.T) {
	cases := []struct {
		in     string
		offset int
		token  string
		reason string
	}{
		{`cat /etc/hosts; id`, 14, ";", "command chaining is not supported; send each command separately"},
		{`cat /x && id`, 7, "&&", "chaining"},
		{`cat /x || id`, 7, "||", "chaining"},
		{`cat /x & id`, 7, "&", "background"},
		{`cat /x &>/dev/null`, 7, "&>", "only 2>/dev/null"},
		{`cat /x |& grep a`, 7, "|&", "2>&1 |"},
		{`cat /x > /tmp/out`, 7, "> /tmp/out", "writing files is not allowed"},
		{`cat /x >/tmp/out`, 7, ">/tmp/out", "writing files is not allowed"},
		{`cat /x 2>/tmp/err`, 7, "2>/tmp/err", "writing files"},
		{`cat /x >> /tmp/out`, 7, ">>", "appending"},
		{`cat /x >| /tmp/out`, 7, ">|", "writing files"},
		{`cat /x >/dev/nullx`, 7, ">/dev/nullx", "writing files"},
		{`cat /x >'/dev/null'`, 7, ">'/dev/null'", "writing files"},
		{`cat /x 3>/dev/null`, 7, "3>", "only 2>/dev/null"},
		{`cat /x 2>&2`, 7, "2>&2", "only 2>&1"},
		{`cat /x >&2`, 7, ">&2", "only 2>&1"},
		{`cat /x 2>&-`, 7, "2>&-", "only 2>&1"},
		{`cat /x >`, 7, ">", "needs a target"},
		{`cat < /etc/hosts`, 4, "<", "input redirection"},
		{`cat <<EOF`, 4, "<<", "here-documents"},
		{`cat <<<x`, 4, "<<", "here-documents"},
		{`diff <(ls) /x`, 5, "<(", "process substitution"},
		{`cat $(id)`, 4, "$(", "command substitution"},
		{"cat `id`", 4, "`", "command substitution"},
		{`cat $HOME/x`, 4, "$", "variable expansion"},
		{`cat ${HOME}`, 4, "${", "variable expansion"},
		{`cat "$HOME"`, 5, "$", "even inside double quotes"},
		{"cat \"`id`\"", 5, "`", "even inside double quotes"},
		{`cat $'\x41'`, 4, "$'", "quoting"},
		{`cat ~/x`, 4, "~", "not expanded"},
		{`cat a=~/x`, 6, "~", "not expanded"},
		{`(cat /x)`, 0, "(", "subshells"},
		{`{ cat /x; }`, 0, "{", "brace"},
		{`cat /x/{a,b}`, 7, "{", "brace"},
		{`cat /var/log/*.log`, 13, "*", "unquoted glob"},
		{`cat /x?`, 6, "?", "unquoted glob"},
		{`cat /x[12]`, 6, "[", "unquoted glob"},
		{"cat /x\nid", 6, "\n", "newline"},
		{"cat /x\r\nid", 6, "\r", "newline"},
		{"cat 'a\nb'", 6, "\n", "newline"},
		{"cat /x \\\n/y", 8, "\n", "line continuations"},
		{"cat \x00", 4, "\x00", "control characters"},
		{"cat \x1b[31m", 4, "\x1b", "control characters"},
		{"cat '\x07'", 5, "\x07", "control characters"},
		{"cat \"\x7f\"", 5, "\x7f", "control characters"},
		{"cat a\u200bb", 5, "\u200b", "invisible formatting"},
		{"cat '\u202e'", 5, "\u202e", "invisible formatting"},
		{"cat a\u00a0b", 5, "\u00a0", "non-ASCII space"},
		{"cat \xff", 4, "\xff", "invalid UTF-8"},
		{"\u0441at /etc/hosts", 0, "\u0441at", "plain ASCII"},
		{"c\u0430t /etc/hosts", 0, "c\u0430t", "plain ASCII"},
		{"ps | \u0441at", 5, "\u0441at", "plain ASCII"},
		{`cat 'unterminated`, 4, "'", "unterminated single quote"},
		{`cat "unterminated`, 4, `"`, "unterminated double quote"},
		{`cat /x \`, 7, `\`, "trailing backslash"},
		{`cat /x # comment`, 7, "#", "comments"},
		{`! cat /x`, 0, "!", "negation"},
		{`FOO=bar cat /x`, 0, "FOO=bar", "environment assignments"},
		{`FOO='bar baz' cat /x`, 0, "FOO=bar baz", "environment assignments"},
		{`| cat`, 0, "|", "empty pipeline stage"},
		{`'' /x`, 0, "''", "empty program name"},
		{`ps | "" x`, 5, `""`, "empty program name"},
		{`cat /x |`, 8, "", "empty pipeline stage"},
		{`cat /x | | grep`, 9, "|", "empty pipeline stage"},
		{`2>/dev/null | cat`, 12, "|", "empty pipeline stage"},
		{``, 0, "", "empty command"},
		{`   `, 0, "   ", "empty command"},
		{`>/dev/null`, 0, ">/dev/null", "needs a command"},
	}
	for _, c := range cases {
		got, err := ParseCommandLine(c.in)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("ParseCommandLine(%q) = %+v, %v; want a *SyntaxError", c.in, got, err)
			continue
		}
		if se.Offset != c.offset || se.Token != c.token || !strings.Contains(se.Reason, c.reason) {
			t.Errorf("ParseCommandLine(%q) = offset %d token %q reason %q; want offset %d token %q reason ~%q",
				c.in, se.Offset, se.Token, se.Reason, c.offset, c.token, c.reason)
		}
		if !strings.HasPrefix(err.Error(), "denied: ") {
			t.Errorf("error %q should read as a denial", err)
		}
	}
	got := (&SyntaxError{Offset: 12, Token: ";", Reason: "command chaining is not supported; send each command separately"}).Error()
	if want := `denied: ";" at offset 12: command chaining is not supported; send each command separately`; got != want {
		t.Errorf("SyntaxError text %q, want %q", got, want)
	}
	if _, err := ParseCommandLine(strings.Repeat("a", MaxCommandLine+1)); err == nil {
		t.Error("an oversized line was accepted")
	}
}

// TestQuoteArgvRoundTrip: what QuoteArgv writes parses back to the argv.
func TestQuoteArgvRoundTrip(t *testing.T) {
	for _, argv := range [][]string{
		{"cat", "/etc/hosts"},
		{"grep", "it's", "", "a b", `\`, "$HOME", "*", "~", "#", "2", "|", ">", "ü"},
		{"FOO=bar", "x"},
		{"--lines=5", "-n5"},
	} {
		line := QuoteArgv(argv)
		got, err := ParseCommandLine(line)
		if err != nil || len(got) != 1 || !reflect.DeepEqual(got[0].Argv, argv) {
			t.Errorf("QuoteArgv(%q) = %q parses to %+v, %v", argv, line, got, err)
		}
	}
}
