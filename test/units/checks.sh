# Checks for the agent's units in a booted system (test/units). Sourced
# with test/nspawn's lib.sh; every result is judged by booted_test.go.
# The broker's drop-in sets --idle-exit to @IDLE@ s.

BROKER_SOCK=/run/nannyagent-broker/broker.sock
WORKER_SOCK=/run/nannyagent/worker.sock

# as ACCOUNT CMD...: run CMD as ACCOUNT with its groups from /etc/group.
as() {
	local who=$1
	shift
	setpriv --reuid="$who" --regid="$(id -gn "$who")" --init-groups -- "$@"
}

# broker CALL JSON: one broker request, as the worker's account.
broker() {
	as nannyagent /usr/local/bin/brokerprobe -socket "$BROKER_SOCK" -timeout 60s -call "$1" -request "$2"
}

active() { systemctl is-active --quiet "$1"; }

# --- Once booted, before anything asks the broker for work.
wait_for 30 active nannyagent-worker.service
record boot-worker-active systemctl is-active nannyagent-worker.service
record boot-broker-active systemctl is-active nannyagent-broker.service
record boot-sockets-active systemctl is-active nannyagent-broker.socket nannyagent-worker.socket
record accounts sh -c 'getent passwd nannyagent; getent group nannyagent; getent group nannyagent-admin'
# owner group mode type name, for the sockets and their directories.
record layout stat -c '%U %G %a %F %n' /run/nannyagent /run/nannyagent/worker.sock /run/nannyagent-broker /run/nannyagent-broker/broker.sock /var/lib/nannyagent /var/lib/nannyagent-broker

worker_pid=$(systemctl show -p MainPID --value nannyagent-worker.service)
note worker-pid "$worker_pid"
record worker-status grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp|Seccomp_filters):' "/proc/$worker_pid/status"

# --- The worker's first request starts the broker.
record status-root nannyagent status --json
record after-status-broker-active systemctl is-active nannyagent-broker.service
broker_pid=$(systemctl show -p MainPID --value nannyagent-broker.service)
record broker-status grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$broker_pid/status"
record broker-cgroup cat "/proc/$broker_pid/cgroup"
record broker-properties systemctl show --all nannyagent-broker.service -p Delegate -p DevicePolicy -p DeviceAllow -p PrivateMounts -p WatchdogUSec -p Type -p NotifyAccess
record worker-properties systemctl show --all nannyagent-worker.service -p Restart -p RestartUSec -p StartLimitBurst -p StartLimitIntervalUSec -p WatchdogUSec -p Type -p PrivateUsers -p User -p RuntimeDirectory -p DeviceAllow

# --- Who may use the CLI.
useradd --no-create-home --no-user-group --gid users --groups nannyagent-admin testadmin
record status-admin as testadmin nannyagent status --json
record status-stranger as nobody nannyagent status --json

# --- The host's view, directly and through the broker. Volatile numbers
# (df's use of /run grows with the journal) get three tries.
touch /tmp/nannyagent-testbed-marker
view() {
	local name=$1 argv=$2 i
	shift 2
	for i in 1 2 3; do
		record_stdout "view-$name-direct-$i" "$@"
		record_stdout "view-$name-broker-$i" broker RunCommand "{\"stages\":[{\"argv\":$argv}]}"
	done
}
view findmnt '["findmnt"]' findmnt
view ls-tmp '["ls","/tmp"]' ls /tmp
view ip-addr '["ip","-br","addr"]' ip -br addr
view df '["df","-h"]' df -h

# --- Real work through the socket-activated broker.
(for i in $(seq 60); do /bin/true; sleep 0.05; done) &
record_stdout trace broker RunTrace '{"spec":{"name":"execs","kind":"TRACE_KIND_TRACEPOINT","target":"sched:sched_process_exec","measure":"TRACE_MEASURE_COUNT","duration":"2s"}}'
wait
record_stdout setsid broker RunCommand '{"stages":[{"argv":["setsid","-f","/usr/bin/sleep","987"]}]}'
record setsid-survivors pgrep -a -f 'sleep 987'

