# Functions for a test bed checks script (test/nspawn). Sourced before the
# script runs; every result is a file in $RESULTS that the Go test reads
# after the machine powered off.

RESULTS=/var/lib/nannyagent-testbed/results

# record NAME CMD...: CMD's stdout and stderr go to $RESULTS/NAME, its exit
# status to $RESULTS/NAME.rc. Returns CMD's status.
record() {
	local name=$1 rc
	shift
	"$@" >"$RESULTS/$name" 2>&1
	rc=$?
	echo "$rc" >"$RESULTS/$name.rc"
	return "$rc"
}

# record_stdout NAME CMD...: like record, with stderr apart in NAME.err.
record_stdout() {
	local name=$1 rc
	shift
	"$@" >"$RESULTS/$name" 2>"$RESULTS/$name.err"
	rc=$?
	echo "$rc" >"$RESULTS/$name.rc"
	return "$rc"
}

# note NAME TEXT...: TEXT is the result NAME.
note() {
	local name=$1
	shift
	printf '%s\n' "$*" >"$RESULTS/$name"
}

# wait_for SECONDS CMD...: runs CMD every 0.1 s until it succeeds; returns 1
# when SECONDS pass first.
wait_for() {
	local deadline=$(($(date +%s%N) + $1 * 1000000000))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s%N)" -lt "$deadline" ] || return 1
		sleep 0.1
	done
}

# now: seconds since the epoch, with nanoseconds (for timings).
now() { date +%s.%N; }
