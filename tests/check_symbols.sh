#!/bin/sh
# check_symbols.sh - libcowmap.so exports exactly the functions listed in
# tests/exported-symbols.txt (the API of include/cowmap.h), nothing else.
#
# Run by `make check`, which sets top_builddir, top_srcdir and NM.
# SYMBOLS_LIB and SYMBOLS_LIST (relative to top_builddir and top_srcdir)
# check another library the same way (tests/check_etcd_symbols.sh).

set -eu

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
NM=${NM:-nm}

lib="$top_builddir/${SYMBOLS_LIB:-lib/.libs/libcowmap.so}"
list="$top_srcdir/${SYMBOLS_LIST:-tests/exported-symbols.txt}"
listname=$(basename "$list")

if [ ! -f "$lib" ]; then
	echo "SKIP: $lib was not built (configured with --disable-shared?)"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cowmap-symbols.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# BSD-style nm lines: "address type name".  Every defined dynamic symbol
# counts except A (version-node names): the API exports no data objects,
# so anything else that shows up is a mistake too.
$NM -D --defined-only "$lib" >"$tmp/nm"
libname=$(basename "$lib")
awk 'NF >= 3 && $2 != "A" { sub(/@.*/, "", $3); print $3 }' "$tmp/nm" |
	LC_ALL=C sort -u >"$tmp/exported-by-$libname"
grep -v -e '^#' -e '^[[:space:]]*$' "$list" | LC_ALL=C sort -u >"$tmp/$listname"

if ! (cd "$tmp" && diff -u "$listname" "exported-by-$libname") >"$tmp/diff"; then
	echo "FAIL: symbols exported by $lib differ from $list"
	echo "('-' = listed but not exported, '+' = exported but not listed)"
	cat "$tmp/diff"
	exit 1
fi

echo "ok: $(wc -l <"$tmp/exported-by-$libname" | tr -d ' ') exported functions of $libname match $listname"
