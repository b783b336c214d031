/*
 * check_batch.c - cowmap_txn_set_many(): a batch must do exactly what the
 * same pairs set one by one with cowmap_txn_set() do, all or nothing.
 *
 * The differential test runs random batches (repeated keys, keys the base
 * or the draft already has, pairs that store a key's current value) on
 * maps of many shapes (colliding hashes, deep tries, long and short keys,
 * value_free) twice on one base: once as a batch, once pair by pair.  The
 * drafts must hold the same entries in the same trie (stats agree, which
 * canonical form makes exact), value_free must have been called for the
 * same values, the base must not change, and the drafts must stay
 * editable afterwards without touching what they share.  Every allocation
 * of a batch is then made to fail in turn, and limits and bad arguments
 * must be refused without a trace.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "testutil.h"

#define TIMEOUT 300

typedef uint64_t hash_fn(const void *, size_t, uint64_t, void *);

static const size_t lens_8[] = { 8 };
static const size_t lens_mixed[] = { 0, 1, 3, 4, 8, 12, 13, 16,
				     TU_LONG_KEY_LEN };

struct shape {
	const char *name;
	hash_fn *hash;
	const size_t *lens;
	size_t nlens;
	uint64_t universe;	/* key ids below this */
	size_t base_keys;	/* keys set in the base */
	size_t batch;		/* pairs in one batch */
	int with_free;
};

#define LENS(a) a, sizeof(a) / sizeof(a[0])

static const struct shape shapes[] = {
	{ "8-byte keys", NULL, LENS(lens_8), 3000, 1000, 1500, 0 },
	{ "8-byte keys, empty base", NULL, LENS(lens_8), 3000, 0, 2500, 0 },
	{ "mixed lengths", NULL, LENS(lens_mixed), 2000, 500, 1500, 0 },
	{ "mixed lengths, value_free", NULL, LENS(lens_mixed), 2000, 500,
	  1500, 1 },
	{ "8-byte keys, value_free", NULL, LENS(lens_8), 600, 300, 900, 1 },
	{ "four hashes", tu_hash_four, LENS(lens_mixed), 120, 40, 150, 1 },
	{ "one hash", tu_hash_const, LENS(lens_8), 80, 30, 100, 0 },
	{ "groups of 8 collide", tu_hash_group8, LENS(lens_8), 400, 100, 400,
	  1 },
	{ "high bits only", tu_hash_high4, LENS(lens_mixed), 200, 50, 250, 0 },
	{ "low bits only", tu_hash_low4, LENS(lens_8), 200, 60, 200, 1 },
	{ "small universe, many repeats", NULL, LENS(lens_8), 20, 10, 300, 1 },
};

#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

/* One batch: the caller's arrays, and the keys' storage. */
struct batch {
	size_t n;
	struct tu_key *keys;
	const void **kptr;
	size_t *lens;
	void **values;
};

static void batch_alloc(struct batch *b, size_t n)
{
	b->n = n;
	b->keys = calloc(n ? n : 1, sizeof(*b->keys));
	b->kptr = calloc(n ? n : 1, sizeof(*b->kptr));
	b->lens = calloc(n ? n : 1, sizeof(*b->lens));
	b->values = calloc(n ? n : 1, sizeof(*b->values));
	ck_assert(b->keys && b->kptr && b->lens && b->values);
}

static void batch_free(struct batch *b)
{
	free(b->keys);
	free(b->kptr);
	free(b->lens);
	free(b->values);
}

/*
 * Random pairs over the shape's universe.  Most values are new pointers
 * (numbered from *next_value); some store the value the key has at that
 * point of the sequence, in @draft (a model of the draft, updated), which
 * is a no-op that transfers nothing.
 */
static void batch_random(struct batch *b, const struct shape *sh,
			 struct tu_rng *rng, struct tu_model *draft,
			 uint64_t *next_value)
{
	for (size_t i = 0; i < b->n; i++) {
		void *cur;

		tu_key_pick(&b->keys[i], rng, sh->lens, sh->nlens,
			    sh->universe);
		b->kptr[i] = b->keys[i].bytes;
		b->lens[i] = b->keys[i].len;
		if (tu_rng_below(rng, 7) == 0 &&
		    tu_model_get(draft, b->kptr[i], b->lens[i], &cur))
			b->values[i] = cur;
		else
			b->values[i] = tu_val((*next_value)++);
		tu_model_set(draft, b->kptr[i], b->lens[i], b->values[i],
			     NULL);
	}
}

