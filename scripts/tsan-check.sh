#!/bin/sh
# tsan-check.sh - the ThreadSanitizer run: cowmap built with --enable-tsan
# against a liburcu built with ThreadSanitizer, the concurrent suites run
# under it, and any report is a failure.
#
#   sh scripts/tsan-check.sh WORKDIR
#
# 0. A probe: if a TSan program cannot start (an older TSan runtime with
#    vm.mmap_rnd_bits above 28), every program runs under setarch -R.
# 1. scripts/tsan-liburcu.sh WORKDIR/liburcu (Debian's liburcu source
#    package, instrumented; needs root the first time: deb-src, dpkg-dev).
# 2. cowmap configured out of tree in WORKDIR/build with --enable-tsan
#    --enable-werror, linked against that liburcu (run path set, checked
#    with ldd).  A source tree configured in place is copied with
#    `make distdir` to WORKDIR/src first, since automake allows only one
#    configuration per tree.
# 3. tests/tsan_canary: a free after a grace period must not be reported
#    (the instrumented liburcu is seen), a free without one must be (the
#    model does not hide real races); every flavor.
# 4. The suites with threads under TSan: tests/check_cell, check_stress,
#    check_lend, check_slab, check_hardening, check_backlog (0.5 s
#    runs) and check_prefix_stress with CK_FORK=no, then the
#    threaded examples' bounded demos (tests/check_examples_run.sh).
#    Suppressions come from tests/tsan.supp.  A suite fails on any report
#    (exit status, or "ThreadSanitizer" in its output) or failed check.
#    (check_fork is left out: TSan does not support starting threads in
#    the child of a multi-threaded fork, which is what it tests.)
#
# The last line is "tsan: N passed, N failed" (the canary counts as one).
# Environment: CC (default gcc), CI_JOBS (make -j, default 2),
# COWMAP_STRESS_SCALE (default 0.25 here).

set -u

