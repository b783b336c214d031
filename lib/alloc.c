/*
 * alloc.c - allocation wrappers with per-thread fault injection.
 *
 * The countdown is thread-local so that a test which makes allocations
 * fail never disturbs liburcu's call_rcu thread or other test threads.
 * In normal operation the cost is one thread-local load and a predictable
 * branch per allocation; readers never allocate at all.
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

#ifdef COWMAP_DEBUG
#define QUARANTINE_SLOTS 4096
#else
#define QUARANTINE_SLOTS 64
#endif

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

bool cm_alloc_permitted(void)
{
	return !should_fail();
}

void *cm_malloc(size_t size)
{
	return should_fail() ? NULL : malloc(size);
}

void *cm_calloc(size_t count, size_t size)
{
	return should_fail() ? NULL : calloc(count, size);
}

void *cm_realloc(void *p, size_t size)
{
	return should_fail() ? NULL : realloc(p, size);
}

void *cm_aligned_alloc(size_t align, size_t size)
{
	void *p;

	if (should_fail() || posix_memalign(&p, align, size) != 0)
		return NULL;
	return p;
}

void cm_free(void *p)
{
	free(p);
}

static void *_Atomic quarantine[QUARANTINE_SLOTS];
static atomic_uint quarantine_next;

void cm_free_quarantined(void *p)
{
	unsigned slot = atomic_fetch_add_explicit(&quarantine_next, 1,
						  memory_order_relaxed) %
			QUARANTINE_SLOTS;

	free(atomic_exchange_explicit(&quarantine[slot], p,
				      memory_order_acq_rel));
}

/* Empty the ring when the library is unloaded or the process exits, so
 * leak checkers see nothing left behind. */
__attribute__((destructor)) static void quarantine_drain(void)
{
	cm_test_quarantine_flush();
}

void cm_test_quarantine_flush(void)
{
	for (unsigned i = 0; i < QUARANTINE_SLOTS; i++)
		free(atomic_exchange_explicit(&quarantine[i], NULL,
					      memory_order_acq_rel));
}

void cm_test_fail_after(long n)
{
	fail_countdown = n < 0 ? -1 : n;
}

unsigned long cm_test_alloc_count(void)
{
	return alloc_count;
}
