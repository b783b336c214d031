/*
 * slab.c - size-class slabs for trie nodes.
 *
 * Why not malloc: a writer publishing single-key changes allocates a new
 * path of nodes per change and frees the old paths a grace period later
 * (lib/cell.c), thousands at a time.  glibc serves that
 * pattern badly for a trie: nodes come in some sixty sizes, freed blocks
 * are split and merged between them, and the live nodes end up scattered
 * over a heap many times their size.  Measured on the 104k-word map
 * (33k nodes, 3.6 MB): 1,040 distinct 4 KiB pages held its nodes when
 * built, 12,000-15,000 after 100k-170k single-key writes, so a lookup
 * that fitted in the TLB no longer did.  With one size class per slab,
 * a freed node's place is taken by the next node of its size and the
 * same writes leave the nodes on 2,000-2,600 pages.  A slab also saves
 * malloc's per-block header: a 44-byte node takes 48 bytes, not 64.
 *
 * Why not mimalloc either (issue #18): mimalloc called directly for nodes
 * (configure --with-node-allocator=mimalloc, COWMAP_NODE_ALLOC to switch
 * in one build), against these slabs, four full bench runs of each
 * interleaved, AMD EPYC, 2 cores under a load average of 6-10, so on-CPU
 * figures: a lookup on 1M keys took 1.11-1.51 times as long with
 * mimalloc (all four pairs), and a reader beside a writer publishing flat
 * out 1.27-1.65 times (1M) and 1.10-1.92 times (the words).  mimalloc
 * made more single-writer changes a second on 1M keys in three pairs of
 * four (0.73-1.59 of the slabs' time); builds, publish latency and the
 * RSS of a fresh build (37.2 against 36.9 bytes an entry on 1M keys, 38.7
 * against 39.7 on the words) were even.
 *
 * Classes are 8 bytes apart: a node is 20 bytes plus 8 a slot, so with
 * 16-byte classes half of them wasted 12 bytes, and the small nodes of a
 * large map are many (a 1M-key map has some 0.4 nodes a key).  Measured
 * (issue #18, bench --build-only, RSS of a fresh process): 1M keys
 * 35.7 -> 33.8 heap and 37.2 -> 36.3 RSS bytes an entry, the words
 * 37.9 -> 36.3 and 38.7 -> 37.3.
 *
 * Structure: class c holds blocks of 8 * (c + 1) bytes.  A slab is 64 KiB
 * aligned to its size, so that a block finds its slab by masking its
 * address; it starts with a header and hands out blocks from a bump
 * pointer, then from the list of blocks given back to it.  Each class
 * keeps the slabs that have room in bins by how full they are, and
 * allocates from the fullest (see "Which slab" below).  A slab whose last
 * block comes back is freed unless it is the only one of its class with
 * room (one spare per class keeps a map of a single node from making and
 * dropping a slab on every change), and its pages go back to the system
 * (in a huge-page region, with the last slab of its huge page).  Slabs are
 * carved from mapped regions (see "Where slabs come from" below), not
 * taken from malloc: an aligned 64 KiB block from glibc costs twice its
 * size in address space and leaves unusable holes in the heap.
 *
 * Locking: one mutex per class.  Blocks are allocated by writers and
 * freed by whoever drops the last reference (a writer, the call_rcu
 * thread, any thread releasing a version), so threads meet on a class
 * lock for a few instructions; making and dropping slabs happen outside
 * it.  Two writers of one cell meet here on every publish, one
 * allocating the new path while the other frees an old one, and with
 * glibc's default mutex the loser slept in the kernel at once and the
 * holder paid a futex wake-up: two writers made fewer changes a second
 * than one (0.84 of it on the 104k-word map and on 1M keys, medians of 5
 * runs of 0.4 s).  So a free never waits for the lock: a thread that
 * finds it taken pushes the block on the class's lock-free list of
 * deferred blocks, which the holder gives back before it lets go (see
 * class_unlock()); and the lock is glibc's adaptive mutex, which spins a
 * while before sleeping, since it is held for a few instructions.  Two
 * writers then made 1.07 (words) and 1.15 (1M) times the changes of one.
 * Readers never come here.  Fork handlers
 * hold every class lock across fork(), so a child never inherits a lock
 * taken by a thread that does not exist in it.  They are registered when
 * the library is loaded, before anything the program registers, so they
 * run after the program's prepare handlers (such as one that pauses
 * liburcu's call_rcu thread, which may be freeing nodes).
 *
 * Checkers: ASan builds compile the slabs out, and under valgrind (or with
 * COWMAP_SLABS=0 in the environment) every block comes from malloc, so
 * that the checker sees each node as a heap block of its own: inside a
 * slab a freed node's place is reused at once, which hides a use after
 * free.  COWMAP_SLABS=1 keeps the slabs under valgrind, for profiling
 * with callgrind.  The choice is made once, before the first block.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "slab.h"

#include "alloc.h"

#include <assert.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>

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

#ifdef HAVE_LIBMIMALLOC
#include <mimalloc.h>
#endif
#ifndef COWMAP_NODE_ALLOC
#define COWMAP_NODE_ALLOC "slab"
#endif

#if SLABS && defined(HAVE_VALGRIND_VALGRIND_H)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

#define SLAB_BYTES ((size_t)64 * 1024)
#define GRAIN 8
#define NCLASSES (CM_SLAB_MAX / GRAIN)

/*
 * Which slab.  A writer frees old paths all over its slabs, a grace
 * period's worth at a time, so at the peak the slabs hold the live nodes
 * and that much garbage besides; when the garbage is freed, every slab is
 * left with holes.  Filling the holes of whichever slab comes first keeps
 * the live nodes spread over every slab the peak needed.  So slabs with
 * room sit in FULLNESS_BINS lists by how full they are and a block comes
 * from the fullest: a sparse slab gets no new blocks, only loses its old
 * ones as their keys change, and goes back to the system.  Measured on the
 * 104k-word map (3.9 MB of nodes), three runs each: after 1 s of
 * single-key writes flat out and 200k more at a slower pace, its nodes on
 * 1,332-1,347 pages instead of 1,582-1,803 and 6.8-6.9 MB of slabs
 * instead of 7.8-8.7; after 200k writes flat out, a lookup in the table
 * they left took 1.12-1.20 times as long as in a fresh copy in the same
 * run, instead of 1.16-1.31.  The bins cost a writer some 20 instructions
 * a block.
 */
