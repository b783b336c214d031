/*
 * check_diff.c - cowmap_diff and cowmap_equal against the reference model:
 * random pairs of versions of one family (ancestors, descendants and
 * siblings, derived by set/del and by transactions), versions built
 * independently from the same keys (same seed: structural comparison;
 * different seeds or hash functions: the key-by-key fallback), full and
 * heavy hash collisions, early stop, value_eq, trivial cases and argument
 * checking.
 *
 * The expected diff is computed from the two models: ADDED for keys only
 * in "to", REMOVED for keys only in "from", CHANGED when both hold the
 * key with different value pointers.  The callback's reports are compared
 * with it as sets: every differing key exactly once, with the right kind
 * and values, and nothing else.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Seconds per test: generous, so a loaded machine or a sanitizer build
 * does not turn slowness into failure. */
#define TIMEOUT 120

typedef uint64_t hash_fn(const void *, size_t, uint64_t, void *);

Suite *diff_suite(void);

/* ------------------------------------------------------------------ */
/* Recording and checking diffs                                        */
/* ------------------------------------------------------------------ */

struct report {
	enum cowmap_change what;
	struct tu_key key;
	void *old_value, *new_value;
};

struct recorder {
	struct report *r;
	size_t n, cap;
	size_t stop_after; /* 0 = never stop */
	int stop_ret;
};

static void recorder_init(struct recorder *rec)
{
	memset(rec, 0, sizeof(*rec));
}

static void recorder_fini(struct recorder *rec)
{
	free(rec->r);
	memset(rec, 0, sizeof(*rec));
}

static void report_push(struct report **arr, size_t *n, size_t *cap,
			enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value)
{
	struct report *r;

	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 64;
		*arr = realloc(*arr, *cap * sizeof(**arr));
		ck_assert_ptr_nonnull(*arr);
	}
	r = &(*arr)[(*n)++];
	r->what = what;
	r->key.len = len;
	if (len)
		memcpy(r->key.bytes, key, len);
	r->old_value = old_value;
	r->new_value = new_value;
}

static int record_fn(enum cowmap_change what, const void *key, size_t len,
		     void *old_value, void *new_value, void *ctx)
{
	struct recorder *rec = ctx;

	TU_REQUIRE(what == COWMAP_ADDED || what == COWMAP_REMOVED ||
			   what == COWMAP_CHANGED,
		   "diff reported an unknown change kind %d", (int)what);
	TU_REQUIRE(len <= TU_KEY_MAX, "diff reported a key of length %zu",
		   len);
	TU_REQUIRE(len == 0 || key != NULL,
		   "diff reported a NULL key of length %zu", len);
	report_push(&rec->r, &rec->n, &rec->cap, what, key, len, old_value,
		    new_value);
	if (rec->stop_after && rec->n == rec->stop_after)
		return rec->stop_ret;
	return 0;
}

/* The differences from @from to @to, as the models see them. */
static struct report *expected_diff(const struct tu_model *from,
				    const struct tu_model *to, size_t *count)
{
	struct report *arr = NULL;
	size_t n = 0, cap = 0, pos = 0, len;
	const void *key;
	void *v, *w;

	while (tu_model_next(from, &pos, &key, &len, &v)) {
		if (!tu_model_get(to, key, len, &w))
			report_push(&arr, &n, &cap, COWMAP_REMOVED, key, len, v,
				    NULL);
		else if (v != w)
			report_push(&arr, &n, &cap, COWMAP_CHANGED, key, len, v,
				    w);
	}
	pos = 0;
	while (tu_model_next(to, &pos, &key, &len, &w)) {
		if (!tu_model_get(from, key, len, NULL))
			report_push(&arr, &n, &cap, COWMAP_ADDED, key, len,
				    NULL, w);
	}
	*count = n;
	return arr;
}

static const char *kind_name(enum cowmap_change what)
{
	switch (what) {
	case COWMAP_ADDED:
		return "ADDED";
	case COWMAP_REMOVED:
		return "REMOVED";
	case COWMAP_CHANGED:
		return "CHANGED";
	}
	return "?";
}

/* @got (the callback's reports) is exactly @want, as a set. */
static void check_reports(const struct report *got, size_t ngot,
			  const struct report *want, size_t nwant,
			  const char *what)
{
	struct tu_model *index = tu_model_new();
	char *seen = calloc(nwant + 1, 1);

	ck_assert_ptr_nonnull(seen);
	for (size_t i = 0; i < nwant; i++)
		tu_model_set(index, want[i].key.bytes, want[i].key.len,
			     (void *)(uintptr_t)(i + 1), NULL);
	for (size_t i = 0; i < ngot; i++) {
		const struct report *g = &got[i];
		void *slot = NULL;
		size_t j;

		TU_REQUIRE(tu_model_get(index, g->key.bytes, g->key.len,
					&slot),
			   "%s: %s reported for key (len %zu, id %llu) that "
			   "does not differ",
			   what, kind_name(g->what), g->key.len,
			   (unsigned long long)tu_key_id(g->key.bytes,
							 g->key.len));
		j = (size_t)(uintptr_t)slot - 1;
		TU_REQUIRE(!seen[j],
			   "%s: key (len %zu, id %llu) reported twice", what,
			   g->key.len,
			   (unsigned long long)tu_key_id(g->key.bytes,
							 g->key.len));
		seen[j] = 1;
		TU_REQUIRE(g->what == want[j].what,
			   "%s: key (len %zu, id %llu) reported %s, expected "
			   "%s",
			   what, g->key.len,
			   (unsigned long long)tu_key_id(g->key.bytes,
							 g->key.len),
			   kind_name(g->what), kind_name(want[j].what));
		TU_REQUIRE(g->old_value == want[j].old_value &&
				   g->new_value == want[j].new_value,
			   "%s: key (len %zu, id %llu) %s: values %p -> %p, "
			   "expected %p -> %p",
			   what, g->key.len,
			   (unsigned long long)tu_key_id(g->key.bytes,
							 g->key.len),
			   kind_name(g->what), g->old_value, g->new_value,
			   want[j].old_value, want[j].new_value);
	}
	TU_REQUIRE(ngot == nwant, "%s: %zu changes reported, expected %zu",
		   what, ngot, nwant);
	free(seen);
	tu_model_free(index);
}

