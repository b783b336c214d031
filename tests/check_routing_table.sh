#!/bin/sh
# check_routing_table.sh - examples/routing-table answers longest-prefix
# questions exactly, refuses malformed input with its line number, and its
# packet loop stays consistent on tables of either family.
#
#   1. --lookup on the committed route files tests/routing-table/ipv4.routes
#      and ipv6.routes (nested prefixes, host routes, blackhole and
#      unreachable routes, attributes to ignore, addresses no route
#      covers): the output must equal ipv4.expected / ipv6.expected.
#   2. Malformed route files, one fault each, and a malformed address on
#      standard input: refused, with the line number, nothing answered.
#   3. --lookup on a generated table of ~85000 IPv4 routes of mixed lengths
#      against a plain reference written in awk (the longest of the 33
#      possible prefixes of each address that the file lists).
#   4. The packet loop with route updates, on both sample files and on a
#      generated IPv6 table: every batch consistent.
#   5. The GeoIP reader on two tiny databases written by this script.
#   6. With geoip-database installed: the GeoIP tables are written, read
#      back and answer; otherwise this part is skipped with a message.
#
# Run by `make check`, which sets top_builddir, top_srcdir and EXEEXT.

set -eu

top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
EXEEXT=${EXEEXT:-}
rt="$top_builddir/examples/routing-table/routing-table$EXEEXT"
data="$top_srcdir/tests/routing-table"
geoip_dir=${GEOIP_DIR:-/usr/share/GeoIP}

if [ ! -x "$rt" ]; then
	echo "FAIL: $rt was not built"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/cowmap-routing.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

fail() {
	echo "FAIL: $*"
	exit 1
}

# --- 1. Exact answers on the committed files ---------------------------------
for family in ipv4 ipv6; do
	"$rt" --lookup "$data/$family.routes" <"$data/$family.addresses" \
		>"$tmp/$family.out" 2>"$tmp/$family.err" ||
		{ cat "$tmp/$family.err"; fail "--lookup $family.routes exited non-zero"; }
	if ! diff -u "$data/$family.expected" "$tmp/$family.out"; then
		fail "--lookup $family.routes: answers differ (above: - expected, + got)"
	fi
	[ -s "$tmp/$family.err" ] && { cat "$tmp/$family.err"; fail "$family: wrote to stderr"; }
	echo "ok: --lookup $family.routes: $(wc -l <"$tmp/$family.out") answers as expected"
done

# --- 2. Malformed input is refused with its line number -----------------------
# refuse NAME "EXPECTED MESSAGE" CONTENT: the file is refused, nothing is
# printed on stdout, and stderr names the file and line.
refuse() {
	name=$1 expected=$2
	printf '%b' "$3" >"$tmp/$name"
	if echo 10.0.0.1 | "$rt" --lookup "$tmp/$name" >"$tmp/out" 2>"$tmp/err"; then
		fail "$name was accepted"
	fi
	[ -s "$tmp/out" ] && { cat "$tmp/out"; fail "$name: answers printed"; }
	grep -qF "$name:$expected" "$tmp/err" ||
		{ cat "$tmp/err"; fail "$name: expected '$name:$expected'"; }
	echo "ok: refused $(cat "$tmp/err")"
}
refuse host-bits.routes '2: host bits set' \
	'10.0.0.0/8 via 192.0.2.1\n10.1.2.3/16 dev eth0\n'
refuse long.routes '1: bad prefix length' '10.0.0.0/33 dev eth0\n'
refuse no-length.routes '1: bad prefix length' '10.0.0.0/ dev eth0\n'
refuse bad-address.routes '3: bad destination address' \
	'# comment\n\n10.0.0.256/24 dev eth0\n'
refuse mixed.routes '4: an IPv6 route in an IPv4 file' \
	'default via 192.0.2.1\n10.0.0.0/8 dev eth0\n# comment\n2001:db8::/32 dev eth0\n'
refuse mixed6.routes '2: an IPv4 route in an IPv6 file' \
	'2001:db8::/32 dev eth0\n10.0.0.0/8 dev eth0\n'
refuse twice.routes '3: 10.0.0.0/8 already at line 1' \
	'10.0.0.0/8 dev eth0\n10.1.0.0/16 dev eth1\n10.0.0.0/8 via 192.0.2.1\n'
refuse no-hop.routes '2: no next hop' '10.0.0.0/8 dev eth0\n10.1.0.0/16\n'
refuse unknown.routes '1: unknown word' '10.0.0.0/8 dev eth0 colour blue\n'
refuse gateway.routes '1: gateway of the other address family' \
	'10.0.0.0/8 via 2001:db8::1\n'
refuse via.routes '1: via without a gateway' '10.0.0.0/8 via\n'
refuse empty.routes '2: no routes' '# nothing\n\n'

printf '10.1.2.3\nbanana\n10.1.2.4\n' >"$tmp/addresses"
if "$rt" --lookup "$data/ipv4.routes" <"$tmp/addresses" >"$tmp/out" 2>"$tmp/err"; then
	fail "--lookup accepted a malformed address"
