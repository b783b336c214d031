#!/bin/sh
# make_corpus.sh - write the hand-made seed inputs of tests/fuzz/corpus/.
#
#   sh tests/fuzz/make_corpus.sh [DIR]      (default: the script's corpus/)
#
# The files are checked in; this script only documents how each was made
# and regenerates them.  The format is described at the top of
# tests/fuzz/fuzz_ops.c.  Opcodes (byte % 24):
#
#   00 new dst fam          01 set dst src key val   02 del dst src key
#   03 set_many s n keys..  04 retain dst src        05 release s
#   06 get s key            07 get_many s n keys..   08 iter s copy_at
#   09 diff a b stop        0a equal a b custom      0b stats s
#   0c txn_begin t s        0d txn_set t key val     0e txn_del t key
#   0f txn_get t key        10 txn_commit t dst      11 txn_abort t
#   12 fail k               13 canon s order flags   14 verify
#   15 cell s n steps..     16 set (as 01)           17 txn_set_many t n
#                                                      (key val)..
#
# Cell steps (byte % 8): 0/1 set key val (bit 6: inside a read-side
# section), 2 del key, 3 snapshot dst, 4 publish src how, 5 cas src how,
# 6 update mode key key, 7 read key, or with bit 5 set: concurrent writers
# (threads, requests, delete mask, first key); f8..ff arm a failure.
#
# Header: flags (bit 0 families 0/1 own values, bit 1 family 2 owns,
# hash mode (flags >> 2) % 6, so bits 5-7 count too: 0 SipHash, 1 one hash
# for all, 2 low bits only, 3 high bits only, 4 groups, 5 table; bits 5-7
# also give the max_entries index), then
# the hash parameter, then (mode 5 only) 32 bytes of per-key hashes.

set -eu

dir=${1:-$(dirname "$0")/corpus}
mkdir -p "$dir"

# hex FILE BYTE...: write the bytes (two hex digits each) to FILE.
hex() {
	f=$1
	shift
	: >"$f"
	for b in "$@"; do
		# shellcheck disable=SC2059 # the format is the octal escape
		printf "\\$(printf %03o "0x$b")" >>"$f"
	done
}

# 1. SipHash, values not owned: versions, snapshots, diff, equal, iteration.
hex "$dir/basic" \
	00 00 \
	00 00 00 \
	03 00 0a 01 02 03 04 05 06 07 08 09 0a \
	04 01 00 \
	01 01 01 03 00 \
	02 02 00 05 \
	09 00 01 00 09 00 02 02 09 01 02 00 \
	0a 00 01 00 0a 00 04 01 \
	08 00 03 \
	07 00 06 01 02 03 ff 28 0b \
	06 01 03 06 02 05 \
	0b 00 13 00 01 03 13 01 05 82 \
	05 01 14

# 2. Owned values: transactions, commit, abort, value_free accounting.
hex "$dir/txn-owned" \
	01 00 \
	00 00 00 \
	03 00 0c 01 02 03 04 05 06 07 08 09 0a 0b 0c \
	0c 00 00 \
	0d 00 0f 00 0d 00 03 02 0d 00 04 0b 0e 00 01 0f 00 01 \
	10 00 01 \
	0c 01 01 0d 01 14 00 0d 01 14 00 0e 01 02 11 01 \
	0c 00 00 10 00 03 \
	09 00 01 00 0a 01 00 01 \
	05 00 14 \
	01 02 01 07 03 01 02 02 07 02 \
	14

# 3. Every key has the same hash: one collision node at depth 13.
hex "$dir/all-collide" \
	05 07 \
	00 00 00 \
	03 00 10 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 \
	0b 00 \
	02 01 00 03 02 01 01 04 \
	09 00 01 00 0a 00 01 00 \
	0c 00 01 0d 00 03 00 0e 00 05 0e 00 06 10 00 02 \
	13 02 04 07 13 00 00 85 \
	07 02 08 01 03 05 07 28 ff 11 12 \
	08 02 05 14

# 4. Allocation failures: set, del, txn_begin, txn_set, commit, new.
hex "$dir/faults" \
	01 00 \
	00 00 00 \
	03 00 08 01 02 03 04 05 06 07 08 \
	12 00 01 01 00 09 00 \
	12 02 01 01 00 0a 00 \
	12 01 02 02 00 03 \
	12 00 0c 00 00 \
	12 03 0c 00 00 \
	12 00 0d 00 0e 00 \
	12 04 0d 00 0e 00 \
	12 00 0e 00 02 \
	12 00 10 00 03 \
	12 00 00 04 80 \
	12 05 06 00 01 \
	14

