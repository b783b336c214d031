/*
 * check_map.c - unit tests of the version API: new, retain/release, size,
 * get, get_many, set, del, max_entries, value_free, full hash collisions,
 * canonical deletion, stats and the run-time version.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "capture.h"
#include "map.h"	/* the reference count, for the limit test */
#include "testutil.h"

/* Seconds per test: generous, so a loaded machine or a sanitizer build
 * does not turn slowness into failure. */
#define TIMEOUT 120

/* A key longer than the API allows, where size_t can express one. */
#define TOO_LONG ((size_t)UINT32_MAX + 1)

/* ------------------------------------------------------------------ */
/* cowmap_version, cowmap_new                                          */
/* ------------------------------------------------------------------ */

START_TEST(version_matches_header)
{
	ck_assert_uint_eq(cowmap_version(), COWMAP_VERSION_NUMBER);
	ck_assert_uint_eq(COWMAP_VERSION_NUMBER,
			  (COWMAP_VERSION_MAJOR << 16) |
				  (COWMAP_VERSION_MINOR << 8) |
				  COWMAP_VERSION_PATCH);
}
END_TEST

START_TEST(new_with_null_options_is_empty)
{
	struct cowmap *m = cowmap_new(NULL);
	struct cowmap_iter it;
	void *v = NULL;

	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(cowmap_size(m), 0);
	ck_assert_int_eq(cowmap_get(m, "a", 1, &v), 0);
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 0);
	cowmap_iter_init(&it, m);
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, NULL, NULL), 0);
	ck_assert_uint_eq(tu_stats(m).entries, 0);
	cowmap_release(m);
}
END_TEST

START_TEST(new_with_zeroed_options_works_like_defaults)
{
	struct cowmap_options o;
	struct cowmap *m, *m2;
	void *v = NULL;

	memset(&o, 0, sizeof(o));
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(cowmap_size(m), 0);
	m2 = cowmap_set(m, "key", 3, tu_val(1));
	ck_assert_ptr_nonnull(m2);
	ck_assert_int_eq(cowmap_get(m2, "key", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	cowmap_release(m);
	cowmap_release(m2);
}
END_TEST

/* A hash override that records what the map passes it. */
static struct {
	unsigned long calls;
	uint64_t seed;
	void *ctx;
} hash_seen;

static uint64_t recording_hash(const void *key, size_t len, uint64_t seed,
			       void *ctx)
{
	hash_seen.calls++;
	hash_seen.seed = seed;
	hash_seen.ctx = ctx;
	return tu_hash_fnv(key, len, seed, ctx);
}

START_TEST(new_passes_seed_and_ctx_to_hash_override)
{
	struct cowmap_options o;
	struct cowmap *m, *m2, *m3;
	int token;
	unsigned long before;
	void *v = NULL;

	memset(&o, 0, sizeof(o));
	o.seed = 0xabcdef0123456789ULL;
	o.hash = recording_hash;
	o.ctx = &token;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	memset(&hash_seen, 0, sizeof(hash_seen));
	m2 = cowmap_set(m, "alpha", 5, tu_val(1));
	ck_assert_ptr_nonnull(m2);
	ck_assert_uint_gt(hash_seen.calls, 0);
	ck_assert_uint_eq(hash_seen.seed, 0xabcdef0123456789ULL);
	ck_assert_ptr_eq(hash_seen.ctx, &token);

	/* Lookups and later versions use the same hash, seed and ctx. */
	before = hash_seen.calls;
	ck_assert_int_eq(cowmap_get(m2, "alpha", 5, &v), 1);
	ck_assert_uint_gt(hash_seen.calls, before);
	memset(&hash_seen, 0, sizeof(hash_seen));
	m3 = cowmap_set(m2, "beta", 4, tu_val(2));
	ck_assert_ptr_nonnull(m3);
	ck_assert_uint_gt(hash_seen.calls, 0);
	ck_assert_uint_eq(hash_seen.seed, 0xabcdef0123456789ULL);
	ck_assert_ptr_eq(hash_seen.ctx, &token);
	cowmap_release(m);
	cowmap_release(m2);
	cowmap_release(m3);
}
END_TEST

static uint64_t seed_of_new_map(uint64_t seed)
{
	struct cowmap_options o;
	struct cowmap *m, *m2;

	memset(&o, 0, sizeof(o));
	o.seed = seed;
	o.hash = recording_hash;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	memset(&hash_seen, 0, sizeof(hash_seen));
	m2 = cowmap_set(m, "x", 1, tu_val(1));
	ck_assert_ptr_nonnull(m2);
	ck_assert_uint_gt(hash_seen.calls, 0);
	cowmap_release(m);
	cowmap_release(m2);
	return hash_seen.seed;
}

START_TEST(new_with_seed_zero_picks_a_random_seed_per_map)
{
	uint64_t a = seed_of_new_map(0);
	uint64_t b = seed_of_new_map(0);
	uint64_t c = seed_of_new_map(0);

	ck_assert_msg(a != b && b != c && a != c,
		      "maps with seed 0 got seeds %llx %llx %llx",
		      (unsigned long long)a, (unsigned long long)b,
		      (unsigned long long)c);
	ck_assert_uint_eq(seed_of_new_map(77), 77);
}
END_TEST

/* Iteration order of ids 0..n-1 (8-byte keys) inserted in @order. */
static struct tu_entry *order_of(uint64_t seed, const uint64_t *order,
				 size_t n, size_t *count)
{
	struct cowmap *m = tu_map_new(seed, NULL, NULL);
	struct tu_key k;
	struct tu_entry *e;

	for (size_t i = 0; i < n; i++) {
		tu_key_make(&k, 8, order[i]);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(order[i]));
	}
	e = tu_iter_collect(m, count);
	cowmap_release(m);
	return e;
}

START_TEST(same_seed_gives_same_iteration_order)
{
	enum { N = 300 };
	uint64_t fwd[N], rev[N];
	struct tu_entry *a, *b;
	size_t na, nb;

	for (size_t i = 0; i < N; i++) {
		fwd[i] = i;
		rev[i] = N - 1 - i;
	}
	a = order_of(4242, fwd, N, &na);
	b = order_of(4242, rev, N, &nb);
	ck_assert_uint_eq(na, N);
	ck_assert_uint_eq(nb, N);
	for (size_t i = 0; i < N; i++) {
		ck_assert_uint_eq(a[i].id, b[i].id);
		ck_assert_ptr_eq(a[i].value, b[i].value);
	}
	free(a);
	free(b);
}
END_TEST

START_TEST(different_seeds_give_different_iteration_order)
{
	enum { N = 300 };
	uint64_t fwd[N];
	struct tu_entry *a, *b;
	size_t na, nb, same = 0;

	for (size_t i = 0; i < N; i++)
		fwd[i] = i;
	a = order_of(1, fwd, N, &na);
	b = order_of(2, fwd, N, &nb);
	ck_assert_uint_eq(na, N);
	ck_assert_uint_eq(nb, N);
	for (size_t i = 0; i < N; i++)
		same += a[i].id == b[i].id;
	ck_assert_uint_lt(same, N);
	free(a);
	free(b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* retain / release / size                                             */
/* ------------------------------------------------------------------ */

START_TEST(retain_returns_same_version_that_outlives_release)
{
	struct cowmap *m = tu_map_new(1, NULL, NULL);
	struct cowmap *r;
	void *v = NULL;

	m = tu_set_replace(m, "k", 1, tu_val(5));
	r = cowmap_retain(m);
	ck_assert_ptr_eq(r, m);
	cowmap_release(m);
	ck_assert_uint_eq(cowmap_size(r), 1);
	ck_assert_int_eq(cowmap_get(r, "k", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(5));
	cowmap_release(r);
}
END_TEST

START_TEST(retain_of_null_fails_with_einval)
{
	errno = 0;
	ck_assert_ptr_null(cowmap_retain(NULL));
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* A version's count shares its word with the lending flags
 * (lib/map.h): past the limit a retain is refused, not carried into
 * them, and so is every call that would hand back the version itself.
 * (Counting a quarter of a billion retains would take seconds, so the
 * test puts the count just under the limit.) */
START_TEST(retain_past_the_reference_limit_fails_with_enospc)
{
	struct cowmap *m = tu_map_new(1, NULL, NULL);

	m = tu_set_replace(m, "k", 1, tu_val(5));

	unsigned base = atomic_load(&m->refs);

	ck_assert_uint_eq(base & CM_REFS_COUNT, 1);
	atomic_store(&m->refs, base + CM_VERSION_REFS_MAX - 2);
	ck_assert_ptr_eq(cowmap_retain(m), m);	/* the last one allowed */

	unsigned full = atomic_load(&m->refs);
	struct cowmap_txn *t;

	errno = 0;
	ck_assert_ptr_null(cowmap_retain(m));
	ck_assert_int_eq(errno, ENOSPC);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, "k", 1, tu_val(5)));	/* no change */
	ck_assert_int_eq(errno, ENOSPC);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(m, "absent", 6));
	ck_assert_int_eq(errno, ENOSPC);
	errno = 0;
	t = cowmap_txn_begin(m);
	ck_assert_ptr_null(t);
	ck_assert_int_eq(errno, ENOSPC);
	ck_assert_uint_eq(atomic_load(&m->refs), full);

	/* A real change makes a new version and takes no reference to m. */
	struct cowmap *n = cowmap_set(m, "k2", 2, tu_val(6));

	ck_assert_ptr_nonnull(n);
	ck_assert_uint_eq(cowmap_size(n), 2);
	cowmap_release(n);

	atomic_store(&m->refs, base);	/* the references it stood for */
	cowmap_release(m);
}
END_TEST

/* In the child: one copy sharing the node just below the limit, which
 * must work, then one at the limit, which must not return. */
static void copy_twice_at_the_limit(void *arg)
{
	struct cowmap *m = arg;
	struct tu_key k;

	tu_key_make(&k, 8, 1000);
	if (cowmap_set(m, k.bytes, k.len, tu_val(1000)) == NULL) {
		fprintf(stderr, "first copy failed\n");
		return;
	}
	fprintf(stderr, "first copy made\n");
	(void)cowmap_set(m, k.bytes, k.len, tu_val(1001));
	fprintf(stderr, "second copy made\n");
}

/*
 * A node's count at the limit: the next copy that shares it stops the
 * process with SIGABRT and a message naming the node, instead of
 * carrying the count into the lending flags; the copy before it, which
 * reaches the limit, works.  The copies run in a child, which is what
 * dies.
 */
START_TEST(node_references_past_the_limit_stop_the_process)
{
	struct cowmap *m = tu_map_new(1, NULL, NULL);

	/* Enough keys for the root to have a child to share. */
	for (uint64_t i = 0; i < 200; i++) {
		struct tu_key k;

		tu_key_make(&k, 8, i);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
	}
	ck_assert_uint_gt(cm_child_count(m->root), 0);

	/* A copy of the root takes a reference to every child it keeps. */
	struct cm_node *child = cm_children(m->root)[0];
	unsigned held = atomic_load(cm_node_refs(child)) & CM_REFS_COUNT;
	unsigned raise = CM_NODE_REFS_MAX - 1 - held;
	char want[160];
	int status;

	ck_assert_uint_lt(held, CM_NODE_REFS_MAX - 1);
	atomic_fetch_add(cm_node_refs(child), raise);

	const char *err = tu_capture_child(copy_twice_at_the_limit, m,
					   &status);

	atomic_fetch_sub(cm_node_refs(child), raise);
	ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
		      "the copy past the limit did not abort (status %#x)",
		      (unsigned)status);
	ck_assert_reported(err, "first copy made\n");
	ck_assert_msg(strstr(err, "second copy made") == NULL,
		      "the copy past the limit returned");
	snprintf(want, sizeof(want),
		 "cowmap: more than %u references to the node or leaf at %p; "
		 "stopping rather than corrupting memory\n",
		 (unsigned)CM_NODE_REFS_MAX, (void *)child);
	ck_assert_reported(err, want);
	cowmap_release(m);
}
END_TEST

START_TEST(release_of_null_is_ignored)
{
	cowmap_release(NULL);
}
END_TEST

START_TEST(size_of_null_is_zero)
{
	ck_assert_uint_eq(cowmap_size(NULL), 0);
}
END_TEST

START_TEST(size_counts_entries_after_each_update)
{
	struct cowmap *m = tu_map_new(3, NULL, NULL);
	struct tu_key k;

	for (uint64_t i = 0; i < 500; i++) {
		tu_key_make(&k, 8, i);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
		ck_assert_uint_eq(cowmap_size(m), i + 1);
	}
	for (uint64_t i = 0; i < 500; i++) {
		tu_key_make(&k, 8, i);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i + 1000));
		ck_assert_uint_eq(cowmap_size(m), 500);
	}
	for (uint64_t i = 0; i < 500; i++) {
		tu_key_make(&k, 8, i);
		m = tu_del_replace(m, k.bytes, k.len);
		ck_assert_uint_eq(cowmap_size(m), 499 - i);
	}
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_get                                                          */
/* ------------------------------------------------------------------ */

