#!/bin/sh
# check_examples_run.sh - the bounded demos of the larger examples run,
# check themselves and succeed.
#
#   config-reload --demo     reloads under load over real TCP connections
#   routing-table            batched lookups against batched route updates,
#                            on a small generated table
#   lookup-table             readers and a writer, with a stalled reader
#
# Each program checks what it sees and exits non-zero on any inconsistency,
# leak of pending memory or error.  Run by `make check`, which sets
# top_builddir (the build tree: differs from the source tree in VPATH
# builds) and EXEEXT.

set -eu

top_builddir=${top_builddir:-.}
EXEEXT=${EXEEXT:-}
ex="$top_builddir/examples"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cowmap-examples.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# run NAME EXPECTED-LAST-LINE COMMAND...: run, show the output, check it.
run() {
	name=$1 expected=$2
	shift 2
	echo "== $name: $*"
	status=0
	start=$(date +%s)
	"$@" >"$tmp/out" 2>&1 || status=$?
	cat "$tmp/out"
	echo "(status $status, $(( $(date +%s) - start )) s)"
	if [ "$status" -ne 0 ]; then
		echo "FAIL: $name exited with status $status"
		exit 1
	fi
	if [ "$(tail -n 1 "$tmp/out")" != "$expected" ]; then
		echo "FAIL: $name did not end with: $expected"
		exit 1
	fi
}

for prog in config-reload/config-reload routing-table/routing-table \
	    lookup-table/lookup-table; do
	if [ ! -x "$ex/$prog$EXEEXT" ]; then
		echo "FAIL: $ex/$prog$EXEEXT was not built"
		exit 1
	fi
done

# --- config-reload --demo (about 2 s) -------------------------------------
run config-reload 'config-reload demo: OK' \
	"$ex/config-reload/config-reload$EXEEXT" --demo
grep -q '^errors: 0 ' "$tmp/out" || { echo "FAIL: config-reload errors"; exit 1; }

# --- routing-table on 50000 generated routes, 1 s -------------------------
rt="$ex/routing-table/routing-table$EXEEXT"
"$rt" --generate 50000 "$tmp/routes.txt"
run routing-table 'routing-table: OK' "$rt" --seconds 1 "$tmp/routes.txt"
grep -q 'inconsistent answers: 0$' "$tmp/out" ||
	{ echo "FAIL: routing-table inconsistencies"; exit 1; }

# A malformed route file is refused with its file name and line number.
printf '10.1.2.0/24 via 192.0.2.1 dev eth0\n10.1.3.7/24 via 192.0.2.1 dev eth0\n' \
	>"$tmp/bad-routes.txt"
if "$rt" --seconds 0.1 "$tmp/bad-routes.txt" >"$tmp/out" 2>&1; then
	cat "$tmp/out"
	echo "FAIL: routing-table accepted a malformed table"
	exit 1
fi
cat "$tmp/out"
grep -q "bad-routes.txt:2: host bits set" "$tmp/out" ||
	{ echo "FAIL: routing-table did not name the bad line"; exit 1; }

# --- lookup-table, 1 s, one reader stalling grace periods for 0.3 s -------
run lookup-table 'lookup-table: OK' \
	"$ex/lookup-table/lookup-table$EXEEXT" --seconds 1 --stall-ms 300

echo "ok: config-reload, routing-table, lookup-table"
