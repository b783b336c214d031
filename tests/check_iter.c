/*
 * check_iter.c - iteration: every entry exactly once with byte-equal keys
 * and the right values, on empty maps, large maps and maps full of hash
 * collisions; a version's iteration never changes when newer versions
 * are made from it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Seconds per test: generous, so a loaded machine or a sanitizer build
 * does not turn slowness into failure. */
#define TIMEOUT 120

/* A map of random keys of every test length, mirrored in *model. */
static struct cowmap *random_map(uint64_t (*hash)(const void *, size_t,
						  uint64_t, void *),
				 uint64_t universe, unsigned sets,
				 struct tu_model **model)
{
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };
	struct cowmap *m = tu_map_new(universe + sets, hash, NULL);
	struct tu_rng r;
	struct tu_key k;

	*model = tu_model_new();
	tu_rng_init(&r, universe * 3 + sets);
	for (unsigned i = 0; i < sets; i++) {
		tu_key_pick(&k, &r, lens, 4, universe);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
		tu_model_set(*model, k.bytes, k.len, tu_val(i), NULL);
	}
	return m;
}

START_TEST(iteration_of_an_empty_map_yields_nothing)
{
	struct cowmap *m = tu_map_new(1, NULL, NULL);
	struct cowmap_iter it;
	const void *key = "unchanged";
	size_t len = 77;
	void *value = tu_val(1);

	cowmap_iter_init(&it, m);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, NULL, NULL), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(iteration_of_a_map_emptied_by_deletes_yields_nothing)
{
	struct cowmap *m = tu_fill(tu_map_new(1, NULL, NULL), NULL, 8, 0, 500, 0);
	struct cowmap_iter it;
	struct tu_key k;

	for (uint64_t id = 0; id < 500; id++) {
		tu_key_make(&k, 8, id);
		m = tu_del_replace(m, k.bytes, k.len);
	}
	cowmap_iter_init(&it, m);
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, NULL, NULL), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(iteration_of_one_entry_yields_it_once)
{
	struct cowmap *m = tu_set_replace(tu_map_new(1, NULL, NULL), "only", 4,
					  tu_val(4));
	struct cowmap_iter it;
	const void *key = NULL;
	size_t len = 0;
	void *value = NULL;

	cowmap_iter_init(&it, m);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 1);
	ck_assert_uint_eq(len, 4);
	ck_assert_mem_eq(key, "only", 4);
	ck_assert_ptr_eq(value, tu_val(4));
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(iteration_yields_the_empty_key)
{
	struct cowmap *m = tu_set_replace(tu_map_new(1, NULL, NULL), NULL, 0, tu_val(1));
	struct cowmap_iter it;
	size_t len = 99;
	void *value = NULL;

	m = tu_set_replace(m, "\0", 1, tu_val(2));
	cowmap_iter_init(&it, m);
	for (int i = 0; i < 2; i++) {
		const void *key = NULL;

		ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 1);
		if (len == 0) {
			ck_assert_ptr_eq(value, tu_val(1));
		} else {
			ck_assert_uint_eq(len, 1);
			ck_assert_mem_eq(key, "\0", 1);
			ck_assert_ptr_eq(value, tu_val(2));
		}
	}
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, &len, &value), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(iteration_visits_each_entry_exactly_once)
{
	static const unsigned sizes[] = { 2, 31, 33, 1000, 60000 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct tu_model *model = tu_model_new();
		struct cowmap *m = tu_fill(tu_map_new(i, NULL, NULL), model, 8, 0,
					   sizes[i], 0);

		check_iter_matches_model(m, model);
		cowmap_release(m);
		tu_model_free(model);
	}
}
END_TEST

