/*
 * slab.c - size-class slabs for trie nodes.
 *
 * Why not malloc: a writer publishing single-key changes allocates a new
 * path of nodes per change and liburcu's call_rcu thread frees the old
 * paths a grace period later, thousands at a time.  glibc serves that
 * pattern badly for a trie: nodes come in some sixty sizes, freed blocks
 * are split and merged between them, and the live nodes end up scattered
 * over a heap many times their size.  Measured on the 104k-word map
 * (33k nodes, 3.6 MB): 1,040 distinct 4 KiB pages held its nodes when
 * built, 12,000-15,000 after 100k-170k single-key writes, so a lookup
 * that fitted in the TLB no longer did.  With one size class per slab,
 * a freed node's place is taken by the next node of its size and the
 * same writes leave the nodes on 2,300-2,900 pages.  A slab also saves
 * malloc's per-block header: a 44-byte node takes 48 bytes, not 64.
 *
 * Structure: class c holds blocks of 16 * (c + 1) bytes.  A slab is 64 KiB,
 * aligned to its size so that a block finds its slab by masking its
 * address; it starts with a header and hands out blocks from a bump
 * pointer, then from the list of blocks given back to it.  Each class
 * keeps the slabs that have room on a list and allocates from the first,
 * so allocation stays in few slabs; a slab that was full and gets a block
 * back joins the end.  A slab whose last block comes back is returned to
 * malloc unless it is the only one of its class with room (one spare per
 * class keeps a map of a single node from allocating and freeing a slab
 * on every change).
 *
 * Locking: one mutex per class.  Blocks are allocated by writers and
 * freed by whoever drops the last reference, often the call_rcu thread,
 * so the two meet on a class lock for a few instructions.  Readers never
 * come here.  Fork handlers hold every class lock across fork(), so a
 * child never inherits a lock taken by a thread that does not exist in
 * it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "slab.h"

#include "alloc.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#define SLABS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLABS 0
#endif
#endif
#ifndef SLABS
#define SLABS 1
#endif

#if SLABS && defined(HAVE_VALGRIND_MEMCHECK_H)
#include <valgrind/memcheck.h>
#else
/* Without valgrind's header the requests do nothing (but use their
 * arguments, so that no parameter goes unused). */
#define VALGRIND_MALLOCLIKE_BLOCK(addr, size, rz, zeroed)                    \
	((void)(addr), (void)(size))
#define VALGRIND_FREELIKE_BLOCK(addr, rz) ((void)(addr))
#define VALGRIND_MAKE_MEM_NOACCESS(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_MAKE_MEM_UNDEFINED(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_MAKE_MEM_DEFINED(addr, len) ((void)(addr), (void)(len))
#define VALGRIND_RESIZEINPLACE_BLOCK(addr, old, new, rz)                     \
	((void)(addr), (void)(old), (void)(new))
#endif

#define SLAB_BYTES ((size_t)64 * 1024)
#define GRAIN 16
#define NCLASSES (CM_SLAB_MAX / GRAIN)

struct slab {
	struct slab *next, *prev;	/* in its class's list of slabs with room */
	void *given_back;	/* freed blocks, linked through their first word */
	char *bump;		/* blocks never handed out start here */
	uint32_t live;		/* blocks handed out and not given back */
	uint16_t cls;
	bool listed;
};

/* Blocks start after the header, on a cache line. */
#define SLAB_HEADER ((sizeof(struct slab) + 63) & ~(size_t)63)

struct slab_class {
	alignas(64) pthread_mutex_t lock;
	struct slab *first, *last;	/* slabs with room */
	size_t slabs, blocks;	/* allocated, for the test hook */
};

static struct slab_class classes[NCLASSES];
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;
static atomic_bool classes_ready;	/* set once by classes_init() */

static size_t class_size(unsigned cls)
{
	return GRAIN * ((size_t)cls + 1);
}

static unsigned class_of(size_t bytes)
{
	return (unsigned)((bytes - 1) / GRAIN);
}

static void fork_prepare(void)
{
	for (unsigned c = 0; c < NCLASSES; c++)
		pthread_mutex_lock(&classes[c].lock);
}

static void fork_done(void)
{
	for (unsigned c = NCLASSES; c-- > 0;)
		pthread_mutex_unlock(&classes[c].lock);
}

static void classes_init(void)
{
	for (unsigned c = 0; c < NCLASSES; c++)
		pthread_mutex_init(&classes[c].lock, NULL);
	pthread_atfork(fork_prepare, fork_done, fork_done);
	atomic_store_explicit(&classes_ready, true, memory_order_release);
}

static struct slab *slab_of(const void *p)
{
	return (struct slab *)((uintptr_t)p & ~(uintptr_t)(SLAB_BYTES - 1));
}

static bool slab_has_room(const struct slab *s, size_t size)
{
	return s->given_back != NULL ||
	       (size_t)((const char *)s + SLAB_BYTES - s->bump) >= size;
}

static void list_push(struct slab_class *cl, struct slab *s, bool front)
{
	s->listed = true;
	if (front) {
		s->prev = NULL;
		s->next = cl->first;
		if (cl->first != NULL)
			cl->first->prev = s;
		else
			cl->last = s;
		cl->first = s;
	} else {
		s->next = NULL;
		s->prev = cl->last;
		if (cl->last != NULL)
			cl->last->next = s;
		else
			cl->first = s;
		cl->last = s;
	}
}

static void list_remove(struct slab_class *cl, struct slab *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		cl->first = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	else
		cl->last = s->prev;
	s->listed = false;
}

