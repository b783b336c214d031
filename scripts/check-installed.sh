#!/bin/sh
# check-installed.sh - install a configured build and compile a program
# against it the way a user would: through cowmap.pc only.
#
#   sh scripts/check-installed.sh BUILDDIR
#
# BUILDDIR must be configured with a --prefix that this user may write
# (CI uses a temporary one).  `make install` installs there, then
# examples/basic.c is compiled with
#     cc -std=c11 basic.c $(pkg-config --cflags --libs cowmap liburcu-memb)
# using only the installed cowmap.pc, and run.  For a sanitizer build this
# proves the .pc carries what the program needs (an ASan library refuses
# to start in a program not linked with the ASan runtime).
#
# Environment: CC (default cc).

set -eu

[ $# -eq 1 ] || { echo "usage: sh scripts/check-installed.sh BUILDDIR" >&2; exit 2; }

top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
cc=${CC:-cc}

prefix=$(sed -n 's/^prefix=//p' "$build/cowmap.pc")
case $prefix in
/usr | /usr/local | "")
	echo "check-installed: $build has prefix '$prefix'; configure it with" \
		"a private --prefix" >&2
	exit 2 ;;
esac

echo "== make install (prefix $prefix)"
make -s -C "$build" install >/dev/null

pcdir=$(find "$prefix" -name cowmap.pc -path '*/pkgconfig/*' | head -n 1)
[ -n "$pcdir" ] || { echo "check-installed: no cowmap.pc under $prefix" >&2; exit 1; }
pcdir=$(dirname "$pcdir")
echo "== $pcdir/cowmap.pc"
cat "$pcdir/cowmap.pc"

PKG_CONFIG_PATH="$pcdir${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
flags=$(pkg-config --cflags --libs cowmap liburcu-memb)
libdir=$(pkg-config --variable=libdir cowmap)

out=$(mktemp -d "${TMPDIR:-/tmp}/cowmap-installed.XXXXXX")
trap 'rm -rf "$out"' EXIT
echo "== $cc -std=c11 -o basic examples/basic.c $flags"
# shellcheck disable=SC2086 # pkg-config's flags are words
"$cc" -std=c11 -o "$out/basic" "$top/examples/basic.c" $flags

echo "== basic (LD_LIBRARY_PATH=$libdir)"
LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$out/basic" >"$out/basic.out" 2>&1 || {
	rc=$?
	cat "$out/basic.out"
	echo "check-installed: basic, built from the installed cowmap.pc, failed (exit status $rc)" >&2
	exit 1
}
tail -n 3 "$out/basic.out"
echo "check-installed: basic built from the installed cowmap.pc runs"
