/*
 * alloc.c - allocation wrappers with per-thread fault injection.
 *
 * The countdown is thread-local so that a test which makes allocations
 * fail never disturbs liburcu's call_rcu thread or other test threads.
 * In normal operation the cost is one thread-local load and a predictable
 * branch per allocation; readers never allocate at all.
 */
#include "alloc.h"

#include <stdlib.h>

static _Thread_local long fail_countdown = -1;	/* -1: never fail */
static _Thread_local unsigned long alloc_count;

static int should_fail(void)
{
	alloc_count++;
	if (fail_countdown < 0)
		return 0;
	if (fail_countdown == 0)
		return 1;
	fail_countdown--;
	return 0;
}

void *cm_malloc(size_t size)
{
	return should_fail() ? NULL : malloc(size);
}

void *cm_calloc(size_t count, size_t size)
{
	return should_fail() ? NULL : calloc(count, size);
}

void cm_free(void *p)
{
	free(p);
}

void cm_test_fail_after(long n)
{
	fail_countdown = n < 0 ? -1 : n;
}

unsigned long cm_test_alloc_count(void)
{
	return alloc_count;
}