START_TEST(get_finds_stored_value_and_misses_absent_key)
{
	struct cowmap *m = tu_map_new(5, NULL, NULL);
	void *v = NULL;

	m = tu_set_replace(m, "apple", 5, tu_val(1));
	m = tu_set_replace(m, "pear", 4, tu_val(2));
	ck_assert_int_eq(cowmap_get(m, "apple", 5, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	ck_assert_int_eq(cowmap_get(m, "pear", 4, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	ck_assert_int_eq(cowmap_get(m, "plum", 4, &v), 0);
	ck_assert_int_eq(cowmap_get(m, "appl", 4, &v), 0);
	ck_assert_int_eq(cowmap_get(m, "apples", 6, &v), 0);
	ck_assert_int_eq(cowmap_get(m, "APPLE", 5, &v), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(get_accepts_null_value_pointer)
{
	struct cowmap *m = tu_map_new(5, NULL, NULL);

	m = tu_set_replace(m, "k", 1, tu_val(1));
	ck_assert_int_eq(cowmap_get(m, "k", 1, NULL), 1);
	ck_assert_int_eq(cowmap_get(m, "j", 1, NULL), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(get_finds_empty_key_given_as_null_or_pointer)
{
	struct cowmap *m = tu_map_new(5, NULL, NULL);
	void *v = NULL;

	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 0);
	m = tu_set_replace(m, "", 0, tu_val(9));
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 1);
	ck_assert_ptr_eq(v, tu_val(9));
	v = NULL;
	ck_assert_int_eq(cowmap_get(m, "zzz", 0, &v), 1);
	ck_assert_ptr_eq(v, tu_val(9));
	/* The empty key is not the one-byte key "\0". */
	ck_assert_int_eq(cowmap_get(m, "\0", 1, &v), 0);
	m = tu_set_replace(m, "\0", 1, tu_val(10));
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 1);
	ck_assert_ptr_eq(v, tu_val(9));
	ck_assert_int_eq(cowmap_get(m, "\0", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(10));
	ck_assert_uint_eq(cowmap_size(m), 2);
	cowmap_release(m);
}
END_TEST

START_TEST(get_rejects_null_key_with_nonzero_length)
{
	struct cowmap *m = tu_map_new(5, NULL, NULL);
	void *v = tu_val(3);

	m = tu_set_replace(m, "k", 1, tu_val(1));
	ck_assert_int_eq(cowmap_get(m, NULL, 1, &v), -EINVAL);
	ck_assert_int_eq(cowmap_get(m, NULL, 8, &v), -EINVAL);
	cowmap_release(m);
}
END_TEST

START_TEST(get_rejects_key_longer_than_uint32_max)
{
	struct cowmap *m = tu_map_new(5, NULL, NULL);
	void *v = NULL;

	if (SIZE_MAX <= UINT32_MAX)
		return; /* no such length on this platform */
	m = tu_set_replace(m, "k", 1, tu_val(1));
	/* The key is never read: the length alone is invalid. */
	ck_assert_int_eq(cowmap_get(m, "k", TOO_LONG, &v), -EINVAL);
	ck_assert_int_eq(cowmap_get(m, "k", SIZE_MAX, &v), -EINVAL);
	cowmap_release(m);
}
END_TEST

START_TEST(get_rejects_null_map)
{
	void *v = NULL;

	ck_assert_int_eq(cowmap_get(NULL, "k", 1, &v), -EINVAL);
	ck_assert_int_eq(cowmap_get(NULL, NULL, 0, &v), -EINVAL);
}
END_TEST

START_TEST(get_matches_model_for_all_key_lengths)
{
	static const size_t lens[] = { 0,  1,  2,  3,  4,  5,  7,
				       8,  9,  11, 12, 13, 16, 31,
				       32, 33, TU_LONG_KEY_LEN, TU_KEY_MAX };
	struct cowmap *m = tu_map_new(11, NULL, NULL);
	struct tu_model *model = tu_model_new();

	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
		m = tu_fill(m, model, lens[i], 0,
			    tu_key_space(lens[i], 300), 1000 * i);
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_get_many                                                     */
/* ------------------------------------------------------------------ */

START_TEST(get_many_reports_hits_and_misses)
{
	enum { N = 200 };
	struct cowmap *m = tu_map_new(13, NULL, NULL);
	static struct tu_key k[N];
	const void *keys[N];
	size_t lens[N];
	void *values[N];

	/* Even ids are stored, odd ids are not. */
	for (uint64_t i = 0; i < N; i += 2) {
		tu_key_make(&k[0], 8, i);
		m = tu_set_replace(m, k[0].bytes, 8, tu_val(i));
	}
	for (size_t i = 0; i < N; i++) {
		tu_key_make(&k[i], 8, i);
		keys[i] = k[i].bytes;
		lens[i] = k[i].len;
		values[i] = tu_val(999999); /* must be overwritten */
	}
	ck_assert_uint_eq(cowmap_get_many(m, N, keys, lens, values), N / 2);
	for (size_t i = 0; i < N; i++) {
		if (i % 2 == 0)
			ck_assert_ptr_eq(values[i], tu_val(i));
		else
			ck_assert_ptr_null(values[i]);
	}
	cowmap_release(m);
}
END_TEST

START_TEST(get_many_of_zero_keys_returns_zero)
{
	struct cowmap *m = tu_map_new(13, NULL, NULL);
	const void *keys[1] = { "k" };
	size_t lens[1] = { 1 };
	void *values[1] = { tu_val(1) };

	m = tu_set_replace(m, "k", 1, tu_val(1));
	ck_assert_uint_eq(cowmap_get_many(m, 0, keys, lens, values), 0);
	ck_assert_ptr_eq(values[0], tu_val(1)); /* untouched */
	cowmap_release(m);
}
END_TEST

START_TEST(get_many_rejects_null_map_or_arrays)
{
	struct cowmap *m = tu_map_new(13, NULL, NULL);
	const void *keys[1] = { "k" };
	size_t lens[1] = { 1 };
	void *values[1];

	m = tu_set_replace(m, "k", 1, tu_val(1));
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(NULL, 1, keys, lens, values), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 1, NULL, lens, values), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 1, keys, NULL, values), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 1, keys, lens, NULL), 0);
	ck_assert_int_eq(errno, EINVAL);
	cowmap_release(m);
}
END_TEST

START_TEST(get_many_treats_invalid_key_as_absent)
{
	struct cowmap *m = tu_map_new(13, NULL, NULL);
	const void *keys[4] = { "a", NULL, "b", "a" };
	size_t lens[4] = { 1, 5, 1, 1 };
	void *values[4] = { NULL, tu_val(7), NULL, NULL };

	if (SIZE_MAX > UINT32_MAX)
		lens[2] = TOO_LONG;
	m = tu_set_replace(m, "a", 1, tu_val(1));
	m = tu_set_replace(m, "b", 1, tu_val(2));
	/* "a" twice, a NULL key with length 5, and (on 64-bit) a too long
	 * "b" which must not be read. */
	ck_assert_uint_eq(cowmap_get_many(m, 4, keys, lens, values),
			  SIZE_MAX > UINT32_MAX ? 2 : 3);
	ck_assert_ptr_eq(values[0], tu_val(1));
	ck_assert_ptr_null(values[1]);
	if (SIZE_MAX > UINT32_MAX)
		ck_assert_ptr_null(values[2]);
	ck_assert_ptr_eq(values[3], tu_val(1));
	cowmap_release(m);
}
END_TEST

START_TEST(get_many_large_batch_agrees_with_model)
{
	struct cowmap *m = tu_map_new(17, NULL, NULL);
	struct tu_model *model = tu_model_new();

	m = tu_fill(m, model, 8, 0, 10000, 0);
	m = tu_fill(m, model, TU_LONG_KEY_LEN, 0, 2000, 50000);
	m = tu_fill(m, model, 1, 0, 256, 90000);
	m = tu_fill(m, model, 0, 0, 1, 99999);
	check_get_many_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(get_many_on_empty_map_finds_nothing)
{
	struct cowmap *m = tu_map_new(13, NULL, NULL);
	const void *keys[3] = { "a", NULL, "ccc" };
	size_t lens[3] = { 1, 0, 3 };
	void *values[3] = { tu_val(1), tu_val(2), tu_val(3) };

	ck_assert_uint_eq(cowmap_get_many(m, 3, keys, lens, values), 0);
	for (int i = 0; i < 3; i++)
		ck_assert_ptr_null(values[i]);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_set                                                          */
/* ------------------------------------------------------------------ */

START_TEST(set_returns_new_version_with_the_key)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	struct cowmap *m2 = cowmap_set(m, "key", 3, tu_val(1));
	void *v = NULL;

	ck_assert_ptr_nonnull(m2);
	ck_assert_ptr_ne(m2, m);
	ck_assert_uint_eq(cowmap_size(m2), 1);
	ck_assert_int_eq(cowmap_get(m2, "key", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	cowmap_release(m);
	cowmap_release(m2);
}
END_TEST

START_TEST(set_leaves_old_version_unchanged)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct tu_key k;
	struct cowmap *m2;

	m = tu_fill(m, model, 8, 0, 1000, 0);
	tu_key_make(&k, 8, 5000);
	m2 = cowmap_set(m, k.bytes, k.len, tu_val(5000));
	ck_assert_ptr_nonnull(m2);
	check_map_matches_model(m, model);
	tu_model_set(model, k.bytes, k.len, tu_val(5000), NULL);
	check_map_matches_model(m2, model);
	cowmap_release(m);
	cowmap_release(m2);
	tu_model_free(model);
}
END_TEST

START_TEST(set_replacing_value_leaves_old_version_unchanged)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct tu_model *before;
	struct tu_key k;
	struct cowmap *m2;

	m = tu_fill(m, model, 8, 0, 1000, 0);
	before = tu_model_copy(model);
	tu_key_make(&k, 8, 500);
	m2 = cowmap_set(m, k.bytes, k.len, tu_val(777777));
	ck_assert_ptr_nonnull(m2);
	ck_assert_ptr_ne(m2, m);
	tu_model_set(model, k.bytes, k.len, tu_val(777777), NULL);
	check_map_matches_model(m, before);
	check_map_matches_model(m2, model);
	cowmap_release(m);
	cowmap_release(m2);
	tu_model_free(model);
	tu_model_free(before);
}
END_TEST

START_TEST(set_of_the_same_value_returns_the_same_version)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	struct cowmap *same;
	void *v = NULL;

	m = tu_fill(m, NULL, 8, 0, 100, 0);
	m = tu_set_replace(m, "k", 1, tu_val(42));
	same = cowmap_set(m, "k", 1, tu_val(42));
	ck_assert_ptr_eq(same, m);
	/* It is a new reference: dropping one keeps the version alive. */
	cowmap_release(same);
	ck_assert_int_eq(cowmap_get(m, "k", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(42));
	ck_assert_uint_eq(cowmap_size(m), 101);
	cowmap_release(m);
}
END_TEST

START_TEST(set_copies_the_key)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	char buf[TU_LONG_KEY_LEN];
	char orig[TU_LONG_KEY_LEN];
	struct cowmap_iter it;
	const void *key;
	size_t len;
	void *v = NULL;

	memset(buf, 'q', sizeof(buf));
	memcpy(orig, buf, sizeof(buf));
	m = tu_set_replace(m, buf, sizeof(buf), tu_val(1));
	m = tu_set_replace(m, buf, 8, tu_val(2));
	memset(buf, 'z', sizeof(buf));
	ck_assert_int_eq(cowmap_get(m, orig, sizeof(orig), &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	ck_assert_int_eq(cowmap_get(m, orig, 8, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	ck_assert_int_eq(cowmap_get(m, buf, sizeof(buf), &v), 0);
	cowmap_iter_init(&it, m);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &v), 1);
		ck_assert(len == 8 || len == sizeof(orig));
		ck_assert_mem_eq(key, orig, len);
	}
	cowmap_release(m);
}
END_TEST

START_TEST(set_rejects_bad_arguments_and_changes_nothing)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct cowmap_stats before, after;

	m = tu_fill(m, model, 8, 0, 300, 0);
	before = tu_stats(m);

	errno = 0;
	ck_assert_ptr_null(cowmap_set(NULL, "k", 1, tu_val(1)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, NULL, 1, tu_val(1)));
	ck_assert_int_eq(errno, EINVAL);
	if (SIZE_MAX > UINT32_MAX) {
		errno = 0;
		ck_assert_ptr_null(cowmap_set(m, "k", TOO_LONG, tu_val(1)));
		ck_assert_int_eq(errno, EINVAL);
	}
	check_map_matches_model(m, model);
	after = tu_stats(m);
	check_stats_equal(&before, &after);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(set_accepts_null_key_with_zero_length)
{
	struct cowmap *m = tu_map_new(19, NULL, NULL);
	void *v = NULL;

	m = tu_set_replace(m, NULL, 0, tu_val(3));
	ck_assert_uint_eq(cowmap_size(m), 1);
	ck_assert_int_eq(cowmap_get(m, "", 0, &v), 1);
	ck_assert_ptr_eq(v, tu_val(3));
	m = tu_set_replace(m, "", 0, tu_val(4));
	ck_assert_uint_eq(cowmap_size(m), 1);
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 1);
	ck_assert_ptr_eq(v, tu_val(4));
	cowmap_release(m);
}
END_TEST

START_TEST(set_many_keys_of_every_length_matches_model)
{
	struct cowmap *m = tu_map_new(23, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct tu_key k;
	struct tu_rng r;
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };

	tu_rng_init(&r, 23);
	for (uint64_t i = 0; i < 20000; i++) {
		tu_key_pick(&k, &r, lens, 4, 5000);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
		tu_model_set(model, k.bytes, k.len, tu_val(i), NULL);
		if (i % 4000 == 0)
			check_map_matches_model(m, model);
	}
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_del                                                          */
/* ------------------------------------------------------------------ */

START_TEST(del_returns_version_without_the_key)
{
	struct cowmap *m = tu_map_new(29, NULL, NULL);
	struct cowmap *m2;
	void *v = NULL;

	m = tu_set_replace(m, "a", 1, tu_val(1));
	m = tu_set_replace(m, "b", 1, tu_val(2));
	m2 = cowmap_del(m, "a", 1);
	ck_assert_ptr_nonnull(m2);
	ck_assert_ptr_ne(m2, m);
	ck_assert_uint_eq(cowmap_size(m2), 1);
	ck_assert_int_eq(cowmap_get(m2, "a", 1, &v), 0);
	ck_assert_int_eq(cowmap_get(m2, "b", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	cowmap_release(m);
	cowmap_release(m2);
}
END_TEST

START_TEST(del_leaves_old_version_unchanged)
{
	struct cowmap *m = tu_map_new(29, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct tu_model *after;
	struct tu_key k;
	struct cowmap *m2;

	m = tu_fill(m, model, 8, 0, 1000, 0);
	after = tu_model_copy(model);
	tu_key_make(&k, 8, 321);
	m2 = cowmap_del(m, k.bytes, k.len);
	ck_assert_ptr_nonnull(m2);
	ck_assert_int_eq(tu_model_del(after, k.bytes, k.len, NULL), 1);
	check_map_matches_model(m, model);
	check_map_matches_model(m2, after);
	cowmap_release(m);
	cowmap_release(m2);
	tu_model_free(model);
	tu_model_free(after);
}
END_TEST

START_TEST(del_of_absent_key_returns_the_same_version)
{
	struct cowmap *m = tu_map_new(29, NULL, NULL);
	struct cowmap *same;
	struct tu_key k;

	same = cowmap_del(m, "nope", 4);
	ck_assert_ptr_eq(same, m);
	cowmap_release(same);
	m = tu_fill(m, NULL, 8, 0, 500, 0);
	tu_key_make(&k, 8, 500);
	same = cowmap_del(m, k.bytes, k.len);
	ck_assert_ptr_eq(same, m);
	cowmap_release(same);
	same = cowmap_del(m, NULL, 0);
	ck_assert_ptr_eq(same, m);
	cowmap_release(same);
	ck_assert_uint_eq(cowmap_size(m), 500);
	cowmap_release(m);
}
END_TEST

START_TEST(del_rejects_bad_arguments_and_changes_nothing)
{
	struct cowmap *m = tu_map_new(29, NULL, NULL);
	struct tu_model *model = tu_model_new();

	m = tu_fill(m, model, 8, 0, 300, 0);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(NULL, "k", 1));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(m, NULL, 1));
	ck_assert_int_eq(errno, EINVAL);
	if (SIZE_MAX > UINT32_MAX) {
		errno = 0;
		ck_assert_ptr_null(cowmap_del(m, "k", TOO_LONG));
		ck_assert_int_eq(errno, EINVAL);
	}
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(del_of_empty_key_removes_only_it)
{
	struct cowmap *m = tu_map_new(29, NULL, NULL);
	void *v = NULL;

	m = tu_set_replace(m, NULL, 0, tu_val(1));
	m = tu_set_replace(m, "\0", 1, tu_val(2));
	m = tu_del_replace(m, NULL, 0);
	ck_assert_uint_eq(cowmap_size(m), 1);
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 0);
	ck_assert_int_eq(cowmap_get(m, "\0", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	cowmap_release(m);
}
END_TEST

START_TEST(del_every_key_in_random_order_matches_model)
{
	enum { N = 5000 };
	struct cowmap *m = tu_map_new(31, NULL, NULL);
	struct tu_model *model = tu_model_new();
	static uint64_t order[N];
	struct tu_rng r;
	struct tu_key k;

	m = tu_fill(m, model, 8, 0, N, 0);
	for (size_t i = 0; i < N; i++)
		order[i] = i;
	tu_rng_init(&r, 31);
	for (size_t i = N - 1; i > 0; i--) {
		size_t j = tu_rng_below(&r, i + 1);
		uint64_t t = order[i];

		order[i] = order[j];
		order[j] = t;
	}
	for (size_t i = 0; i < N; i++) {
		tu_key_make(&k, 8, order[i]);
		m = tu_del_replace(m, k.bytes, k.len);
		tu_model_del(model, k.bytes, k.len, NULL);
		check_map_key_matches_model(m, model, k.bytes, k.len);
		if (i % 1000 == 0)
			check_map_matches_model(m, model);
	}
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */
/* max_entries                                                         */
/* ------------------------------------------------------------------ */

START_TEST(max_entries_rejects_a_new_key_with_enospc)
{
	struct cowmap *m = tu_map_new_limited(37, NULL, 3);
	struct tu_model *model = tu_model_new();
	struct cowmap_stats before, after;

	m = tu_fill(m, model, 8, 0, 3, 0);
	before = tu_stats(m);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, "new", 3, tu_val(99)));
	ck_assert_int_eq(errno, ENOSPC);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, NULL, 0, tu_val(99)));
	ck_assert_int_eq(errno, ENOSPC);
	check_map_matches_model(m, model);
	after = tu_stats(m);
	check_stats_equal(&before, &after);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(max_entries_allows_replacing_a_key_at_the_limit)
{
	struct cowmap *m = tu_map_new_limited(37, NULL, 3);
	struct tu_model *model = tu_model_new();
	struct tu_key k;

	m = tu_fill(m, model, 8, 0, 3, 0);
	tu_key_make(&k, 8, 1);
	m = tu_set_replace(m, k.bytes, k.len, tu_val(100));
	tu_model_set(model, k.bytes, k.len, tu_val(100), NULL);
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(max_entries_allows_a_new_key_after_a_delete)
{
	struct cowmap *m = tu_map_new_limited(37, NULL, 3);
	struct tu_key k;
	struct cowmap *next;

	m = tu_fill(m, NULL, 8, 0, 3, 0);
	tu_key_make(&k, 8, 0);
	m = tu_del_replace(m, k.bytes, k.len);
	tu_key_make(&k, 8, 10);
	m = tu_set_replace(m, k.bytes, k.len, tu_val(10));
	ck_assert_uint_eq(cowmap_size(m), 3);
	tu_key_make(&k, 8, 11);
	errno = 0;
	next = cowmap_set(m, k.bytes, k.len, tu_val(11));
	ck_assert_ptr_null(next);
	ck_assert_int_eq(errno, ENOSPC);
	cowmap_release(m);
}
END_TEST

START_TEST(max_entries_applies_to_every_derived_version)
{
	struct cowmap *m = tu_map_new_limited(37, NULL, 100);
	struct tu_key k;

	m = tu_fill(m, NULL, 8, 0, 100, 0);
	for (uint64_t id = 100; id < 110; id++) {
		tu_key_make(&k, 8, id);
		errno = 0;
		ck_assert_ptr_null(cowmap_set(m, k.bytes, k.len, tu_val(id)));
		ck_assert_int_eq(errno, ENOSPC);
	}
	ck_assert_uint_eq(cowmap_size(m), 100);
	cowmap_release(m);
}
END_TEST

START_TEST(max_entries_of_one_holds_one_entry)
{
	struct cowmap *m = tu_map_new_limited(37, NULL, 1);

	m = tu_set_replace(m, "a", 1, tu_val(1));
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, "b", 1, tu_val(2)));
	ck_assert_int_eq(errno, ENOSPC);
	m = tu_set_replace(m, "a", 1, tu_val(3));
	ck_assert_uint_eq(cowmap_size(m), 1);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* value_free                                                          */
/* ------------------------------------------------------------------ */

START_TEST(value_free_waits_for_the_last_version_holding_the_value)
{
	struct tu_free_log log;
	struct cowmap *m0, *m1, *m2;

	tu_free_log_init(&log);
	m0 = tu_map_new(41, NULL, &log);
	m1 = cowmap_set(m0, "k", 1, tu_val(1));
	ck_assert_ptr_nonnull(m1);
	m2 = cowmap_set(m1, "j", 1, tu_val(2));
	ck_assert_ptr_nonnull(m2);
	cowmap_release(m0);
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 0); /* m2 still holds both */
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_frees_a_replaced_value_once_no_version_holds_it)
{
	struct tu_free_log log;
	struct cowmap *m0, *m1, *m2;

	tu_free_log_init(&log);
	m0 = tu_map_new(41, NULL, &log);
	m1 = cowmap_set(m0, "k", 1, tu_val(1));
	m2 = cowmap_set(m1, "k", 1, tu_val(2));
	ck_assert_ptr_nonnull(m1);
	ck_assert_ptr_nonnull(m2);
	cowmap_release(m0);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_frees_a_replaced_value_when_the_new_version_dies_first)
{
	struct tu_free_log log;
	struct cowmap *m1, *m2;

	tu_free_log_init(&log);
	m1 = tu_set_replace(tu_map_new(41, NULL, &log), "k", 1, tu_val(1));
	m2 = cowmap_set(m1, "k", 1, tu_val(2));
	ck_assert_ptr_nonnull(m2);
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_frees_a_deleted_value_once_no_version_holds_it)
{
	struct tu_free_log log;
	struct cowmap *m1, *m2;
	void *v = NULL;

	tu_free_log_init(&log);
	m1 = tu_set_replace(tu_map_new(41, NULL, &log), "k", 1, tu_val(1));
	m1 = tu_set_replace(m1, "j", 1, tu_val(2));
	m2 = cowmap_del(m1, "k", 1);
	ck_assert_ptr_nonnull(m2);
	ck_assert_uint_eq(log.calls, 0);
	ck_assert_int_eq(cowmap_get(m1, "k", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_frees_every_value_on_last_release)
{
	enum { N = 3000 };
	struct tu_free_log log;
	struct cowmap *m;

	tu_free_log_init(&log);
	m = tu_map_new(41, NULL, &log);
	m = tu_fill(m, NULL, 8, 0, N, 0);
	m = tu_fill(m, NULL, TU_LONG_KEY_LEN, 0, 100, N);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(m);
	ck_assert_uint_eq(log.calls, N + 100);
	for (uint64_t i = 0; i < N + 100; i += 97)
		ck_assert_uint_eq(tu_free_log_count(&log, tu_val(i)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_ignores_storing_the_same_pointer_again)
{
	struct tu_free_log log;
	struct cowmap *m1, *m2;

	tu_free_log_init(&log);
	m1 = tu_set_replace(tu_map_new(41, NULL, &log), "k", 1, tu_val(1));
	m2 = cowmap_set(m1, "k", 1, tu_val(1));
	ck_assert_ptr_eq(m2, m1);
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_is_not_called_for_a_failed_set)
{
	struct tu_free_log log;
	struct cowmap_options o;
	struct cowmap *m;

	tu_free_log_init(&log);
	o = tu_opts(41, NULL, &log);
	o.max_entries = 2;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	m = tu_set_replace(m, "a", 1, tu_val(1));
	m = tu_set_replace(m, "b", 1, tu_val(2));
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, "c", 1, tu_val(3)));
	ck_assert_int_eq(errno, ENOSPC);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, NULL, 4, tu_val(4)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(NULL, "a", 1, tu_val(5)));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(m);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(3)), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(4)), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(5)), 0);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_is_not_called_for_del_of_absent_key)
{
	struct tu_free_log log;
	struct cowmap *m1, *m2;

	tu_free_log_init(&log);
	m1 = tu_set_replace(tu_map_new(41, NULL, &log), "k", 1, tu_val(1));
	m2 = cowmap_del(m1, "x", 1);
	ck_assert_ptr_eq(m2, m1);
	cowmap_release(m2);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(m1);
	ck_assert_uint_eq(log.calls, 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_frees_each_value_once_across_many_versions)
{
	enum { N = 400, KEYS = 50 };
	struct tu_free_log log;
	struct cowmap *v[N + 1];
	struct tu_rng r;
	struct tu_key k;
	uint64_t sets = 0;

	tu_free_log_init(&log);
	tu_rng_init(&r, 43);
	v[0] = tu_map_new(43, NULL, &log);
	for (int i = 1; i <= N; i++) {
		tu_key_make(&k, 8, tu_rng_below(&r, KEYS));
		if (tu_rng_below(&r, 3) == 0) {
			v[i] = cowmap_del(v[i - 1], k.bytes, k.len);
		} else {
			v[i] = cowmap_set(v[i - 1], k.bytes, k.len,
					  tu_val(sets));
			sets++;
		}
		ck_assert_ptr_nonnull(v[i]);
	}
	/* Release in a scrambled order. */
	for (int i = 0; i <= N; i++) {
		int j = (int)((i * 7919u) % (N + 1));

		cowmap_release(v[j]);
	}
	ck_assert_uint_eq(log.calls, sets);
	check_values_freed(&log, 0, sets, 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(value_free_really_frees_heap_values)
{
	struct tu_free_log log;
	struct cowmap_options o;
	struct cowmap *m;
	struct tu_key k;

	tu_free_log_init(&log);
	memset(&o, 0, sizeof(o));
	o.value_free = tu_value_free_heap;
	o.ctx = &log;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	for (uint64_t i = 0; i < 1000; i++) {
		int *box = malloc(sizeof(*box));

		ck_assert_ptr_nonnull(box);
		*box = (int)i;
		tu_key_make(&k, 8, i % 700); /* 300 replacements */
		m = tu_set_replace(m, k.bytes, k.len, box);
	}
	ck_assert_uint_eq(log.calls, 300);
	cowmap_release(m);
	ck_assert_uint_eq(log.calls, 1000);
	tu_free_log_fini(&log);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Hash collisions                                                     */
/* ------------------------------------------------------------------ */

static void collide_and_check(uint64_t (*hash)(const void *, size_t,
					       uint64_t, void *),
			      uint64_t universe, unsigned steps)
{
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };
	struct tu_free_log log;
	struct cowmap *m, *old = NULL;
	struct tu_model *model = tu_model_new(), *old_model = NULL;
	struct tu_rng r;
	struct tu_key k;
	uint64_t sets = 0;

	tu_free_log_init(&log);
	tu_rng_init(&r, universe * 131 + steps);
	m = tu_map_new(47, hash, &log);
	for (unsigned i = 0; i < steps; i++) {
		tu_key_pick(&k, &r, lens, 4, universe);
		if (tu_rng_below(&r, 3) == 0) {
			m = tu_del_replace(m, k.bytes, k.len);
			tu_model_del(model, k.bytes, k.len, NULL);
		} else {
			m = tu_set_replace(m, k.bytes, k.len, tu_val(sets));
			tu_model_set(model, k.bytes, k.len, tu_val(sets),
				     NULL);
			sets++;
		}
		check_map_key_matches_model(m, model, k.bytes, k.len);
		if (i % 200 == 0) {
			check_map_matches_model(m, model);
			if (old) {
				check_map_matches_model(old, old_model);
				cowmap_release(old);
				tu_model_free(old_model);
			}
			old = cowmap_retain(m);
			old_model = tu_model_copy(model);
		}
	}
	check_map_matches_model(m, model);
	check_map_matches_model(old, old_model);
	/* Delete everything, checking as the collision groups shrink. */
	for (uint64_t id = 0; id < universe; id++) {
		for (size_t l = 0; l < 4; l++) {
			if (id >= tu_key_space(lens[l], universe))
				continue;
			tu_key_make(&k, lens[l], id);
			m = tu_del_replace(m, k.bytes, k.len);
			tu_model_del(model, k.bytes, k.len, NULL);
			check_map_key_matches_model(m, model, k.bytes, k.len);
		}
		if (id % 50 == 0)
			check_map_matches_model(m, model);
	}
	ck_assert_uint_eq(cowmap_size(m), 0);
	cowmap_release(m);
	cowmap_release(old);
	ck_assert_uint_eq(log.calls, sets);
	tu_model_free(model);
	tu_model_free(old_model);
	tu_free_log_fini(&log);
}

START_TEST(full_collisions_of_every_key_work)
{
	collide_and_check(tu_hash_const, 150, 2000);
}
END_TEST

START_TEST(full_collisions_in_groups_of_eight_work)
{
	collide_and_check(tu_hash_group8, 3000, 20000);
}
END_TEST

START_TEST(four_distinct_hashes_work)
{
	collide_and_check(tu_hash_four, 400, 4000);
}
END_TEST

START_TEST(hashes_differing_only_in_low_bits_work)
{
	collide_and_check(tu_hash_low4, 600, 6000);
}
END_TEST

START_TEST(hashes_differing_only_in_high_bits_work)
{
	collide_and_check(tu_hash_high4, 600, 6000);
}
END_TEST

START_TEST(colliding_keys_are_told_apart_by_bytes)
{
	struct cowmap *m = tu_map_new(53, tu_hash_const, NULL);
	char a[TU_LONG_KEY_LEN], b[TU_LONG_KEY_LEN];
	void *v = NULL;

	memset(a, 'x', sizeof(a));
	memcpy(b, a, sizeof(b));
	b[sizeof(b) - 1] = 'y'; /* differ only in the last byte */
	m = tu_set_replace(m, a, sizeof(a), tu_val(1));
	m = tu_set_replace(m, b, sizeof(b), tu_val(2));
	m = tu_set_replace(m, a, sizeof(a) - 1, tu_val(3)); /* a prefix */
	ck_assert_uint_eq(cowmap_size(m), 3);
	ck_assert_int_eq(cowmap_get(m, a, sizeof(a), &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	ck_assert_int_eq(cowmap_get(m, b, sizeof(b), &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	ck_assert_int_eq(cowmap_get(m, a, sizeof(a) - 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(3));
	ck_assert_int_eq(cowmap_get(m, a, sizeof(a) - 2, &v), 0);
	m = tu_del_replace(m, b, sizeof(b));
	ck_assert_int_eq(cowmap_get(m, b, sizeof(b), &v), 0);
	ck_assert_int_eq(cowmap_get(m, a, sizeof(a), &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	cowmap_release(m);
}
END_TEST

START_TEST(colliding_short_keys_differ_by_length_alone)
{
	/* "", "a", "a\0", "a\0\0", ...: equal bytes up to the shorter
	 * length, zero bytes after it, one hash. */
	static const char zeros[16] = "a";
	struct cowmap *m = tu_map_new(53, tu_hash_const, NULL);
	void *v = NULL;

	for (size_t len = 0; len <= sizeof(zeros); len++)
		m = tu_set_replace(m, zeros, len, tu_val(len));
	ck_assert_uint_eq(cowmap_size(m), sizeof(zeros) + 1);
	for (size_t len = 0; len <= sizeof(zeros); len++) {
		ck_assert_int_eq(cowmap_get(m, zeros, len, &v), 1);
		ck_assert_ptr_eq(v, tu_val(len));
	}
	for (size_t len = 1; len <= sizeof(zeros); len += 2)
		m = tu_del_replace(m, zeros, len);
	for (size_t len = 0; len <= sizeof(zeros); len++)
		ck_assert_int_eq(cowmap_get(m, zeros, len, &v),
				 len % 2 == 0 ? 1 : 0);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Canonical deletion                                                  */
/* ------------------------------------------------------------------ */

static void shuffle(uint64_t *a, size_t n, uint64_t seed)
{
	struct tu_rng r;

	tu_rng_init(&r, seed);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = tu_rng_below(&r, i + 1);
		uint64_t t = a[i];

		a[i] = a[j];
		a[j] = t;
	}
}

/* A map of the keys (len, ids[i]) inserted in the given order. */
static struct cowmap *build(uint64_t (*hash)(const void *, size_t,
					     uint64_t, void *),
			    size_t len, const uint64_t *ids, size_t n)
{
	struct cowmap *m = tu_map_new(59, hash, NULL);
	struct tu_key k;

	for (size_t i = 0; i < n; i++) {
		tu_key_make(&k, len, ids[i]);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(ids[i]));
	}
	return m;
}

static void check_delete_all_gives_empty_stats(
	uint64_t (*hash)(const void *, size_t, uint64_t, void *), size_t n)
{
	uint64_t *ids = malloc(n * sizeof(*ids));
	struct cowmap *empty = tu_map_new(59, hash, NULL);
	struct cowmap *m;
	struct cowmap_stats st_empty, st;
	struct tu_key k;

	ck_assert_ptr_nonnull(ids);
	for (size_t i = 0; i < n; i++)
		ids[i] = i;
	shuffle(ids, n, n);
	m = build(hash, 8, ids, n);
	ck_assert_uint_eq(tu_stats(m).entries, n);
	shuffle(ids, n, n + 1);
	for (size_t i = 0; i < n; i++) {
		tu_key_make(&k, 8, ids[i]);
		m = tu_del_replace(m, k.bytes, k.len);
	}
	st_empty = tu_stats(empty);
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 0);
	check_stats_equal(&st, &st_empty);
	cowmap_release(m);
	cowmap_release(empty);
	free(ids);
}

START_TEST(deleting_every_key_gives_the_stats_of_an_empty_map)
{
	check_delete_all_gives_empty_stats(NULL, 5000);
}
END_TEST

START_TEST(deleting_every_colliding_key_gives_the_stats_of_an_empty_map)
{
	check_delete_all_gives_empty_stats(tu_hash_group8, 2000);
	check_delete_all_gives_empty_stats(tu_hash_high4, 500);
	check_delete_all_gives_empty_stats(tu_hash_const, 100);
}
END_TEST

static void check_insertion_order_does_not_matter(
	uint64_t (*hash)(const void *, size_t, uint64_t, void *), size_t len,
	size_t n)
{
	uint64_t *ids = malloc(n * sizeof(*ids));
	struct cowmap *a, *b, *c;
	struct cowmap_stats sa, sb, sc;
	struct tu_model *model;

	ck_assert_ptr_nonnull(ids);
	for (size_t i = 0; i < n; i++)
		ids[i] = i;
	a = build(hash, len, ids, n);
	for (size_t i = 0; i < n; i++)
		ids[i] = n - 1 - i;
	b = build(hash, len, ids, n);
	shuffle(ids, n, 61);
	c = build(hash, len, ids, n);
	sa = tu_stats(a);
	sb = tu_stats(b);
	sc = tu_stats(c);
	ck_assert_uint_eq(sa.entries, n);
	check_stats_equal(&sa, &sb);
	check_stats_equal(&sa, &sc);
	model = tu_model_from_map(a);
	check_map_matches_model(b, model);
	check_map_matches_model(c, model);
	ck_assert_int_eq(cowmap_equal(a, b, NULL, NULL), 1);
	ck_assert_int_eq(cowmap_equal(a, c, NULL, NULL), 1);
	tu_model_free(model);
	cowmap_release(a);
	cowmap_release(b);
	cowmap_release(c);
	free(ids);
}

START_TEST(insertion_order_does_not_change_the_stats)
{
	check_insertion_order_does_not_matter(NULL, 8, 20000);
	check_insertion_order_does_not_matter(NULL, TU_LONG_KEY_LEN, 2000);
	check_insertion_order_does_not_matter(tu_hash_group8, 8, 4000);
	check_insertion_order_does_not_matter(tu_hash_high4, 8, 500);
}
END_TEST

START_TEST(deleting_some_keys_gives_the_stats_of_a_map_built_without_them)
{
	enum { N = 6000 };
	static uint64_t ids[N];
	struct cowmap *full, *kept;
	struct cowmap_stats a, b;
	struct tu_key k;

	for (size_t i = 0; i < N; i++)
		ids[i] = i;
	full = build(NULL, 8, ids, N);
	/* Delete the odd ids, in a random order. */
	for (size_t i = 0; i < N; i++)
		ids[i] = 2 * i + 1;
	shuffle(ids, N / 2, 67);
	for (size_t i = 0; i < N / 2; i++) {
		tu_key_make(&k, 8, ids[i]);
		full = tu_del_replace(full, k.bytes, k.len);
	}
	for (size_t i = 0; i < N / 2; i++)
		ids[i] = 2 * i;
	kept = build(NULL, 8, ids, N / 2);
	a = tu_stats(full);
	b = tu_stats(kept);
	ck_assert_uint_eq(a.entries, N / 2);
	check_stats_equal(&a, &b);
	ck_assert_int_eq(cowmap_equal(full, kept, NULL, NULL), 1);
	cowmap_release(full);
	cowmap_release(kept);
}
END_TEST

START_TEST(deleting_a_deep_partner_collapses_the_path)
{
	/* With hash = key id, ids 0 and 1 << 32 share their low 32 and high
	 * 31 bits: whichever end the trie reads first, they share a path
	 * several levels deep. */
	uint64_t both[2] = { 0, (uint64_t)1 << 32 };
	struct cowmap *pair = build(tu_hash_identity, 8, both, 2);
	struct cowmap *single = build(tu_hash_identity, 8, both, 1);
	struct cowmap_stats sp, ss, sd;
	struct tu_key k;

	sp = tu_stats(pair);
	ss = tu_stats(single);
	ck_assert_uint_ge(sp.max_depth, 1);
	ck_assert_uint_gt(sp.nodes, ss.nodes);
	ck_assert_uint_eq(ss.max_depth, 0);
	tu_key_make(&k, 8, both[1]);
	pair = tu_del_replace(pair, k.bytes, k.len);
	sd = tu_stats(pair);
	check_stats_equal(&sd, &ss);
	cowmap_release(pair);
	cowmap_release(single);
}
END_TEST

START_TEST(deleting_a_collision_partner_collapses_the_collision)
{
	/* Ids 8..10 fully collide under tu_hash_group8; id 16 does not. */
	uint64_t ids[4] = { 16, 8, 9, 10 };
	struct cowmap *m = build(tu_hash_group8, 8, ids, 4);
	struct cowmap *want = build(tu_hash_group8, 8, ids, 2);
	struct cowmap_stats a, b;
	struct tu_key k;

	tu_key_make(&k, 8, 10);
	m = tu_del_replace(m, k.bytes, k.len);
	tu_key_make(&k, 8, 9);
	m = tu_del_replace(m, k.bytes, k.len);
	a = tu_stats(m);
	b = tu_stats(want);
	check_stats_equal(&a, &b);
	cowmap_release(m);
	cowmap_release(want);
}
END_TEST

/* ------------------------------------------------------------------ */
/* cowmap_stats                                                        */
/* ------------------------------------------------------------------ */

START_TEST(stats_entries_agree_with_the_entries_inserted)
{
	struct cowmap *m = tu_map_new(71, NULL, NULL);
	struct cowmap_stats st;
	struct tu_key k;

	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_gt(st.bytes, 0); /* the version header at least */
	m = tu_fill(m, NULL, 8, 0, 1234, 0);
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 1234);
	ck_assert_uint_gt(st.nodes, 0);
	ck_assert_uint_ge(st.max_depth, 1); /* 1234 entries need children */
	for (uint64_t id = 0; id < 234; id++) {
		tu_key_make(&k, 8, id);
		m = tu_del_replace(m, k.bytes, k.len);
	}
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 1000);
	cowmap_release(m);
}
END_TEST

START_TEST(stats_bytes_count_long_keys)
{
	struct cowmap *m = tu_map_new(71, NULL, NULL);
	struct cowmap_stats st;

	m = tu_fill(m, NULL, TU_LONG_KEY_LEN, 0, 1000, 0);
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 1000);
	ck_assert_uint_ge(st.bytes, 1000 * TU_LONG_KEY_LEN);
	cowmap_release(m);
}
END_TEST

START_TEST(stats_of_a_version_do_not_change_when_it_is_shared)
{
	struct cowmap *m = tu_map_new(71, NULL, NULL);
	struct cowmap *m2;
	struct cowmap_stats before, after;
	struct tu_key k;

	m = tu_fill(m, NULL, 8, 0, 2000, 0);
	before = tu_stats(m);
	tu_key_make(&k, 8, 7);
	m2 = cowmap_set(m, k.bytes, k.len, tu_val(123456));
	ck_assert_ptr_nonnull(m2);
	after = tu_stats(m);
	check_stats_equal(&before, &after);
	after = tu_stats(m2);
	ck_assert_uint_eq(after.entries, 2000);
	ck_assert_uint_eq(after.nodes, before.nodes);
	ck_assert_uint_eq(after.bytes, before.bytes);
	cowmap_release(m);
	cowmap_release(m2);
}
END_TEST

START_TEST(stats_rejects_null_arguments)
{
	struct cowmap *m = tu_map_new(71, NULL, NULL);
	struct cowmap_stats st;

	ck_assert_int_eq(cowmap_stats(NULL, &st), -EINVAL);
	ck_assert_int_eq(cowmap_stats(m, NULL), -EINVAL);
	cowmap_release(m);
}
END_TEST

START_TEST(stats_depth_grows_with_deep_collisions)
{
	struct cowmap *m = tu_map_new(71, tu_hash_high4, NULL);
	struct cowmap_stats st;

	/* Keys whose hashes agree on all but the top 4 bits share a path
	 * down to the level that reads those bits. */
	m = tu_fill(m, NULL, 8, 0, 64, 0);
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 64);
	ck_assert_uint_ge(st.max_depth, 1);
	ck_assert_uint_lt(st.max_depth, COWMAP_ITER_DEPTH);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *map_suite(void);

Suite *map_suite(void)
{
	Suite *s = suite_create("map");
	TCase *tc;

	tc = tcase_create("new");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, version_matches_header);
	tcase_add_test(tc, new_with_null_options_is_empty);
	tcase_add_test(tc, new_with_zeroed_options_works_like_defaults);
	tcase_add_test(tc, new_passes_seed_and_ctx_to_hash_override);
	tcase_add_test(tc, new_with_seed_zero_picks_a_random_seed_per_map);
	tcase_add_test(tc, same_seed_gives_same_iteration_order);
	tcase_add_test(tc, different_seeds_give_different_iteration_order);
	suite_add_tcase(s, tc);

	tc = tcase_create("refs");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, retain_returns_same_version_that_outlives_release);
	tcase_add_test(tc, retain_of_null_fails_with_einval);
	tcase_add_test(tc, retain_past_the_reference_limit_fails_with_enospc);
	tcase_add_test(tc, node_references_past_the_limit_stop_the_process);
	tcase_add_test(tc, release_of_null_is_ignored);
	tcase_add_test(tc, size_of_null_is_zero);
	tcase_add_test(tc, size_counts_entries_after_each_update);
	suite_add_tcase(s, tc);

	tc = tcase_create("get");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, get_finds_stored_value_and_misses_absent_key);
	tcase_add_test(tc, get_accepts_null_value_pointer);
	tcase_add_test(tc, get_finds_empty_key_given_as_null_or_pointer);
	tcase_add_test(tc, get_rejects_null_key_with_nonzero_length);
	tcase_add_test(tc, get_rejects_key_longer_than_uint32_max);
	tcase_add_test(tc, get_rejects_null_map);
	tcase_add_test(tc, get_matches_model_for_all_key_lengths);
	tcase_add_test(tc, get_many_reports_hits_and_misses);
	tcase_add_test(tc, get_many_of_zero_keys_returns_zero);
	tcase_add_test(tc, get_many_rejects_null_map_or_arrays);
	tcase_add_test(tc, get_many_treats_invalid_key_as_absent);
	tcase_add_test(tc, get_many_large_batch_agrees_with_model);
	tcase_add_test(tc, get_many_on_empty_map_finds_nothing);
	suite_add_tcase(s, tc);

	tc = tcase_create("set_del");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, set_returns_new_version_with_the_key);
	tcase_add_test(tc, set_leaves_old_version_unchanged);
	tcase_add_test(tc, set_replacing_value_leaves_old_version_unchanged);
	tcase_add_test(tc, set_of_the_same_value_returns_the_same_version);
	tcase_add_test(tc, set_copies_the_key);
	tcase_add_test(tc, set_rejects_bad_arguments_and_changes_nothing);
	tcase_add_test(tc, set_accepts_null_key_with_zero_length);
	tcase_add_test(tc, set_many_keys_of_every_length_matches_model);
	tcase_add_test(tc, del_returns_version_without_the_key);
	tcase_add_test(tc, del_leaves_old_version_unchanged);
	tcase_add_test(tc, del_of_absent_key_returns_the_same_version);
	tcase_add_test(tc, del_rejects_bad_arguments_and_changes_nothing);
	tcase_add_test(tc, del_of_empty_key_removes_only_it);
	tcase_add_test(tc, del_every_key_in_random_order_matches_model);
	suite_add_tcase(s, tc);

	tc = tcase_create("max_entries");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, max_entries_rejects_a_new_key_with_enospc);
	tcase_add_test(tc, max_entries_allows_replacing_a_key_at_the_limit);
	tcase_add_test(tc, max_entries_allows_a_new_key_after_a_delete);
	tcase_add_test(tc, max_entries_applies_to_every_derived_version);
	tcase_add_test(tc, max_entries_of_one_holds_one_entry);
	suite_add_tcase(s, tc);

	tc = tcase_create("value_free");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc,
		       value_free_waits_for_the_last_version_holding_the_value);
	tcase_add_test(
		tc, value_free_frees_a_replaced_value_once_no_version_holds_it);
	tcase_add_test(
		tc,
		value_free_frees_a_replaced_value_when_the_new_version_dies_first);
	tcase_add_test(
		tc, value_free_frees_a_deleted_value_once_no_version_holds_it);
	tcase_add_test(tc, value_free_frees_every_value_on_last_release);
	tcase_add_test(tc, value_free_ignores_storing_the_same_pointer_again);
	tcase_add_test(tc, value_free_is_not_called_for_a_failed_set);
	tcase_add_test(tc, value_free_is_not_called_for_del_of_absent_key);
	tcase_add_test(tc,
		       value_free_frees_each_value_once_across_many_versions);
	tcase_add_test(tc, value_free_really_frees_heap_values);
	suite_add_tcase(s, tc);

	tc = tcase_create("collisions");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, full_collisions_of_every_key_work);
	tcase_add_test(tc, full_collisions_in_groups_of_eight_work);
	tcase_add_test(tc, four_distinct_hashes_work);
	tcase_add_test(tc, hashes_differing_only_in_low_bits_work);
	tcase_add_test(tc, hashes_differing_only_in_high_bits_work);
	tcase_add_test(tc, colliding_keys_are_told_apart_by_bytes);
	tcase_add_test(tc, colliding_short_keys_differ_by_length_alone);
	suite_add_tcase(s, tc);

	tc = tcase_create("canonical");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, deleting_every_key_gives_the_stats_of_an_empty_map);
	tcase_add_test(
		tc,
		deleting_every_colliding_key_gives_the_stats_of_an_empty_map);
	tcase_add_test(tc, insertion_order_does_not_change_the_stats);
	tcase_add_test(
		tc,
		deleting_some_keys_gives_the_stats_of_a_map_built_without_them);
	tcase_add_test(tc, deleting_a_deep_partner_collapses_the_path);
	tcase_add_test(tc,
		       deleting_a_collision_partner_collapses_the_collision);
	suite_add_tcase(s, tc);

	tc = tcase_create("stats");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, stats_entries_agree_with_the_entries_inserted);
	tcase_add_test(tc, stats_bytes_count_long_keys);
	tcase_add_test(tc, stats_of_a_version_do_not_change_when_it_is_shared);
	tcase_add_test(tc, stats_rejects_null_arguments);
	tcase_add_test(tc, stats_depth_grows_with_deep_collisions);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(map_suite());
}
