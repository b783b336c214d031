#!/bin/sh
# check_etcd_symbols.sh - libcowmap-etcd.so exports exactly the functions
# listed in tests/etcd-exported-symbols.txt (include/cowmap-etcd.h), with
# the cowmap_etcd_ prefix, and nothing else: check_symbols.sh on it.
#
# Run by `make check` when the mirror is built.

SYMBOLS_LIB=etcd/.libs/libcowmap-etcd.so
SYMBOLS_LIST=tests/etcd-exported-symbols.txt
export SYMBOLS_LIB SYMBOLS_LIST
exec ${SHELL:-/bin/sh} "${top_srcdir:-.}/tests/check_symbols.sh"