#define FULLNESS_BINS 8
#define NO_BIN (-1)		/* the slab is full, on no list */

struct slab {
	struct slab *next, *prev;	/* in its bin */
	void *given_back;	/* freed blocks, linked through their first word */
	char *bump;		/* blocks never handed out start here */
	uint32_t live;		/* blocks handed out and not given back */
	uint16_t cls;
	int8_t bin;		/* which of its class's bins, or NO_BIN */
	bool huge;		/* in a region whose pages go back 2 MiB at once */
};

/* Blocks start after the header, on a cache line. */
#define SLAB_HEADER ((sizeof(struct slab) + 63) & ~(size_t)63)

struct slab_class {
	alignas(64) pthread_mutex_t lock;
	/* Blocks freed while another thread held lock, linked through
	 * their first word; only pushed, and taken whole by a holder. */
	void *_Atomic deferred;
	struct slab *bins[FULLNESS_BINS];	/* slabs with room, fullest last */
	uint32_t bin_start[FULLNESS_BINS + 1];	/* live counts: bin b holds
						 * bin_start[b] .. bin_start[b+1]-1 */
	uint32_t with_room;	/* slabs in the bins */
	unsigned occupied;	/* bit b: bins[b] is not empty */
	size_t slabs, blocks;	/* allocated, for the test hook */
};

