# tests/fuzz/local.mk - hardening tests and the fuzzer (issue #6).
#
# An Automake fragment for the top Makefile.am, which includes it with
#
#	include tests/fuzz/local.mk
#
# placed AFTER the definitions of check_PROGRAMS, EXTRA_DIST and the
# tests_* helper variables (the end of Makefile.am is fine): it appends
# to them.  Paths are relative to the top directory.  Every program added
# to check_PROGRAMS runs in `make check` through TESTS = $(check_PROGRAMS).

check_PROGRAMS += \
	tests/check_hardening \
	tests/check_misuse \
	tests/check_fork \
	tests/check_debug_misuse \
	tests/fuzz/replay

# Hash flooding, collisions, max_entries, the version macros.
tests_check_hardening_SOURCES = tests/check_hardening.c tests/testutil.c \
	tests/testutil.h
tests_check_hardening_CPPFLAGS = $(tests_cppflags)
tests_check_hardening_CFLAGS = $(tests_cflags)
tests_check_hardening_LDADD = $(tests_ldadd)

# Every public call with NULL arguments; finished transactions.
tests_check_misuse_SOURCES = tests/check_misuse.c
tests_check_misuse_CPPFLAGS = $(tests_cppflags)
tests_check_misuse_CFLAGS = $(tests_cflags)
tests_check_misuse_LDADD = $(tests_ldadd)

# A process using a cell forks; parent and child both go on.
tests_check_fork_SOURCES = tests/check_fork.c
tests_check_fork_CPPFLAGS = $(tests_cppflags)
tests_check_fork_CFLAGS = $(tests_cflags)
tests_check_fork_LDADD = $(tests_ldadd)

# Use of released versions, caught by the debug build's checks: the
# library sources are compiled again, into this program only, with
# COWMAP_DEBUG=1, so the test runs in every configuration.
tests_check_debug_misuse_SOURCES = tests/check_debug_misuse.c \
	tests/capture.c tests/capture.h \
	$(lib_libcowmap_core_la_SOURCES)
tests_check_debug_misuse_CPPFLAGS = $(tests_cppflags) -DCOWMAP_DEBUG=1
tests_check_debug_misuse_CFLAGS = $(tests_cflags)
tests_check_debug_misuse_LDADD = $(URCU_LIBS) $(CHECK_LIBS)

# The fuzz harness replayed on the seed corpus and every regression input,
# with the ordinary compiler (no clang needed).
tests_fuzz_replay_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_ops.c \
	tests/fuzz/harness.c tests/fuzz/harness.h
tests_fuzz_replay_CPPFLAGS = $(tests_cppflags)
tests_fuzz_replay_CFLAGS = $(tests_cflags)
tests_fuzz_replay_LDADD = $(tests_ldadd)

# Directories are distributed whole, so a new regression input needs no
# change here.
EXTRA_DIST += \
	tests/fuzz/corpus \
	tests/fuzz/regressions \
	tests/fuzz/fuzz.sh \
	tests/fuzz/make_corpus.sh

# ---------------------------------------------------------------------------
# make fuzz: build tests/fuzz/fuzz_ops.c with clang's libFuzzer (and ASan +
# UBSan) and run it for FUZZ_SECONDS on a copy of the corpus.  Never part
# of `make` or `make check`.  See tests/fuzz/fuzz.sh for the variables.
# ---------------------------------------------------------------------------

FUZZ_CC = clang
FUZZ_SECONDS = 60
FUZZ_CPPFLAGS = -DCOWMAP_DEBUG=1
FUZZ_FLAGS =

.PHONY: fuzz clean-fuzz

fuzz: tests/fuzz/replay$(EXEEXT)
	top_srcdir='$(abs_top_srcdir)' top_builddir='$(abs_top_builddir)' \
	URCU_CFLAGS='$(URCU_CFLAGS)' URCU_LIBS='$(URCU_LIBS)' \
	FUZZ_CC='$(FUZZ_CC)' FUZZ_SECONDS='$(FUZZ_SECONDS)' \
	FUZZ_CPPFLAGS='$(FUZZ_CPPFLAGS)' FUZZ_FLAGS='$(FUZZ_FLAGS)' \
	$(SHELL) $(srcdir)/tests/fuzz/fuzz.sh

clean-fuzz:
	-rm -rf tests/fuzz/work tests/fuzz/fuzz_ops-libfuzzer$(EXEEXT)

clean-local: clean-fuzz
