# Checks for patch runs in transient units (test/units, patch_test.go).
# Sourced with test/nspawn's lib.sh. patchbed (the fake NannyAPI) creates
# the operations once the worker is registered and subscribed: an apply on
# the host, which outlives the agent's own restart (the fake apt-get in
# /opt/fakeapt holds it while "hold" exists), then a dry run in container
# 105 through the fake pct in /opt/fakepct.

BED=/run/patchbed
APT=/opt/fakeapt
active() { systemctl is-active --quiet "$1"; }
state() { cat "$BED/state-0" 2>/dev/null; }
# fail WHAT: a step the rest depends on did not happen; stop here.
fail() {
	note failed "$*"
	exit 1
}

wait_for 30 active nannyagent-worker.service
touch "$APT/hold"
systemd-run --unit=patchbed --quiet /usr/local/bin/patchbed -listen 127.0.0.1:8089 -dir "$BED" -ops apply,dry-run:105:7sfzjqlwhc0ptu5
wait_for 20 test -s "$BED/url" || fail "patchbed did not start"
record register nannyagent register || fail "registration"
wait_for 60 test -s "$BED/patch-id-0" || fail "no patch operation"
id=$(cat "$BED/patch-id-0")
note patch-id "$id"
unit="nannyagent-patch-$id.service"

# The run is held in the fake apt-get's "upgrade -s".
wait_for 60 grep -q -- '-s -q upgrade' "$APT/calls.log" || fail "the run never reached apt-get upgrade"
record unit-before systemctl show "$unit" -p ActiveState -p SubState -p MainPID -p ControlGroup -p RuntimeMaxUSec -p MemoryMax -p TasksMax -p KillMode -p Type
record unit-cgroup-procs sh -c "cat /sys/fs/cgroup/unified$(systemctl show -p ControlGroup --value "$unit")/cgroup.procs | wc -l"
record pids-before systemctl show -p MainPID --value nannyagent-broker.service nannyagent-worker.service "$unit"
record state-before state

# The package upgrade's restart of both services.
record restart systemctl restart nannyagent-broker nannyagent-worker
wait_for 30 active nannyagent-worker.service
record pids-after systemctl show -p MainPID --value nannyagent-broker.service nannyagent-worker.service "$unit"
record unit-after-restart systemctl show "$unit" -p ActiveState -p SubState
record state-during state

# Let the run finish; the new worker uploads its result once.
rm "$APT/hold"
wait_for 60 grep -qx 'status=completed' "$BED/state-0"
# Two of the worker's poll intervals more: no second upload follows.
sleep 3
record state-after state
record unit-gone systemctl show "$unit" -p LoadState -p ActiveState
record apt-calls cat "$APT/calls.log"
record broker-journal journalctl -b -o cat -u nannyagent-broker.service
record unit-journal journalctl -b -o cat -u "$unit"
record broker-record cat "/var/lib/nannyagent-broker/patches/$id/record.json"

# The container's run: pct runs in its own transient unit.
wait_for 60 test -s "$BED/patch-id-1" || fail "no container operation"
id1=$(cat "$BED/patch-id-1")
note lxc-patch-id "$id1"
wait_for 60 grep -qE '^status=(completed|failed)$' "$BED/state-1" || fail "the container run did not end"
sleep 2
record lxc-state cat "$BED/state-1"
record pct-log cat /opt/fakepct/log
record lxc-record cat "/var/lib/nannyagent-broker/patches/$id1/record.json"