static struct slab_class classes[NCLASSES];
static pthread_once_t classes_once = PTHREAD_ONCE_INIT;
static atomic_bool classes_ready;	/* set once by classes_init() */
static bool use_slabs;			/* decided once by classes_init() */
static bool use_mimalloc;		/* every block from mi_malloc */

/*
 * Where slabs come from.  Mapping each slab on its own would cost one
 * kernel mapping per 64 KiB (the aligned piece of a larger mapping sits
 * between holes, so neighbours never merge), and a process may have only
 * vm.max_map_count (65,530 by default) of them: about 4 GiB of nodes.  So
 * slabs are carved from 4 MiB regions, one mapping each, and a slab that
 * is no longer needed gives its pages back (MADV_DONTNEED) and is free for
 * any class to reuse.  A table of the regions, sorted by address, says
 * which of each region's 64 slabs are free, one bit each (slab_memory()
 * says which free slab a new one is).  Regions keep their address space;
 * the memory goes back to the system.  One mutex, region_lock, taken only
 * to make or give up a slab; a class lock may be held when it is taken
 * (slabs_drain(), the fork handlers), never the other way round.
 *
 * Huge pages.  A lookup in a large map visits nodes scattered over tens
 * of megabytes, and with 4 KiB pages nearly every node is a TLB miss (the
 * 1M-key map is 36 MB; a core's TLB covers 8 MiB or so), each a page walk
 * that a VM makes longer still.  So regions are aligned to 2 MiB, and from
 * the HUGE_AFTER_REGIONS+1st on the kernel is asked (MADV_HUGEPAGE) to
 * back them with transparent huge pages: one TLB entry per 2 MiB, and a
 * page fault per 2 MiB instead of per 4 KiB while a map is built.  The
 * first regions keep small pages, so a process with small maps keeps
 * its memory to what the slabs use (a huge page is resident whole).  The
 * system's setting decides in the end ("never" in
 * /sys/kernel/mm/transparent_hugepage/enabled turns it off).  Giving back
 * one slab of a huge page would split the page into small ones for good
 * (a transaction's build frees small draft nodes all along, and a writer
 * frees whole slabs as their nodes are replaced), so in these regions the
 * pages go back a huge page at a time, when its last slab is freed: up to
 * 2 MiB less a slab stays resident for a region's huge page in use.
 * Measured on the 1M-key
 * map (2-vCPU VM, THP "madvise", medians of 8 runs each): a random lookup
 * from 406 to 387 ns, the build by transaction from 153 to 143 ns per
 * entry.
 */
#define REGION_BYTES ((size_t)4 * 1024 * 1024)
#define HUGE_BYTES ((size_t)2 * 1024 * 1024)
#define HUGE_AFTER_REGIONS 2

#define SLABS_PER_REGION (REGION_BYTES / SLAB_BYTES)
#define SLABS_PER_HUGE_PAGE (HUGE_BYTES / SLAB_BYTES)
#define HUGE_PAGE_SLABS ((UINT64_C(1) << SLABS_PER_HUGE_PAGE) - 1)

_Static_assert(SLABS_PER_REGION == 64, "a region's free slabs: one word");
_Static_assert(SLABS_PER_HUGE_PAGE < 64, "a huge page's slabs: a shift");

/* A mapped region: which of its slabs are free, in a word kept out of
 * the slabs' memory (a huge page given back reads as zeros). */
struct region {
	char *start;
	uint64_t free;		/* bit i: the slab at start + i * SLAB_BYTES */
	bool huge;		/* pages go back a huge page at a time */
};

/* Which regions get huge pages, read once from the system's setting:
 * none ("never", or THP disabled for the process), the ones past
 * HUGE_AFTER_REGIONS, which ask for them ("madvise"), or all ("always":
 * the kernel gives them huge pages unasked). */
enum huge_mode { HUGE_NEVER, HUGE_ADVISED, HUGE_ALWAYS };

