/*
 * harness.c - the input, reports and fault arming of the fuzz harnesses
 * (see harness.h).
 */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

struct fz_run fz;

void fz_start(const char *harness, const uint8_t *data, size_t size)
{
	memset(&fz, 0, sizeof(fz));
	fz.harness = harness;
	fz.in = data;
	fz.len = size;
	fz.armed = -1;
	fz.trace = getenv("FUZZ_OPS_TRACE") != NULL;
}

uint8_t fz_rd(void)
{
	return fz.pos < fz.len ? fz.in[fz.pos++] : 0;
}

bool fz_input_left(void)
{
	return fz.pos < fz.len;
}

void fz_fail(int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: op #%u (%s), line %d: ", fz.harness, fz.op_no,
		fz.op_name != NULL ? fz.op_name : "setup", line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void fz_trace(const char *fmt, ...)
{
	va_list ap;

	if (!fz.trace)
		return;
	fprintf(stderr, "#%u %s: ", fz.op_no,
		fz.op_name != NULL ? fz.op_name : "setup");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void fz_arm(void)
{
	if (fz.armed >= 0)
		cm_test_fail_after(fz.armed);
}

void fz_disarm(void)
{
	cm_test_fail_after(-1);
}
