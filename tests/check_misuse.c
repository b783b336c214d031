/*
 * check_misuse.c - every public call given NULL (in each argument
 * position) or an invalid key answers with its documented error and
 * changes nothing; a transaction used right after commit or abort answers
 * EINVAL.
 *
 * Runs in every configuration.  The use of *released versions*, which
 * only debug builds catch, is tested by check_debug_misuse.c.
 *
 * Values are entries of a static table; maps that own them count the
 * value_free calls per entry (atomically: cells call value_free from
 * liburcu's call_rcu thread), so a failed call can be shown to have taken
 * nothing, and a stolen argument to have been released.
 */
#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <cowmap.h>

Suite *misuse_suite(void);

#define NVALS 64

static char vals[NVALS];
static atomic_uint freed[NVALS];

static void *val(int i)
{
	return &vals[i];
}

static void count_free(void *value, void *ctx)
{
	ck_assert_ptr_eq(ctx, vals);
	ck_assert((char *)value >= vals && (char *)value < vals + NVALS);
	atomic_fetch_add(&freed[(char *)value - vals], 1);
}

static unsigned freed_count(int i)
{
	return atomic_load(&freed[i]);
}

/* A map that owns its values, holding keys "a" -> val(0), "b" -> val(1). */
static struct cowmap *owning_map(void)
{
	struct cowmap_options o = { .seed = 42, .value_free = count_free,
				    .ctx = vals };
	struct cowmap *m = cowmap_new(&o), *n;

	ck_assert_ptr_nonnull(m);
	n = cowmap_set(m, "a", 1, val(0));
	ck_assert_ptr_nonnull(n);
	cowmap_release(m);
	m = cowmap_set(n, "b", 1, val(1));
	ck_assert_ptr_nonnull(m);
	cowmap_release(n);
	return m;
}

static void reset_counts(void)
{
	for (int i = 0; i < NVALS; i++)
		atomic_store(&freed[i], 0);
}

static int never_called(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	(void)what, (void)key, (void)len, (void)old_value, (void)new_value;
	(void)ctx;
	ck_abort_msg("diff called its callback on bad arguments");
	return 0;
}

/* ------------------------------------------------------------------ */
/* Versions                                                            */
/* ------------------------------------------------------------------ */

START_TEST(new_with_null_options_gives_an_empty_map)
{
	struct cowmap *m = cowmap_new(NULL);

	ck_assert_ptr_nonnull(m);
	ck_assert_uint_eq(cowmap_size(m), 0);
	ck_assert_int_eq(cowmap_get(m, "x", 1, NULL), 0);
	cowmap_release(m);
}
END_TEST

START_TEST(version_calls_reject_a_null_map)
{
	void *v = val(5);
	const void *keys[1] = { "a" };
	size_t lens[1] = { 1 };
	void *out[1] = { val(6) };
	struct cowmap_stats st;

	errno = 0;
	ck_assert_ptr_null(cowmap_retain(NULL));
	ck_assert_int_eq(errno, EINVAL);
	cowmap_release(NULL);	/* ignored */
	ck_assert_uint_eq(cowmap_size(NULL), 0);
	ck_assert_int_eq(cowmap_get(NULL, "a", 1, &v), -EINVAL);
	ck_assert_ptr_eq(v, val(5));

	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(NULL, 1, keys, lens, out), 0);
	ck_assert_int_eq(errno, EINVAL);

	errno = 0;
	ck_assert_ptr_null(cowmap_set(NULL, "a", 1, val(2)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(NULL, "a", 1));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_begin(NULL));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(cowmap_stats(NULL, &st), -EINVAL);
}
END_TEST

