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

# The prefix-table fuzz harness replayed on its seed corpus and regression
# inputs (tests/fuzz/prefix-corpus, prefix-regressions) by `make check`;
# `make fuzz-prefix` runs it under libFuzzer as `make fuzz` does the map
# harness (tests/fuzz/fuzz.sh, with the same variables).
check_PROGRAMS += tests/fuzz/replay-prefix

tests_fuzz_replay_prefix_SOURCES = tests/fuzz/replay.c \
	tests/fuzz/fuzz_prefix.c tests/fuzz/harness.c tests/fuzz/harness.h \
	tests/prefix_model.c tests/prefix_model.h
tests_fuzz_replay_prefix_CPPFLAGS = $(tests_cppflags) -I$(top_srcdir)/tests \
	-DREPLAY_CORPUS='"prefix-corpus"' \
	-DREPLAY_REGRESSIONS='"prefix-regressions"'
tests_fuzz_replay_prefix_CFLAGS = $(tests_cflags)
tests_fuzz_replay_prefix_LDADD = $(tests_ldadd)

EXTRA_DIST += \
	tests/fuzz/prefix-corpus \
	tests/fuzz/prefix-regressions \
	tests/fuzz/make_prefix_corpus.sh

.PHONY: fuzz-prefix

fuzz-prefix: tests/fuzz/replay-prefix$(EXEEXT)
	top_srcdir='$(abs_top_srcdir)' top_builddir='$(abs_top_builddir)' \
	URCU_CFLAGS='$(URCU_CFLAGS)' URCU_LIBS='$(URCU_LIBS)' \
	FUZZ_CC='$(FUZZ_CC)' FUZZ_SECONDS='$(FUZZ_SECONDS)' \
	FUZZ_CPPFLAGS='$(FUZZ_CPPFLAGS)' FUZZ_FLAGS='$(FUZZ_FLAGS)' \
	FUZZ_TARGET=fuzz_prefix $(SHELL) $(srcdir)/tests/fuzz/fuzz.sh

EXTRA_DIST += doc/prefix-trie.md
