/*
 * check_fault.c - allocation failure injection.
 *
 * For each allocating call the test runs the call with the n-th
 * allocation failing, n = 0, 1, 2, ... until it succeeds
 * (cm_test_fail_after(n) before, cm_test_fail_after(-1) after).  Every
 * failing call must report ENOMEM, leave every version (and the draft)
 * as the model says, keep the caller's value (value_free not called), and
 * leak nothing: the ASan and valgrind runs of this program find leaks, so
 * the test itself releases everything it makes.
 *
 * The calls are exercised on maps of several shapes: small, 10k keys,
 * collision groups, one hash for all keys, long keys, deep tries; with and
 * without value_free (which makes the library box its entries); for
 * inserts, replacements and deletions that collapse nodes.  Lookups and
 * iteration are shown to allocate nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "testutil.h"

#define MAX_FAILS 100000 /* a call still failing after this many is stuck */

typedef uint64_t hash_fn(const void *, size_t, uint64_t, void *);

struct shape {
	const char *name;
	hash_fn *hash;
	size_t len_even, len_odd; /* key lengths for even and odd ids */
	uint64_t n;               /* keys the map starts with: ids 0..n-1 */
	int with_free;            /* options.value_free set */
};

static const struct shape shapes[] = {
	{ "small", NULL, 8, 8, 12, 0 },
	{ "small, value_free, short keys", NULL, 8, 1, 12, 1 },
	{ "10k keys", NULL, 8, 8, 10000, 0 },
	{ "10k keys, value_free", NULL, 8, TU_LONG_KEY_LEN, 10000, 1 },
	{ "collision groups of 8", tu_hash_group8, 8, 0, 1500, 1 },
	{ "one hash for every key", tu_hash_const, 8, 1, 40, 1 },
	{ "long keys", NULL, TU_LONG_KEY_LEN, TU_KEY_MAX, 1500, 1 },
	{ "deep tries (high 4 hash bits)", tu_hash_high4, 8, TU_LONG_KEY_LEN,
	  300, 0 },
};
#define NSHAPES ((int)(sizeof(shapes) / sizeof(shapes[0])))

/* ------------------------------------------------------------------ */
/* Fixture                                                             */
/* ------------------------------------------------------------------ */

struct fixture {
	const struct shape *shape;
	struct tu_free_log log;
	struct cowmap *map; /* the current version */
	struct tu_model *model;
	struct cowmap *first; /* the version first built, kept throughout */
	struct tu_model *first_model;
	uint64_t next_value; /* value numbers handed out so far */
	uint64_t stored;     /* values a successful set gave the map */
	int full_each;       /* full check after every failure */
	unsigned ops;        /* operations done, to space out full checks */
};

static void key_of(const struct fixture *f, uint64_t id, struct tu_key *k)
{
	size_t len = id % 2 ? f->shape->len_odd : f->shape->len_even;

	if (id >= tu_key_space(len, UINT64_MAX))
		len = f->shape->len_even;
	tu_key_make(k, len, id);
}

static void *fresh_value(struct fixture *f)
{
	return tu_val(f->next_value++);
}

static void fixture_init(struct fixture *f, const struct shape *shape)
{
	struct cowmap_options o;
	struct tu_key k;

	memset(f, 0, sizeof(*f));
	f->shape = shape;
	tu_free_log_init(&f->log);
	o = tu_opts(99, shape->hash, shape->with_free ? &f->log : NULL);
	f->map = cowmap_new(&o);
	ck_assert_ptr_nonnull(f->map);
	f->model = tu_model_new();
	for (uint64_t id = 0; id < shape->n; id++) {
		void *v = fresh_value(f);

		key_of(f, id, &k);
		f->map = tu_set_replace(f->map, k.bytes, k.len, v);
		tu_model_set(f->model, k.bytes, k.len, v, NULL);
		f->stored++;
	}
	f->first = cowmap_retain(f->map);
	f->first_model = tu_model_copy(f->model);
	f->full_each = shape->n <= 400;
}

/* Check everything, release everything (with allocations failing: release
 * cannot fail), and check every stored value was freed exactly once. */