static struct cowmap *new_map(const struct shape *sh, uint64_t seed,
			      struct tu_free_log *log, size_t max_entries)
{
	struct cowmap_options o = tu_opts(seed, sh->hash,
					  sh->with_free ? log : NULL);
	struct cowmap *m;

	o.max_entries = max_entries;
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	return m;
}

/* The base: shape->base_keys random keys, also in @model. */
static struct cowmap *base_random(const struct shape *sh, struct tu_rng *rng,
				  struct tu_free_log *log,
				  struct tu_model *model, uint64_t *next_value)
{
	struct cowmap *m = new_map(sh, 0x5eed0000 + sh->base_keys, log, 0);

	for (size_t i = 0; i < sh->base_keys; i++) {
		struct tu_key k;
		void *v = tu_val((*next_value)++);

		tu_key_pick(&k, rng, sh->lens, sh->nlens, sh->universe);
		m = tu_set_replace(m, k.bytes, k.len, v);
		tu_model_set(model, k.bytes, k.len, v, NULL);
	}
	return m;
}

/* A few single-key edits, so the batch meets draft nodes as well as
 * shared ones. */
static void draft_edits(struct cowmap_txn *t, const struct shape *sh,
			struct tu_rng *rng, struct tu_model *model,
			uint64_t *next_value, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct tu_key k;

		tu_key_pick(&k, rng, sh->lens, sh->nlens, sh->universe);
		if (tu_rng_below(rng, 4) == 0) {
			int rc = cowmap_txn_del(t, k.bytes, k.len);

			TU_REQUIRE(rc == tu_model_del(model, k.bytes, k.len,
						      NULL),
				   "txn_del returned %d", rc);
		} else {
			void *v = tu_val((*next_value)++);

			TU_REQUIRE(cowmap_txn_set(t, k.bytes, k.len, v) == 0,
				   "txn_set failed");
			tu_model_set(model, k.bytes, k.len, v, NULL);
		}
	}
}

