/*
 * check_lend.c - lending a retired path (lib/lend.c), step by step.
 *
 * check_cell drives lending through a cell, where the interesting
 * interleavings depend on timing.  Here the test plays every part itself,
 * in one thread and in a chosen order: the writer's update that copies
 * the path lending (cm_map_set_at / cm_map_del_at with lend), a reader
 * that retains the old version or derives an update from it, before the
 * old nodes are flagged (cm_lend_mark) or after, and the cell's release of
 * the old version that the grace-period callback would make.  Then the
 * successor goes too, and whatever the "reader" kept must still be whole:
 * every key with its value, and no value freed while a version holds it.
 * At the end every value has been freed exactly once and the node slabs
 * hold what they held at the start.  The ASan and valgrind runs (nodes
 * come from malloc there) catch any node that was freed while reachable.
 *
 * Keys are numbers hashed to themselves, so paths are chosen by the key:
 * key j << 10 | r sits in row r (first chunk), whose node has one child
 * (second chunk 0) above a node of 32 (third chunk j & 31) above nodes of
 * entries (fourth chunk j >> 5).  A write to such a key copies 4 levels.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "map.h"
#include "slab.h"
#include "testutil.h"

#define ROWS 4
#define PER_ROW 300
#define TIMEOUT 120

static uint64_t row_key(unsigned r, unsigned j)
{
	return (uint64_t)j << 10 | r;
}

/* What the "reader" does with the old version, and when. */
enum intruder {
	NOBODY,
	RETAIN,		/* cowmap_retain(old) */
	DERIVE_SHALLOW,	/* cowmap_set(old, k) for a k that shares the root */
	DERIVE_DEEP,	/* ... for a k that shares the key's path to level 3 */
	DERIVE_DEL,	/* cowmap_del(old, k) of a key on the same path */
	NINTRUDERS
};

struct world {
	struct tu_free_log log;
	struct cowmap_options opts;
	struct tu_model *model;	/* what the current version holds */
	size_t blocks_before;
	uint64_t next_val;
};

static void world_begin(struct world *w)
{
	size_t slabs;

	tu_free_log_init(&w->log);
	w->opts = tu_opts(1, tu_hash_identity, &w->log);
	w->model = tu_model_new();
	cm_test_slab_census(&slabs, &w->blocks_before);
	w->next_val = 1u << 20;
}

/* Every value passed to value_free exactly once, and nothing left. */
static void world_end(struct world *w, size_t values_set)
{
	size_t slabs, blocks;

	ck_assert_uint_eq(w->log.calls, values_set);
	for (size_t i = 0; i < w->log.n; i++)
		ck_assert_uint_eq(tu_free_log_count(&w->log, w->log.ptrs[i]),
				  1);
	cm_test_slab_census(&slabs, &blocks);
	ck_assert_uint_eq(blocks, w->blocks_before);
	tu_model_free(w->model);
	tu_free_log_fini(&w->log);
}

static struct cowmap *build(struct world *w, size_t *values_set)
{
	struct cowmap *m = cowmap_new(&w->opts);

	ck_assert_ptr_nonnull(m);
	for (unsigned r = 0; r < ROWS; r++)
		for (unsigned j = 0; j < PER_ROW; j++) {
			struct tu_key k;

			tu_key_make(&k, 8, row_key(r, j));
			void *v = tu_val(w->next_val++);

			m = tu_set_replace(m, k.bytes, k.len, v);
			ck_assert_int_eq(tu_model_set(w->model, k.bytes, k.len,
						      v, NULL),
					 0);
			++*values_set;
		}
	return m;
}

/* No value the model holds has been freed. */
static void check_alive(const struct world *w, const struct tu_model *m)
{
	size_t pos = 0;
	void *v;

	while (tu_model_next(m, &pos, NULL, NULL, &v))
		ck_assert_uint_eq(tu_free_log_count(&w->log, v), 0);
}

/*
 * The writer's lone update of @old (as the cell makes it): key @id set to
 * a new value, or deleted.  Returns the successor; *lent the levels that
 * lent, *hash the key's hash.
 */
