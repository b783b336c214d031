/*
 * check_txn.c - unit tests of transactions: begin, set, del, get, size,
 * commit, abort, argument errors, use after finish, max_entries,
 * value_free inside drafts, and a large batch against cowmap_set.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Seconds per test: generous, so a loaded machine or a sanitizer build
 * does not turn slowness into failure. */
#define TIMEOUT 120

#define TOO_LONG ((size_t)UINT32_MAX + 1)

static struct cowmap_txn *begin(const struct cowmap *base)
{
	struct cowmap_txn *t = cowmap_txn_begin(base);

	ck_assert_ptr_nonnull(t);
	return t;
}

static struct cowmap *commit(struct cowmap_txn *t)
{
	struct cowmap *m = cowmap_txn_commit(t);

	ck_assert_ptr_nonnull(m);
	return m;
}

/* txn_set key (len, id) to value, in the draft and in @model. */
static void txn_set_id(struct cowmap_txn *t, struct tu_model *model,
		       size_t len, uint64_t id, void *value)
{
	struct tu_key k;
	int rc;

	tu_key_make(&k, len, id);
	rc = cowmap_txn_set(t, k.bytes, k.len, value);
	TU_REQUIRE(rc == 0, "cowmap_txn_set(len %zu, id %llu) returned %d",
		   len, (unsigned long long)id, rc);
	if (model)
		tu_model_set(model, k.bytes, k.len, value, NULL);
}

/* ------------------------------------------------------------------ */
/* Basics                                                              */
/* ------------------------------------------------------------------ */

START_TEST(begin_rejects_null_base)
{
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_begin(NULL));
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(draft_starts_with_the_base_contents)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(1, NULL, NULL), model, 8, 0,
				      500, 0);
	struct cowmap_txn *t = begin(base);

	check_txn_matches_model(t, model);
	cowmap_txn_abort(t);
	check_map_matches_model(base, model);
	cowmap_release(base);
	tu_model_free(model);
}
END_TEST

START_TEST(draft_of_an_empty_map_is_empty)
{
	struct cowmap *base = tu_map_new(1, NULL, NULL);
	struct cowmap_txn *t = begin(base);
	void *v = NULL;

	ck_assert_uint_eq(cowmap_txn_size(t), 0);
	ck_assert_int_eq(cowmap_txn_get(t, "a", 1, &v), 0);
	ck_assert_int_eq(cowmap_txn_get(t, NULL, 0, &v), 0);
	ck_assert_int_eq(cowmap_txn_del(t, "a", 1), 0);
	cowmap_txn_abort(t);
	cowmap_release(base);
}
END_TEST

START_TEST(txn_set_is_seen_by_the_draft_and_not_by_the_base)
{
	struct cowmap *base = tu_map_new(1, NULL, NULL);
	struct cowmap_txn *t;
	void *v = NULL;

	base = tu_set_replace(base, "old", 3, tu_val(1));
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "new", 3, tu_val(2)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, "old", 3, tu_val(3)), 0);
	ck_assert_uint_eq(cowmap_txn_size(t), 2);
	ck_assert_int_eq(cowmap_txn_get(t, "new", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	ck_assert_int_eq(cowmap_txn_get(t, "old", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(3));
	ck_assert_int_eq(cowmap_txn_get(t, "old", 3, NULL), 1);
	ck_assert_uint_eq(cowmap_size(base), 1);
	ck_assert_int_eq(cowmap_get(base, "new", 3, &v), 0);
	ck_assert_int_eq(cowmap_get(base, "old", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	cowmap_txn_abort(t);
	cowmap_release(base);
}
END_TEST

START_TEST(txn_del_returns_one_if_removed_and_zero_if_absent)
{
	struct cowmap *base = tu_map_new(1, NULL, NULL);
	struct cowmap_txn *t;
	void *v = NULL;

	base = tu_set_replace(base, "a", 1, tu_val(1));
	base = tu_set_replace(base, NULL, 0, tu_val(2));
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "b", 1, tu_val(3)), 0);
	ck_assert_int_eq(cowmap_txn_del(t, "a", 1), 1); /* from the base */
	ck_assert_int_eq(cowmap_txn_del(t, "a", 1), 0);
	ck_assert_int_eq(cowmap_txn_del(t, "b", 1), 1); /* from the draft */
	ck_assert_int_eq(cowmap_txn_del(t, "b", 1), 0);
	ck_assert_int_eq(cowmap_txn_del(t, "c", 1), 0); /* never there */
	ck_assert_int_eq(cowmap_txn_del(t, NULL, 0), 1); /* the empty key */
	ck_assert_int_eq(cowmap_txn_del(t, "", 0), 0);
	ck_assert_uint_eq(cowmap_txn_size(t), 0);
	ck_assert_int_eq(cowmap_txn_get(t, "a", 1, &v), 0);
	cowmap_txn_abort(t);
	ck_assert_uint_eq(cowmap_size(base), 2);
	cowmap_release(base);
}
END_TEST

START_TEST(commit_returns_a_version_with_the_changes)
{
	struct tu_model *model = tu_model_new();
	struct tu_model *before;
	struct cowmap *base = tu_fill(tu_map_new(2, NULL, NULL), model, 8, 0,
				      1000, 0);
	struct cowmap_txn *t;
	struct cowmap *next;
	struct tu_key k;

	before = tu_model_copy(model);
	t = begin(base);
	for (uint64_t id = 500; id < 1500; id++)
		txn_set_id(t, model, 8, id, tu_val(id + 10000));
	for (uint64_t id = 0; id < 300; id++) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
		tu_model_del(model, k.bytes, k.len, NULL);
	}
	check_txn_matches_model(t, model);
	next = commit(t);
	ck_assert_ptr_ne(next, base);
	check_map_matches_model(next, model);
	check_map_matches_model(base, before);
	cowmap_release(base);
	check_map_matches_model(next, model);
	cowmap_release(next);
	tu_model_free(model);
	tu_model_free(before);
}
END_TEST

START_TEST(commit_without_changes_returns_the_base)
{
	struct cowmap *base = tu_fill(tu_map_new(3, NULL, NULL), NULL, 8, 0, 100,
				      0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;
	struct tu_key k;
	void *v = NULL;

	tu_key_make(&k, 8, 5);
	ck_assert_int_eq(cowmap_txn_get(t, k.bytes, k.len, &v), 1);
	next = commit(t);
	ck_assert_ptr_eq(next, base);
	cowmap_release(next); /* a new reference */
	ck_assert_uint_eq(cowmap_size(base), 100);
	cowmap_release(base);
}
END_TEST

START_TEST(commit_after_no_op_edits_returns_the_base)
{
	struct cowmap *base = tu_fill(tu_map_new(3, NULL, NULL), NULL, 8, 0, 100,
				      0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;
	struct tu_key k;

	/* Storing the pointer a key already maps to, and deleting an absent
	 * key, change nothing. */
	tu_key_make(&k, 8, 7);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(7)), 0);
	tu_key_make(&k, 8, 100);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 0);
	next = commit(t);
	ck_assert_ptr_eq(next, base);
	cowmap_release(next);
	cowmap_release(base);
}
END_TEST