# 5. max_entries 3 in families 0 and 2; family 1 unlimited, same layout.
hex "$dir/limits" \
	61 00 \
	00 00 00 \
	01 00 00 01 00 01 00 00 02 00 01 00 00 03 00 \
	01 00 00 04 00 \
	01 00 00 02 00 \
	0c 00 00 0d 00 05 00 0e 00 01 0d 00 05 00 10 00 01 \
	00 02 01 03 02 0c 01 02 03 04 05 06 07 08 09 0a 0b 0c \
	09 00 02 00 0a 00 02 00 \
	00 03 02 03 03 05 01 02 03 04 05 09 00 03 00 \
	14

# 6. A cell: set (also inside a read-side section), del, snapshot,
#    publish, cas, update, and a failed allocation.
hex "$dir/cell" \
	01 00 \
	00 00 00 \
	03 00 06 01 02 03 04 05 06 \
	15 00 0c \
	00 07 00 \
	40 08 00 \
	02 01 \
	03 02 \
	04 00 00 \
	05 02 01 \
	06 01 09 02 \
	06 00 01 01 \
	06 02 01 01 \
	f9 00 0a 00 \
	07 03 \
	14

# 7. Only the top 4 hash bits vary: deep single-child chains, collisions,
#    and a family with another seed (diff key by key).
hex "$dir/deep" \
	0e 03 \
	00 00 02 \
	03 00 0c 01 02 03 04 05 06 07 08 09 0a 0b 0c \
	00 01 00 \
	03 01 06 01 02 03 04 05 06 \
	09 00 01 00 09 01 00 03 0a 00 01 01 \
	02 00 00 02 02 00 00 03 0b 00 \
	13 00 02 07 13 01 03 86 08 01 02 14

# 8. Per-key hashes from the input (2 bytes per key 0..15): keys 1/2
#    collide fully, 3/4 share 12 bits, the empty key collides with key 5,
#    keys 6-10 collide, keys 11-15 share their low 8 bits.
hex "$dir/table" \
	15 00 \
	11 11  34 12  34 12  cd ab  cd bb  11 11  77 77  77 77 \
	77 77  77 77  77 77  66 06  66 16  66 26  66 36  66 46 \
	00 00 00 \
	03 00 08 00 01 02 03 04 05 06 07 \
	02 01 00 01 02 02 00 03 02 03 00 29 \
	09 00 01 00 09 00 02 00 09 00 03 00 \
	0b 00 0b 01 0b 03 \
	13 00 00 02 13 00 07 83 \
	0c 00 01 0d 00 01 00 0e 00 02 10 00 04 14

# 9. Low hash bits only (mask 5 bits) and groups of 3, mixed with deletes.
hex "$dir/lowbits" \
	09 05 \
	00 00 00 \
	03 00 10 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 \
	02 00 00 01 02 00 00 02 02 00 00 03 \
	13 00 05 00 0b 00 14
hex "$dir/groups" \
	13 02 \
	00 00 00 03 00 0c 01 02 03 04 05 06 07 08 09 0a 0b 0c \
	04 01 00 02 00 00 04 02 00 00 05 09 00 01 00 \
	0c 00 00 0e 00 06 0e 00 07 0d 00 06 00 10 00 02 \
	13 02 00 02 14

# 10. Concurrent cell writers (combined into transactions), without and
#     with a limit of 5 entries.
hex "$dir/cell-concurrent" \
	01 00 \
	00 00 00 03 00 04 01 02 03 04 \
	15 00 03 \
	27 02 03 05 01 \
	27 00 01 00 0a \
	07 00 \
	14
hex "$dir/cell-concurrent-limit" \
	81 00 \
	00 00 00 03 00 04 01 02 03 04 \
	15 00 03 \
	27 02 03 05 01 \
	27 01 02 00 14 \
	07 00 \
	14

# 11. Batches in transactions (owned values): repeated keys, current
#     values, a batch over a draft that single sets changed, injected
#     failures; then with one hash for all keys (a collision node) and a
#     limit of 5 entries.
hex "$dir/txn-set-many" \
	01 00 \
	00 00 00 \
	03 00 08 01 02 03 04 05 06 07 08 \
	0c 00 00 \
	0d 00 10 00 \
	17 00 0a 01 00 02 00 01 02 09 00 09 02 01 01 0a 03 0b 00 0c 00 01 00 \
	10 00 01 \
	0c 01 01 12 00 17 01 06 01 00 02 00 03 00 01 00 02 02 05 00 11 01 \
	0c 00 00 12 03 17 00 04 0d 00 0e 00 0f 00 10 00 10 00 02 \
	14
hex "$dir/txn-set-many-collide" \
	95 07 \
	00 00 00 \
	03 00 03 01 02 03 \
	0c 00 00 \
	17 00 06 04 00 05 00 04 02 06 00 01 00 07 00 \
	17 00 02 04 00 05 00 \
	10 00 01 \
	14