static void fixture_fini(struct fixture *f)
{
	check_map_matches_model(f->map, f->model);
	check_map_matches_model(f->first, f->first_model);
	cm_test_fail_after(0);
	cowmap_release(f->map);
	cowmap_release(f->first);
	cm_test_fail_after(-1);
	if (f->shape->with_free) {
		TU_REQUIRE(f->log.calls == f->stored,
			   "[%s] value_free called %zu times for %llu stored "
			   "values",
			   f->shape->name, f->log.calls,
			   (unsigned long long)f->stored);
	}
	tu_model_free(f->model);
	tu_model_free(f->first_model);
	tu_free_log_fini(&f->log);
}

/*
 * After a failure: the versions are as the models say.  Big maps get the
 * touched key and its neighbours by id (which share its collision group
 * under tu_hash_group8), and a full check of the old version once the
 * call succeeds (see before_update).
 */
static void check_unchanged(struct fixture *f, const struct tu_key *k)
{
	uint64_t id = tu_key_id(k->bytes, k->len);
	struct tu_key nk;

	if (f->full_each) {
		check_map_matches_model(f->map, f->model);
		check_map_matches_model(f->first, f->first_model);
		return;
	}
	check_map_key_matches_model(f->map, f->model, k->bytes, k->len);
	check_map_key_matches_model(f->first, f->first_model, k->bytes,
				    k->len);
	for (uint64_t j = id < 8 ? 0 : id - 8; j <= id + 8; j++) {
		key_of(f, j, &nk);
		check_map_key_matches_model(f->map, f->model, nk.bytes,
					    nk.len);
		check_map_key_matches_model(f->first, f->first_model,
					    nk.bytes, nk.len);
	}
}

/* A call succeeded after failures: the old version, still current, is
 * whole (every time for small maps, every 16th time for big ones). */
static void before_update(struct fixture *f)
{
	if (f->full_each || f->ops % 16 == 0)
		check_map_matches_model(f->map, f->model);
}

/* After a success: the new version is right; big maps are fully checked
 * now and then. */
static void check_after_success(struct fixture *f, const struct tu_key *k)
{
	check_map_key_matches_model(f->map, f->model, k->bytes, k->len);
	if (f->full_each || ++f->ops % 16 == 0)
		check_map_matches_model(f->map, f->model);
}

static void check_value_not_freed(struct fixture *f, void *value)
{
	if (f->shape->with_free)
		TU_REQUIRE(tu_free_log_count(&f->log, value) == 0,
			   "[%s] a failed call freed the caller's value %p",
			   f->shape->name, value);
}

/* Replace the current version by @next, checking the old one first. */
static void advance(struct fixture *f, struct cowmap *next,
		    const struct tu_key *k, int had, void *old)
{
	void *got = NULL;

	TU_REQUIRE(cowmap_get(f->map, k->bytes, k->len, &got) == had,
		   "[%s] the old version changed", f->shape->name);
	if (had)
		TU_REQUIRE(got == old, "[%s] the old version's value changed",
			   f->shape->name);
	cowmap_release(f->map);
	f->map = next;
}

/* ------------------------------------------------------------------ */
/* Fault loops, one per call                                           */
/* ------------------------------------------------------------------ */

/* cowmap_set of key @id; returns how many attempts failed. */
static long fault_set(struct fixture *f, uint64_t id)
{
	struct tu_key k;
	void *value = fresh_value(f), *old = NULL;
	struct cowmap *next = NULL;
	int had;
	long n;

	key_of(f, id, &k);
	had = tu_model_get(f->model, k.bytes, k.len, &old);
	for (n = 0; n < MAX_FAILS; n++) {
		errno = 0;
		cm_test_fail_after(n);
		next = cowmap_set(f->map, k.bytes, k.len, value);
		cm_test_fail_after(-1);
		if (next)
			break;
		TU_REQUIRE(errno == ENOMEM,
			   "[%s] cowmap_set with allocation %ld failing: "
			   "errno %d, expected ENOMEM",
			   f->shape->name, n, errno);
		check_unchanged(f, &k);
		check_value_not_freed(f, value);
	}
	TU_REQUIRE(next != NULL, "[%s] cowmap_set never succeeded",
		   f->shape->name);
	TU_REQUIRE(n > 0, "[%s] cowmap_set made a new version without "
			  "allocating",
		   f->shape->name);
	before_update(f);
	f->stored++;
	tu_model_set(f->model, k.bytes, k.len, value, NULL);
	advance(f, next, &k, had, old);
	check_after_success(f, &k);
	return n;
}

