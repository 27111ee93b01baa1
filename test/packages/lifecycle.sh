# The package's life in a booted Debian (test/packages): install, upgrade
# with local changes, remove, install again, purge. Sourced with
# test/nspawn's lib.sh; booted_test.go judges every result.

V1=/root/pkgs/@V1@
V2=/root/pkgs/@V2@
UNITS="nannyagent-broker.socket nannyagent-worker.socket nannyagent-worker.service"
STATE_TOKEN=/var/lib/nannyagent/token.json

# owner group mode type path of every path the package owns.
pkgfiles() {
	dpkg-query -L nannyagent | while read -r p; do
		[ -e "$p" ] && stat -c '%U %G %a %F %n' "$p"
	done
}
# Everything named for the agent on the disk, besides the test bed's own
# files and the packages it installs.
leftovers() {
	find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /root/pkgs -o -path /var/log/journal \) -prune \
		-o -name '*nannyagent*' ! -name '*nannyagent-testbed*' -print
	find /run -name '*nannyagent*' ! -name '*nannyagent-testbed*'
}

# --- First install.
record install-v1 dpkg -i "$V1"
record files-v1 pkgfiles
record layout-v1 stat -c '%U %G %a %F %n' /etc/nannyagent /etc/nannyagent/config.yaml /etc/nannyagent/policy.d \
	/var/lib/nannyagent /var/lib/nannyagent-broker /run/nannyagent /run/nannyagent/worker.sock \
	/run/nannyagent-broker /run/nannyagent-broker/broker.sock
record config-from-example cmp /usr/share/nannyagent/config.yaml.example /etc/nannyagent/config.yaml
record conffiles dpkg-query -W -f '${Conffiles}' nannyagent
record accounts sh -c 'getent passwd nannyagent; getent group nannyagent; getent group nannyagent-admin'
record enabled-v1 systemctl is-enabled $UNITS
record active-v1 systemctl is-active $UNITS
record path-v1 sh -c 'command -v nannyagent'
record_stdout status-v1 nannyagent status --json

# --- Local changes, state, then the upgrade.
printf 'metrics_interval: 45 # a local change\n' >>/etc/nannyagent/config.yaml
cat >/etc/nannyagent/policy.d/50-local.yaml <<'POLICY'
version: 1
commands:
  - id: local-uptime
    program: /usr/bin/uptime
POLICY
# A token the worker kept (the worker cannot reach any API here).
install -m 0600 -o nannyagent -g nannyagent /dev/null "$STATE_TOKEN"
printf '{"access_token":"at-local","refresh_token":"rt-local","token_type":"","expires_at":"2099-01-01T00:00:00Z","agent_id":"agent-kept"}\n' >"$STATE_TOKEN"
printf 'broker state\n' >/var/lib/nannyagent-broker/kept
# The worker may rewrite the token file (same tokens, more fields):
# booted_test.go compares its tokens, the rest byte for byte.
sha256sum /etc/nannyagent/config.yaml /etc/nannyagent/policy.d/50-local.yaml /var/lib/nannyagent-broker/kept >/root/kept.sha
worker_before=$(systemctl show -p MainPID --value nannyagent-worker.service)
note worker-pid-before "$worker_before"
record upgrade dpkg -i "$V2"
record version-v2 dpkg-query -W -f '${Version}' nannyagent
record kept-after-upgrade sha256sum -c /root/kept.sha
record token-after-upgrade cat "$STATE_TOKEN"
record layout-v2 stat -c '%U %G %a %F %n' /etc/nannyagent/config.yaml /etc/nannyagent/policy.d/50-local.yaml "$STATE_TOKEN"
wait_for 30 systemctl is-active --quiet nannyagent-worker.service
note worker-pid-after "$(systemctl show -p MainPID --value nannyagent-worker.service)"
record active-v2 systemctl is-active $UNITS
record_stdout status-v2 nannyagent status --json

# --- Remove: units stopped and disabled; configuration and state stay.
record remove dpkg -r nannyagent
record removed-active systemctl is-active $UNITS nannyagent-broker.service
record removed-links find /etc/systemd/system -name 'nannyagent-*' ! -name 'nannyagent-testbed*'
record removed-kept sha256sum -c /root/kept.sha
record token-after-remove cat "$STATE_TOKEN"
record removed-binaries sh -c 'ls /usr/bin/nannyagent /usr/sbin/nannyagent-broker /usr/sbin/nannyagent-worker /usr/lib/systemd/system/nannyagent-* 2>&1'

# --- Installed again after the removal: enabled and started again.
record reinstall dpkg -i "$V2"
record reinstall-active systemctl is-active $UNITS
record reinstall-kept sha256sum -c /root/kept.sha

# --- Purge: nothing left but the accounts.
record purge dpkg -P nannyagent
record purge-leftovers leftovers
# A unit whose file is gone may still be listed "not-found inactive dead"
# until systemd collects it (it did once, right after the purge): no file,
# no process, nothing enabled. Anything loaded, running, failed or with a
# unit file counts.
record purge-units sh -c "{ systemctl list-units --all --no-legend --plain 'nannyagent-*' | grep -Ev ' not-found +inactive +dead '; systemctl list-unit-files --no-legend 'nannyagent-*'; } | grep -v '^nannyagent-testbed'"
record purge-diversions dpkg-divert --list '*nannyagent*'
record purge-accounts sh -c 'getent passwd nannyagent; getent group nannyagent; getent group nannyagent-admin'
record journal journalctl -b --no-pager -o short-monotonic -u 'nannyagent-*'
