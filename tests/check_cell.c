/*
 * check_cell.c - the RCU-published cell: cowmap_cell_new/free/load/
 * snapshot/publish/cas/update/set/del/stats, for every liburcu flavor.
 *
 * Every test that touches a cell is a loop test over the four flavors of
 * tests/rcu_flavors.h (_i is the flavor index).  Test cases: basics,
 * writers (publish/cas/update/set/del), stats, fault (cm_test_fail_after
 * on every allocation of each call), combining (requests queued behind a
 * held writer lock), read_path (1,000,000 lookups allocate nothing).  Values are entries of a
 * static table whose value_free counts calls atomically (value_free may
 * run in liburcu's call_rcu thread), so a test can say "freed exactly
 * once, and only after the grace period".
 *
 * Leak checks.  Outside sanitizer builds this file interposes malloc and
 * friends (forwarding to glibc's __libc_* entry points) to count, per
 * thread, the allocation calls made, and globally the blocks alive.  That
 * gives two checks no hook inside the library can give:
 *   - the read path (cell_load + get in a read-side section) makes no heap
 *     call at all, not even through liburcu or libc;
 *   - a failed call (fault injection) leaves exactly as many live blocks
 *     as there were before it.
 * ASan/TSan intercept malloc themselves and an executable that defines
 * malloc would take their place, so in those builds the interposition is
 * compiled out: the read-path test then relies on cm_test_alloc_count()
 * only, and leaks are left to LeakSanitizer (which checks each forked
 * test at exit).
 */
#include <check.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rcu_flavors.h"

#include <cowmap.h>

#include "alloc.h"
#include "slab.h"
#include "testutil.h"

Suite *cell_suite(void);

/* ------------------------------------------------------------------ */
/* malloc interposition (not in sanitizer builds, see above)           */
/* ------------------------------------------------------------------ */

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CT_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
	__has_feature(memory_sanitizer)
#define CT_SANITIZED 1
#endif
#endif

#if !defined(CT_SANITIZED) && !defined(CT_NO_MALLOC_INTERPOSE)
#define CT_INTERPOSE 1

/* glibc's own entry points: forwarding to them needs no dlsym(). */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);
extern void *__libc_memalign(size_t align, size_t size);

/*
 * Initial-exec TLS of the executable: reading it never allocates, so it is
 * safe inside malloc itself.
 */
static _Thread_local unsigned long ct_thread_allocs;
static _Thread_local unsigned long ct_thread_frees;
static atomic_long ct_live;	/* blocks allocated and not yet freed */

static inline void ct_note_alloc(void *p)
{
	ct_thread_allocs++;
	if (p != NULL)
		atomic_fetch_add_explicit(&ct_live, 1, memory_order_relaxed);
}

void *malloc(size_t size)
{
	void *p = __libc_malloc(size);

	ct_note_alloc(p);
	return p;
}

void *calloc(size_t count, size_t size)
{
	void *p = __libc_calloc(count, size);

	ct_note_alloc(p);
	return p;
}

void *realloc(void *old, size_t size)
{
	void *p;

	if (old == NULL) {
		p = __libc_realloc(NULL, size);
		ct_note_alloc(p);
		return p;
	}
	ct_thread_allocs++;
	p = __libc_realloc(old, size);
	if (p == NULL && size == 0)	/* glibc: realloc(p, 0) frees p */
		atomic_fetch_sub_explicit(&ct_live, 1, memory_order_relaxed);
	return p;
}

void *reallocarray(void *old, size_t count, size_t size)
{
	size_t bytes;

	if (__builtin_mul_overflow(count, size, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc(old, bytes);
}

void free(void *p)
{
	if (p == NULL)
		return;
	ct_thread_frees++;
	atomic_fetch_sub_explicit(&ct_live, 1, memory_order_relaxed);
	__libc_free(p);
}

void *memalign(size_t align, size_t size)
{
	void *p = __libc_memalign(align, size);

	ct_note_alloc(p);
	return p;
}

void *aligned_alloc(size_t align, size_t size)
{
	return memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
	void *p;

	if (align < sizeof(void *) || (align & (align - 1)) != 0)
		return EINVAL;
	p = memalign(align, size);
	if (p == NULL)
		return ENOMEM;
	*out = p;
	return 0;
}

void *valloc(size_t size)
{
	return memalign((size_t)sysconf(_SC_PAGESIZE), size);
}

void *pvalloc(size_t size)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	return memalign(page, (size + page - 1) & ~(page - 1));
}

static unsigned long ct_my_allocs(void)
{
	return ct_thread_allocs;
}

static unsigned long ct_my_frees(void)
{
	return ct_thread_frees;
}

#else /* sanitizer build: no interposition */

static unsigned long ct_my_allocs(void)
{
	return 0;
}

static unsigned long ct_my_frees(void)
{
	return 0;
}

#endif

static int verbose(void)
{
	const char *s = getenv("COWMAP_TEST_VERBOSE");

	return s != NULL && *s != '\0' && *s != '0';
}

/* COWMAP_TEST_VERBOSE=1: counters worth seeing (failure points, ...). */
#define REPORT(...)                                                          \
	do {                                                                 \
		if (verbose())                                               \
			fprintf(stderr, __VA_ARGS__);                        \
	} while (0)

static void nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

#ifdef CT_INTERPOSE
/* Live heap blocks, counting each node in a slab (lib/slab.c: slabs are
 * mapped, not malloc'd) as one block: a slab kept as a spare is no leak,
 * a node left in one is. */
static long live_blocks(void)
{
	size_t slabs, blocks;

	cm_test_slab_census(&slabs, &blocks);
	return atomic_load(&ct_live) + (long)blocks;
}
#endif

/*
 * The number of live heap blocks once in-flight frees have settled.
 * rcu_barrier() returns before liburcu's call_rcu thread has freed its own
 * barrier bookkeeping, so wait until the count stops moving.  Returns -1
 * in sanitizer builds (nothing counted).
 */
static long live_settled(void)
{
#ifdef CT_INTERPOSE
	cm_test_quarantine_flush();	/* debug builds hold freed shells */

	long prev = live_blocks();
	int stable = 0;

	for (int i = 0; i < 2000 && stable < 5; i++) {
		long cur;

		nap_ms(1);
		cur = live_blocks();
		stable = cur == prev ? stable + 1 : 0;
		prev = cur;
	}
	return prev;
#else
	return -1;
#endif
}

/* Wait until every version @c retired so far is freed, values included
 * (a plain rcu_barrier() is not enough: see cowmap_cell_barrier()). */
static void cell_barrier(struct cowmap_cell *c)
{
	ck_assert_int_eq(cowmap_cell_barrier(c), 0);
}

#define CHECK_NO_LEAK(tf, base, what)                                        \
	do {                                                                 \
		tf_barrier(tf);                                              \
		long live_now_ = live_settled();                             \
		ck_assert_msg(live_now_ == (base),                           \
			      "%s: %ld heap blocks alive, %ld before (%s)",  \
			      (tf)->name, live_now_, (long)(base), (what));  \
	} while (0)

/* ------------------------------------------------------------------ */
/* Counted values                                                      */
/* ------------------------------------------------------------------ */

struct tval {
	atomic_int freed;	/* value_free calls */
	unsigned id;
};

#define TV_MAX 65536
static struct tval tv_pool[TV_MAX];
static unsigned tv_used;

static void tv_reset(void)
{
	for (unsigned i = 0; i < TV_MAX; i++) {
		atomic_store(&tv_pool[i].freed, 0);
		tv_pool[i].id = i;
	}
	tv_used = 0;
}

static struct tval *tv_new(void)
{
	TU_REQUIRE(tv_used < TV_MAX, "value pool exhausted");
	return &tv_pool[tv_used++];
}

static int tv_freed(const struct tval *v)
{
	return atomic_load(&v->freed);
}

static void tv_value_free(void *value, void *ctx)
{
	struct tval *v = value;

	(void)ctx;
	atomic_fetch_add(&v->freed, 1);
}

static struct cowmap_options tv_opts(void)
{
	struct cowmap_options o;

	memset(&o, 0, sizeof(o));
	o.value_free = tv_value_free;
	return o;
}

static size_t kfmt(char *buf, size_t cap, const char *prefix, unsigned i)
{
	int n = snprintf(buf, cap, "%s%u", prefix, i);

	TU_REQUIRE(n > 0 && (size_t)n < cap, "key too long");
	return (size_t)n;
}

/* A map with keys "k0".."k<n-1>" mapped to fresh counted values; the
 * values are written to vals[] when it is not NULL. */
static struct cowmap *map_of(const struct cowmap_options *o, unsigned n,
			     struct tval **vals)
{
	struct cowmap *m = cowmap_new(o);
	char key[32];

	ck_assert_ptr_nonnull(m);
	for (unsigned i = 0; i < n; i++) {
		struct tval *v = tv_new();
		size_t len = kfmt(key, sizeof(key), "k", i);
		struct cowmap *next = cowmap_set(m, key, len, v);

		ck_assert_ptr_nonnull(next);
		cowmap_release(m);
		m = next;
		if (vals)
			vals[i] = v;
	}
	return m;
}

static struct cowmap_cell_stats cell_stats(struct cowmap_cell *c)
{
	struct cowmap_cell_stats s;

	memset(&s, 0xa5, sizeof(s));
	ck_assert_int_eq(cowmap_cell_stats(c, &s), 0);
	return s;
}

/* The value @key maps to in the current version (NULL if absent). */
static void *cell_get(const struct tf_flavor *tf, struct cowmap_cell *c,
		      const char *key)
{
	void *v = NULL;
	int r;

	tf_read_lock(tf);
	r = cowmap_get(cowmap_cell_load(c), key, strlen(key), &v);
	tf_read_unlock(tf);
	ck_assert_int_ge(r, 0);
	return r == 1 ? v : NULL;
}

static const struct cowmap *cell_current(const struct tf_flavor *tf,
					 struct cowmap_cell *c)
{
	const struct cowmap *m;

	/* Only the pointer value escapes: used for identity checks. */
	tf_read_lock(tf);
	m = cowmap_cell_load(c);
	tf_read_unlock(tf);
	return m;
}

static size_t cell_size(const struct tf_flavor *tf, struct cowmap_cell *c)
{
	size_t n;

	tf_read_lock(tf);
	n = cowmap_size(cowmap_cell_load(c));
	tf_read_unlock(tf);
	return n;
}

static const char *tf_name_of(int i)
{
	return tf_flavors[i].name;
}

/*
 * Start a test for flavor @i: fresh value table, thread registered, and
 * liburcu's call_rcu machinery for the flavor created once (its first
 * call_rcu allocates per-process state that lives on), so that leak
 * baselines taken afterwards are stable.
 */
static const struct tf_flavor *begin(int i)
{
	const struct tf_flavor *tf = &tf_flavors[i];
	struct cowmap_cell *c;

	tv_reset();
	tf_register(tf);
	c = cowmap_cell_new(NULL, tf->flavor);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_cell_set(c, "warm", 4, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_cell_set(c, "warm", 4, tu_val(2)), 0);
	cowmap_cell_free(c);
	tf_barrier(tf);
	return tf;
}

static void end(const struct tf_flavor *tf)
{
	tf_barrier(tf);
	tf_unregister(tf);
}

/* ------------------------------------------------------------------ */
/* cowmap_cell_new / cowmap_cell_free / cowmap_cell_load                */
/* ------------------------------------------------------------------ */

START_TEST(cell_new_null_initial_is_empty_map)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_cell *c = cowmap_cell_new(NULL, tf->flavor);
	struct cowmap *snap;
	void *v = tu_val(7);

	ck_assert_ptr_nonnull(c);
	tf_read_lock(tf);
	const struct cowmap *m = cowmap_cell_load(c);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(cowmap_size(m), 0);
	ck_assert_int_eq(cowmap_get(m, "x", 1, &v), 0);
	tf_read_unlock(tf);

	snap = cowmap_cell_snapshot(c);
	ck_assert_ptr_nonnull(snap);
	ck_assert_uint_eq(cowmap_size(snap), 0);
	cowmap_release(snap);

	/* The empty map works like any version: a set publishes. */
	ck_assert_int_eq(cowmap_cell_set(c, "x", 1, tu_val(3)), 0);
	ck_assert_ptr_eq(cell_get(tf, c, "x"), tu_val(3));
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

START_TEST(cell_new_steals_initial)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap *m = map_of(&o, 4, vals);
	struct cowmap_cell *c = cowmap_cell_new(m, tf->flavor);

	ck_assert_ptr_nonnull(c);
	/* The caller's reference now belongs to the cell: the initial
	 * version is published as is, not copied. */
	ck_assert_ptr_eq(cell_current(tf, c), m);
	ck_assert_ptr_eq(cell_get(tf, c, "k2"), vals[2]);
	cell_barrier(c);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);

	cowmap_cell_free(c);
	/* cell_free waits for deferred frees: nothing pending afterwards. */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 1);
	end(tf);
}
END_TEST

START_TEST(cell_new_default_flavor_is_memb)
{
	/* flavor NULL = urcu-memb: register with memb and use it. */
	const struct tf_flavor *tf = &tf_flavors[0];
	struct cowmap_options o = tv_opts();
	struct tval *vals[1];
	struct cowmap_cell *c;

	ck_assert_int_eq(tf->kind, TF_MEMB);
	tv_reset();
	tf_register(tf);
	c = cowmap_cell_new(map_of(&o, 1, vals), NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, tv_new()), 0);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	cowmap_cell_free(c);
	tf_unregister(tf);
}
END_TEST

/*
 * struct cowmap_cell keeps the readers' and the writers' fields on
 * separate cache lines (alignas(64) members); malloc() only promises 16
 * bytes, so every cell must come back 64-byte aligned.  Fifty cells are
 * held at once so that the allocator cannot hand out one lucky block
 * again and again.
 */
#define ALIGN_CELLS 50

START_TEST(cell_new_is_64_byte_aligned)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options plain = { 0 };
	struct cowmap_cell *cells[ALIGN_CELLS];

	for (int i = 0; i < ALIGN_CELLS; i++) {
		/* Interleave other allocations of odd sizes. */
		struct cowmap *m = i % 2 ? map_of(&plain, (unsigned)i % 5, NULL)
					 : NULL;

		cells[i] = cowmap_cell_new(m, tf->flavor);
		ck_assert_ptr_nonnull(cells[i]);
		ck_assert_msg((uintptr_t)cells[i] % 64 == 0,
			      "cell %d at %p is not 64-byte aligned", i,
			      (void *)cells[i]);
	}
	for (int i = 0; i < ALIGN_CELLS; i++)
		cowmap_cell_free(cells[i]);
	end(tf);
}
END_TEST

