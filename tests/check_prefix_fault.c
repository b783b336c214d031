/*
 * check_prefix_fault.c - allocation failures in every allocating prefix
 * call, as check_fault.c does for maps.
 *
 * Each call runs with the n-th allocation failing, n = 0, 1, 2, ... until
 * it succeeds.  A failing call must report ENOMEM, leave the version (or
 * the draft) as the model says, keep the caller's value (value_free not
 * called) and leak nothing: the node allocator's census of blocks handed
 * out must come back to what it was (and the ASan and valgrind runs find
 * the rest).  Tables of widths 32 and 128, with and without value_free,
 * with inserts that make new paths, replacements, deletions that remove
 * nodes, transactions whose draft owns nodes already, and route loads.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "prefix_model.h"
#include "slab.h"
#include "testutil.h"

#define MAX_FAILS 100000

struct fx {
	unsigned width;
	bool owning;
	struct tu_free_log log;
	struct cowmap_options opts;
	struct pm_model model;
	struct cowmap *t;
	struct tu_rng rng;
	uint64_t next_val;
};

static pm_addr rnd_addr(struct fx *f)
{
	pm_addr a = (pm_addr)tu_rng_next(&f->rng) << 64 | tu_rng_next(&f->rng);

	/* a few top bits only, so prefixes share paths and nest */
	if (tu_rng_below(&f->rng, 2))
		a &= ~(pm_addr)0 << 120 | (pm_addr)tu_rng_next(&f->rng) >> 8;
	return pm_mask(a, f->width);
}

static unsigned rnd_len(struct fx *f)
{
	return (unsigned)tu_rng_below(&f->rng, f->width + 1);
}

static void fx_init(struct fx *f, unsigned width, bool owning, int seed)
{
	memset(f, 0, sizeof(*f));
	f->width = width;
	f->owning = owning;
	tu_free_log_init(&f->log);
	f->opts = tu_opts(0, NULL, owning ? &f->log : NULL);
	tu_rng_init(&f->rng, 0xfa000000u + (uint64_t)seed);
	pm_init(&f->model, width);
	f->next_val = 1;
	f->t = cowmap_prefix_new(width, &f->opts);
	ck_assert_ptr_nonnull(f->t);
	for (int i = 0; i < 300; i++) {
		unsigned char b[16];
		pm_addr a = rnd_addr(f);
		unsigned len = rnd_len(f);
		void *v = tu_val(f->next_val++);
		void *old;


		pm_store(b, a, f->width);
		pm_set(&f->model, a, len, v, &old);
		struct cowmap *n = cowmap_prefix_set(f->t, b, len, v);

		ck_assert_ptr_nonnull(n);
		cowmap_release(f->t);
		f->t = n;
	}
}

static void fx_fini(struct fx *f)
{
	cowmap_release(f->t);
	pm_fini(&f->model);
	tu_free_log_fini(&f->log);
}

static size_t blocks_out(void)
{
	size_t slabs, blocks;

	cm_test_slab_census(&slabs, &blocks);
	return blocks;
}

/* The version holds exactly the model. */
static void same_as_model(const struct cowmap *t, const struct pm_model *m)
{
	struct cowmap_iter it;
	unsigned char b[16];
	unsigned len;
	void *v;
	size_t n = 0;

	ck_assert_uint_eq(cowmap_size(t), m->n);
	cowmap_iter_init(&it, t);
	while (cowmap_prefix_iter_next(&it, b, &len, &v)) {
		struct pm_entry *e = pm_find(m, pm_load(b, m->width), len);

		ck_assert_ptr_nonnull(e);
		ck_assert_ptr_eq(e->value, v);
		n++;
	}
	ck_assert_uint_eq(n, m->n);
}

enum op { OP_SET_NEW, OP_SET_REPLACE, OP_DEL, OP_TXN, OP_LOAD, OP_CELL };

/*
 * Run @op with the n-th allocation failing until it succeeds.  Each
 * failure must change nothing; the success must do what the model says.
 */