/* cowmap_del of key @id (present or not). */
static long fault_del(struct fixture *f, uint64_t id)
{
	struct tu_key k;
	void *old = NULL;
	struct cowmap *next = NULL;
	int had;
	long n;

	key_of(f, id, &k);
	had = tu_model_get(f->model, k.bytes, k.len, &old);
	for (n = 0; n < MAX_FAILS; n++) {
		errno = 0;
		cm_test_fail_after(n);
		next = cowmap_del(f->map, k.bytes, k.len);
		cm_test_fail_after(-1);
		if (next)
			break;
		TU_REQUIRE(errno == ENOMEM,
			   "[%s] cowmap_del with allocation %ld failing: "
			   "errno %d, expected ENOMEM",
			   f->shape->name, n, errno);
		check_unchanged(f, &k);
	}
	TU_REQUIRE(next != NULL, "[%s] cowmap_del never succeeded",
		   f->shape->name);
	if (had) {
		TU_REQUIRE(n > 0, "[%s] cowmap_del made a new version without "
				  "allocating",
			   f->shape->name);
	} else {
		TU_REQUIRE(n == 0 && next == f->map,
			   "[%s] cowmap_del of an absent key allocated or made "
			   "a new version",
			   f->shape->name);
	}
	before_update(f);
	tu_model_del(f->model, k.bytes, k.len, NULL);
	advance(f, next, &k, had, old);
	check_after_success(f, &k);
	return n;
}

static struct cowmap_txn *fault_txn_begin(struct fixture *f)
{
	struct cowmap_txn *t = NULL;
	struct tu_key k;
	long n;

	key_of(f, 0, &k);
	for (n = 0; n < MAX_FAILS; n++) {
		errno = 0;
		cm_test_fail_after(n);
		t = cowmap_txn_begin(f->map);
		cm_test_fail_after(-1);
		if (t)
			break;
		TU_REQUIRE(errno == ENOMEM,
			   "[%s] cowmap_txn_begin with allocation %ld "
			   "failing: errno %d, expected ENOMEM",
			   f->shape->name, n, errno);
		check_unchanged(f, &k);
	}
	TU_REQUIRE(t != NULL, "[%s] cowmap_txn_begin never succeeded",
		   f->shape->name);
	TU_REQUIRE(n > 0, "[%s] cowmap_txn_begin allocated nothing",
		   f->shape->name);
	return t;
}

/* A draft and its model. */
struct draft {
	struct cowmap_txn *t;
	struct tu_model *model;
};

static void check_draft_unchanged(struct fixture *f, struct draft *d,
				  const struct tu_key *k)
{
	uint64_t id = tu_key_id(k->bytes, k->len);

	if (f->full_each) {
		check_txn_matches_model(d->t, d->model);
	} else {
		TU_REQUIRE(cowmap_txn_size(d->t) == tu_model_size(d->model),
			   "[%s] draft size %zu, model %zu", f->shape->name,
			   cowmap_txn_size(d->t), tu_model_size(d->model));
		for (uint64_t j = id < 8 ? 0 : id - 8; j <= id + 8; j++) {
			struct tu_key nk;
			void *want = NULL, *got = NULL;
			int had, rc;

			key_of(f, j, &nk);
			had = tu_model_get(d->model, nk.bytes, nk.len, &want);
			rc = cowmap_txn_get(d->t, nk.bytes, nk.len, &got);
			TU_REQUIRE(rc == had && (!had || got == want),
				   "[%s] draft key %llu changed by a failed "
				   "call",
				   f->shape->name, (unsigned long long)j);
		}
	}
	check_unchanged(f, k); /* the base, too */
}

static long fault_txn_set(struct fixture *f, struct draft *d, uint64_t id)
{
	struct tu_key k;
	void *value = fresh_value(f);
	int rc = -1;
	long n;

	key_of(f, id, &k);
	for (n = 0; n < MAX_FAILS; n++) {
		cm_test_fail_after(n);
		rc = cowmap_txn_set(d->t, k.bytes, k.len, value);
		cm_test_fail_after(-1);
		if (rc == 0)
			break;
		TU_REQUIRE(rc == -ENOMEM,
			   "[%s] cowmap_txn_set with allocation %ld failing "
			   "returned %d, expected -ENOMEM",
			   f->shape->name, n, rc);
		check_draft_unchanged(f, d, &k);
		check_value_not_freed(f, value);
	}
	TU_REQUIRE(rc == 0, "[%s] cowmap_txn_set never succeeded",
		   f->shape->name);
	f->stored++;
	tu_model_set(d->model, k.bytes, k.len, value, NULL);
	if (f->full_each || ++f->ops % 16 == 0)
		check_txn_matches_model(d->t, d->model);
	return n;
}