START_TEST(cell_free_null_is_noop)
{
	cowmap_cell_free(NULL);
}
END_TEST

START_TEST(load_returns_current_version)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[3];
	struct cowmap *m0 = map_of(&o, 3, vals);
	struct cowmap_cell *c = cowmap_cell_new(m0, tf->flavor);
	struct cowmap *m1;
	struct tval *nv = tv_new();
	void *v;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_null(cowmap_cell_load(NULL));

	tf_read_lock(tf);
	ck_assert_ptr_eq(cowmap_cell_load(c), m0);
	tf_read_unlock(tf);

	{
		struct cowmap *snap = cowmap_cell_snapshot(c);

		ck_assert_ptr_eq(snap, m0);
		m1 = cowmap_set(snap, "new", 3, nv);
		ck_assert_ptr_nonnull(m1);
		cowmap_release(snap);
	}
	ck_assert_int_eq(cowmap_cell_publish(c, m1), 0);

	tf_read_lock(tf);
	const struct cowmap *cur = cowmap_cell_load(c);
	ck_assert_ptr_eq(cur, m1);
	ck_assert_uint_eq(cowmap_size(cur), 4);
	ck_assert_int_eq(cowmap_get(cur, "new", 3, &v), 1);
	ck_assert_ptr_eq(v, nv);
	ck_assert_int_eq(cowmap_get(cur, "k1", 2, &v), 1);
	ck_assert_ptr_eq(v, vals[1]);
	/* Nested read-side sections are fine. */
	tf_read_lock(tf);
	ck_assert_ptr_eq(cowmap_cell_load(c), cur);
	tf_read_unlock(tf);
	tf_read_unlock(tf);

	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_snapshot                                                */
/* ------------------------------------------------------------------ */

struct releaser {
	struct cowmap *m;
	int size_seen;
	void *k0_seen;
};

/* An unregistered thread: the header says any thread may release. */
static void *release_in_thread(void *arg)
{
	struct releaser *r = arg;

	r->size_seen = (int)cowmap_size(r->m);
	if (cowmap_get(r->m, "k0", 2, &r->k0_seen) != 1)
		r->k0_seen = NULL;
	cowmap_release(r->m);
	return NULL;
}

START_TEST(snapshot_survives_later_publishes)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[8];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 8, vals),
						tf->flavor);
	struct cowmap *snap;
	struct tval *repl[5];
	pthread_t th;
	struct releaser rel;
	void *v;

	ck_assert_ptr_nonnull(c);
	snap = cowmap_cell_snapshot(c);
	ck_assert_ptr_nonnull(snap);
	ck_assert_ptr_eq(snap, cell_current(tf, c));

	/* Replace k0 five times and delete k1: each publish retires the
	 * previous version, but the snapshot keeps its own entries alive. */
	for (int i = 0; i < 5; i++) {
		repl[i] = tv_new();
		ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, repl[i]), 0);
	}
	ck_assert_int_eq(cowmap_cell_del(c, "k1", 2), 1);
	cell_barrier(c);

	/* Intermediate values nobody holds are gone exactly once ... */
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(repl[i]), 1);
	ck_assert_int_eq(tv_freed(repl[4]), 0);
	/* ... those the snapshot holds are not. */
	ck_assert_int_eq(tv_freed(vals[0]), 0);
	ck_assert_int_eq(tv_freed(vals[1]), 0);
	ck_assert_uint_eq(cowmap_size(snap), 8);
	ck_assert_int_eq(cowmap_get(snap, "k0", 2, &v), 1);
	ck_assert_ptr_eq(v, vals[0]);
	ck_assert_int_eq(cowmap_get(snap, "k1", 2, &v), 1);
	ck_assert_ptr_eq(v, vals[1]);
	ck_assert_ptr_eq(cell_get(tf, c, "k0"), repl[4]);
	ck_assert_ptr_null(cell_get(tf, c, "k1"));

	/* Release the snapshot from another (unregistered) thread. */
	rel.m = snap;
	rel.size_seen = -1;
	rel.k0_seen = NULL;
	tf_offline(tf);
	ck_assert_int_eq(pthread_create(&th, NULL, release_in_thread, &rel),
			 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	tf_online(tf);
	ck_assert_int_eq(rel.size_seen, 8);
	ck_assert_ptr_eq(rel.k0_seen, vals[0]);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	ck_assert_int_eq(tv_freed(vals[1]), 1);
	/* Values still in the current version stay. */
	for (int i = 2; i < 8; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);

	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(repl[4]), 1);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 1);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(repl[i]), 1);
	end(tf);
}
END_TEST

START_TEST(snapshot_outlives_cell)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[2];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 2, vals),
						tf->flavor);
	struct cowmap *snap = cowmap_cell_snapshot(c);
	void *v;

	ck_assert_ptr_nonnull(snap);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(vals[0]), 0);
	ck_assert_int_eq(cowmap_get(snap, "k1", 2, &v), 1);
	ck_assert_ptr_eq(v, vals[1]);
	cowmap_release(snap);
	tf_barrier(tf);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	ck_assert_int_eq(tv_freed(vals[1]), 1);
	end(tf);
}
END_TEST

START_TEST(snapshot_null_is_einval)
{
	errno = 0;
	ck_assert_ptr_null(cowmap_cell_snapshot(NULL));
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_publish                                                 */
/* ------------------------------------------------------------------ */

START_TEST(publish_releases_old_version_after_grace_period)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[16];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 16, vals),
						tf->flavor);
	struct tval *prev = vals[5];

	ck_assert_ptr_nonnull(c);
	for (int round = 0; round < 10; round++) {
		struct cowmap_cell_stats s0 = cell_stats(c), s1;
		struct cowmap *cur = cowmap_cell_snapshot(c);
		struct tval *nv = tv_new();
		struct cowmap *next = cowmap_set(cur, "k5", 2, nv);

		ck_assert_ptr_nonnull(next);
		cowmap_release(cur);
		ck_assert_int_eq(cowmap_cell_publish(c, next), 0);
		s1 = cell_stats(c);
		ck_assert_uint_eq(s1.published, s0.published + 1);
		ck_assert_ptr_eq(cell_current(tf, c), next);

		cell_barrier(c);
		ck_assert_int_eq(tv_freed(prev), 1);
		ck_assert_int_eq(tv_freed(nv), 0);
		for (int i = 0; i < 16; i++)
			if (i != 5)
				ck_assert_int_eq(tv_freed(vals[i]), 0);
		prev = nv;
	}
	/* A version that drops most keys at once. */
	{
		struct cowmap *cur = cowmap_cell_snapshot(c);
		struct cowmap *next = cowmap_new(&o);

		ck_assert_ptr_nonnull(next);
		cowmap_release(cur);
		ck_assert_int_eq(cowmap_cell_publish(c, next), 0);
		cell_barrier(c);
		ck_assert_int_eq(tv_freed(prev), 1);
		for (int i = 0; i < 16; i++)
			if (i != 5)
				ck_assert_int_eq(tv_freed(vals[i]), 1);
		ck_assert_uint_eq(cell_size(tf, c), 0);
	}
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	end(tf);
}
END_TEST

/* A cell of @tf over keys k0.. with @n tracked values (see map_of()). */
static struct cowmap_cell *tracked_cell(const struct tf_flavor *tf,
					struct tval *vals[], unsigned n)
{
	struct cowmap_options o = tv_opts();
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, n, vals),
						tf->flavor);

	ck_assert_ptr_nonnull(c);
	return c;
}

/* Waiting for a grace period inside a read-side critical section would
 * wait for itself: the barrier refuses at once, without queueing
 * anything, and works once the section ends.  QSBR has no sections to
 * see, and an online caller is what it requires: there it just works. */
START_TEST(barrier_inside_a_read_section_is_refused)
{
	const struct tf_flavor *tf = begin(_i);
	struct tval *vals[4];
	struct cowmap_cell *c = tracked_cell(tf, vals, 4);

	/* The write and the checks are inside the section: a version
	 * retired before it could pass its grace period before the section
	 * begins, and once the section ends the callback may free at any
	 * moment (under valgrind, which switches threads anywhere, both
	 * happen). */
	tf_read_lock(tf);
	ck_assert_int_eq(cowmap_cell_set(c, "k1", 2, tv_new()), 0);
	int rc = cowmap_cell_barrier(c);
	int freed_inside = tv_freed(vals[1]);
	size_t pending_inside = cell_stats(c).pending_versions;

	tf_read_unlock(tf);
	if (tf->is_qsbr) {
		ck_assert_int_eq(rc, 0);
		ck_assert_int_eq(freed_inside, 1);
	} else {
		ck_assert_int_eq(rc, -EDEADLK);
		ck_assert_int_eq(freed_inside, 0);
		ck_assert_uint_eq(pending_inside, 1);
		cell_barrier(c);
		ck_assert_int_eq(tv_freed(vals[1]), 1);
	}
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/* Freeing a cell waits for its readers, so inside a read-side section it
 * would wait for itself: it frees nothing, and the cell goes on working
 * and is freed whole later.  Under QSBR there is no section to see; the
 * free there is an ordinary one. */
START_TEST(cell_free_inside_a_read_section_frees_nothing)
{
	const struct tf_flavor *tf = begin(_i);
	struct tval *vals[4];
	struct cowmap_cell *c = tracked_cell(tf, vals, 4);

	if (!tf->is_qsbr) {
		tf_read_lock(tf);
		cowmap_cell_free(c);
		tf_read_unlock(tf);
		for (int i = 0; i < 4; i++)
			ck_assert_int_eq(tv_freed(vals[i]), 0);
		ck_assert_int_eq(cowmap_cell_set(c, "k2", 2, tv_new()), 0);
		cell_barrier(c);
		ck_assert_int_eq(tv_freed(vals[2]), 1);
		ck_assert_ptr_eq(cell_get(tf, c, "k3"), vals[3]);
	}
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	end(tf);
}
END_TEST

START_TEST(publish_current_version_again_is_safe)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 4, vals),
						tf->flavor);
	struct cowmap *same;

	ck_assert_ptr_nonnull(c);
	same = cowmap_cell_snapshot(c);
	ck_assert_int_eq(cowmap_cell_publish(c, same), 0);	/* stolen */
	cell_barrier(c);
	ck_assert_ptr_eq(cell_current(tf, c), same);
	ck_assert_ptr_eq(cell_get(tf, c, "k3"), vals[3]);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);
	ck_assert_int_eq(cowmap_cell_set(c, "k3", 2, tv_new()), 0);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[3]), 1);
	ck_assert_int_eq(tv_freed(vals[2]), 0);
	cowmap_cell_free(c);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 1);
	end(tf);
}
END_TEST

START_TEST(publish_bad_args_einval_and_steal_next)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[2];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 2, vals),
						tf->flavor);
	struct tval *orphan[1];
	struct cowmap_cell_stats s0, s1;
	const struct cowmap *before;
	long base;

	ck_assert_ptr_nonnull(c);
	s0 = cell_stats(c);
	before = cell_current(tf, c);
	cell_barrier(c);
	base = live_settled();

	/* NULL cell: -EINVAL, and next is stolen (released). */
	ck_assert_int_eq(cowmap_cell_publish(NULL, map_of(&o, 1, orphan)),
			 -EINVAL);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(orphan[0]), 1);

	/* NULL next: -EINVAL, nothing published. */
	ck_assert_int_eq(cowmap_cell_publish(c, NULL), -EINVAL);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), before);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[0]), 0);

	/* Both NULL. */
	ck_assert_int_eq(cowmap_cell_publish(NULL, NULL), -EINVAL);
	CHECK_NO_LEAK(tf, base, "publish with bad arguments");
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_cas                                                     */
/* ------------------------------------------------------------------ */

START_TEST(cas_publishes_when_expected_is_current)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 4, vals),
						tf->flavor);
	struct cowmap *exp, *next;
	struct tval *nv = tv_new();
	struct cowmap_cell_stats s0, s1;

	ck_assert_ptr_nonnull(c);
	s0 = cell_stats(c);
	exp = cowmap_cell_snapshot(c);
	next = cowmap_set(exp, "k0", 2, nv);
	ck_assert_ptr_nonnull(next);
	ck_assert_int_eq(cowmap_cell_cas(c, exp, next), 0);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published + 1);
	ck_assert_ptr_eq(cell_current(tf, c), next);
	cell_barrier(c);
	/* The snapshot still holds the old k0. */
	ck_assert_int_eq(tv_freed(vals[0]), 0);
	cowmap_release(exp);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	ck_assert_int_eq(tv_freed(nv), 0);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(nv), 1);
	end(tf);
}
END_TEST

START_TEST(cas_eagain_when_another_version_won)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 4, vals),
						tf->flavor);
	struct cowmap *exp, *next;
	struct tval *winner = tv_new(), *loser = tv_new();
	struct cowmap_cell_stats s0, s1;
	const struct cowmap *won;
	long base;

	ck_assert_ptr_nonnull(c);
	exp = cowmap_cell_snapshot(c);
	/* Someone else publishes first. */
	ck_assert_int_eq(cowmap_cell_set(c, "k1", 2, winner), 0);
	won = cell_current(tf, c);
	s0 = cell_stats(c);
	cell_barrier(c);
	base = live_settled();

	next = cowmap_set(exp, "k1", 2, loser);
	ck_assert_ptr_nonnull(next);
	ck_assert_int_eq(cowmap_cell_cas(c, exp, next), -EAGAIN);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), won);
	ck_assert_ptr_eq(cell_get(tf, c, "k1"), winner);
	/* next was stolen: its only new value is released with it. */
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(loser), 1);
	ck_assert_int_eq(tv_freed(winner), 0);
	ck_assert_int_eq(tv_freed(vals[1]), 0);	/* exp holds it */
	CHECK_NO_LEAK(tf, base, "cas that lost");
	cowmap_release(exp);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[1]), 1);
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	end(tf);
}
END_TEST