START_TEST(commit_of_edits_that_cancel_out_equals_the_base)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(3, NULL, NULL), model, 8, 0, 100,
				      0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;
	struct tu_key k;

	tu_key_make(&k, 8, 1000);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	next = commit(t);
	check_map_matches_model(next, model);
	ck_assert_int_eq(cowmap_equal(next, base, NULL, NULL), 1);
	cowmap_release(next);
	cowmap_release(base);
	tu_model_free(model);
}
END_TEST

START_TEST(abort_leaves_the_base_unchanged)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(4, NULL, NULL), model, 8, 0,
				      2000, 0);
	struct cowmap_txn *t = begin(base);
	struct tu_key k;

	for (uint64_t id = 0; id < 3000; id++)
		txn_set_id(t, NULL, 8, id, tu_val(id + 50000));
	for (uint64_t id = 0; id < 3000; id += 3) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	}
	cowmap_txn_abort(t);
	check_map_matches_model(base, model);
	cowmap_release(base);
	tu_model_free(model);
}
END_TEST

START_TEST(abort_of_null_is_ignored)
{
	cowmap_txn_abort(NULL);
}
END_TEST

START_TEST(draft_keeps_its_base_alive)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(5, NULL, NULL), model, 8, 0, 300,
				      0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;

	cowmap_release(base); /* the draft holds its own reference */
	check_txn_matches_model(t, model);
	txn_set_id(t, model, 8, 1000, tu_val(1000));
	next = commit(t);
	check_map_matches_model(next, model);
	cowmap_release(next);
	tu_model_free(model);
}
END_TEST

START_TEST(txn_edits_never_reach_a_committed_version)
{
	struct tu_model *m1 = tu_model_new();
	struct tu_model *m2;
	struct cowmap *v0 = tu_map_new(6, NULL, NULL);
	struct cowmap_txn *t = begin(v0);
	struct cowmap *v1, *v2;
	struct tu_key k;

	for (uint64_t id = 0; id < 2000; id++)
		txn_set_id(t, m1, 8, id, tu_val(id));
	v1 = commit(t);
	m2 = tu_model_copy(m1);
	/* A new draft on v1 must copy before it writes, also nodes that the
	 * first draft built and owned. */
	t = begin(v1);
	for (uint64_t id = 0; id < 2000; id += 2)
		txn_set_id(t, m2, 8, id, tu_val(id + 100000));
	for (uint64_t id = 1; id < 2000; id += 4) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
		tu_model_del(m2, k.bytes, k.len, NULL);
	}
	check_map_matches_model(v1, m1);
	v2 = commit(t);
	check_map_matches_model(v1, m1);
	check_map_matches_model(v2, m2);
	ck_assert_uint_eq(cowmap_size(v0), 0);
	cowmap_release(v0);
	cowmap_release(v1);
	cowmap_release(v2);
	tu_model_free(m1);
	tu_model_free(m2);
}
END_TEST

