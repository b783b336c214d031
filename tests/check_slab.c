/*
 * check_slab.c - the node allocator (lib/slab.c) on its own: blocks of
 * every size are distinct and keep their contents, empty slabs are given
 * back, new blocks go to the fullest slab so that random turnover drains
 * the others, a huge page is given back whole and not split, slabs share
 * a few kernel mappings, shrinking keeps what it must, allocation
 * failures are injected like any other, blocks may be freed by another
 * thread than the one that allocated them, a free never waits for the
 * lock another thread holds, and a fork while another
 * thread allocates leaves the child able to allocate.
 *
 * ASan builds compile the slabs out (every block comes from malloc); the
 * census then reports nothing and the tests check what still applies.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "slab.h"
#include "testutil.h"

#define TIMEOUT 120

static size_t census_blocks(void)
{
	size_t slabs, blocks;

	cm_test_slab_census(&slabs, &blocks);
	return blocks;
}

static size_t census_slabs(void)
{
	size_t slabs, blocks;

	cm_test_slab_census(&slabs, &blocks);
	return slabs;
}

/* @n blocks of @bytes each into @p, every one of them given. */
static void alloc_all(void **p, size_t n, size_t bytes)
{
	for (size_t i = 0; i < n; i++) {
		p[i] = cm_slab_alloc(bytes);
		ck_assert_ptr_nonnull(p[i]);
	}
}

/* Fill @p with a pattern of @seed, and check it is still there. */
static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed * 31 + i);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed * 31 + i))
			return 0;
	return 1;
}

START_TEST(blocks_of_every_size_are_distinct_and_keep_their_bytes)
{
	enum { MAXB = CM_SLAB_MAX + 64, PER = 3 };
	static unsigned char *blocks[MAXB + 1][PER];
	size_t before = census_blocks();

	for (size_t n = 1; n <= MAXB; n++)
		for (int k = 0; k < PER; k++) {
			blocks[n][k] = cm_slab_alloc(n);
			ck_assert_ptr_nonnull(blocks[n][k]);
			fill(blocks[n][k], n, (unsigned)(n * PER + (size_t)k));
		}
	if (census_slabs() > 0)
		ck_assert_uint_eq(census_blocks() - before,
				  (size_t)CM_SLAB_MAX * PER);
	for (size_t n = 1; n <= MAXB; n++)
		for (int k = 0; k < PER; k++) {
			TU_REQUIRE(intact(blocks[n][k], n,
					  (unsigned)(n * PER + (size_t)k)),
				   "a block of %zu bytes was overwritten", n);
			cm_slab_free(blocks[n][k], n);
		}
	ck_assert_uint_eq(census_blocks(), before);
	cm_slab_free(NULL, 16);	/* ignored */
}
END_TEST

START_TEST(empty_slabs_are_given_back)
{
	enum { N = 20000 };	/* about 20 slabs of 64-byte blocks */
	void **p = malloc(N * sizeof(*p));
	size_t slabs0 = census_slabs();

	ck_assert_ptr_nonnull(p);
	alloc_all(p, N, 64);

	size_t slabs1 = census_slabs();

	/* Free in an order that empties every slab bit by bit. */
	for (size_t start = 0; start < 7; start++)
		for (size_t i = start; i < N; i += 7)
			cm_slab_free(p[i], 64);
	if (slabs1 > 0) {
		ck_assert_uint_ge(slabs1, slabs0 + 15);
		/* One spare may stay for the class. */
		ck_assert_uint_le(census_slabs(), slabs0 + 1);
	}
	free(p);
}
END_TEST

#define TEST_SLAB_BYTES ((uintptr_t)64 * 1024)	/* lib/slab.c's SLAB_BYTES */

static uintptr_t slab_base(const void *p)
{
	return (uintptr_t)p & ~(TEST_SLAB_BYTES - 1);
}

/* @n blocks of 80 bytes filling whole slabs: the slabs, in the order
 * first seen, go to @slab, and how many to the return value. */
static size_t fill_slabs(void **p, size_t n, uintptr_t *slab, size_t max)
{
	size_t count = 0;

	alloc_all(p, n, 80);
	for (size_t i = 0; i < n; i++) {
		size_t k = 0;

		while (k < count && slab[k] != slab_base(p[i]))
			k++;
		if (k == count) {
			ck_assert_uint_lt(count, max);
			slab[count++] = slab_base(p[i]);
		}
	}
	return count;
}