/* cowmap_diff(@from, @to) reports exactly what the models differ by. */
static size_t check_diff_one_way(const struct cowmap *from,
				 const struct tu_model *mfrom,
				 const struct cowmap *to,
				 const struct tu_model *mto, const char *what)
{
	struct recorder rec;
	struct report *want;
	size_t nwant;
	int rc;

	recorder_init(&rec);
	want = expected_diff(mfrom, mto, &nwant);
	rc = cowmap_diff(from, to, record_fn, &rec);
	TU_REQUIRE(rc == 0, "%s: cowmap_diff returned %d", what, rc);
	check_reports(rec.r, rec.n, want, nwant, what);
	free(want);
	recorder_fini(&rec);
	return nwant;
}

/* Both directions of diff, and equal both ways, agree with the models. */
static void check_pair(const struct cowmap *a, const struct tu_model *ma,
		       const struct cowmap *b, const struct tu_model *mb,
		       const char *what)
{
	size_t n1, n2;
	int eq1, eq2;

	TU_REQUIRE(cowmap_size(a) == tu_model_size(ma) &&
			   cowmap_size(b) == tu_model_size(mb),
		   "%s: map sizes %zu/%zu disagree with the models %zu/%zu",
		   what, cowmap_size(a), cowmap_size(b), tu_model_size(ma),
		   tu_model_size(mb));
	n1 = check_diff_one_way(a, ma, b, mb, what);
	n2 = check_diff_one_way(b, mb, a, ma, what);
	TU_REQUIRE(n1 == n2, "%s: model diffs are not symmetric", what);
	eq1 = cowmap_equal(a, b, NULL, NULL);
	eq2 = cowmap_equal(b, a, NULL, NULL);
	TU_REQUIRE(eq1 == (n1 == 0),
		   "%s: cowmap_equal(a, b) = %d with %zu differences", what,
		   eq1, n1);
	TU_REQUIRE(eq2 == (n1 == 0),
		   "%s: cowmap_equal(b, a) = %d with %zu differences", what,
		   eq2, n1);
}

/* ------------------------------------------------------------------ */
/* Random pairs of versions from one family                            */
/* ------------------------------------------------------------------ */

struct family_config {
	const char *name;
	uint64_t seed;
	hash_fn *hash;
	size_t lens[4];
	size_t nlens;
	uint64_t universe;
	int iterations;
	int max_k;
};

#define POOL 4
/* Each configuration runs with this many seeds. */
#define REPEATS 3

struct slot {
	struct cowmap *map;
	struct tu_model *model;
};

static uint64_t pick_k(struct tu_rng *r, int max_k)
{
	uint64_t c = tu_rng_below(r, 10);

	if (c == 0)
		return 0;
	if (c < 5)
		return 1 + tu_rng_below(r, 8);
	return tu_rng_below(r, (uint64_t)max_k + 1);
}

/*
 * Derive a new version from @src by @k random edits (through cowmap_set /
 * cowmap_del, or a transaction when @use_txn).  Edits: set to a fresh
 * value, set back to the value some pool version holds, set to the value
 * already there (a no-op), delete.
 */
static struct slot derive(const struct slot *src, const struct slot *pool,
			  struct tu_rng *r, const struct family_config *c,
			  uint64_t k, int use_txn, uint64_t *next_val)
{
	struct slot out;
	struct cowmap_txn *t = NULL;
	struct tu_key key;

	out.model = tu_model_copy(src->model);
	out.map = cowmap_retain(src->map);
	ck_assert_ptr_nonnull(out.map);
	if (use_txn) {
		t = cowmap_txn_begin(src->map);
		ck_assert_ptr_nonnull(t);
	}
	for (uint64_t i = 0; i < k; i++) {
		uint64_t op = tu_rng_below(r, 100);
		void *v = NULL;
		int is_del = 0;

		tu_key_pick(&key, r, c->lens, c->nlens, c->universe);
		if (op < 45) {
			v = tu_val((*next_val)++);
		} else if (op < 55) {
			const struct slot *p = &pool[tu_rng_below(r, POOL)];

			if (!p->model ||
			    !tu_model_get(p->model, key.bytes, key.len, &v))
				v = tu_val((*next_val)++);
		} else if (op < 65) {
			if (!tu_model_get(out.model, key.bytes, key.len, &v))
				v = tu_val((*next_val)++);
		} else {
			is_del = 1;
		}
		if (is_del) {
			tu_model_del(out.model, key.bytes, key.len, NULL);
			if (t) {
				int rc = cowmap_txn_del(t, key.bytes, key.len);

				TU_REQUIRE(rc >= 0, "txn_del: %d", rc);
			} else {
				out.map = tu_del_replace(out.map, key.bytes,
							 key.len);
			}
		} else {
			tu_model_set(out.model, key.bytes, key.len, v, NULL);
			if (t) {
				int rc = cowmap_txn_set(t, key.bytes, key.len,
							v);

				TU_REQUIRE(rc == 0, "txn_set: %d", rc);
			} else {
				out.map = tu_set_replace(out.map, key.bytes,
							 key.len, v);
			}
		}
	}
	if (t) {
		cowmap_release(out.map);
		out.map = cowmap_txn_commit(t);
		ck_assert_ptr_nonnull(out.map);
	}
	return out;
}