START_TEST(cowmap_set_after_commit_leaves_the_commit_unchanged)
{
	struct tu_model *model = tu_model_new();
	struct tu_model *later;
	struct cowmap *v0 = tu_map_new(6, NULL, NULL);
	struct cowmap_txn *t = begin(v0);
	struct cowmap *v1, *cur;
	struct tu_key k;

	for (uint64_t id = 0; id < 1000; id++)
		txn_set_id(t, model, 8, id, tu_val(id));
	v1 = commit(t);
	later = tu_model_copy(model);
	/* Persistent updates of a version a draft built must copy its
	 * nodes too. */
	cur = cowmap_retain(v1);
	for (uint64_t id = 0; id < 1000; id += 3) {
		tu_key_make(&k, 8, id);
		if (id % 2) {
			cur = tu_del_replace(cur, k.bytes, k.len);
			tu_model_del(later, k.bytes, k.len, NULL);
		} else {
			cur = tu_set_replace(cur, k.bytes, k.len,
					     tu_val(id + 7));
			tu_model_set(later, k.bytes, k.len, tu_val(id + 7),
				     NULL);
		}
	}
	check_map_matches_model(v1, model);
	check_map_matches_model(cur, later);
	cowmap_release(v0);
	cowmap_release(v1);
	cowmap_release(cur);
	tu_model_free(model);
	tu_model_free(later);
}
END_TEST

START_TEST(two_drafts_of_one_base_are_independent)
{
	struct tu_model *base_model = tu_model_new();
	struct tu_model *ma, *mb;
	struct cowmap *base = tu_fill(tu_map_new(7, NULL, NULL), base_model, 8, 0,
				      500, 0);
	struct cowmap_txn *a = begin(base);
	struct cowmap_txn *b = begin(base);
	struct cowmap *va, *vb;

	ma = tu_model_copy(base_model);
	mb = tu_model_copy(base_model);
	for (uint64_t id = 0; id < 1000; id++) {
		txn_set_id(a, ma, 8, id, tu_val(id + 10000));
		txn_set_id(b, mb, 8, id + 250, tu_val(id + 20000));
	}
	check_txn_matches_model(a, ma);
	check_txn_matches_model(b, mb);
	va = commit(a);
	check_txn_matches_model(b, mb);
	vb = commit(b);
	check_map_matches_model(va, ma);
	check_map_matches_model(vb, mb);
	check_map_matches_model(base, base_model);
	cowmap_release(base);
	cowmap_release(va);
	cowmap_release(vb);
	tu_model_free(base_model);
	tu_model_free(ma);
	tu_model_free(mb);
}
END_TEST

