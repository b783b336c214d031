/*
 * capture.h - what the library writes to stderr, for tests that check
 * its reports: around calls in this process, or from a child process
 * that the call is expected to stop.
 */
#ifndef COWMAP_TESTS_CAPTURE_H
#define COWMAP_TESTS_CAPTURE_H

#include <check.h>
#include <string.h>

/* Point stderr at a temporary file until tu_capture_end(). */
void tu_capture_begin(void);

/*
 * Stop capturing; returns what was written, which also goes on to the
 * real stderr so that the test log keeps it.  The text lives in a static
 * buffer (8 KiB, the rest cut) until the next capture.
 */
const char *tu_capture_end(void);

/*
 * tu_capture_child - run @fn(@arg) in a child process with its stderr
 * captured; the child exits with status 0 if @fn returns.  Stores the
 * child's wait status in *@status and returns its stderr as
 * tu_capture_end() does.  The child must not use Check's assertions
 * (they would report into the parent's test); it says what it did on
 * stderr instead.  It works the same whether Check forks or not
 * (CK_FORK=no, for valgrind): the test's own process never stops.
 */
const char *tu_capture_child(void (*fn)(void *), void *arg, int *status);

#define ck_assert_reported(text, what)                                       \
	ck_assert_msg(strstr((text), (what)) != NULL,                        \
		      "expected a report mentioning \"%s\", got: \"%s\"",    \
		      (what), (text))

#endif
