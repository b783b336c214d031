/*
 * check_debug_misuse.c - what the debug build (COWMAP_DEBUG=1) adds:
 * a version used after its last release, a transaction used after
 * commit or abort, and a cell used after cowmap_cell_free(), are answered
 * with EINVAL and a report on stderr instead of touching freed memory.
 *
 * This program is linked with its own copy of the library compiled with
 * -DCOWMAP_DEBUG=1 (see tests/fuzz/local.mk), so it runs in every
 * configuration.  The debug build keeps finished versions and handles in
 * a long quarantine (poisoned, not handed back to malloc), which is what
 * makes reading the dead marker safe, also under ASan and valgrind.
 *
 * Reports are captured by pointing stderr at a temporary file around the
 * call (tests/capture.h).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <cowmap.h>

#include "capture.h"

#ifndef COWMAP_DEBUG
#error "check_debug_misuse.c must be compiled with -DCOWMAP_DEBUG=1"
#endif

Suite *debug_misuse_suite(void);

static char vals[16];
static int frees[16];

static void count_free(void *value, void *ctx)
{
	(void)ctx;
	frees[(char *)value - vals]++;
}

/* A released version: built with two entries that the map owns, then
 * released by its only holder. */
static struct cowmap *released_version(void)
{
	struct cowmap_options o = { .seed = 7, .value_free = count_free,
				    .ctx = vals };
	struct cowmap *m = cowmap_new(&o), *a, *b;

	ck_assert_ptr_nonnull(m);
	a = cowmap_set(m, "one", 3, &vals[1]);
	b = cowmap_set(a, "two", 3, &vals[2]);
	ck_assert_ptr_nonnull(b);
	cowmap_release(m);
	cowmap_release(a);
	memset(frees, 0, sizeof(frees));
	cowmap_release(b);
	ck_assert_int_eq(frees[1], 1);
	ck_assert_int_eq(frees[2], 1);
	return b;	/* dangling on purpose */
}

START_TEST(released_version_in_get_is_einval_and_reported)
{
	struct cowmap *m = released_version();
	void *v = &vals[9];
	const char *out;

	tu_capture_begin();
	int rc = cowmap_get(m, "one", 3, &v);

	out = tu_capture_end();
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_ptr_eq(v, &vals[9]);
	ck_assert_reported(out, "released");
}
END_TEST

START_TEST(released_version_in_set_and_del_is_einval_and_takes_nothing)
{
	struct cowmap *m = released_version();
	const char *out;

	tu_capture_begin();
	errno = 0;
	struct cowmap *n = cowmap_set(m, "three", 5, &vals[3]);
	int err_set = errno;

	errno = 0;
	struct cowmap *d = cowmap_del(m, "one", 3);
	int err_del = errno;

	out = tu_capture_end();
	ck_assert_ptr_null(n);
	ck_assert_int_eq(err_set, EINVAL);
	ck_assert_ptr_null(d);
	ck_assert_int_eq(err_del, EINVAL);
	ck_assert_reported(out, "released");
	ck_assert_int_eq(frees[3], 0);	/* the value is still the caller's */
	ck_assert_int_eq(frees[1], 1);	/* nothing freed twice */
}
END_TEST

START_TEST(released_version_in_retain_is_einval_and_reported)
{
	struct cowmap *m = released_version();
	const char *out;

	tu_capture_begin();
	errno = 0;
	struct cowmap *r = cowmap_retain(m);
	int err = errno;

	out = tu_capture_end();
	ck_assert_ptr_null(r);
	ck_assert_int_eq(err, EINVAL);
	ck_assert_reported(out, "released");
}
END_TEST

START_TEST(releasing_a_version_twice_is_reported_not_freed_twice)
{
	struct cowmap *m = released_version();
	const char *out;

	tu_capture_begin();
	cowmap_release(m);
	cowmap_release(m);
	out = tu_capture_end();
	ck_assert_reported(out, "cowmap_release");
	ck_assert_reported(out, "released");
	ck_assert_int_eq(frees[1], 1);
	ck_assert_int_eq(frees[2], 1);
}
END_TEST

