package policy

import (
	"reflect"
	"strings"
	"testing"
)

func TestGetoptGrammar(t *testing.T) {
	p := loadExample(t)
	runDecisionCases(t, p, []decisionCase{
		// Flags, clusters and attached values, as getopt reads them.
		{`grep -i error /var/log/syslog`, true, "grep"},
		{`grep -ic error /var/log/syslog`, true, "grep"},
		{`grep -inm5 error /var/log/syslog`, true, "grep"},
		{`grep -inm 5 error /var/log/syslog`, true, "grep"},
		{`grep -im0 error /var/log/syslog`, false, "below the minimum 1"},
		{`grep -iz error`, false, "option -z is not allowed"},
		{`head -n5 /var/log/syslog`, true, "head"},
		{`head -n 5 /var/log/syslog`, true, "head"},
		{`head --lines=5 /var/log/syslog`, true, "head"},
		{`head --lines 5 /var/log/syslog`, true, "head"},
		{`head -n`, false, "needs a value"},
		{`head --lines`, false, "needs a value"},
		{`head -n x /var/log/syslog`, false, "not a whole number"},
		{`head -c 1K /var/log/syslog`, true, "head"},
		{`head -c 2M /var/log/syslog`, false, "above the allowed 1MiB"},
		// Old-style -NUM only as the first argument.
		{`head -5 /var/log/syslog`, true, "head"},
		{`tail -50 /var/log/syslog`, true, "tail"},
		{`head /var/log/syslog -5`, false, "option -5 is not allowed"},
		{`tail -n +100 /var/log/syslog`, true, "tail"},
		{`head -n +100 /var/log/syslog`, false, "leading + is not allowed"},
		// Long options are exact: GNU abbreviations are refused.
		{`grep --ignore-case error`, true, "grep"},
		{`grep --ignore error`, false, "abbreviations are refused"},
		{`journalctl --vac=1s`, false, "abbreviations are refused"},
		{`journalctl --vacuum-time=1s`, false, "changes the journal"},
		{`journalctl --no-pager=yes`, false, "takes no value"},
		// "--" ends options; later dashes are operands.
		{`grep -- -foo /var/log/syslog`, true, "grep"},
		{`grep -i -- -foo`, true, "grep"},
		{`grep -- -i`, true, "grep"},
		{`grep foo -- /var/log/syslog -i`, false, `"-i"`},
		{`grep foo -- /var/log/syslog`, true, "grep"},
		// permute: options may follow operands (GNU getopt).
		{`grep error /var/log/syslog -i`, true, "grep"},
		{`journalctl --no-pager -u nginx -n 20`, true, "journalctl"},
		{`getent passwd root`, true, "getent"},
		{`getent passwd -s files`, false, "option -s is not allowed"},
		{`getent -- passwd -s`, true, "getent"},
		// An optional value binds only when attached.
		{`grep --color=never error /var/log/syslog`, true, "grep"},
		{`grep --color error /var/log/syslog`, true, "grep"},
		{`grep --color=rainbow error`, false, "not one of"},
		{`journalctl -b`, true, "journalctl"},
		{`journalctl -b-1`, true, "journalctl"},
		{`journalctl --boot=-1`, true, "journalctl"},
		// -e fills the pattern operand; the next operand is the file.
		{`grep -e error /var/log/syslog`, true, "grep"},
		{`grep -e error -e warn /var/log/syslog`, true, "grep"},
		{`grep -e error /var/log/syslog /var/log/messages`, false, "too many operands"},
		// Recursive readers are refused by not being listed (and say why).
		{`grep -r password /etc`, false, "recursive reading"},
		{`grep -R password /etc`, false, "recursive reading"},
		{`grep -ri password /etc`, false, "recursive reading"},
		{`grep --recursive password /etc`, false, "recursive reading"},
		{`grep -d recurse password /etc`, false, "recursive reading"},
		{`grep --recu password /etc`, false, "abbreviations are refused"},
		{`ls -R /etc`, false, "walks whole trees"},
		{`ls -laR /etc`, false, "walks whole trees"},
		// Operand counts and types.
		{`grep`, false, "missing operand: pattern"},
		{`cat`, false, "missing operand: file"},
		{`cat /var/log/syslog /var/log/messages`, true, "cat"},
		{`getent shadow root`, false, "not one of"},
		{`getent`, false, "missing operand: database"},
		{`id root`, true, "id"},
		{`id root daemon`, false, "too many operands"},
		{`ping -c 1 127.0.0.1`, true, "ping"},
		{`ping -c 1 1.1.1.1`, false, "not a loopback address"},
		{`ping -c 9 127.0.0.1`, false, "above the maximum 5"},
		// Subcommands, with options before, between and after (permute).
		{`systemctl status nginx`, true, "systemctl-status"},
		{`systemctl --no-pager status nginx ssh`, true, "systemctl-status"},
		{`systemctl status --no-pager -n 5 nginx`, true, "systemctl-status"},
		{`systemctl list-units --failed`, true, "systemctl-list-units"},
		{`systemctl list-timers`, true, "systemctl-list-units"},
		{`systemctl restart nginx`, false, "this subcommand is not allowed (allowed: status; list-units)"},
		{`systemctl --no-pager`, false, "missing subcommand"},
		{`systemctl status 'ssh*'`, false, "no globs"},
		{`systemctl list-units --state=failed`, true, "systemctl-list-units"},
	})
}

