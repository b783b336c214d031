/*
 * check_prefix.c - prefix tables against a reference model: exact get,
 * longest-prefix lookup (single and batched), iteration, diff, equality,
 * transactions and the route load, value ownership, bad input and the
 * hash-map calls' refusal, every width from 1 to 128 among the random
 * configurations.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "alloc.h"
#include "prefix_model.h"
#include "testutil.h"

/* ------------------------------------------------------------------ */
/* Random prefixes with heavy nesting                                  */
/* ------------------------------------------------------------------ */

#define NBASES 6

struct gen {
	struct tu_rng rng;
	unsigned width;
	pm_addr base[NBASES];
};

static pm_addr rand_addr(struct gen *g)
{
	pm_addr a = (pm_addr)tu_rng_next(&g->rng) << 64 | tu_rng_next(&g->rng);

	return pm_mask(a, g->width);
}

static void gen_init(struct gen *g, uint64_t seed, unsigned width)
{
	tu_rng_init(&g->rng, seed);
	g->width = width;
	for (int i = 0; i < NBASES; i++)
		g->base[i] = rand_addr(g);
}

/* Mostly lengths along a few base addresses, so prefixes nest deeply;
 * the default route, host routes and unrelated prefixes now and then. */
static void gen_prefix(struct gen *g, pm_addr *a, unsigned *len)
{
	unsigned w = g->width;
	uint64_t pick = tu_rng_below(&g->rng, 20);

	if (pick == 0) {
		*len = 0;
	} else if (pick == 1) {
		*len = w;
	} else {
		*len = (unsigned)tu_rng_below(&g->rng, w + 1);
	}
	if (tu_rng_below(&g->rng, 8) == 0) {
		*a = rand_addr(g);
	} else {
		*a = g->base[tu_rng_below(&g->rng, NBASES)];
		/* a bit flipped somewhere, sometimes inside the prefix */
		if (w > 0 && tu_rng_below(&g->rng, 2) == 0) {
			unsigned bit = (unsigned)tu_rng_below(&g->rng, w);

			*a ^= (pm_addr)1 << (127 - bit);
		}
	}
	/* garbage beyond the length: the table must ignore it */
	*a = pm_mask(*a | (pm_mask(rand_addr(g), w) & ~pm_mask(~(pm_addr)0, *len)),
		     w);
}