START_TEST(comparisons_reject_null_arguments)
{
	struct cowmap *m = owning_map();

	ck_assert_int_eq(cowmap_equal(NULL, m, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(m, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(NULL, m, never_called, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(m, NULL, never_called, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(m, m, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(NULL, NULL, NULL, NULL), -EINVAL);
	/* value_eq and ctx may be NULL. */
	ck_assert_int_eq(cowmap_equal(m, m, NULL, NULL), 1);
	cowmap_release(m);
}
END_TEST

START_TEST(stats_rejects_a_null_output)
{
	struct cowmap *m = owning_map();

	ck_assert_int_eq(cowmap_stats(m, NULL), -EINVAL);
	cowmap_release(m);
}
END_TEST

START_TEST(iterating_null_yields_nothing)
{
	struct cowmap_iter it;
	struct cowmap *m = owning_map();
	const void *key = NULL;
	size_t len = 99;
	void *value = NULL;

	cowmap_iter_init(&it, NULL);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	ck_assert_int_eq(cowmap_iter_next(&it, &key, &len, &value), 0);
	ck_assert_int_eq(cowmap_iter_next(NULL, &key, &len, &value), 0);
	cowmap_iter_init(NULL, m);	/* ignored */

	/* NULL out-parameters are simply not filled. */
	int n = 0;

	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, NULL, NULL, NULL))
		n++;
	ck_assert_int_eq(n, 2);
	cowmap_release(m);
}
END_TEST

START_TEST(bad_keys_are_rejected_and_take_nothing)
{
	struct cowmap *m = owning_map(), *n;
	void *v = NULL;

	reset_counts();
	ck_assert_int_eq(cowmap_get(m, NULL, 1, &v), -EINVAL);
	ck_assert_int_eq(cowmap_get(m, NULL, 0, &v), 0);	/* the empty key */
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, NULL, 3, val(10)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(m, NULL, 3));
	ck_assert_int_eq(errno, EINVAL);
#if SIZE_MAX > UINT32_MAX
	/* Rejected before a byte is read: the buffer is one byte long. */
	size_t huge = (size_t)UINT32_MAX + 1;

	ck_assert_int_eq(cowmap_get(m, "a", huge, &v), -EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, "a", huge, val(11)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_del(m, "a", huge));
	ck_assert_int_eq(errno, EINVAL);
#endif
	ck_assert_uint_eq(cowmap_size(m), 2);

	/* The empty key, even as NULL, is a key like any other. */
	n = cowmap_set(m, NULL, 0, val(12));
	ck_assert_ptr_nonnull(n);
	ck_assert_int_eq(cowmap_get(n, "", 0, &v), 1);
	ck_assert_ptr_eq(v, val(12));
	cowmap_release(n);
	ck_assert_uint_eq(freed_count(12), 1);

	cowmap_release(m);
	ck_assert_uint_eq(freed_count(10), 0);
	ck_assert_uint_eq(freed_count(11), 0);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(1), 1);
}
END_TEST

START_TEST(get_many_rejects_null_arrays_and_skips_bad_keys)
{
	struct cowmap *m = owning_map();
	const void *keys[4] = { "a", NULL, "b", NULL };
	size_t lens[4] = { 1, 5, 1, 0 };
	void *out[4] = { val(20), val(20), val(20), val(20) };

	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 4, NULL, lens, out), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 4, keys, NULL, out), 0);
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 4, keys, lens, NULL), 0);
	ck_assert_int_eq(errno, EINVAL);

	/* key 1 is invalid (NULL with a length): NULL, not counted; key 3 is
	 * the empty key, absent. */
	ck_assert_uint_eq(cowmap_get_many(m, 4, keys, lens, out), 2);
	ck_assert_ptr_eq(out[0], val(0));
	ck_assert_ptr_null(out[1]);
	ck_assert_ptr_eq(out[2], val(1));
	ck_assert_ptr_null(out[3]);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Transactions                                                        */
/* ------------------------------------------------------------------ */