func TestGetoptWithoutPermute(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
commands:
  - id: posix
    program: /usr/bin/posix
    options:
      - {opt: -v}
      - {opt: -n, value: {type: number}}
    operands:
      - {type: string, pattern: '.*', count: 0-3}
`)
	runDecisionCases(t, p, []decisionCase{
		{`posix -v a b`, true, "posix"},
		{`posix -vn3 a`, true, "posix"},
		{`posix a -v`, false, `"-v" after an operand`},
		{`posix a -- -v`, false, `"--" after an operand`},
		{`posix -- -v a`, true, "posix"},
		{`posix a b c d`, false, "too many operands"},
	})
	d := argvDecision(p, "posix", "--", "-v", "-n")
	if !d.Allowed || !reflect.DeepEqual(d.Argv, []string{"/usr/bin/posix", "--", "-v", "-n"}) {
		t.Errorf("after --, dashes are operands: %+v", d)
	}
}

func TestGetoptPathOperands(t *testing.T) {
	p := mustLoadYAML(t, `
version: 1
commands:
  - id: reader
    program: /usr/bin/reader
    permute: true
    options:
      - {opt: [-f, --file], value: {type: path, roots: [/var/log], open: fd}}
      - {opt: -v}
    operands:
      - {type: path, roots: [/etc], open: check, count: 0-2}
`)
	cases := []struct {
		argv []string
		want []PathOperand
	}{
		{[]string{"reader", "-f/var/log/a"}, []PathOperand{{Index: 1, Prefix: "-f", Path: "/var/log/a", Roots: []string{"/var/log"}, Open: OpenFD}}},
		{[]string{"reader", "-vf/var/log/a"}, []PathOperand{{Index: 1, Prefix: "-vf", Path: "/var/log/a", Roots: []string{"/var/log"}, Open: OpenFD}}},
		{[]string{"reader", "--file=/var/log/a"}, []PathOperand{{Index: 1, Prefix: "--file=", Path: "/var/log/a", Roots: []string{"/var/log"}, Open: OpenFD}}},
		{[]string{"reader", "--file", "/var/log/a", "/etc/hosts"}, []PathOperand{
			{Index: 2, Path: "/var/log/a", Roots: []string{"/var/log"}, Open: OpenFD},
			{Index: 3, Path: "/etc/hosts", Roots: []string{"/etc"}, Open: OpenCheckOnly}}},
		{[]string{"/usr/bin/reader", "/etc/hosts", "-f", "/var/log/b"}, []PathOperand{
			{Index: 3, Path: "/var/log/b", Roots: []string{"/var/log"}, Open: OpenFD},
			{Index: 1, Path: "/etc/hosts", Roots: []string{"/etc"}, Open: OpenCheckOnly}}},
	}
	for _, c := range cases {
		d := argvDecision(p, c.argv...)
		if !d.Allowed {
			t.Errorf("%q: denied: %s", c.argv, d.Reason)
			continue
		}
		if !reflect.DeepEqual(d.Paths, c.want) {
			t.Errorf("%q: paths %+v, want %+v", c.argv, d.Paths, c.want)
		}
		if d.Argv[0] != "/usr/bin/reader" {
			t.Errorf("%q: argv[0] %q, want the rule's program", c.argv, d.Argv[0])
		}
	}
	for _, argv := range [][]string{
		{"reader", "-f", "var/log/a"},
		{"reader", "--file=/etc/hosts"},
		{"reader", "/var/log/a"},
		{"reader", "-f"},
	} {
		if d := argvDecision(p, argv...); d.Allowed {
			t.Errorf("%q: allowed, want denied", argv)
		}
	}
	if d := argvDecision(p, "reader", "-f", "var/log/a"); !strings.Contains(d.Reason, "absolute path") {
		t.Errorf("relative path reason %q should ask for an absolute path", d.Reason)
	}
}
