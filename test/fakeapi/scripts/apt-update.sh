#!/bin/bash
# apt-update.sh: a stand-in for NannyAPI's debian/apt-update.sh, written for
# nannyagent's tests and demo. It takes the backend scripts' arguments,
#   apt-update.sh [--dry-run] [--exclude pkg1,pkg2]
# asks the apt-get found on PATH what it would upgrade, leaves the excluded
# packages alone, and either prints the plan (dry run) or upgrades the rest.
set -eu

dry_run=0
exclude=""
while [ $# -gt 0 ]; do
	case "$1" in
	--dry-run) dry_run=1 ;;
	--exclude)
		[ $# -ge 2 ] || { echo "apt-update: --exclude needs a comma-separated list" >&2; exit 2; }
		exclude="$2"
		shift
		;;
	*) echo "apt-update: unknown argument: $1" >&2; exit 2 ;;
	esac
	shift
done

command -v apt-get >/dev/null 2>&1 || { echo "apt-update: apt-get not found on PATH=$PATH" >&2; exit 127; }
echo "apt-update: mode=$([ "$dry_run" = 1 ] && echo dry-run || echo apply) exclude=${exclude:-none}"

apt-get update -q

is_excluded() {
	case ",$exclude," in
	*",$1,"*) return 0 ;;
	esac
	return 1
}

# "Inst <package> [<old>] (<new> <origin>)" lines of a simulated upgrade.
planned=$(apt-get -s -q upgrade | awk '$1 == "Inst" { print $2 }')
selected=""
for pkg in $planned; do
	if is_excluded "$pkg"; then
		echo "apt-update: keeping $pkg (excluded)"
		continue
	fi
	selected="$selected $pkg"
done

if [ -z "$selected" ]; then
	echo "apt-update: nothing to upgrade"
	exit 0
fi
if [ "$dry_run" = 1 ]; then
	echo "apt-update: would upgrade:$selected"
	exit 0
fi
# shellcheck disable=SC2086 # one argument per package
apt-get install -y -q --only-upgrade $selected
echo "apt-update: upgraded:$selected"