START_TEST(cas_bad_args_einval_and_steal_next)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[2], *orphan[1];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 2, vals),
						tf->flavor);
	struct cowmap *exp = cowmap_cell_snapshot(c);
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	int r;
	long base;

	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_cas(NULL, exp, map_of(&o, 1, orphan)),
			 -EINVAL);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(orphan[0]), 1);

	ck_assert_int_eq(cowmap_cell_cas(c, exp, NULL), -EINVAL);

	/* A NULL expected version is never current: refused either way,
	 * and next is still stolen. */
	r = cowmap_cell_cas(c, NULL, map_of(&o, 1, orphan));
	ck_assert_msg(r == -EINVAL || r == -EAGAIN, "cas(c, NULL, next) = %d",
		      r);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(orphan[0]), 1);

	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), exp);
	CHECK_NO_LEAK(tf, base, "cas with bad arguments");
	cowmap_release(exp);
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_update                                                  */
/* ------------------------------------------------------------------ */

struct upd {
	const char *key;
	void *value;
	int mode;		/* UPD_SET, UPD_SAME, UPD_FAIL */
	int err;		/* errno for UPD_FAIL */
	int calls;
	int produced;		/* fn returned a version */
	const struct cowmap *seen;
};

enum { UPD_SET, UPD_SAME, UPD_FAIL };

static struct cowmap *upd_fn(const struct cowmap *cur, void *arg)
{
	struct upd *u = arg;
	struct cowmap *next;

	u->calls++;
	u->seen = cur;
	switch (u->mode) {
	case UPD_SET:
		next = cowmap_set(cur, u->key, strlen(u->key), u->value);
		break;
	case UPD_SAME:
		next = cowmap_retain(cur);
		break;
	default:
		errno = u->err;
		return NULL;
	}
	u->produced += next != NULL;
	return next;
}

START_TEST(update_publishes_fn_result)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 4, vals),
						tf->flavor);
	struct upd u = { "k2", NULL, UPD_SET, 0, 0, 0, NULL };
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	const struct cowmap *before = cell_current(tf, c);

	u.value = tv_new();
	ck_assert_int_eq(cowmap_cell_update(c, upd_fn, &u), 0);
	ck_assert_int_eq(u.calls, 1);
	ck_assert_ptr_eq(u.seen, before);	/* fn saw the current version */
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published + 1);
	ck_assert_ptr_eq(cell_get(tf, c, "k2"), u.value);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(vals[2]), 1);
	ck_assert_int_eq(tv_freed(u.value), 0);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(u.value), 1);
	end(tf);
}
END_TEST

START_TEST(update_returning_current_publishes_nothing)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 4, vals),
						tf->flavor);
	struct upd u = { "k2", NULL, UPD_SAME, 0, 0, 0, NULL };
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	const struct cowmap *before = cell_current(tf, c);
	long base;

	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_update(c, upd_fn, &u), 0);
	ck_assert_int_eq(u.calls, 1);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), before);
	CHECK_NO_LEAK(tf, base, "update that changed nothing");
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);
	/* The extra reference fn returned was dropped: after cell_free
	 * everything is gone (a leaked reference would keep the values). */
	cowmap_cell_free(c);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 1);
	end(tf);
}
END_TEST

START_TEST(update_fn_failure_returns_negative_errno)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[2];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 2, vals),
						tf->flavor);
	struct upd u = { "k0", NULL, UPD_FAIL, ENOSPC, 0, 0, NULL };
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	const struct cowmap *before = cell_current(tf, c);
	long base;

	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_update(c, upd_fn, &u), -ENOSPC);
	u.err = ENOMEM;
	ck_assert_int_eq(cowmap_cell_update(c, upd_fn, &u), -ENOMEM);
	u.err = 0;	/* NULL without errno: -EINVAL */
	ck_assert_int_eq(cowmap_cell_update(c, upd_fn, &u), -EINVAL);
	ck_assert_int_eq(u.calls, 3);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), before);
	ck_assert_ptr_eq(cell_get(tf, c, "k0"), vals[0]);
	CHECK_NO_LEAK(tf, base, "update whose fn failed");
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

START_TEST(update_bad_args_einval)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_cell *c = cowmap_cell_new(NULL, tf->flavor);
	struct upd u = { "k0", NULL, UPD_SET, 0, 0, 0, NULL };

	u.value = tv_new();
	ck_assert_int_eq(cowmap_cell_update(NULL, upd_fn, &u), -EINVAL);
	ck_assert_int_eq(cowmap_cell_update(c, NULL, &u), -EINVAL);
	ck_assert_int_eq(u.calls, 0);
	ck_assert_uint_eq(cell_size(tf, c), 0);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(u.value), 0);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_set / cowmap_cell_del                                   */
/* ------------------------------------------------------------------ */

START_TEST(cell_set_and_del_publish_and_free_replaced_values)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct cowmap_cell *c = cowmap_cell_new(cowmap_new(&o), tf->flavor);
	struct tval *a = tv_new(), *b = tv_new(), *d = tv_new();
	struct cowmap_cell_stats s0, s1;

	ck_assert_ptr_nonnull(c);
	s0 = cell_stats(c);
	ck_assert_int_eq(cowmap_cell_set(c, "a", 1, a), 0);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published + 1);
	ck_assert_ptr_eq(cell_get(tf, c, "a"), a);

	/* Replace: the old value is freed after the grace period. */
	ck_assert_int_eq(cowmap_cell_set(c, "a", 1, b), 0);
	ck_assert_ptr_eq(cell_get(tf, c, "a"), b);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(a), 1);
	ck_assert_int_eq(tv_freed(b), 0);

	/* Storing the pointer the key already maps to transfers nothing. */
	ck_assert_int_eq(cowmap_cell_set(c, "a", 1, b), 0);
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(b), 0);
	ck_assert_ptr_eq(cell_get(tf, c, "a"), b);

	/* Keys are byte strings: embedded NULs, and the empty key. */
	ck_assert_int_eq(cowmap_cell_set(c, "a\0b", 3, d), 0);
	ck_assert_int_eq(cowmap_cell_set(c, "", 0, tv_new()), 0);
	ck_assert_uint_eq(cell_size(tf, c), 3);

	s0 = cell_stats(c);
	ck_assert_int_eq(cowmap_cell_del(c, "a", 1), 1);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published + 1);
	ck_assert_ptr_null(cell_get(tf, c, "a"));
	cell_barrier(c);
	ck_assert_int_eq(tv_freed(b), 1);
	ck_assert_int_eq(cowmap_cell_del(c, "", 0), 1);
	ck_assert_uint_eq(cell_size(tf, c), 1);

	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(a), 1);
	ck_assert_int_eq(tv_freed(b), 1);
	ck_assert_int_eq(tv_freed(d), 1);
	end(tf);
}
END_TEST

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define CT_HAVE_VALGRIND_H 1
#endif
#endif

static int ct_running_on_valgrind(void)
{
#ifdef CT_HAVE_VALGRIND_H
	return RUNNING_ON_VALGRIND != 0;
#else
	const char *preload = getenv("LD_PRELOAD");

	return preload != NULL && strstr(preload, "valgrind") != NULL;
#endif
}

/*
 * Who frees (lib/cell.c): a batch's callback readies its versions and the
 * cell's writers free what is ready, unless nothing gathered for a next
 * batch, when the callback frees everything itself.  A writer publishing
 * back to back must therefore do some of the freeing itself (value_free
 * runs in its thread), and once it stops nothing may be left waiting:
 * without any barrier the stats fall to nothing pending, every replaced
 * value freed and none of the current ones.  Values are heap blocks, so a
 * value freed twice or never is also an ASan / valgrind error.  The writer
 * can only find something ready while the callbacks run beside it: not
 * under valgrind, which runs one thread at a time, so that each callback
 * finds nothing gathered and frees everything itself, nor on one CPU,
 * where it mostly goes the same way.
 */
static pthread_t frees_writer;
static atomic_long frees_in_writer, frees_total;

static void heap_value_free_noting_thread(void *value, void *ctx)
{
	(void)ctx;
	if (pthread_equal(pthread_self(), frees_writer))
		atomic_fetch_add(&frees_in_writer, 1);
	atomic_fetch_add(&frees_total, 1);
	free(value);
}

START_TEST(writer_frees_what_is_ready_and_nothing_waits_once_it_stops)
{
	enum { KEYS = 64 };
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = { .value_free =
					    heap_value_free_noting_thread };
	struct cowmap_cell *c;
	long sets = 0;
	char key[16];
	struct timespec t0, t;

	frees_writer = pthread_self();
	atomic_store(&frees_in_writer, 0);
	atomic_store(&frees_total, 0);
	c = cowmap_cell_new(cowmap_new(&o), tf->flavor);
	ck_assert_ptr_nonnull(c);
	bool side_by_side = !ct_running_on_valgrind() &&
			    sysconf(_SC_NPROCESSORS_ONLN) >= 2;

	/* Publish without a pause (a pause lets the callbacks catch up and
	 * free everything themselves) until the writer has freed some. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		for (int i = 0; i < 256; i++, sets++) {
			size_t len = kfmt(key, sizeof(key), "k",
					  (unsigned)(sets % KEYS));
			int *v = malloc(sizeof(*v));

			ck_assert_ptr_nonnull(v);
			ck_assert_int_eq(cowmap_cell_set(c, key, len, v), 0);
			if (i % 64 == 0)
				tf_quiescent(tf);
		}
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (side_by_side ? atomic_load(&frees_in_writer) == 0 &&
				       t.tv_sec - t0.tv_sec < 30
			      : sets < 4096);

	long in_writer = atomic_load(&frees_in_writer);

	if (side_by_side)
		ck_assert_int_gt(in_writer, 0);

	/* No barrier: the batches in flight run out on their own. */
	struct cowmap_cell_stats st = cell_stats(c);

	tf_offline(tf);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (st.pending_versions != 0) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		ck_assert_msg(t.tv_sec - t0.tv_sec < 30,
			      "%zu versions still pending 30 s after the "
			      "last write", st.pending_versions);
		nap_ms(1);
		st = cell_stats(c);
	}
	tf_online(tf);

	ck_assert_uint_eq(st.pending_versions, 0);
	ck_assert_uint_eq(st.pending_nodes, 0);
	ck_assert_uint_eq(st.pending_bytes, 0);
	ck_assert_int_eq(atomic_load(&frees_total), sets - KEYS);
	cowmap_cell_free(c);
	ck_assert_int_eq(atomic_load(&frees_total), sets);
	end(tf);
}
END_TEST

/*
 * How retired versions travel (lib/cell.c, "One callback per grace
 * period").  The "holding" flavor is urcu-memb whose call_rcu() keeps the
 * callbacks in a queue, oldest first, so that the test decides when each
 * grace period ends (run_held()), and whose rcu_barrier() runs only the
 * callbacks queued before it, as liburcu's does: what those queue runs
 * later.  held_late models a callback preempted between taking the
 * gathered versions and queueing them: its call_rcu() lands only after
 * the next barrier has looked at the queue.  One cell per test, and a
 * cell never has two batches queued at once.
 */
#define HELD_MAX 4

static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;
static struct held_cb {
	struct rcu_head *head;
	void (*fn)(struct rcu_head *);
} held_q[HELD_MAX], held_late_cb;
static unsigned held_n;
static int held_calls;
static bool held_late;		/* the next call_rcu() goes to held_late_cb */

static void hold_call_rcu(struct rcu_head *head,
			  void (*fn)(struct rcu_head *))
{
	pthread_mutex_lock(&held_lock);
	bool second = held_n != 0 || held_late_cb.head != NULL;

	if (!second && held_late) {
		held_late = false;
		held_late_cb = (struct held_cb){ head, fn };
	} else if (!second) {
		held_q[held_n++] = (struct held_cb){ head, fn };
	}
	held_calls++;
	pthread_mutex_unlock(&held_lock);
	ck_assert_msg(!second, "a second batch while one waits");
}

static unsigned held_queued(void)
{
	pthread_mutex_lock(&held_lock);
	unsigned n = held_n + (held_late_cb.head != NULL);

	pthread_mutex_unlock(&held_lock);
	return n;
}

/* End the grace period of the oldest queued callback and run it; false
 * if none is queued.  No reader uses these cells, so no grace period is
 * waited for. */
static bool run_held(void)
{
	pthread_mutex_lock(&held_lock);
	if (held_n == 0) {
		pthread_mutex_unlock(&held_lock);
		return false;
	}

	struct held_cb cb = held_q[0];

	memmove(held_q, held_q + 1, --held_n * sizeof(held_q[0]));
	pthread_mutex_unlock(&held_lock);
	cb.fn(cb.head);
	return true;
}

/* rcu_barrier(): the callbacks queued before it, then a preempted one
 * lands (after the barrier looked). */
static void held_barrier(void)
{
	pthread_mutex_lock(&held_lock);
	unsigned n = held_n;

	if (held_late_cb.head != NULL) {
		held_q[held_n++] = held_late_cb;
		held_late_cb.head = NULL;
	}
	pthread_mutex_unlock(&held_lock);
	while (n-- > 0)
		run_held();
}

static struct rcu_flavor_struct holding_flavor(void)
{
	struct rcu_flavor_struct f = urcu_memb_flavor;

	f.update_call_rcu = hold_call_rcu;
	f.barrier = held_barrier;
	held_n = 0;
	held_calls = 0;
	held_late = false;
	held_late_cb.head = NULL;
	return f;
}

/* A cell of @n keys k0.. (values in @vals) under @flavor, from a fresh
 * value pool, with the calling thread registered. */
static struct cowmap_cell *held_cell(const struct rcu_flavor_struct *flavor,
				     unsigned n, struct tval **vals)
{
	struct cowmap_options o = tv_opts();

	tv_reset();
	urcu_memb_register_thread();

	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, n, vals), flavor);

	ck_assert_ptr_nonnull(c);
	return c;
}