static pm_addr unit(unsigned width)
{
	return (pm_addr)1 << (128 - width);
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

#define MAXADDRS 4096

static void check_lookup_one(const struct cowmap *t, const struct pm_model *m,
			     pm_addr a)
{
	unsigned char bytes[16];
	void *v = (void *)1;
	unsigned len = 999;
	const struct pm_entry *want = pm_lookup(m, a);

	pm_store(bytes, a, m->width);
	int rc = cowmap_prefix_lookup(t, bytes, &v, &len);

	TU_REQUIRE(rc == (want != NULL), "lookup found %d, model %d", rc,
		   want != NULL);
	if (want != NULL) {
		TU_REQUIRE(v == want->value, "lookup value differs");
		TU_REQUIRE(len == want->len, "lookup length %u, model %u", len,
			   want->len);
	}
}

/* Addresses worth asking about: both ends of each prefix and their
 * neighbours outside, and random ones near the bases. */
static size_t edge_addrs(struct gen *g, const struct pm_model *m,
			 pm_addr *out, size_t cap)
{
	size_t k = 0;
	pm_addr one = unit(m->width);

	for (size_t i = 0; i < m->n && k + 4 <= cap; i++) {
		pm_addr first = m->e[i].addr;
		pm_addr last = first | (pm_mask(~(pm_addr)0, m->width) &
					~pm_mask(~(pm_addr)0, m->e[i].len));

		out[k++] = first;
		out[k++] = last;
		out[k++] = pm_mask(last + one, m->width);
		out[k++] = pm_mask(first - one, m->width);
	}
	while (k < cap && k < m->n * 4 + 64) {
		pm_addr a = g->base[tu_rng_below(&g->rng, NBASES)];

		if (tu_rng_below(&g->rng, 2))
			a ^= pm_mask(rand_addr(g), m->width) >>
			     tu_rng_below(&g->rng, m->width);
		out[k++] = pm_mask(a, m->width);
	}
	return k;
}

static void check_iteration(const struct cowmap *t, const struct pm_model *m)
{
	struct cowmap_iter it;
	unsigned char bytes[16];
	unsigned len;
	void *v;
	size_t seen = 0;
	bool *done = calloc(m->n + 1, sizeof(*done));

	cowmap_iter_init(&it, t);
	while (cowmap_prefix_iter_next(&it, bytes, &len, &v)) {
		pm_addr a = pm_load(bytes, m->width);
		struct pm_entry *e = pm_find(m, a, len);

		TU_REQUIRE(e != NULL, "iteration yields a prefix not stored");
		TU_REQUIRE(pm_mask(a, len) == a,
			   "iteration yields bits beyond the length");
		TU_REQUIRE(e->value == v, "iteration value differs");
		TU_REQUIRE(!done[e - m->e], "iteration repeats a prefix");
		/* everything covering it came before */
		for (size_t i = 0; i < m->n; i++)
			if (m->e[i].len < len &&
			    pm_mask(a, m->e[i].len) == m->e[i].addr)
				TU_REQUIRE(done[i],
					   "a prefix came before one covering it");
		done[e - m->e] = true;
		seen++;
	}
	TU_REQUIRE(seen == m->n, "iteration saw %zu of %zu", seen, m->n);
	free(done);
}

static void check_table(const struct cowmap *t, const struct pm_model *m,
			struct gen *g)
{
	static pm_addr addrs[MAXADDRS];
	static unsigned char packed[MAXADDRS * 16];
	static void *values[MAXADDRS];
	static unsigned lens[MAXADDRS];
	unsigned w = m->width, stride = (w + 7) / 8;
	struct cowmap_stats st;

	ck_assert_uint_eq(cowmap_size(t), m->n);
	ck_assert_uint_eq(cowmap_prefix_width(t), w);
	ck_assert_int_eq(cowmap_stats(t, &st), 0);
	ck_assert_uint_eq(st.entries, m->n);
	for (size_t i = 0; i < m->n; i++) {
		unsigned char bytes[16];
		void *v = NULL;

		/* garbage beyond the length is ignored */
		pm_store(bytes, m->e[i].addr | (pm_mask(~(pm_addr)0, w) &
						 ~pm_mask(~(pm_addr)0,
							  m->e[i].len) &
						 rand_addr(g)),
			 w);
		TU_REQUIRE(cowmap_prefix_get(t, bytes, m->e[i].len, &v) == 1,
			   "stored prefix /%u not found", m->e[i].len);
		TU_REQUIRE(v == m->e[i].value, "exact get value differs");
	}

	size_t n = edge_addrs(g, m, addrs, MAXADDRS);

	for (size_t i = 0; i < n; i++) {
		check_lookup_one(t, m, addrs[i]);
		pm_store(packed + i * stride, addrs[i], w);
	}

	size_t found = cowmap_prefix_lookup_many(t, n, packed, values, lens);
	size_t want_found = 0;

	for (size_t i = 0; i < n; i++) {
		const struct pm_entry *e = pm_lookup(m, addrs[i]);

		want_found += e != NULL;
		TU_REQUIRE(values[i] == (e ? e->value : NULL),
			   "lookup_many value %zu differs", i);
		TU_REQUIRE(lens[i] == (e ? e->len : 0),
			   "lookup_many length %zu differs", i);
	}
	ck_assert_uint_eq(found, want_found);
	check_iteration(t, m);
}

/* ------------------------------------------------------------------ */
/* Differential: persistent updates                                    */
/* ------------------------------------------------------------------ */

/*
 * A random test's table: its generator, its model and, when the table
 * owns its values, the log of their frees.  Values are tu_val(1),
 * tu_val(2), ... in the order they are stored.
 */
struct rig {
	struct gen g;
	struct pm_model m;
	struct tu_free_log log;
	struct cowmap_options o;
	bool owning;
	uint64_t next_val;
};

static struct cowmap *rig_init(struct rig *r, uint64_t seed, unsigned w,
			       bool owning)
{
	struct cowmap *t;

	tu_free_log_init(&r->log);
	r->o = tu_opts(0, NULL, &r->log);
	r->owning = owning;
	r->next_val = 1;
	gen_init(&r->g, seed, w);
	pm_init(&r->m, w);
	t = cowmap_prefix_new(w, owning ? &r->o : NULL);
	ck_assert_ptr_nonnull(t);
	return t;
}

/* After the last version is released: an owning table freed every value
 * it was given exactly once (also those a batch replaced at once and
 * those of aborted drafts), a table that does not own them none. */
static void rig_fini(struct rig *r)
{
	if (r->owning)
		check_values_freed(&r->log, 1, r->next_val, 1);
	else
		ck_assert_uint_eq(r->log.calls, 0);
	pm_fini(&r->m);
	tu_free_log_fini(&r->log);
}

/* A prefix the model holds, at random, in @a, @len and @bytes. */
static void pick_stored(struct gen *g, const struct pm_model *m, pm_addr *a,
			unsigned *len, unsigned char bytes[16])
{
	const struct pm_entry *e = &m->e[tu_rng_below(&g->rng, m->n)];

	*a = e->addr;
	*len = e->len;
	pm_store(bytes, *a, m->width);
}

static const unsigned widths[] = { 32, 128, 1, 7, 13, 24, 48, 64, 65, 96,
				   127, 6, 12, 36 };
#define NWIDTHS (sizeof(widths) / sizeof(widths[0]))
#define SEEDS 3

START_TEST(random_updates_agree_with_the_model)
{
	unsigned w = widths[_i % NWIDTHS];
	struct rig r;
	struct pm_model old_m;
	struct cowmap *t = rig_init(&r, 0x5eed0000u + (uint64_t)_i, w,
				    _i % 2 == 0);
	struct cowmap *old = NULL;

	old_m.e = NULL;
	for (int step = 0; step < 600; step++) {
		pm_addr a;
		unsigned len;
		unsigned char bytes[16];
		struct cowmap *next;

		gen_prefix(&r.g, &a, &len);
		pm_store(bytes, a, w);
		if (tu_rng_below(&r.g.rng, 3) == 0 && r.m.n > 0) {
			/* delete a stored prefix (uncovering shorter ones),
			 * or sometimes an absent one */
			if (tu_rng_below(&r.g.rng, 4) != 0)
				pick_stored(&r.g, &r.m, &a, &len, bytes);
			bool present = pm_del(&r.m, a, len, NULL);

			next = cowmap_prefix_del(t, bytes, len);
			ck_assert_ptr_nonnull(next);
			if (!present)
				ck_assert_ptr_eq(next, t);
		} else {
			void *v = tu_val(r.next_val++);

			pm_set(&r.m, a, len, v, NULL);
			next = cowmap_prefix_set(t, bytes, len, v);
			ck_assert_ptr_nonnull(next);
		}
		if (step % 50 == 0) {
			/* keep this version, to check later that it never
			 * changed */
			if (old != NULL) {
				check_table(old, &old_m, &r.g);
				cowmap_release(old);
				pm_fini(&old_m);
			}
			old = cowmap_retain(next);
			pm_copy(&old_m, &r.m);
		}
		cowmap_release(t);
		t = next;
		if (step % 37 == 0 || r.m.n < 20)
			check_table(t, &r.m, &r.g);
	}
	check_table(t, &r.m, &r.g);
	if (old != NULL) {
		check_table(old, &old_m, &r.g);
		cowmap_release(old);
		pm_fini(&old_m);
	}
	cowmap_release(t);
	rig_fini(&r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Differential: transactions and the route load                       */
/* ------------------------------------------------------------------ */

START_TEST(random_transactions_agree_with_the_model)
{
	unsigned w = widths[_i % NWIDTHS];
	struct rig r;
	struct pm_model base_m;
	struct cowmap *t = rig_init(&r, 0x7a000000u + (uint64_t)_i, w,
				    _i % 2 == 1);

	for (int round = 0; round < 12; round++) {
		struct cowmap_txn *x = cowmap_txn_begin(t);

		ck_assert_ptr_nonnull(x);
		pm_copy(&base_m, &r.m);
		for (int step = 0; step < 60; step++) {
			pm_addr a;
			unsigned len;
			unsigned char bytes[16];
			uint64_t op = tu_rng_below(&r.g.rng, 10);

			gen_prefix(&r.g, &a, &len);
			pm_store(bytes, a, w);
			if (op < 3 && r.m.n > 0) {
				pick_stored(&r.g, &r.m, &a, &len, bytes);

				bool present = pm_del(&r.m, a, len, NULL);

				ck_assert_int_eq(
					cowmap_txn_prefix_del(x, bytes, len),
					present);
			} else if (op < 5) {
				/* a batch, with duplicates inside it */
				struct cowmap_route batch[24];
				unsigned char ab[24][16];
				size_t k = 1 + tu_rng_below(&r.g.rng, 24);

				for (size_t j = 0; j < k; j++) {
					if (j > 0 &&
					    tu_rng_below(&r.g.rng, 4) == 0) {
						memcpy(ab[j], ab[j - 1], 16);
						batch[j].len = batch[j - 1].len;
					} else {
						gen_prefix(&r.g, &a, &len);
						pm_store(ab[j], a, w);
						batch[j].len = len;
					}
					batch[j].addr = ab[j];
					batch[j].value = tu_val(r.next_val++);
					pm_set(&r.m, pm_load(ab[j], w),
					       batch[j].len, batch[j].value,
					       NULL);
				}
				ck_assert_int_eq(
					cowmap_txn_prefix_set_many(x, k, batch),
					0);
			} else {
				void *v = tu_val(r.next_val++);

				pm_set(&r.m, a, len, v, NULL);
				ck_assert_int_eq(
					cowmap_txn_prefix_set(x, bytes, len, v),
					0);
			}
			ck_assert_uint_eq(cowmap_txn_size(x), r.m.n);
		}
		for (size_t i = 0; i < r.m.n; i++) {
			unsigned char bytes[16];
			void *v;

			pm_store(bytes, r.m.e[i].addr, w);
			ck_assert_int_eq(cowmap_txn_prefix_get(
						 x, bytes, r.m.e[i].len, &v),
					 1);
			ck_assert_ptr_eq(v, r.m.e[i].value);
		}
		if (round % 4 == 3) {
			cowmap_txn_abort(x);
			pm_fini(&r.m);
			r.m = base_m;
			check_table(t, &r.m, &r.g);
			continue;
		}

		struct cowmap *next = cowmap_txn_commit(x);

		ck_assert_ptr_nonnull(next);
		check_table(t, &base_m, &r.g);	/* the base is untouched */
		check_table(next, &r.m, &r.g);
		pm_fini(&base_m);
		cowmap_release(t);
		t = next;
	}
	cowmap_release(t);
	rig_fini(&r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Diff and equality                                                   */
/* ------------------------------------------------------------------ */

struct diff_seen {
	struct pm_model added, removed, changed_old, changed_new;
};

static int record(enum cowmap_change what, const void *addr, unsigned len,
		  void *old_value, void *new_value, void *ctx)
{
	struct diff_seen *d = ctx;
	unsigned w = d->added.width;
	pm_addr a = pm_load(addr, w);

	ck_assert(pm_mask(a, len) == a);
	switch (what) {
	case COWMAP_ADDED:
		ck_assert_ptr_null(old_value);
		ck_assert(!pm_set(&d->added, a, len, new_value, NULL));
		break;
	case COWMAP_REMOVED:
		ck_assert_ptr_null(new_value);
		ck_assert(!pm_set(&d->removed, a, len, old_value, NULL));
		break;
	case COWMAP_CHANGED:
		ck_assert_ptr_ne(old_value, new_value);
		ck_assert(!pm_set(&d->changed_old, a, len, old_value, NULL));
		pm_set(&d->changed_new, a, len, new_value, NULL);
		break;
	}
	return 0;
}

static void check_diff(const struct cowmap *x, const struct pm_model *mx,
		       const struct cowmap *y, const struct pm_model *my)
{
	struct diff_seen d;
	size_t changes = 0;

	pm_init(&d.added, mx->width);
	pm_init(&d.removed, mx->width);
	pm_init(&d.changed_old, mx->width);
	pm_init(&d.changed_new, mx->width);
	ck_assert_int_eq(cowmap_prefix_diff(x, y, record, &d), 0);
	for (size_t i = 0; i < mx->n; i++) {
		const struct pm_entry *e = &mx->e[i];
		const struct pm_entry *f = pm_find(my, e->addr, e->len);

		if (f == NULL) {
			ck_assert_ptr_nonnull(pm_find(&d.removed, e->addr, e->len));
			changes++;
		} else if (f->value != e->value) {
			ck_assert_ptr_eq(pm_find(&d.changed_old, e->addr, e->len)->value,
					 e->value);
			changes++;
		}
	}
	for (size_t i = 0; i < my->n; i++)
		if (pm_find(mx, my->e[i].addr, my->e[i].len) == NULL) {
			ck_assert_ptr_eq(pm_find(&d.added, my->e[i].addr,
						 my->e[i].len)->value,
					 my->e[i].value);
			changes++;
		}
	ck_assert_uint_eq(d.added.n + d.removed.n + d.changed_old.n, changes);
	ck_assert_int_eq(cowmap_equal(x, y, NULL, NULL), changes == 0);
	pm_fini(&d.added);
	pm_fini(&d.removed);
	pm_fini(&d.changed_old);
	pm_fini(&d.changed_new);
}

START_TEST(diff_reports_exactly_the_changed_prefixes)
{
	unsigned w = widths[_i % NWIDTHS];
	struct gen g;
	struct pm_model m[4];
	struct cowmap *v[4];
	uint64_t next_val = 1;

	gen_init(&g, 0xd1ff0000u + (uint64_t)_i, w);
	pm_init(&m[0], w);
	v[0] = cowmap_prefix_new(w, NULL);
	for (int k = 1; k < 4; k++) {
		pm_copy(&m[k], &m[k - 1]);
		v[k] = cowmap_retain(v[k - 1]);
		for (int step = 0; step < (k == 1 ? 200 : 15); step++) {
			pm_addr a;
			unsigned len;
			unsigned char bytes[16];
			struct cowmap *next;

			gen_prefix(&g, &a, &len);
			if (tu_rng_below(&g.rng, 3) == 0 && m[k].n > 0) {
				pick_stored(&g, &m[k], &a, &len, bytes);
				pm_del(&m[k], a, len, NULL);
				next = cowmap_prefix_del(v[k], bytes, len);
			} else {
				void *val = tu_val(next_val++);

				pm_store(bytes, a, w);
				pm_set(&m[k], a, len, val, NULL);
				next = cowmap_prefix_set(v[k], bytes, len, val);
			}
			cowmap_release(v[k]);
			v[k] = next;
		}
	}
	for (int x = 0; x < 4; x++)
		for (int y = 0; y < 4; y++)
			check_diff(v[x], &m[x], v[y], &m[y]);

	/* the same prefixes built in another order: equal, and diff empty */
	struct cowmap *same = cowmap_prefix_new(w, NULL);

	for (size_t i = m[3].n; i-- > 0;) {
		unsigned char bytes[16];
		struct cowmap *next;

		pm_store(bytes, m[3].e[i].addr, w);
		next = cowmap_prefix_set(same, bytes, m[3].e[i].len,
					 m[3].e[i].value);
		cowmap_release(same);
		same = next;
	}
	check_diff(same, &m[3], v[3], &m[3]);
	ck_assert_int_eq(cowmap_equal(same, v[3], NULL, NULL), 1);
	cowmap_release(same);
	for (int k = 0; k < 4; k++) {
		cowmap_release(v[k]);
		pm_fini(&m[k]);
	}
}
END_TEST

static int always_equal(const void *x, const void *y, void *ctx)
{
	(void)x, (void)y, (void)ctx;
	return 1;
}

static int stop_with_7(enum cowmap_change what, const void *addr,
		       unsigned len, void *o, void *n, void *ctx)
{
	(void)what, (void)addr, (void)len, (void)o, (void)n;
	++*(int *)ctx;
	return 7;
}

START_TEST(equal_asks_value_eq_and_diff_stops_when_told)
{
	unsigned char a[4] = { 10, 0, 0, 0 };
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	struct cowmap *x = cowmap_prefix_set(t, a, 8, tu_val(1));
	struct cowmap *y = cowmap_prefix_set(t, a, 8, tu_val(2));
	struct cowmap *z = cowmap_prefix_set(x, a, 16, tu_val(3));
	struct cowmap *six = cowmap_prefix_new(64, NULL);
	struct cowmap *map = cowmap_new(NULL);
	int calls = 0;

	ck_assert_int_eq(cowmap_equal(x, y, NULL, NULL), 0);
	ck_assert_int_eq(cowmap_equal(x, y, always_equal, NULL), 1);
	ck_assert_int_eq(cowmap_equal(t, six, NULL, NULL), 0);
	ck_assert_int_eq(cowmap_equal(t, map, NULL, NULL), 0);
	ck_assert_int_eq(cowmap_prefix_diff(t, z, stop_with_7, &calls), 7);
	ck_assert_int_eq(calls, 1);
	ck_assert_int_eq(cowmap_prefix_diff(t, six, stop_with_7, &calls),
			 -EINVAL);
	ck_assert_int_eq(cowmap_prefix_diff(t, map, stop_with_7, &calls),
			 -EINVAL);
	ck_assert_int_eq(cowmap_prefix_diff(t, z, NULL, NULL), -EINVAL);
	cowmap_release(t);
	cowmap_release(x);
	cowmap_release(y);
	cowmap_release(z);
	cowmap_release(six);
	cowmap_release(map);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Semantics in small                                                  */
/* ------------------------------------------------------------------ */

static struct cowmap *set4(struct cowmap *t, unsigned a, unsigned b,
			   unsigned c, unsigned d, unsigned len, void *v)
{
	unsigned char addr[4] = { (unsigned char)a, (unsigned char)b,
				  (unsigned char)c, (unsigned char)d };
	struct cowmap *next = cowmap_prefix_set(t, addr, len, v);

	ck_assert_ptr_nonnull(next);
	cowmap_release(t);
	return next;
}

static int lookup4(const struct cowmap *t, unsigned a, unsigned b, unsigned c,
		   unsigned d, void **v, unsigned *len)
{
	unsigned char addr[4] = { (unsigned char)a, (unsigned char)b,
				  (unsigned char)c, (unsigned char)d };

	return cowmap_prefix_lookup(t, addr, v, len);
}

START_TEST(longest_match_wins_and_delete_uncovers_the_shorter)
{
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	void *v;
	unsigned len;

	ck_assert_int_eq(lookup4(t, 10, 1, 2, 3, &v, &len), 0);
	t = set4(t, 0, 0, 0, 0, 0, tu_val(0));
	t = set4(t, 10, 0, 0, 0, 8, tu_val(8));
	t = set4(t, 10, 1, 0, 0, 16, tu_val(16));
	t = set4(t, 10, 1, 2, 0, 24, tu_val(24));
	t = set4(t, 10, 1, 2, 3, 32, tu_val(32));
	ck_assert_int_eq(lookup4(t, 10, 1, 2, 3, &v, &len), 1);
	ck_assert_ptr_eq(v, tu_val(32));
	ck_assert_uint_eq(len, 32);
	ck_assert_int_eq(lookup4(t, 10, 1, 2, 4, &v, &len), 1);
	ck_assert_uint_eq(len, 24);
	ck_assert_int_eq(lookup4(t, 10, 1, 3, 4, &v, &len), 1);
	ck_assert_uint_eq(len, 16);
	ck_assert_int_eq(lookup4(t, 11, 1, 3, 4, &v, &len), 1);
	ck_assert_uint_eq(len, 0);
	ck_assert_ptr_eq(v, tu_val(0));

	unsigned char a24[4] = { 10, 1, 2, 0 };
	struct cowmap *d = cowmap_prefix_del(t, a24, 24);

	ck_assert_int_eq(lookup4(d, 10, 1, 2, 4, &v, &len), 1);
	ck_assert_uint_eq(len, 16);
	ck_assert_int_eq(lookup4(d, 10, 1, 2, 3, &v, &len), 1);
	ck_assert_uint_eq(len, 32);
	/* the old version still answers /24 */
	ck_assert_int_eq(lookup4(t, 10, 1, 2, 4, &v, &len), 1);
	ck_assert_uint_eq(len, 24);
	cowmap_release(d);
	cowmap_release(t);
}
END_TEST

/*
 * IPv6: one chain of prefixes from /0 to /128, every fourth length, and
 * a batch of 37 addresses (three groups) that leave the chain at every
 * depth, so that lanes stop in every round, from the root to the deepest
 * node (depth 21), and answer from nodes above the last one they read as
 * well as from it.  The batch, which asks for its values only at the end
 * in wide tables, must answer as the single look-up does.
 */
START_TEST(wide_batch_answers_as_single_lookups_at_every_depth)
{
	unsigned char base[16], addrs[37][16];
	struct cowmap *t = cowmap_prefix_new(128, NULL);

	for (unsigned i = 0; i < 16; i++)
		base[i] = (unsigned char)(0x20 + 7 * i);
	for (unsigned len = 0; len <= 128; len += 4) {
		struct cowmap *next = cowmap_prefix_set(t, base, len,
							tu_val(len + 1));

		ck_assert_ptr_nonnull(next);
		cowmap_release(t);
		t = next;
	}
	for (unsigned k = 0; k < 37; k++) {
		/* Flip bit k * 128 / 37 of the chain's address: the answer
		 * is the longest chain prefix above that bit. */
		unsigned bit = k * 128 / 37;

		memcpy(addrs[k], base, 16);
		addrs[k][bit / 8] ^= (unsigned char)(0x80 >> (bit % 8));
	}
	void *values[37];
	unsigned lens[37];
	size_t found = cowmap_prefix_lookup_many(t, 37, addrs, values, lens);

	ck_assert_uint_eq(found, 37);
	for (unsigned k = 0; k < 37; k++) {
		void *v = NULL;
		unsigned len = 0, bit = k * 128 / 37;

		ck_assert_int_eq(cowmap_prefix_lookup(t, addrs[k], &v, &len), 1);
		ck_assert_uint_eq(len, bit / 4 * 4);
		ck_assert_ptr_eq(v, tu_val(len + 1));
		ck_assert_ptr_eq(values[k], v);
		ck_assert_uint_eq(lens[k], len);
	}
	cowmap_release(t);
}
END_TEST

START_TEST(bits_beyond_the_length_are_ignored)
{
	unsigned char dirty[4] = { 10, 1, 2, 3 }, clean[4] = { 10, 0, 0, 0 };
	unsigned char got[4];
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	struct cowmap *u = cowmap_prefix_set(t, dirty, 8, tu_val(1));
	struct cowmap_iter it;
	unsigned len;
	void *v;

	ck_assert_int_eq(cowmap_prefix_get(u, clean, 8, &v), 1);
	ck_assert_ptr_eq(v, tu_val(1));
	ck_assert_int_eq(cowmap_prefix_get(u, dirty, 8, &v), 1);
	cowmap_iter_init(&it, u);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, got, &len, &v), 1);
	ck_assert_mem_eq(got, clean, 4);
	ck_assert_uint_eq(len, 8);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, got, &len, &v), 0);

	/* the same prefix: setting it again replaces, deleting it empties */
	struct cowmap *w = cowmap_prefix_set(u, clean, 8, tu_val(2));

	ck_assert_uint_eq(cowmap_size(w), 1);
	struct cowmap *e = cowmap_prefix_del(w, dirty, 8);

	ck_assert_uint_eq(cowmap_size(e), 0);
	ck_assert_int_eq(cowmap_equal(e, t, NULL, NULL), 1);

	/* a width that is not a multiple of 8: the unused bits are ignored */
	struct cowmap *n12 = cowmap_prefix_new(12, NULL);
	unsigned char x[2] = { 0xab, 0xcf }, y[2] = { 0xab, 0xc0 };
	struct cowmap *n12b = cowmap_prefix_set(n12, x, 12, tu_val(3));

	ck_assert_int_eq(cowmap_prefix_get(n12b, y, 12, &v), 1);
	ck_assert_int_eq(cowmap_prefix_lookup(n12b, x, &v, &len), 1);
	ck_assert_uint_eq(len, 12);
	cowmap_release(n12);
	cowmap_release(n12b);
	cowmap_release(t);
	cowmap_release(u);
	cowmap_release(w);
	cowmap_release(e);
}
END_TEST

START_TEST(set_of_the_same_value_returns_the_version_itself)
{
	unsigned char a[16] = { 0x20, 0x01, 0x0d, 0xb8 };
	struct cowmap *t = cowmap_prefix_new(128, NULL);
	struct cowmap *u = cowmap_prefix_set(t, a, 32, tu_val(1));
	struct cowmap *same = cowmap_prefix_set(u, a, 32, tu_val(1));
	struct cowmap *gone = cowmap_prefix_del(u, a, 48);

	ck_assert_ptr_eq(same, u);
	ck_assert_ptr_eq(gone, u);
	cowmap_release(same);
	cowmap_release(gone);
	cowmap_release(u);
	cowmap_release(t);
}
END_TEST

START_TEST(bad_input_is_einval_and_changes_nothing)
{
	unsigned char a[16] = { 10 };
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	struct cowmap *t1 = cowmap_prefix_set(t, a, 8, tu_val(1));
	struct cowmap *map = cowmap_new(NULL);
	struct cowmap_iter it;
	void *v = NULL;
	unsigned len;

	errno = 0;
	ck_assert_ptr_null(cowmap_prefix_new(0, NULL));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(cowmap_prefix_new(129, NULL));
	errno = 0;
	ck_assert_ptr_null(cowmap_prefix_set(t1, a, 33, tu_val(2)));
	ck_assert_int_eq(errno, EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_prefix_set(t1, NULL, 8, tu_val(2)));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(cowmap_prefix_set(NULL, a, 8, tu_val(2)));
	ck_assert_ptr_null(cowmap_prefix_del(t1, a, 33));
	ck_assert_ptr_null(cowmap_prefix_del(t1, NULL, 0));
	ck_assert_int_eq(cowmap_prefix_get(t1, a, 33, &v), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_get(t1, NULL, 8, &v), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_lookup(t1, NULL, &v, &len), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_lookup(NULL, a, &v, &len), -EINVAL);
	errno = 0;
	ck_assert_uint_eq(cowmap_prefix_lookup_many(t1, 1, NULL, &v, NULL), 0);
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_uint_eq(cowmap_prefix_lookup_many(t1, 0, NULL, NULL, NULL), 0);
	ck_assert_uint_eq(cowmap_size(t1), 1);

	/* a hash map is not a prefix table, nor the other way round */
	ck_assert_uint_eq(cowmap_prefix_width(map), 0);
	ck_assert_ptr_null(cowmap_prefix_set(map, a, 8, tu_val(2)));
	ck_assert_int_eq(cowmap_prefix_lookup(map, a, &v, &len), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_get(map, a, 8, &v), -EINVAL);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(t1, "k", 1, tu_val(2)));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(cowmap_del(t1, "k", 1));
	ck_assert_int_eq(cowmap_get(t1, "k", 1, &v), -EINVAL);

	const void *keys[1] = { "k" };
	size_t lens[1] = { 1 };

	ck_assert_uint_eq(cowmap_get_many(t1, 1, keys, lens, &v), 0);
	cowmap_iter_init(&it, t1);
	ck_assert_int_eq(cowmap_iter_next(&it, NULL, NULL, NULL), 0);
	cowmap_iter_init(&it, map);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, a, &len, &v), 0);
	ck_assert_int_eq(cowmap_diff(t1, t1, NULL, NULL), -EINVAL);

	struct cowmap_txn *x = cowmap_txn_begin(t1);

	ck_assert_int_eq(cowmap_txn_set(x, "k", 1, tu_val(3)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_del(x, "k", 1), -EINVAL);
	ck_assert_int_eq(cowmap_txn_get(x, "k", 1, &v), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_set(x, a, 33, tu_val(3)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_del(x, NULL, 3), -EINVAL);

	struct cowmap_route bad[2] = { { a, 16, tu_val(4) }, { a, 40, tu_val(5) } };

	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, 2, bad), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, 2, NULL), -EINVAL);
	ck_assert_uint_eq(cowmap_txn_size(x), 1);

	struct cowmap *same = cowmap_txn_commit(x);

	ck_assert_ptr_eq(same, t1);
	cowmap_release(same);

	x = cowmap_txn_begin(map);
	ck_assert_int_eq(cowmap_txn_prefix_set(x, a, 8, tu_val(3)), -EINVAL);
	cowmap_txn_abort(x);
	cowmap_release(map);
	cowmap_release(t);
	cowmap_release(t1);
}
END_TEST

