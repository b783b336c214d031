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
#  4. --etcd: the configuration from a prefix of a real etcd this script
#     starts (free loopback ports, a temporary data directory): an etcd
#     transaction is one version whose changes are logged, VERSION and
#     MGET answer its revision, MGET never mixes two transactions while
#     they are written, and the server follows etcd through a killed and
#     restarted member.  Skipped, saying why, when etcd or etcdctl is
#     missing or the program was built without the etcd mirror.
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
etcd_pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || :
	fi
	if [ -n "$etcd_pid" ] && kill -0 "$etcd_pid" 2>/dev/null; then
		kill -KILL "$etcd_pid" 2>/dev/null || :
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

# --- 4. --etcd -------------------------------------------------------------
if "$cr" --etcd 127.0.0.1:1 2>&1 | grep -q 'built without the etcd mirror'; then
	echo "skipped --etcd: config-reload was built without the etcd mirror"
	exit 0
fi
etcd=$(command -v etcd || :)
etcdctl=$(command -v etcdctl || :)
if [ -z "$etcd" ] || [ -z "$etcdctl" ]; then
	echo "skipped --etcd: etcd or etcdctl not found (Debian: etcd-server, etcd-client)"
	exit 0
fi

# perl (perl-base, always there) is the client: a free port, and requests.
free_port() {
	perl -MIO::Socket::INET -e \
		'print IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1:0")->sockport'
}
# ask PORT REQUEST...: the server's answers to the requests, in order.
ask() {
	perl -MIO::Socket::INET -e '
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:" . shift,
			Proto => "tcp") or die "connect: $!\n";
		print $s "$_\n" for @ARGV, "QUIT";
		print while <$s>;' "$@"
}
# mget_check PORT DONE: "MGET a b" until the file DONE exists; both values
# must come from one transaction (equal) and revisions must never go back.
mget_check() {
	perl -MIO::Socket::INET -e '
		my ($port, $done) = @ARGV;
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
			Proto => "tcp") or die "connect: $!\n";
		my ($n, $last, $mixed, %seen) = (0, 0, 0);
		my $end = time + 60;
		until (-e $done || time > $end) {
			print $s "MGET a b\n";
			my $h = <$s>;
			my ($rev) = $h =~ /^VALUES (\d+) 2$/ or die "bad answer: $h";
			my ($x, $y) = (scalar <$s>, scalar <$s>);
			$mixed++ if $x ne $y;
			die "revision went back: $last -> $rev\n" if $rev < $last;
			$last = $rev;
			$seen{$rev} = 1;
			$n++;
		}
		printf "mget: %d answers from %d revisions, %d mixed\n",
			$n, scalar keys %seen, $mixed;
		exit($mixed || keys %seen < 10 ? 1 : 0);' "$@"
}

p1=$(free_port)
p2=$(free_port)
ep="http://127.0.0.1:$p1"
start_etcd() {
	"$etcd" --name cr --data-dir "$tmp/etcd" \
		--listen-client-urls "$ep" --advertise-client-urls "$ep" \
		--listen-peer-urls "http://127.0.0.1:$p2" \
		--initial-advertise-peer-urls "http://127.0.0.1:$p2" \
		--initial-cluster "cr=http://127.0.0.1:$p2" \
		>>"$tmp/etcd.out" 2>&1 &
	etcd_pid=$!
	i=0
	until "$etcdctl" --endpoints "$ep" get /cr/ >/dev/null 2>&1; do
		i=$((i + 1))
		[ "$i" -le 200 ] || { cat "$tmp/etcd.out"; fail "etcd did not start"; }
		sleep 0.1
	done
}
ctl() {
	"$etcdctl" --endpoints "$ep" "$@" >/dev/null || fail "etcdctl $*"
}
# txn_rev OPS: one etcd transaction (etcdctl txn's format); its revision.
txn_rev() {
	printf '\n%s\n\n\n' "$1" | "$etcdctl" --endpoints "$ep" -w json txn |
		sed -n 's/.*"revision":\([0-9]*\).*/\1/p'
}

start_etcd
ctl put /cr/color red
ctl put /cr/size 10
ctl put /other/color green
pid=
"$cr" --port 0 --workers 2 --etcd "$ep" --prefix /cr/ \
	>"$tmp/etcd-out.log" 2>"$tmp/etcd-err.log" &
pid=$!
wait_for "$tmp/etcd-out.log" 'listening on 127\.0\.0\.1:[0-9]'
wait_for "$tmp/etcd-out.log" '+ color = red'
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/etcd-out.log")

# One etcd transaction: one version, its changes logged.
rev=$(txn_rev "put /cr/color blue
put /cr/shape round
del /cr/size")
[ -n "$rev" ] || fail "etcdctl txn gave no revision"
wait_for "$tmp/etcd-out.log" "config: revision $rev from etcd"
wait_for "$tmp/etcd-out.log" '1 added, 1 removed, 1 changed'
grep -q '~ color: red -> blue' "$tmp/etcd-out.log" || fail "change not logged"
grep -q '+ shape = round' "$tmp/etcd-out.log" || fail "addition not logged"
grep -q '\- size (was 10)' "$tmp/etcd-out.log" || fail "removal not logged"
grep -q 'green' "$tmp/etcd-out.log" && fail "a key outside the prefix was mirrored"

ask "$port" 'GET color' VERSION 'MGET color shape size' >"$tmp/answers.txt"
cat "$tmp/answers.txt"
printf 'VALUE blue\nVERSION %s\nVALUES %s 3\nVALUE blue\nVALUE round\nNOT_FOUND\n' \
	"$rev" "$rev" | diff - "$tmp/answers.txt" || fail "wrong answers for revision $rev"

# Transactions written while a client reads: MGET never mixes two.
(
	i=1
	while [ "$i" -le 40 ]; do
		txn_rev "put /cr/a $i
put /cr/b $i" >/dev/null
		i=$((i + 1))
	done
	sleep 0.2
	: >"$tmp/writer.done"
) &
writer=$!
mget_check "$port" "$tmp/writer.done" ||
	fail "an MGET mixed two etcd transactions (or saw too few revisions)"
wait "$writer"

# The member dies and comes back: the server follows it.
kill -KILL "$etcd_pid"
wait "$etcd_pid" 2>/dev/null || :
sleep 0.3
start_etcd
rev=$(txn_rev "put /cr/color violet")
wait_for "$tmp/etcd-out.log" "config: revision $rev from etcd"
ask "$port" VERSION 'GET color' >"$tmp/answers.txt"
printf 'VERSION %s\nVALUE violet\n' "$rev" | diff - "$tmp/answers.txt" ||
	fail "the server did not follow etcd after a restart"
grep -q 'config-reload: etcd: .*resuming from revision' "$tmp/etcd-err.log" ||
	fail "the reconnection was not logged"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" -eq 0 ] || fail "the --etcd server exited with status $status"
grep -q 'versions from etcd, last revision '"$rev"', [1-9][0-9]* reconnects' \
	"$tmp/etcd-out.log" || fail "final summary missing"
cat "$tmp/etcd-out.log" "$tmp/etcd-err.log" | tail -n 20
echo "ok: config-reload --etcd"