START_TEST(retired_versions_wait_in_one_batch_per_grace_period)
{
	struct rcu_flavor_struct holding = holding_flavor();
	struct tval *vals[2], *nv[10], *late;
	struct cowmap_cell *c = held_cell(&holding, 2, vals);

	/* Ten changes: the first starts a batch, the other nine gather. */
	for (int i = 0; i < 10; i++) {
		nv[i] = tv_new();
		ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, nv[i]), 0);
	}
	ck_assert_int_eq(held_calls, 1);
	ck_assert_uint_eq(cell_stats(c).pending_versions, 10);

	/* Its grace period ends: the callback readies the first version
	 * (freed by a later publish, not here) and sends the nine on. */
	ck_assert(run_held());
	ck_assert_int_eq(held_calls, 2);
	ck_assert_int_eq(tv_freed(vals[0]), 0);
	ck_assert_uint_eq(cell_stats(c).pending_versions, 10);

	/* A change while the nine wait joins the next batch, and the
	 * writer frees the ready version. */
	late = tv_new();
	ck_assert_int_eq(cowmap_cell_set(c, "k1", 2, late), 0);
	ck_assert_int_eq(held_calls, 2);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	ck_assert_uint_eq(cell_stats(c).pending_versions, 10);

	ck_assert(run_held());	/* the nine: the late one leaves next */
	ck_assert_int_eq(held_calls, 3);
	ck_assert(run_held());	/* the late one: nothing gathered after it */
	ck_assert_uint_eq(held_queued(), 0);
	ck_assert_int_eq(held_calls, 3);

	/* So that callback freed every ready version itself. */
	struct cowmap_cell_stats st = cell_stats(c);

	ck_assert_uint_eq(st.pending_versions, 0);
	ck_assert_uint_eq(st.pending_nodes, 0);
	ck_assert_uint_eq(st.pending_bytes, 0);
	for (int i = 0; i < 9; i++)
		ck_assert_int_eq(tv_freed(nv[i]), 1);
	ck_assert_int_eq(tv_freed(nv[9]), 0);
	ck_assert_int_eq(tv_freed(vals[1]), 1);
	ck_assert_int_eq(tv_freed(late), 0);

	/* With nothing in flight, the next change starts a batch again;
	 * cowmap_cell_barrier() runs it out. */
	ck_assert_int_eq(cowmap_cell_del(c, "k0", 2), 1);
	ck_assert_int_eq(held_calls, 4);
	ck_assert_int_eq(cowmap_cell_barrier(c), 0);
	ck_assert_uint_eq(held_queued(), 0);
	ck_assert_int_eq(tv_freed(nv[9]), 1);
	ck_assert_uint_eq(cell_stats(c).pending_versions, 0);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(late), 1);
	ck_assert_uint_eq(held_queued(), 0);
	urcu_memb_unregister_thread();
}
END_TEST

/*
 * A callback preempted between taking what gathered and queueing it: the
 * barriers that look at the queue meanwhile see nothing of that batch,
 * and the one after sees it but not the one it queues in turn.
 * cowmap_cell_barrier() must still wait for everything retired before
 * it, and cowmap_cell_free() for the last callback (which touches the
 * cell) before freeing the cell.
 */
START_TEST(barrier_and_free_outwait_a_preempted_callback)
{
	for (int use_free = 0; use_free < 2; use_free++) {
		struct rcu_flavor_struct holding = holding_flavor();
		struct tval *vals[1], *v[3];
		struct cowmap_cell *c = held_cell(&holding, 1, vals);
		for (int i = 0; i < 2; i++) {
			v[i] = tv_new();
			ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, v[i]), 0);
		}
		held_late = true;
		ck_assert(run_held());	/* takes the second, "preempted" */
		v[2] = tv_new();
		ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, v[2]), 0);
		if (use_free) {
			cowmap_cell_free(c);
			ck_assert_uint_eq(held_queued(), 0);
			for (int i = 0; i < 3; i++)
				ck_assert_int_eq(tv_freed(v[i]), 1);
		} else {
			ck_assert_int_eq(cowmap_cell_barrier(c), 0);
			ck_assert_uint_eq(cell_stats(c).pending_versions, 0);
			ck_assert_int_eq(tv_freed(vals[0]), 1);
			ck_assert_int_eq(tv_freed(v[0]), 1);
			ck_assert_int_eq(tv_freed(v[1]), 1);
			ck_assert_int_eq(tv_freed(v[2]), 0);
			cowmap_cell_free(c);
			ck_assert_uint_eq(held_queued(), 0);
		}
		ck_assert_int_eq(tv_freed(vals[0]), 1);
		urcu_memb_unregister_thread();
	}
}
END_TEST

/*
 * A callback that finds nothing gathered and a writer that pushes at the
 * same moment: one of them must send the writer's version, so that after
 * both exactly one batch is queued.  (A flag beside the stack, written by
 * one and read by the other, once let both miss each other.)  Two threads
 * in lock step, with a random few hundred cycles between them.
 */
static struct {
	struct cowmap_cell *c;
	atomic_long go, written, rounds;
} lockstep;

static void spin_a_little(unsigned *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	for (volatile unsigned i = (*seed >> 16) % 128; i > 0; i--)
		;
}

/* Wait for @v to reach @i; valgrind runs one thread at a time, so let the
 * other one run there. */
static void wait_for_round(atomic_long *v, long i)
{
	bool yield = ct_running_on_valgrind();

	while (atomic_load(v) < i)
		if (yield)
			sched_yield();
}

static void *lockstep_writer(void *arg)
{
	unsigned seed = 7;

	(void)arg;
	urcu_memb_register_thread();
	for (long i = 1; i <= atomic_load(&lockstep.rounds); i++) {
		wait_for_round(&lockstep.go, i);
		spin_a_little(&seed);
		ck_assert_int_eq(cowmap_cell_set(lockstep.c, "k", 1,
						 tu_val(1 + (i & 1))), 0);
		atomic_store(&lockstep.written, i);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

START_TEST(a_batch_ending_beside_a_push_leaves_one_batch_queued)
{
	struct rcu_flavor_struct holding = holding_flavor();
	struct timespec t0, t;
	unsigned seed = 1;
	pthread_t th;
	long i;

	urcu_memb_register_thread();
	lockstep.c = cowmap_cell_new(NULL, &holding);
	ck_assert_ptr_nonnull(lockstep.c);
	ck_assert_int_eq(cowmap_cell_set(lockstep.c, "k", 1, tu_val(3)), 0);
	long rounds = ct_running_on_valgrind() ? 2000 : 200000;

	atomic_store(&lockstep.rounds, rounds);
	atomic_store(&lockstep.go, 0);
	atomic_store(&lockstep.written, 0);
	ck_assert_int_eq(pthread_create(&th, NULL, lockstep_writer, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 1; i <= rounds; i++) {
		atomic_store(&lockstep.go, i);
		spin_a_little(&seed);
		ck_assert(run_held());
		wait_for_round(&lockstep.written, i);
		ck_assert_msg(held_queued() == 1,
			      "round %ld: %u batches queued after a push", i,
			      held_queued());
		clock_gettime(CLOCK_MONOTONIC, &t);
		if (t.tv_sec - t0.tv_sec >= 3)
			break;
	}
	if (i <= rounds) {	/* out of time: let the writer end */
		atomic_store(&lockstep.rounds, i);
		atomic_store(&lockstep.go, i + 1);
	}
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	cowmap_cell_free(lockstep.c);
	ck_assert_uint_eq(held_queued(), 0);
	urcu_memb_unregister_thread();
}
END_TEST

static double secs_since_ts(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) +
	       (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/*
 * cowmap_cell_barrier() beside writers that do not stop: it must still
 * return only once every version retired before the call is freed.  The
 * main thread owns key "mine": after its set of v[i + 1] returns, the
 * version holding v[i] is retired, so after the barrier v[i] must have
 * gone to value_free, and v[i + 1] must not have.  Two other writers set
 * their own keys flat out (so requests combine, lend and retire around
 * the barrier's mark), a reader loads and looks up (so grace periods
 * have someone to wait for), and a pending limit of a few KiB makes the
 * writers wait for grace periods and free beside the barrier.  Nothing
 * here keeps a version beyond a read-side section, so nothing else may
 * hold v[i] back.  Counts, not time, bound the work; the helpers yield
 * under valgrind, which runs one thread at a time.
 */
static struct {
	struct cowmap_cell *c;
	const struct tf_flavor *tf;
	atomic_int stop, started;
	atomic_long writes;
	struct tval own[2][2];	/* each helper alternates between two */
} beside;

static void *beside_writer(void *arg)
{
	int w = (int)(intptr_t)arg;
	char key[8] = { 'w', (char)('0' + w), 0 };
	bool yield = ct_running_on_valgrind();

	tf_register(beside.tf);
	atomic_fetch_add(&beside.started, 1);
	for (long i = 0; !atomic_load(&beside.stop); i++) {
		TU_REQUIRE(cowmap_cell_set(beside.c, key, 2,
					   &beside.own[w][i & 1]) == 0,
			   "helper set failed");
		atomic_fetch_add(&beside.writes, 1);
		tf_quiescent(beside.tf);
		if (yield || i % 64 == 0)
			sched_yield();
	}
	tf_unregister(beside.tf);
	return NULL;
}

static void *beside_reader(void *arg)
{
	bool yield = ct_running_on_valgrind();

	(void)arg;
	tf_register(beside.tf);
	atomic_fetch_add(&beside.started, 1);
	while (!atomic_load(&beside.stop)) {
		void *v;

		tf_read_lock(beside.tf);
		const struct cowmap *m = cowmap_cell_load(beside.c);

		TU_REQUIRE(cowmap_get(m, "mine", 4, &v) == 1 &&
				   tv_freed(v) == 0,
			   "a reader met a freed value");
		tf_read_unlock(beside.tf);
		tf_quiescent(beside.tf);
		if (yield)
			sched_yield();
	}
	tf_unregister(beside.tf);
	return NULL;
}

START_TEST(barrier_beside_writers_frees_everything_retired_before_it)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	int rounds = ct_running_on_valgrind() ? 20 : 100;
	struct tval *prev = tv_new();
	struct timespec t0;
	pthread_t th[3];

	beside.tf = tf;
	atomic_store(&beside.stop, 0);
	atomic_store(&beside.started, 0);
	atomic_store(&beside.writes, 0);
	struct cowmap *empty = cowmap_new(&o);

	ck_assert_ptr_nonnull(empty);
	beside.c = cowmap_cell_new(cowmap_set(empty, "mine", 4, prev),
				   tf->flavor);
	cowmap_release(empty);
	ck_assert_ptr_nonnull(beside.c);
	ck_assert_int_eq(cowmap_cell_set_pending_limit(beside.c, 4096), 0);
	for (int w = 0; w < 2; w++)
		ck_assert_int_eq(pthread_create(&th[w], NULL, beside_writer,
						(void *)(intptr_t)w),
				 0);
	ck_assert_int_eq(pthread_create(&th[2], NULL, beside_reader, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	tf_offline(tf);
	while (atomic_load(&beside.started) < 3)
		sched_yield();
	tf_online(tf);

	for (int i = 0; i < rounds; i++) {
		struct tval *next = tv_new();

		ck_assert_int_eq(cowmap_cell_set(beside.c, "mine", 4, next), 0);
		ck_assert_int_eq(cowmap_cell_barrier(beside.c), 0);
		ck_assert_msg(tv_freed(prev) == 1,
			      "%s round %d: a value replaced before the "
			      "barrier freed %d times after it",
			      tf->name, i, tv_freed(prev));
		ck_assert_int_eq(tv_freed(next), 0);
		prev = next;
		tf_quiescent(tf);
	}
	atomic_store(&beside.stop, 1);
	tf_offline(tf);
	for (int t = 0; t < 3; t++)
		ck_assert_int_eq(pthread_join(th[t], NULL), 0);
	tf_online(tf);
	REPORT("%s: %d barriers beside %ld helper writes, %.1f s\n", tf->name,
	       rounds, atomic_load(&beside.writes), secs_since_ts(&t0));
	cowmap_cell_free(beside.c);
	ck_assert_int_eq(tv_freed(prev), 1);
	end(tf);
}
END_TEST

/*
 * run_held() on a thread of its own: the library marks a thread that has
 * run one of its batch callbacks as a call_rcu thread, where a writer
 * never waits for the limit (lib/reclaim.c, on_callback_thread), so the
 * writing thread must not be the one that ends the grace periods.
 */
static void *run_held_main(void *arg)
{
	*(bool *)arg = run_held();
	return NULL;
}

static bool run_held_elsewhere(void)
{
	pthread_t th;
	bool ran = false;

	ck_assert_int_eq(pthread_create(&th, NULL, run_held_main, &ran), 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	return ran;
}

/* Run @body on a thread that never ran a batch callback (see above):
 * with CK_FORK=no the test's own thread may have run some in earlier
 * tests. */
static void on_a_fresh_thread(void *(*body)(void *))
{
	pthread_t th;

	ck_assert_int_eq(pthread_create(&th, NULL, body, NULL), 0);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
}

/* A held cell of one key (its value in *@val) that every write puts over
 * its pending limit of one byte.  @holding must outlive the cell. */
static struct cowmap_cell *
held_cell_over_its_limit(const struct rcu_flavor_struct *holding,
			 struct tval **val)
{
	struct cowmap_cell *c = held_cell(holding, 1, val);

	ck_assert_int_eq(cowmap_cell_set_pending_limit(c, 1), 0);
	return c;
}

/* The end of a held cell's test, on the thread that made it: a barrier
 * leaves nothing pending, and every value was freed exactly once. */
static void end_held_cell(struct cowmap_cell *c)
{
	ck_assert_int_eq(cowmap_cell_barrier(c), 0);

	struct cowmap_cell_stats st = cell_stats(c);

	ck_assert_uint_eq(st.pending_versions, 0);
	ck_assert_uint_eq(st.pending_bytes, 0);
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	urcu_memb_unregister_thread();
}

/* Thirty writes to @c, none of which may wait a second for a grace
 * period: 30 s if each did, far below 20 s on any machine otherwise. */
static void thirty_writes_without_a_wait(struct cowmap_cell *c)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < 30; i++)
		ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, tv_new()), 0);
	ck_assert_msg(secs_since_ts(&t0) < 20,
		      "writers kept waiting for a stuck grace period: %.1f s "
		      "for 30 writes", secs_since_ts(&t0));
}

/*
 * The pending limit's escape for a grace period that does not end
 * (lib/reclaim.c, "The bound"; cowmap.h, struct cowmap_cell_stats):
 * with the holding flavor no batch ends until the test says so, and a
 * limit of one byte puts every write over it.  The first write waits for
 * the batch in flight, gives up after a second, and from then on no
 * write waits until a batch ends; then one write waits once more.
 * Memory keeps growing meanwhile and shows in the stats, and drains once
 * the batches run.  A writer that waited a second per write would take
 * 60 s for the 60 writes that must not wait: the bound of 20 s below is
 * what tells the two apart, a margin no busy machine comes near.
 */
static void *stalls_once_per_batch(void *arg)
{
	struct rcu_flavor_struct holding = holding_flavor();
	struct tval *vals[1];
	struct cowmap_cell *c = held_cell_over_its_limit(&holding, vals);

	ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, tv_new()), 0);
	ck_assert_uint_eq(held_queued(), 1);	/* the batch that never ends */

	thirty_writes_without_a_wait(c);

	struct cowmap_cell_stats st = cell_stats(c);

	ck_assert_uint_eq(st.pending_versions, 31);
	ck_assert_uint_gt(st.pending_bytes, 31 * sizeof(void *));
	ck_assert_int_eq(tv_freed(vals[0]), 0);

	/* A batch ends: writers wait again, once, then go on. */
	ck_assert(run_held_elsewhere());
	ck_assert_uint_eq(held_queued(), 1);	/* the thirty gathered */
	thirty_writes_without_a_wait(c);
	ck_assert_int_eq(tv_freed(vals[0]), 1);	/* the first batch's */
	end_held_cell(c);
	return arg;
}