static long fault_txn_del(struct fixture *f, struct draft *d, uint64_t id)
{
	struct tu_key k;
	int rc = -1, had;
	long n;

	key_of(f, id, &k);
	had = tu_model_get(d->model, k.bytes, k.len, NULL);
	for (n = 0; n < MAX_FAILS; n++) {
		cm_test_fail_after(n);
		rc = cowmap_txn_del(d->t, k.bytes, k.len);
		cm_test_fail_after(-1);
		if (rc >= 0)
			break;
		TU_REQUIRE(rc == -ENOMEM,
			   "[%s] cowmap_txn_del with allocation %ld failing "
			   "returned %d, expected -ENOMEM",
			   f->shape->name, n, rc);
		check_draft_unchanged(f, d, &k);
	}
	TU_REQUIRE(rc == had, "[%s] cowmap_txn_del returned %d, expected %d",
		   f->shape->name, rc, had);
	tu_model_del(d->model, k.bytes, k.len, NULL);
	if (f->full_each || ++f->ops % 16 == 0)
		check_txn_matches_model(d->t, d->model);
	return n;
}

/* Commit of a merged draft cannot run out of memory: it must succeed
 * with every allocation failing.  (Sets gathered since the last read are
 * merged by commit, which can fail: see
 * commit_of_gathered_sets_without_memory_discards_the_draft.) */
static struct cowmap *commit_without_memory(struct fixture *f,
					    struct draft *d)
{
	struct cowmap *next;

	(void)cowmap_txn_size(d->t);	/* merges what was gathered */
	errno = 0;
	cm_test_fail_after(0);
	next = cowmap_txn_commit(d->t);
	cm_test_fail_after(-1);
	TU_REQUIRE(next != NULL,
		   "[%s] cowmap_txn_commit failed with allocations failing: "
		   "errno %d (commit cannot run out of memory)",
		   f->shape->name, errno);
	d->t = NULL;
	check_map_matches_model(next, d->model);
	return next;
}

/* ------------------------------------------------------------------ */
/* Tests over every shape                                              */
/* ------------------------------------------------------------------ */

/* Ids spread over 0..n-1, @count of them, starting at @phase. */
static uint64_t spread_id(const struct shape *s, unsigned i, unsigned count,
			  unsigned phase)
{
	return (s->n * i / count + phase) % s->n;
}

START_TEST(set_failures_change_nothing_when_inserting)
{
	struct fixture f;
	long failures = 0;

	fixture_init(&f, &shapes[_i]);
	for (uint64_t id = f.shape->n; id < f.shape->n + 24; id++)
		failures += fault_set(&f, id);
	ck_assert_int_gt(failures, 0);
	fixture_fini(&f);
}
END_TEST

START_TEST(set_failures_change_nothing_when_replacing)
{
	struct fixture f;

	fixture_init(&f, &shapes[_i]);
	for (unsigned i = 0; i < 24; i++)
		fault_set(&f, spread_id(f.shape, i, 24, 0));
	/* Replace a key twice: its entry is now only in the current version
	 * and the version before it. */
	fault_set(&f, 0);
	fault_set(&f, 0);
	fixture_fini(&f);
}
END_TEST

START_TEST(del_failures_change_nothing)
{
	struct fixture f;

	fixture_init(&f, &shapes[_i]);
	for (unsigned i = 0; i < 24; i++)
		fault_del(&f, spread_id(f.shape, i, 24, 1));
	fault_del(&f, f.shape->n + 5); /* absent: allocates nothing */
	fixture_fini(&f);
}
END_TEST

START_TEST(del_failures_change_nothing_down_to_an_empty_map)
{
	struct fixture f;
	uint64_t n;

	fixture_init(&f, &shapes[_i]);
	n = f.shape->n < 150 ? f.shape->n : 150;
	/* Deleting everything collapses every node and collision group on
	 * the way (for the bigger shapes: the first 150 ids). */
	ck_assert_uint_ne(n % 7, 0); /* so that i * 7 % n is a permutation */
	for (uint64_t i = 0; i < n; i++)
		fault_del(&f, i * 7 % n);
	if (f.shape->n <= 150)
		ck_assert_uint_eq(cowmap_size(f.map), 0);
	fixture_fini(&f);
}
END_TEST

