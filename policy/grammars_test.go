package policy

import "testing"

func TestPSGrammar(t *testing.T) {
	p := loadExample(t)
	runDecisionCases(t, p, []decisionCase{
		// BSD letters, SysV clusters and GNU long options.
		{`ps aux`, true, "ps"},
		{`ps axjf`, true, "ps"},
		{`ps -Af`, true, "ps"},
		{`ps -AF`, true, "ps"},
		{`ps -Ao pid,comm,%cpu`, true, "ps"},
		{`ps -A -o pid,user,etime,args`, true, "ps"},
		{`ps aux --sort=-%cpu`, true, "ps"},
		{`ps aux --sort -%mem`, true, "ps"},
		{`ps -p 1,2,3 -o pid,comm`, true, "ps"},
		{`ps -p1`, true, "ps"},
		{`ps u 1`, true, "ps"},
		{`ps opid,comm`, true, "ps"},
		{`ps -u root`, true, "ps"},
		{`ps -o pid,bogus`, false, "not one of"},
		{`ps --sort=-%cpuu aux`, false, "not one of"},
		{`ps -p abc`, false, "not a process id"},
		{`ps axz`, false, "option z is not allowed"},
		{`ps -Z`, false, "option -Z is not allowed"},
		{`ps --cols 500`, false, "option --cols is not allowed"},
		{`ps +1`, false, "ps cannot take"},
		{`ps -- aux`, false, "ps cannot take"},
		{`ps 1 2`, false, "too many operands"},
		// BSD e prints every environment: refused wherever ps would read it.
		{`ps e`, false, "BSD e prints"},
		{`ps auxe`, false, "BSD e prints"},
		{`ps eww`, false, "BSD e prints"},
		// SysV -e is refused too: if the SysV parse fails, ps re-reads it as
		// BSD e ("ps -ef -x" prints every environment).
		{`ps -ef`, false, "use -A"},
		{`ps -Ae`, false, "use -A"},
		// Values of SysV options become BSD words in the second reading.
		{`ps -A -u e`, false, "write -A instead of -e"},
		{`ps -A -u eve`, false, `re-reads "eve"`},
		{`ps -A -C sleep`, false, `re-reads "sleep"`},
		{`ps -A -C top`, true, "ps"},
		// ...unless the second reading also takes them as a value: BSD o, p,
		// U, k, O, q and t read the next argument (or the rest of theirs).
		{`ps -A -o user,etime`, true, "ps"},
		{`ps -A -U eve`, true, "ps"},
		{`ps -A --user eve`, true, "ps"},
		{`ps -A --sort=-etime`, true, "ps"},
	})
}

func TestFindGrammar(t *testing.T) {
	p := loadExample(t)
	runDecisionCases(t, p, []decisionCase{
		{`find /var/log -name '*.log'`, true, "find"},
		{`find /var/log /etc -maxdepth 2 -type f -mtime -1`, true, "find"},
		{`find /var/log -type f,d -size +10M -printf '%p %s\n'`, true, "find"},
		{`find /etc -perm -4000 -user root`, true, "find"},
		{`find /var/log \( -name '*.gz' -o -name '*.1' \) -prune -o -print`, true, "find"},
		{`find /var/log ! -name '*.gz' -a -newer /var/log/syslog`, true, "find"},
		{`find /var/log -not -empty , -print0`, true, "find"},
		{`find -xdev /var/log`, false, "starting points go before the expression"},
		{`find -name x`, false, "missing operand: start"},
		{`find /root -name x`, false, "not under the allowed roots"},
		{`find /var/log -newer /etc/shadow`, false, "deny-shadow"},
		{`find var/log`, false, "absolute path"},
		// Actions that run, delete or write are never allowed.
		{`find /var/log -exec cat '{}' ';'`, false, "-exec runs a program"},
		{`find /var/log -execdir rm '{}' +`, false, "-execdir runs a program"},
		{`find /var/log -ok rm '{}' ';'`, false, "-ok runs a program"},
		{`find /var/log -okdir rm '{}' ';'`, false, "-okdir runs a program"},
		{`find /var/log -delete`, false, "-delete deletes files"},
		{`find /var/log -fprint /tmp/x`, false, "-fprint writes a file"},
		{`find /var/log -fprint0 /tmp/x`, false, "-fprint0 writes a file"},
		{`find /var/log -fprintf /tmp/x %p`, false, "-fprintf writes a file"},
		{`find /var/log -fls /tmp/x`, false, "-fls writes a file"},
		{`find /var/log -name x -o -delete`, false, "-delete deletes files"},
		// A value is consumed as find consumes it: "-exec" here is a name.
		{`find /var/log -name -exec`, true, "find"},
		// Unlisted tests and symlink following are refused.
		{`find -L /var/log -name x`, false, "following symlinks"},
		{`find /var/log -follow`, false, "following symlinks"},
		{`find /var/log -regex x`, false, "option -regex is not allowed"},
		{`find /var/log -name`, false, "needs a value"},
		{`find /var/log -maxdepth 50`, false, "above the maximum 20"},
		{`find /var/log foo`, false, "absolute path"},
		{`find /var/log -name x foo`, false, "not a find test"},
	})
	// Hand-built argv with the real ; terminator: still refused.
	if d := argvDecision(p, "find", "/var/log", "-exec", "/bin/sh", "-c", "id", ";"); d.Allowed {
		t.Error("find -exec allowed from a hand-built argv")
	}
}