START_TEST(a_stuck_grace_period_stalls_writers_once_per_batch)
{
	on_a_fresh_thread(stalls_once_per_batch);
}
END_TEST

/*
 * A writer inside a read-side critical section over the limit must not
 * wait for a grace period (it would wait for itself; cowmap.h, "Threads
 * and liburcu"), not even the one second of the stall escape: each batch
 * ends here before the next write, so that escape never holds and only
 * the look at the read-side section keeps the write from waiting.
 */
static void *writes_inside_a_read_section(void *arg)
{
	struct rcu_flavor_struct holding = holding_flavor();
	struct tval *vals[1];
	struct cowmap_cell *c = held_cell_over_its_limit(&holding, vals);
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	urcu_memb_read_lock();
	for (int i = 0; i < 30; i++) {
		ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, tv_new()), 0);
		ck_assert_uint_eq(held_queued(), 1);
		ck_assert(run_held_elsewhere());
	}
	urcu_memb_read_unlock();
	ck_assert_msg(secs_since_ts(&t0) < 20,
		      "a writer inside a read-side section waited: %.1f s "
		      "for 30 writes", secs_since_ts(&t0));
	end_held_cell(c);
	return arg;
}

START_TEST(a_writer_inside_a_read_section_never_waits_for_the_limit)
{
	on_a_fresh_thread(writes_inside_a_read_section);
}
END_TEST

START_TEST(cell_del_absent_returns_0_and_publishes_nothing)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[3];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 3, vals),
						tf->flavor);
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	const struct cowmap *before = cell_current(tf, c);
	long base;

	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_del(c, "nope", 4), 0);
	ck_assert_int_eq(cowmap_cell_del(c, "k", 1), 0);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_eq(cell_current(tf, c), before);
	CHECK_NO_LEAK(tf, base, "del of an absent key");
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);

	/* Deleting twice: 1, then 0. */
	ck_assert_int_eq(cowmap_cell_del(c, "k1", 2), 1);
	ck_assert_int_eq(cowmap_cell_del(c, "k1", 2), 0);
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

START_TEST(cell_set_del_bad_args_einval)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[1];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 1, vals),
						tf->flavor);
	struct tval *v = tv_new();
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	long base;

	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_set(NULL, "x", 1, v), -EINVAL);
	ck_assert_int_eq(cowmap_cell_set(c, NULL, 1, v), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(NULL, "k0", 2), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(c, NULL, 2), -EINVAL);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_uint_eq(cell_size(tf, c), 1);
	CHECK_NO_LEAK(tf, base, "set/del with bad arguments");
	cowmap_cell_free(c);
	/* The value was never the map's. */
	ck_assert_int_eq(tv_freed(v), 0);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	end(tf);
}
END_TEST

START_TEST(cell_set_beyond_max_entries_enospc)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[3];
	struct cowmap_cell *c;
	struct tval *v = tv_new(), *w = tv_new();
	struct cowmap_cell_stats s0, s1;
	long base;

	o.max_entries = 3;
	c = cowmap_cell_new(map_of(&o, 3, vals), tf->flavor);
	ck_assert_ptr_nonnull(c);
	s0 = cell_stats(c);
	cell_barrier(c);
	base = live_settled();
	ck_assert_int_eq(cowmap_cell_set(c, "k9", 2, v), -ENOSPC);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published);
	ck_assert_ptr_null(cell_get(tf, c, "k9"));
	CHECK_NO_LEAK(tf, base, "set beyond max_entries");
	/* Replacing an existing key needs no room. */
	ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, w), 0);
	cowmap_cell_free(c);
	ck_assert_int_eq(tv_freed(v), 0);
	ck_assert_int_eq(tv_freed(w), 1);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_cell_stats                                                   */
/* ------------------------------------------------------------------ */

struct holder {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	atomic_int ready, stop;
	const struct cowmap *seen;
	void *k0_at_start, *k0_at_end;
	size_t size_at_start, size_at_end;
};

/* Holds one read-side critical section open until told to stop. */
static void *holder_main(void *arg)
{
	struct holder *h = arg;
	const struct cowmap *m;

	tf_register(h->tf);
	tf_read_lock(h->tf);
	m = cowmap_cell_load(h->c);
	h->seen = m;
	h->size_at_start = cowmap_size(m);
	if (cowmap_get(m, "k0", 2, &h->k0_at_start) != 1)
		h->k0_at_start = NULL;
	atomic_store(&h->ready, 1);
	while (!atomic_load(&h->stop))
		nap_ms(1);
	/* The borrowed version is intact after later publishes. */
	h->size_at_end = cowmap_size(m);
	if (cowmap_get(m, "k0", 2, &h->k0_at_end) != 1)
		h->k0_at_end = NULL;
	tf_read_unlock(h->tf);
	tf_quiescent(h->tf);
	tf_unregister(h->tf);
	return NULL;
}

START_TEST(stats_pending_while_reader_in_critical_section)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[64];
	struct cowmap_cell *c = cowmap_cell_new(map_of(&o, 64, vals),
						tf->flavor);
	struct cowmap_cell_stats s0, s1, s2;
	struct holder h;
	pthread_t th;
	struct tval *nv = tv_new();

	ck_assert_ptr_nonnull(c);
	cell_barrier(c);
	s0 = cell_stats(c);
	ck_assert_uint_eq(s0.pending_bytes, 0);
	ck_assert_uint_eq(s0.pending_nodes, 0);
	ck_assert_uint_eq(s0.pending_versions, 0);

	memset(&h, 0, sizeof(h));
	h.tf = tf;
	h.c = c;
	ck_assert_int_eq(pthread_create(&th, NULL, holder_main, &h), 0);
	while (!atomic_load(&h.ready))
		nap_ms(1);

	ck_assert_int_eq(cowmap_cell_set(c, "k0", 2, nv), 0);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.published, s0.published + 1);
	ck_assert_uint_gt(s1.pending_bytes, 0);
	ck_assert_uint_gt(s1.pending_nodes, 0);
	ck_assert_uint_gt(s1.pending_versions, 0);

	/* Give a wrong implementation every chance to free early. */
	nap_ms(50);
	s2 = cell_stats(c);
	ck_assert_uint_gt(s2.pending_bytes, 0);
	ck_assert_uint_gt(s2.pending_versions, 0);
	ck_assert_int_eq(tv_freed(vals[0]), 0);

	/* A second publish while the reader still blocks the grace period:
	 * pending grows. */
	ck_assert_int_eq(cowmap_cell_del(c, "k1", 2), 1);
	s2 = cell_stats(c);
	ck_assert_uint_eq(s2.published, s0.published + 2);
	ck_assert_uint_gt(s2.pending_bytes, s1.pending_bytes);
	ck_assert_uint_gt(s2.pending_versions, s1.pending_versions);
	ck_assert_int_eq(tv_freed(vals[1]), 0);

	atomic_store(&h.stop, 1);
	tf_offline(tf);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	tf_online(tf);
	ck_assert_uint_eq(h.size_at_start, 64);
	ck_assert_uint_eq(h.size_at_end, 64);
	ck_assert_ptr_eq(h.k0_at_start, vals[0]);
	ck_assert_ptr_eq(h.k0_at_end, vals[0]);

	cell_barrier(c);
	s2 = cell_stats(c);
	ck_assert_uint_eq(s2.pending_bytes, 0);
	ck_assert_uint_eq(s2.pending_nodes, 0);
	ck_assert_uint_eq(s2.pending_versions, 0);
	ck_assert_uint_eq(s2.published, s0.published + 2);
	ck_assert_int_eq(tv_freed(vals[0]), 1);
	ck_assert_int_eq(tv_freed(vals[1]), 1);
	ck_assert_int_eq(tv_freed(nv), 0);
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/*
 * A lone cowmap_cell_set/del estimates what it retires by walking only the
 * key's path; cowmap_cell_publish of the same change walks the whole old
 * version.  Two cells over equal maps, one changed each way, with a reader
 * holding the grace period open: after every step both must report the
 * same pending bytes and nodes.  Values are owned by the maps, so entries
 * are boxed and replaced leaves count too; the steps replace, insert
 * (splitting entries into new nodes) and delete (collapsing them).  A
 * snapshot of a's version is held across each write: it keeps the write
 * from lending the old path to the new version (lib/lend.c), which would
 * leave the two cells with different reference counts to compare.
 */
START_TEST(stats_pending_of_lone_writes_matches_a_full_walk)
{
	enum { KEYS = 3000, STEPS = 300 };
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	static struct tval *va[KEYS], *vb[KEYS];
	static bool present[KEYS + KEYS / 2];
	struct cowmap_cell *a, *b;
	struct holder h;
	pthread_t th;
	char key[32];

	o.seed = 0x5eed;	/* both maps must have the same shape */
	a = cowmap_cell_new(map_of(&o, KEYS, va), tf->flavor);
	b = cowmap_cell_new(map_of(&o, KEYS, vb), tf->flavor);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	for (unsigned i = 0; i < KEYS + KEYS / 2; i++)
		present[i] = i < KEYS;
	memset(&h, 0, sizeof(h));
	h.tf = tf;
	h.c = a;
	ck_assert_int_eq(pthread_create(&th, NULL, holder_main, &h), 0);
	while (!atomic_load(&h.ready))
		nap_ms(1);

	for (unsigned step = 0; step < STEPS; step++) {
		unsigned k = (step * 7919u) % (KEYS + KEYS / 2);
		size_t len = kfmt(key, sizeof(key), "k", k);
		struct cowmap *cur = cowmap_cell_snapshot(b), *next;
		bool del = present[k] && step % 3 == 0;
		struct cowmap *hold = cowmap_cell_snapshot(a);

		ck_assert_ptr_nonnull(cur);
		ck_assert_ptr_nonnull(hold);
		if (del) {
			ck_assert_int_eq(cowmap_cell_del(a, key, len), 1);
			next = cowmap_del(cur, key, len);
		} else {
			ck_assert_int_eq(cowmap_cell_set(a, key, len, tv_new()),
					 0);
			next = cowmap_set(cur, key, len, tv_new());
		}
		present[k] = !del;
		ck_assert_ptr_nonnull(next);
		cowmap_release(cur);
		cowmap_release(hold);
		ck_assert_int_eq(cowmap_cell_publish(b, next), 0);

		struct cowmap_cell_stats sa = cell_stats(a), sb = cell_stats(b);

		TU_REQUIRE(sa.pending_bytes == sb.pending_bytes &&
				   sa.pending_nodes == sb.pending_nodes,
			   "step %u (%s %s): lone write pending %zu bytes, "
			   "%zu nodes; full walk %zu bytes, %zu nodes",
			   step, del ? "del" : "set", key, sa.pending_bytes,
			   sa.pending_nodes, sb.pending_bytes,
			   sb.pending_nodes);
	}
	ck_assert_uint_gt(cell_stats(a).pending_nodes, STEPS);

	atomic_store(&h.stop, 1);
	tf_offline(tf);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	tf_online(tf);
	cowmap_cell_free(a);
	cowmap_cell_free(b);
	end(tf);
}
END_TEST

/*
 * Lending (lib/lend.c): a lone write copies the old version's path by
 * taking over its nodes' references, and a reader that still holds the
 * old version in its critical section may retain it afterwards, which
 * must give the references back.  Keys are 8-byte numbers hashed to
 * themselves, so that writes in a row go down the same paths (an early
 * version that lent below the root without the checks lib/lend.c
 * describes failed here under ASan).  A reader loads the version, the
 * writer replaces, inserts and deletes keys under it, the reader retains
 * it late (or derives a version from it with cowmap_set, which retains
 * the root's children but not the version: that early version failed
 * this under ASan too), the writer goes on, and then the kept version
 * must be whole and every value freed exactly once when it has to be.
 */
static uint64_t identity_hash(const void *key, size_t len, uint64_t seed,
			      void *ctx)
{
	uint64_t h = 0;

	(void)seed;
	(void)ctx;
	memcpy(&h, key, len < sizeof(h) ? len : sizeof(h));
	return h;
}

struct late {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	atomic_int loaded, go, retained;
	bool derive;		/* derive from the version instead */
	uint64_t derive_key;
	void *derive_value;
	struct cowmap *kept;
};

static void *late_retainer_main(void *arg)
{
	struct late *l = arg;
	const struct cowmap *m;

	tf_register(l->tf);
	tf_read_lock(l->tf);
	m = cowmap_cell_load(l->c);
	atomic_store(&l->loaded, 1);
	while (!atomic_load(&l->go))
		nap_ms(1);
	/* Long after m was retired: retain it, or derive a version from it
	 * without retaining it (which copies its root and retains the
	 * root's children, but not m). */
	l->kept = l->derive ? cowmap_set(m, &l->derive_key,
					 sizeof(l->derive_key),
					 l->derive_value)
			    : cowmap_retain(m);
	tf_read_unlock(l->tf);
	tf_quiescent(l->tf);
	atomic_store(&l->retained, 1);
	tf_unregister(l->tf);
	return NULL;
}

/* Key j of row r: rows differ in the first chunk only, so keys of a row
 * share the root's child and, below it, whole path prefixes. */
static uint64_t row_key(unsigned r, unsigned j)
{
	return (uint64_t)j << 10 | r;
}

static void lend_write(struct cowmap_cell *c, unsigned r, unsigned j,
		       struct tval **slot, bool del)
{
	uint64_t k = row_key(r, j);

	if (del) {
		ck_assert_int_eq(cowmap_cell_del(c, &k, sizeof(k)), 1);
		*slot = NULL;
	} else {
		*slot = tv_new();
		ck_assert_int_eq(cowmap_cell_set(c, &k, sizeof(k), *slot), 0);
	}
}

