/*
 * capture.c - stderr captured into a temporary file (see capture.h).
 */
#include "capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static FILE *capture_file;
static int saved_stderr = -1;

static const char *read_back(FILE *f)
{
	static char buf[8192];
	size_t n;

	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fputs(buf, stderr);	/* keep it visible in the test log */
	return buf;
}

void tu_capture_begin(void)
{
	fflush(stderr);
	capture_file = tmpfile();
	ck_assert_ptr_nonnull(capture_file);
	saved_stderr = dup(STDERR_FILENO);
	ck_assert_int_ge(saved_stderr, 0);
	ck_assert_int_ge(dup2(fileno(capture_file), STDERR_FILENO), 0);
}

const char *tu_capture_end(void)
{
	FILE *f = capture_file;

	fflush(stderr);
	dup2(saved_stderr, STDERR_FILENO);
	close(saved_stderr);
	saved_stderr = -1;
	capture_file = NULL;
	return read_back(f);
}

const char *tu_capture_child(void (*fn)(void *), void *arg, int *status)
{
	FILE *f = tmpfile();
	pid_t pid;

	ck_assert_ptr_nonnull(f);
	fflush(NULL);	/* nothing buffered is written twice */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (dup2(fileno(f), STDERR_FILENO) < 0)
			_exit(125);
		fn(arg);
		fflush(stderr);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, status, 0), pid);
	return read_back(f);
}
