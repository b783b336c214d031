/*
 * check_random.c - randomized differential test against the reference
 * model.
 *
 * Each configuration (key lengths, key universe, hash override, limit)
 * runs SEEDS independent seeded streams of operations, each on a fresh
 * map (one Check test per configuration and seed): cowmap_set,
 * cowmap_del, cowmap_get, cowmap_get_many, no-op updates, and
 * transactions (begin, several sets/dels/gets, then commit or abort).
 *
 * What each step checks (not the whole map):
 *   - set/del: the result (a new version, the same one for deleting an
 *     absent key, ENOSPC at the limit); in the new version the touched
 *     key and the size agree with the model; the old version still has
 *     its size and the key's old state.
 *   - get: the key's presence and value (and that value not freed).
 *     get_many: the batch of up to 16 keys.  No-op set/del: the same
 *     version comes back.
 *   - transactions: every txn_set/del/get result and the draft's size
 *     after each; after commit, each touched key and the size in the new
 *     version, and each touched key's old state in the base; after abort,
 *     each touched key in the unchanged current version.
 *   - with value_free: no value freed twice or before it was stored
 *     (checked after each transaction and at every full check).
 * The whole map against the model (every key, get_many, a full
 * iteration; and no value it holds freed) is checked at step 0, then
 * every max(ops / 25, 500) steps, where ops is the configuration's total
 * over all its seeds (so about 25 full checks per configuration, spread
 * over its seeds), and after the last step of each seed.
 *
 * A sample of older versions, each with a copy of the model of its time,
 * is kept and re-checked in full when dropped and at the end of each
 * seed: persistence means they never change.  Values are unique ids; at
 * the end of each seed, with everything released, each stored value has
 * been freed exactly once (configurations with value_free).
 *
 * COWMAP_RANDOM_OPS sets the total number of operations (default
 * 1,000,000, split over the configurations by weight and then equally
 * over each configuration's seeds); COWMAP_RANDOM_SEED perturbs every
 * seed (default 0: the same run every time).  A failure names the
 * configuration, seed and step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#define DEFAULT_TOTAL_OPS 1000000L
#define SEEDS 3      /* independent runs per configuration */
#define SAMPLES 8    /* older versions kept at once */
#define MAX_BATCH 32 /* operations in one transaction */

typedef uint64_t hash_fn(const void *, size_t, uint64_t, void *);

struct config {
	const char *name;
	uint64_t seed;
	size_t lens[4];
	size_t nlens;
	uint64_t universe;
	hash_fn *hash;
	size_t max_entries;
	int with_free;   /* options.value_free set (the map boxes entries) */
	unsigned weight; /* percent of the total operations */
};

static const struct config configs[] = {
	{ "8-byte keys", 0x1001, { 8 }, 1, 20000, NULL, 0, 0, 15 },
	{ "8-byte keys, value_free", 0x2002, { 8 }, 1, 2000, NULL, 0, 1, 8 },
	{ "mixed lengths 0/1/8/100, value_free", 0x3003,
	  { 0, 1, 8, TU_LONG_KEY_LEN }, 4, 20000, NULL, 0, 1, 15 },
	{ "100-byte keys", 0x4004, { TU_LONG_KEY_LEN }, 1, 5000, NULL, 0, 0,
	  8 },
	{ "0/1-byte keys", 0x5005, { 0, 1 }, 2, 256, NULL, 0, 0, 6 },
	{ "tiny universe, mixed lengths, value_free", 0x6006,
	  { 0, 1, 8, TU_LONG_KEY_LEN }, 4, 40, NULL, 0, 1, 6 },
	{ "max_entries limit, value_free", 0x7007,
	  { 1, 8, TU_LONG_KEY_LEN }, 3, 2000, NULL, 600, 1, 6 },
	{ "full collisions in groups of 8", 0x8008,
	  { 0, 1, 8, TU_LONG_KEY_LEN }, 4, 4000, tu_hash_group8, 0, 0, 10 },
	{ "4 distinct hashes, value_free", 0x9009, { 1, 8 }, 2, 300,
	  tu_hash_four, 0, 1, 5 },
	{ "high 4 hash bits only (deep)", 0xa00a, { 8, TU_LONG_KEY_LEN }, 2,
	  1000, tu_hash_high4, 0, 0, 7 },
	{ "one hash for every key, value_free", 0xb00b, { 0, 1, 8 }, 3, 100,
	  tu_hash_const, 0, 1, 4 },
	{ "low 4 hash bits only", 0xc00c, { 8 }, 1, 500, tu_hash_low4, 0, 0,
	  4 },
	{ "key lengths 11/12/13/16", 0xd00d, { 11, 12, 13, 16 }, 4, 5000,
	  NULL, 0, 0, 6 },
};
#define NCONFIGS (sizeof(configs) / sizeof(configs[0]))