static pthread_mutex_t region_lock = PTHREAD_MUTEX_INITIALIZER;
static struct region *regions;	/* by start address; mmap'd (see grow) */
static size_t regions_mapped, regions_room;
static enum huge_mode huge_mode;	/* set by classes_init() */

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
	pthread_mutex_lock(&region_lock);
}

static void fork_done(void)
{
	pthread_mutex_unlock(&region_lock);
	for (unsigned c = NCLASSES; c-- > 0;)
		pthread_mutex_unlock(&classes[c].lock);
}

static enum huge_mode read_huge_mode(void)
{
	enum huge_mode mode = HUGE_NEVER;
#ifdef MADV_HUGEPAGE
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
	char line[128];

	if (f != NULL && fgets(line, sizeof(line), f) != NULL) {
		if (strstr(line, "[always]") != NULL)
			mode = HUGE_ALWAYS;
		else if (strstr(line, "[madvise]") != NULL)
			mode = HUGE_ADVISED;
	}
	if (f != NULL)
		fclose(f);
#ifdef PR_GET_THP_DISABLE
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) > 0)
		mode = HUGE_NEVER;
#endif
#endif
	return mode;
}

static void classes_init(void)
{
	const char *env = getenv("COWMAP_SLABS");

	/* COWMAP_SLABS=1 keeps them under valgrind (for callgrind). */
	/* The configured allocator, or COWMAP_NODE_ALLOC's (for bench/). */
	const char *choice = getenv("COWMAP_NODE_ALLOC");

	if (choice == NULL)
		choice = COWMAP_NODE_ALLOC;
#ifdef HAVE_LIBMIMALLOC
	use_mimalloc = strcmp(choice, "mimalloc") == 0;
#endif
	if (env != NULL && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0))
		use_slabs = SLABS && env[0] == '1';
	else
		use_slabs = SLABS && !RUNNING_ON_VALGRIND &&
			    strcmp(choice, "slab") == 0;
	use_slabs = use_slabs && !use_mimalloc;
	huge_mode = read_huge_mode();
	pthread_mutexattr_t attr;

	pthread_mutexattr_init(&attr);
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
	/* glibc: spin a while before sleeping (see "Locking"). */
	pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	for (unsigned c = 0; c < NCLASSES; c++) {
		pthread_mutex_init(&classes[c].lock, &attr);
		uint32_t capacity =
			(uint32_t)((SLAB_BYTES - SLAB_HEADER) / class_size(c));

		/* Bin b: live * FULLNESS_BINS / capacity == b. */
		for (unsigned b = 0; b <= FULLNESS_BINS; b++)
			classes[c].bin_start[b] =
				(b * capacity + FULLNESS_BINS - 1) / FULLNESS_BINS;
	}
	pthread_mutexattr_destroy(&attr);
	pthread_atfork(fork_prepare, fork_done, fork_done);
	atomic_store_explicit(&classes_ready, true, memory_order_release);
}

/* At load: see "Locking" above for why the fork handlers go in early. */
__attribute__((constructor)) static void classes_init_at_load(void)
{
	pthread_once(&classes_once, classes_init);
}

/* Slabs or malloc for a block of @bytes?  The first call decides. */
static bool in_slab(size_t bytes)
{
	pthread_once(&classes_once, classes_init);
	return use_slabs && bytes <= CM_SLAB_MAX;
}

static struct slab *slab_of(const void *p)
{
	return (struct slab *)((uintptr_t)p & ~(uintptr_t)(SLAB_BYTES - 1));
}

/* The bin for a slab of @cl with @live blocks handed out. */
static int bin_for(const struct slab_class *cl, uint32_t live)
{
	int bin = 0;

	if (live >= cl->bin_start[FULLNESS_BINS])
		return NO_BIN;
	while (live >= cl->bin_start[bin + 1])
		bin++;
	return bin;
}