static size_t slab_index(const uintptr_t *slab, size_t count, const void *q)
{
	for (size_t k = 0; k < count; k++)
		if (slab[k] == slab_base(q))
			return k;
	return count;
}

/* Freed blocks are reused from the fullest slabs: a writer frees nodes
 * all over its slabs, and if new nodes went to whichever slab had room
 * the live ones would stay spread over every slab the peak needed. */
START_TEST(new_blocks_go_to_the_fullest_slab)
{
	enum { PER_SLAB = (64 * 1024 - 64) / 80, SLABS = 8,
	       N = PER_SLAB * SLABS };
	void **p = malloc(N * sizeof(*p));
	uintptr_t *slab = malloc(N * sizeof(*slab));

	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(slab);

	size_t count = fill_slabs(p, N, slab, N);

	if (census_slabs() == 0) {	/* malloc underneath: nothing to see */
		for (size_t i = 0; i < N; i++)
			cm_slab_free(p[i], 80);
		free(slab);
		free(p);
		return;
	}
	ck_assert_uint_eq(count, SLABS);
	/* The first four slabs get all but one block back, first; the
	 * others half of theirs. */
	for (size_t i = 0; i < N; i++) {
		size_t k = slab_index(slab, count, p[i]);

		if ((k < 4 && p[i] != p[k * PER_SLAB]) ||
		    (k >= 4 && k < SLABS && i % 2 == 1)) {
			cm_slab_free(p[i], 80);
			p[i] = NULL;
		}
	}

	/* As many blocks as the half-full slabs have room for: all of
	 * them land there, none in the nearly empty ones. */
	size_t refill = 4 * (PER_SLAB / 2);
	void **q = malloc(refill * sizeof(*q));

	ck_assert_ptr_nonnull(q);
	alloc_all(q, refill, 80);
	for (size_t j = 0; j < refill; j++) {
		size_t k = slab_index(slab, count, q[j]);

		ck_assert_msg(k >= 4, "block %zu went to nearly empty slab %zu",
			      j, k);
	}

	/* The nearly empty slabs now empty and go back (one may stay as
	 * the class's spare). */
	size_t before = census_slabs();

	for (size_t i = 0; i < N; i++)
		if (p[i] != NULL && slab_index(slab, count, p[i]) < 4) {
			cm_slab_free(p[i], 80);
			p[i] = NULL;
		}
	ck_assert_uint_le(census_slabs(), before - 3);

	for (size_t i = 0; i < N; i++)
		cm_slab_free(p[i], 80);
	for (size_t j = 0; j < refill; j++)
		cm_slab_free(q[j], 80);
	free(q);
	free(slab);
	free(p);
}
END_TEST

/* Blocks dying at random and as many made again, the pattern of a
 * writer's path copies: the slabs come down towards what the live blocks
 * need instead of staying at what the peak needed. */
START_TEST(random_turnover_drains_the_spare_slabs)
{
	enum { PER_SLAB = (64 * 1024 - 64) / 80, SLABS = 16,
	       N = PER_SLAB * SLABS };
	void **p = malloc(N * sizeof(*p));
	struct tu_rng rng;

	ck_assert_ptr_nonnull(p);
	tu_rng_init(&rng, 99);
	alloc_all(p, N, 80);

	size_t slabs_full = census_slabs();

	/* Half die, spread over every slab. */
	size_t live = N;

	for (size_t i = 0; i < N; i++)
		if (tu_rng_below(&rng, 2) == 0) {
			cm_slab_free(p[i], 80);
			p[i] = NULL;
			live--;
		}
	/* Ten turnovers of the live blocks: a random one dies, one is
	 * made. */
	for (size_t round = 0; round < 10 * live; round++) {
		size_t i;

		do
			i = (size_t)tu_rng_below(&rng, N);
		while (p[i] == NULL);
		cm_slab_free(p[i], 80);
		p[i] = cm_slab_alloc(80);
		ck_assert_ptr_nonnull(p[i]);
	}
	if (slabs_full > 0) {
		size_t need = (live + PER_SLAB - 1) / PER_SLAB;

		/* Spread, they would hold all 16; a slab or two over the
		 * minimum is what partly filled slabs cost. */
		ck_assert_uint_le(census_slabs() - (slabs_full - SLABS),
				  need + 2);
	}
	for (size_t i = 0; i < N; i++)
		cm_slab_free(p[i], 80);
	free(p);
}
END_TEST