/* ------------------------------------------------------------------ */
/* Value accounting                                                    */
/* ------------------------------------------------------------------ */

/*
 * Value number i is tu_val(i).  Ids below @stored were handed to the map
 * by a successful set; value_free marks them in @freed and complains about
 * a second free or a value never stored.
 */
struct vtrack {
	uint64_t stored;
	uint64_t calls;
	unsigned char *freed;
	size_t cap;
	int bad;
	char why[160];
};

static uint64_t value_id(const void *value)
{
	return ((uintptr_t)value - 0x10000) / 16;
}

static int value_is_ours(const void *value)
{
	uintptr_t u = (uintptr_t)value;

	return u >= 0x10000 && (u - 0x10000) % 16 == 0;
}

static void vtrack_free(void *value, void *ctx)
{
	struct vtrack *vt = ctx;
	uint64_t id = value_id(value);

	vt->calls++;
	if (vt->bad)
		return;
	if (!value_is_ours(value) || id >= vt->stored) {
		vt->bad = 1;
		snprintf(vt->why, sizeof(vt->why),
			 "value_free(%p): never stored (%llu stored so far)",
			 value, (unsigned long long)vt->stored);
	} else if (vt->freed[id]) {
		vt->bad = 1;
		snprintf(vt->why, sizeof(vt->why),
			 "value_free(%p): value %llu freed twice", value,
			 (unsigned long long)id);
	} else {
		vt->freed[id] = 1;
	}
}

/* The value the next set will store (not yet counted as stored). */
static void *vtrack_next(struct vtrack *vt)
{
	if (vt->stored >= vt->cap) {
		size_t cap = vt->cap ? 2 * vt->cap : 4096;
		unsigned char *p = realloc(vt->freed, cap);

		if (!p)
			abort();
		memset(p + vt->cap, 0, cap - vt->cap);
		vt->freed = p;
		vt->cap = cap;
	}
	return tu_val(vt->stored);
}

/* The set of vtrack_next() succeeded: the map owns that value now. */
static void vtrack_stored(struct vtrack *vt)
{
	vt->stored++;
}

static int vtrack_is_freed(const struct vtrack *vt, const void *value)
{
	return value_is_ours(value) && value_id(value) < vt->stored &&
	       vt->freed[value_id(value)];
}

/* ------------------------------------------------------------------ */
/* The run                                                             */
/* ------------------------------------------------------------------ */

struct sample {
	struct cowmap *map;
	struct tu_model *model;
	long step;
};

struct run {
	const struct config *cfg;
	struct tu_rng rng;
	struct cowmap *cur;
	struct tu_model *model;
	struct vtrack vt;
	struct sample samples[SAMPLES];
	long step;
	uint64_t rng_seed; /* see run_seed() */
};

/* Fail with the configuration, seed and step, for reproduction. */
#define RUN_REQUIRE(run, cond, fmt, ...)                                     \
	TU_REQUIRE(cond, "[%s seed %#llx step %ld] " fmt, (run)->cfg->name,  \
		   (unsigned long long)(run)->rng_seed, (run)->step,         \
		   __VA_ARGS__)

static void pick_key(struct run *run, struct tu_key *k)
{
	tu_key_pick(k, &run->rng, run->cfg->lens, run->cfg->nlens,
		    run->cfg->universe);
}