START_TEST(iteration_visits_keys_of_every_length_once)
{
	struct tu_model *model;
	struct cowmap *m = random_map(NULL, 5000, 20000, &model);

	check_iter_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(iteration_of_a_map_owning_its_values_visits_each_once)
{
	/* With value_free set the map keeps keys beside the values it owns,
	 * short keys included. */
	static const size_t lens[] = { 0, 1, 8, 12, 13, TU_LONG_KEY_LEN };
	struct tu_free_log log;
	struct cowmap_options o;
	struct tu_model *model = tu_model_new();
	struct cowmap *m;
	struct tu_rng r;
	struct tu_key k;

	tu_free_log_init(&log);
	o = tu_opts(4, NULL, &log);
	m = cowmap_new(&o);
	ck_assert_ptr_nonnull(m);
	tu_rng_init(&r, 4);
	for (unsigned i = 0; i < 6000; i++) {
		tu_key_pick(&k, &r, lens, 6, 2000);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
		tu_model_set(model, k.bytes, k.len, tu_val(i), NULL);
	}
	check_map_matches_model(m, model);
	cowmap_release(m);
	ck_assert_uint_eq(log.calls, 6000);
	tu_model_free(model);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(iteration_fills_only_non_null_out_parameters)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *m = tu_fill(tu_map_new(2, NULL, NULL), model, 8, 0, 700, 0);
	struct cowmap_iter it;
	size_t count = 0, len;
	const void *key;
	void *value;

	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, NULL, NULL, NULL))
		count++;
	ck_assert_uint_eq(count, 700);

	count = 0;
	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, &key, NULL, NULL)) {
		ck_assert_int_eq(tu_model_get(model, key, 8, NULL), 1);
		count++;
	}
	ck_assert_uint_eq(count, 700);

	count = 0;
	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, NULL, &len, &value)) {
		ck_assert_uint_eq(len, 8);
		ck_assert_ptr_nonnull(value);
		count++;
	}
	ck_assert_uint_eq(count, 700);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(iteration_returns_key_bytes_equal_to_the_stored_keys)
{
	struct cowmap *m = tu_map_new(3, NULL, NULL);
	struct cowmap_iter it;
	const void *key;
	size_t len, count = 0;
	void *value;
	struct tu_key want;

	/* The value encodes the key: (len, id) -> value id len * 1e6 + id. */
	for (uint64_t id = 0; id < 300; id++) {
		static const size_t lens[] = { 1, 8, 9, TU_LONG_KEY_LEN,
					       TU_KEY_MAX };

		for (size_t l = 0; l < 5; l++) {
			if (id >= tu_key_space(lens[l], 300))
				continue;
			tu_key_make(&want, lens[l], id);
			m = tu_set_replace(m, want.bytes, want.len,
					   tu_val(lens[l] * 1000000 + id));
		}
	}
	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, &key, &len, &value)) {
		uint64_t vid = ((uintptr_t)value - 0x10000) / 16;

		ck_assert_uint_eq(len, vid / 1000000);
		tu_key_make(&want, len, vid % 1000000);
		ck_assert_mem_eq(key, want.bytes, len);
		count++;
	}
	ck_assert_uint_eq(count, cowmap_size(m));
	cowmap_release(m);
}
END_TEST

START_TEST(two_iterators_over_one_version_agree)
{
	struct tu_model *model;
	struct cowmap *m = random_map(NULL, 3000, 5000, &model);
	struct cowmap_iter a, b;
	const void *ka, *kb;
	size_t la, lb, count = 0;
	void *va, *vb;

	cowmap_iter_init(&a, m);
	cowmap_iter_init(&b, m);
	for (;;) {
		int ra = cowmap_iter_next(&a, &ka, &la, &va);
		int rb = cowmap_iter_next(&b, &kb, &lb, &vb);

		ck_assert_int_eq(ra, rb);
		if (!ra)
			break;
		ck_assert_uint_eq(la, lb);
		ck_assert_ptr_eq(va, vb);
		ck_assert_mem_eq(ka, kb, la);
		count++;
	}
	ck_assert_uint_eq(count, tu_model_size(model));
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

static void check_collisions_iterate_once(
	uint64_t (*hash)(const void *, size_t, uint64_t, void *),
	uint64_t universe, unsigned sets)
{
	struct tu_model *model;
	struct cowmap *m = random_map(hash, universe, sets, &model);
	struct tu_rng r;
	struct tu_key k;

	check_iter_matches_model(m, model);
	/* Thin the collision groups out and look again. */
	tu_rng_init(&r, universe);
	for (unsigned i = 0; i < sets / 2; i++) {
		static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };

		tu_key_pick(&k, &r, lens, 4, universe);
		m = tu_del_replace(m, k.bytes, k.len);
		tu_model_del(model, k.bytes, k.len, NULL);
		if (i % 100 == 0)
			check_iter_matches_model(m, model);
	}
	check_iter_matches_model(m, model);
	cowmap_release(m);
	tu_model_free(model);
}