static struct cowmap *lend_update(struct world *w, struct cowmap *old,
				  uint64_t id, bool del, unsigned *lent,
				  uint64_t *hash, size_t *values_set)
{
	struct tu_key k;
	struct cm_lookup l;
	struct cowmap *next;

	tu_key_make(&k, 8, id);
	ck_assert(cm_lend_root_ok(old));
	cm_map_lookup(old, k.bytes, k.len, &l);
	if (del) {
		next = cm_map_del_at(old, &l, true, lent);
		ck_assert_int_eq(tu_model_del(w->model, k.bytes, k.len, NULL),
				 1);
	} else {
		void *v = tu_val(w->next_val++);

		next = cm_map_set_at(old, &l, v, true, lent);
		tu_model_set(w->model, k.bytes, k.len, v, NULL);
		++*values_set;
	}
	ck_assert_ptr_nonnull(next);
	ck_assert_ptr_ne(next, old);
	*hash = l.probe.hash;
	return next;
}

/* The "reader's" move on @old; its model (what it must keep) in *kept. */
static struct cowmap *intrude(struct world *w, enum intruder who,
			      const struct cowmap *old,
			      const struct tu_model *old_model,
			      struct tu_model **kept, size_t *values_set)
{
	struct tu_key k;
	struct cowmap *held;
	void *v = tu_val(w->next_val++);

	*kept = tu_model_copy(old_model);
	switch (who) {
	case RETAIN:
		return cowmap_retain(old);
	case DERIVE_SHALLOW:	/* row 0, second chunk 1: a new branch */
		tu_key_make(&k, 8, UINT64_C(1) << 5);
		break;
	case DERIVE_DEEP:	/* same third-level node as key (0, 7) */
		tu_key_make(&k, 8, row_key(0, 7 + 32 * 9));
		break;
	case DERIVE_DEL:
		tu_key_make(&k, 8, row_key(0, 7 + 32));
		held = cowmap_del(old, k.bytes, k.len);
		ck_assert_ptr_nonnull(held);
		ck_assert_int_eq(tu_model_del(*kept, k.bytes, k.len, NULL), 1);
		return held;
	default:
		ck_abort();
	}
	held = cowmap_set(old, k.bytes, k.len, v);
	ck_assert_ptr_nonnull(held);
	tu_model_set(*kept, k.bytes, k.len, v, NULL);
	++*values_set;
	return held;
}

/*
 * Every scene starts the same way: the table, a copy of what it holds,
 * and the writer's lent update of key @id (set to a new value, or deleted
 * when @del), the old nodes not flagged yet (scene_flag() does that).
 */
struct scene {
	struct world w;
	size_t values_set;	/* values given to successful sets */
	struct cowmap *old, *next;
	struct tu_model *old_model;	/* what old holds */
	unsigned lent;
	uint64_t hash;
};

static void scene_begin(struct scene *sc, uint64_t id, bool del)
{
	sc->values_set = 0;
	world_begin(&sc->w);
	sc->old = build(&sc->w, &sc->values_set);
	sc->old_model = tu_model_copy(sc->w.model);
	sc->next = lend_update(&sc->w, sc->old, id, del, &sc->lent, &sc->hash,
			       &sc->values_set);
}

static void scene_flag(struct scene *sc)
{
	cm_lend_mark(sc->old, sc->hash, sc->lent);
}

/* Once the test has released every version. */
static void scene_end(struct scene *sc)
{
	tu_model_free(sc->old_model);
	world_end(&sc->w, sc->values_set);
}

/*
 * One lent update of key (0, 7), the intruder before or after the flags
 * are set, then the old version's release, then the successor's: what
 * the intruder kept must stay whole throughout.
 */
static void lend_with(enum intruder who, bool before_mark, bool del)
{
	struct scene sc;
	struct cowmap *held = NULL;
	struct tu_model *kept = NULL;

	scene_begin(&sc, row_key(0, 7), del);
	ck_assert_uint_eq(sc.lent, 4);	/* root, row, 32-way, entries */

	if (who != NOBODY && before_mark)
		held = intrude(&sc.w, who, sc.old, sc.old_model, &kept,
			       &sc.values_set);
	scene_flag(&sc);
	if (who != NOBODY && !before_mark)
		held = intrude(&sc.w, who, sc.old, sc.old_model, &kept,
			       &sc.values_set);

	cowmap_release(sc.old);	/* the cell's reference, after the grace period */
	check_map_matches_model(sc.next, sc.w.model);
	if (held != NULL) {
		check_map_matches_model(held, kept);
		check_alive(&sc.w, kept);
	}
	cowmap_release(sc.next);
	if (held != NULL) {
		check_map_matches_model(held, kept);
		check_alive(&sc.w, kept);
		cowmap_release(held);
		tu_model_free(kept);
	}
	scene_end(&sc);
}

