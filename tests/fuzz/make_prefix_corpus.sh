#!/bin/sh
# make_prefix_corpus.sh - write the seed inputs of tests/fuzz/prefix-corpus/
# for the prefix-table harness (tests/fuzz/fuzz_prefix.c).
#
#   sh tests/fuzz/make_prefix_corpus.sh [DIR]   (default: prefix-corpus/)
#
# The files are checked in; this script documents how they were made.
# Each is a header byte (width index in bits 0-2, value ownership in bit
# 3, max_entries index in bits 4-6; see fuzz_prefix.c) followed by bytes
# from a fixed-seed generator, which the harness decodes into operations:
# every width of the harness, with and without value_free, some with a
# limit.  Opcodes (byte % 16): 0 set, 1 del, 2 get, 3 lookup,
# 4 lookup_many, 5 verify, 6 diff, 7 txn_begin, 8 txn_set, 9 txn_del,
# 10 txn_set_many, 11 txn_commit, 12 txn_abort, 13 fail, 14 cell, 15 set.

set -eu

dir=${1:-$(dirname "$0")/prefix-corpus}
mkdir -p "$dir"

# seed FILE HEADER SEED LENGTH: the header byte, then LENGTH bytes.
seed() {
	awk -v h="$2" -v s="$3" -v n="$4" 'BEGIN {
		srand(s);
		printf "%c", h;
		for (i = 0; i < n; i++) printf "%c", int(rand() * 256);
	}' </dev/null >"$1"
}

# LC_ALL=C: awk writes bytes, not characters.
export LC_ALL=C
seed "$dir/ipv4" 0 1 3000
seed "$dir/ipv6" 1 2 3000
seed "$dir/ipv4-owning" 8 3 3000
seed "$dir/ipv6-owning" 9 4 3000
seed "$dir/width8" 2 5 2000
seed "$dir/width7-owning" 11 6 2000
seed "$dir/width1" 4 7 1000
seed "$dir/width64-owning" 13 8 3000
seed "$dir/width33" 6 9 2000
seed "$dir/width126-owning" 15 10 3000
seed "$dir/ipv4-limit3" 88 11 2000
seed "$dir/ipv6-limit20-owning" 121 12 3000