#define TEST_HUGE_BYTES ((uintptr_t)2 * 1024 * 1024)

/* AnonHugePages of the mapping holding @p, in kB (0 if none is found). */
static long mapping_huge_kb(const void *p)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool inside = false;
	long kb = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 &&
		    strchr(line, '-') < strchr(line, ' '))
			inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
		else if (inside && sscanf(line, "AnonHugePages: %ld", &kb) == 1)
			break;
	}
	fclose(f);
	return inside ? kb : 0;
}

static size_t resident_pages(const void *start, size_t bytes)
{
	static unsigned char vec[TEST_HUGE_BYTES / 4096];
	size_t n = bytes / 4096, count = 0;

	ck_assert_uint_le(n, sizeof(vec));
	ck_assert_int_eq(mincore((void *)start, bytes, vec), 0);
	for (size_t i = 0; i < n; i++)
		count += vec[i] & 1;
	return count;
}

/* Past the first 8 MiB, slabs live on huge pages where the system allows
 * them; emptying the slabs of a huge page one by one must not split it,
 * and the last one gives the whole page back. */
START_TEST(a_huge_page_goes_back_whole)
{
	/* 16 MiB of blocks.  Not a multiple of the 63 a slab holds: the
	 * last slab stays partly full, so none emptied here is the class's
	 * one spare with room, which would be kept. */
	enum { BLOCK = 1024, N = 16 * 1024 };
	void **p = malloc(N * sizeof(*p));

	ck_assert_ptr_nonnull(p);
	alloc_all(p, N, BLOCK);

	/* A huge page, whole, in the middle of the later blocks. */
	uintptr_t page = ((uintptr_t)p[N - N / 8] & ~(TEST_HUGE_BYTES - 1));
	size_t in_page = 0;

	for (size_t i = 0; i < N; i++)
		in_page += ((uintptr_t)p[i] & ~(TEST_HUGE_BYTES - 1)) == page;
	if (census_slabs() == 0 || in_page < 32 * 60) {
		/* malloc underneath, or the page is not all ours. */
		for (size_t i = 0; i < N; i++)
			cm_slab_free(p[i], BLOCK);
		free(p);
		return;
	}

	long huge_before = mapping_huge_kb((void *)page);
	uintptr_t kept = slab_base((void *)page);	/* its first slab */

	/* Every slab of the page but the first empties. */
	for (size_t i = 0; i < N; i++)
		if (((uintptr_t)p[i] & ~(TEST_HUGE_BYTES - 1)) == page &&
		    slab_base(p[i]) != kept) {
			cm_slab_free(p[i], BLOCK);
			p[i] = NULL;
		}
	/* On small pages (THP "never", or no huge page to be had) the
	 * slabs may have gone back one by one or may wait for the last:
	 * only the end is the same. */
	if (huge_before > 0)
		ck_assert_int_eq(mapping_huge_kb((void *)page), huge_before);

	/* The last one: the page goes back. */
	for (size_t i = 0; i < N; i++)
		if (p[i] != NULL && slab_base(p[i]) == kept) {
			cm_slab_free(p[i], BLOCK);
			p[i] = NULL;
		}
	ck_assert_uint_eq(resident_pages((void *)page, TEST_HUGE_BYTES), 0);
	if (huge_before > 0)
		ck_assert_int_eq(mapping_huge_kb((void *)page),
				 huge_before - 2048);

	for (size_t i = 0; i < N; i++)
		cm_slab_free(p[i], BLOCK);
	free(p);
}
END_TEST

/* Lines of /proc/self/maps: the process's kernel mappings. */
static long mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (f == NULL)
		return -1;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/* A mapping per slab would cap the nodes of a process at about 4 GiB
 * (vm.max_map_count); slabs come from 4 MiB regions instead. */