START_TEST(txn_calls_reject_a_null_transaction)
{
	void *v = val(7);

	ck_assert_int_eq(cowmap_txn_set(NULL, "a", 1, val(3)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(NULL, "a", 1), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(NULL, "a", 1, &v), -EINVAL);
	ck_assert_ptr_eq(v, val(7));
	ck_assert_uint_eq(cowmap_txn_size(NULL), 0);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(NULL));
	ck_assert_int_eq(errno, EINVAL);
	cowmap_txn_abort(NULL);	/* ignored */
}
END_TEST

START_TEST(txn_rejects_bad_keys_and_keeps_the_draft)
{
	struct cowmap *m = owning_map(), *c;
	struct cowmap_txn *t = cowmap_txn_begin(m);

	reset_counts();
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set(t, NULL, 2, val(30)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(t, NULL, 2), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(t, NULL, 2, NULL), -EINVAL);
#if SIZE_MAX > UINT32_MAX
	ck_assert_int_eq(cowmap_txn_set(t, "a", (size_t)UINT32_MAX + 1, val(31)),
			 -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(t, "a", (size_t)UINT32_MAX + 1),
			 -EINVAL);
#endif
	ck_assert_uint_eq(cowmap_txn_size(t), 2);
	c = cowmap_txn_commit(t);
	ck_assert_ptr_eq(c, m);	/* nothing changed */
	cowmap_release(c);
	cowmap_release(m);
	ck_assert_uint_eq(freed_count(30), 0);
	ck_assert_uint_eq(freed_count(31), 0);
}
END_TEST

static void check_finished(struct cowmap_txn *t)
{
	void *v = val(40);

	ck_assert_int_eq(cowmap_txn_set(t, "c", 1, val(41)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(t, "a", 1), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(t, "a", 1, &v), -EINVAL);
	ck_assert_ptr_eq(v, val(40));
	ck_assert_uint_eq(cowmap_txn_size(t), 0);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(t));
	ck_assert_int_eq(errno, EINVAL);
	cowmap_txn_abort(t);	/* a second abort is ignored */
}

START_TEST(txn_used_after_commit_is_einval)
{
	struct cowmap *m = owning_map(), *c;
	struct cowmap_txn *t = cowmap_txn_begin(m);

	reset_counts();
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set(t, "c", 1, val(42)), 0);
	c = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(c);
	check_finished(t);
	ck_assert_uint_eq(cowmap_size(c), 3);
	ck_assert_int_eq(cowmap_get(c, "c", 1, NULL), 1);
	cowmap_release(c);
	cowmap_release(m);
	ck_assert_uint_eq(freed_count(41), 0);	/* never given to the map */
	ck_assert_uint_eq(freed_count(42), 1);
}
END_TEST

START_TEST(txn_used_after_an_unchanged_commit_is_einval)
{
	struct cowmap *m = owning_map(), *c;
	struct cowmap_txn *t = cowmap_txn_begin(m);

	ck_assert_ptr_nonnull(t);
	c = cowmap_txn_commit(t);
	ck_assert_ptr_eq(c, m);
	check_finished(t);
	cowmap_release(c);
	cowmap_release(m);
}
END_TEST