/* A new empty slab of class @cls, or NULL; called with the class locked.
 * Not an allocation of its own for fault injection: the block it is
 * taken for was counted. */
static struct slab *slab_new(unsigned cls)
{
	void *mem;

	if (posix_memalign(&mem, SLAB_BYTES, SLAB_BYTES) != 0)
		return NULL;

	struct slab *s = mem;

	s->given_back = NULL;
	s->bump = (char *)mem + SLAB_HEADER;
	s->live = 0;
	s->cls = (uint16_t)cls;
	s->listed = false;
	VALGRIND_MAKE_MEM_NOACCESS(s->bump, SLAB_BYTES - SLAB_HEADER);
	classes[cls].slabs++;
	return s;
}

/* Called with the class unlocked: its count was taken down already. */
static void slab_delete(struct slab *s)
{
	VALGRIND_MAKE_MEM_UNDEFINED((char *)s + SLAB_HEADER,
				    SLAB_BYTES - SLAB_HEADER);
	free(s);
}

/* A block of class @cls (counted already), or NULL. */
static void *class_alloc(unsigned cls, size_t bytes)
{
	struct slab_class *cl = &classes[cls];
	size_t size = class_size(cls);
	void *p;

	pthread_once(&classes_once, classes_init);
	pthread_mutex_lock(&cl->lock);

	struct slab *s = cl->first;

	if (s == NULL) {
		s = slab_new(cls);
		if (s == NULL) {
			pthread_mutex_unlock(&cl->lock);
			return NULL;
		}
		list_push(cl, s, true);
	}
	if (s->given_back != NULL) {
		p = s->given_back;
		VALGRIND_MAKE_MEM_DEFINED(p, sizeof(void *));
		s->given_back = *(void **)p;
	} else {
		p = s->bump;
		s->bump += size;
	}
	s->live++;
	cl->blocks++;
	if (!slab_has_room(s, size))
		list_remove(cl, s);
	pthread_mutex_unlock(&cl->lock);
	VALGRIND_MALLOCLIKE_BLOCK(p, bytes, 0, 0);
	return p;
}

void *cm_slab_alloc(size_t bytes)
{
	if (!SLABS || bytes > CM_SLAB_MAX)
		return cm_malloc(bytes);
	if (!cm_alloc_permitted())
		return NULL;
	return class_alloc(class_of(bytes), bytes);
}

void cm_slab_free(void *p, size_t bytes)
{
	if (p == NULL)
		return;
	if (!SLABS || bytes > CM_SLAB_MAX) {
		cm_free(p);
		return;
	}

	struct slab *s = slab_of(p), *empty = NULL;
	struct slab_class *cl = &classes[s->cls];

	VALGRIND_FREELIKE_BLOCK(p, 0);
	pthread_mutex_lock(&cl->lock);
	VALGRIND_MAKE_MEM_UNDEFINED(p, sizeof(void *));
	*(void **)p = s->given_back;
	VALGRIND_MAKE_MEM_NOACCESS(p, sizeof(void *));
	s->given_back = p;
	s->live--;
	cl->blocks--;
	if (!s->listed) {
		list_push(cl, s, false);
	} else if (s->live == 0 && (s->prev != NULL || s->next != NULL)) {
		list_remove(cl, s);
		cl->slabs--;
		empty = s;
	}
	pthread_mutex_unlock(&cl->lock);
	if (empty != NULL)
		slab_delete(empty);
}

void *cm_slab_shrink(void *p, size_t old_bytes, size_t new_bytes)
{
	bool old_slab = SLABS && old_bytes <= CM_SLAB_MAX;
	bool new_slab = SLABS && new_bytes <= CM_SLAB_MAX;

	if (!old_slab && !new_slab)
		return realloc(p, new_bytes);
	if (old_slab && new_slab && class_of(old_bytes) == class_of(new_bytes)) {
		VALGRIND_RESIZEINPLACE_BLOCK(p, old_bytes, new_bytes, 0);
		return p;
	}

	void *q = new_slab ? class_alloc(class_of(new_bytes), new_bytes)
			   : malloc(new_bytes);

	if (q == NULL)
		return NULL;
	memcpy(q, p, new_bytes);
	cm_slab_free(p, old_bytes);
	return q;
}

void cm_test_slab_census(size_t *slabs, size_t *blocks)
{
	*slabs = *blocks = 0;
	if (!SLABS ||
	    !atomic_load_explicit(&classes_ready, memory_order_acquire))
		return;
	for (unsigned c = 0; c < NCLASSES; c++) {
		pthread_mutex_lock(&classes[c].lock);
		*slabs += classes[c].slabs;
		*blocks += classes[c].blocks;
		pthread_mutex_unlock(&classes[c].lock);
	}
}

/* At exit, give the spare slabs back, so that leak checkers see only the
 * blocks still in use. */
__attribute__((destructor)) static void slabs_drain(void)
{
	if (!SLABS ||
	    !atomic_load_explicit(&classes_ready, memory_order_acquire))
		return;
	for (unsigned c = 0; c < NCLASSES; c++) {
		struct slab_class *cl = &classes[c];

		pthread_mutex_lock(&cl->lock);
		for (struct slab *s = cl->first, *next; s != NULL; s = next) {
			next = s->next;
			if (s->live == 0) {
				list_remove(cl, s);
				cl->slabs--;
				slab_delete(s);
			}
		}
		pthread_mutex_unlock(&cl->lock);
	}
}