START_TEST(txn_failures_change_neither_draft_nor_base)
{
	struct fixture f;
	struct draft d;
	struct cowmap *next;

	fixture_init(&f, &shapes[_i]);
	d.t = fault_txn_begin(&f);
	d.model = tu_model_copy(f.model);
	/* New keys, replacements (first of base entries, then of entries
	 * the draft already owns), deletions of base and draft keys. */
	for (uint64_t id = f.shape->n; id < f.shape->n + 12; id++)
		fault_txn_set(&f, &d, id);
	for (unsigned i = 0; i < 12; i++)
		fault_txn_set(&f, &d, spread_id(f.shape, i, 12, 0));
	for (unsigned i = 0; i < 12; i++)
		fault_txn_set(&f, &d, spread_id(f.shape, i, 12, 0));
	for (unsigned i = 0; i < 12; i++)
		fault_txn_del(&f, &d, spread_id(f.shape, i, 12, 1));
	for (uint64_t id = f.shape->n; id < f.shape->n + 12; id += 2)
		fault_txn_del(&f, &d, id);
	fault_txn_del(&f, &d, f.shape->n + 1000); /* absent */
	check_txn_matches_model(d.t, d.model);
	check_map_matches_model(f.map, f.model);
	next = commit_without_memory(&f, &d);
	check_map_matches_model(f.map, f.model);
	cowmap_release(f.map);
	f.map = next;
	tu_model_free(f.model);
	f.model = d.model;
	fixture_fini(&f);
}
END_TEST

START_TEST(txn_failures_then_abort_leave_the_base)
{
	struct fixture f;
	struct draft d;

	fixture_init(&f, &shapes[_i]);
	d.t = fault_txn_begin(&f);
	d.model = tu_model_copy(f.model);
	for (uint64_t id = f.shape->n; id < f.shape->n + 8; id++)
		fault_txn_set(&f, &d, id);
	for (unsigned i = 0; i < 8; i++)
		fault_txn_set(&f, &d, spread_id(f.shape, i, 8, 3));
	for (unsigned i = 0; i < 8; i++)
		fault_txn_del(&f, &d, spread_id(f.shape, i, 8, 5));
	/* Abort cannot report a failure, so it must not need memory. */
	cm_test_fail_after(0);
	cowmap_txn_abort(d.t);
	cm_test_fail_after(-1);
	tu_model_free(d.model);
	fixture_fini(&f);
}
END_TEST

START_TEST(txn_delete_everything_under_failures_gives_an_empty_map)
{
	struct fixture f;
	struct draft d;
	struct cowmap *next;
	uint64_t n;

	fixture_init(&f, &shapes[_i]);
	n = f.shape->n < 200 ? f.shape->n : 200;
	d.t = fault_txn_begin(&f);
	d.model = tu_model_copy(f.model);
	for (uint64_t i = 0; i < n; i++)
		fault_txn_del(&f, &d, i);
	next = commit_without_memory(&f, &d);
	if (f.shape->n <= 200)
		ck_assert_uint_eq(cowmap_size(next), 0);
	cowmap_release(f.map);
	f.map = next;
	tu_model_free(f.model);
	f.model = d.model;
	fixture_fini(&f);
}
END_TEST