static void late_use_of_a_lent_version(int flavor, bool derive)
{
	enum { ROWS = 4, PER_ROW = 300 };
	const struct tf_flavor *tf = begin(flavor);
	struct cowmap_options o = tv_opts();
	static struct tval *orig[ROWS][PER_ROW], *now[ROWS][PER_ROW];
	static struct tval *at_load[ROWS][PER_ROW];
	struct cowmap *m;
	struct cowmap_cell *c;
	struct late l;
	pthread_t th;

	o.seed = 1;
	o.hash = identity_hash;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	for (unsigned r = 0; r < ROWS; r++)
		for (unsigned j = 0; j < PER_ROW; j++) {
			uint64_t k = row_key(r, j);

			orig[r][j] = now[r][j] = tv_new();
			m = tu_set_replace(m, &k, sizeof(k), orig[r][j]);
		}
	c = cowmap_cell_new(m, tf->flavor);
	ck_assert_ptr_nonnull(c);
	/* The version the reader loads is made by a write down row 0. */
	lend_write(c, 0, PER_ROW - 1, &now[0][PER_ROW - 1], false);
	memcpy(at_load, now, sizeof(at_load));

	memset(&l, 0, sizeof(l));
	l.tf = tf;
	l.c = c;
	l.derive = derive;
	/* A new key in a row the writes below leave alone: the derived
	 * root keeps the loaded version's row-0 child, which they copy. */
	l.derive_key = row_key(3, PER_ROW + 5);
	l.derive_value = derive ? tv_new() : NULL;
	ck_assert_int_eq(pthread_create(&th, NULL, late_retainer_main, &l), 0);
	while (!atomic_load(&l.loaded))
		nap_ms(1);

	/* Under the loaded version: runs of writes down row 0, then 1. */
	for (unsigned j = 0; j < 40; j++)
		lend_write(c, j / 20, j, &now[j / 20][j], j % 5 == 4);
	atomic_store(&l.go, 1);
	while (!atomic_load(&l.retained))
		nap_ms(1);
	/* After the late retain: more of the same, over the same nodes. */
	for (unsigned j = 0; j < 60; j++)
		lend_write(c, j % 3, 40 + j, &now[j % 3][40 + j], j % 7 == 6);

	ck_assert_int_eq(pthread_join(th, NULL), 0);
	cell_barrier(c);	/* every retired version's callback has run */

	/* The kept version is the loaded one (and the derived key), whole. */
	ck_assert_ptr_nonnull(l.kept);
	ck_assert_uint_eq(cowmap_size(l.kept), ROWS * PER_ROW + derive);
	for (unsigned r = 0; r < ROWS; r++)
		for (unsigned j = 0; j < PER_ROW; j++) {
			uint64_t k = row_key(r, j);
			void *v = NULL;

			ck_assert_int_eq(cowmap_get(l.kept, &k, sizeof(k), &v),
					 1);
			ck_assert_ptr_eq(v, at_load[r][j]);
			ck_assert_int_eq(tv_freed(at_load[r][j]), 0);
		}
	cowmap_release(l.kept);
	cell_barrier(c);

	/* Replaced values freed exactly once; current ones not at all. */
	for (unsigned r = 0; r < ROWS; r++)
		for (unsigned j = 0; j < PER_ROW; j++)
			ck_assert_int_eq(tv_freed(orig[r][j]),
					 orig[r][j] != now[r][j]);
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	end(tf);
}

START_TEST(late_retain_of_a_lent_version_keeps_it_whole)
{
	late_use_of_a_lent_version(_i, false);
}
END_TEST

START_TEST(late_derive_from_a_lent_version_keeps_it_whole)
{
	late_use_of_a_lent_version(_i, true);
}
END_TEST

START_TEST(stats_published_counts_each_publish)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_cell *c = cowmap_cell_new(NULL, tf->flavor);
	struct cowmap_cell_stats s0 = cell_stats(c), s1;
	char key[16];

	for (unsigned i = 0; i < 20; i++) {
		size_t len = kfmt(key, sizeof(key), "p", i);

		ck_assert_int_eq(cowmap_cell_set(c, key, len, tu_val(i)), 0);
		s1 = cell_stats(c);
		ck_assert_uint_eq(s1.published, s0.published + i + 1);
	}
	cell_barrier(c);
	s1 = cell_stats(c);
	ck_assert_uint_eq(s1.pending_bytes, 0);
	ck_assert_uint_eq(s1.pending_nodes, 0);
	ck_assert_uint_eq(s1.pending_versions, 0);
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

START_TEST(stats_bad_args_einval)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_cell *c = cowmap_cell_new(NULL, tf->flavor);
	struct cowmap_cell_stats s;

	ck_assert_int_eq(cowmap_cell_stats(NULL, &s), -EINVAL);
	ck_assert_int_eq(cowmap_cell_stats(c, NULL), -EINVAL);
	cowmap_cell_free(c);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Fault injection                                                     */
/* ------------------------------------------------------------------ */

/*
 * Each test makes allocation n fail for n = 0, 1, ... until the call
 * succeeds.  On every failure: ENOMEM, the published version unchanged
 * (pointer and contents), no value freed that the caller still owns,
 * values the call took freed exactly once, and (in builds that count)
 * exactly as many heap blocks alive as before the call.
 */
#define FAULT_MAX 10000