# --- Idle: the broker exits by itself, and its socket starts it again.
before=$(now)
wait_for 60 sh -c '! systemctl is-active --quiet nannyagent-broker.service'
note idle-wait "$(awk -v a="$before" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
record idle-broker-active systemctl is-active nannyagent-broker.service
record idle-broker-result systemctl show nannyagent-broker.service -p Result -p ExecMainCode -p ExecMainStatus -p NRestarts
record idle-broker-socket systemctl is-active nannyagent-broker.socket
record reactivated-status nannyagent status --json
record reactivated-broker-active systemctl is-active nannyagent-broker.service

# --- Stopping and starting either service leaves the other's socket.
inodes() { stat -c '%i %n' "$WORKER_SOCK" "$BROKER_SOCK"; }
record sockets-before inodes
systemctl stop nannyagent-worker.service
record worker-stopped-active systemctl is-active nannyagent-worker.service
record worker-stopped-sockets inodes
# A CLI connection to the stopped worker's socket starts it.
record worker-activated-status nannyagent status --json
record worker-activated-active systemctl is-active nannyagent-worker.service
systemctl start nannyagent-broker.service
systemctl stop nannyagent-broker.service
record broker-stopped-active systemctl is-active nannyagent-broker.service
record broker-stopped-sockets inodes
systemctl start nannyagent-broker.service
record restarted-status nannyagent status --json

# --- A crashed worker comes back after RestartSec=.
old=$(systemctl show -p MainPID --value nannyagent-worker.service)
systemctl kill -s KILL nannyagent-worker.service
wait_for 30 sh -c "p=\$(systemctl show -p MainPID --value nannyagent-worker.service); [ \"\$p\" != 0 ] && [ \"\$p\" != $old ] && systemctl is-active --quiet nannyagent-worker.service"
record worker-after-crash systemctl show nannyagent-worker.service -p ActiveState -p NRestarts
record crash-status nannyagent status --json

# --- The units as installed, with their binaries and accounts present.
units=$(ls /usr/lib/systemd/system/nannyagent-*)
record verify systemd-analyze verify $units
record security-broker systemd-analyze security --offline=yes /usr/lib/systemd/system/nannyagent-broker.service
record security-worker systemd-analyze security --offline=yes /usr/lib/systemd/system/nannyagent-worker.service

# --- The broker's vsock socket (a worker in a VM guest): shipped, not
# enabled. The container shares the host's kernel, whose vsock ports belong
# to no network namespace, so the test picks a free port (empty when the
# kernel has no AF_VSOCK) and a drop-in moves the socket there. Restarted,
# the broker takes both sockets by their names and serves both.
VSOCK_PORT=@VSOCK_PORT@
if [ -n "$VSOCK_PORT" ]; then
	nannyagent-broker keygen --out /etc/nannyagent/vsock/broker >/dev/null
	mkdir -p /etc/systemd/system/nannyagent-broker-vsock.socket.d
	printf '[Socket]\nListenStream=\nListenStream=vsock::%s\n' "$VSOCK_PORT" >/etc/systemd/system/nannyagent-broker-vsock.socket.d/port.conf
	systemctl daemon-reload
	# systemd refuses to start a socket whose service already runs (the
	# status calls above may have activated the broker just now).
	systemctl stop nannyagent-broker.service
	record vsock-socket-start systemctl start nannyagent-broker-vsock.socket
	record vsock-socket-listen systemctl show nannyagent-broker-vsock.socket -p Listen -p FileDescriptorName -p Triggers
	systemctl restart nannyagent-broker.service
	record vsock-broker-active systemctl is-active nannyagent-broker.service
	record_stdout vsock-serving sh -c "journalctl -b --no-pager -o cat -u nannyagent-broker.service | grep -e '\"vsock key loaded\"' -e '\"broker serving\"' | tail -n 2"
	systemctl stop nannyagent-broker.service nannyagent-broker-vsock.socket
	record vsock-stopped systemctl is-active nannyagent-broker-vsock.socket
fi
record journal journalctl -b --no-pager -o short-monotonic -u 'nannyagent-*'