START_TEST(lookups_and_iteration_allocate_nothing)
{
	struct fixture f;
	struct tu_key k[64];
	const void *keys[64];
	size_t lens[64];
	void *values[64], *one[64];
	int rc[64];
	unsigned long before;
	struct cowmap_iter it;
	size_t count = 0, found, size;

	fixture_init(&f, &shapes[_i]);
	for (unsigned i = 0; i < 64; i++) {
		key_of(&f, i * 3, &k[i]); /* some ids beyond n: misses */
		keys[i] = k[i].bytes;
		lens[i] = k[i].len;
	}
	before = cm_test_alloc_count();
	cm_test_fail_after(0);
	found = cowmap_get_many(f.map, 64, keys, lens, values);
	for (unsigned i = 0; i < 64; i++)
		rc[i] = cowmap_get(f.map, keys[i], lens[i], &one[i]);
	cowmap_iter_init(&it, f.map);
	while (cowmap_iter_next(&it, NULL, NULL, NULL))
		count++;
	size = cowmap_size(f.map);
	cm_test_fail_after(-1);
	ck_assert_uint_eq(cm_test_alloc_count(), before);
	/* ... and, allocating nothing, answered as the model does */
	ck_assert_uint_eq(count, f.shape->n);
	ck_assert_uint_eq(size, f.shape->n);
	ck_assert_uint_eq(found, f.shape->n >= 190 ? 64 : (f.shape->n + 2) / 3);
	for (unsigned i = 0; i < 64; i++) {
		void *want = NULL;
		int in = tu_model_get(f.model, keys[i], lens[i], &want);

		TU_REQUIRE(rc[i] == in, "get of key %u: %d, model %d", i,
			   rc[i], in);
		TU_REQUIRE(!in || one[i] == want, "get of key %u: wrong value",
			   i);
		TU_REQUIRE(values[i] == want, "get_many of key %u: wrong value",
			   i);
	}
	fixture_fini(&f);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Single tests                                                        */
/* ------------------------------------------------------------------ */

static void check_new_under_failures(const struct cowmap_options *o)
{
	struct cowmap *m = NULL;
	long n;

	for (n = 0; n < MAX_FAILS; n++) {
		errno = 0;
		cm_test_fail_after(n);
		m = cowmap_new(o);
		cm_test_fail_after(-1);
		if (m)
			break;
		ck_assert_int_eq(errno, ENOMEM);
	}
	ck_assert_ptr_nonnull(m);
	ck_assert_int_gt(n, 0);
	ck_assert_uint_eq(cowmap_size(m), 0);
	m = tu_set_replace(m, "k", 1, tu_val(1));
	ck_assert_uint_eq(cowmap_size(m), 1);
	cowmap_release(m);
}

START_TEST(new_failures_return_enomem_and_leak_nothing)
{
	struct tu_free_log log;
	struct cowmap_options o;

	tu_free_log_init(&log);
	check_new_under_failures(NULL);
	o = tu_opts(0, NULL, NULL);
	check_new_under_failures(&o);
	o = tu_opts(5, tu_hash_group8, &log);
	o.max_entries = 10;
	check_new_under_failures(&o);
	ck_assert_uint_eq(log.calls, 1);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(no_op_updates_allocate_nothing)
{
	struct fixture f;
	struct cowmap *same;
	struct tu_key k;
	void *v = NULL;
	unsigned long before;

	fixture_init(&f, &shapes[1]);
	key_of(&f, 3, &k);
	ck_assert_int_eq(tu_model_get(f.model, k.bytes, k.len, &v), 1);
	before = cm_test_alloc_count();
	cm_test_fail_after(0);
	same = cowmap_set(f.map, k.bytes, k.len, v);
	cm_test_fail_after(-1);
	ck_assert_ptr_eq(same, f.map);
	cowmap_release(same);
	key_of(&f, 1000, &k);
	cm_test_fail_after(0);
	same = cowmap_del(f.map, k.bytes, k.len);
	cm_test_fail_after(-1);
	ck_assert_ptr_eq(same, f.map);
	cowmap_release(same);
	ck_assert_uint_eq(cm_test_alloc_count(), before);
	fixture_fini(&f);
}
END_TEST

START_TEST(del_failure_while_collapsing_a_deep_path_changes_nothing)
{
	/* hash = key id: ids 0 and 1 << 32 share a path several levels deep
	 * (see check_map); deleting one collapses it. */
	static const struct shape deep = { "identity hash pair",
					   tu_hash_identity, 8, 8, 0, 1 };
	struct fixture f;
	struct cowmap *single;
	struct cowmap_options o = tu_opts(99, tu_hash_identity, NULL);
	struct cowmap_stats a, b;
	struct tu_key k;

	fixture_init(&f, &deep);
	fault_set(&f, 0);
	fault_set(&f, (uint64_t)1 << 32);
	fault_set(&f, 77);
	ck_assert_uint_ge(tu_stats(f.map).max_depth, 1);
	fault_del(&f, (uint64_t)1 << 32);
	/* The survivor sits where a map built without the partner has it. */
	single = cowmap_new(&o);
	ck_assert_ptr_nonnull(single);
	tu_key_make(&k, 8, 0);
	single = tu_set_replace(single, k.bytes, k.len, tu_val(1));
	tu_key_make(&k, 8, 77);
	single = tu_set_replace(single, k.bytes, k.len, tu_val(2));
	a = tu_stats(f.map);
	b = tu_stats(single);
	ck_assert_uint_eq(a.nodes, b.nodes);
	ck_assert_uint_eq(a.max_depth, b.max_depth);
	cowmap_release(single);
	fixture_fini(&f);
}
END_TEST

START_TEST(random_failures_during_random_operations_change_nothing)
{
	static const struct shape mixed = { "random schedule", tu_hash_group8,
					    8, TU_LONG_KEY_LEN, 500, 1 };
	struct fixture f;
	struct tu_rng r;
	long steps = tu_env_long("COWMAP_FAULT_RANDOM_STEPS", 4000);

	fixture_init(&f, &mixed);
	f.full_each = 0;
	tu_rng_init(&r, 4242);
	for (long step = 0; step < steps; step++) {
		uint64_t id = tu_rng_below(&r, 800);
		long fail_at = (long)tu_rng_below(&r, 6);
		struct tu_key k;

		key_of(&f, id, &k);
		if (tu_rng_below(&r, 10) < 8) {
			int is_set = tu_rng_below(&r, 2) == 0;
			void *value = fresh_value(&f), *old = NULL;
			int had = tu_model_get(f.model, k.bytes, k.len, &old);
			struct cowmap *next;

			errno = 0;
			cm_test_fail_after(fail_at);
			next = is_set ? cowmap_set(f.map, k.bytes, k.len, value)
				      : cowmap_del(f.map, k.bytes, k.len);
			cm_test_fail_after(-1);
			if (!next) {
				ck_assert_int_eq(errno, ENOMEM);
				check_unchanged(&f, &k);
				check_value_not_freed(&f, value);
				continue;
			}
			if (is_set) {
				f.stored++;
				tu_model_set(f.model, k.bytes, k.len, value,
					     NULL);
			} else {
				tu_model_del(f.model, k.bytes, k.len, NULL);
			}
			advance(&f, next, &k, had, old);
			check_after_success(&f, &k);
		} else {
			/* A short draft with failures inside, committed. */
			struct draft d;
			struct cowmap *next;

			d.t = fault_txn_begin(&f);
			d.model = tu_model_copy(f.model);
			for (int i = 0; i < 6; i++) {
				uint64_t did = tu_rng_below(&r, 800);

				if (tu_rng_below(&r, 2))
					fault_txn_set(&f, &d, did);
				else
					fault_txn_del(&f, &d, did);
			}
			next = commit_without_memory(&f, &d);
			cowmap_release(f.map);
			f.map = next;
			tu_model_free(f.model);
			f.model = d.model;
		}
	}
	fixture_fini(&f);
}
END_TEST

/* ------------------------------------------------------------------ */


/* ------------------------------------------------------------------ */
/* Gathered sets: merged on the next read, commit or abort             */
/* ------------------------------------------------------------------ */

#define GATHER 40

/* Gather GATHER sets in @d with no failures: new keys, replacements of
 * base keys, and a repeat of every fourth key; their ids go to @ids. */
static void gather_sets(struct fixture *f, struct draft *d, uint64_t phase,
			uint64_t ids[GATHER])
{
	for (unsigned i = 0; i < GATHER; i++) {
		uint64_t id = i % 3 == 0
				      ? f->shape->n + (phase + i) % (GATHER / 2)
				      : spread_id(f->shape, i, GATHER,
						  (unsigned)phase);
		struct tu_key k;

		key_of(f, id, &k);
		for (int again = 0; again <= (i % 4 == 0); again++) {
			void *v = fresh_value(f);

			TU_REQUIRE(cowmap_txn_set(d->t, k.bytes, k.len, v) ==
					   0,
				   "[%s] cowmap_txn_set failed",
				   f->shape->name);
			f->stored++;
			tu_model_set(d->model, k.bytes, k.len, v, NULL);
		}
		ids[i] = id;
	}
}

/*
 * Reads of a draft whose merge fails at every allocation in turn: the
 * size and every gathered key answer as the model says, the base is
 * untouched, and in the end (fixture_fini) every value was freed once.
 */
START_TEST(gathered_merge_failures_change_nothing)
{
	struct fixture f;
	struct draft d;
	uint64_t ids[GATHER];
	long failures = 0;

	fixture_init(&f, &shapes[_i]);
	d.t = fault_txn_begin(&f);
	d.model = tu_model_copy(f.model);
	for (uint64_t round = 0; round < 3; round++) {
		gather_sets(&f, &d, round * 11, ids);
		for (long n = 0; n < MAX_FAILS; n++) {
			unsigned long before = cm_test_alloc_count();
			size_t size;

			cm_test_fail_after(n);
			size = cowmap_txn_size(d.t);
			cm_test_fail_after(-1);
			TU_REQUIRE(size == tu_model_size(d.model),
				   "[%s] draft size %zu with allocation %ld "
				   "failing, model %zu",
				   f.shape->name, size, n,
				   tu_model_size(d.model));
			if (cm_test_alloc_count() - before <= (unsigned long)n)
				break;	/* nothing failed: merged */
			failures++;
			cm_test_fail_after(0);
			for (unsigned i = 0; i < GATHER; i++) {
				struct tu_key k;
				void *want = NULL, *got = NULL;
				int had, rc;

				key_of(&f, ids[i], &k);
				had = tu_model_get(d.model, k.bytes, k.len,
						   &want);
				rc = cowmap_txn_get(d.t, k.bytes, k.len, &got);
				TU_REQUIRE(rc == had && got == want,
					   "[%s] gathered key %llu misread "
					   "while merging fails",
					   f.shape->name,
					   (unsigned long long)ids[i]);
			}
			cm_test_fail_after(-1);
			check_map_matches_model(f.map, f.model);
		}
		check_txn_matches_model(d.t, d.model);
		/* A delete whose merge fails first, then succeeds. */
		gather_sets(&f, &d, round * 11 + 5, ids);
		fault_txn_del(&f, &d, ids[GATHER - 1]);
	}
	ck_assert_int_gt(failures, 0);
	cowmap_release(f.map);
	f.map = commit_without_memory(&f, &d);
	tu_model_free(f.model);
	f.model = d.model;
	fixture_fini(&f);
}
END_TEST

/* Commit merges what was gathered; without memory it fails with ENOMEM
 * and discards the draft like abort: its values are freed once
 * (fixture_fini counts them), the base is as it was. */
START_TEST(commit_of_gathered_sets_without_memory_discards_the_draft)
{
	struct fixture f;
	struct draft d;
	uint64_t ids[GATHER];
	struct cowmap *next;

	fixture_init(&f, &shapes[_i]);
	d.t = fault_txn_begin(&f);
	d.model = tu_model_copy(f.model);
	gather_sets(&f, &d, 3, ids);
	errno = 0;
	cm_test_fail_after(0);
	next = cowmap_txn_commit(d.t);
	cm_test_fail_after(-1);
	TU_REQUIRE(next == NULL && errno == ENOMEM,
		   "[%s] commit of gathered sets without memory returned %p, "
		   "errno %d",
		   f.shape->name, (void *)next, errno);
	ck_assert_int_eq(cowmap_txn_size(d.t), 0);	/* consumed */
	check_map_matches_model(f.map, f.model);
	tu_model_free(d.model);
	fixture_fini(&f);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *fault_suite(void);

Suite *fault_suite(void)
{
	Suite *s = suite_create("fault");
	TCase *tc;

	tc = tcase_create("shapes");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, set_failures_change_nothing_when_inserting, 0,
			    NSHAPES);
	tcase_add_loop_test(tc, set_failures_change_nothing_when_replacing, 0,
			    NSHAPES);
	tcase_add_loop_test(tc, del_failures_change_nothing, 0, NSHAPES);
	tcase_add_loop_test(tc,
			    del_failures_change_nothing_down_to_an_empty_map,
			    0, NSHAPES);
	tcase_add_loop_test(tc, txn_failures_change_neither_draft_nor_base, 0,
			    NSHAPES);
	tcase_add_loop_test(tc, gathered_merge_failures_change_nothing, 0,
			    NSHAPES);
	tcase_add_loop_test(tc,
			    commit_of_gathered_sets_without_memory_discards_the_draft,
			    0, NSHAPES);
	tcase_add_loop_test(tc, txn_failures_then_abort_leave_the_base, 0,
			    NSHAPES);
	tcase_add_loop_test(
		tc, txn_delete_everything_under_failures_gives_an_empty_map, 0,
		NSHAPES);
	tcase_add_loop_test(tc, lookups_and_iteration_allocate_nothing, 0,
			    NSHAPES);
	suite_add_tcase(s, tc);

	tc = tcase_create("single");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, new_failures_return_enomem_and_leak_nothing);
	tcase_add_test(tc, no_op_updates_allocate_nothing);
	tcase_add_test(tc,
		       del_failure_while_collapsing_a_deep_path_changes_nothing);
	tcase_add_test(tc,
		       random_failures_during_random_operations_change_nothing);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(fault_suite());
}