static void run_op(struct fx *f, enum op op)
{
	unsigned char b[16];
	pm_addr a;
	unsigned len;

	if (op == OP_SET_REPLACE || op == OP_DEL) {
		struct pm_entry *e = &f->model.e[tu_rng_below(&f->rng, f->model.n)];

		a = e->addr;
		len = e->len;
	} else {
		do {
			a = rnd_addr(f);
			len = rnd_len(f);
		} while (pm_find(&f->model, a, len) != NULL);
	}
	pm_store(b, a, f->width);

	void *v = tu_val(f->next_val++);
	uint64_t load_base = f->next_val;	/* OP_LOAD's 40 values */

	f->next_val += 40;
	for (long n = 0; n < MAX_FAILS; n++) {
		size_t before = blocks_out(), freed = f->log.calls;
		struct cowmap *next = NULL;
		int rc = 0;

		cm_test_fail_after(n);
		switch (op) {
		case OP_SET_NEW:
		case OP_SET_REPLACE:
			next = cowmap_prefix_set(f->t, b, len, v);
			rc = next != NULL ? 0 : -errno;
			break;
		case OP_DEL:
			next = cowmap_prefix_del(f->t, b, len);
			rc = next != NULL ? 0 : -errno;
			break;
		case OP_TXN: {
			/* a draft that owns a path already, then a set and a
			 * delete in it */
			struct cowmap_txn *x = cowmap_txn_begin(f->t);
			struct pm_entry *e = &f->model.e[0];
			unsigned char eb[16];

			pm_store(eb, e->addr, f->width);
			if (x == NULL) {
				rc = -errno;
				break;
			}
			rc = cowmap_txn_prefix_set(x, b, len, v);
			if (rc == 0) {
				rc = cowmap_txn_prefix_del(x, eb, e->len);
				if (rc == 1) {
					rc = 0;
				} else {
					/* the set took the value: the abort
					 * frees it, so try a fresh one */
					ck_assert_int_eq(rc, -ENOMEM);
					cm_test_fail_after(-1);
					cowmap_txn_abort(x);
					ck_assert_uint_eq(
						tu_free_log_count(&f->log, v),
						f->owning ? 1 : 0);
					v = tu_val(f->next_val++);
					cm_test_fail_after(n);
					x = NULL;
					rc = -ENOMEM;
					break;
				}
			}
			if (rc < 0) {
				cm_test_fail_after(-1);
				cowmap_txn_abort(x);
				break;
			}
			next = cowmap_txn_commit(x);
			break;
		}
		case OP_LOAD: {
			/* a route load into a draft that owns nodes already:
			 * all or nothing */
			struct cowmap_txn *x = cowmap_txn_begin(f->t);
			struct cowmap_route r[40];
			unsigned char rb[40][16];

			if (x == NULL) {
				rc = -errno;
				break;
			}
			cm_test_fail_after(-1);
			ck_assert_int_eq(cowmap_txn_prefix_set(x, b, len, v), 0);
			for (int i = 0; i < 40; i++) {
				struct tu_rng keep = f->rng;

				tu_rng_init(&f->rng, 77 + (uint64_t)i);
				pm_store(rb[i], rnd_addr(f), f->width);
				r[i].addr = rb[i];
				r[i].len = rnd_len(f);
				r[i].value = tu_val(load_base + (uint64_t)i);
				f->rng = keep;
			}
			cm_test_fail_after(n);
			rc = cowmap_txn_prefix_set_many(x, 40, r);
			cm_test_fail_after(-1);
			if (rc < 0) {
				ck_assert_int_eq(rc, -ENOMEM);
				/* the draft is as before the load */
				ck_assert_uint_eq(cowmap_txn_size(x),
						  f->model.n + 1);
				for (int i = 0; i < 40; i++)
					ck_assert_uint_eq(
						tu_free_log_count(&f->log,
								  r[i].value),
						0);
				cowmap_txn_abort(x);
				v = tu_val(f->next_val++);
				break;
			}
			next = cowmap_txn_commit(x);
			pm_set(&f->model, a, len, v, NULL);
			for (int i = 0; i < 40; i++)
				pm_set(&f->model, pm_load(rb[i], f->width),
				       r[i].len, r[i].value, NULL);
			break;
		}
		case OP_CELL: {
			cm_test_fail_after(-1);
			struct cowmap_cell *c =
				cowmap_cell_new(cowmap_retain(f->t), NULL);

			cm_test_fail_after(n);
			rc = cowmap_cell_prefix_set(c, b, len, v);
			cm_test_fail_after(-1);
			if (rc == 0)
				next = cowmap_cell_snapshot(c);
			cowmap_cell_free(c);
			break;
		}
		}
		cm_test_fail_after(-1);
		if (rc < 0) {
			ck_assert_int_eq(rc, -ENOMEM);
			same_as_model(f->t, &f->model);
			if (op != OP_TXN && op != OP_LOAD)
				ck_assert_uint_eq(tu_free_log_count(&f->log, v),
						  0);
			if (op != OP_TXN && op != OP_LOAD && op != OP_CELL) {
				ck_assert_uint_eq(f->log.calls, freed);
				ck_assert_uint_eq(blocks_out(), before);
			}
			continue;
		}
		ck_assert_ptr_nonnull(next);
		switch (op) {
		case OP_SET_NEW:
		case OP_SET_REPLACE:
		case OP_CELL:
			pm_set(&f->model, a, len, v, NULL);
			break;
		case OP_DEL:
			pm_del(&f->model, a, len, NULL);
			break;
		case OP_TXN: {
			struct pm_entry *e = &f->model.e[0];

			pm_set(&f->model, a, len, v, NULL);
			pm_del(&f->model, e->addr, e->len, NULL);
			break;
		}
		case OP_LOAD:
			break;
		}
		same_as_model(next, &f->model);
		cowmap_release(f->t);
		f->t = next;
		ck_assert_int_gt(n, 0);	/* every op allocates */
		return;
	}
	ck_abort_msg("operation kept failing");
}

