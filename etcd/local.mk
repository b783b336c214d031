# etcd/local.mk - the etcd mirror: libcowmap-etcd, its tests and bench.
#
# Included from the top Makefile.am.  Built only when configure found
# libcurl and jansson (--with-etcd-mirror, automatic by default): the core
# library keeps its own dependencies.  It links libcowmap and uses only
# the public API of include/cowmap.h.

EXTRA_DIST += \
	tests/check_etcd_symbols.sh \
	tests/etcd-exported-symbols.txt

if BUILD_ETCD_MIRROR

include_HEADERS += include/cowmap-etcd.h
pkgconfig_DATA += cowmap-etcd.pc

lib_LTLIBRARIES += etcd/libcowmap-etcd.la
etcd_libcowmap_etcd_la_SOURCES = \
	etcd/mirror.c etcd/mirror.h \
	etcd/version.c \
	etcd/range.c \
	etcd/watch.c \
	etcd/gateway.c etcd/gateway.h
etcd_libcowmap_etcd_la_CFLAGS = $(AM_CFLAGS) $(COWMAP_VISIBILITY_CFLAGS) \
	$(URCU_CFLAGS) $(ETCD_DEPS_CFLAGS)
etcd_libcowmap_etcd_la_LIBADD = lib/libcowmap.la $(URCU_LIBS) $(ETCD_DEPS_LIBS)
etcd_libcowmap_etcd_la_LDFLAGS = $(AM_LDFLAGS) \
	-version-info $(COWMAP_ETCD_LT_VERSION_INFO) \
	-export-symbols-regex '^cowmap_etcd_' \
	-no-undefined

# Tests start their own etcd members (tests/etcd_cluster.c); they are
# skipped, saying why, only when the etcd binary is missing.
etcd_tests_cflags = $(AM_CFLAGS) $(URCU_CFLAGS) $(CHECK_CFLAGS) $(ETCD_DEPS_CFLAGS)
etcd_tests_ldadd = etcd/libcowmap-etcd.la lib/libcowmap.la $(URCU_LIBS) \
	$(CHECK_LIBS) $(ETCD_DEPS_LIBS)

check_PROGRAMS += tests/check_etcd
tests_check_etcd_SOURCES = tests/check_etcd.c \
	tests/etcd_cluster.c tests/etcd_cluster.h
tests_check_etcd_CFLAGS = $(etcd_tests_cflags)
tests_check_etcd_LDADD = $(etcd_tests_ldadd)

TESTS += tests/check_etcd_symbols.sh

# bench/etcd-mirror: revisions per second and publish lag (not a test).
EXTRA_PROGRAMS += bench/etcd-mirror
bench_etcd_mirror_SOURCES = bench/etcd_mirror.c \
	tests/etcd_cluster.c tests/etcd_cluster.h
bench_etcd_mirror_CFLAGS = $(etcd_tests_cflags)
bench_etcd_mirror_LDADD = $(etcd_tests_ldadd)
CLEANFILES += bench/etcd-mirror$(EXEEXT)

endif

# examples/config-reload --etcd ENDPOINTS --prefix P: the configuration
# from an etcd prefix (examples/config-reload/etcd_source.c).  The
# per-target CPPFLAGS is set in every configuration: automake then uses
# it instead of AM_CPPFLAGS.
config_reload_etcd_cppflags =
if BUILD_ETCD_MIRROR
config_reload_etcd_cppflags += -DCONFIG_RELOAD_ETCD=1
examples_config_reload_config_reload_SOURCES += \
	examples/config-reload/etcd_source.c \
	examples/config-reload/etcd_source.h
examples_config_reload_config_reload_LDADD += etcd/libcowmap-etcd.la
endif
examples_config_reload_config_reload_CPPFLAGS = $(AM_CPPFLAGS) \
	$(config_reload_etcd_cppflags)

# make bench-etcd: bench/etcd-mirror with BENCH_ETCD_ARGS (not a test).
BENCH_ETCD_ARGS =
.PHONY: bench-etcd
if BUILD_ETCD_MIRROR
bench-etcd: bench/etcd-mirror$(EXEEXT)
	./bench/etcd-mirror$(EXEEXT) $(BENCH_ETCD_ARGS)
else
bench-etcd:
	@echo "make bench-etcd: the etcd mirror is not built (configure did not find libcurl and jansson)"; exit 1
endif
