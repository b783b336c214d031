/*
 * alloc.h - the library's only path to the heap.
 *
 * Every allocation goes through cm_malloc() so that tests can make the
 * n-th allocation fail (fault injection) and count allocations.  The test
 * hooks are internal symbols: they are not exported from libcowmap.so and
 * are reached only by test programs linked with the convenience library.
 */
#ifndef COWMAP_ALLOC_H
#define COWMAP_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

void *cm_malloc(size_t size);
void *cm_calloc(size_t count, size_t size);
/* As realloc(): on failure (NULL) @p is untouched and still @p's owner's. */
void *cm_realloc(void *p, size_t size);
/* @size bytes aligned to @align (a power of two, at least sizeof(void *)),
 * freed with cm_free(); for objects with over-aligned members, which
 * malloc() does not guarantee. */
void *cm_aligned_alloc(size_t align, size_t size);
void cm_free(void *p);
/* For allocators layered on these (slab.c): count one allocation and say
 * whether it may go ahead (false: fault injection makes it fail). */
bool cm_alloc_permitted(void);

/*
 * cm_free_quarantined - free @p later: it joins a fixed ring of recently
 * freed objects and is returned to malloc only when pushed out of it (or
 * at exit).  Callers poison the object first, so a handle used shortly
 * after it was finished reads a dead marker instead of reused memory.
 * Debug builds keep a much longer ring.
 */
void cm_free_quarantined(void *p);

/*
 * Test hooks.  Both are per thread: only the calling thread's allocations
 * fail or are counted, so liburcu's helper threads are never disturbed.
 * cm_test_fail_after(n): the next n allocations succeed, every later one
 * fails until cm_test_fail_after(-1) turns failures off.
 * cm_test_alloc_count(): allocations made so far by the library.
 */
void cm_test_fail_after(long n);
/* Return every quarantined object to malloc now, so a test that counts
 * live heap blocks sees none held back (debug builds keep many). */
void cm_test_quarantine_flush(void);
unsigned long cm_test_alloc_count(void);

#endif