static int never_called(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	(void)what, (void)key, (void)len, (void)old_value, (void)new_value;
	(void)ctx;
	ck_abort_msg("diff reported a change of a released version");
	return 0;
}

START_TEST(released_version_elsewhere_is_einval)
{
	struct cowmap *m = released_version();
	struct cowmap *live = cowmap_new(NULL);
	struct cowmap_stats st;
	struct cowmap_iter it;
	const void *keys[1] = { "one" };
	size_t lens[1] = { 3 };
	void *out[1] = { &vals[9] };
	const char *text;

	ck_assert_ptr_nonnull(live);
	tu_capture_begin();
	ck_assert_uint_eq(cowmap_size(m), 0);
	ck_assert_int_eq(cowmap_stats(m, &st), -EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_begin(m));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_get_many(m, 1, keys, lens, out), 0);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_int_eq(cowmap_equal(m, live, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(live, m, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(m, live, never_called, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_diff(live, m, never_called, NULL), -EINVAL);
	cowmap_iter_init(&it, m);
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, NULL, NULL), 0);
	text = tu_capture_end();
	ck_assert_reported(text, "released");
	cowmap_release(live);
}
END_TEST

START_TEST(released_version_published_is_einval)
{
	struct cowmap *m;
	struct cowmap_cell *c;
	struct cowmap_cell_stats st;
	const char *text;

	urcu_memb_register_thread();
	c = cowmap_cell_new(NULL, NULL);
	ck_assert_ptr_nonnull(c);
	m = released_version();
	tu_capture_begin();
	ck_assert_int_eq(cowmap_cell_publish(c, m), -EINVAL);
	ck_assert_int_eq(cowmap_cell_cas(c, m, m), -EINVAL);
	text = tu_capture_end();
	ck_assert_reported(text, "released");
	ck_assert_int_eq(cowmap_cell_stats(c, &st), 0);
	ck_assert_uint_eq(st.published, 0);
	ck_assert_int_eq(frees[1], 1);
	cowmap_cell_free(c);
	urcu_memb_unregister_thread();
}
END_TEST

/* ---- cells ---- */

/* A released version handed to cowmap_cell_new(): refused, nothing
 * allocated that could leak, nothing of the released version freed again,
 * and no value passed to value_free a second time. */
START_TEST(cell_new_with_released_version_is_einval)
{
	struct cowmap *m = released_version();
	struct cowmap_cell *c;
	const char *text;
	int err;

	tu_capture_begin();
	errno = 0;
	c = cowmap_cell_new(m, NULL);
	err = errno;
	text = tu_capture_end();
	ck_assert_ptr_null(c);
	ck_assert_int_eq(err, EINVAL);
	ck_assert_reported(text, "released");
	ck_assert_int_eq(frees[1], 1);
	ck_assert_int_eq(frees[2], 1);
}
END_TEST

/* A cell with two values it owns, then freed by its only user. */
static struct cowmap_cell *freed_cell(void)
{
	struct cowmap_options o = { .seed = 9, .value_free = count_free,
				    .ctx = vals };
	struct cowmap *m = cowmap_new(&o), *a;
	struct cowmap_cell *c;

	ck_assert_ptr_nonnull(m);
	a = cowmap_set(m, "one", 3, &vals[1]);
	ck_assert_ptr_nonnull(a);
	cowmap_release(m);
	c = cowmap_cell_new(a, NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_cell_set(c, "two", 3, &vals[2]), 0);
	memset(frees, 0, sizeof(frees));
	cowmap_cell_free(c);
	ck_assert_int_eq(frees[1], 1);
	ck_assert_int_eq(frees[2], 1);
	return c;	/* dangling on purpose */
}

/* Enough other cells, versions and transactions come and go that a cell
 * freed with plain free() would have its memory reused. */
static void churn(void)
{
	for (int i = 0; i < 200; i++) {
		struct cowmap_cell *c = cowmap_cell_new(NULL, NULL);
		struct cowmap *v;

		ck_assert_ptr_nonnull(c);
		ck_assert_int_eq(cowmap_cell_set(c, &i, sizeof(i), NULL), 0);
		v = cowmap_cell_snapshot(c);
		ck_assert_ptr_nonnull(v);
		cowmap_release(v);
		cowmap_cell_free(c);
	}
}

