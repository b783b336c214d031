#!/bin/sh
# check_config_reload.sh - config-reload's parser and reload paths.
#
#  1. --selftest: valid and malformed files, loaded into a cell; a
#     malformed file is refused with "file:line: reason" and the cell keeps
#     the version it had.
#  2. --check: the shipped example.conf is valid; a malformed file is
#     refused, naming its file and line.
#  3. A real server process: SIGHUP reloads the file and logs the diff; a
#     malformed file on SIGHUP is refused and the running generation kept;
#     SIGTERM stops it cleanly.
#
# Run by `make check`, which sets top_builddir (build products), top_srcdir
# (data files; they differ in VPATH builds) and EXEEXT.

set -eu

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
EXEEXT=${EXEEXT:-}
cr="$top_builddir/examples/config-reload/config-reload$EXEEXT"

if [ ! -x "$cr" ]; then
	echo "FAIL: $cr was not built"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cowmap-config-reload.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || :
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*"
	for f in "$tmp"/*.log; do
		[ -f "$f" ] && { echo "--- $f"; cat "$f"; }
	done
	exit 1
}

# --- 1. selftest -----------------------------------------------------------
"$cr" --selftest || fail "config-reload --selftest"

# --- 2. --check ------------------------------------------------------------
"$cr" --check "$top_srcdir/examples/config-reload/example.conf" ||
	fail "example.conf is not valid"

printf '# comment\nname = ok\nthis line is wrong\n' >"$tmp/bad.conf"
if "$cr" --check "$tmp/bad.conf" 2>"$tmp/check.log"; then
	fail "--check accepted a malformed file"
fi
cat "$tmp/check.log"
grep -q "bad.conf:3: expected \"key = value\"" "$tmp/check.log" ||
	fail "--check did not name file and line"

# --- 3. a server process, signals ----------------------------------------
# wait_for FILE PATTERN: up to 10 s for PATTERN to appear in FILE.
wait_for() {
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		kill -0 "$pid" 2>/dev/null || fail "the server exited early"
		i=$((i + 1))
		[ "$i" -le 100 ] || fail "timed out waiting for '$2' in $1"
		sleep 0.1
	done
}

conf="$tmp/server.conf"
printf 'color = red\nsize = 10\n' >"$conf"
"$cr" --port 0 --workers 2 "$conf" >"$tmp/out.log" 2>"$tmp/err.log" &
pid=$!
wait_for "$tmp/out.log" 'listening on 127\.0\.0\.1:[0-9]'

# A changed file: SIGHUP publishes generation 2 and logs each change.
printf 'color = blue\nsize = 10\nshape = round\n' >"$conf.new"
mv "$conf.new" "$conf"
kill -HUP "$pid"
wait_for "$tmp/out.log" 'generation 2 from'
wait_for "$tmp/out.log" '1 added, 0 removed, 1 changed'
grep -q '~ color: red -> blue' "$tmp/out.log" || fail "change not logged"
grep -q '+ shape = round' "$tmp/out.log" || fail "addition not logged"

# A malformed file: refused with file and line; generation 2 stays.
printf 'color = green\n\nsize 12\n' >"$conf.new"
mv "$conf.new" "$conf"
kill -HUP "$pid"
wait_for "$tmp/err.log" 'SIGHUP rejected'
grep -q "server.conf:3: expected \"key = value\", found \"size 12\" (keeping generation 2)" \
	"$tmp/err.log" || fail "rejection does not name file, line and generation"
if grep -q 'generation 3' "$tmp/out.log"; then
	fail "a malformed file was published"
fi

# SIGTERM: a clean stop, exit status 0.
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "the server exited with status $status"
grep -q '2 configurations loaded, 1 rejected' "$tmp/out.log" ||
	fail "final summary missing"

cat "$tmp/out.log" "$tmp/err.log"
echo "ok: config-reload parser, reloads and signals"