/* _i = 1: with value_free (boxed entries), counted to the end. */
START_TEST(random_edits_in_a_draft_match_the_model)
{
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };
	struct tu_free_log log;
	struct tu_model *model = tu_model_new();
	struct tu_model *before;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;
	struct tu_rng r;
	struct tu_key k;
	size_t sets_in_draft = 0;

	tu_free_log_init(&log);
	base = tu_map_new(8, NULL, _i ? &log : NULL);
	tu_rng_init(&r, 8);
	for (int i = 0; i < 2000; i++) {
		tu_key_pick(&k, &r, lens, 4, 3000);
		base = tu_set_replace(base, k.bytes, k.len, tu_val(i));
		tu_model_set(model, k.bytes, k.len, tu_val(i), NULL);
	}
	before = tu_model_copy(model);
	t = begin(base);
	for (int i = 0; i < 20000; i++) {
		void *v = NULL, *want = NULL;
		int rc, in_model;

		tu_key_pick(&k, &r, lens, 4, 3000);
		switch (tu_rng_below(&r, 3)) {
		case 0:
			rc = cowmap_txn_set(t, k.bytes, k.len,
					    tu_val(100000 + i));
			ck_assert_int_eq(rc, 0);
			sets_in_draft++;
			tu_model_set(model, k.bytes, k.len, tu_val(100000 + i),
				     NULL);
			break;
		case 1:
			rc = cowmap_txn_del(t, k.bytes, k.len);
			ck_assert_int_eq(rc, tu_model_del(model, k.bytes,
							  k.len, NULL));
			break;
		default:
			rc = cowmap_txn_get(t, k.bytes, k.len, &v);
			in_model = tu_model_get(model, k.bytes, k.len, &want);
			ck_assert_int_eq(rc, in_model);
			if (in_model)
				ck_assert_ptr_eq(v, want);
			break;
		}
		ck_assert_uint_eq(cowmap_txn_size(t), tu_model_size(model));
		if (i % 5000 == 0)
			check_txn_matches_model(t, model);
	}
	check_txn_matches_model(t, model);
	next = commit(t);
	check_map_matches_model(next, model);
	check_map_matches_model(base, before);
	cowmap_release(base);
	cowmap_release(next);
	if (_i) /* every value given to the map, freed once */
		ck_assert_uint_eq(log.calls, 2000 + sets_in_draft);
	tu_model_free(model);
	tu_model_free(before);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(draft_handles_colliding_keys)
{
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };
	uint64_t (*hashes[3])(const void *, size_t, uint64_t, void *) = {
		tu_hash_const, tu_hash_group8, tu_hash_high4
	};

	for (int h = 0; h < 3; h++) {
		struct tu_model *model = tu_model_new();
		struct tu_model *before;
		struct cowmap *base = tu_map_new(9, hashes[h], NULL);
		struct cowmap_txn *t;
		struct cowmap *next;
		struct tu_rng r;
		struct tu_key k;

		tu_rng_init(&r, 9 + h);
		base = tu_fill(base, model, 8, 0, 100, 0);
		before = tu_model_copy(model);
		t = begin(base);
		for (int i = 0; i < 3000; i++) {
			tu_key_pick(&k, &r, lens, 4, 200);
			if (tu_rng_below(&r, 3) == 0) {
				ck_assert_int_eq(
					cowmap_txn_del(t, k.bytes, k.len),
					tu_model_del(model, k.bytes, k.len,
						     NULL));
			} else {
				ck_assert_int_eq(cowmap_txn_set(t, k.bytes,
								k.len,
								tu_val(i)),
						 0);
				tu_model_set(model, k.bytes, k.len, tu_val(i),
					     NULL);
			}
			if (i % 500 == 0)
				check_txn_matches_model(t, model);
		}
		check_txn_matches_model(t, model);
		next = commit(t);
		check_map_matches_model(next, model);
		check_map_matches_model(base, before);
		cowmap_release(base);
		cowmap_release(next);
		tu_model_free(model);
		tu_model_free(before);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* Errors                                                              */
/* ------------------------------------------------------------------ */

START_TEST(txn_calls_reject_null_transaction)
{
	void *v = NULL;

	ck_assert_int_eq(cowmap_txn_set(NULL, "k", 1, tu_val(1)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(NULL, "k", 1), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(NULL, "k", 1, &v), -EINVAL);
	ck_assert_uint_eq(cowmap_txn_size(NULL), 0);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(NULL));
	ck_assert_int_eq(errno, EINVAL);
}
END_TEST

START_TEST(txn_calls_reject_bad_keys_and_change_nothing)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(10, NULL, NULL), model, 8, 0,
				      200, 0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;
	void *v = NULL;

	txn_set_id(t, model, 8, 500, tu_val(500));
	ck_assert_int_eq(cowmap_txn_set(t, NULL, 3, tu_val(1)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(t, NULL, 3), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(t, NULL, 3, &v), -EINVAL);
	if (SIZE_MAX > UINT32_MAX) {
		ck_assert_int_eq(cowmap_txn_set(t, "k", TOO_LONG, tu_val(1)),
				 -EINVAL);
		ck_assert_int_eq(cowmap_txn_del(t, "k", TOO_LONG), -EINVAL);
		ck_assert_int_eq(cowmap_txn_get(t, "k", TOO_LONG, &v),
				 -EINVAL);
	}
	check_txn_matches_model(t, model);
	next = commit(t);
	check_map_matches_model(next, model);
	cowmap_release(base);
	cowmap_release(next);
	tu_model_free(model);
}
END_TEST

/* A committed draft and the version it became, for the use-after tests. */
static struct cowmap_txn *finished_txn(int by_commit, struct cowmap **base,
				       struct cowmap **result,
				       struct tu_model **model)
{
	struct cowmap_txn *t;

	*model = tu_model_new();
	*base = tu_fill(tu_map_new(11, NULL, NULL), *model, 8, 0, 100, 0);
	t = begin(*base);
	if (by_commit) {
		txn_set_id(t, *model, 8, 1000, tu_val(1000));
		*result = commit(t);
	} else {
		txn_set_id(t, NULL, 8, 1000, tu_val(1000));
		cowmap_txn_abort(t);
		*result = cowmap_retain(*base);
	}
	return t;
}

static void finish_use_after(struct cowmap *base, struct cowmap *result,
			     struct tu_model *model)
{
	/* Whatever the finished handle was asked, nothing changed. */
	check_map_matches_model(result, model);
	cowmap_release(base);
	cowmap_release(result);
	tu_model_free(model);
}

START_TEST(txn_set_after_commit_fails_with_einval)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(1, &base, &result, &model);

	ck_assert_int_eq(cowmap_txn_set(t, "late", 4, tu_val(1)), -EINVAL);
	finish_use_after(base, result, model);
}
END_TEST

START_TEST(txn_del_after_commit_fails_with_einval)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(1, &base, &result, &model);
	struct tu_key k;

	tu_key_make(&k, 8, 3);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), -EINVAL);
	finish_use_after(base, result, model);
}
END_TEST

START_TEST(txn_commit_after_commit_fails_with_einval)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(1, &base, &result, &model);

	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(t));
	ck_assert_int_eq(errno, EINVAL);
	finish_use_after(base, result, model);
}
END_TEST

START_TEST(txn_size_after_commit_is_zero)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(1, &base, &result, &model);

	ck_assert_uint_eq(cowmap_txn_size(t), 0);
	finish_use_after(base, result, model);
}
END_TEST