START_TEST(freed_cell_in_writers_is_einval_and_reported)
{
	struct cowmap_cell *c;
	struct cowmap *next;
	const char *text;

	urcu_memb_register_thread();
	c = freed_cell();
	churn();
	next = cowmap_new(NULL);
	ck_assert_ptr_nonnull(next);
	tu_capture_begin();
	ck_assert_int_eq(cowmap_cell_set(c, "three", 5, &vals[3]), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(c, "one", 3), -EINVAL);
	ck_assert_int_eq(cowmap_cell_publish(c, next), -EINVAL); /* stolen */
	text = tu_capture_end();
	ck_assert_reported(text, "cowmap_cell_set");
	ck_assert_reported(text, "cowmap_cell_del");
	ck_assert_reported(text, "cowmap_cell_publish");
	ck_assert_reported(text, "cell already freed");
	ck_assert_int_eq(frees[3], 0);	/* the value is still the caller's */
	ck_assert_int_eq(frees[1], 1);	/* nothing freed twice */
	ck_assert_int_eq(frees[2], 1);
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(freed_cell_in_readers_and_stats_is_einval_and_reported)
{
	struct cowmap_cell *c;
	struct cowmap_cell_stats st;
	const struct cowmap *cur;
	struct cowmap *snap;
	const char *text;
	int err;

	urcu_memb_register_thread();
	c = freed_cell();
	churn();
	memset(&st, 0xa5, sizeof(st));
	tu_capture_begin();
	urcu_memb_read_lock();
	cur = cowmap_cell_load(c);
	urcu_memb_read_unlock();
	errno = 0;
	snap = cowmap_cell_snapshot(c);
	err = errno;
	int rc = cowmap_cell_stats(c, &st);
	int barrier_rc = cowmap_cell_barrier(c);

	text = tu_capture_end();
	ck_assert_ptr_null(cur);
	ck_assert_ptr_null(snap);
	ck_assert_int_eq(err, EINVAL);
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_int_eq(barrier_rc, -EINVAL);
	ck_assert_uint_eq(st.published, UINT64_C(0xa5a5a5a5a5a5a5a5));
	ck_assert_reported(text, "cowmap_cell_load");
	ck_assert_reported(text, "cowmap_cell_snapshot");
	ck_assert_reported(text, "cowmap_cell_stats");
	ck_assert_reported(text, "cowmap_cell_barrier");
	ck_assert_reported(text, "cell already freed");
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(freeing_a_cell_twice_is_reported_not_freed_twice)
{
	struct cowmap_cell *c;
	const char *text;

	urcu_memb_register_thread();
	c = freed_cell();
	tu_capture_begin();
	cowmap_cell_free(c);
	text = tu_capture_end();
	ck_assert_reported(text, "cowmap_cell_free");
	ck_assert_reported(text, "cell already freed");
	ck_assert_int_eq(frees[1], 1);
	ck_assert_int_eq(frees[2], 1);
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(freeing_a_cell_inside_a_read_section_is_reported)
{
	struct cowmap_cell *c;
	const char *text;

	urcu_memb_register_thread();
	c = cowmap_cell_new(NULL, NULL);
	ck_assert_ptr_nonnull(c);
	tu_capture_begin();
	urcu_memb_read_lock();
	cowmap_cell_free(c);
	urcu_memb_read_unlock();
	text = tu_capture_end();
	ck_assert_reported(text, "cowmap_cell_free");
	ck_assert_reported(text, "read-side critical section");
	ck_assert_int_eq(cowmap_cell_barrier(c), 0);	/* still a live cell */
	cowmap_cell_free(c);
	urcu_memb_unregister_thread();
}
END_TEST

static void *read_unregistered(void *arg)
{
	struct cowmap_cell *c = arg;

	/* No urcu_memb_register_thread(): the lock below only touches this
	 * thread's counter, and no grace period waits for it. */
	urcu_memb_read_lock();
	(void)cowmap_cell_load(c);
	urcu_memb_read_unlock();
	return NULL;
}

START_TEST(reading_a_cell_from_an_unregistered_thread_is_reported)
{
	struct cowmap_cell *c;
	pthread_t th;
	const char *text;

	urcu_memb_register_thread();
	c = cowmap_cell_new(NULL, NULL);
	ck_assert_ptr_nonnull(c);

	/* A registered reader says nothing. */
	tu_capture_begin();
	urcu_memb_read_lock();
	(void)cowmap_cell_load(c);
	urcu_memb_read_unlock();
	text = tu_capture_end();
	ck_assert_str_eq(text, "");

	tu_capture_begin();
	ck_assert_int_eq(pthread_create(&th, NULL, read_unregistered, c), 0);
	pthread_join(th, NULL);
	text = tu_capture_end();
	ck_assert_reported(text, "cowmap_cell_load");
	ck_assert_reported(text, "not registered");
	cowmap_cell_free(c);
	urcu_memb_unregister_thread();
}
END_TEST

/* In release builds a finished transaction is recognised "for a while";
 * the debug build's quarantine makes it reliable: here after a thousand
 * other transactions and versions have come and gone. */
START_TEST(finished_txn_is_einval_after_much_churn)
{
	struct cowmap *base = cowmap_new(NULL), *c;
	struct cowmap_txn *done_commit, *done_abort;
	const char *text;

	ck_assert_ptr_nonnull(base);
	done_commit = cowmap_txn_begin(base);
	ck_assert_int_eq(cowmap_txn_set(done_commit, "k", 1, NULL), 0);
	c = cowmap_txn_commit(done_commit);
	ck_assert_ptr_nonnull(c);
	cowmap_release(c);
	done_abort = cowmap_txn_begin(base);
	cowmap_txn_abort(done_abort);

	for (int i = 0; i < 1000; i++) {
		struct cowmap_txn *t = cowmap_txn_begin(base);
		struct cowmap *v;

		ck_assert_ptr_nonnull(t);
		ck_assert_int_eq(cowmap_txn_set(t, &i, sizeof(i), NULL), 0);
		v = cowmap_txn_commit(t);
		ck_assert_ptr_nonnull(v);
		cowmap_release(v);
	}

	tu_capture_begin();
	ck_assert_int_eq(cowmap_txn_set(done_commit, "x", 1, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(done_commit, "k", 1), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(done_abort, "k", 1, NULL), -EINVAL);
	ck_assert_uint_eq(cowmap_txn_size(done_abort), 0);
	errno = 0;
	ck_assert_ptr_null(cowmap_txn_commit(done_abort));
	ck_assert_int_eq(errno, EINVAL);
	cowmap_txn_abort(done_commit);
	text = tu_capture_end();
	ck_assert_reported(text, "already committed or aborted");
	cowmap_release(base);
}
END_TEST

Suite *debug_misuse_suite(void)
{
	Suite *s = suite_create("debug_misuse");
	TCase *tc = tcase_create("released versions");

	tcase_add_test(tc, released_version_in_get_is_einval_and_reported);
	tcase_add_test(tc,
		       released_version_in_set_and_del_is_einval_and_takes_nothing);
	tcase_add_test(tc, released_version_in_retain_is_einval_and_reported);
	tcase_add_test(tc, releasing_a_version_twice_is_reported_not_freed_twice);
	tcase_add_test(tc, released_version_elsewhere_is_einval);
	tcase_add_test(tc, released_version_published_is_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("freed cells");
	tcase_add_test(tc, cell_new_with_released_version_is_einval);
	tcase_add_test(tc, freed_cell_in_writers_is_einval_and_reported);
	tcase_add_test(tc, freed_cell_in_readers_and_stats_is_einval_and_reported);
	tcase_add_test(tc, freeing_a_cell_twice_is_reported_not_freed_twice);
	tcase_add_test(tc, freeing_a_cell_inside_a_read_section_is_reported);
	tcase_add_test(tc, reading_a_cell_from_an_unregistered_thread_is_reported);
	suite_add_tcase(s, tc);

	tc = tcase_create("finished transactions");
	tcase_add_test(tc, finished_txn_is_einval_after_much_churn);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(debug_misuse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