START_TEST(txn_used_after_abort_is_einval)
{
	struct cowmap *m = owning_map();
	struct cowmap_txn *t = cowmap_txn_begin(m);

	reset_counts();
	ck_assert_ptr_nonnull(t);
	ck_assert_int_eq(cowmap_txn_set(t, "c", 1, val(43)), 0);
	cowmap_txn_abort(t);
	ck_assert_uint_eq(freed_count(43), 1);	/* the draft owned it */
	check_finished(t);
	ck_assert_uint_eq(cowmap_size(m), 2);
	cowmap_release(m);
	ck_assert_uint_eq(freed_count(41), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cells                                                               */
/* ------------------------------------------------------------------ */

static struct cowmap *fail_without_errno(const struct cowmap *cur, void *arg)
{
	(void)cur, (void)arg;
	errno = 0;
	return NULL;
}

static struct cowmap *must_not_run(const struct cowmap *cur, void *arg)
{
	(void)cur, (void)arg;
	ck_abort_msg("cell_update ran fn on bad arguments");
	return NULL;
}

static uint64_t published(struct cowmap_cell *c)
{
	struct cowmap_cell_stats st;

	ck_assert_int_eq(cowmap_cell_stats(c, &st), 0);
	return st.published;
}

START_TEST(cell_new_with_nulls_gives_an_empty_memb_cell)
{
	urcu_memb_register_thread();

	struct cowmap_cell *c = cowmap_cell_new(NULL, NULL);

	ck_assert_ptr_nonnull(c);
	urcu_memb_read_lock();
	ck_assert_uint_eq(cowmap_size(cowmap_cell_load(c)), 0);
	urcu_memb_read_unlock();
	ck_assert_int_eq(cowmap_cell_set(c, "k", 1, NULL), 0);
	cowmap_cell_free(c);
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(cell_calls_reject_a_null_cell)
{
	struct cowmap_cell_stats st;
	struct cowmap *m;

	urcu_memb_register_thread();
	reset_counts();
	cowmap_cell_free(NULL);	/* ignored */
	ck_assert_ptr_null(cowmap_cell_load(NULL));
	errno = 0;
	ck_assert_ptr_null(cowmap_cell_snapshot(NULL));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(cowmap_cell_set(NULL, "a", 1, val(50)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(NULL, "a", 1), -EINVAL);
	ck_assert_int_eq(cowmap_cell_stats(NULL, &st), -EINVAL);
	ck_assert_int_eq(cowmap_cell_barrier(NULL), -EINVAL);
	ck_assert_int_eq(cowmap_cell_update(NULL, must_not_run, NULL), -EINVAL);

	/* publish and cas steal `next` even when they fail: the map's only
	 * reference is released, so its values are freed at once. */
	m = owning_map();
	ck_assert_int_eq(cowmap_cell_publish(NULL, m), -EINVAL);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(1), 1);

	reset_counts();
	m = owning_map();
	ck_assert_int_eq(cowmap_cell_cas(NULL, m, m), -EINVAL);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(50), 0);
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(cell_calls_reject_null_arguments_and_publish_nothing)
{
	struct cowmap_cell *c;
	struct cowmap *cur, *m;

	urcu_memb_register_thread();
	reset_counts();
	c = cowmap_cell_new(owning_map(), NULL);
	ck_assert_ptr_nonnull(c);
	cur = cowmap_cell_snapshot(c);

	ck_assert_int_eq(cowmap_cell_publish(c, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_cell_cas(c, cur, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_cell_update(c, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_cell_update(c, fail_without_errno, NULL),
			 -EINVAL);
	ck_assert_int_eq(cowmap_cell_set(c, NULL, 4, val(51)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(c, NULL, 4), -EINVAL);
	ck_assert_int_eq(cowmap_cell_stats(c, NULL), -EINVAL);

	/* NULL is never the current version: a cas expecting it fails (it
	 * is not documented which of EAGAIN and EINVAL) and steals next. */
	m = cowmap_set(cur, "z", 1, val(52));
	ck_assert_ptr_nonnull(m);
	int rc = cowmap_cell_cas(c, NULL, m);

	ck_assert_msg(rc == -EAGAIN || rc == -EINVAL, "cas(NULL) = %d", rc);
	ck_assert_uint_eq(freed_count(52), 1);

	ck_assert_uint_eq(published(c), 0);
	urcu_memb_read_lock();
	ck_assert_ptr_eq(cowmap_cell_load(c), cur);
	urcu_memb_read_unlock();
	cowmap_release(cur);
	cowmap_cell_free(c);
	ck_assert_uint_eq(freed_count(51), 0);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(1), 1);
	urcu_memb_unregister_thread();
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cells: only versions of the cell's family                           */
/* ------------------------------------------------------------------ */

static void other_free(void *value, void *ctx)
{
	(void)value, (void)ctx;
}

static uint64_t other_hash(const void *key, size_t len, uint64_t seed,
			   void *ctx)
{
	(void)ctx;
	uint64_t h = seed;

	for (size_t i = 0; i < len; i++)
		h = (h ^ ((const unsigned char *)key)[i]) * 0x100000001b3u;
	return h;
}

/* owning_map()'s options with one of them changed, or its kind (@which
 * 0..4 change the family; 5, the seed, does not). */
static struct cowmap *foreign_map(int which)
{
	struct cowmap_options o = { .seed = 42, .value_free = count_free,
				    .ctx = vals };

	switch (which) {
	case 0: o.value_free = other_free; break;
	case 1: o.ctx = &o; o.value_free = NULL; break;
	case 2: o.hash = other_hash; break;
	case 3: o.max_entries = 1000; break;
	case 4: break;	/* another kind: a prefix table */
	default: o.seed = 43; break;
	}

	struct cowmap *m = which == 4 ? cowmap_prefix_new(32, &o)
				      : cowmap_new(&o);

	ck_assert_ptr_nonnull(m);
	return m;
}

static struct cowmap *return_arg(const struct cowmap *cur, void *arg)
{
	(void)cur;
	return arg;
}

/*
 * A version of another family (value_free, context, hash, limit, kind) would
 * leave its values freed by the wrong function, or never: publish, cas
 * and update refuse it with EINVAL, release it, and keep the current.
 * Another seed is accepted (it costs diffs their shortcut, nothing else).
 */
START_TEST(publishing_a_version_of_another_family_is_einval)
{
	struct cowmap_cell *c;
	struct cowmap *cur;

	urcu_memb_register_thread();
	reset_counts();
	c = cowmap_cell_new(owning_map(), NULL);
	ck_assert_ptr_nonnull(c);
	cur = cowmap_cell_snapshot(c);
	for (int which = 0; which < 5; which++) {
		ck_assert_int_eq(cowmap_cell_publish(c, foreign_map(which)),
				 -EINVAL);
		ck_assert_int_eq(cowmap_cell_cas(c, cur, foreign_map(which)),
				 -EINVAL);
		ck_assert_int_eq(cowmap_cell_update(c, return_arg,
						    foreign_map(which)),
				 -EINVAL);
	}
	ck_assert_uint_eq(published(c), 0);
	urcu_memb_read_lock();
	ck_assert_ptr_eq(cowmap_cell_load(c), cur);
	urcu_memb_read_unlock();

	/* The family's own empty version is accepted, and a seed of its
	 * own does not make another family. */
	ck_assert_int_eq(cowmap_cell_publish(c, cowmap_empty_like(cur)), 0);
	ck_assert_int_eq(cowmap_cell_publish(c, foreign_map(5)), 0);
	ck_assert_uint_eq(published(c), 2);
	cowmap_release(cur);
	cowmap_cell_free(c);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(1), 1);
	urcu_memb_unregister_thread();
}
END_TEST

static int count_change(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	(void)what, (void)key, (void)len, (void)old_value, (void)new_value;
	(*(int *)ctx)++;
	return 0;
}

/* A table rebuilt from cowmap_empty_like() keeps the seed, so it is
 * compared with its predecessor structure by structure. */
START_TEST(empty_like_keeps_the_family_and_the_seed)
{
	struct cowmap *m = owning_map(), *e, *r, *t;
	int changes = 0;

	reset_counts();
	ck_assert_ptr_null(cowmap_empty_like(NULL));
	e = cowmap_empty_like(m);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(cowmap_size(e), 0);
	r = cowmap_set(e, "a", 1, val(0));	/* the same value: unchanged */
	ck_assert_ptr_nonnull(r);
	cowmap_release(e);
	t = cowmap_set(r, "c", 1, val(2));
	ck_assert_ptr_nonnull(t);
	cowmap_release(r);
	ck_assert_int_eq(cowmap_diff(m, t, count_change, &changes), 0);
	ck_assert_int_eq(changes, 2);	/* b removed, c added */

	/* It owns its values as m does: releasing it frees val(2) and,
	 * since m still holds val(0), not that one. */
	cowmap_release(t);
	ck_assert_uint_eq(freed_count(2), 1);
	ck_assert_uint_eq(freed_count(0), 1);	/* stored twice: two owners */
	cowmap_release(m);
	ck_assert_uint_eq(freed_count(0), 2);
	ck_assert_uint_eq(freed_count(1), 1);
}
END_TEST

/* A prefix table's empty version is an empty prefix table of its width
 * and options, which works as one (a hash root there once read out of
 * bounds) and which its cell takes as of its family. */
START_TEST(empty_like_of_a_prefix_table_is_an_empty_prefix_table)
{
	struct cowmap_options o = { .value_free = count_free, .ctx = vals,
				    .max_entries = 3 };
	unsigned char net[16] = { 0x20, 0x01, 0x0d, 0xb8 }, host[16];
	struct cowmap *t, *p, *e, *f;
	void *v = NULL;
	unsigned len = 0;

	reset_counts();
	urcu_memb_register_thread();
	t = cowmap_prefix_new(128, &o);
	ck_assert_ptr_nonnull(t);
	p = cowmap_prefix_set(t, net, 32, val(0));
	ck_assert_ptr_nonnull(p);
	cowmap_release(t);

	e = cowmap_empty_like(p);
	ck_assert_ptr_nonnull(e);
	ck_assert_uint_eq(cowmap_prefix_width(e), 128);
	ck_assert_uint_eq(cowmap_size(e), 0);
	memcpy(host, net, sizeof(host));
	host[15] = 1;
	ck_assert_int_eq(cowmap_prefix_lookup(e, host, &v, &len), 0);
	ck_assert_int_eq(cowmap_get(e, "a", 1, &v), -EINVAL);

	f = cowmap_prefix_set(e, net, 48, val(1));
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(cowmap_prefix_lookup(f, host, &v, &len), 1);
	ck_assert_ptr_eq(v, val(1));
	ck_assert_uint_eq(len, 48);

	/* The same family: the cell of p takes it, and it owns its values
	 * with p's value_free. */
	struct cowmap_cell *c = cowmap_cell_new(p, NULL);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_cell_publish(c, f), 0);
	cowmap_release(e);
	cowmap_cell_free(c);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(1), 1);
	urcu_memb_unregister_thread();
}
END_TEST

static struct cowmap *return_cur(const struct cowmap *cur, void *arg)
{
	(void)arg;
	return (struct cowmap *)(uintptr_t)cur;
}

static struct cowmap *return_cur_retained(const struct cowmap *cur, void *arg)
{
	(void)arg;
	return cowmap_retain(cur);
}

static struct cowmap *set_same_value(const struct cowmap *cur, void *arg)
{
	(void)arg;
	return cowmap_set(cur, "a", 1, val(0));	/* already a -> val(0) */
}

/*
 * "No change" may come back as cur retained (as documented) or as cur
 * itself: both publish nothing, and neither frees or leaks the current
 * version (its values are freed exactly once, when the cell goes).
 */
START_TEST(update_returning_the_current_version_changes_nothing)
{
	struct cowmap *(*const fns[])(const struct cowmap *, void *) = {
		return_cur, return_cur_retained, set_same_value,
	};

	urcu_memb_register_thread();
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
		reset_counts();

		struct cowmap_cell *c = cowmap_cell_new(owning_map(), NULL);

		ck_assert_ptr_nonnull(c);
		for (int round = 0; round < 3; round++)
			ck_assert_int_eq(cowmap_cell_update(c, fns[i], NULL), 0);
		ck_assert_uint_eq(published(c), 0);
		ck_assert_int_eq(cowmap_cell_barrier(c), 0);
		ck_assert_uint_eq(freed_count(0), 0);

		void *v = NULL;

		urcu_memb_read_lock();
		ck_assert_int_eq(cowmap_get(cowmap_cell_load(c), "b", 1, &v), 1);
		urcu_memb_read_unlock();
		ck_assert_ptr_eq(v, val(1));
		ck_assert_int_eq(cowmap_cell_set(c, "c", 1, val(3)), 0);
		cowmap_cell_free(c);
		ck_assert_uint_eq(freed_count(0), 1);
		ck_assert_uint_eq(freed_count(1), 1);
		ck_assert_uint_eq(freed_count(3), 1);
	}
	urcu_memb_unregister_thread();
}
END_TEST

/* Inside a read-side section cowmap_cell_free() would wait for itself:
 * it frees nothing, says so through errno, and the cell stays usable. */
START_TEST(cell_free_inside_a_read_section_fails_with_edeadlk)
{
	struct cowmap_cell *c;

	urcu_memb_register_thread();
	reset_counts();
	c = cowmap_cell_new(owning_map(), NULL);
	ck_assert_ptr_nonnull(c);
	urcu_memb_read_lock();
	errno = 0;
	cowmap_cell_free(c);
	ck_assert_int_eq(errno, EDEADLK);
	urcu_memb_read_unlock();
	ck_assert_uint_eq(freed_count(0), 0);
	ck_assert_int_eq(cowmap_cell_set(c, "c", 1, val(3)), 0);
	errno = 0;
	cowmap_cell_free(c);
	ck_assert_int_eq(errno, 0);
	ck_assert_uint_eq(freed_count(0), 1);
	ck_assert_uint_eq(freed_count(3), 1);
	urcu_memb_unregister_thread();
}
END_TEST

/* The pending limit is the caller's to set, on a live cell only. */
START_TEST(pending_limit_rejects_a_null_cell)
{
	ck_assert_int_eq(cowmap_cell_set_pending_limit(NULL, 1), -EINVAL);
}
END_TEST

Suite *misuse_suite(void)
{
	Suite *s = suite_create("misuse");
	TCase *tc;

	tc = tcase_create("versions");
	tcase_add_test(tc, new_with_null_options_gives_an_empty_map);
	tcase_add_test(tc, version_calls_reject_a_null_map);
	tcase_add_test(tc, comparisons_reject_null_arguments);
	tcase_add_test(tc, stats_rejects_a_null_output);
	tcase_add_test(tc, iterating_null_yields_nothing);
	tcase_add_test(tc, bad_keys_are_rejected_and_take_nothing);
	tcase_add_test(tc, get_many_rejects_null_arrays_and_skips_bad_keys);
	suite_add_tcase(s, tc);

	tc = tcase_create("transactions");
	tcase_add_test(tc, txn_calls_reject_a_null_transaction);
	tcase_add_test(tc, txn_rejects_bad_keys_and_keeps_the_draft);
	tcase_add_test(tc, txn_used_after_commit_is_einval);
	tcase_add_test(tc, txn_used_after_an_unchanged_commit_is_einval);
	tcase_add_test(tc, txn_used_after_abort_is_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("cells");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, cell_new_with_nulls_gives_an_empty_memb_cell);
	tcase_add_test(tc, cell_calls_reject_a_null_cell);
	tcase_add_test(tc, cell_calls_reject_null_arguments_and_publish_nothing);
	tcase_add_test(tc, publishing_a_version_of_another_family_is_einval);
	tcase_add_test(tc, empty_like_keeps_the_family_and_the_seed);
	tcase_add_test(tc, empty_like_of_a_prefix_table_is_an_empty_prefix_table);
	tcase_add_test(tc, update_returning_the_current_version_changes_nothing);
	tcase_add_test(tc, cell_free_inside_a_read_section_fails_with_edeadlk);
	tcase_add_test(tc, pending_limit_rejects_a_null_cell);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(misuse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
