# Steps of a held patch run for a checks script (test/patchbed), sourced
# after test/nspawn's lib.sh and before the script's own steps.
# patch_hold starts patchbed (the fake NannyAPI), registers the agent and
# waits until the first operation, a host apply, is held in the fake
# apt-get; the script then restarts the agent its own way (systemctl,
# an upgrade) and calls patch_restarted, then patch_release.

BED=/run/patchbed
APT=/opt/fakeapt
patch_state() { cat "$BED/state-0" 2>/dev/null; }
patch_pids() { systemctl show -p MainPID --value nannyagent-broker.service nannyagent-worker.service "$unit"; }
# fail WHAT: a step the rest depends on did not happen; stop here.
fail() {
	note failed "$*"
	exit 1
}

# patch_hold OPS: patchbed creates OPS (its -ops); sets id and unit.
patch_hold() {
	wait_for 30 systemctl is-active --quiet nannyagent-worker.service || fail "the worker is not active"
	touch "$APT/hold"
	systemd-run --unit=patchbed --quiet /usr/local/bin/patchbed -listen 127.0.0.1:8089 -dir "$BED" -ops "$1"
	wait_for 20 test -s "$BED/url" || fail "patchbed did not start"
	record register nannyagent register || fail "registration"
	wait_for 60 test -s "$BED/patch-id-0" || fail "no patch operation"
	id=$(cat "$BED/patch-id-0")
	note patch-id "$id"
	unit="nannyagent-patch-$id.service"
	# Held in the fake apt-get's "upgrade -s".
	wait_for 60 grep -q -- '-s -q upgrade' "$APT/calls.log" || fail "the run never reached apt-get upgrade"
	record pids-before patch_pids
	record state-before patch_state
}

# patch_restarted: the services were restarted; the run is still held.
patch_restarted() {
	wait_for 30 systemctl is-active --quiet nannyagent-worker.service
	record pids-after patch_pids
	record unit-after-restart systemctl show "$unit" -p ActiveState -p SubState
	record state-during patch_state
}

# patch_release lets the run finish; the new worker uploads its result.
patch_release() {
	rm "$APT/hold"
	wait_for 60 grep -qx 'status=completed' "$BED/state-0"
	# Two of the worker's poll intervals more: no second upload follows.
	sleep 3
	record state-after patch_state
	record unit-gone systemctl show "$unit" -p LoadState -p ActiveState
	record apt-calls cat "$APT/calls.log"
	record broker-journal journalctl -b -o cat -u nannyagent-broker.service
	record unit-journal journalctl -b -o cat -u "$unit"
	record broker-record cat "/var/lib/nannyagent-broker/patches/$id/record.json"
}
