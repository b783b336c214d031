# tests/prefix.mk - the prefix-table tests (included by Makefile.am).

check_PROGRAMS += tests/check_prefix

tests_check_prefix_SOURCES = tests/check_prefix.c tests/prefix_model.c \
	tests/prefix_model.h tests/testutil.c tests/testutil.h
tests_check_prefix_CPPFLAGS = $(tests_cppflags)
tests_check_prefix_CFLAGS = $(tests_cflags)
tests_check_prefix_LDADD = $(tests_ldadd)

check_PROGRAMS += tests/check_prefix_fault

tests_check_prefix_fault_SOURCES = tests/check_prefix_fault.c \
	tests/prefix_model.c tests/prefix_model.h tests/testutil.c \
	tests/testutil.h
tests_check_prefix_fault_CPPFLAGS = $(tests_cppflags)
tests_check_prefix_fault_CFLAGS = $(tests_cflags)
tests_check_prefix_fault_LDADD = $(tests_ldadd)

check_PROGRAMS += tests/check_prefix_stress

tests_check_prefix_stress_SOURCES = tests/check_prefix_stress.c \
	tests/prefix_model.c tests/prefix_model.h tests/testutil.c \
	tests/testutil.h tests/rcu_flavors.h
tests_check_prefix_stress_CPPFLAGS = $(tests_cppflags)
tests_check_prefix_stress_CFLAGS = $(tests_flavors_cflags)
tests_check_prefix_stress_LDADD = $(tests_flavors_ldadd)