START_TEST(every_prefix_call_survives_null_arguments)
{
	unsigned char a[4] = { 10 };
	void *v;
	unsigned len;
	struct cowmap_iter it;
	struct cowmap_route r = { a, 8, tu_val(1) };

	ck_assert_ptr_null(cowmap_prefix_set(NULL, a, 8, tu_val(1)));
	ck_assert_ptr_null(cowmap_prefix_del(NULL, a, 8));
	ck_assert_int_eq(cowmap_prefix_get(NULL, a, 8, &v), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_lookup(NULL, a, &v, &len), -EINVAL);
	ck_assert_uint_eq(cowmap_prefix_lookup_many(NULL, 1, a, &v, &len), 0);
	ck_assert_uint_eq(cowmap_prefix_width(NULL), 0);
	ck_assert_int_eq(cowmap_prefix_diff(NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_prefix_iter_next(NULL, a, &len, &v), 0);
	cowmap_iter_init(&it, NULL);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, a, &len, &v), 0);
	ck_assert_int_eq(cowmap_txn_prefix_set(NULL, a, 8, tu_val(1)), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_del(NULL, a, 8), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_get(NULL, a, 8, &v), -EINVAL);
	ck_assert_int_eq(cowmap_txn_prefix_set_many(NULL, 1, &r), -EINVAL);
	ck_assert_int_eq(cowmap_cell_prefix_set(NULL, a, 8, tu_val(1)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_prefix_del(NULL, a, 8), -EINVAL);

	/* and NULL out-parameters are allowed where documented */
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	struct cowmap *u = cowmap_prefix_set(t, a, 8, tu_val(1));

	ck_assert_int_eq(cowmap_prefix_get(u, a, 8, NULL), 1);
	ck_assert_int_eq(cowmap_prefix_lookup(u, a, NULL, NULL), 1);
	ck_assert_uint_eq(cowmap_prefix_lookup_many(u, 1, a, &v, NULL), 1);
	cowmap_iter_init(&it, u);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, NULL, NULL, NULL), 1);
	ck_assert_int_eq(cowmap_prefix_iter_next(&it, NULL, NULL, NULL), 0);
	cowmap_release(u);
	cowmap_release(t);
}
END_TEST

