#!/bin/sh
# tsan-liburcu.sh - build liburcu with ThreadSanitizer from Debian's source
# package, for `./configure --enable-tsan` (see scripts/tsan-check.sh).
#
#   sh scripts/tsan-liburcu.sh DIR
#
# Fetches the source package with `apt-get source liburcu` into DIR/src,
# builds it with -fsanitize=thread and installs it into DIR/prefix (the
# last line printed is that prefix).  A second run with the same source
# version and the same scripts/tsan-urcu-atomics.h reuses the build.
#
# Debian 12's liburcu is not instrumented, so ThreadSanitizer cannot see
# its grace periods.  Instrumenting 0.13 alone is not enough either: it
# synchronises through x86 assembly, volatile accesses and fences, none of
# which TSan models.  scripts/tsan-urcu-atomics.h, force-included into
# every liburcu source file, turns those accesses into compiler atomics;
# the header says why that is the ordering liburcu provides.  A liburcu
# whose configure offers --enable-compiler-atomic-builtins (0.14 and
# later) gets that option instead of the header.
#
# If no source package is known to apt, the deb-src entries matching the
# Debian archive entries already configured are written to
# /etc/apt/sources.list.d/cowmap-deb-src.{sources,list} and the lists are
# updated: that, and installing dpkg-dev if it is missing, needs root.
#
# Environment: CC (default gcc; it must be the compiler cowmap is built
# with, so that both use one TSan runtime), JOBS (make -j, default 2).

set -eu

[ $# -eq 1 ] || { echo "usage: sh scripts/tsan-liburcu.sh DIR" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
atomics="$here/tsan-urcu-atomics.h"
mkdir -p "$1"
dir=$(cd "$1" && pwd)
cc=${CC:-gcc}
jobs=${JOBS:-2}

say() {
	printf '== tsan-liburcu: %s\n' "$*" >&2
}

as_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "tsan-liburcu: $* needs root; run this script as root" \
			"or do it yourself, then run it again." >&2
		exit 1
	fi
}

have_source() {
	apt-cache showsrc liburcu 2>/dev/null | grep -q '^Package: liburcu$'
}

# deb822 (Debian 12's /etc/apt/sources.list.d/debian.sources): one
# deb-src stanza per enabled "Types: deb" stanza of the Debian archive,
# with the same URIs, suites, components and key.
deb822_src() {
	awk '
	function flush() {
		if (n && is_deb && !has_src && debian && enabled) {
			print "Types: deb-src"
			for (i = 1; i <= n; i++)
				if (line[i] !~ /^Types:/)
					print line[i]
			print ""
		}
		n = 0; is_deb = 0; has_src = 0; debian = 0; enabled = 1
	}
	BEGIN { enabled = 1 }
	/^[ \t]*$/ { flush(); next }
	/^#/ { next }
	{
		line[++n] = $0
		if ($1 == "Types:") {
			for (i = 2; i <= NF; i++) {
				if ($i == "deb") is_deb = 1
				if ($i == "deb-src") has_src = 1
			}
		}
		if ($1 == "URIs:")
			for (i = 2; i <= NF; i++)
				if ($i ~ /\/debian\/?$/) debian = 1
		if ($1 == "Enabled:" && $2 == "no") enabled = 0
	}
	END { flush() }
	' "$@"
}

