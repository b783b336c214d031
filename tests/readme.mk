# The README's first program ("A minimal program") is cut out of README.md,
# compiled against the library and run by make check, so that the page a
# new user starts from cannot drift from the library it describes.

check_PROGRAMS += tests/readme_program
nodist_tests_readme_program_SOURCES = tests/readme_program.c
tests_readme_program_CFLAGS = $(AM_CFLAGS) $(URCU_CFLAGS)
tests_readme_program_LDADD = lib/libcowmap.la $(URCU_LIBS)
CLEANFILES += tests/readme_program.c

# The lines between the first "```c" fence and the fence that closes it.
tests/readme_program.c: $(top_srcdir)/README.md
	$(AM_V_GEN)$(MKDIR_P) tests && \
	$(AWK) '/^```c$$/ { n++; next } /^```$$/ && n == 1 { exit } n == 1' \
	    $(top_srcdir)/README.md >$@.tmp && \
	test -s $@.tmp && mv $@.tmp $@