static void check_value_free_so_far(struct run *run)
{
	RUN_REQUIRE(run, !run->vt.bad, "%s", run->vt.why);
}

/* No value a live model (hence a live version) holds was freed. */
static void check_model_values_alive(struct run *run,
				     const struct tu_model *model)
{
	size_t pos = 0;
	void *value;

	while (tu_model_next(model, &pos, NULL, NULL, &value))
		RUN_REQUIRE(run, !vtrack_is_freed(&run->vt, value),
			    "value %p was freed while a version holds it",
			    value);
}

/* Expect @map to map @key as described by (@had, @value). */
static void check_key_state(struct run *run, const struct cowmap *map,
			    const struct tu_key *k, int had, void *value)
{
	void *got = NULL;
	int rc = cowmap_get(map, k->bytes, k->len, &got);

	RUN_REQUIRE(run, rc == had,
		    "cowmap_get(len %zu, id %llu) returned %d, expected %d",
		    k->len, (unsigned long long)tu_key_id(k->bytes, k->len),
		    rc, had);
	if (had)
		RUN_REQUIRE(run, got == value,
			    "cowmap_get(len %zu, id %llu) = %p, expected %p",
			    k->len,
			    (unsigned long long)tu_key_id(k->bytes, k->len),
			    got, value);
	if (rc == 1)
		RUN_REQUIRE(run, !vtrack_is_freed(&run->vt, got),
			    "cowmap_get returned freed value %p", got);
}

/* Replace the current version by @next, after checking the old one kept
 * @k as (@had, @old) and its size. */
static void advance(struct run *run, struct cowmap *next,
		    const struct tu_key *k, int had, void *old,
		    size_t old_size)
{
	RUN_REQUIRE(run, cowmap_size(run->cur) == old_size,
		    "old version's size changed from %zu to %zu", old_size,
		    cowmap_size(run->cur));
	if (k)
		check_key_state(run, run->cur, k, had, old);
	cowmap_release(run->cur);
	run->cur = next;
}

static void op_set(struct run *run)
{
	struct tu_key k;
	void *old = NULL, *value = vtrack_next(&run->vt);
	int had, limited;
	size_t size = tu_model_size(run->model);
	struct cowmap *next;

	pick_key(run, &k);
	had = tu_model_get(run->model, k.bytes, k.len, &old);
	limited = !had && run->cfg->max_entries &&
		  size >= run->cfg->max_entries;
	errno = 0;
	next = cowmap_set(run->cur, k.bytes, k.len, value);
	if (limited) {
		RUN_REQUIRE(run, next == NULL && errno == ENOSPC,
			    "set beyond max_entries returned %p errno %d",
			    (void *)next, errno);
		check_map_key_matches_model(run->cur, run->model, k.bytes,
					    k.len);
		return;
	}
	RUN_REQUIRE(run, next != NULL && next != run->cur,
		    "cowmap_set returned %p (current %p), errno %d",
		    (void *)next, (void *)run->cur, errno);
	vtrack_stored(&run->vt);
	tu_model_set(run->model, k.bytes, k.len, value, NULL);
	check_map_key_matches_model(next, run->model, k.bytes, k.len);
	advance(run, next, &k, had, old, size);
}

static void op_del(struct run *run)
{
	struct tu_key k;
	void *old = NULL;
	int had;
	size_t size = tu_model_size(run->model);
	struct cowmap *next;

	pick_key(run, &k);
	had = tu_model_get(run->model, k.bytes, k.len, &old);
	next = cowmap_del(run->cur, k.bytes, k.len);
	RUN_REQUIRE(run, next != NULL, "cowmap_del failed, errno %d", errno);
	RUN_REQUIRE(run, had ? next != run->cur : next == run->cur,
		    "cowmap_del of a%s key returned %s version",
		    had ? " present" : "n absent", had ? "the same" : "a new");
	tu_model_del(run->model, k.bytes, k.len, NULL);
	check_map_key_matches_model(next, run->model, k.bytes, k.len);
	advance(run, next, &k, had, old, size);
}

