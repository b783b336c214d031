# bench/local.mk - `make bench`: cowmap against its peers (issue #4).
#
# Included from the top Makefile.am (non-recursive: paths are relative to
# the top directory).  The benchmark is never built by `make` or
# `make check`; `make bench` builds it, runs it and leaves in
# bench/results/ the summary (summary.txt), every figure as CSV
# (results.csv: workload,metric,implementation,value,unit) and the plots
# (reader_throughput.png, latency_vs_size.png, with their .dat data and
# .gp gnuplot scripts).  BENCH_ARGS passes options, for example
#   make bench BENCH_ARGS=--quick
# See bench/README.md for what is measured and how.
#
# From configure.ac: URCU_CFLAGS/URCU_LIBS (liburcu-memb),
# URCU_CDS_CFLAGS/URCU_CDS_LIBS (liburcu-cds, for cds_lfht),
# CK_CFLAGS/CK_LIBS, GLIB_CFLAGS/GLIB_LIBS, LIBM (LT_LIB_M; may be empty)
# and the conditional HAVE_BENCH_DEPS.  The top Makefile.am must have set
# EXTRA_PROGRAMS, CLEANFILES and EXTRA_DIST (possibly empty) before the
# include.  gnuplot is looked up at run time; without it the plot data and
# scripts are still written.
#
# The program links the convenience library, not libcowmap.la: it calls
# cm_hash_keyed() (lib/hash.h), the library's SipHash-1-3, so that every
# peer hashes with exactly the function cowmap uses.

BENCH_RESULTS = bench/results
BENCH_ARGS =

EXTRA_DIST += bench/README.md

.PHONY: bench

if HAVE_BENCH_DEPS
EXTRA_PROGRAMS += bench/cowmap-bench
bench_cowmap_bench_SOURCES = \
	bench/cowmap-bench.c \
	bench/peers.c \
	bench/workloads.c \
	bench/peers_cxx.cc \
	bench/bench.h
bench_cowmap_bench_CPPFLAGS = $(AM_CPPFLAGS) -I$(top_srcdir)/lib
bench_cowmap_bench_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS) $(URCU_CDS_CFLAGS) \
	$(CK_CFLAGS) $(GLIB_CFLAGS)
# The C++ peers: C++17 for libcuckoo and Boost.Unordered; bench.h's
# flexible array member is a GNU extension in C++.
bench_cowmap_bench_CXXFLAGS = -std=gnu++17 -pthread $(URCU_CFLAGS)
bench_cowmap_bench_LDADD = lib/libcowmap_core.la $(URCU_LIBS) $(URCU_CDS_LIBS) \
	$(CK_LIBS) $(GLIB_LIBS) $(LIBM)
CLEANFILES += bench/cowmap-bench$(EXEEXT)

bench: bench/cowmap-bench$(EXEEXT)
	@$(MKDIR_P) $(BENCH_RESULTS)
	./bench/cowmap-bench$(EXEEXT) --csv $(BENCH_RESULTS)/results.csv \
	    --plot $(BENCH_RESULTS) $(BENCH_ARGS) >$(BENCH_RESULTS)/summary.txt; \
	rc=$$?; cat $(BENCH_RESULTS)/summary.txt; exit $$rc
else
bench:
	@echo "make bench needs liburcu-cds, Concurrency Kit (ck_hs.h, -lck)," >&2
	@echo "glib-2.0, libcuckoo and Boost 1.81+ with a C++ compiler; install" >&2
	@echo "them (liburcu-dev libck-dev libglib2.0-dev libcuckoo-dev" >&2
	@echo "libboost1.81-dev g++) and re-run configure." >&2
	@exit 1
endif