func TestDigGrammar(t *testing.T) {
	p := loadExample(t)
	runDecisionCases(t, p, []decisionCase{
		{`dig @127.0.0.1 localhost`, true, "dig"},
		{`dig @127.0.0.53 example.org MX +short`, true, "dig"},
		{`dig @::1 localhost AAAA +noall +answer`, true, "dig"},
		{`dig @localhost localhost +time=2 +tries=1`, true, "dig"},
		{`dig -x 127.0.0.1 @127.0.0.1`, true, "dig"},
		{`dig -t MX example.org @127.0.0.1`, true, "dig"},
		{`dig -tMX example.org`, true, "dig"},
		{`dig -4 -p 53 localhost`, true, "dig"},
		{`dig -4p53 localhost`, true, "dig"},
		{`dig example.org`, true, "dig"},
		{`dig @8.8.8.8 example.org`, false, "not a loopback address"},
		{`dig @dns.google example.org`, false, "only 127.0.0.0/8"},
		{`dig @ example.org`, false, "only 127.0.0.0/8"},
		{`dig -f /etc/shadow`, false, "reads queries from a file"},
		{`dig -4f /etc/shadow`, false, "reads queries from a file"},
		{`dig -k /etc/bind/key localhost`, false, "TSIG keys"},
		{`dig -y hmac:name:secret localhost`, false, "TSIG keys"},
		{`dig +time localhost`, false, "needs a value"},
		{`dig +short=1 localhost`, false, "takes no value"},
		{`dig +time=99 localhost`, false, "above the maximum 10"},
		{`dig +sho localhost`, false, "option +sho is not allowed"},
		{`dig +nssearch localhost`, false, "option +nssearch is not allowed"},
		{`dig localhost WKS`, false, "not one of"},
		{`dig -t AXFR example.org`, false, "not one of"},
		{`dig a.example b.example c`, false, "not one of"},
	})
}

func TestWordsGrammar(t *testing.T) {
	p := loadExample(t)
	runDecisionCases(t, p, []decisionCase{
		{`ip a`, true, "ip-addr"},
		{`ip addr show`, true, "ip-addr"},
		{`ip -br a`, true, "ip-addr"},
		{`ip -brief -4 address list`, true, "ip-addr"},
		{`ip a show dev lo`, true, "ip-addr"},
		{`ip a show lo`, true, "ip-addr"},
		{`ip a show dev lo up`, true, "ip-addr"},
		{`ip -j route`, true, "ip-route"},
		{`ip r`, true, "ip-route"},
		{`ip a dev lo`, false, "this subcommand is not allowed"},
		{`ip -b /tmp/cmds`, false, "option -b is not allowed"},
		{`ip -batch /tmp/cmds`, false, "option -batch is not allowed"},
		{`ip -bR a`, false, "option -bR is not allowed"},
		{`ip a -4`, false, "must come before the object"},
		{`ip a show dev`, false, "needs a value"},
		{`ip a show dev 'lo; id'`, false, "not a network interface name"},
		{`ip link set lo down`, false, "this subcommand is not allowed"},
		{`ip netns exec x sh`, false, "this subcommand is not allowed"},
		{`ip route add 1.2.3.4 dev lo`, false, `"add": this rule takes no operands`},
	})
}
