# examples/local.mk - the larger example programs and their tests.
#
# Included from the top Makefile.am (non-recursive build; paths are
# relative to the top), after noinst_PROGRAMS, TESTS and EXTRA_DIST are
# first assigned there:
#
#     include examples/local.mk
#
# Like examples/basic, the examples are built by `make` so they cannot rot,
# and are compiled like user code: the public header and the shared
# library only, plus liburcu-memb, which they call themselves.

noinst_PROGRAMS += \
	examples/config-reload/config-reload \
	examples/routing-table/routing-table \
	examples/lookup-table/lookup-table

examples_ldadd = lib/libcowmap.la $(URCU_LIBS) -lpthread

# config-reload: a TCP server whose key = value configuration is reloaded
# (SIGHUP or RELOAD) while it serves requests; --demo, --selftest, --check.
examples_config_reload_config_reload_SOURCES = \
	examples/config-reload/main.c \
	examples/config-reload/config.c \
	examples/config-reload/config.h \
	examples/config-reload/server.c \
	examples/config-reload/server.h \
	examples/config-reload/demo.c \
	examples/config-reload/selftest.c \
	examples/config-reload/modes.h
examples_config_reload_config_reload_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS)
examples_config_reload_config_reload_LDADD = $(examples_ldadd)

# routing-table: IPv4 or IPv6 routes of any length (a route file, or the
# GeoIP databases), batched longest-prefix match against route updates in
# transactions; --lookup answers addresses.  rib.c and geoip.c are shared
# with bench/lpm-bench.
examples_routing_table_routing_table_SOURCES = \
	examples/routing-table/routing-table.c \
	examples/routing-table/routes.c \
	examples/routing-table/routes.h \
	examples/routing-table/rib.c \
	examples/routing-table/rib.h \
	examples/routing-table/geoip.c \
	examples/routing-table/geoip.h
examples_routing_table_routing_table_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS)
examples_routing_table_routing_table_LDADD = $(examples_ldadd)

# lookup-table: user records read by many threads, changed by one.
examples_lookup_table_lookup_table_SOURCES = \
	examples/lookup-table/lookup-table.c
examples_lookup_table_lookup_table_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS)
examples_lookup_table_lookup_table_LDADD = $(examples_ldadd)

# The shell tests find the programs through $top_builddir and example.conf
# through $top_srcdir (AM_TESTS_ENVIRONMENT in the top Makefile.am).
TESTS += \
	tests/check_examples_run.sh \
	tests/check_config_reload.sh \
	tests/check_routing_table.sh

EXTRA_DIST += \
	examples/config-reload/example.conf \
	tests/check_examples_run.sh \
	tests/check_config_reload.sh \
	tests/check_routing_table.sh \
	tests/routing-table/ipv4.routes \
	tests/routing-table/ipv4.addresses \
	tests/routing-table/ipv4.expected \
	tests/routing-table/ipv6.routes \
	tests/routing-table/ipv6.addresses \
	tests/routing-table/ipv6.expected