static void slot_free(struct slot *s)
{
	cowmap_release(s->map);
	tu_model_free(s->model);
	s->map = NULL;
	s->model = NULL;
}

static void run_family(const struct family_config *c)
{
	struct tu_rng r;
	struct slot pool[POOL];
	uint64_t next_val = 1;

	tu_rng_init(&r, c->seed);
	memset(pool, 0, sizeof(pool));
	pool[0].map = tu_map_new(c->seed * 31 + 7, c->hash, NULL);
	pool[0].model = tu_model_new();
	/* A random starting map, then siblings and descendants of it. */
	for (int i = 1; i < POOL; i++) {
		struct slot s = derive(&pool[i - 1], pool, &r, c,
				       tu_rng_below(&r, c->universe * 2),
				       i & 1, &next_val);

		pool[i] = s;
	}
	for (int i = 0; i < POOL; i++)
		for (int j = i; j < POOL; j++)
			check_pair(pool[i].map, pool[i].model, pool[j].map,
				   pool[j].model, c->name);

	for (int it = 0; it < c->iterations; it++) {
		struct slot *src = &pool[tu_rng_below(&r, POOL)];
		struct slot *other = &pool[tu_rng_below(&r, POOL)];
		struct slot s;
		int use_txn = tu_rng_below(&r, 4) == 0;

		s = derive(src, pool, &r, c, pick_k(&r, c->max_k), use_txn,
			   &next_val);
		/* Against its parent, and against some other pool version
		 * (a sibling, a cousin or an ancestor). */
		check_pair(src->map, src->model, s.map, s.model, c->name);
		if (other != src)
			check_pair(other->map, other->model, s.map, s.model,
				   c->name);
		/* Keep the pool's versions related but drifting. */
		if (tu_rng_below(&r, 2) == 0) {
			struct slot *victim = &pool[tu_rng_below(&r, POOL)];

			slot_free(victim);
			*victim = s;
		} else {
			slot_free(&s);
		}
	}
	for (int i = 0; i < POOL; i++)
		slot_free(&pool[i]);
}

static const struct family_config families[] = {
	{ "mixed lengths, seed 1", 1, NULL, { 0, 1, 8, 100 }, 4, 600, 300,
	  300 },
	{ "mixed lengths, seed 2", 2, NULL, { 0, 1, 8, 100 }, 4, 2000, 150,
	  400 },
	{ "mixed lengths, seed 3", 3, NULL, { 0, 1, 8, 100 }, 4, 60, 600,
	  40 },
	{ "8-byte keys, seed 4", 4, NULL, { 8 }, 1, 1500, 300, 300 },
	{ "1-byte keys, seed 5", 5, NULL, { 1 }, 1, 256, 300, 200 },
	{ "100-byte keys, seed 6", 6, NULL, { 100 }, 1, 800, 200, 300 },
	{ "empty and 1-byte keys, seed 7", 7, NULL, { 0, 1 }, 2, 20, 500,
	  30 },
	{ "fnv hash, seed 8", 8, tu_hash_fnv, { 0, 1, 8, 100 }, 4, 800, 200,
	  300 },
	{ "identity hash, seed 9", 9, tu_hash_identity, { 1, 8 }, 2, 1000,
	  200, 300 },
};

START_TEST(random_pairs_of_one_family_diff_like_the_models)
{
	for (int rep = 0; rep < REPEATS; rep++) {
		struct family_config c = families[_i];

		c.seed += 1000 * (uint64_t)rep;
		run_family(&c);
	}
}
END_TEST

static const struct family_config collision_families[] = {
	{ "const hash", 11, tu_hash_const, { 0, 1, 8, 100 }, 4, 40, 300,
	  60 },
	{ "const hash, 8-byte keys", 12, tu_hash_const, { 8 }, 1, 120, 150,
	  200 },
	{ "four hashes", 13, tu_hash_four, { 0, 1, 8, 100 }, 4, 200, 200,
	  200 },
	{ "groups of eight", 14, tu_hash_group8, { 1, 8, 100 }, 3, 600, 200,
	  300 },
	{ "low 4 bits", 15, tu_hash_low4, { 0, 1, 8, 100 }, 4, 200, 200,
	  200 },
	{ "high 4 bits", 16, tu_hash_high4, { 0, 1, 8, 100 }, 4, 200, 200,
	  200 },
};