START_TEST(txn_set_after_abort_fails_with_einval)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(0, &base, &result, &model);

	ck_assert_int_eq(cowmap_txn_set(t, "late", 4, tu_val(1)), -EINVAL);
	finish_use_after(base, result, model);
}
END_TEST

START_TEST(txn_commit_after_abort_fails_with_einval)
{
	struct cowmap *base, *result;
	struct tu_model *model;
	struct cowmap_txn *t = finished_txn(0, &base, &result, &model);

	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(t));
	ck_assert_int_eq(errno, EINVAL);
	finish_use_after(base, result, model);
}
END_TEST

/* ------------------------------------------------------------------ */
/* max_entries                                                         */
/* ------------------------------------------------------------------ */

START_TEST(txn_set_beyond_max_entries_fails_and_leaves_the_draft)
{
	struct tu_free_log log;
	struct tu_model *model = tu_model_new();
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;
	struct tu_key k;

	tu_free_log_init(&log);
	base = tu_fill(tu_map_new_limited(13, &log, 5), model, 8, 0, 3, 0);
	t = begin(base);
	txn_set_id(t, model, 8, 10, tu_val(10));
	txn_set_id(t, model, 8, 11, tu_val(11));
	tu_key_make(&k, 8, 12);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(12)),
			 -ENOSPC);
	ck_assert_int_eq(cowmap_txn_set(t, NULL, 0, tu_val(13)), -ENOSPC);
	check_txn_matches_model(t, model);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(12)), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(13)), 0);
	/* Replacing at the limit works; so does a new key after a delete. */
	txn_set_id(t, model, 8, 1, tu_val(101));
	tu_key_make(&k, 8, 0);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	tu_model_del(model, k.bytes, k.len, NULL);
	txn_set_id(t, model, 8, 14, tu_val(14));
	check_txn_matches_model(t, model);
	next = commit(t);
	ck_assert_uint_eq(cowmap_size(next), 5);
	check_map_matches_model(next, model);
	cowmap_release(base);
	cowmap_release(next);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(12)), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(13)), 0);
	ck_assert_uint_eq(log.calls, 7); /* 0..2, 10, 11, 101, 14 */
	tu_model_free(model);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(txn_on_a_full_base_can_only_replace)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new_limited(13, NULL, 50), model,
				      8, 0, 50, 0);
	struct cowmap_txn *t = begin(base);
	struct cowmap *next;
	struct tu_key k;

	for (uint64_t id = 50; id < 60; id++) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(id)),
				 -ENOSPC);
	}
	for (uint64_t id = 0; id < 50; id++)
		txn_set_id(t, model, 8, id, tu_val(id + 1000));
	check_txn_matches_model(t, model);
	next = commit(t);
	check_map_matches_model(next, model);
	cowmap_release(base);
	cowmap_release(next);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */
/* value_free in drafts                                                */
/* ------------------------------------------------------------------ */

/* Sets are gathered and merged when the draft is next read, so a value
 * replaced inside the draft is freed then, once. */