START_TEST(max_entries_refuses_new_prefixes_with_enospc)
{
	struct cowmap_options o = { .max_entries = 2 };
	unsigned char a[4] = { 10, 1, 2, 3 };
	struct cowmap *t = cowmap_prefix_new(32, &o);

	t = set4(t, 10, 0, 0, 0, 8, tu_val(1));
	t = set4(t, 10, 1, 0, 0, 16, tu_val(2));
	errno = 0;
	ck_assert_ptr_null(cowmap_prefix_set(t, a, 24, tu_val(3)));
	ck_assert_int_eq(errno, ENOSPC);
	t = set4(t, 10, 1, 0, 0, 16, tu_val(4));	/* replacing is fine */

	struct cowmap_txn *x = cowmap_txn_begin(t);
	struct cowmap_route r[2] = { { a, 24, tu_val(5) }, { a, 32, tu_val(6) } };

	ck_assert_int_eq(cowmap_txn_prefix_set(x, a, 24, tu_val(5)), -ENOSPC);
	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, 2, r), -ENOSPC);
	ck_assert_uint_eq(cowmap_txn_size(x), 2);
	ck_assert_int_eq(cowmap_txn_prefix_del(x, a, 8), 1);
	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, 1, r), 0);
	ck_assert_uint_eq(cowmap_txn_size(x), 2);
	struct cowmap *u = cowmap_txn_commit(x);

	ck_assert_uint_eq(cowmap_size(u), 2);
	cowmap_release(u);
	cowmap_release(t);
}
END_TEST