static void bin_unlink(struct slab_class *cl, struct slab *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else if ((cl->bins[s->bin] = s->next) == NULL)
		cl->occupied &= ~(1u << s->bin);
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->bin = NO_BIN;
	cl->with_room--;
}

/* Move @s to the bin its live count says, if it is not there already:
 * most calls see the count still inside its bin and return at once. */
static void bin_update(struct slab_class *cl, struct slab *s)
{
	if (s->bin != NO_BIN && s->live >= cl->bin_start[s->bin] &&
	    s->live < cl->bin_start[s->bin + 1])
		return;

	int bin = bin_for(cl, s->live);

	if (bin == s->bin)
		return;
	if (s->bin != NO_BIN)
		bin_unlink(cl, s);
	if (bin == NO_BIN)
		return;
	s->prev = NULL;
	s->next = cl->bins[bin];
	if (s->next != NULL)
		s->next->prev = s;
	cl->bins[bin] = s;
	cl->occupied |= 1u << bin;
	s->bin = (int8_t)bin;
	cl->with_room++;
}

/* The fullest slab of @cl with room, or NULL. */
static struct slab *fullest_with_room(const struct slab_class *cl)
{
	if (cl->occupied == 0)
		return NULL;
	return cl->bins[31 - __builtin_clz(cl->occupied)];
}

/* The region holding @p; called with region_lock. */
static struct region *region_of(const void *p)
{
	size_t lo = 0, hi = regions_mapped;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if ((const char *)p < regions[mid].start)
			hi = mid;
		else if ((const char *)p >= regions[mid].start + REGION_BYTES)
			lo = mid + 1;
		else
			return &regions[mid];
	}
	return NULL;
}

/* Room for twice the regions, or false.  The table is mmap'd, not
 * malloc'd: this runs under region_lock, which fork handlers take, and an
 * allocator's own fork handlers may hold its locks meanwhile. */