START_TEST(txn_frees_a_value_replaced_in_the_draft_by_the_next_read)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;
	void *v = NULL;

	tu_free_log_init(&log);
	base = tu_map_new(17, NULL, &log);
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "k", 1, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, "k", 1, tu_val(2)), 0);
	ck_assert_int_eq(cowmap_txn_get(t, "k", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(2));
	ck_assert_uint_eq(log.calls, 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_int_eq(cowmap_txn_set(t, "k", 1, tu_val(3)), 0);
	ck_assert_uint_eq(cowmap_txn_size(t), 1);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	next = commit(t);
	ck_assert_uint_eq(log.calls, 2);
	cowmap_release(base);
	cowmap_release(next);
	ck_assert_uint_eq(log.calls, 3);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(3)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(txn_keeps_a_replaced_base_value_while_the_base_lives)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;
	void *v = NULL;

	tu_free_log_init(&log);
	base = tu_set_replace(tu_map_new(17, NULL, &log), "k", 1, tu_val(1));
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "k", 1, tu_val(2)), 0);
	ck_assert_uint_eq(log.calls, 0); /* the base still holds 1 */
	ck_assert_int_eq(cowmap_txn_del(t, "k", 1), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_get(base, "k", 1, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	next = commit(t);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 0);
	cowmap_release(base);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	cowmap_release(next);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(abort_frees_the_values_set_in_the_draft)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;

	tu_free_log_init(&log);
	base = tu_fill(tu_map_new(17, NULL, &log), NULL, 8, 0, 100, 0);
	t = begin(base);
	for (uint64_t id = 50; id < 150; id++)
		txn_set_id(t, NULL, 8, id, tu_val(id + 1000));
	ck_assert_uint_eq(log.calls, 0);
	cowmap_txn_abort(t);
	ck_assert_uint_eq(log.calls, 100);
	check_values_freed(&log, 1050, 1150, 1);
	check_values_freed(&log, 0, 100, 0);
	ck_assert_uint_eq(cowmap_size(base), 100);
	cowmap_release(base);
	ck_assert_uint_eq(log.calls, 200);
	check_values_freed(&log, 0, 100, 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(commit_then_release_frees_each_value_once)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;
	struct tu_key k;

	tu_free_log_init(&log);
	base = tu_fill(tu_map_new(17, NULL, &log), NULL, 8, 0, 100, 0);
	t = begin(base);
	for (uint64_t id = 50; id < 150; id++) /* 50 replace, 50 new */
		txn_set_id(t, NULL, 8, id, tu_val(id + 1000));
	for (uint64_t id = 0; id < 10; id++) { /* 10 deleted from base */
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	}
	next = commit(t);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(base);
	/* The base alone held ids 0..9 and 50..99. */
	ck_assert_uint_eq(log.calls, 60);
	cowmap_release(next);
	ck_assert_uint_eq(log.calls, 200);
	check_values_freed(&log, 0, 100, 1);
	check_values_freed(&log, 1050, 1150, 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(txn_set_of_the_same_pointer_frees_nothing)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;

	tu_free_log_init(&log);
	base = tu_set_replace(tu_map_new(17, NULL, &log), "a", 1, tu_val(1));
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "a", 1, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, "b", 1, tu_val(2)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, "b", 1, tu_val(2)), 0);
	ck_assert_uint_eq(log.calls, 0);
	next = commit(t);
	cowmap_release(base);
	ck_assert_uint_eq(log.calls, 0);
	cowmap_release(next);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(txn_failed_set_does_not_free_the_value)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;

	tu_free_log_init(&log);
	base = tu_fill(tu_map_new_limited(13, &log, 2), NULL, 8, 0, 2, 0);
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "x", 1, tu_val(50)), -ENOSPC);
	ck_assert_int_eq(cowmap_txn_set(t, NULL, 1, tu_val(51)), -EINVAL);
	cowmap_txn_abort(t);
	cowmap_release(base);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(50)), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(51)), 0);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(txn_deleted_draft_value_is_freed_exactly_once)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct cowmap *next;

	tu_free_log_init(&log);
	base = tu_map_new(17, NULL, &log);
	t = begin(base);
	ck_assert_int_eq(cowmap_txn_set(t, "a", 1, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, "b", 1, tu_val(2)), 0);
	ck_assert_int_eq(cowmap_txn_del(t, "a", 1), 1);
	next = commit(t);
	ck_assert_uint_le(log.calls, 1);
	cowmap_release(base);
	cowmap_release(next);
	ck_assert_uint_eq(log.calls, 2);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(abort_after_replacements_frees_each_value_once)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct tu_key k;
	uint64_t v = 0;

	tu_free_log_init(&log);
	base = tu_fill(tu_map_new(17, NULL, &log), NULL, 8, 0, 50, 0);
	v = 50;
	t = begin(base);
	for (int round = 0; round < 4; round++)
		for (uint64_t id = 0; id < 100; id++)
			txn_set_id(t, NULL, 8, id, tu_val(1000 + v++));
	for (uint64_t id = 0; id < 100; id += 2) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	}
	cowmap_txn_abort(t);
	ck_assert_uint_eq(log.calls, 400);
	for (uint64_t i = 50; i < v; i++)
		ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1000 + i)),
				  1);
	cowmap_release(base);
	ck_assert_uint_eq(log.calls, 450);
	tu_free_log_fini(&log);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A large transaction                                                 */
/* ------------------------------------------------------------------ */

START_TEST(large_txn_equals_the_map_built_with_cowmap_set)
{
	enum { N = 100000 };
	struct tu_model *model = tu_model_new();
	struct cowmap *by_set = tu_map_new(19, NULL, NULL);
	struct cowmap *empty = tu_map_new(19, NULL, NULL);
	struct cowmap_txn *t;
	struct cowmap *by_txn;
	struct cowmap_stats a, b;
	struct tu_key k;

	t = begin(empty);
	for (uint64_t id = 0; id < N; id++) {
		size_t len = id % 10 == 0 ? TU_LONG_KEY_LEN : 8;

		tu_key_make(&k, len, id);
		by_set = tu_set_replace(by_set, k.bytes, k.len, tu_val(id));
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(id)),
				 0);
		tu_model_set(model, k.bytes, k.len, tu_val(id), NULL);
	}
	/* Delete a tenth, replace a tenth, in both. */
	for (uint64_t id = 0; id < N; id += 5) {
		size_t len = id % 10 == 0 ? TU_LONG_KEY_LEN : 8;

		tu_key_make(&k, len, id);
		if (id % 10 == 0) {
			by_set = tu_del_replace(by_set, k.bytes, k.len);
			ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
			tu_model_del(model, k.bytes, k.len, NULL);
		} else {
			by_set = tu_set_replace(by_set, k.bytes, k.len,
						tu_val(id + N));
			ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
							tu_val(id + N)),
					 0);
			tu_model_set(model, k.bytes, k.len, tu_val(id + N),
				     NULL);
		}
	}
	ck_assert_uint_eq(cowmap_txn_size(t), tu_model_size(model));
	by_txn = commit(t);
	ck_assert_uint_eq(cowmap_size(empty), 0);
	check_map_matches_model(by_txn, model);
	check_map_matches_model(by_set, model);
	ck_assert_int_eq(cowmap_equal(by_txn, by_set, NULL, NULL), 1);
	a = tu_stats(by_txn);
	b = tu_stats(by_set);
	check_stats_equal(&a, &b);
	cowmap_release(empty);
	cowmap_release(by_set);
	cowmap_release(by_txn);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */


/* ------------------------------------------------------------------ */
/* Gathered sets (merged when the draft is next read or committed)     */
/* ------------------------------------------------------------------ */

/* Lengths that give inline keys and boxed ones. */
static const size_t gather_lens[] = { 1, 8, 12, 13, TU_LONG_KEY_LEN };
#define NGATHER_LENS (sizeof(gather_lens) / sizeof(gather_lens[0]))

/*
 * A long loop of sets over a small universe (so keys repeat) with a read
 * now and then: every read sees every earlier set, and every value the
 * map was given is freed exactly once in the end.  Loop 0 runs with the
 * built-in hash, loop 1 with one that makes every key collide in groups.
 */
START_TEST(txn_get_sees_every_earlier_set_of_a_long_loop)
{
	struct tu_free_log log;
	struct tu_model *model = tu_model_new();
	struct tu_rng r;
	struct cowmap *base, *next;
	struct cowmap_txn *t;
	uint64_t v = 1;

	tu_free_log_init(&log);
	tu_rng_init(&r, 77 + (uint64_t)_i);
	base = tu_map_new(5, _i ? tu_hash_group8 : NULL, &log);
	for (uint64_t id = 0; id < 300; id++) {
		struct tu_key k;

		tu_key_make(&k, gather_lens[id % NGATHER_LENS], id);
		base = tu_set_replace(base, k.bytes, k.len, tu_val(v));
		tu_model_set(model, k.bytes, k.len, tu_val(v++), NULL);
	}
	t = begin(base);
	for (unsigned i = 0; i < 6000; i++) {
		uint64_t id = tu_rng_below(&r, 1500);
		struct tu_key k;
		void *got = NULL;

		tu_key_make(&k, gather_lens[id % NGATHER_LENS], id);
		txn_set_id(t, model, k.len, id, tu_val(v++));
		if (tu_rng_below(&r, 500) == 0) {
			/* A read right after a set sees it. */
			ck_assert_int_eq(cowmap_txn_get(t, k.bytes, k.len,
							&got), 1);
			ck_assert_ptr_eq(got, tu_val(v - 1));
			ck_assert_uint_eq(cowmap_txn_size(t),
					  tu_model_size(model));
		}
	}
	check_txn_matches_model(t, model);
	next = commit(t);
	check_map_matches_model(next, model);
	cowmap_release(base);
	cowmap_release(next);
	check_values_freed(&log, 1, v, 1);
	tu_model_free(model);
	tu_free_log_fini(&log);
}
END_TEST

/*
 * Abort with sets still gathered: values stored only by the draft are
 * freed once, at abort; a set that gives a key back its base value, or
 * stores one pointer twice, frees nothing extra; the base keeps its own.
 */
START_TEST(abort_after_gathered_sets_frees_each_value_once)
{
	struct tu_free_log log;
	struct cowmap *base;
	struct cowmap_txn *t;
	struct tu_key k;

	tu_free_log_init(&log);
	base = tu_map_new(9, NULL, &log);
	for (uint64_t id = 0; id < 40; id++) {
		tu_key_make(&k, gather_lens[id % NGATHER_LENS], id);
		base = tu_set_replace(base, k.bytes, k.len, tu_val(id + 1));
	}
	t = begin(base);
	for (uint64_t id = 0; id < 80; id++) {	/* 40 replaced, 40 new */
		tu_key_make(&k, gather_lens[id % NGATHER_LENS], id);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						tu_val(1000 + id)), 0);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						tu_val(2000 + id)), 0);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						tu_val(2000 + id)), 0);
		if (id < 10)	/* back to the base's value */
			ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
							tu_val(id + 1)),
					 0);
	}
	cowmap_txn_abort(t);
	for (uint64_t id = 0; id < 80; id++) {
		ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1000 + id)),
				  1);
		ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2000 + id)),
				  1);
	}
	ck_assert_uint_eq(log.calls, 160);	/* none of the base's */
	ck_assert_uint_eq(cowmap_size(base), 40);
	for (uint64_t id = 0; id < 40; id++) {
		void *got = NULL;

		tu_key_make(&k, gather_lens[id % NGATHER_LENS], id);
		ck_assert_int_eq(cowmap_get(base, k.bytes, k.len, &got), 1);
		ck_assert_ptr_eq(got, tu_val(id + 1));
	}
	cowmap_release(base);
	ck_assert_uint_eq(log.calls, 200);
	for (uint64_t id = 0; id < 40; id++)
		ck_assert_uint_eq(tu_free_log_count(&log, tu_val(id + 1)), 1);
	tu_free_log_fini(&log);
}
END_TEST

/* Gathered sets respect the limit: new keys up to it succeed, the next
 * fails with ENOSPC and changes nothing, replacements and repeats of a
 * pending key still go through. */
