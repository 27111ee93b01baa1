# A host with the reference agent as its install.sh leaves it (the fixture
# booted_test.go writes) gets the package (test/packages). Sourced with
# test/nspawn's lib.sh; booted_test.go judges every result.

V1=/root/pkgs/@V1@
STATE=/var/lib/nannyagent

wait_for 30 systemctl is-active --quiet nannyagent.service
record ref-before sh -c 'systemctl is-active nannyagent.service; systemctl is-enabled nannyagent.service'
# The worker may rewrite token.json (same tokens, more fields):
# booted_test.go compares its tokens, the rest byte for byte.
sha256sum /etc/nannyagent/config.yaml "$STATE/.refresh_token" >/root/ref.sha

record install dpkg -i "$V1"
record ref-after sh -c 'systemctl is-active nannyagent.service; systemctl is-enabled nannyagent.service'
record diversion dpkg-divert --list /usr/sbin/nannyagent
record diverted-binary stat -c '%U %G %a %F %n' /usr/sbin/nannyagent.reference
# The checks run with systemd's PATH for services, /usr/sbin before /usr/bin
# as in root's.
note path-env "$PATH"
record which sh -c 'command -v nannyagent'
record version nannyagent version
record layout stat -c '%U %G %a %F %n' /etc/nannyagent /etc/nannyagent/config.yaml "$STATE" "$STATE/token.json" "$STATE/.refresh_token" "$STATE/.nannyagent.lock"
record kept sha256sum -c /root/ref.sha
wait_for 30 systemctl is-active --quiet nannyagent-worker.service
record worker-active systemctl is-active nannyagent-worker.service
record_stdout status nannyagent status --json
# Nothing registered again or rewrote the tokens.
record kept-after-status sha256sum -c /root/ref.sha
record token-after-status cat "$STATE/token.json"

# Removing the package gives the reference binary back.
record remove dpkg -r nannyagent
record restored sh -c 'stat -c "%U %G %a %F %n" /usr/sbin/nannyagent; dpkg-divert --list "*nannyagent*"'
record journal journalctl -b --no-pager -o short-monotonic -u 'nannyagent*'
