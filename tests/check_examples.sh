#!/bin/sh
# check_examples.sh - the example programs run, succeed and say so.
#
# Run by `make check`, which sets top_builddir.  examples/basic checks every
# step itself and exits non-zero on the first mismatch.

set -eu

top_builddir=${top_builddir:-.}
EXEEXT=${EXEEXT:-}

prog="$top_builddir/examples/basic$EXEEXT"
if [ ! -x "$prog" ]; then
	echo "FAIL: $prog was not built"
	exit 1
fi

out=$(mktemp "${TMPDIR:-/tmp}/cowmap-basic.XXXXXX")
trap 'rm -f "$out"' EXIT

status=0
"$prog" >"$out" 2>&1 || status=$?
cat "$out"

if [ "$status" -ne 0 ]; then
	echo "FAIL: examples/basic exited with status $status"
	exit 1
fi
for expected in \
	'old version: apple -> red, banana -> yellow (3 entries)' \
	'basic: all checks passed'
do
	if ! grep -qxF "$expected" "$out"; then
		echo "FAIL: examples/basic did not print: $expected"
		exit 1
	fi
done
echo "ok: examples/basic"