START_TEST(iteration_with_every_key_colliding_visits_each_once)
{
	check_collisions_iterate_once(tu_hash_const, 200, 1000);
}
END_TEST

START_TEST(iteration_with_collision_groups_visits_each_once)
{
	check_collisions_iterate_once(tu_hash_group8, 4000, 10000);
	check_collisions_iterate_once(tu_hash_four, 300, 2000);
}
END_TEST

START_TEST(iteration_of_the_deepest_tries_visits_each_once)
{
	/* high4: paths as deep as the hash allows; low4: the opposite end. */
	check_collisions_iterate_once(tu_hash_high4, 600, 3000);
	check_collisions_iterate_once(tu_hash_low4, 600, 3000);
}
END_TEST

START_TEST(iteration_of_chosen_hashes_at_full_depth_visits_each_once)
{
	/* With hash = key id, these ids pair up keys that differ in one
	 * bit only, at every bit position: every level of the trie gets a
	 * split, the deepest ones included. */
	struct cowmap *m = tu_map_new(5, tu_hash_identity, NULL);
	struct tu_model *model = tu_model_new();
	struct tu_key k;

	for (unsigned bit = 0; bit < 64; bit++) {
		uint64_t base = tu_mix64(bit + 1) & ~((uint64_t)1 << bit);
		uint64_t ids[2] = { base, base | ((uint64_t)1 << bit) };

		for (int j = 0; j < 2; j++) {
			tu_key_make(&k, 8, ids[j]);
			m = tu_set_replace(m, k.bytes, k.len,
					   tu_val(2 * bit + j));
			tu_model_set(model, k.bytes, k.len,
				     tu_val(2 * bit + j), NULL);
		}
	}
	check_map_matches_model(m, model);
	ck_assert_uint_lt(tu_stats(m).max_depth, COWMAP_ITER_DEPTH);
	cowmap_release(m);
	tu_model_free(model);
}
END_TEST

START_TEST(iteration_of_an_old_version_is_unchanged_by_newer_versions)
{
	static const size_t lens[] = { 0, 1, 8, TU_LONG_KEY_LEN };
	struct tu_model *model;
	struct cowmap *old = random_map(NULL, 3000, 4000, &model);
	struct cowmap *cur = cowmap_retain(old);
	struct tu_entry *before, *after;
	size_t nb, na;
	struct cowmap_txn *t;
	struct tu_rng r;
	struct tu_key k;

	before = tu_iter_collect(old, &nb);
	tu_rng_init(&r, 77);
	for (int i = 0; i < 6000; i++) {
		tu_key_pick(&k, &r, lens, 4, 3000);
		if (tu_rng_below(&r, 2))
			cur = tu_set_replace(cur, k.bytes, k.len,
					     tu_val(100000 + i));
		else
			cur = tu_del_replace(cur, k.bytes, k.len);
	}
	t = cowmap_txn_begin(old);
	ck_assert_ptr_nonnull(t);
	for (int i = 0; i < 3000; i++) {
		tu_key_pick(&k, &r, lens, 4, 3000);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						tu_val(200000 + i)),
				 0);
	}
	cowmap_release(cur);
	cur = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(cur);

	after = tu_iter_collect(old, &na);
	ck_assert_uint_eq(na, nb);
	for (size_t i = 0; i < nb; i++) {
		ck_assert_uint_eq(after[i].len, before[i].len);
		ck_assert_uint_eq(after[i].id, before[i].id);
		ck_assert_ptr_eq(after[i].value, before[i].value);
	}
	check_iter_matches_model(old, model);
	free(before);
	free(after);
	cowmap_release(cur);
	cowmap_release(old);
	tu_model_free(model);
}
END_TEST

