# bench/lpm.mk - `make bench-lpm`: cowmap's prefix tables against DPDK's
# rte_lpm and rte_lpm6 (issue #16).
#
# Included from the top Makefile.am after bench/local.mk.  From
# configure.ac: DPDK_CFLAGS/DPDK_LIBS (pkg-config libdpdk) and the
# conditional HAVE_DPDK; without DPDK the target says so and succeeds,
# so that `make bench` still runs the hash-map bench.
#
# The program shares the route lists and the GeoIP reader with
# examples/routing-table (rib.c, geoip.c).  It links the convenience
# library, as a program linking libcowmap statically would: the peer's
# look-ups are inline functions of its headers.  DPDK's headers need GNU
# C (typeof, asm), hence -std=gnu11 after the project's -std=c11.
#
# LPM_BENCH_ARGS passes options (see bench/README.md), for example
#   make bench-lpm LPM_BENCH_ARGS=--quick
# The summary is also left in bench/results/lpm.txt.

LPM_BENCH_ARGS =

.PHONY: bench-lpm

if HAVE_DPDK
EXTRA_PROGRAMS += bench/lpm-bench
bench_lpm_bench_SOURCES = \
	bench/lpm-bench.c \
	bench/lpm-cowmap.c \
	bench/lpm-dpdk.c \
	bench/lpm.h \
	examples/routing-table/rib.c \
	examples/routing-table/rib.h \
	examples/routing-table/geoip.c \
	examples/routing-table/geoip.h
bench_lpm_bench_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/examples/routing-table
bench_lpm_bench_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS) $(DPDK_CFLAGS) -std=gnu11
bench_lpm_bench_LDADD = lib/libcowmap_core.la $(URCU_LIBS) $(DPDK_LIBS) -lpthread
CLEANFILES += bench/lpm-bench$(EXEEXT)

bench-lpm: bench/lpm-bench$(EXEEXT)
	@$(MKDIR_P) bench/results
	./bench/lpm-bench$(EXEEXT) $(LPM_BENCH_ARGS) >bench/results/lpm.txt; \
	rc=$$?; cat bench/results/lpm.txt; exit $$rc
else
bench-lpm:
	@echo "make bench-lpm: DPDK (pkg-config libdpdk) was not found by configure;"
	@echo "install libdpdk-dev and re-run configure to compare with rte_lpm."
endif