START_TEST(many_slabs_take_few_mappings)
{
	enum { N = 300000 };	/* 64-byte blocks: about 300 slabs */
	void **p = malloc(N * sizeof(*p));
	long before = mappings();
	size_t slabs0 = census_slabs();

	ck_assert_ptr_nonnull(p);
	alloc_all(p, N, 64);

	long after = mappings();
	size_t slabs = census_slabs() - slabs0;

	if (census_slabs() > 0 && before > 0) {
		ck_assert_uint_ge(slabs, 290);
		ck_assert_msg(after - before <= 40,
			      "%zu slabs took %ld more mappings", slabs,
			      after - before);
	}
	for (size_t i = 0; i < N; i++)
		cm_slab_free(p[i], 64);
	/* Given back and made again: no new mappings either. */
	alloc_all(p, N, 64);
	if (census_slabs() > 0 && before > 0)
		ck_assert_int_le(mappings() - before, 40);
	for (size_t i = 0; i < N; i++)
		cm_slab_free(p[i], 64);
	free(p);
}
END_TEST

START_TEST(shrink_keeps_the_prefix_and_moves_only_across_classes)
{
	unsigned char *p = cm_slab_alloc(500);
	unsigned char *q;

	ck_assert_ptr_nonnull(p);
	fill(p, 500, 7);
	q = cm_slab_shrink(p, 500, 497);	/* both in the 497..512 class */
	ck_assert_ptr_nonnull(q);
	if (census_slabs() > 0)
		ck_assert_ptr_eq(q, p);
	ck_assert(intact(q, 497, 7));
	p = cm_slab_shrink(q, 497, 100);
	ck_assert_ptr_nonnull(p);
	ck_assert(intact(p, 100, 7));

	/* From malloc's side of the limit into a slab. */
	q = cm_slab_alloc(CM_SLAB_MAX + 200);
	ck_assert_ptr_nonnull(q);
	fill(q, CM_SLAB_MAX + 200, 9);
	q = cm_slab_shrink(q, CM_SLAB_MAX + 200, 40);
	ck_assert_ptr_nonnull(q);
	ck_assert(intact(q, 40, 9));
	cm_slab_free(p, 100);
	cm_slab_free(q, 40);
}
END_TEST

START_TEST(allocations_fail_when_injected_and_are_counted)
{
	unsigned long n0 = cm_test_alloc_count();
	size_t blocks0 = census_blocks();

	cm_test_fail_after(1);
	void *a = cm_slab_alloc(48);
	void *b = cm_slab_alloc(48);
	void *c = cm_slab_alloc(CM_SLAB_MAX + 1);

	cm_test_fail_after(-1);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_null(b);
	ck_assert_ptr_null(c);
	ck_assert_uint_eq(cm_test_alloc_count() - n0, 3);
	cm_slab_free(a, 48);
	ck_assert_uint_eq(census_blocks(), blocks0);
}
END_TEST

/* A ring of blocks: the producer allocates and fills, the consumer checks
 * and frees, so every block is freed by another thread. */
#define RING 1024
#define HANDOFFS 100000

struct ring {
	_Atomic(unsigned char *) slot[RING];
	atomic_size_t bad;
};

static size_t ring_size(size_t i)
{
	return 8 + (i * 37) % (CM_SLAB_MAX + 100);
}

static void *consumer(void *arg)
{
	struct ring *r = arg;

	for (size_t i = 0; i < HANDOFFS; i++) {
		_Atomic(unsigned char *) *s = &r->slot[i % RING];
		unsigned char *p;

		while ((p = atomic_exchange(s, NULL)) == NULL)
			sched_yield();
		if (!intact(p, ring_size(i), (unsigned)i))
			atomic_fetch_add(&r->bad, 1);
		cm_slab_free(p, ring_size(i));
	}
	return NULL;
}

START_TEST(blocks_freed_by_another_thread_come_back_whole)
{
	static struct ring r;
	pthread_t t;
	size_t before = census_blocks();

	memset(&r, 0, sizeof(r));
	ck_assert_int_eq(pthread_create(&t, NULL, consumer, &r), 0);
	for (size_t i = 0; i < HANDOFFS; i++) {
		_Atomic(unsigned char *) *s = &r.slot[i % RING];
		unsigned char *p = cm_slab_alloc(ring_size(i));

		ck_assert_ptr_nonnull(p);
		fill(p, ring_size(i), (unsigned)i);
		while (atomic_load(s) != NULL)
			sched_yield();
		atomic_store(s, p);
	}
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_uint_eq(atomic_load(&r.bad), 0);
	ck_assert_uint_eq(census_blocks(), before);
}
END_TEST

struct lone_free {
	void *p;
	size_t bytes;
	atomic_bool done;
};