START_TEST(route_load_frees_replaced_values_once_and_keeps_the_last)
{
	struct tu_free_log log;
	struct cowmap_options o = tu_opts(0, NULL, &log);
	unsigned char a[4] = { 192, 168, 0, 0 };

	tu_free_log_init(&log);

	struct cowmap *t = cowmap_prefix_new(32, &o);
	struct cowmap_txn *x = cowmap_txn_begin(t);
	/* 1 replaced by 2, 2 by 1 again: 2 is freed, 1 stays; 3 stays */
	struct cowmap_route r[4] = { { a, 16, tu_val(1) },
				     { a, 16, tu_val(2) },
				     { a, 16, tu_val(1) },
				     { a, 24, tu_val(3) } };

	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, 4, r), 0);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(2)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 0);

	struct cowmap *u = cowmap_txn_commit(x);

	ck_assert_uint_eq(cowmap_size(u), 2);
	ck_assert_uint_eq(log.calls, 1);
	cowmap_release(t);
	cowmap_release(u);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(3)), 1);
	ck_assert_uint_eq(log.calls, 3);
	tu_free_log_fini(&log);
}
END_TEST

START_TEST(stats_count_prefixes_nodes_and_bytes)
{
	struct cowmap *t = cowmap_prefix_new(32, NULL);
	struct cowmap_stats st;

	ck_assert_int_eq(cowmap_stats(t, &st), 0);
	ck_assert_uint_eq(st.entries, 0);
	ck_assert_uint_eq(st.nodes, 1);
	t = set4(t, 10, 1, 2, 3, 32, tu_val(1));
	ck_assert_int_eq(cowmap_stats(t, &st), 0);
	ck_assert_uint_eq(st.entries, 1);
	ck_assert_uint_eq(st.nodes, 6);	/* depths 0..5 */
	ck_assert_uint_eq(st.max_depth, 5);
	ck_assert_uint_gt(st.bytes, 6 * 40);
	t = set4(t, 10, 1, 2, 0, 24, tu_val(2));
	ck_assert_int_eq(cowmap_stats(t, &st), 0);
	ck_assert_uint_eq(st.nodes, 6);	/* /24 ends the depth-3 node */
	cowmap_release(t);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cells                                                               */
/* ------------------------------------------------------------------ */

static struct cowmap *set_route(const struct cowmap *cur, void *arg)
{
	return cowmap_prefix_set(cur, arg, 24, tu_val(9));
}

START_TEST(cells_publish_prefix_tables_with_the_map_calls)
{
	struct tu_free_log log;
	struct cowmap_options o = tu_opts(0, NULL, &log);
	unsigned char a[4] = { 10, 1, 2, 0 };
	struct cowmap_cell_stats cs;
	void *v;
	unsigned len;

	tu_free_log_init(&log);
	urcu_memb_register_thread();

	struct cowmap_cell *c = cowmap_cell_new(cowmap_prefix_new(32, &o), NULL);

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(cowmap_cell_prefix_set(c, a, 16, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_cell_prefix_set(c, a, 16, tu_val(1)), 0);
	ck_assert_int_eq(cowmap_cell_update(c, set_route, a), 0);
	ck_assert_int_eq(cowmap_cell_prefix_set(c, a, 40, tu_val(2)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_set(c, "k", 1, tu_val(3)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_del(c, "k", 1), -EINVAL);

	urcu_memb_read_lock();
	const struct cowmap *cur = cowmap_cell_load(c);

	ck_assert_int_eq(cowmap_prefix_lookup(cur, a, &v, &len), 1);
	ck_assert_uint_eq(len, 24);
	urcu_memb_read_unlock();

	struct cowmap *snap = cowmap_cell_snapshot(c);

	/* Inside a read-side section, so that the version the delete
	 * retires cannot pass its grace period before the stats are read. */
	urcu_memb_read_lock();
	ck_assert_int_eq(cowmap_cell_prefix_del(c, a, 24), 1);
	ck_assert_int_eq(cowmap_cell_prefix_del(c, a, 24), 0);
	ck_assert_int_eq(cowmap_cell_stats(c, &cs), 0);
	urcu_memb_read_unlock();
	ck_assert_uint_eq(cs.published, 3);
	ck_assert_uint_gt(cs.pending_versions, 0);
	ck_assert_int_eq(cowmap_prefix_lookup(snap, a, &v, &len), 1);
	ck_assert_uint_eq(len, 24);
	ck_assert_int_eq(cowmap_cell_publish(c, cowmap_retain(snap)), 0);
	ck_assert_int_eq(cowmap_cell_barrier(c), 0);
	ck_assert_uint_eq(log.calls, 0);	/* both values still held */
	cowmap_release(snap);
	cowmap_cell_free(c);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(1)), 1);
	ck_assert_uint_eq(tu_free_log_count(&log, tu_val(9)), 1);
	ck_assert_uint_eq(log.calls, 2);

	/* a hash map's cell refuses prefix writes */
	c = cowmap_cell_new(cowmap_new(NULL), NULL);
	ck_assert_int_eq(cowmap_cell_prefix_set(c, a, 8, tu_val(1)), -EINVAL);
	ck_assert_int_eq(cowmap_cell_prefix_del(c, a, 8), -EINVAL);
	cowmap_cell_free(c);
	urcu_memb_unregister_thread();
	tu_free_log_fini(&log);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *prefix_suite(void);

Suite *prefix_suite(void)
{
	Suite *s = suite_create("prefix");
	TCase *tc = tcase_create("semantics");
	TCase *tr = tcase_create("differential");

	tcase_add_test(tc, longest_match_wins_and_delete_uncovers_the_shorter);
	tcase_add_test(tc, wide_batch_answers_as_single_lookups_at_every_depth);
	tcase_add_test(tc, bits_beyond_the_length_are_ignored);
	tcase_add_test(tc, set_of_the_same_value_returns_the_version_itself);
	tcase_add_test(tc, bad_input_is_einval_and_changes_nothing);
	tcase_add_test(tc, every_prefix_call_survives_null_arguments);
	tcase_add_test(tc, max_entries_refuses_new_prefixes_with_enospc);
	tcase_add_test(tc, route_load_frees_replaced_values_once_and_keeps_the_last);
	tcase_add_test(tc, stats_count_prefixes_nodes_and_bytes);
	tcase_add_test(tc, equal_asks_value_eq_and_diff_stops_when_told);
	tcase_add_test(tc, cells_publish_prefix_tables_with_the_map_calls);
	suite_add_tcase(s, tc);

	tcase_set_timeout(tr, 600);
	tcase_add_loop_test(tr, random_updates_agree_with_the_model, 0,
			    (int)(NWIDTHS * SEEDS));
	tcase_add_loop_test(tr, random_transactions_agree_with_the_model, 0,
			    (int)(NWIDTHS * SEEDS));
	tcase_add_loop_test(tr, diff_reports_exactly_the_changed_prefixes, 0,
			    (int)NWIDTHS);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	return tu_run_suite(prefix_suite());
}