static void op_get(struct run *run)
{
	struct tu_key k;
	void *value = NULL;
	int had;

	pick_key(run, &k);
	had = tu_model_get(run->model, k.bytes, k.len, &value);
	check_key_state(run, run->cur, &k, had, value);
}

static void op_get_many(struct run *run)
{
	struct tu_key k[16];
	const void *keys[16];
	size_t lens[16], n = 1 + tu_rng_below(&run->rng, 16), want = 0;
	void *values[16], *expect[16];
	size_t found;

	for (size_t i = 0; i < n; i++) {
		pick_key(run, &k[i]);
		keys[i] = k[i].bytes;
		lens[i] = k[i].len;
		values[i] = tu_val(1); /* must be overwritten */
		if (tu_model_get(run->model, keys[i], lens[i], &expect[i]))
			want++;
		else
			expect[i] = NULL;
	}
	found = cowmap_get_many(run->cur, n, keys, lens, values);
	RUN_REQUIRE(run, found == want, "get_many found %zu, expected %zu",
		    found, want);
	for (size_t i = 0; i < n; i++)
		RUN_REQUIRE(run, values[i] == expect[i],
			    "get_many value %zu: %p, expected %p", i,
			    values[i], expect[i]);
}

/* Storing the pointer a key holds, or deleting an absent key, returns the
 * same version. */
static void op_noop(struct run *run)
{
	struct tu_key k;
	void *value = NULL;
	struct cowmap *same;

	pick_key(run, &k);
	if (tu_model_get(run->model, k.bytes, k.len, &value))
		same = cowmap_set(run->cur, k.bytes, k.len, value);
	else
		same = cowmap_del(run->cur, k.bytes, k.len);
	RUN_REQUIRE(run, same == run->cur,
		    "no-op update returned %p, expected the same version %p",
		    (void *)same, (void *)run->cur);
	cowmap_release(same);
}

struct undo {
	struct tu_key key;
	int had;
	void *old;
};

/* Was @u's key touched by an earlier entry of @log? */
static int touched_before(const struct undo *log, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (log[j].key.len == log[i].key.len &&
		    memcmp(log[j].key.bytes, log[i].key.bytes,
			   log[i].key.len) == 0)
			return 1;
	return 0;
}