static void *free_one(void *arg)
{
	struct lone_free *f = arg;

	cm_slab_free(f->p, f->bytes);
	atomic_store(&f->done, true);
	return NULL;
}

/* A free while another thread holds its class's lock returns at once
 * (the block waits on the class's deferred list) and the block is back
 * when the holder lets go.  With a free that waits for the lock, the
 * freeing thread is still stuck after the 5 s allowed here. */
START_TEST(a_free_never_waits_for_the_class_lock)
{
	enum { BYTES = 48 };
	struct lone_free f = { .bytes = BYTES };
	pthread_t t;
	size_t before = census_blocks();

	f.p = cm_slab_alloc(BYTES);
	ck_assert_ptr_nonnull(f.p);
	fill(f.p, BYTES, 7);
	cm_test_slab_hold(BYTES, true);
	ck_assert_int_eq(pthread_create(&t, NULL, free_one, &f), 0);
	for (int ms = 0; ms < 5000 && !atomic_load(&f.done); ms++)
		usleep(1000);

	bool returned = atomic_load(&f.done);

	cm_test_slab_hold(BYTES, false);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(returned, "cm_slab_free waited for the class lock");
	ck_assert_uint_eq(census_blocks(), before);

	/* The block is a free block like any other: it is handed out
	 * again and holds what it is given. */
	void *p[64];

	alloc_all(p, 64, BYTES);
	for (int i = 0; i < 64; i++)
		fill(p[i], BYTES, (unsigned)i);
	for (int i = 0; i < 64; i++) {
		ck_assert(intact(p[i], BYTES, (unsigned)i));
		cm_slab_free(p[i], BYTES);
	}
	ck_assert_uint_eq(census_blocks(), before);
}
END_TEST

static atomic_bool churning;
/* Global, so that a child forked mid-churn still reaches the blocks (a
 * leak checker in the child would report them otherwise). */
static void *churn_blocks[64];

static void *churner(void *arg)
{
	void **p = churn_blocks;

	(void)arg;
	while (atomic_load(&churning)) {
		for (int i = 0; i < 64; i++)
			p[i] = cm_slab_alloc(16 + (size_t)i * 16);
		for (int i = 0; i < 64; i++)
			cm_slab_free(p[i], 16 + (size_t)i * 16);
	}
	return NULL;
}

/* The fork handlers: a child forked while another thread holds class
 * locks must find them free.  Without them this hangs (and times out). */
START_TEST(fork_during_allocation_leaves_the_child_able_to_allocate)
{
	pthread_t t;
	void *probe = cm_slab_alloc(32);
	bool slabs = census_slabs() > 0;

	cm_slab_free(probe, 32);
	if (!slabs)	/* compiled out (ASan): no lock of ours to test */
		return;
	atomic_store(&churning, true);
	ck_assert_int_eq(pthread_create(&t, NULL, churner, NULL), 0);
	for (int round = 0; round < 50; round++) {
		pid_t pid = fork();

		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			alarm(10);	/* a deadlock kills the child */
			for (size_t n = 16; n <= CM_SLAB_MAX; n += 16)
				cm_slab_free(cm_slab_alloc(n), n);
			_exit(0);
		}

		int status;

		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child %d did not finish (status %d)", round,
			      status);
	}
	atomic_store(&churning, false);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

static Suite *slab_suite(void)
{
	Suite *s = suite_create("slab");
	TCase *tc = tcase_create("slab");

	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, blocks_of_every_size_are_distinct_and_keep_their_bytes);
	tcase_add_test(tc, empty_slabs_are_given_back);
	tcase_add_test(tc, new_blocks_go_to_the_fullest_slab);
	tcase_add_test(tc, random_turnover_drains_the_spare_slabs);
	tcase_add_test(tc, a_huge_page_goes_back_whole);
	tcase_add_test(tc, many_slabs_take_few_mappings);
	tcase_add_test(tc, shrink_keeps_the_prefix_and_moves_only_across_classes);
	tcase_add_test(tc, allocations_fail_when_injected_and_are_counted);
	tcase_add_test(tc, blocks_freed_by_another_thread_come_back_whole);
	tcase_add_test(tc, a_free_never_waits_for_the_class_lock);
	tcase_add_test(tc, fork_during_allocation_leaves_the_child_able_to_allocate);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(slab_suite());
}