fi
[ "$(cat "$tmp/out")" = "10.1.2.3 10.1.2.0/24 via 10.1.0.2 dev eth1" ] ||
	{ cat "$tmp/out"; fail "--lookup: the answers before the bad address"; }
grep -qF 'standard input:2: not an IPv4 address: banana' "$tmp/err" ||
	{ cat "$tmp/err"; fail "--lookup did not name the bad address line"; }
echo "ok: refused $(cat "$tmp/err")"
printf '2001:db8::1\n' | "$rt" --lookup "$data/ipv4.routes" >/dev/null 2>&1 &&
	fail "--lookup answered an IPv6 address from an IPv4 table"
echo "ok: an IPv6 address is refused by an IPv4 table"

# --- 3. A generated table against a reference in awk --------------------------
"$rt" --generate 50000 "$tmp/gen4.routes" >/dev/null
# Hosts of the first 1500 routes, and 1500 random addresses.
awk 'BEGIN { srand(7) }
     /^#/ { next }
     {
	split($1, p, "/"); split(p[1], o, ".")
	net = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
	n++
	if (n <= 1500)
		a = net + int(rand() * 2 ^ (32 - p[2]))
	else if (n <= 3000)
		a = int(rand() * 2 ^ 32)
	else
		exit
	printf "%d.%d.%d.%d\n", int(a / 16777216), int(a / 65536) % 256,
	       int(a / 256) % 256, a % 256
     }' "$tmp/gen4.routes" >"$tmp/gen4.addresses"
awk 'function ip(a) {
	return sprintf("%d.%d.%d.%d", int(a / 16777216), int(a / 65536) % 256,
		       int(a / 256) % 256, a % 256)
     }
     FNR == NR {
	if ($0 ~ /^#/) next
	hop = $2; for (i = 3; i <= NF; i++) hop = hop " " $i
	route[$1] = hop
	next
     }
     {
	split($1, o, ".")
	a = ((o[1] * 256 + o[2]) * 256 + o[3]) * 256 + o[4]
	answer = "-"
	for (len = 32; len >= 0; len--) {
		m = 2 ^ (32 - len); key = ip(int(a / m) * m) "/" len
		if (key in route) { answer = key " " route[key]; break }
	}
	print $1, answer
     }' "$tmp/gen4.routes" "$tmp/gen4.addresses" >"$tmp/gen4.expected"
"$rt" --lookup "$tmp/gen4.routes" <"$tmp/gen4.addresses" >"$tmp/gen4.out"
if ! diff "$tmp/gen4.expected" "$tmp/gen4.out" >"$tmp/diff"; then
	head -20 "$tmp/diff"
	fail "--lookup on a generated table differs from the awk reference"
fi
routes=$(grep -vc '^#' "$tmp/gen4.routes")
lengths=$(grep -v '^#' "$tmp/gen4.routes" | sed 's|^[^/]*/\([0-9]*\) .*|\1|' |
	sort -u | wc -l)
misses=$(grep -c ' -$' "$tmp/gen4.out" || true)
[ "$lengths" -ge 10 ] || fail "the generated table has only $lengths prefix lengths"
echo "ok: $(wc -l <"$tmp/gen4.out") answers on $routes generated routes" \
	"($lengths prefix lengths, $misses without a route) match the reference"

# --- 4. The packet loop against route updates ---------------------------------
"$rt" --generate 20000 --ipv6 "$tmp/gen6.routes" >/dev/null
for routes in "$data/ipv4.routes" "$data/ipv6.routes" "$tmp/gen6.routes"; do
	"$rt" --seconds 0.5 --batch 64 "$routes" >"$tmp/out" 2>&1 ||
		{ cat "$tmp/out"; fail "packet loop on $routes"; }
	grep -q 'inconsistent answers: 0$' "$tmp/out" ||
		{ cat "$tmp/out"; fail "inconsistent answers on $routes"; }
	[ "$(tail -n 1 "$tmp/out")" = "routing-table: OK" ] ||
		{ cat "$tmp/out"; fail "packet loop on $routes did not end OK"; }
	echo "ok: packet loop on $(basename "$routes"): $(grep '^lookups:' "$tmp/out")"
done

# --- 5. The GeoIP reader on tiny databases written here ----------------------
# byte N: write one byte (printf turns the octal escape of its format
# into the byte, whatever it is: NUL, newline, %).
byte() {
	printf "\\$(printf %03o "$1")"
}
# node LEFT RIGHT: a trie node of two records, each "n K" (node K) or
# "c K" (a leaf for country K: 16776960 + K), 3 bytes little-endian.
record() {
	byte "$2"
	case $1 in
	n) printf '\000\000' ;;
	c) printf '\377\377' ;;
	esac
}
node() {
	record $1 $2
	record $3 $4
}
mkdir "$tmp/geo"
# IPv4: 0/1 -> country 1; 128/2 -> none; 192/3 -> 2; 224/3 -> 3.
{
	node c 1 n 1
	node c 0 n 2
	node c 2 c 3
	printf '\377\377\377\001'
} >"$tmp/geo/GeoIP.dat"
# IPv6: 8000::/1 -> 5; a chain of zero bits down to ::/96, which holds
# the IPv4 copy (countries 9, to be skipped), and ::1:0:0/96 -> 7.
{
	node n 1 c 5
	i=1
	while [ $i -lt 95 ]; do
		node n $((i + 1)) c 0
		i=$((i + 1))
	done
	node n 96 c 7
	node c 9 c 9
	printf '\377\377\377\014'
} >"$tmp/geo/GeoIPv6.dat"
"$rt" --geoip 4 --geoip-dir "$tmp/geo" --write "$tmp/tiny4.routes" >/dev/null ||
	fail "--geoip 4 on a tiny database"