START_TEST(fault_cell_new)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	long n;

	/* With an initial version (stolen also on failure). */
	for (n = 0; n < FAULT_MAX; n++) {
		long base = live_settled();
		struct tval *vals[3];
		struct cowmap *m = map_of(&o, 3, vals);
		struct cowmap_cell *c;

		errno = 0;
		cm_test_fail_after(n);
		c = cowmap_cell_new(m, tf->flavor);
		cm_test_fail_after(-1);
		if (c != NULL) {
			ck_assert_ptr_eq(cell_current(tf, c), m);
			ck_assert_ptr_eq(cell_get(tf, c, "k1"), vals[1]);
			cowmap_cell_free(c);
			for (int i = 0; i < 3; i++)
				ck_assert_int_eq(tv_freed(vals[i]), 1);
			CHECK_NO_LEAK(tf, base, "cell_new + cell_free");
			break;
		}
		ck_assert_int_eq(errno, ENOMEM);
		tf_barrier(tf);
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(tv_freed(vals[i]), 1);
		CHECK_NO_LEAK(tf, base, "failed cell_new");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_cell_new %s: %ld failure points\n", tf_name_of(_i), n);

	/* With NULL: the cell makes its own empty map. */
	for (n = 0; n < FAULT_MAX; n++) {
		long base = live_settled();
		struct cowmap_cell *c;

		errno = 0;
		cm_test_fail_after(n);
		c = cowmap_cell_new(NULL, tf->flavor);
		cm_test_fail_after(-1);
		if (c != NULL) {
			ck_assert_uint_eq(cell_size(tf, c), 0);
			cowmap_cell_free(c);
			CHECK_NO_LEAK(tf, base, "cell_new(NULL) + cell_free");
			break;
		}
		ck_assert_int_eq(errno, ENOMEM);
		CHECK_NO_LEAK(tf, base, "failed cell_new(NULL)");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_cell_new %s: %ld failure points\n", tf_name_of(_i), n);
	end(tf);
}
END_TEST

/* Common fixture: a cell over k0..k15, and what it looked like. */
struct fault_fix {
	const struct tf_flavor *tf;
	struct cowmap_options o;
	struct tval *vals[16];
	struct cowmap_cell *c;
};

static void fault_fix_init(struct fault_fix *f, int i)
{
	f->tf = begin(i);
	f->o = tv_opts();
	f->c = cowmap_cell_new(map_of(&f->o, 16, f->vals), f->tf->flavor);
	ck_assert_ptr_nonnull(f->c);
}

/* Nothing visible changed: same version, same contents, nothing freed. */
static void fault_check_unchanged(struct fault_fix *f,
				  const struct cowmap *before,
				  uint64_t published)
{
	struct cowmap_cell_stats s = cell_stats(f->c);
	char key[16];

	ck_assert_uint_eq(s.published, published);
	ck_assert_ptr_eq(cell_current(f->tf, f->c), before);
	ck_assert_uint_eq(cell_size(f->tf, f->c), 16);
	for (unsigned i = 0; i < 16; i++) {
		kfmt(key, sizeof(key), "k", i);
		ck_assert_ptr_eq(cell_get(f->tf, f->c, key), f->vals[i]);
		ck_assert_int_eq(tv_freed(f->vals[i]), 0);
	}
}

static void fault_fix_fini(struct fault_fix *f)
{
	cowmap_cell_free(f->c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_msg(tv_freed(&tv_pool[i]) <= 1,
			      "value %u freed %d times", i,
			      tv_freed(&tv_pool[i]));
	end(f->tf);
}

START_TEST(fault_publish)
{
	struct fault_fix f;
	long n;

	fault_fix_init(&f, _i);
	for (n = 0; n < FAULT_MAX; n++) {
		const struct cowmap *before = cell_current(f.tf, f.c);
		uint64_t pub = cell_stats(f.c).published;
		long base;
		struct cowmap *cur, *next;
		struct tval *nv = tv_new();
		int r;

		cell_barrier(f.c);
		base = live_settled();
		cur = cowmap_cell_snapshot(f.c);
		next = cowmap_set(cur, "new", 3, nv);
		ck_assert_ptr_nonnull(next);
		cowmap_release(cur);

		cm_test_fail_after(n);
		r = cowmap_cell_publish(f.c, next);
		cm_test_fail_after(-1);
		if (r == 0) {
			ck_assert_ptr_eq(cell_current(f.tf, f.c), next);
			ck_assert_ptr_eq(cell_get(f.tf, f.c, "new"), nv);
			ck_assert_uint_eq(cell_stats(f.c).published, pub + 1);
			break;
		}
		ck_assert_int_eq(r, -ENOMEM);
		fault_check_unchanged(&f, before, pub);
		cell_barrier(f.c);
		ck_assert_int_eq(tv_freed(nv), 1);	/* next was stolen */
		CHECK_NO_LEAK(f.tf, base, "failed publish");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_publish %s: %ld failure points\n", tf_name_of(_i), n);
	fault_fix_fini(&f);
}
END_TEST

START_TEST(fault_cas)
{
	struct fault_fix f;
	long n;

	fault_fix_init(&f, _i);
	for (n = 0; n < FAULT_MAX; n++) {
		const struct cowmap *before = cell_current(f.tf, f.c);
		uint64_t pub = cell_stats(f.c).published;
		long base;
		struct cowmap *exp, *next;
		struct tval *nv = tv_new();
		int r;

		cell_barrier(f.c);
		base = live_settled();
		exp = cowmap_cell_snapshot(f.c);
		next = cowmap_set(exp, "k3", 2, nv);
		ck_assert_ptr_nonnull(next);

		cm_test_fail_after(n);
		r = cowmap_cell_cas(f.c, exp, next);
		cm_test_fail_after(-1);
		cowmap_release(exp);
		if (r == 0) {
			ck_assert_ptr_eq(cell_current(f.tf, f.c), next);
			ck_assert_uint_eq(cell_stats(f.c).published, pub + 1);
			cell_barrier(f.c);
			ck_assert_int_eq(tv_freed(f.vals[3]), 1);
			break;
		}
		ck_assert_int_eq(r, -ENOMEM);
		fault_check_unchanged(&f, before, pub);
		cell_barrier(f.c);
		ck_assert_int_eq(tv_freed(nv), 1);
		CHECK_NO_LEAK(f.tf, base, "failed cas");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_cas %s: %ld failure points\n", tf_name_of(_i), n);
	fault_fix_fini(&f);
}
END_TEST

START_TEST(fault_update)
{
	struct fault_fix f;
	long n;

	fault_fix_init(&f, _i);
	for (n = 0; n < FAULT_MAX; n++) {
		const struct cowmap *before = cell_current(f.tf, f.c);
		uint64_t pub = cell_stats(f.c).published;
		long base;
		struct upd u = { "k4", NULL, UPD_SET, 0, 0, 0, NULL };
		int r;

		u.value = tv_new();
		cell_barrier(f.c);
		base = live_settled();
		cm_test_fail_after(n);
		r = cowmap_cell_update(f.c, upd_fn, &u);
		cm_test_fail_after(-1);
		if (r == 0) {
			ck_assert_int_eq(u.produced, 1);
			ck_assert_ptr_eq(cell_get(f.tf, f.c, "k4"), u.value);
			ck_assert_uint_eq(cell_stats(f.c).published, pub + 1);
			cell_barrier(f.c);
			ck_assert_int_eq(tv_freed(f.vals[4]), 1);
			break;
		}
		ck_assert_int_eq(r, -ENOMEM);
		ck_assert_int_le(u.calls, 1);
		fault_check_unchanged(&f, before, pub);
		cell_barrier(f.c);
		/* If fn built a version, the map owned the value and the
		 * failed update released it; otherwise it is still ours. */
		ck_assert_int_eq(tv_freed(u.value), u.produced ? 1 : 0);
		CHECK_NO_LEAK(f.tf, base, "failed update");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_update %s: %ld failure points\n", tf_name_of(_i), n);
	fault_fix_fini(&f);
}
END_TEST

START_TEST(fault_cell_set)
{
	struct fault_fix f;
	long n;
	int round;

	fault_fix_init(&f, _i);
	/* Round 0 replaces k5, round 1 adds a new key. */
	for (round = 0; round < 2; round++) {
		const char *key = round == 0 ? "k5" : "added";

		for (n = 0; n < FAULT_MAX; n++) {
			const struct cowmap *before = cell_current(f.tf, f.c);
			uint64_t pub = cell_stats(f.c).published;
			struct tval *nv = tv_new();
			long base;
			int r;

			cell_barrier(f.c);
			base = live_settled();
			cm_test_fail_after(n);
			r = cowmap_cell_set(f.c, key, strlen(key), nv);
			cm_test_fail_after(-1);
			if (r == 0) {
				ck_assert_ptr_eq(cell_get(f.tf, f.c, key), nv);
				ck_assert_uint_eq(cell_stats(f.c).published,
						  pub + 1);
				cell_barrier(f.c);
				if (round == 0) {
					ck_assert_int_eq(tv_freed(f.vals[5]),
							 1);
					f.vals[5] = nv;	/* now k5's value */
				} else {
					ck_assert_int_eq(
						cowmap_cell_del(f.c, key,
								strlen(key)),
						1);
				}
				cell_barrier(f.c);
				break;
			}
			ck_assert_int_eq(r, -ENOMEM);
			fault_check_unchanged(&f, before, pub);
			ck_assert_ptr_null(cell_get(f.tf, f.c, "added"));
			cell_barrier(f.c);
			ck_assert_int_eq(tv_freed(nv), 0);  /* still ours */
			CHECK_NO_LEAK(f.tf, base, "failed cell_set");
		}
		ck_assert_int_lt(n, FAULT_MAX);
		REPORT("fault_cell_set %s: %ld failure points\n", tf_name_of(_i), n);
	}
	fault_fix_fini(&f);
}
END_TEST

/*
 * A lone write that lends its path (lib/lend.c), failing at each
 * allocation in turn down a four-level path (keys are numbers hashed to
 * themselves and share their low 15 bits): nothing visible changes,
 * nothing leaks, no value is freed, and the write that finally succeeds
 * frees exactly the value it replaced.
 */
static void *deep_get(const struct tf_flavor *tf, struct cowmap_cell *c,
		      uint64_t k)
{
	struct cowmap *s = cowmap_cell_snapshot(c);
	void *v = NULL;

	(void)tf;
	ck_assert_ptr_nonnull(s);
	if (cowmap_get(s, &k, sizeof(k), &v) != 1)
		v = NULL;
	cowmap_release(s);
	return v;
}

START_TEST(fault_lent_path_copy)
{
	enum { KEYS = 64, ROUNDS = 2 };
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	static struct tval *vals[KEYS];
	struct cowmap *m;
	struct cowmap_cell *c;
	long n;

	o.seed = 1;
	o.hash = identity_hash;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	for (unsigned j = 0; j < KEYS; j++) {
		uint64_t k = (uint64_t)j << 15 | 0x421;

		vals[j] = tv_new();
		m = tu_set_replace(m, &k, sizeof(k), vals[j]);
	}
	c = cowmap_cell_new(m, tf->flavor);
	ck_assert_ptr_nonnull(c);

	/* Round 0 replaces key 1, round 1 deletes key 2, each after a
	 * successful write to key 0 along the same path. */
	for (int round = 0; round < ROUNDS; round++) {
		uint64_t k0 = 0x421, k = (uint64_t)(1 + round) << 15 | 0x421;
		struct tval *nv0 = tv_new();

		ck_assert_int_eq(cowmap_cell_set(c, &k0, sizeof(k0), nv0), 0);
		vals[0] = nv0;
		for (n = 0; n < FAULT_MAX; n++) {
			uint64_t pub = cell_stats(c).published;
			struct tval *nv = tv_new();
			long base;
			int r;

			cell_barrier(c);
			base = live_settled();
			cm_test_fail_after(n);
			r = round == 0 ? cowmap_cell_set(c, &k, sizeof(k), nv)
				       : cowmap_cell_del(c, &k, sizeof(k));
			cm_test_fail_after(-1);
			if (r >= 0) {
				ck_assert_int_eq(r, round == 0 ? 0 : 1);
				ck_assert_ptr_eq(deep_get(tf, c, k),
						 round == 0 ? (void *)nv : NULL);
				cell_barrier(c);
				ck_assert_int_eq(tv_freed(vals[1 + round]), 1);
				vals[1 + round] = round == 0 ? nv : NULL;
				break;
			}
			ck_assert_int_eq(r, -ENOMEM);
			ck_assert_uint_eq(cell_stats(c).published, pub);
			for (unsigned j = 0; j < KEYS; j++) {
				uint64_t kj = (uint64_t)j << 15 | 0x421;

				ck_assert_ptr_eq(deep_get(tf, c, kj), vals[j]);
				if (vals[j] != NULL)
					ck_assert_int_eq(tv_freed(vals[j]), 0);
			}
			CHECK_NO_LEAK(tf, base, "failed lent path copy");
		}
		ck_assert_int_gt(n, 3);	/* it failed at several levels */
		ck_assert_int_lt(n, FAULT_MAX);
	}
	cowmap_cell_free(c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_msg(tv_freed(&tv_pool[i]) <= 1,
			      "value %u freed %d times", i,
			      tv_freed(&tv_pool[i]));
	end(tf);
}
END_TEST

START_TEST(fault_cell_del)
{
	struct fault_fix f;
	long n;

	fault_fix_init(&f, _i);
	for (n = 0; n < FAULT_MAX; n++) {
		const struct cowmap *before = cell_current(f.tf, f.c);
		uint64_t pub = cell_stats(f.c).published;
		long base;
		int r;

		cell_barrier(f.c);
		base = live_settled();
		cm_test_fail_after(n);
		r = cowmap_cell_del(f.c, "k6", 2);
		cm_test_fail_after(-1);
		if (r == 1) {
			ck_assert_ptr_null(cell_get(f.tf, f.c, "k6"));
			ck_assert_uint_eq(cell_stats(f.c).published, pub + 1);
			cell_barrier(f.c);
			ck_assert_int_eq(tv_freed(f.vals[6]), 1);
			break;
		}
		ck_assert_int_eq(r, -ENOMEM);
		fault_check_unchanged(&f, before, pub);
		CHECK_NO_LEAK(f.tf, base, "failed cell_del");
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_cell_del %s: %ld failure points\n", tf_name_of(_i), n);
	/* Deleting an absent key is answered by a lookup, whichever
	 * allocation would fail: always 0, never a publish. */
	for (n = 0; n < 64; n++) {
		uint64_t pub = cell_stats(f.c).published;
		int r;

		cm_test_fail_after(n);
		r = cowmap_cell_del(f.c, "k6", 2);
		cm_test_fail_after(-1);
		ck_assert_msg(r == 0, "del absent = %d", r);
		ck_assert_uint_eq(cell_stats(f.c).published, pub);
	}
	cowmap_cell_free(f.c);
	end(f.tf);
}
END_TEST

/*
 * The header promises that a lone cowmap_cell_set/del that changes nothing
 * or that the limit refuses "is answered without allocating": with every
 * allocation failing it still gets its real answer, not ENOMEM, and the
 * library does not even try to allocate.  A lone call that does change
 * something is the contrast: it needs memory and says ENOMEM.
 */
START_TEST(fault_lone_noop_and_refused_answered_without_allocating)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4], *nv = tv_new();
	struct cowmap_cell *c;
	const struct cowmap *before;
	uint64_t pub;
	unsigned long allocs, heap_calls;
	long base;
	int r_same, r_absent, r_full, r_del, r_new;

	o.max_entries = 4;
	c = cowmap_cell_new(map_of(&o, 4, vals), tf->flavor);
	ck_assert_ptr_nonnull(c);
	before = cell_current(tf, c);
	pub = cell_stats(c).published;
	cell_barrier(c);
	base = live_settled();

	allocs = cm_test_alloc_count();
	heap_calls = ct_my_allocs();
	cm_test_fail_after(0);
	r_same = cowmap_cell_set(c, "k2", 2, vals[2]);	/* same value */
	r_absent = cowmap_cell_del(c, "nope", 4);	/* absent key */
	r_full = cowmap_cell_set(c, "k9", 2, nv);	/* 4 of 4 entries */
	cm_test_fail_after(-1);
	/* Counted before any ck_assert: Check's own bookkeeping allocates. */
	allocs = cm_test_alloc_count() - allocs;
	heap_calls = ct_my_allocs() - heap_calls;
	ck_assert_int_eq(r_same, 0);
	ck_assert_int_eq(r_absent, 0);
	ck_assert_int_eq(r_full, -ENOSPC);
	ck_assert_uint_eq(allocs, 0);	/* the library did not even try */
	ck_assert_uint_eq(heap_calls, 0);	/* nor made any heap call */

	ck_assert_uint_eq(cell_stats(c).published, pub);
	ck_assert_ptr_eq(cell_current(tf, c), before);
	ck_assert_ptr_null(cell_get(tf, c, "k9"));
	ck_assert_ptr_eq(cell_get(tf, c, "k2"), vals[2]);
	CHECK_NO_LEAK(tf, base, "lone no-op cell_set/del");
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 0);
	ck_assert_int_eq(tv_freed(nv), 0);

	/* Changes do allocate: the same failing allocator refuses them. */
	cm_test_fail_after(0);
	r_del = cowmap_cell_del(c, "k2", 2);
	r_new = cowmap_cell_set(c, "k3", 2, nv);
	cm_test_fail_after(-1);
	ck_assert_int_eq(r_del, -ENOMEM);
	ck_assert_int_eq(r_new, -ENOMEM);
	ck_assert_uint_eq(cell_stats(c).published, pub);
	ck_assert_ptr_eq(cell_get(tf, c, "k3"), vals[3]);

	cowmap_cell_free(c);
	for (int i = 0; i < 4; i++)
		ck_assert_int_eq(tv_freed(vals[i]), 1);
	ck_assert_int_eq(tv_freed(nv), 0);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Combining: requests queued while another writer holds the lock      */
/* ------------------------------------------------------------------ */

/*
 * A cowmap_cell_update() whose fn holds the writer lock until two other
 * threads have queued one cowmap_cell_set/del each; when it returns, one of
 * them finds both requests queued and (per the header) applies them in one
 * transaction and one publish.  Each request must still get its own result.
 */
struct comb_req {
	const char *key;
	int is_del;
	struct tval *v;		/* for sets */
	int result;
};

struct comb {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	atomic_int holding, started;
	long fail_after;	/* -1: no fault injection */
	struct comb_req req[2];
	atomic_int ids;
};

static struct cowmap *comb_hold_fn(const struct cowmap *cur, void *arg)
{
	struct comb *cb = arg;

	atomic_store(&cb->holding, 1);
	while (atomic_load(&cb->started) < 2)
		nap_ms(1);
	nap_ms(30);	/* let both requests reach the queue */
	return cowmap_retain(cur);	/* publish nothing */
}

static void *comb_submitter(void *arg)
{
	struct comb *cb = arg;
	struct comb_req *q = &cb->req[atomic_fetch_add(&cb->ids, 1)];

	tf_register(cb->tf);
	while (!atomic_load(&cb->holding))
		nap_ms(1);
	cm_test_fail_after(cb->fail_after);
	atomic_fetch_add(&cb->started, 1);
	if (q->is_del)
		q->result = cowmap_cell_del(cb->c, q->key, strlen(q->key));
	else
		q->result = cowmap_cell_set(cb->c, q->key, strlen(q->key),
					    q->v);
	cm_test_fail_after(-1);
	tf_quiescent(cb->tf);
	tf_unregister(cb->tf);
	return NULL;
}

/* Run one round; returns how many versions it published. */
static uint64_t comb_round(struct comb *cb)
{
	pthread_t th[2];
	uint64_t pub0 = cell_stats(cb->c).published;

	atomic_store(&cb->holding, 0);
	atomic_store(&cb->started, 0);
	atomic_store(&cb->ids, 0);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, comb_submitter,
						cb),
				 0);
	ck_assert_int_eq(cowmap_cell_update(cb->c, comb_hold_fn, cb), 0);
	tf_offline(cb->tf);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_join(th[i], NULL), 0);
	tf_online(cb->tf);
	return cell_stats(cb->c).published - pub0;
}

START_TEST(combined_requests_each_get_their_result)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct comb cb;
	int combined = 0, rounds = 0;

	memset(&cb, 0, sizeof(cb));
	cb.tf = tf;
	cb.fail_after = -1;
	cb.c = cowmap_cell_new(map_of(&o, 4, vals), tf->flavor);
	ck_assert_ptr_nonnull(cb.c);

	for (int round = 0; round < 12; round++) {
		struct tval *old0 = cell_get(tf, cb.c, "k0");
		uint64_t pubs;

		/* Three shapes: two new keys; replace + delete present;
		 * delete absent + set. */
		switch (round % 3) {
		case 0:
			cb.req[0] = (struct comb_req){ "n0", 0, tv_new(), 99 };
			cb.req[1] = (struct comb_req){ "n1", 0, tv_new(), 99 };
			break;
		case 1:
			cb.req[0] = (struct comb_req){ "k0", 0, tv_new(), 99 };
			cb.req[1] = (struct comb_req){ "n0", 1, NULL, 99 };
			break;
		default:
			cb.req[0] = (struct comb_req){ "n1", 1, NULL, 99 };
			cb.req[1] = (struct comb_req){ "absent", 1, NULL, 99 };
			break;
		}
		pubs = comb_round(&cb);
		rounds++;
		switch (round % 3) {
		case 0:
			ck_assert_int_eq(cb.req[0].result, 0);
			ck_assert_int_eq(cb.req[1].result, 0);
			ck_assert_ptr_eq(cell_get(tf, cb.c, "n0"), cb.req[0].v);
			ck_assert_ptr_eq(cell_get(tf, cb.c, "n1"), cb.req[1].v);
			break;
		case 1:
			ck_assert_int_eq(cb.req[0].result, 0);
			ck_assert_int_eq(cb.req[1].result, 1);
			ck_assert_ptr_eq(cell_get(tf, cb.c, "k0"), cb.req[0].v);
			ck_assert_ptr_null(cell_get(tf, cb.c, "n0"));
			cell_barrier(cb.c);
			ck_assert_int_eq(tv_freed(old0), 1);
			break;
		default:
			ck_assert_int_eq(cb.req[0].result, 1);
			ck_assert_int_eq(cb.req[1].result, 0);
			ck_assert_ptr_null(cell_get(tf, cb.c, "n1"));
			break;
		}
		/* Round 2 changes one key with two requests: at most one
		 * publish however it went.  The others publish once when
		 * combined, twice when not. */
		ck_assert_uint_ge(pubs, 1);
		ck_assert_uint_le(pubs, (round % 3) == 2 ? 1 : 2);
		if ((round % 3) != 2 && pubs == 1)
			combined++;
	}
	REPORT("combining %s: %d of %d rounds combined\n", tf->name, combined,
	       (rounds * 2) / 3);
	ck_assert_msg(combined > 0,
		      "%s: two queued cell_set/del requests were never applied "
		      "in one publish (%d rounds)",
		      tf->name, rounds);
	cowmap_cell_free(cb.c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_eq(tv_freed(&tv_pool[i]), 1);
	end(tf);
}
END_TEST

START_TEST(fault_combined_requests)
{
	const struct tf_flavor *tf = begin(_i);
	struct cowmap_options o = tv_opts();
	struct tval *vals[4];
	struct comb cb;
	long n;

	memset(&cb, 0, sizeof(cb));
	cb.tf = tf;
	cb.c = cowmap_cell_new(map_of(&o, 4, vals), tf->flavor);
	ck_assert_ptr_nonnull(cb.c);

	for (n = 0; n < FAULT_MAX; n++) {
		const struct cowmap *before = cell_current(tf, cb.c);
		uint64_t pubs;
		int ok = 0;

		cb.fail_after = n;
		cb.req[0] = (struct comb_req){ "a", 0, tv_new(), 99 };
		cb.req[1] = (struct comb_req){ "b", 0, tv_new(), 99 };
		pubs = comb_round(&cb);
		for (int i = 0; i < 2; i++) {
			struct comb_req *q = &cb.req[i];

			if (q->result == 0) {
				ok++;
				ck_assert_ptr_eq(cell_get(tf, cb.c, q->key),
						 q->v);
			} else {
				ck_assert_msg(q->result == -ENOMEM,
					      "%s: request %d: %d", tf->name,
					      i, q->result);
				ck_assert_ptr_null(cell_get(tf, cb.c, q->key));
			}
		}
		if (ok == 0) {
			ck_assert_uint_eq(pubs, 0);
			ck_assert_ptr_eq(cell_current(tf, cb.c), before);
		}
		ck_assert_uint_le(pubs, (uint64_t)ok);
		cell_barrier(cb.c);
		for (int i = 0; i < 2; i++)
			ck_assert_int_eq(tv_freed(cb.req[i].v), 0);
		for (int i = 0; i < 4; i++)
			ck_assert_int_eq(tv_freed(vals[i]), 0);
		if (ok == 2)
			break;
		/* Undo partial success for the next round. */
		for (int i = 0; i < 2; i++)
			if (cb.req[i].result == 0)
				ck_assert_int_eq(
					cowmap_cell_del(cb.c, cb.req[i].key, 1),
					1);
	}
	ck_assert_int_lt(n, FAULT_MAX);
	REPORT("fault_combined_requests %s: %ld failure points\n", tf->name,
	       n);
	cowmap_cell_free(cb.c);
	for (unsigned i = 0; i < tv_used; i++)
		ck_assert_int_le(tv_freed(&tv_pool[i]), 1);
	end(tf);
}
END_TEST

/* ------------------------------------------------------------------ */
/* The read path allocates nothing                                     */
/* ------------------------------------------------------------------ */

#define RP_KEYS 1000
#define RP_CHURN 64
/* 1,000,000 read-side loops; a tenth under TSan, which is ~50x slower. */
#if defined(__SANITIZE_THREAD__)
#define RP_LOOPS 100000L
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RP_LOOPS 100000L
#endif
#endif
#ifndef RP_LOOPS
#define RP_LOOPS 1000000L
#endif
#define RP_MAX_LOOPS 20000000L
#define RP_MAX_WRITES 5000000L

struct rp {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	char hit[RP_KEYS][16], miss[RP_KEYS][16], churn[RP_CHURN][16];
	size_t hit_len[RP_KEYS], miss_len[RP_KEYS], churn_len[RP_CHURN];
	const void *gm_keys[4];
	size_t gm_lens[4];
	atomic_int ready, go, done;
	/* Results, written by the reader. */
	unsigned long allocs, frees, cm_allocs;
	long loops, versions_seen, errors, first_error_at;
	int first_error_kind;
};

static void *rp_reader(void *arg)
{
	struct rp *p = arg;
	const struct tf_flavor *tf = p->tf;
	unsigned long a0, f0, c0;
	const struct cowmap *last = NULL;
	long i, versions = 0, errors = 0;
	void *gm_vals[4];

	tf_register(tf);
	/* Warm up everything lazily initialised (first TLS touches). */
	tf_read_lock(tf);
	(void)cowmap_get(cowmap_cell_load(p->c), p->hit[0], p->hit_len[0],
			 NULL);
	tf_read_unlock(tf);
	tf_quiescent(tf);

	a0 = ct_my_allocs();
	f0 = ct_my_frees();
	c0 = cm_test_alloc_count();
	atomic_store(&p->ready, 1);
	while (!atomic_load(&p->go)) {
		tf_quiescent(tf);
		sched_yield();
	}

	for (i = 0; i < RP_MAX_LOOPS; i++) {
		const struct cowmap *m;
		size_t h = (size_t)i % RP_KEYS;
		void *v = NULL;
		int r;

		if (i >= RP_LOOPS && versions >= 2)
			break;
		tf_read_lock(tf);
		m = cowmap_cell_load(p->c);
		if (m != last) {
			versions++;
			last = m;
		}
		r = cowmap_get(m, p->hit[h], p->hit_len[h], &v);
		if (r != 1 || v != tu_val(h)) {
			if (!errors++) {
				p->first_error_at = i;
				p->first_error_kind = 1;
			}
		}
		r = cowmap_get(m, p->miss[h], p->miss_len[h], &v);
		if (r != 0) {
			if (!errors++) {
				p->first_error_at = i;
				p->first_error_kind = 2;
			}
		}
		r = cowmap_get(m, p->churn[i % RP_CHURN],
			       p->churn_len[i % RP_CHURN], &v);
		if (r != 0 && r != 1) {
			if (!errors++) {
				p->first_error_at = i;
				p->first_error_kind = 3;
			}
		}
		if ((i & 15) == 0) {
			size_t found = cowmap_get_many(m, 4, p->gm_keys,
						       p->gm_lens, gm_vals);

			if (found < 2 || gm_vals[0] != tu_val(0) ||
			    gm_vals[2] != NULL) {
				if (!errors++) {
					p->first_error_at = i;
					p->first_error_kind = 4;
				}
			}
		}
		if ((i & 8191) == 0) {
			struct cowmap_iter it;
			size_t n = 0;

			cowmap_iter_init(&it, m);
			while (cowmap_iter_next(&it, NULL, NULL, NULL))
				n++;
			if (n != cowmap_size(m) || n < RP_KEYS) {
				if (!errors++) {
					p->first_error_at = i;
					p->first_error_kind = 5;
				}
			}
		}
		tf_read_unlock(tf);
		if ((i & 63) == 0)
			tf_quiescent(tf);
	}

	p->allocs = ct_my_allocs() - a0;
	p->frees = ct_my_frees() - f0;
	p->cm_allocs = cm_test_alloc_count() - c0;
	p->loops = i;
	p->versions_seen = versions;
	p->errors = errors;
	atomic_store(&p->done, 1);
	tf_unregister(tf);
	return NULL;
}

START_TEST(read_path_allocates_nothing)
{
	const struct tf_flavor *tf = begin(_i);
	struct rp *p = calloc(1, sizeof(*p));
	struct cowmap *m;
	pthread_t th;
	long ops = 0, ops_at_go;

	ck_assert_ptr_nonnull(p);
	p->tf = tf;
	m = cowmap_new(NULL);
	ck_assert_ptr_nonnull(m);
	for (unsigned i = 0; i < RP_KEYS; i++) {
		p->hit_len[i] = kfmt(p->hit[i], sizeof(p->hit[i]), "key", i);
		p->miss_len[i] = kfmt(p->miss[i], sizeof(p->miss[i]), "absent",
				      i);
		m = tu_set_replace(m, p->hit[i], p->hit_len[i], tu_val(i));
	}
	for (unsigned i = 0; i < RP_CHURN; i++)
		p->churn_len[i] = kfmt(p->churn[i], sizeof(p->churn[i]), "w",
				       i);
	p->gm_keys[0] = p->hit[0];
	p->gm_lens[0] = p->hit_len[0];
	p->gm_keys[1] = p->hit[1];
	p->gm_lens[1] = p->hit_len[1];
	p->gm_keys[2] = p->miss[2];
	p->gm_lens[2] = p->miss_len[2];
	p->gm_keys[3] = p->churn[3];
	p->gm_lens[3] = p->churn_len[3];
	p->c = cowmap_cell_new(m, tf->flavor);
	ck_assert_ptr_nonnull(p->c);

	ck_assert_int_eq(pthread_create(&th, NULL, rp_reader, p), 0);
	while (!atomic_load(&p->ready)) {
		tf_quiescent(tf);
		sched_yield();
	}
	/* Publish at least once before the reader starts, then keep going
	 * until it is done (bounded). */
	ck_assert_int_eq(cowmap_cell_set(p->c, p->churn[0], p->churn_len[0],
					 tu_val(100000)),
			 0);
	ops_at_go = ++ops;
	atomic_store(&p->go, 1);
	while (!atomic_load(&p->done) && ops < RP_MAX_WRITES) {
		size_t k = (size_t)ops % RP_CHURN;
		int r;

		if (ops % 3 == 2)
			r = cowmap_cell_del(p->c, p->churn[k], p->churn_len[k]);
		else
			r = cowmap_cell_set(p->c, p->churn[k], p->churn_len[k],
					    tu_val(100000 + (uint64_t)ops));
		TU_REQUIRE(r >= 0, "writer op %ld failed: %d", ops, r);
		ops++;
		tf_quiescent(tf);
		/* Under valgrind one thread runs at a time, and a writer that
		 * never blocks can keep the CPU for all its writes: let the
		 * reader in now and then, or it sees one version only. */
		if ((ops & 63) == 0)
			sched_yield();
	}
	tf_offline(tf);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	tf_online(tf);

	ck_assert_msg(p->errors == 0,
		      "%s: %ld wrong lookups, first at loop %ld (kind %d)",
		      tf->name, p->errors, p->first_error_at,
		      p->first_error_kind);
	ck_assert_int_ge(p->loops, RP_LOOPS);
	ck_assert_msg(p->versions_seen >= 2,
		      "%s: the reader saw %ld versions (writer made %ld ops)",
		      tf->name, p->versions_seen, ops - ops_at_go);
	ck_assert_msg(p->cm_allocs == 0,
		      "%s: the library allocated %lu times on the read path",
		      tf->name, p->cm_allocs);
#ifdef CT_INTERPOSE
	ck_assert_msg(p->allocs == 0 && p->frees == 0,
		      "%s: the reader thread made %lu allocation and %lu free "
		      "calls in %ld loops",
		      tf->name, p->allocs, p->frees, p->loops);
#endif
	REPORT("read path %s: %ld loops, %ld versions seen, %ld writer ops "
	       "meanwhile, %lu/%lu malloc/free calls, %lu cm allocations\n",
	       tf->name, p->loops, p->versions_seen, ops - ops_at_go, p->allocs,
	       p->frees, p->cm_allocs);
	cowmap_cell_free(p->c);
	free(p);
	end(tf);
}
END_TEST


/* Self-test of the interposition: it does see allocations. */
START_TEST(alloc_counter_sees_library_allocations)
{
#ifdef CT_INTERPOSE
	/* Under valgrind its own malloc replaces ours for the library's calls:
	 * nothing to self-test (valgrind checks leaks itself). */
	if (ct_running_on_valgrind())
		return;

	unsigned long a0 = ct_my_allocs(), c0 = cm_test_alloc_count();
	struct cowmap *m = cowmap_new(NULL);
	struct cowmap *m2 = cowmap_set(m, "x", 1, tu_val(1));

	ck_assert_ptr_nonnull(m2);
	ck_assert_uint_gt(cm_test_alloc_count(), c0);
	ck_assert_uint_ge(ct_my_allocs() - a0, cm_test_alloc_count() - c0);
	cowmap_release(m);
	cowmap_release(m2);
#endif
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *cell_suite(void)
{
	Suite *s = suite_create("cell");
	TCase *tc;

	tc = tcase_create("basics");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, cell_new_null_initial_is_empty_map, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, cell_new_steals_initial, 0, TF_COUNT);
	tcase_add_test(tc, cell_new_default_flavor_is_memb);
	tcase_add_test(tc, cell_free_null_is_noop);
	tcase_add_loop_test(tc, cell_new_is_64_byte_aligned, 0, TF_COUNT);
	tcase_add_loop_test(tc, load_returns_current_version, 0, TF_COUNT);
	tcase_add_loop_test(tc, snapshot_survives_later_publishes, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, snapshot_outlives_cell, 0, TF_COUNT);
	tcase_add_test(tc, snapshot_null_is_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("writers");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, publish_releases_old_version_after_grace_period,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, barrier_inside_a_read_section_is_refused, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, cell_free_inside_a_read_section_frees_nothing,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, publish_current_version_again_is_safe, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, publish_bad_args_einval_and_steal_next, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, cas_publishes_when_expected_is_current, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, cas_eagain_when_another_version_won, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, cas_bad_args_einval_and_steal_next, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, update_publishes_fn_result, 0, TF_COUNT);
	tcase_add_loop_test(tc, update_returning_current_publishes_nothing, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, update_fn_failure_returns_negative_errno, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, update_bad_args_einval, 0, TF_COUNT);
	tcase_add_loop_test(tc,
			    cell_set_and_del_publish_and_free_replaced_values,
			    0, TF_COUNT);
	tcase_add_loop_test(tc,
			    writer_frees_what_is_ready_and_nothing_waits_once_it_stops,
			    0, TF_COUNT);
	tcase_add_test(tc, retired_versions_wait_in_one_batch_per_grace_period);
	tcase_add_test(tc, barrier_and_free_outwait_a_preempted_callback);
	tcase_add_test(tc, a_batch_ending_beside_a_push_leaves_one_batch_queued);
	tcase_add_test(tc, a_stuck_grace_period_stalls_writers_once_per_batch);
	tcase_add_test(tc, a_writer_inside_a_read_section_never_waits_for_the_limit);
	tcase_add_loop_test(tc,
			    barrier_beside_writers_frees_everything_retired_before_it,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, cell_del_absent_returns_0_and_publishes_nothing,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, cell_set_del_bad_args_einval, 0, TF_COUNT);
	tcase_add_loop_test(tc, cell_set_beyond_max_entries_enospc, 0,
			    TF_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("stats");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, stats_pending_while_reader_in_critical_section,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, stats_pending_of_lone_writes_matches_a_full_walk,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, late_retain_of_a_lent_version_keeps_it_whole,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, late_derive_from_a_lent_version_keeps_it_whole,
			    0, TF_COUNT);
	tcase_add_loop_test(tc, stats_published_counts_each_publish, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, stats_bad_args_einval, 0, TF_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("fault");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, fault_cell_new, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_publish, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_cas, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_update, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_cell_set, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_cell_del, 0, TF_COUNT);
	tcase_add_loop_test(tc, fault_lent_path_copy, 0, TF_COUNT);
	tcase_add_loop_test(tc,
			    fault_lone_noop_and_refused_answered_without_allocating,
			    0, TF_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("combining");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, combined_requests_each_get_their_result, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, fault_combined_requests, 0, TF_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("read_path");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, alloc_counter_sees_library_allocations);
	tcase_add_loop_test(tc, read_path_allocates_nothing, 0, TF_COUNT);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cell_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
