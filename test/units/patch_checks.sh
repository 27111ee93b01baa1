# Checks for patch runs in transient units (test/units, patch_test.go).
# Sourced with test/nspawn's lib.sh, after test/patchbed's steps. patchbed
# (the fake NannyAPI) creates the operations once the worker is registered
# and subscribed: an apply on the host, which outlives the agent's own restart (the fake apt-get in
# /opt/fakeapt holds it while "hold" exists), then a dry run in container
# 105 through the fake pct in /opt/fakepct.

patch_hold apply,dry-run:105:7sfzjqlwhc0ptu5
record unit-before systemctl show "$unit" -p ActiveState -p SubState -p MainPID -p ControlGroup -p RuntimeMaxUSec -p MemoryMax -p TasksMax -p KillMode -p Type
record unit-cgroup-procs sh -c "cat /sys/fs/cgroup/unified$(systemctl show -p ControlGroup --value "$unit")/cgroup.procs | wc -l"

# A restart of both services, as a package upgrade does (test/packages
# upgrades the package itself).
record restart systemctl restart nannyagent-broker nannyagent-worker
patch_restarted
patch_release

# The container's run: pct runs in its own transient unit.
wait_for 60 test -s "$BED/patch-id-1" || fail "no container operation"
id1=$(cat "$BED/patch-id-1")
note lxc-patch-id "$id1"
wait_for 60 grep -qE '^status=(completed|failed)$' "$BED/state-1" || fail "the container run did not end"
sleep 2
record lxc-state cat "$BED/state-1"
record pct-log cat /opt/fakepct/log
record lxc-record cat "/var/lib/nannyagent-broker/patches/$id1/record.json"