START_TEST(random_pairs_with_hash_collisions_diff_like_the_models)
{
	for (int rep = 0; rep < REPEATS; rep++) {
		struct family_config c = collision_families[_i];

		c.seed += 1000 * (uint64_t)rep;
		run_family(&c);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* Versions built independently                                        */
/* ------------------------------------------------------------------ */

/* A random set of entries: ids[i], lens[i] -> tu_val(vals[i]). */
struct contents {
	size_t n;
	struct tu_key *keys;
	uint64_t *vals;
};

static struct contents random_contents(struct tu_rng *r, size_t n,
				       const size_t *lens, size_t nlens,
				       uint64_t universe)
{
	struct contents c;
	struct tu_model *seen = tu_model_new();

	c.keys = calloc(n ? n : 1, sizeof(*c.keys));
	c.vals = calloc(n ? n : 1, sizeof(*c.vals));
	ck_assert_ptr_nonnull(c.keys);
	ck_assert_ptr_nonnull(c.vals);
	c.n = 0;
	for (size_t tries = 0; c.n < n && tries < 20 * n; tries++) {
		struct tu_key k;

		tu_key_pick(&k, r, lens, nlens, universe);
		if (tu_model_get(seen, k.bytes, k.len, NULL))
			continue;
		tu_model_set(seen, k.bytes, k.len, tu_val(1), NULL);
		c.keys[c.n] = k;
		c.vals[c.n] = 1000 + c.n;
		c.n++;
	}
	tu_model_free(seen);
	return c;
}

static void contents_free(struct contents *c)
{
	free(c->keys);
	free(c->vals);
}

/* Build the contents into a fresh map, inserting in @order. */
static struct cowmap *build(const struct contents *c, const size_t *order,
			    uint64_t seed, hash_fn *hash,
			    struct tu_model **model)
{
	struct cowmap *m = tu_map_new(seed, hash, NULL);

	if (model)
		*model = tu_model_new();
	for (size_t i = 0; i < c->n; i++) {
		size_t j = order ? order[i] : i;

		m = tu_set_replace(m, c->keys[j].bytes, c->keys[j].len,
				   tu_val(c->vals[j]));
		if (model)
			tu_model_set(*model, c->keys[j].bytes, c->keys[j].len,
				     tu_val(c->vals[j]), NULL);
	}
	return m;
}

static void shuffle(struct tu_rng *r, size_t *order, size_t n)
{
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	for (size_t i = n; i > 1; i--) {
		size_t j = tu_rng_below(r, i);
		size_t t = order[i - 1];

		order[i - 1] = order[j];
		order[j] = t;
	}
}

/* Apply @k random edits to @m and @model (values from *next_val). */
static struct cowmap *mutate(struct cowmap *m, struct tu_model *model,
			     const struct contents *c, struct tu_rng *r,
			     uint64_t k, uint64_t *next_val,
			     const size_t *lens, size_t nlens,
			     uint64_t universe)
{
	for (uint64_t i = 0; i < k; i++) {
		struct tu_key key;
		uint64_t op = tu_rng_below(r, 3);

		if (c->n && tu_rng_below(r, 2))
			key = c->keys[tu_rng_below(r, c->n)];
		else
			tu_key_pick(&key, r, lens, nlens, universe);
		if (op == 0) {
			m = tu_del_replace(m, key.bytes, key.len);
			tu_model_del(model, key.bytes, key.len, NULL);
		} else {
			void *v = tu_val((*next_val)++);

			m = tu_set_replace(m, key.bytes, key.len, v);
			tu_model_set(model, key.bytes, key.len, v, NULL);
		}
	}
	return m;
}

struct indep_config {
	const char *name;
	hash_fn *hash;
	size_t lens[4];
	size_t nlens;
	uint64_t universe;
	size_t n;
};

static const struct indep_config indeps[] = {
	{ "default hash, mixed", NULL, { 0, 1, 8, 100 }, 4, 3000, 1500 },
	{ "default hash, 8-byte", NULL, { 8 }, 1, 1u << 20, 2000 },
	{ "const hash", tu_hash_const, { 0, 1, 8, 100 }, 4, 50, 80 },
	{ "four hashes", tu_hash_four, { 0, 1, 8, 100 }, 4, 200, 200 },
	{ "groups of eight", tu_hash_group8, { 1, 8, 100 }, 3, 400, 400 },
	{ "high 4 bits", tu_hash_high4, { 0, 1, 8, 100 }, 4, 200, 200 },
};

START_TEST(same_seed_in_different_orders_is_equal_with_identical_stats)
{
	const struct indep_config *cf = &indeps[_i];
	struct tu_rng r;

	tu_rng_init(&r, 100 + _i);
	for (int round = 0; round < 6; round++) {
		size_t n = round == 0 ? 0 : tu_rng_below(&r, cf->n + 1);
		struct contents c = random_contents(&r, n, cf->lens, cf->nlens,
						    cf->universe);
		size_t *order = calloc(c.n ? c.n : 1, sizeof(*order));
		size_t *rev = calloc(c.n ? c.n : 1, sizeof(*rev));
		struct tu_model *ma, *mb, *mc;
		struct cowmap *a, *b, *d;
		uint64_t next_val = 1u << 24;
		struct cowmap_stats sa, sb, sd;

		ck_assert_ptr_nonnull(order);
		ck_assert_ptr_nonnull(rev);
		for (size_t i = 0; i < c.n; i++)
			rev[i] = c.n - 1 - i;
		shuffle(&r, order, c.n);
		a = build(&c, NULL, 4242, cf->hash, &ma);
		b = build(&c, rev, 4242, cf->hash, &mb);
		d = build(&c, order, 4242, cf->hash, &mc);

		check_pair(a, ma, b, mb, cf->name);
		check_pair(a, ma, d, mc, cf->name);
		check_pair(b, mb, d, mc, cf->name);
		ck_assert_int_eq(cowmap_equal(a, b, NULL, NULL), 1);
		ck_assert_int_eq(cowmap_equal(a, d, NULL, NULL), 1);
		sa = tu_stats(a);
		sb = tu_stats(b);
		sd = tu_stats(d);
		check_stats_equal(&sa, &sb);
		check_stats_equal(&sa, &sd);

		/* Now unrelated and different: edit one of them. */
		d = mutate(d, mc, &c, &r, 1 + tu_rng_below(&r, 200),
			   &next_val, cf->lens, cf->nlens, cf->universe);
		check_pair(a, ma, d, mc, cf->name);
		check_pair(b, mb, d, mc, cf->name);
		/* And both of them. */
		b = mutate(b, mb, &c, &r, 1 + tu_rng_below(&r, 50), &next_val,
			   cf->lens, cf->nlens, cf->universe);
		check_pair(b, mb, d, mc, cf->name);
		check_pair(a, ma, b, mb, cf->name);

		cowmap_release(a);
		cowmap_release(b);
		cowmap_release(d);
		tu_model_free(ma);
		tu_model_free(mb);
		tu_model_free(mc);
		free(order);
		free(rev);
		contents_free(&c);
	}
}
END_TEST

/* Pairs (seed, hash) that differ, so the fallback path compares them. */
struct family_id {
	uint64_t seed;
	hash_fn *hash;
};

static const struct family_id fallback_pairs[][2] = {
	{ { 1, NULL }, { 2, NULL } },
	{ { 5, NULL }, { 5, tu_hash_fnv } },
	{ { 5, tu_hash_fnv }, { 6, tu_hash_fnv } },
	{ { 7, tu_hash_const }, { 7, NULL } },
	{ { 8, tu_hash_four }, { 9, tu_hash_group8 } },
	{ { 10, tu_hash_const }, { 11, tu_hash_const } },
};

START_TEST(different_seeds_or_hashes_compare_entry_by_entry)
{
	const struct family_id *fa = &fallback_pairs[_i][0];
	const struct family_id *fb = &fallback_pairs[_i][1];
	const size_t lens[] = { 0, 1, 8, 100 };
	int collide = fa->hash == tu_hash_const || fb->hash == tu_hash_const;
	size_t maxn = collide ? 80 : 1500;
	uint64_t universe = collide ? 60 : 2000;
	struct tu_rng r;

	tu_rng_init(&r, 200 + _i);
	for (int round = 0; round < 8; round++) {
		size_t n = round == 0 ? 0 : tu_rng_below(&r, maxn + 1);
		struct contents c =
			random_contents(&r, n, lens, 4, universe);
		size_t *order = calloc(c.n ? c.n : 1, sizeof(*order));
		struct tu_model *ma, *mb;
		struct cowmap *a, *b;
		uint64_t next_val = 1u << 24;

		ck_assert_ptr_nonnull(order);
		shuffle(&r, order, c.n);
		a = build(&c, NULL, fa->seed, fa->hash, &ma);
		b = build(&c, order, fb->seed, fb->hash, &mb);

		/* Same contents: equal, empty diff. */
		check_pair(a, ma, b, mb, "fallback, same contents");
		ck_assert_int_eq(cowmap_equal(a, b, NULL, NULL), 1);

		/* A single change, in either map. */
		if (c.n) {
			struct tu_key *k = &c.keys[tu_rng_below(&r, c.n)];
			struct cowmap *b1;
			struct tu_model *mb1 = tu_model_copy(mb);
			void *v = tu_val(next_val++);

			b1 = cowmap_set(b, k->bytes, k->len, v);
			ck_assert_ptr_nonnull(b1);
			tu_model_set(mb1, k->bytes, k->len, v, NULL);
			check_pair(a, ma, b1, mb1, "fallback, one change");
			ck_assert_int_eq(cowmap_equal(a, b1, NULL, NULL), 0);
			cowmap_release(b1);
			tu_model_free(mb1);

			mb1 = tu_model_copy(mb);
			b1 = cowmap_del(b, k->bytes, k->len);
			ck_assert_ptr_nonnull(b1);
			tu_model_del(mb1, k->bytes, k->len, NULL);
			check_pair(a, ma, b1, mb1, "fallback, one removal");
			ck_assert_int_eq(cowmap_equal(a, b1, NULL, NULL), 0);
			cowmap_release(b1);
			tu_model_free(mb1);
		}

		/* Random differences in both. */
		a = mutate(a, ma, &c, &r, tu_rng_below(&r, 300), &next_val,
			   lens, 4, universe);
		b = mutate(b, mb, &c, &r, tu_rng_below(&r, 30), &next_val,
			   lens, 4, universe);
		check_pair(a, ma, b, mb, "fallback, random differences");

		cowmap_release(a);
		cowmap_release(b);
		tu_model_free(ma);
		tu_model_free(mb);
		free(order);
		contents_free(&c);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* Early stop                                                          */
/* ------------------------------------------------------------------ */

static void check_early_stop(const struct cowmap *from,
			     const struct cowmap *to, const char *what)
{
	struct recorder rec;
	int rc;

	recorder_init(&rec);
	rec.stop_after = 3;
	rec.stop_ret = 7;
	rc = cowmap_diff(from, to, record_fn, &rec);
	ck_assert_msg(rc == 7, "%s: cowmap_diff returned %d, expected 7", what,
		      rc);
	ck_assert_msg(rec.n == 3, "%s: %zu calls after a stop at the 3rd",
		      what, rec.n);
	recorder_fini(&rec);

	recorder_init(&rec);
	rec.stop_after = 1;
	rec.stop_ret = -12345;
	rc = cowmap_diff(from, to, record_fn, &rec);
	ck_assert_msg(rc == -12345, "%s: cowmap_diff returned %d", what, rc);
	ck_assert_msg(rec.n == 1, "%s: %zu calls after a stop at the 1st",
		      what, rec.n);
	recorder_fini(&rec);
}

START_TEST(a_non_zero_return_stops_the_diff)
{
	static const struct family_id cases[] = {
		{ 1, NULL },
		{ 2, tu_hash_const },
		{ 3, tu_hash_four },
	};

	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		struct cowmap *a = tu_map_new(cases[ci].seed, cases[ci].hash, NULL);
		struct cowmap *b, *c;
		struct tu_key k;

		/* 20 keys; b removes 4, changes 4 and adds 4. */
		a = tu_fill(a, NULL, 8, 0, 20, 0);
		b = cowmap_retain(a);
		for (uint64_t id = 0; id < 4; id++) {
			tu_key_make(&k, 8, id);
			b = tu_del_replace(b, k.bytes, k.len);
			tu_key_make(&k, 8, 10 + id);
			b = tu_set_replace(b, k.bytes, k.len, tu_val(500 + id));
			tu_key_make(&k, 8, 100 + id);
			b = tu_set_replace(b, k.bytes, k.len, tu_val(600 + id));
		}
		check_early_stop(a, b, "same family");
		check_early_stop(b, a, "same family, reversed");

		/* And through the fallback path. */
		c = tu_map_new(cases[ci].seed + 1000, NULL, NULL);
		c = tu_fill(c, NULL, 8, 0, 20, 0);
		check_early_stop(c, b, "different seeds");
		check_early_stop(b, c, "different seeds, reversed");

		cowmap_release(a);
		cowmap_release(b);
		cowmap_release(c);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* value_eq                                                            */
/* ------------------------------------------------------------------ */

static int value_eq_calls;
static void *value_eq_ctx;

static int int_eq(const void *x, const void *y, void *ctx)
{
	value_eq_calls++;
	value_eq_ctx = ctx;
	return *(const int *)x == *(const int *)y;
}

START_TEST(value_eq_compares_pointed_to_values)
{
	enum { N = 300 };
	static int ia[N], ib[N];
	static const struct family_id fams[] = {
		{ 1, NULL }, { 2, tu_hash_const }, { 3, tu_hash_four } };
	int token;

	for (size_t fi = 0; fi < 3; fi++) {
		size_t n = fams[fi].hash == tu_hash_const ? 60 : N;
		struct cowmap *a = tu_map_new(fams[fi].seed, fams[fi].hash, NULL);
		struct cowmap *b, *c, *b2;
		struct tu_key k;

		for (size_t i = 0; i < n; i++) {
			ia[i] = (int)(i * 7);
			ib[i] = (int)(i * 7);
			tu_key_make(&k, 8, i);
			a = tu_set_replace(a, k.bytes, k.len, &ia[i]);
		}
		/* b: the same family, every value a different pointer to an
		 * equal int. */
		b = cowmap_retain(a);
		for (size_t i = 0; i < n; i++) {
			tu_key_make(&k, 8, i);
			b = tu_set_replace(b, k.bytes, k.len, &ib[i]);
		}
		/* c: another seed, the same pointers as b. */
		c = tu_map_new(fams[fi].seed + 77, NULL, NULL);
		for (size_t i = n; i-- > 0;) {
			tu_key_make(&k, 8, i);
			c = tu_set_replace(c, k.bytes, k.len, &ib[i]);
		}

		ck_assert_int_eq(cowmap_equal(a, b, NULL, NULL), 0);
		ck_assert_int_eq(cowmap_equal(a, c, NULL, NULL), 0);
		value_eq_calls = 0;
		value_eq_ctx = NULL;
		ck_assert_int_eq(cowmap_equal(a, b, int_eq, &token), 1);
		ck_assert_int_gt(value_eq_calls, 0);
		ck_assert_ptr_eq(value_eq_ctx, &token);
		ck_assert_int_eq(cowmap_equal(b, a, int_eq, &token), 1);
		value_eq_calls = 0;
		value_eq_ctx = NULL;
		ck_assert_int_eq(cowmap_equal(a, c, int_eq, &token), 1);
		ck_assert_int_gt(value_eq_calls, 0);
		ck_assert_ptr_eq(value_eq_ctx, &token);
		ck_assert_int_eq(cowmap_equal(c, a, int_eq, &token), 1);
		ck_assert_int_eq(cowmap_equal(b, c, int_eq, &token), 1);

		/* One int differs: not equal, in both paths. */
		ib[n / 2] = -1;
		ck_assert_int_eq(cowmap_equal(a, b, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(b, a, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(a, c, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(c, a, int_eq, &token), 0);
		ib[n / 2] = (int)(n / 2 * 7);
		ck_assert_int_eq(cowmap_equal(a, b, int_eq, &token), 1);

		/* value_eq does not hide a missing or an extra key. */
		tu_key_make(&k, 8, n / 3);
		b2 = cowmap_del(b, k.bytes, k.len);
		ck_assert_ptr_nonnull(b2);
		ck_assert_int_eq(cowmap_equal(a, b2, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(b2, a, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(c, b2, int_eq, &token), 0);
		cowmap_release(b2);
		tu_key_make(&k, 8, n + 5);
		b2 = cowmap_set(b, k.bytes, k.len, &ib[0]);
		ck_assert_ptr_nonnull(b2);
		ck_assert_int_eq(cowmap_equal(a, b2, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(b2, a, int_eq, &token), 0);
		ck_assert_int_eq(cowmap_equal(c, b2, int_eq, &token), 0);
		cowmap_release(b2);

		cowmap_release(a);
		cowmap_release(b);
		cowmap_release(c);
	}
}
END_TEST

/* ------------------------------------------------------------------ */
/* Cost follows the difference                                          */
/* ------------------------------------------------------------------ */

/*
 * The header promises that comparing a version with one derived from it
 * "costs about the size of the change": shared subtrees are skipped by
 * pointer.  Counted here by the callbacks: on a map of COST_N entries, a
 * version with k changed values (new pointers to equal ints) makes
 * cowmap_equal call value_eq only for the entries held by the nodes on
 * the k copied paths, and cowmap_diff call fn exactly k times.  At this
 * size a path's nodes hold about 8 entries (the two deepest levels), so
 * the bounds allow 64 calls for one key and 16 per key for a hundred; a
 * walk of the whole map would make COST_N calls.
 */
#define COST_N 100000

static int cost_vals[COST_N], cost_alt[COST_N];
static long cost_eq_calls, cost_fn_calls;

static int counting_int_eq(const void *x, const void *y, void *ctx)
{
	(void)ctx;
	cost_eq_calls++;
	return *(const int *)x == *(const int *)y;
}

static int counting_fn(enum cowmap_change what, const void *key, size_t len,
		       void *old_value, void *new_value, void *ctx)
{
	(void)key, (void)len, (void)ctx;
	cost_fn_calls++;
	TU_REQUIRE(what == COWMAP_CHANGED, "diff reported kind %d", (int)what);
	TU_REQUIRE(old_value != new_value, "CHANGED with equal pointers");
	return 0;
}

/* @base with the values of @k keys, spread over the key space, replaced
 * by other pointers to equal ints. */
static struct cowmap *change_values(const struct cowmap *base, size_t k)
{
	struct cowmap_txn *t = cowmap_txn_begin(base);
	struct cowmap *v;
	struct tu_key key;

	ck_assert_ptr_nonnull(t);
	for (size_t j = 0; j < k; j++) {
		size_t i = (j * 997 + 13) % COST_N;	/* 997 is prime */

		tu_key_make(&key, 8, i);
		TU_REQUIRE(cowmap_txn_set(t, key.bytes, key.len,
					  &cost_alt[i]) == 0,
			   "txn_set failed");
	}
	ck_assert_uint_eq(cowmap_txn_size(t), COST_N);
	v = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(v);
	return v;
}

START_TEST(equal_and_diff_cost_follows_the_difference)
{
	struct cowmap *base = tu_map_new(5, NULL, NULL), *one, *hundred;
	struct cowmap_txn *t = cowmap_txn_begin(base);
	struct tu_key key;

	ck_assert_ptr_nonnull(t);
	for (size_t i = 0; i < COST_N; i++) {
		cost_vals[i] = cost_alt[i] = (int)i;
		tu_key_make(&key, 8, i);
		TU_REQUIRE(cowmap_txn_set(t, key.bytes, key.len,
					  &cost_vals[i]) == 0,
			   "txn_set failed");
	}
	cowmap_release(base);
	base = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(base);
	ck_assert_uint_eq(cowmap_size(base), COST_N);
	one = change_values(base, 1);
	hundred = change_values(base, 100);

	/* One changed key. */
	cost_eq_calls = 0;
	ck_assert_int_eq(cowmap_equal(base, one, counting_int_eq, NULL), 1);
	ck_assert_int_gt(cost_eq_calls, 0);
	ck_assert_int_le(cost_eq_calls, 64);
	cost_fn_calls = 0;
	ck_assert_int_eq(cowmap_diff(base, one, counting_fn, NULL), 0);
	ck_assert_int_eq(cost_fn_calls, 1);

	/* A hundred. */
	cost_eq_calls = 0;
	ck_assert_int_eq(cowmap_equal(base, hundred, counting_int_eq, NULL),
			 1);
	ck_assert_int_ge(cost_eq_calls, 100);
	ck_assert_int_le(cost_eq_calls, 16 * 100);
	cost_fn_calls = 0;
	ck_assert_int_eq(cowmap_diff(base, hundred, counting_fn, NULL), 0);
	ck_assert_int_eq(cost_fn_calls, 100);
	cost_fn_calls = 0;
	ck_assert_int_eq(cowmap_diff(hundred, base, counting_fn, NULL), 0);
	ck_assert_int_eq(cost_fn_calls, 100);

	/* The contrast: a different value makes equal say 0 (the values are
	 * compared, not merely the structure). */
	cost_alt[(13 + 997) % COST_N] = -1;
	ck_assert_int_eq(cowmap_equal(base, hundred, counting_int_eq, NULL),
			 0);

	cowmap_release(hundred);
	cowmap_release(one);
	cowmap_release(base);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Trivial cases and arguments                                         */
/* ------------------------------------------------------------------ */

static size_t diff_calls(const struct cowmap *from, const struct cowmap *to)
{
	struct recorder rec;
	size_t n;

	recorder_init(&rec);
	ck_assert_int_eq(cowmap_diff(from, to, record_fn, &rec), 0);
	n = rec.n;
	recorder_fini(&rec);
	return n;
}

START_TEST(a_version_does_not_differ_from_itself_or_a_retained_copy)
{
	static const struct family_id fams[] = {
		{ 1, NULL }, { 2, tu_hash_const }, { 3, tu_hash_group8 } };

	for (size_t fi = 0; fi < 3; fi++) {
		struct cowmap *e = tu_map_new(fams[fi].seed, fams[fi].hash, NULL);
		struct cowmap *m = tu_map_new(fams[fi].seed, fams[fi].hash, NULL);
		struct cowmap *copy, *same;
		struct tu_key k;

		m = tu_fill(m, NULL, 8, 0, 200, 0);
		m = tu_fill(m, NULL, 100, 0, 50, 1000);
		m = tu_fill(m, NULL, 0, 0, 1, 2000);
		copy = cowmap_retain(m);
		ck_assert_ptr_eq(copy, m);
		/* A no-op set returns the same version. */
		tu_key_make(&k, 8, 3);
		same = cowmap_set(m, k.bytes, k.len, tu_val(3));
		ck_assert_ptr_nonnull(same);

		ck_assert_uint_eq(diff_calls(e, e), 0);
		ck_assert_uint_eq(diff_calls(m, m), 0);
		ck_assert_uint_eq(diff_calls(m, copy), 0);
		ck_assert_uint_eq(diff_calls(copy, m), 0);
		ck_assert_uint_eq(diff_calls(m, same), 0);
		ck_assert_int_eq(cowmap_equal(e, e, NULL, NULL), 1);
		ck_assert_int_eq(cowmap_equal(m, m, NULL, NULL), 1);
		ck_assert_int_eq(cowmap_equal(m, copy, NULL, NULL), 1);
		ck_assert_int_eq(cowmap_equal(m, same, NULL, NULL), 1);
		cowmap_release(copy);
		cowmap_release(same);
		cowmap_release(m);
		cowmap_release(e);
	}
}
END_TEST

START_TEST(diff_from_and_to_an_empty_map_adds_or_removes_everything)
{
	static const struct family_id fams[] = {
		{ 1, NULL }, { 2, tu_hash_const }, { 3, tu_hash_four } };

	for (size_t fi = 0; fi < 3; fi++) {
		struct cowmap *e = tu_map_new(fams[fi].seed, fams[fi].hash, NULL);
		struct cowmap *other = tu_map_new(fams[fi].seed + 9, NULL, NULL);
		struct cowmap *m = cowmap_retain(e), *emptied;
		struct tu_model *me = tu_model_new(), *mm = tu_model_new();
		size_t nid = fams[fi].hash == tu_hash_const ? 40 : 400;
		struct tu_key k;

		m = tu_fill(m, mm, 8, 0, nid, 0);
		m = tu_fill(m, mm, 1, 0, 200, 1000);
		m = tu_fill(m, mm, 100, 0, nid / 4, 2000);
		m = tu_fill(m, mm, 0, 0, 1, 3000);

		/* From its own (ancestor) empty map, from an unrelated one,
		 * and from the family's map emptied by deletion. */
		ck_assert_uint_eq(check_diff_one_way(e, me, m, mm, "from empty"),
				  tu_model_size(mm));
		ck_assert_uint_eq(check_diff_one_way(m, mm, e, me, "to empty"),
				  tu_model_size(mm));
		check_pair(other, me, m, mm, "unrelated empty");
		emptied = cowmap_retain(m);
		{
			size_t pos = 0, len;
			const void *key;

			while (tu_model_next(mm, &pos, &key, &len, NULL)) {
				memcpy(k.bytes, key, len);
				k.len = len;
				emptied = tu_del_replace(emptied, k.bytes,
							 k.len);
			}
		}
		ck_assert_uint_eq(cowmap_size(emptied), 0);
		check_pair(emptied, me, m, mm, "emptied");
		check_pair(emptied, me, e, me, "emptied vs empty");
		check_pair(emptied, me, other, me, "emptied vs unrelated");
		ck_assert_int_eq(cowmap_equal(e, m, NULL, NULL), 0);
		ck_assert_int_eq(cowmap_equal(emptied, e, NULL, NULL), 1);

		cowmap_release(emptied);
		cowmap_release(m);
		cowmap_release(e);
		cowmap_release(other);
		tu_model_free(me);
		tu_model_free(mm);
	}
}
END_TEST

START_TEST(null_arguments_are_rejected)
{
	struct cowmap *m = tu_map_new(1, NULL, NULL);
	struct recorder rec;

	m = tu_fill(m, NULL, 8, 0, 10, 0);
	recorder_init(&rec);
	ck_assert_int_eq(cowmap_diff(NULL, m, record_fn, &rec), -EINVAL);
	ck_assert_int_eq(cowmap_diff(m, NULL, record_fn, &rec), -EINVAL);
	ck_assert_int_eq(cowmap_diff(NULL, NULL, record_fn, &rec), -EINVAL);
	ck_assert_int_eq(cowmap_diff(m, m, NULL, &rec), -EINVAL);
	ck_assert_int_eq(cowmap_diff(NULL, m, NULL, NULL), -EINVAL);
	ck_assert_uint_eq(rec.n, 0);
	ck_assert_int_eq(cowmap_equal(NULL, m, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(m, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(cowmap_equal(NULL, m, int_eq, NULL), -EINVAL);
	recorder_fini(&rec);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *diff_suite(void)
{
	Suite *s = suite_create("diff");
	TCase *tc;

	tc = tcase_create("family");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(tc, random_pairs_of_one_family_diff_like_the_models,
			    0, (int)(sizeof(families) / sizeof(families[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("collisions");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(
		tc, random_pairs_with_hash_collisions_diff_like_the_models, 0,
		(int)(sizeof(collision_families) /
		      sizeof(collision_families[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("independent");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_loop_test(
		tc, same_seed_in_different_orders_is_equal_with_identical_stats,
		0, (int)(sizeof(indeps) / sizeof(indeps[0])));
	tcase_add_loop_test(
		tc, different_seeds_or_hashes_compare_entry_by_entry, 0,
		(int)(sizeof(fallback_pairs) / sizeof(fallback_pairs[0])));
	suite_add_tcase(s, tc);

	tc = tcase_create("api");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, a_non_zero_return_stops_the_diff);
	tcase_add_test(tc, value_eq_compares_pointed_to_values);
	tcase_add_test(
		tc, a_version_does_not_differ_from_itself_or_a_retained_copy);
	tcase_add_test(
		tc, diff_from_and_to_an_empty_map_adds_or_removes_everything);
	tcase_add_test(tc, null_arguments_are_rejected);
	suite_add_tcase(s, tc);

	tc = tcase_create("cost");
	tcase_set_timeout(tc, TIMEOUT);
	tcase_add_test(tc, equal_and_diff_cost_follows_the_difference);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	return tu_run_suite(diff_suite());
}