START_TEST(lent_path_given_back_to_an_intruder_before_the_flags)
{
	lend_with((enum intruder)_i, true, false);
	lend_with((enum intruder)_i, true, true);
}
END_TEST

START_TEST(lent_path_given_back_to_an_intruder_after_the_flags)
{
	lend_with((enum intruder)_i, false, false);
	lend_with((enum intruder)_i, false, true);
}
END_TEST

/*
 * Two updates in a row: the first lends V0's path down row 0, the second
 * then lends V1's path down row 1, whose row node V0's root still points
 * at without counting it.  A late retain of V0 gives back V0's root,
 * which counts that row node again, which must give back what it lent in
 * the second update.  Every order of releasing V0, V1 and V2 afterwards.
 */
START_TEST(late_return_counts_a_node_a_later_update_lent)
{
	static const int orders[6][3] = {
		{ 0, 1, 2 }, { 0, 2, 1 }, { 1, 0, 2 },
		{ 1, 2, 0 }, { 2, 0, 1 }, { 2, 1, 0 },
	};
	const int *order = orders[_i];
	struct scene sc;
	struct cowmap *v[3], *held;
	unsigned lent;
	uint64_t hash;

	scene_begin(&sc, row_key(0, 7), false);
	scene_flag(&sc);
	v[0] = sc.old;
	v[1] = sc.next;
	v[2] = lend_update(&sc.w, v[1], row_key(1, 7), false, &lent, &hash,
			   &sc.values_set);
	ck_assert_uint_eq(lent, 4);
	cm_lend_mark(v[1], hash, lent);

	held = cowmap_retain(v[0]);	/* a reader that loaded V0, late */
	for (int i = 0; i < 3; i++) {
		cowmap_release(v[order[i]]);
		check_map_matches_model(held, sc.old_model);
		check_alive(&sc.w, sc.old_model);
	}
	cowmap_release(held);
	scene_end(&sc);
}
END_TEST

/*
 * A reader that derives an update from the old version down the lent
 * path copies the lent nodes themselves (the copy of a parent skips the
 * child it replaces, so nothing retains them): each copy counts what it
 * copies, and the lent nodes, never retained, are freed with only their
 * path slots.  A second derivation goes down the same path again.
 */
START_TEST(derived_copy_of_a_lent_node_counts_its_own)
{
	struct scene sc;
	struct cowmap *held, *held2;
	struct tu_model *kept;
	struct tu_key k;

	scene_begin(&sc, row_key(0, 7), false);
	scene_flag(&sc);
	held = intrude(&sc.w, DERIVE_DEEP, sc.old, sc.old_model, &kept,
		       &sc.values_set);
	tu_key_make(&k, 8, row_key(0, 7));
	held2 = cowmap_del(held, k.bytes, k.len);
	ck_assert_ptr_nonnull(held2);
	ck_assert_int_eq(tu_model_del(kept, k.bytes, k.len, NULL), 1);
	cowmap_release(sc.next);
	cowmap_release(sc.old);
	cowmap_release(held);
	check_map_matches_model(held2, kept);
	check_alive(&sc.w, kept);
	cowmap_release(held2);
	tu_model_free(kept);
	scene_end(&sc);
}
END_TEST

/* The same trie, built afresh from @model (canonical form makes the
 * stats of equal contents equal). */
static void check_shape(const struct world *w, const struct cowmap *m,
			const struct tu_model *model)
{
	struct cowmap_options o = w->opts;
	struct cowmap *fresh;
	size_t pos = 0, len;
	const void *key;
	void *v;

	o.value_free = NULL;
	fresh = cowmap_new(&o);
	ck_assert_ptr_nonnull(fresh);
	while (tu_model_next(model, &pos, &key, &len, &v))
		fresh = tu_set_replace(fresh, key, len, v);
	struct cowmap_stats a = tu_stats(m), b = tu_stats(fresh);

	/* Boxed entries (value_free) weigh more than inline ones. */
	ck_assert_uint_eq(a.entries, b.entries);
	ck_assert_uint_eq(a.nodes, b.nodes);
	ck_assert_uint_eq(a.max_depth, b.max_depth);
#ifdef COWMAP_DEBUG
	cm_debug_check_trie(m, NULL);	/* every node, every count */
#endif
	cowmap_release(fresh);
}