static bool regions_grow(void)
{
	size_t room = regions_room != 0 ? 2 * regions_room : 64;
	struct region *r = mmap(NULL, room * sizeof(*r),
				PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (r == MAP_FAILED)
		return false;
	if (regions != NULL) {
		memcpy(r, regions, regions_mapped * sizeof(*r));
		munmap(regions, regions_room * sizeof(*r));
	}
	regions = r;
	regions_room = room;
	return true;
}

/* Map a region and add it to the table, or return NULL; called with
 * region_lock. */
static struct region *region_new(void)
{
	if (regions_mapped == regions_room && !regions_grow())
		return NULL;

	/* One huge page more than a region, to align it. */
	size_t len = REGION_BYTES + HUGE_BYTES;
	char *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (map == MAP_FAILED)
		return NULL;

	char *start = (char *)(((uintptr_t)map + HUGE_BYTES - 1) &
			       ~(uintptr_t)(HUGE_BYTES - 1));

	if (start > map)
		munmap(map, (size_t)(start - map));
	if (start + REGION_BYTES < map + len)
		munmap(start + REGION_BYTES,
		       (size_t)(map + len - start - REGION_BYTES));

	bool huge = huge_mode == HUGE_ALWAYS;

	/* Advice only: without THP the region is still usable. */
#ifdef MADV_HUGEPAGE
	if (huge_mode == HUGE_ADVISED && regions_mapped >= HUGE_AFTER_REGIONS)
		huge = madvise(start, REGION_BYTES, MADV_HUGEPAGE) == 0;
#endif

	size_t i = regions_mapped++;

	for (; i > 0 && regions[i - 1].start > start; i--)
		regions[i] = regions[i - 1];
	regions[i] = (struct region){ .start = start, .free = UINT64_MAX,
				      .huge = huge };
	return &regions[i];
}

/* Where slab_memory() looks for a free slab, in this order. */
enum slab_source { SMALL_PAGES, RESIDENT_HUGE_PAGES, ANY_HUGE_PAGE };

/* The free slabs of @r that @from takes. */
static uint64_t free_slabs_in(const struct region *r, enum slab_source from)
{
	if (!r->huge)
		return from == SMALL_PAGES ? r->free : 0;
	if (from == SMALL_PAGES)
		return 0;
	if (from == ANY_HUGE_PAGE)
		return r->free;

	uint64_t free = 0;	/* of huge pages with a slab in use */

	for (unsigned first = 0; first < SLABS_PER_REGION;
	     first += SLABS_PER_HUGE_PAGE) {
		uint64_t page = HUGE_PAGE_SLABS << first;

		if ((r->free & page) != page)
			free |= r->free & page;
	}
	return free;
}

/*
 * 64 KiB at a multiple of 64 KiB, or NULL; called with region_lock.  The
 * first free slab of a small-page region, else of a huge page partly in
 * use (resident anyway), else of an untouched or given-back huge page, and
 * only then a new region: so a process whose slabs once reached the huge
 * regions still keeps its small maps on small pages, and a huge page is
 * not faulted in while resident ones have room.
 */
static void *slab_memory(bool *huge)
{
	struct region *r = NULL;
	uint64_t free = 0;

	for (int from = SMALL_PAGES; from <= ANY_HUGE_PAGE && r == NULL; from++)
		for (size_t i = 0; i < regions_mapped && r == NULL; i++)
			if ((free = free_slabs_in(&regions[i], from)) != 0)
				r = &regions[i];
	if (r == NULL) {
		if ((r = region_new()) == NULL)
			return NULL;
		free = r->free;
	}

	unsigned i = (unsigned)__builtin_ctzll(free);

	r->free &= ~(UINT64_C(1) << i);
	*huge = r->huge;
	return r->start + (size_t)i * SLAB_BYTES;
}

/* A new empty slab of class @cls, or NULL.  Not an allocation of its own
 * for fault injection: the block it is made for was counted. */
static struct slab *slab_new(unsigned cls)
{
	bool huge;

	pthread_mutex_lock(&region_lock);

	char *mem = slab_memory(&huge);

	pthread_mutex_unlock(&region_lock);
	if (mem == NULL)
		return NULL;

	struct slab *s = (struct slab *)(void *)mem;

	s->huge = huge;
	s->given_back = NULL;
	s->bump = mem + SLAB_HEADER;
	s->live = 0;
	s->cls = (uint16_t)cls;
	s->bin = NO_BIN;
	return s;
}

/*
 * Give an empty slab's pages back and keep its place for a later slab.
 * In a huge-page region the pages go back a huge page at a time, once all
 * of its slabs are free: giving back 64 KiB of a huge page would split it
 * into small pages for good.
 */
static void slab_delete(struct slab *s)
{
	bool huge = s->huge;

	/* Before the slab is free for another thread to take. */
	if (!huge)
		madvise(s, SLAB_BYTES, MADV_DONTNEED);	/* s reads as zeros */
	pthread_mutex_lock(&region_lock);

	struct region *r = region_of(s);

	assert(r != NULL);

	unsigned i = (unsigned)(((char *)s - r->start) / SLAB_BYTES);

	if (huge) {
		/* Under the lock: no other slab of the page can be taken
		 * meanwhile. */
		unsigned first = i - i % SLABS_PER_HUGE_PAGE;
		uint64_t page = HUGE_PAGE_SLABS << first;

		if (((r->free | UINT64_C(1) << i) & page) == page)
			madvise(r->start + (size_t)first * SLAB_BYTES,
				HUGE_BYTES, MADV_DONTNEED);
	}
	r->free |= UINT64_C(1) << i;
	pthread_mutex_unlock(&region_lock);
}

/*
 * Deferred frees.  give_back() is a free with the class lock held; it
 * returns @empties with @p's slab added (linked through next) when that
 * slab is now to be deleted, which the caller does after unlocking.
 */
static struct slab *give_back(struct slab_class *cl, void *p,
			      struct slab *empties)
{
	struct slab *s = slab_of(p);

	*(void **)p = s->given_back;
	s->given_back = p;
	s->live--;
	cl->blocks--;
	bin_update(cl, s);
	if (s->live == 0 && cl->with_room > 1) {
		bin_unlink(cl, s);
		cl->slabs--;
		s->next = empties;
		empties = s;
	}
	return empties;
}

static void defer(struct slab_class *cl, void *p)
{
	void *head = atomic_load_explicit(&cl->deferred, memory_order_relaxed);

	do
		*(void **)p = head;
	while (!atomic_compare_exchange_weak_explicit(
		&cl->deferred, &head, p, memory_order_release,
		memory_order_relaxed));
}

/* With the lock held: give back every deferred block. */
static struct slab *take_deferred(struct slab_class *cl, struct slab *empties)
{
	if (atomic_load_explicit(&cl->deferred, memory_order_relaxed) == NULL)
		return empties;

	void *p = atomic_exchange_explicit(&cl->deferred, NULL,
					   memory_order_acquire);

	while (p != NULL) {
		void *next = *(void **)p;	/* give_back() overwrites it */

		empties = give_back(cl, p, empties);
		p = next;
	}
	return empties;
}

/*
 * Let go of the class lock, giving back the deferred blocks first, and
 * delete the slabs on @empties.  A freeing thread that pushed a block
 * tries the lock once more, and the holder looks at the list once more
 * after unlocking, so a pushed block waits only when the two cross
 * exactly: then it waits for the next lock holder of its class (any
 * allocation, free or census of that class).  Nothing is lost meanwhile
 * and nothing is counted wrong: the census takes the list first.
 * Ruling the crossing out would take a fence between each one's write
 * and its read: with one (and the list exchanged unlooked), a lone
 * writer made 17% fewer changes a second.  A late block costs memory for
 * a while, not correctness, so there is none.
 */
static void class_unlock(struct slab_class *cl, struct slab *empties)
{
	/* A few rounds at most: with frees arriving all the time, one
	 * thread would otherwise go on giving back the others' blocks. */
	for (int round = 0;; round++) {
		empties = take_deferred(cl, empties);
		pthread_mutex_unlock(&cl->lock);
		if (round == 2 ||
		    atomic_load_explicit(&cl->deferred, memory_order_relaxed) ==
			    NULL ||
		    pthread_mutex_trylock(&cl->lock) != 0)
			break;
	}

	while (empties != NULL) {
		struct slab *s = empties;

		empties = s->next;
		slab_delete(s);
	}
}

/* A block of class @cls (counted already), or NULL. */
static void *class_alloc(unsigned cls)
{
	struct slab_class *cl = &classes[cls];
	size_t size = class_size(cls);
	void *p;

	pthread_mutex_lock(&cl->lock);

	struct slab *s = fullest_with_room(cl), *empties = NULL;

	if (s == NULL) {
		/* The deferred blocks may make room. */
		empties = take_deferred(cl, NULL);
		s = fullest_with_room(cl);
	}
	if (s == NULL) {
		/* Map outside the lock; another thread may list a slab
		 * meanwhile, and then both are there to use. */
		class_unlock(cl, empties);
		empties = NULL;
		s = slab_new(cls);
		if (s == NULL)
			return NULL;
		pthread_mutex_lock(&cl->lock);
		cl->slabs++;
	}
	if (s->given_back != NULL) {
		p = s->given_back;
		s->given_back = *(void **)p;
	} else {
		p = s->bump;
		s->bump += size;
	}
	s->live++;
	cl->blocks++;
	bin_update(cl, s);
	class_unlock(cl, empties);
	return p;
}

void *cm_slab_alloc(size_t bytes)
{
#ifdef HAVE_LIBMIMALLOC
	pthread_once(&classes_once, classes_init);
	if (use_mimalloc)
		return cm_alloc_permitted() ? mi_malloc(bytes) : NULL;
#endif
	if (!in_slab(bytes))
		return cm_malloc(bytes);
	if (!cm_alloc_permitted())
		return NULL;
	return class_alloc(class_of(bytes));
}

void cm_slab_free(void *p, size_t bytes)
{
	if (p == NULL)
		return;
#ifdef HAVE_LIBMIMALLOC
	if (use_mimalloc) {
		mi_free(p);
		return;
	}
#endif
	if (!in_slab(bytes)) {
		cm_free(p);
		return;
	}

	struct slab_class *cl = &classes[slab_of(p)->cls];

	if (pthread_mutex_trylock(&cl->lock) == 0) {
		class_unlock(cl, give_back(cl, p, NULL));
		return;
	}
	defer(cl, p);
	/* The holder may have looked at deferred before the push and be
	 * gone by now: see class_unlock(). */
	if (pthread_mutex_trylock(&cl->lock) == 0)
		class_unlock(cl, NULL);
}

void *cm_slab_shrink(void *p, size_t old_bytes, size_t new_bytes)
{
	bool old_slab = in_slab(old_bytes), new_slab = in_slab(new_bytes);

#ifdef HAVE_LIBMIMALLOC
	if (use_mimalloc)
		return mi_realloc(p, new_bytes);
#endif

	if (!old_slab && !new_slab)
		return realloc(p, new_bytes);
	if (old_slab && new_slab && class_of(old_bytes) == class_of(new_bytes))
		return p;

	void *q = new_slab ? class_alloc(class_of(new_bytes))
			   : malloc(new_bytes);

	if (q == NULL)
		return NULL;
	memcpy(q, p, new_bytes);
	cm_slab_free(p, old_bytes);
	return q;
}

/* Slabs, blocks handed out and their bytes, over every class (all 0 where
 * every block comes from malloc). */
static void tally(size_t *slabs, size_t *blocks, size_t *bytes)
{
	*slabs = *blocks = *bytes = 0;
	if (!atomic_load_explicit(&classes_ready, memory_order_acquire) ||
	    !use_slabs)
		return;
	for (unsigned c = 0; c < NCLASSES; c++) {
		struct slab_class *cl = &classes[c];

		pthread_mutex_lock(&cl->lock);

		struct slab *empties = take_deferred(cl, NULL);

		*slabs += cl->slabs;
		*blocks += cl->blocks;
		*bytes += cl->blocks * class_size(c);
		class_unlock(cl, empties);
	}
}

void cm_test_slab_census(size_t *slabs, size_t *blocks)
{
	size_t bytes;

	tally(slabs, blocks, &bytes);
}

void cm_test_slab_hold(size_t bytes, bool hold)
{
	if (!in_slab(bytes))
		return;

	struct slab_class *cl = &classes[class_of(bytes)];

	if (hold)
		pthread_mutex_lock(&cl->lock);
	else
		class_unlock(cl, NULL);
}

void cm_slab_usage(size_t *mapped, size_t *in_use)
{
	size_t slabs, blocks;

	tally(&slabs, &blocks, in_use);
	*mapped = slabs * SLAB_BYTES;
}

/* At exit, free the spare slabs (their pages go back as slab_delete()
 * says), so that only the blocks still in use remain. */
__attribute__((destructor)) static void slabs_drain(void)
{
	if (!atomic_load_explicit(&classes_ready, memory_order_acquire) ||
	    !use_slabs)
		return;
	for (unsigned c = 0; c < NCLASSES; c++) {
		struct slab_class *cl = &classes[c];

		pthread_mutex_lock(&cl->lock);

		struct slab *empties = take_deferred(cl, NULL);

		for (struct slab *s = cl->bins[0], *next; s != NULL; s = next) {
			next = s->next;
			if (s->live == 0) {
				bin_unlink(cl, s);
				cl->slabs--;
				s->next = empties;
				empties = s;
			}
		}
		class_unlock(cl, empties);	/* deletes them */
	}
}
