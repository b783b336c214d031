#!/bin/sh
# fuzz.sh - build a harness of tests/fuzz/ (fuzz_ops.c unless FUZZ_TARGET says
# otherwise) as a libFuzzer target and run it.
#
# Called by `make fuzz` (tests/fuzz/local.mk), which passes:
#   top_srcdir, top_builddir   where the sources are and where to build
#   URCU_CFLAGS, URCU_LIBS      from configure
# and, all optional:
#   FUZZ_CC        a clang with libFuzzer             (default: clang)
#   FUZZ_SECONDS   how long to fuzz                   (default: 60)
#   FUZZ_CPPFLAGS  how to compile the library         (default:
#                  -DCOWMAP_DEBUG=1: the trie invariant checker runs after
#                  every write; empty for release-build behaviour, which
#                  also probes finished transactions)
#   FUZZ_FLAGS     more libFuzzer options, e.g. "-fork=2" or "-runs=1000"
#   FUZZ_TARGET    fuzz_ops (maps, the default) or fuzz_prefix (prefix
#                  tables: its inputs are in prefix-corpus/ and
#                  prefix-regressions/, its replay is replay-prefix)
#
# The library sources are compiled together with the harness, all with
# -fsanitize=fuzzer,address,undefined.  The run starts from a fresh copy
# of tests/fuzz/corpus and tests/fuzz/regressions in
# $top_builddir/tests/fuzz/work/corpus (new inputs are added there, the
# source tree is never written).  A crash leaves its input in
# $top_builddir/tests/fuzz/work/artifacts/ and makes this script fail:
# reproduce it with tests/fuzz/replay FILE (FUZZ_OPS_TRACE=1 prints the
# decoded operations), then add the file to tests/fuzz/regressions/.

set -u

top_srcdir=${top_srcdir:?top_srcdir is not set}
top_builddir=${top_builddir:-.}
FUZZ_CC=${FUZZ_CC:-clang}
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_CPPFLAGS=${FUZZ_CPPFLAGS--DCOWMAP_DEBUG=1}
FUZZ_FLAGS=${FUZZ_FLAGS:-}
URCU_CFLAGS=${URCU_CFLAGS:-}
URCU_LIBS=${URCU_LIBS:--lurcu-memb -lurcu-common}
FUZZ_TARGET=${FUZZ_TARGET:-fuzz_ops}

out=$top_builddir/tests/fuzz
case $FUZZ_TARGET in
fuzz_prefix)
	work=$out/work-prefix
	extra_src="$top_srcdir/tests/fuzz/harness.c $top_srcdir/tests/prefix_model.c"
	dirs="prefix-corpus prefix-regressions"
	replay=$out/replay-prefix
	;;
*)
	work=$out/work
	extra_src=$top_srcdir/tests/fuzz/harness.c
	dirs="corpus regressions"
	replay=$out/replay
	;;
esac
bin=$out/$FUZZ_TARGET-libfuzzer

if ! command -v "$FUZZ_CC" >/dev/null 2>&1; then
	echo "fuzz.sh: $FUZZ_CC not found; make fuzz needs clang with" \
		"libFuzzer (Debian: clang and libclang-rt-dev)" >&2
	exit 1
fi

mkdir -p "$out" || exit 1
echo "fuzz.sh: building $bin with $FUZZ_CC ($FUZZ_CPPFLAGS)"
# shellcheck disable=SC2086 # the flag variables are word lists
if ! "$FUZZ_CC" -g -O1 -std=c11 -D_GNU_SOURCE $FUZZ_CPPFLAGS \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer \
	-I"$top_srcdir/include" -I"$top_srcdir/lib" -I"$top_srcdir/tests" \
	$URCU_CFLAGS "$top_srcdir"/lib/*.c \
	"$top_srcdir/tests/fuzz/$FUZZ_TARGET.c" $extra_src \
	$URCU_LIBS -pthread -o "$bin"; then
	echo "fuzz.sh: building the fuzzer failed (on Debian, libFuzzer's" \
		"runtime is in libclang-rt-dev, which clang does not pull in)" >&2
	exit 1
fi

rm -rf "$work"
mkdir -p "$work/corpus" "$work/artifacts" || exit 1
for d in $dirs; do
	for f in "$top_srcdir/tests/fuzz/$d"/*; do
		case ${f##*/} in README*) continue ;; esac
		[ -f "$f" ] && cp "$f" "$work/corpus/${d}-${f##*/}"
	done
done

echo "fuzz.sh: fuzzing for $FUZZ_SECONDS s"
# shellcheck disable=SC2086
"$bin" -max_total_time="$FUZZ_SECONDS" -timeout=30 -rss_limit_mb=4096 \
	-print_final_stats=1 -artifact_prefix="$work/artifacts/" \
	$FUZZ_FLAGS "$work/corpus"
rc=$?

found=$(find "$work/artifacts" -type f | head -n 20)
if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
	echo "fuzz.sh: FAILED (libFuzzer exit status $rc)" >&2
	for f in $found; do
		echo "fuzz.sh: crashing input: $f" >&2
		od -An -tx1 "$f" | head -n 8 >&2
	done
	echo "fuzz.sh: reproduce with: $replay FILE" \
		"(FUZZ_OPS_TRACE=1 for the decoded operations)," >&2
	echo "fuzz.sh: then add the file to tests/fuzz/${dirs#* }/" >&2
	exit 1
fi
echo "fuzz.sh: no crash in $FUZZ_SECONDS s"