/* A version whose path lent, retained late, and its successor keep the
 * trie they would have had without lending. */
START_TEST(lent_versions_keep_their_shape)
{
	struct scene sc;
	struct cowmap *held;

	scene_begin(&sc, row_key(3, 5), true);
	scene_flag(&sc);
	held = cowmap_retain(sc.old);
	cowmap_release(sc.old);
	check_shape(&sc.w, held, sc.old_model);
	check_shape(&sc.w, sc.next, sc.w.model);
	cowmap_release(sc.next);
	check_shape(&sc.w, held, sc.old_model);
	cowmap_release(held);
	scene_end(&sc);
}
END_TEST

/*
 * A retain that finds a version lent while another thread is giving its
 * slots back waits until that is done: going on at once, it would hold a
 * reference whose slots are not all counted yet, could leave its
 * critical section and then retain, outside any, a node a later update
 * lent.  Thread A retains the old version and is paused inside its
 * give-back (cm_test_lend_pause); thread B retains it meanwhile and must
 * not return until A is let go.
 */
static atomic_int hook_calls, a_paused, a_go, b_done;

static void pause_first_give_back(void)
{
	if (atomic_fetch_add(&hook_calls, 1) != 0)
		return;
	atomic_store(&a_paused, 1);
	while (!atomic_load(&a_go))
		sched_yield();
}

static void *retain_main(void *arg)
{
	struct cowmap **slot = arg;

	*slot = cowmap_retain(slot[1]);
	return NULL;
}

static void *retain_then_flag_main(void *arg)
{
	retain_main(arg);
	atomic_store(&b_done, 1);
	return NULL;
}

START_TEST(a_retain_waits_while_another_gives_back)
{
	struct scene sc;
	struct cowmap *a[2], *b[2];
	pthread_t ta, tb;

	scene_begin(&sc, row_key(1, 9), false);
	scene_flag(&sc);
	atomic_store(&hook_calls, 0);
	atomic_store(&a_paused, 0);
	atomic_store(&a_go, 0);
	atomic_store(&b_done, 0);
	cm_test_lend_pause(pause_first_give_back);
	a[1] = b[1] = sc.old;
	ck_assert_int_eq(pthread_create(&ta, NULL, retain_main, a), 0);
	while (!atomic_load(&a_paused))
		sched_yield();
	ck_assert_int_eq(pthread_create(&tb, NULL, retain_then_flag_main, b),
			 0);
	usleep(100 * 1000);

	int b_returned_early = atomic_load(&b_done);

	atomic_store(&a_go, 1);
	ck_assert_int_eq(pthread_join(ta, NULL), 0);
	ck_assert_int_eq(pthread_join(tb, NULL), 0);
	ck_assert_int_eq(b_returned_early, 0);	/* it waited for A */
	cm_test_lend_pause(NULL);

	cowmap_release(sc.old);
	cowmap_release(sc.next);
	check_map_matches_model(a[0], sc.old_model);
	check_map_matches_model(b[0], sc.old_model);
	check_alive(&sc.w, sc.old_model);
	cowmap_release(a[0]);
	cowmap_release(b[0]);
	scene_end(&sc);
}
END_TEST

static Suite *lend_suite(void)
{
	Suite *s = suite_create("lend");
	TCase *tc = tcase_create("lend");

	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(tc,
			    lent_path_given_back_to_an_intruder_before_the_flags,
			    NOBODY, NINTRUDERS);
	tcase_add_loop_test(tc,
			    lent_path_given_back_to_an_intruder_after_the_flags,
			    NOBODY, NINTRUDERS);
	tcase_add_loop_test(tc, late_return_counts_a_node_a_later_update_lent,
			    0, 6);
	tcase_add_test(tc, derived_copy_of_a_lent_node_counts_its_own);
	tcase_add_test(tc, lent_versions_keep_their_shape);
	tcase_add_test(tc, a_retain_waits_while_another_gives_back);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(lend_suite());
}