static void op_txn(struct run *run)
{
	static struct undo log[MAX_BATCH];
	size_t nops = 1 + tu_rng_below(&run->rng, MAX_BATCH), nlog = 0;
	int changed = 0;
	size_t size_before = tu_model_size(run->model);
	int do_commit = tu_rng_below(&run->rng, 5) != 0;
	struct cowmap_txn *t = cowmap_txn_begin(run->cur);
	struct cowmap *next;

	RUN_REQUIRE(run, t != NULL, "cowmap_txn_begin failed, errno %d",
		    errno);
	for (size_t i = 0; i < nops; i++) {
		struct undo *u = &log[nlog];
		unsigned what = (unsigned)tu_rng_below(&run->rng, 10);
		int rc;

		pick_key(run, &u->key);
		u->had = tu_model_get(run->model, u->key.bytes, u->key.len,
				      &u->old);
		if (what < 6) {
			void *value = vtrack_next(&run->vt);
			int limited = !u->had && run->cfg->max_entries &&
				      tu_model_size(run->model) >=
					      run->cfg->max_entries;

			rc = cowmap_txn_set(t, u->key.bytes, u->key.len,
					    value);
			RUN_REQUIRE(run, rc == (limited ? -ENOSPC : 0),
				    "cowmap_txn_set returned %d (limited %d)",
				    rc, limited);
			if (rc == 0) {
				vtrack_stored(&run->vt);
				tu_model_set(run->model, u->key.bytes,
					     u->key.len, value, NULL);
				nlog++;
				changed = 1;
			}
		} else if (what < 9) {
			rc = cowmap_txn_del(t, u->key.bytes, u->key.len);
			RUN_REQUIRE(run, rc == u->had,
				    "cowmap_txn_del returned %d, expected %d",
				    rc, u->had);
			tu_model_del(run->model, u->key.bytes, u->key.len,
				     NULL);
			nlog++;
			changed |= rc;
		} else {
			void *got = NULL;

			rc = cowmap_txn_get(t, u->key.bytes, u->key.len, &got);
			RUN_REQUIRE(run, rc == u->had,
				    "cowmap_txn_get returned %d, expected %d",
				    rc, u->had);
			if (rc == 1)
				RUN_REQUIRE(run, got == u->old,
					    "cowmap_txn_get = %p, expected %p",
					    got, u->old);
		}
		RUN_REQUIRE(run,
			    cowmap_txn_size(t) == tu_model_size(run->model),
			    "txn size %zu, model %zu", cowmap_txn_size(t),
			    tu_model_size(run->model));
	}
	check_value_free_so_far(run);
	if (!do_commit) {
		cowmap_txn_abort(t);
		for (size_t i = nlog; i-- > 0;) {
			if (log[i].had)
				tu_model_set(run->model, log[i].key.bytes,
					     log[i].key.len, log[i].old, NULL);
			else
				tu_model_del(run->model, log[i].key.bytes,
					     log[i].key.len, NULL);
		}
		for (size_t i = 0; i < nlog; i++)
			check_map_key_matches_model(run->cur, run->model,
						    log[i].key.bytes,
						    log[i].key.len);
		return;
	}
	next = cowmap_txn_commit(t);
	RUN_REQUIRE(run, next != NULL, "cowmap_txn_commit failed, errno %d",
		    errno);
	if (!changed)
		RUN_REQUIRE(run, next == run->cur,
			    "commit of a draft without changes returned %p, "
			    "not the base %p",
			    (void *)next, (void *)run->cur);
	for (size_t i = 0; i < nlog; i++) {
		check_map_key_matches_model(next, run->model, log[i].key.bytes,
					    log[i].key.len);
		/* The first record of a key holds its state in the base. */
		if (!touched_before(log, i))
			check_key_state(run, run->cur, &log[i].key,
					log[i].had, log[i].old);
	}
	advance(run, next, NULL, 0, NULL, size_before);
}

static void check_sample(struct run *run, const struct sample *s)
{
	TU_REQUIRE(cowmap_size(s->map) == tu_model_size(s->model),
		   "[%s] version sampled at step %ld: size %zu, was %zu",
		   run->cfg->name, s->step, cowmap_size(s->map),
		   tu_model_size(s->model));
	check_map_matches_model(s->map, s->model);
	check_model_values_alive(run, s->model);
}

static void drop_sample(struct sample *s)
{
	cowmap_release(s->map);
	tu_model_free(s->model);
	memset(s, 0, sizeof(*s));
}

/* Keep the current version and a copy of the model; when the sample set
 * is full, check and drop a random older one. */
static void take_sample(struct run *run)
{
	size_t slot = SAMPLES;

	for (size_t i = 0; i < SAMPLES; i++)
		if (!run->samples[i].map) {
			slot = i;
			break;
		}
	if (slot == SAMPLES) {
		slot = tu_rng_below(&run->rng, SAMPLES);
		check_sample(run, &run->samples[slot]);
		drop_sample(&run->samples[slot]);
	}
	run->samples[slot].map = cowmap_retain(run->cur);
	run->samples[slot].model = tu_model_copy(run->model);
	run->samples[slot].step = run->step;
}

static void full_check(struct run *run)
{
	check_map_matches_model(run->cur, run->model);
	check_model_values_alive(run, run->model);
	check_value_free_so_far(run);
}

static long total_ops(void)
{
	return tu_env_long("COWMAP_RANDOM_OPS", DEFAULT_TOTAL_OPS);
}

/*
 * Seed number @k of configuration @cfg: seed 0 is the configuration's
 * own, the others are derived from it; COWMAP_RANDOM_SEED perturbs all.
 * It drives the operation stream and is also the map's hash seed, so the
 * seeds differ in trie shape too.  Never 0 (which asks for a random one).
 */