[ $# -eq 1 ] || { echo "usage: sh scripts/tsan-check.sh WORKDIR" >&2; exit 2; }

top=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" || exit 1
work=$(cd "$1" && pwd)
jobs=${CI_JOBS:-2}
CC=${CC:-gcc}
export CC

passed=0
failed=0
suites="tests/check_cell tests/check_stress tests/check_lend tests/check_slab
tests/check_hardening tests/check_backlog tests/check_prefix_stress"

say() {
	printf '\n== tsan: %s\n' "$*"
}

# tsan_said LOG: TSan printed something other than its count of matched
# suppressions (a report, a CHECK failure, a fatal error).
tsan_said() {
	grep ThreadSanitizer "$1" | grep -qv 'ThreadSanitizer: Matched [0-9]* suppressions'
}

finish() {
	echo "tsan: $passed passed, $failed failed"
	[ "$failed" -eq 0 ] && [ "$1" -eq 0 ]
	exit $?
}

# --- 0. can TSan run here? -----------------------------------------------------

# Older TSan runtimes (GCC 12's among them) cannot map their shadow memory
# when the kernel randomises mmap with more than 28 bits (vm.mmap_rnd_bits);
# they die at start-up.  Without address randomisation they run.
launch=
printf '#include <pthread.h>\nstatic void *f(void *a) { return a; }\nint main(void) { pthread_t t; return pthread_create(&t, 0, f, 0) || pthread_join(t, 0); }\n' \
	>"$work/probe.c"
if ! $CC -fsanitize=thread -pthread "$work/probe.c" -o "$work/probe" >"$work/probe.log" 2>&1; then
	cat "$work/probe.log"
	echo "tsan: $CC cannot build a ThreadSanitizer program"
	failed=$((failed + 1))
	finish 1
fi
if ! "$work/probe" >"$work/probe.log" 2>&1; then
	if setarch "$(uname -m)" -R "$work/probe" >/dev/null 2>&1; then
		launch="setarch $(uname -m) -R"
		echo "TSan needs address randomisation off here" \
			"(vm.mmap_rnd_bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null)):" \
			"programs run under $launch"
	else
		cat "$work/probe.log"
		echo "tsan: a ThreadSanitizer program does not start here, not even" \
			"under setarch -R (try sysctl vm.mmap_rnd_bits=28)"
		failed=$((failed + 1))
		finish 1
	fi
fi

# --- 1. liburcu -------------------------------------------------------------

say "liburcu with ThreadSanitizer (scripts/tsan-liburcu.sh)"
prefix=$(sh "$top/scripts/tsan-liburcu.sh" "$work/liburcu" 2>"$work/liburcu.log" | tail -n 1)
if [ -z "$prefix" ] || [ ! -f "$prefix/lib/pkgconfig/liburcu-memb.pc" ]; then
	cat "$work/liburcu.log"
	echo "tsan: building liburcu failed"
	failed=$((failed + 1))
	finish 1
fi
grep '^== ' "$work/liburcu.log"

# --- 2. cowmap --------------------------------------------------------------

src=$top
if [ -f "$top/config.status" ]; then
	say "make distdir (the source tree is configured in place)"
	rm -rf "$work/src"
	if ! make -s -C "$top" distdir distdir="$work/src" >"$work/distdir.log" 2>&1; then
		cat "$work/distdir.log"
		failed=$((failed + 1))
		finish 1
	fi
	src=$work/src
fi

say "configure --enable-tsan --enable-werror; make"
rm -rf "$work/build"
mkdir -p "$work/build"
build=$work/build
if ! (
	cd "$build" &&
		PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
			"$src/configure" --enable-tsan --enable-werror \
			LDFLAGS="-Wl,-rpath,$prefix/lib" >"$work/configure.log" 2>&1 &&
		make -j"$jobs" >"$work/make.log" 2>&1 &&
		make -j"$jobs" $suites >>"$work/make.log" 2>&1
); then
	tail -n 40 "$work/configure.log" "$work/make.log"
	failed=$((failed + 1))
	finish 1
fi
sed -n '/^cowmap /,/^Next:/p' "$work/configure.log"

# Every program must load the instrumented liburcu, not the system's
# (the examples through libtool's wrappers, which set the library path).
for t in $suites examples/config-reload/config-reload \
	examples/routing-table/routing-table examples/lookup-table/lookup-table; do
	bad=$(cd "$build" && ./libtool --mode=execute ldd "$t" | awk -v p="$prefix/lib/" '
		/liburcu/ { if (index($3, p) == 1) good++; else print $1 " => " $3 }
		END { if (!good) print "no liburcu at all" }')
	if [ -n "$bad" ]; then
		echo "tsan: $t does not load the instrumented liburcu: $bad"
		failed=$((failed + 1))
		finish 1
	fi
done
echo "tests and examples load liburcu from $prefix/lib"

# TSAN_OPTIONS: every report is kept (halt_on_error=0) and sets the exit
# status; the suppressions file holds only named, explained exceptions.
tsan_options="halt_on_error=0 exitcode=66 history_size=4 second_deadlock_stack=1"
tsan_options="$tsan_options print_suppressions=1 suppressions=$top/tests/tsan.supp"

# --- 3. canary --------------------------------------------------------------

say "tests/tsan_canary (grace periods seen, their absence reported)"
# shellcheck disable=SC2046 # pkg-config's flags are words
if ! $CC -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=thread -fno-omit-frame-pointer \
	-pthread -Wall -Wextra -Werror -I"$top/tests" \
	$(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs \
		liburcu-memb liburcu-qsbr liburcu-mb liburcu-bp) \
	-Wl,-rpath,"$prefix/lib" \
	"$top/tests/tsan_canary.c" -o "$build/tsan_canary" 2>"$work/canary-build.log"; then
	cat "$work/canary-build.log"
	failed=$((failed + 1))
	finish 1
fi
canary_ok=1
for f in memb qsbr mb bp; do
	TSAN_OPTIONS=$tsan_options $launch "$build/tsan_canary" grace "$f" \
		>"$work/canary-grace-$f.log" 2>&1
	rc=$?
	if [ "$rc" -ne 0 ] || tsan_said "$work/canary-grace-$f.log"; then
		cat "$work/canary-grace-$f.log"
		echo "tsan: canary grace $f: a free after a grace period was reported (exit status $rc)"
		canary_ok=0
	else
		echo "canary grace $f: not reported (right)"
	fi
	TSAN_OPTIONS=$tsan_options $launch "$build/tsan_canary" nograce "$f" \
		>"$work/canary-nograce-$f.log" 2>&1
	rc=$?
	if [ "$rc" -ne 66 ] || ! grep -q 'WARNING: ThreadSanitizer' "$work/canary-nograce-$f.log"; then
		cat "$work/canary-nograce-$f.log"
		echo "tsan: canary nograce $f: a free without a grace period went unreported (exit status $rc)"
		canary_ok=0
	else
		echo "canary nograce $f: reported (right)"
	fi
done
if [ "$canary_ok" -eq 1 ]; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
fi

# --- 4. the suites ------------------------------------------------------------

for t in $suites tests/check_examples_run.sh; do
	opts=$tsan_options
	# check_slab forks while holding every slab class lock (lib/slab.c's
	# fork handlers), more locks than TSan's deadlock detector can track
	# in one thread: it stops with an internal CHECK failure, not a report.
	[ "$t" = tests/check_slab ] && opts="$opts detect_deadlocks=0"
	case $t in
	*.sh) run="sh $src/$t" ;;
	*) run=$t ;;
	esac
	log="$work/$(basename "$t").log"
	say "$t (TSAN_OPTIONS=$opts)"
	start=$(date +%s)
	(
		cd "$build" &&
			env CK_FORK=no top_srcdir="$src" top_builddir="$build" \
				COWMAP_STRESS_SCALE="${COWMAP_STRESS_SCALE:-0.25}" \
				COWMAP_BACKLOG_SECONDS="${COWMAP_BACKLOG_SECONDS:-0.5}" \
				TSAN_OPTIONS="$opts" $launch $run
	) >"$log" 2>&1
	rc=$?
	reports=$(grep -c 'WARNING: ThreadSanitizer' "$log")
	grep -e 'Checks:' -e '^ok:' -e 'Matched' -e 'suppressions' "$log"
	echo "$t: exit status $rc, $reports reports, $(($(date +%s) - start)) s"
	if [ "$rc" -eq 0 ] && ! tsan_said "$log"; then
		passed=$((passed + 1))
	else
		cat "$log"
		echo "tsan: FAIL: $t"
		failed=$((failed + 1))
	fi
done

finish 0
