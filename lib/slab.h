/*
 * slab.h - trie nodes packed by size, so that churn does not scatter them.
 *
 * Nodes and leaves up to CM_SLAB_MAX bytes come from 64 KiB slabs, one
 * size class (a multiple of 8 bytes) per slab; larger ones (big
 * collision nodes, long keys) come from malloc.  The size of a block is
 * not stored: the caller passes the size it asked for, which a node knows
 * from its words field and a leaf from its key length.
 *
 * Fault injection and allocation counts treat every block as one
 * allocation (alloc.h), wherever it comes from.  ASan builds, runs under
 * valgrind and runs with COWMAP_SLABS=0 take every block from malloc, so
 * that a memory checker sees each node (lib/slab.c says why).
 */
#ifndef COWMAP_SLAB_H
#define COWMAP_SLAB_H

#include <stdbool.h>
#include <stddef.h>

#define CM_SLAB_MAX 1024

/* @bytes bytes, or NULL (ENOMEM or an injected failure). */
void *cm_slab_alloc(size_t bytes);

/* Give back @p, allocated with @bytes bytes; NULL is ignored. */
void cm_slab_free(void *p, size_t bytes);

/*
 * cm_slab_shrink - make @p (of @old_bytes) a block of @new_bytes: @p
 * itself when both sizes share a class, else a new block holding the
 * first @new_bytes bytes of @p, which is freed.  Returns NULL, leaving
 * @p as it was, if no block could be had; never an injected failure.
 */
void *cm_slab_shrink(void *p, size_t old_bytes, size_t new_bytes);

/*
 * The slabs' share of the library's heap, which malloc statistics do not
 * see: *mapped, the bytes of the slabs in use; *in_use, the bytes of the
 * blocks handed out (each counted at its class size), the figure that
 * compares with malloc's bytes in use.  Both 0 where every block comes
 * from malloc.  Free slabs are not counted, though in a huge-page region
 * they stay resident until the rest of their huge page is free too.
 */
void cm_slab_usage(size_t *mapped, size_t *in_use);

/* Test hook: the slabs allocated now, and the blocks handed out from
 * them and not given back (both 0 where slabs are compiled out). */
void cm_test_slab_census(size_t *slabs, size_t *blocks);

/* Test hook: take (@hold) or let go of the lock of the class that blocks
 * of @bytes come from, as an allocation would hold it (nothing where
 * every block comes from malloc). */
void cm_test_slab_hold(size_t bytes, bool hold);

#endif