START_TEST(iteration_key_pointers_stay_valid_while_the_version_lives)
{
	enum { N = 500 };
	struct cowmap *old = tu_fill(tu_map_new(9, NULL, NULL), NULL, TU_LONG_KEY_LEN,
				     0, N, 0);
	struct cowmap *cur = cowmap_retain(old);
	const void *keys[N];
	size_t lens[N];
	struct cowmap_iter it;
	size_t n = 0;
	struct tu_key k;

	cowmap_iter_init(&it, old);
	while (n < N && cowmap_iter_next(&it, &keys[n], &lens[n], NULL))
		n++;
	ck_assert_uint_eq(n, N);
	/* Replace and delete every key in newer versions, then drop them. */
	for (uint64_t id = 0; id < N; id++) {
		tu_key_make(&k, TU_LONG_KEY_LEN, id);
		cur = tu_set_replace(cur, k.bytes, k.len, tu_val(id + N));
	}
	for (uint64_t id = 0; id < N; id++) {
		tu_key_make(&k, TU_LONG_KEY_LEN, id);
		cur = tu_del_replace(cur, k.bytes, k.len);
	}
	cowmap_release(cur);
	for (size_t i = 0; i < N; i++) {
		void *v = NULL;

		ck_assert_uint_eq(lens[i], TU_LONG_KEY_LEN);
		tu_key_make(&k, TU_LONG_KEY_LEN,
			    tu_key_id(keys[i], lens[i]));
		ck_assert_mem_eq(keys[i], k.bytes, k.len);
		ck_assert_int_eq(cowmap_get(old, keys[i], lens[i], &v), 1);
		ck_assert_ptr_eq(v, tu_val(tu_key_id(keys[i], lens[i])));
	}
	cowmap_release(old);
}
END_TEST

START_TEST(iteration_of_a_txn_built_version_visits_each_once)
{
	struct tu_model *model = tu_model_new();
	struct cowmap *base = tu_fill(tu_map_new(10, NULL, NULL), model, 8, 0, 1000, 0);
	struct cowmap_txn *t = cowmap_txn_begin(base);
	struct cowmap *next;
	struct tu_key k;

	ck_assert_ptr_nonnull(t);
	for (uint64_t id = 500; id < 5000; id++) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						tu_val(id + 7)),
				 0);
		tu_model_set(model, k.bytes, k.len, tu_val(id + 7), NULL);
	}
	for (uint64_t id = 0; id < 5000; id += 7) {
		tu_key_make(&k, 8, id);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
		tu_model_del(model, k.bytes, k.len, NULL);
	}
	next = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(next);
	check_iter_matches_model(next, model);
	cowmap_release(base);
	cowmap_release(next);
	tu_model_free(model);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *iter_suite(void);

Suite *iter_suite(void)
{
	Suite *s = suite_create("iter");
	TCase *tc;

	tc = tcase_create("basics");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, iteration_of_an_empty_map_yields_nothing);
	tcase_add_test(tc, iteration_of_a_map_emptied_by_deletes_yields_nothing);
	tcase_add_test(tc, iteration_of_one_entry_yields_it_once);
	tcase_add_test(tc, iteration_yields_the_empty_key);
	tcase_add_test(tc, iteration_fills_only_non_null_out_parameters);
	tcase_add_test(tc, iteration_returns_key_bytes_equal_to_the_stored_keys);
	tcase_add_test(tc, two_iterators_over_one_version_agree);
	suite_add_tcase(s, tc);

	tc = tcase_create("exactly_once");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, iteration_visits_each_entry_exactly_once);
	tcase_add_test(tc, iteration_visits_keys_of_every_length_once);
	tcase_add_test(tc,
		       iteration_of_a_map_owning_its_values_visits_each_once);
	tcase_add_test(tc, iteration_with_every_key_colliding_visits_each_once);
	tcase_add_test(tc, iteration_with_collision_groups_visits_each_once);
	tcase_add_test(tc, iteration_of_the_deepest_tries_visits_each_once);
	tcase_add_test(
		tc, iteration_of_chosen_hashes_at_full_depth_visits_each_once);
	tcase_add_test(tc, iteration_of_a_txn_built_version_visits_each_once);
	suite_add_tcase(s, tc);

	tc = tcase_create("old_versions");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(
		tc, iteration_of_an_old_version_is_unchanged_by_newer_versions);
	tcase_add_test(
		tc, iteration_key_pointers_stay_valid_while_the_version_lives);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(iter_suite());
}
