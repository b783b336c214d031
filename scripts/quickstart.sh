#!/bin/sh
# quickstart.sh - install what cowmap needs, build it, run the demo.
#
#   sh scripts/quickstart.sh          build and run the config-reload demo
#   sh scripts/quickstart.sh check    the same, then run the test suite
#
# For Debian 12 (and derivatives).  Missing packages are installed with
# apt-get, which needs root; everything else runs as any user.  The build
# happens in the source tree.

set -eu

usage() {
	echo "usage: sh scripts/quickstart.sh [check]" >&2
	exit 2
}

mode=build
case $# in
0) ;;
1) [ "$1" = check ] || usage; mode=check ;;
*) usage ;;
esac

# Work from the top of the source tree, wherever we were called from.
cd "$(dirname "$0")/.."
[ -f configure.ac ] || { echo "quickstart: cannot find configure.ac" >&2; exit 1; }

say() {
	printf '\n== %s\n' "$*"
}

# --- Packages ----------------------------------------------------------

packages="build-essential autoconf automake libtool pkg-config liburcu-dev
check libck-dev libglib2.0-dev wamerican gnuplot-nox valgrind clang
libclang-rt-dev libcurl4-openssl-dev libjansson-dev etcd-server etcd-client
g++ libcuckoo-dev libboost1.81-dev libmimalloc-dev geoip-database"

installed() {
	dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null |
		grep -q '^install ok installed$'
}

missing=
if command -v dpkg-query >/dev/null 2>&1; then
	for p in $packages; do
		installed "$p" || missing="$missing $p"
	done
else
	echo "quickstart: dpkg-query not found; not a Debian system?" >&2
	# shellcheck disable=SC2086 # one line from the multi-line list
	echo "quickstart: install the equivalents of:" $packages >&2
	exit 1
fi

if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "quickstart: these packages are missing:$missing" >&2
		echo "quickstart: run this script as root to install them" \
			"(or install them yourself), then run it again." >&2
		exit 1
	fi
	say "installing:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	# shellcheck disable=SC2086 # word splitting of the package list is intended
	apt-get install -y --no-install-recommends $missing
else
	say "all required packages are installed"
fi

# --- Build ---------------------------------------------------------------

say "autoreconf -fi"
autoreconf -fi

say "./configure"
./configure

say "make -j2"
make -j2

# The main demo: a TCP server on loopback serves requests from several
# client threads while its configuration is reloaded 150 times.
say "examples/config-reload/config-reload --demo"
./examples/config-reload/config-reload --demo

[ "$mode" = check ] || exit 0

# --- Tests ---------------------------------------------------------------

say "make -j2 check"
if make -j2 check; then
	exit 0
fi

# Show the log of every test that did not pass.
for trs in tests/*.trs; do
	[ -f "$trs" ] || continue
	if grep -Eq '^:test-result: (FAIL|XPASS|ERROR)' "$trs"; then
		log="${trs%.trs}.log"
		say "$log"
		cat "$log"
	fi
done
echo "quickstart: make check failed" >&2
exit 1