/* The values value_free received since @since calls, sorted. */
static void **freed_since(const struct tu_free_log *log, size_t since,
			  size_t *n)
{
	size_t k = log->n - since;
	void **v = malloc((k ? k : 1) * sizeof(*v));

	ck_assert_ptr_nonnull(v);
	if (k > 0)
		memcpy(v, log->ptrs + since, k * sizeof(*v));
	for (size_t i = 1; i < k; i++)	/* insertion sort: k is small */
		for (size_t j = i; j > 0 && (uintptr_t)v[j - 1] > (uintptr_t)v[j];
		     j--) {
			void *t = v[j];

			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	*n = k;
	return v;
}

static void require_same_freed(const struct tu_free_log *log, size_t a0,
			       size_t a1, size_t b0, const char *what)
{
	struct tu_free_log a = *log, b = *log;
	size_t na, nb;

	a.n = a1;	/* the log up to the end of run A */
	void **fa = freed_since(&a, a0, &na);
	void **fb = freed_since(&b, b0, &nb);

	TU_REQUIRE(na == nb, "[%s] value_free called %zu times by the batch, "
		   "%zu times by single sets", what, na, nb);
	for (size_t i = 0; i < na; i++)
		TU_REQUIRE(fa[i] == fb[i], "[%s] value_free got other values",
			   what);
	free(fa);
	free(fb);
}

/* The versions and drafts of one shape and seed. */
struct run {
	const struct shape *sh;
	struct tu_rng rng;
	struct tu_free_log log;
	uint64_t next_value;
	struct cowmap *base;
	struct tu_model *base_model;
};

static void run_init(struct run *r, const struct shape *sh, uint64_t seed)
{
	r->sh = sh;
	tu_rng_init(&r->rng, seed);
	tu_free_log_init(&r->log);
	r->next_value = 1;
	r->base_model = tu_model_new();
	r->base = base_random(sh, &r->rng, &r->log, r->base_model,
			      &r->next_value);
}

static void run_fini(struct run *r)
{
	check_map_matches_model(r->base, r->base_model);
	cowmap_release(r->base);
	tu_model_free(r->base_model);
	tu_free_log_fini(&r->log);
}

START_TEST(batch_does_what_single_sets_do)
{
	const struct shape *sh = &shapes[_i % NSHAPES];

	for (uint64_t seed = 1; seed <= 4; seed++) {
		struct run r;

		run_init(&r, sh, seed * 7919 + (uint64_t)_i);

		struct tu_model *model = tu_model_copy(r.base_model);
		struct cowmap_txn *ta = cowmap_txn_begin(r.base);
		struct cowmap_txn *tb = cowmap_txn_begin(r.base);
		struct tu_rng edits = r.rng;	/* the same edits in both */
		uint64_t values_before = r.next_value;
		struct batch b;

		ck_assert(ta && tb);
		draft_edits(ta, sh, &r.rng, model, &r.next_value, seed * 20);
		r.rng = edits;
		r.next_value = values_before;
		{
			struct tu_model *dummy = tu_model_copy(r.base_model);

			draft_edits(tb, sh, &r.rng, dummy, &r.next_value,
				    seed * 20);
			tu_model_free(dummy);
		}

		batch_alloc(&b, sh->batch / seed + 1);
		batch_random(&b, sh, &r.rng, model, &r.next_value);

		size_t a0 = r.log.n;
		int rc = cowmap_txn_set_many(ta, b.n, b.kptr, b.lens,
					     b.values);

		ck_assert_int_eq(rc, 0);

		size_t a1 = r.log.n;

		for (size_t i = 0; i < b.n; i++)
			TU_REQUIRE(cowmap_txn_set(tb, b.kptr[i], b.lens[i],
						  b.values[i]) == 0,
				   "txn_set %zu failed", i);
		/* Gathered sets free what they replaced when they are
		 * merged, which the next read of the draft does. */
		(void)cowmap_txn_size(tb);
		require_same_freed(&r.log, a0, a1, a1, sh->name);
		check_txn_matches_model(ta, model);
		check_txn_matches_model(tb, model);

		/* Both drafts stay editable, and the edits reach neither the
		 * other draft nor the base. */
		struct tu_rng after = r.rng;
		uint64_t after_value = r.next_value;
		struct tu_model *model_b = tu_model_copy(model);

		draft_edits(ta, sh, &r.rng, model, &r.next_value, 30);
		r.rng = after;
		r.next_value = after_value;
		draft_edits(tb, sh, &r.rng, model_b, &r.next_value, 30);

		struct cowmap *ma = cowmap_txn_commit(ta);
		struct cowmap *mb = cowmap_txn_commit(tb);

		ck_assert(ma && mb);
		check_map_matches_model(ma, model);
		check_map_matches_model(mb, model);
		ck_assert_int_eq(cowmap_equal(ma, mb, NULL, NULL), 1);

		struct cowmap_stats sa = tu_stats(ma), sb = tu_stats(mb);

		check_stats_equal(&sa, &sb);

		/* A committed batch is final: a draft of it edits copies. */
		struct tu_model *model_c = tu_model_copy(model);
		struct cowmap_txn *tc = cowmap_txn_begin(ma);

		ck_assert_ptr_nonnull(tc);
		draft_edits(tc, sh, &r.rng, model_c, &r.next_value, 200);
		cowmap_txn_abort(tc);
		check_map_matches_model(ma, model);

		cowmap_release(ma);
		cowmap_release(mb);
		tu_model_free(model);
		tu_model_free(model_b);
		tu_model_free(model_c);
		batch_free(&b);
		run_fini(&r);
	}
}
END_TEST

START_TEST(batch_into_an_empty_map_equals_the_single_sets_build)
{
	const size_t n = 100000;
	struct cowmap_options o = { .seed = 99 };
	struct cowmap *empty = cowmap_new(&o);
	struct cowmap_txn *ta, *tb;
	struct batch b;

	ck_assert_ptr_nonnull(empty);
	batch_alloc(&b, n);
	for (size_t i = 0; i < n; i++) {
		tu_key_make(&b.keys[i], i % 3 == 0 ? 16 : 8, i * 2654435761u);
		b.kptr[i] = b.keys[i].bytes;
		b.lens[i] = b.keys[i].len;
		b.values[i] = tu_val(i);
	}
	ta = cowmap_txn_begin(empty);
	tb = cowmap_txn_begin(empty);
	ck_assert(ta && tb);
	ck_assert_int_eq(cowmap_txn_set_many(ta, n, b.kptr, b.lens, b.values),
			 0);
	for (size_t i = 0; i < n; i++)
		TU_REQUIRE(cowmap_txn_set(tb, b.kptr[i], b.lens[i],
					  b.values[i]) == 0,
			   "txn_set %zu failed", i);
	ck_assert_uint_eq(cowmap_txn_size(ta), n);

	struct cowmap *ma = cowmap_txn_commit(ta), *mb = cowmap_txn_commit(tb);

	ck_assert(ma && mb);
	ck_assert_int_eq(cowmap_equal(ma, mb, NULL, NULL), 1);

	struct cowmap_stats sa = tu_stats(ma), sb = tu_stats(mb);

	check_stats_equal(&sa, &sb);
	ck_assert_uint_eq(cowmap_size(empty), 0);
	cowmap_release(ma);
	cowmap_release(mb);
	cowmap_release(empty);
	batch_free(&b);
}
END_TEST

START_TEST(batch_of_current_values_changes_nothing)
{
	struct run r;
	struct batch b;
	size_t pos = 0, i = 0;
	const void *key;
	size_t len;
	void *value;

	run_init(&r, &shapes[3], 42);	/* mixed lengths, value_free */
	batch_alloc(&b, 2 * tu_model_size(r.base_model));
	while (tu_model_next(r.base_model, &pos, &key, &len, &value)) {
		for (int twice = 0; twice < 2; twice++, i++) {
			memcpy(b.keys[i].bytes, key, len);
			b.keys[i].len = len;
			b.kptr[i] = b.keys[i].bytes;
			b.lens[i] = len;
			b.values[i] = value;
		}
	}

	struct cowmap_txn *t = cowmap_txn_begin(r.base);
	size_t calls = r.log.calls;

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set_many(t, b.n, b.kptr, b.lens, b.values),
			 0);
	ck_assert_uint_eq(r.log.calls, calls);

	struct cowmap *m = cowmap_txn_commit(t);

	ck_assert_ptr_eq(m, r.base);	/* nothing changed: the base itself */
	cowmap_release(m);
	batch_free(&b);
	run_fini(&r);
}
END_TEST