printf '0.0.0.0/1 dev geo1\n192.0.0.0/3 dev geo2\n224.0.0.0/3 dev geo3\n' \
	>"$tmp/tiny4.expected"
grep -v '^#' "$tmp/tiny4.routes" | diff -u "$tmp/tiny4.expected" - ||
	fail "GeoIP reader: the IPv4 prefixes of a tiny database"
"$rt" --geoip 6 --geoip-dir "$tmp/geo" --write "$tmp/tiny6.routes" >/dev/null ||
	fail "--geoip 6 on a tiny database"
grep ' dev geo' "$tmp/tiny6.routes" >"$tmp/tiny6.countries"
printf '::1:0:0/96 dev geo7\n8000::/1 dev geo5\n' | diff -u - "$tmp/tiny6.countries" ||
	fail "GeoIP reader: the native IPv6 prefixes of a tiny database"
for block in ::/16 ::/24 ::/32; do
	grep -q "^$block via 2001:db8:ffff::[0-9]* dev eth9\$" "$tmp/tiny6.routes" ||
		{ cat "$tmp/tiny6.routes"; fail "no covering aggregate $block"; }
done
printf 'not a database' >"$tmp/geo/GeoIP.dat"
"$rt" --geoip 4 --geoip-dir "$tmp/geo" --write "$tmp/bad.routes" >"$tmp/out" 2>&1 &&
	fail "--geoip 4 accepted a file that is not a GeoIP database"
grep -q 'GeoIP.dat: Invalid argument' "$tmp/out" || { cat "$tmp/out"; fail "no reason given"; }
echo "ok: GeoIP reader on tiny databases: prefixes, the skipped IPv4 copy, aggregates, a bad file"

# --- 6. The GeoIP tables, when geoip-database is installed --------------------
if [ ! -r "$geoip_dir/GeoIP.dat" ] || [ ! -r "$geoip_dir/GeoIPv6.dat" ]; then
	echo "skip: no GeoIP.dat/GeoIPv6.dat in $geoip_dir (geoip-database)"
	echo "ok: routing-table"
	exit 0
fi
for family in 4 6; do
	"$rt" --geoip $family --geoip-dir "$geoip_dir" --write "$tmp/geo$family.routes" \
		>"$tmp/out" 2>&1 || { cat "$tmp/out"; fail "--geoip $family --write"; }
	routes=$(grep -vc '^#' "$tmp/geo$family.routes")
	[ "$routes" -gt 50000 ] || fail "GeoIP IPv$family: only $routes routes"
	# Hosts of every 1000th route must each find a route at least as long.
	grep -v '^#' "$tmp/geo$family.routes" | awk 'NR % 1000 == 1 { print $1 }' |
		sed 's|/.*||' >"$tmp/geo.addresses"
	"$rt" --lookup "$tmp/geo$family.routes" <"$tmp/geo.addresses" >"$tmp/geo.out"
	[ "$(wc -l <"$tmp/geo.out")" -eq "$(wc -l <"$tmp/geo.addresses")" ] ||
		fail "GeoIP IPv$family: not one answer per address"
	grep -q ' -$' "$tmp/geo.out" && fail "GeoIP IPv$family: a route's own address has no route"
	grep -q ' dev geo[0-9]*$' "$tmp/geo.out" || fail "GeoIP IPv$family: no country next hop"
	echo "ok: GeoIP IPv$family: $routes routes written, read back and answering"
done
"$rt" --geoip 6 --geoip-dir "$geoip_dir" --seconds 0.5 >"$tmp/out" 2>&1 ||
	{ cat "$tmp/out"; fail "packet loop on the GeoIP IPv6 table"; }
grep -q 'inconsistent answers: 0$' "$tmp/out" ||
	{ cat "$tmp/out"; fail "inconsistent answers on the GeoIP IPv6 table"; }
echo "ok: packet loop on the GeoIP IPv6 table: $(grep '^lookups:' "$tmp/out")"
echo "ok: routing-table"