START_TEST(gathered_sets_stop_at_max_entries)
{
	struct cowmap_options o = tu_opts(3, NULL, NULL);
	struct tu_model *model = tu_model_new();
	struct cowmap *base, *next;
	struct cowmap_txn *t;
	struct tu_key k;

	o.max_entries = 100;
	base = cowmap_new(&o);
	ck_assert_ptr_nonnull(base);
	for (uint64_t id = 0; id < 60; id++) {
		tu_key_make(&k, 8, id);
		base = tu_set_replace(base, k.bytes, k.len, tu_val(id + 1));
		tu_model_set(model, k.bytes, k.len, tu_val(id + 1), NULL);
	}
	t = begin(base);
	/* Repeats of one new key count once. */
	for (unsigned i = 0; i < 50; i++)
		txn_set_id(t, model, 8, 500, tu_val(900 + i));
	for (uint64_t id = 60; id < 99; id++)
		txn_set_id(t, model, gather_lens[id % NGATHER_LENS], id,
			   tu_val(id + 1));
	ck_assert_uint_eq(cowmap_txn_size(t), 100);
	tu_key_make(&k, 8, 99);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(7)),
			 -ENOSPC);
	tu_key_make(&k, TU_LONG_KEY_LEN, 99);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(7)),
			 -ENOSPC);
	for (uint64_t id = 0; id < 60; id += 3)	/* replacements */
		txn_set_id(t, model, 8, id, tu_val(700 + id));
	check_txn_matches_model(t, model);
	next = commit(t);
	check_map_matches_model(next, model);
	cowmap_release(next);
	cowmap_release(base);
	tu_model_free(model);
}
END_TEST

Suite *txn_suite(void);

Suite *txn_suite(void)
{
	Suite *s = suite_create("txn");
	TCase *tc;

	tc = tcase_create("basics");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, begin_rejects_null_base);
	tcase_add_test(tc, draft_starts_with_the_base_contents);
	tcase_add_test(tc, draft_of_an_empty_map_is_empty);
	tcase_add_test(tc, txn_set_is_seen_by_the_draft_and_not_by_the_base);
	tcase_add_test(tc, txn_del_returns_one_if_removed_and_zero_if_absent);
	tcase_add_test(tc, commit_returns_a_version_with_the_changes);
	tcase_add_test(tc, commit_without_changes_returns_the_base);
	tcase_add_test(tc, commit_after_no_op_edits_returns_the_base);
	tcase_add_test(tc, commit_of_edits_that_cancel_out_equals_the_base);
	tcase_add_test(tc, abort_leaves_the_base_unchanged);
	tcase_add_test(tc, abort_of_null_is_ignored);
	tcase_add_test(tc, draft_keeps_its_base_alive);
	tcase_add_test(tc, txn_edits_never_reach_a_committed_version);
	tcase_add_test(tc, cowmap_set_after_commit_leaves_the_commit_unchanged);
	tcase_add_test(tc, two_drafts_of_one_base_are_independent);
	tcase_add_loop_test(tc, random_edits_in_a_draft_match_the_model, 0, 2);
	tcase_add_test(tc, draft_handles_colliding_keys);
	suite_add_tcase(s, tc);

	tc = tcase_create("errors");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, txn_calls_reject_null_transaction);
	tcase_add_test(tc, txn_calls_reject_bad_keys_and_change_nothing);
	tcase_add_test(tc, txn_set_after_commit_fails_with_einval);
	tcase_add_test(tc, txn_del_after_commit_fails_with_einval);
	tcase_add_test(tc, txn_commit_after_commit_fails_with_einval);
	tcase_add_test(tc, txn_size_after_commit_is_zero);
	tcase_add_test(tc, txn_set_after_abort_fails_with_einval);
	tcase_add_test(tc, txn_commit_after_abort_fails_with_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("max_entries");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, txn_set_beyond_max_entries_fails_and_leaves_the_draft);
	tcase_add_test(tc, txn_on_a_full_base_can_only_replace);
	suite_add_tcase(s, tc);

	tc = tcase_create("value_free");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, txn_frees_a_value_replaced_in_the_draft_by_the_next_read);
	tcase_add_test(tc, txn_keeps_a_replaced_base_value_while_the_base_lives);
	tcase_add_test(tc, abort_frees_the_values_set_in_the_draft);
	tcase_add_test(tc, commit_then_release_frees_each_value_once);
	tcase_add_test(tc, txn_set_of_the_same_pointer_frees_nothing);
	tcase_add_test(tc, txn_failed_set_does_not_free_the_value);
	tcase_add_test(tc, txn_deleted_draft_value_is_freed_exactly_once);
	tcase_add_test(tc, abort_after_replacements_frees_each_value_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("gathered");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(tc, txn_get_sees_every_earlier_set_of_a_long_loop,
			    0, 2);
	tcase_add_test(tc, abort_after_gathered_sets_frees_each_value_once);
	tcase_add_test(tc, gathered_sets_stop_at_max_entries);
	suite_add_tcase(s, tc);

	tc = tcase_create("large");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, large_txn_equals_the_map_built_with_cowmap_set);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(txn_suite());
}