static uint64_t run_seed(const struct config *cfg, unsigned k)
{
	uint64_t perturb = (uint64_t)tu_env_long("COWMAP_RANDOM_SEED", 0);
	uint64_t seed = cfg->seed ^ perturb;

	if (k > 0)
		seed = tu_mix64(seed + k);
	return seed != 0 ? seed : 1;
}

static void run_config(const struct config *cfg, unsigned k)
{
	struct run run;
	struct cowmap_options o;
	long cfg_ops = total_ops() * (long)cfg->weight / 100;
	long ops, full_every, sample_every;

	if (cfg_ops < 200)
		cfg_ops = 200;
	/* Seed k's share of the configuration's operations. */
	ops = cfg_ops * (long)(k + 1) / SEEDS - cfg_ops * (long)k / SEEDS;
	full_every = cfg_ops / 25 > 500 ? cfg_ops / 25 : 500;
	sample_every = cfg_ops / 40 > 50 ? cfg_ops / 40 : 50;

	memset(&run, 0, sizeof(run));
	run.cfg = cfg;
	run.rng_seed = run_seed(cfg, k);
	tu_rng_init(&run.rng, run.rng_seed);
	run.model = tu_model_new();
	o = tu_opts(run.rng_seed, cfg->hash, NULL);
	if (cfg->with_free) {
		o.value_free = vtrack_free;
		o.ctx = &run.vt;
	}
	o.max_entries = cfg->max_entries;
	run.cur = cowmap_new(&o);
	TU_REQUIRE(run.cur != NULL, "cowmap_new failed");

	for (run.step = 0; run.step < ops; run.step++) {
		unsigned r = (unsigned)tu_rng_below(&run.rng, 100);

		if (r < 38)
			op_set(&run);
		else if (r < 58)
			op_del(&run);
		else if (r < 76)
			op_get(&run);
		else if (r < 80)
			op_get_many(&run);
		else if (r < 84)
			op_noop(&run);
		else
			op_txn(&run);
		if (run.step % sample_every == 0)
			take_sample(&run);
		if (run.step % full_every == 0)
			full_check(&run);
	}
	full_check(&run);
	for (size_t i = 0; i < SAMPLES; i++)
		if (run.samples[i].map)
			check_sample(&run, &run.samples[i]);

	/* Release everything: every stored value is freed exactly once. */
	for (size_t i = 0; i < SAMPLES; i++)
		if (run.samples[i].map)
			drop_sample(&run.samples[i]);
	cowmap_release(run.cur);
	check_value_free_so_far(&run);
	if (cfg->with_free) {
		TU_REQUIRE(run.vt.calls == run.vt.stored,
			   "[%s seed %#llx] value_free called %llu times for "
			   "%llu stored values",
			   cfg->name, (unsigned long long)run.rng_seed,
			   (unsigned long long)run.vt.calls,
			   (unsigned long long)run.vt.stored);
		for (uint64_t id = 0; id < run.vt.stored; id++)
			TU_REQUIRE(run.vt.freed[id],
				   "[%s seed %#llx] value %llu never freed",
				   cfg->name, (unsigned long long)run.rng_seed,
				   (unsigned long long)id);
	}
	tu_model_free(run.model);
	free(run.vt.freed);
}

/* _i = configuration * SEEDS + seed number. */
START_TEST(random_operations_agree_with_the_model)
{
	run_config(&configs[_i / SEEDS], (unsigned)(_i % SEEDS));
}
END_TEST

START_TEST(weights_cover_the_whole_operation_budget)
{
	unsigned sum = 0;

	for (size_t i = 0; i < NCONFIGS; i++)
		sum += configs[i].weight;
	ck_assert_uint_eq(sum, 100);
}
END_TEST

/* ------------------------------------------------------------------ */

Suite *random_suite(void);

Suite *random_suite(void)
{
	Suite *s = suite_create("random");
	TCase *tc = tcase_create("differential");

	/* Generous: valgrind runs use CK_FORK=no, where no timeout applies. */
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, weights_cover_the_whole_operation_budget);
	tcase_add_loop_test(tc, random_operations_agree_with_the_model, 0,
			    (int)(NCONFIGS * SEEDS));
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(random_suite());
}