static const unsigned fwidths[] = { 32, 128 };

START_TEST(every_allocation_failure_changes_nothing)
{
	struct fx f;
	unsigned w = fwidths[_i % 2];
	bool owning = (_i / 2) % 2;

	urcu_memb_register_thread();
	fx_init(&f, w, owning, _i);
	for (int round = 0; round < 4; round++) {
		run_op(&f, OP_SET_NEW);
		run_op(&f, OP_SET_REPLACE);
		run_op(&f, OP_DEL);
		run_op(&f, OP_TXN);
		run_op(&f, OP_LOAD);
		run_op(&f, OP_CELL);
	}
	fx_fini(&f);
	urcu_memb_unregister_thread();
}
END_TEST

START_TEST(prefix_new_and_txn_begin_fail_cleanly)
{
	for (long n = 0;; n++) {
		cm_test_fail_after(n);
		struct cowmap *t = cowmap_prefix_new(64, NULL);

		cm_test_fail_after(-1);
		if (t == NULL) {
			ck_assert_int_eq(errno, ENOMEM);
			continue;
		}
		cm_test_fail_after(0);
		struct cowmap_txn *x = cowmap_txn_begin(t);

		cm_test_fail_after(-1);
		ck_assert_ptr_null(x);
		ck_assert_uint_eq(cowmap_prefix_width(t), 64);
		cowmap_release(t);
		break;
	}
}
END_TEST

static int count_change(enum cowmap_change what, const void *addr,
			unsigned len, void *old_value, void *new_value,
			void *ctx)
{
	(void)addr, (void)len, (void)new_value;
	if (what == COWMAP_REMOVED && old_value != NULL)
		(*(size_t *)ctx)++;
	else
		*(size_t *)ctx += 1000;	/* anything else is wrong */
	return 0;
}

/* Reads of a table allocate nothing, and answer as the model does while
 * they do. */
START_TEST(lookups_iteration_and_diff_allocate_nothing)
{
	struct fx f;
	unsigned char b[16] = { 0 }, gone[16];
	void *v = NULL, *many[1], *exact = NULL;
	unsigned len = 0, many_len[1];
	size_t seen = 0, changes = 0;
	int found, exact_found, same, diff_rc;
	size_t found_many;
	struct cowmap_iter it;

	fx_init(&f, 128, true, 99);

	/* A version one prefix short, to diff against. */
	const struct pm_entry *e = &f.model.e[0];

	pm_store(gone, e->addr, 128);

	struct cowmap *less = cowmap_prefix_del(f.t, gone, e->len);

	ck_assert_ptr_nonnull(less);

	unsigned long before = cm_test_alloc_count();

	found = cowmap_prefix_lookup(f.t, b, &v, &len);
	found_many = cowmap_prefix_lookup_many(f.t, 1, b, many, many_len);
	exact_found = cowmap_prefix_get(f.t, b, 0, &exact);
	cowmap_iter_init(&it, f.t);
	while (cowmap_prefix_iter_next(&it, b, NULL, NULL))
		seen++;
	same = cowmap_equal(f.t, f.t, NULL, NULL);
	diff_rc = cowmap_prefix_diff(f.t, less, count_change, &changes);
	ck_assert_uint_eq(cm_test_alloc_count(), before);

	const struct pm_entry *want = pm_lookup(&f.model, 0);
	const struct pm_entry *dflt = pm_find(&f.model, 0, 0);

	ck_assert_int_eq(found, want != NULL);
	ck_assert_uint_eq(found_many, want != NULL);
	ck_assert_ptr_eq(v, want != NULL ? want->value : NULL);
	ck_assert_ptr_eq(many[0], want != NULL ? want->value : NULL);
	ck_assert_uint_eq(many_len[0], want != NULL ? want->len : 0);
	if (want != NULL)
		ck_assert_uint_eq(len, want->len);
	ck_assert_int_eq(exact_found, dflt != NULL);
	ck_assert_ptr_eq(exact, dflt != NULL ? dflt->value : NULL);
	ck_assert_uint_eq(seen, f.model.n);
	ck_assert_int_eq(same, 1);
	ck_assert_int_eq(diff_rc, 0);
	ck_assert_uint_eq(changes, 1);
	cowmap_release(less);
	fx_fini(&f);
}
END_TEST

Suite *prefix_fault_suite(void);

Suite *prefix_fault_suite(void)
{
	Suite *s = suite_create("prefix_fault");
	TCase *tc = tcase_create("faults");

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, every_allocation_failure_changes_nothing, 0, 4);
	tcase_add_test(tc, prefix_new_and_txn_begin_fail_cleanly);
	tcase_add_test(tc, lookups_iteration_and_diff_allocate_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(prefix_fault_suite());
}