START_TEST(batch_repeating_a_key_frees_each_replaced_value_once)
{
	struct tu_free_log log;
	struct cowmap_options o;
	struct tu_key k;
	struct cowmap *m;

	tu_free_log_init(&log);
	o = tu_opts(7, NULL, &log);
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	tu_key_make(&k, 8, 1);
	m = tu_set_replace(m, k.bytes, k.len, tu_val(100));

	/* v1 twice, v100 (the base's value), v2 twice, v3: v3 wins.  Given
	 * and replaced: v1 and v2, once each.  v100 stays with the base. */
	const void *keys[] = { k.bytes, k.bytes, k.bytes, k.bytes, k.bytes,
			       k.bytes };
	size_t lens[] = { 8, 8, 8, 8, 8, 8 };
	void *values[] = { tu_val(1), tu_val(1), tu_val(100), tu_val(2),
			   tu_val(2), tu_val(3) };
	struct cowmap_txn *t = cowmap_txn_begin(m);
	void *got;

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set_many(t, 6, keys, lens, values), 0);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	ck_assert_int_eq(cowmap_txn_get(t, k.bytes, k.len, &got), 1);
	ck_assert_ptr_eq(got, tu_val(3));

	/* Replacing a value only the draft holds frees it at once. */
	values[0] = tu_val(4);
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys, lens, values), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(3)), 1);
	cowmap_txn_abort(t);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(4)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(100)), 0);
	cowmap_release(m);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(100)), 1);
	ck_assert_uint_eq(log.calls, 5);
	tu_free_log_fini(&log);
}
END_TEST

/*
 * Every allocation of the batch fails in turn: each failure is ENOMEM,
 * leaves the draft as it was and calls no value_free; then the batch
 * succeeds.  ASan and valgrind runs find anything leaked on the way.
 */
START_TEST(batch_fails_cleanly_at_every_allocation)
{
	const struct shape *sh = &shapes[_i % NSHAPES];
	struct run r;
	struct batch b;
	long fails = 0;

	run_init(&r, sh, 1000 + (uint64_t)_i);

	struct tu_model *model = tu_model_copy(r.base_model);
	struct cowmap_txn *t = cowmap_txn_begin(r.base);

	ck_assert_ptr_nonnull(t);
	draft_edits(t, sh, &r.rng, model, &r.next_value, 15);

	struct tu_model *before = tu_model_copy(model);

	batch_alloc(&b, sh->batch < 300 ? sh->batch : 300);
	batch_random(&b, sh, &r.rng, model, &r.next_value);
	for (;; fails++) {
		size_t calls = r.log.calls;
		int rc;

		ck_assert_int_lt(fails, 100000);
		cm_test_fail_after(fails);
		rc = cowmap_txn_set_many(t, b.n, b.kptr, b.lens, b.values);
		cm_test_fail_after(-1);
		if (rc == 0)
			break;
		TU_REQUIRE(rc == -ENOMEM, "[%s] failure %ld returned %d",
			   sh->name, fails, rc);
		TU_REQUIRE(r.log.calls == calls,
			   "[%s] a failed batch called value_free", sh->name);
		check_txn_matches_model(t, before);
	}
	ck_assert_int_gt(fails, 0);
	check_txn_matches_model(t, model);

	struct cowmap *m = cowmap_txn_commit(t);

	ck_assert_ptr_nonnull(m);
	check_map_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
	tu_model_free(before);
	batch_free(&b);
	run_fini(&r);
}
END_TEST