# One-line format (/etc/apt/sources.list): deb-src for each "deb" line
# of the Debian archive that has no deb-src twin.
oneline_src() {
	awk '
	$1 == "deb" {
		uri = ($2 ~ /^\[/) ? $3 : $2
		if (uri !~ /\/debian\/?$/) next
		l = $0; sub(/^deb[ \t]/, "deb-src ", l); want[l] = 1; order[++n] = l
	}
	$1 == "deb-src" { have[$0] = 1 }
	END { for (i = 1; i <= n; i++) if (!have[order[i]]) print order[i] }
	' "$@"
}

enable_deb_src() {
	as_root "enabling deb-src entries"
	d=/etc/apt/sources.list.d
	mkdir -p "$d"
	set --
	for f in "$d"/*.sources; do
		[ -f "$f" ] && [ "$f" != "$d/cowmap-deb-src.sources" ] && set -- "$@" "$f"
	done
	if [ $# -gt 0 ]; then
		deb822_src "$@" >"$d/cowmap-deb-src.sources.new"
		if [ -s "$d/cowmap-deb-src.sources.new" ]; then
			mv "$d/cowmap-deb-src.sources.new" "$d/cowmap-deb-src.sources"
			say "wrote $d/cowmap-deb-src.sources"
		else
			rm -f "$d/cowmap-deb-src.sources.new"
		fi
	fi
	set --
	for f in /etc/apt/sources.list "$d"/*.list; do
		[ -f "$f" ] && [ "$f" != "$d/cowmap-deb-src.list" ] && set -- "$@" "$f"
	done
	if [ $# -gt 0 ]; then
		oneline_src "$@" >"$d/cowmap-deb-src.list.new"
		if [ -s "$d/cowmap-deb-src.list.new" ]; then
			mv "$d/cowmap-deb-src.list.new" "$d/cowmap-deb-src.list"
			say "wrote $d/cowmap-deb-src.list"
		else
			rm -f "$d/cowmap-deb-src.list.new"
		fi
	fi
	apt-get -o DPkg::Lock::Timeout=900 update >&2
}

# --- The source package ---------------------------------------------------

if ! command -v dpkg-source >/dev/null 2>&1; then
	as_root "installing dpkg-dev"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 \
		install -y --no-install-recommends dpkg-dev >&2
fi

if ! have_source; then
	say "no deb-src entry knows liburcu: enabling deb-src"
	enable_deb_src
	have_source || { echo "tsan-liburcu: apt still knows no source package liburcu" >&2; exit 1; }
fi

version=$(apt-cache showsrc liburcu 2>/dev/null |
	sed -n 's/^Version: //p' | sort -V | tail -n 1)
stamp="liburcu $version, $cc, $(cksum <"$atomics" | cut -d' ' -f1)"
prefix="$dir/prefix"
if [ -f "$prefix/.cowmap-tsan" ] && [ "$(cat "$prefix/.cowmap-tsan")" = "$stamp" ]; then
	say "reusing $prefix ($stamp)"
	echo "$prefix"
	exit 0
fi

say "apt-get source liburcu=$version"
rm -rf "$dir/src" "$dir/build" "$prefix"
mkdir -p "$dir/src" "$dir/build"
# apt drops to the _apt user to download where it can; the directory is ours.
chmod 755 "$dir/src" 2>/dev/null || :
(cd "$dir/src" && apt-get -q source "liburcu=$version" >&2)
srcdir=$(find "$dir/src" -mindepth 1 -maxdepth 1 -type d -name 'liburcu-*' | head -n 1)
[ -n "$srcdir" ] || { echo "tsan-liburcu: no unpacked source in $dir/src" >&2; exit 1; }

# Debian's patches touch Makefile.am files: regenerate, as its build does.
say "autoreconf -fi ($srcdir)"
(cd "$srcdir" && autoreconf -fi >&2)

san="-fsanitize=thread -fno-omit-frame-pointer"
if "$srcdir/configure" --help | grep -q -e '--enable-compiler-atomic-builtins'; then
	extra=--enable-compiler-atomic-builtins
	cppflags=
else
	extra=
	cppflags="-include $atomics"
fi

say "configure ($version: ${extra:-$atomics})"
(
	cd "$dir/build" &&
		"$srcdir/configure" --prefix="$prefix" --disable-static $extra \
			CC="$cc" CFLAGS="-O1 -g $san" CPPFLAGS="$cppflags" \
			LDFLAGS="-fsanitize=thread" >&2
)

# Only the libraries and headers: liburcu's own tests and documentation
# are not needed.
say "make (include, src)"
for sub in include src; do
	make -C "$dir/build/$sub" -j"$jobs" >&2
	make -C "$dir/build/$sub" install >&2
done

echo "$stamp" >"$prefix/.cowmap-tsan"
say "installed $stamp into $prefix"
echo "$prefix"