START_TEST(batch_beyond_max_entries_fails_and_changes_nothing)
{
	struct tu_free_log log;
	struct cowmap *m;
	struct batch b;
	const struct shape sh = { "limit", NULL, LENS(lens_8), 0, 0, 0, 1 };

	tu_free_log_init(&log);
	m = new_map(&sh, 5, &log, 100);
	m = tu_fill(m, NULL, 8, 0, 90, 0);	/* ids 0..89 */

	/* Pairs 0-9 replace ids 80..89, 10-19 add ids 90..99, 20 repeats
	 * id 95, 21-30 add ids 100..109: ten new keys too many. */
	batch_alloc(&b, 31);
	for (size_t i = 0; i < 31; i++) {
		uint64_t id = i < 20 ? 80 + i : i == 20 ? 95 : 79 + i;

		tu_key_make(&b.keys[i], 8, id);
		b.kptr[i] = b.keys[i].bytes;
		b.lens[i] = 8;
		b.values[i] = tu_val(1000 + i);
	}

	struct cowmap_txn *t = cowmap_txn_begin(m);

	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set_many(t, 31, b.kptr, b.lens, b.values),
			 -ENOSPC);
	ck_assert_uint_eq(cowmap_txn_size(t), 90);
	ck_assert_uint_eq(log.calls, 0);

	/* Without the last ten the draft is exactly full; the repeat of id
	 * 95 frees the value it replaces (the base keeps its own). */
	ck_assert_int_eq(cowmap_txn_set_many(t, 21, b.kptr, b.lens, b.values),
			 0);
	ck_assert_uint_eq(cowmap_txn_size(t), 100);
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1015)), 1);

	struct cowmap *full = cowmap_txn_commit(t);

	ck_assert_ptr_nonnull(full);
	ck_assert_uint_eq(cowmap_size(full), 100);
	ck_assert_uint_eq(cowmap_size(m), 90);
	cowmap_release(full);
	cowmap_release(m);
	batch_free(&b);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(batch_rejects_bad_arguments_and_changes_nothing)
{
	struct cowmap_options o = { .seed = 3 };
	struct cowmap *m = cowmap_new(&o);
	struct cowmap_txn *t;
	const void *keys[] = { "a", NULL, "c" };
	size_t lens[] = { 1, 1, 1 };
	void *values[] = { tu_val(1), tu_val(2), tu_val(3) };

	ck_assert_ptr_nonnull(m);
	t = cowmap_txn_begin(m);
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set_many(NULL, 1, keys, lens, values),
			 -EINVAL);
	ck_assert_int_eq(cowmap_txn_set_many(t, 3, keys, lens, values),
			 -EINVAL);	/* NULL key of length 1 */
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, NULL, lens, values),
			 -EINVAL);
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys, NULL, values),
			 -EINVAL);
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys, lens, NULL),
			 -EINVAL);
	lens[0] = (size_t)UINT32_MAX + 1;
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys, lens, values),
			 -EINVAL);
	ck_assert_uint_eq(cowmap_txn_size(t), 0);
	ck_assert_int_eq(cowmap_txn_set_many(t, 0, NULL, NULL, NULL), 0);

	/* NULL with length 0 is the empty key, as everywhere. */
	keys[1] = NULL;
	lens[1] = 0;
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys + 1, lens + 1,
					     values + 1),
			 0);
	ck_assert_int_eq(cowmap_txn_get(t, "", 0, NULL), 1);

	struct cowmap *c = cowmap_txn_commit(t);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_txn_set_many(t, 1, keys, lens, values),
			 -EINVAL);	/* finished (still in the quarantine) */
	ck_assert_uint_eq(cowmap_size(c), 1);
	cowmap_release(c);
	cowmap_release(m);
}
END_TEST

static Suite *batch_suite(void)
{
	Suite *s = suite_create("batch");
	TCase *tc = tcase_create("differential");

	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(tc, batch_does_what_single_sets_do, 0, NSHAPES);
	tcase_add_test(tc, batch_into_an_empty_map_equals_the_single_sets_build);
	tcase_add_test(tc, batch_of_current_values_changes_nothing);
	tcase_add_test(tc, batch_repeating_a_key_frees_each_replaced_value_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("failure");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(tc, batch_fails_cleanly_at_every_allocation, 0,
			    NSHAPES);
	tcase_add_test(tc, batch_beyond_max_entries_fails_and_changes_nothing);
	tcase_add_test(tc, batch_rejects_bad_arguments_and_changes_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(batch_suite());
}
