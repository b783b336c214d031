/*
 * testutil.c - helpers shared by the cowmap Check suites (see testutil.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

/* ------------------------------------------------------------------ */
/* PRNG                                                                */
/* ------------------------------------------------------------------ */

uint64_t tu_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

void tu_rng_init(struct tu_rng *r, uint64_t seed)
{
	r->state = seed;
}

uint64_t tu_rng_next(struct tu_rng *r)
{
	r->state += 0x9e3779b97f4a7c15ULL;
	return tu_mix64(r->state);
}

uint64_t tu_rng_below(struct tu_rng *r, uint64_t bound)
{
	/* The modulo bias is irrelevant for the bounds tests use. */
	return tu_rng_next(r) % bound;
}

/* ------------------------------------------------------------------ */
/* Keys and values                                                     */
/* ------------------------------------------------------------------ */

void tu_key_make(struct tu_key *k, size_t len, uint64_t id)
{
	size_t idlen = len < 8 ? len : 8;

	TU_REQUIRE(len <= TU_KEY_MAX, "key length %zu too long", len);
	for (size_t i = 0; i < len - idlen; i++)
		k->bytes[i] = (unsigned char)(0x5a ^ (i * 31));
	for (size_t i = 0; i < idlen; i++)
		k->bytes[len - 1 - i] = (unsigned char)(id >> (8 * i));
	k->len = len;
}

uint64_t tu_key_id(const void *key, size_t len)
{
	const unsigned char *p = key;
	size_t idlen = len < 8 ? len : 8;
	uint64_t id = 0;

	for (size_t i = len - idlen; i < len; i++)
		id = (id << 8) | p[i];
	return id;
}

uint64_t tu_key_space(size_t len, uint64_t cap)
{
	if (len >= 8)
		return cap;
	uint64_t space = (uint64_t)1 << (8 * len);
	return space < cap ? space : cap;
}

void tu_key_pick(struct tu_key *k, struct tu_rng *r, const size_t *lens,
		 size_t nlens, uint64_t universe)
{
	size_t len = lens[tu_rng_below(r, nlens)];

	tu_key_make(k, len, tu_rng_below(r, tu_key_space(len, universe)));
}

void *tu_val(uint64_t i)
{
	return (void *)(uintptr_t)(0x10000 + 16 * i);
}

/* ------------------------------------------------------------------ */
/* Hash overrides                                                      */
/* ------------------------------------------------------------------ */

static uint64_t fnv1a(const void *key, size_t len, uint64_t seed)
{
	const unsigned char *p = key;
	uint64_t h = 0xcbf29ce484222325ULL ^ seed;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint64_t tu_hash_fnv(const void *key, size_t len, uint64_t seed, void *ctx)
{
	(void)ctx;
	return tu_mix64(fnv1a(key, len, seed) ^ len);
}

uint64_t tu_hash_four(const void *key, size_t len, uint64_t seed, void *ctx)
{
	static const uint64_t four[4] = {
		0x0123456789abcdefULL, 0xfedcba9876543210ULL,
		0x0f1e2d3c4b5a6978ULL, 0x8796a5b4c3d2e1f0ULL,
	};
	return four[tu_hash_fnv(key, len, seed, ctx) & 3];
}

uint64_t tu_hash_low4(const void *key, size_t len, uint64_t seed, void *ctx)
{
	return tu_hash_fnv(key, len, seed, ctx) & 0xf;
}

uint64_t tu_hash_high4(const void *key, size_t len, uint64_t seed,
		       void *ctx)
{
	return tu_hash_fnv(key, len, seed, ctx) & 0xf000000000000000ULL;
}

uint64_t tu_hash_group8(const void *key, size_t len, uint64_t seed,
			void *ctx)
{
	(void)ctx;
	return tu_mix64((tu_key_id(key, len) >> 3) ^
			((uint64_t)len << 56) ^ seed);
}

uint64_t tu_hash_const(const void *key, size_t len, uint64_t seed,
		       void *ctx)
{
	(void)key;
	(void)len;
	(void)seed;
	(void)ctx;
	return 0x5555aaaa5555aaaaULL;
}

uint64_t tu_hash_identity(const void *key, size_t len, uint64_t seed,
			  void *ctx)
{
	(void)seed;
	(void)ctx;
	return tu_key_id(key, len);
}

/* ------------------------------------------------------------------ */
/* value_free logging                                                  */
/* ------------------------------------------------------------------ */

void tu_free_log_init(struct tu_free_log *log)
{
	memset(log, 0, sizeof(*log));
}

void tu_free_log_fini(struct tu_free_log *log)
{
	free(log->ptrs);
	memset(log, 0, sizeof(*log));
}

void tu_value_free_logged(void *value, void *ctx)
{
	struct tu_free_log *log = ctx;

	log->calls++;
	if (log->n == log->cap) {
		size_t cap = log->cap ? 2 * log->cap : 64;
		void **p = realloc(log->ptrs, cap * sizeof(*p));

		if (!p)
			abort();
		log->ptrs = p;
		log->cap = cap;
	}
	log->ptrs[log->n++] = value;
}

void tu_value_free_heap(void *value, void *ctx)
{
	struct tu_free_log *log = ctx;

	log->calls++;
	free(value);
}

size_t tu_free_log_count(const struct tu_free_log *log, const void *value)
{
	size_t count = 0;

	for (size_t i = 0; i < log->n; i++)
		count += log->ptrs[i] == value;
	return count;
}

void check_values_freed(const struct tu_free_log *log, uint64_t first,
			uint64_t end, size_t times)
{
	for (uint64_t i = first; i < end; i++) {
		size_t n = tu_free_log_count(log, tu_val(i));

		TU_REQUIRE(n == times, "value %llu freed %zu times, not %zu",
			   (unsigned long long)i, n, times);
	}
}

struct cowmap_options tu_opts(uint64_t seed,
			      uint64_t (*hash)(const void *, size_t,
					       uint64_t, void *),
			      struct tu_free_log *log)
{
	struct cowmap_options o;

	memset(&o, 0, sizeof(o));
	o.seed = seed;
	o.hash = hash;
	if (log) {
		o.value_free = tu_value_free_logged;
		o.ctx = log;
	}
	return o;
}

/* ------------------------------------------------------------------ */
/* Reference model: open addressing, linear probing, backward-shift    */
/* deletion (no tombstones), keys copied into the slots.               */
/* ------------------------------------------------------------------ */

struct tu_slot {
	uint64_t hash;
	void *value;
	uint32_t len;
	uint8_t used;
	unsigned char key[TU_KEY_MAX];
};

struct tu_model {
	size_t size, cap; /* cap is a power of two */
	struct tu_slot *slots;
};

static uint64_t model_hash(const void *key, size_t len)
{
	return tu_mix64(fnv1a(key, len, 0x1234) + len);
}

static struct tu_model *model_alloc(size_t cap)
{
	struct tu_model *m = calloc(1, sizeof(*m));

	if (!m)
		abort();
	m->cap = cap;
	m->slots = calloc(cap, sizeof(*m->slots));
	if (!m->slots)
		abort();
	return m;
}

struct tu_model *tu_model_new(void)
{
	return model_alloc(16);
}

struct tu_model *tu_model_copy(const struct tu_model *m)
{
	struct tu_model *c = model_alloc(m->cap);

	memcpy(c->slots, m->slots, m->cap * sizeof(*m->slots));
	c->size = m->size;
	return c;
}

void tu_model_free(struct tu_model *m)
{
	if (!m)
		return;
	free(m->slots);
	free(m);
}

size_t tu_model_size(const struct tu_model *m)
{
	return m->size;
}

/* The slot holding @key, or SIZE_MAX. */
static size_t model_find(const struct tu_model *m, const void *key,
			 size_t len)
{
	uint64_t h = model_hash(key, len);
	size_t mask = m->cap - 1;

	for (size_t i = h & mask;; i = (i + 1) & mask) {
		const struct tu_slot *s = &m->slots[i];

		if (!s->used)
			return SIZE_MAX;
		if (s->hash == h && s->len == len &&
		    (len == 0 || memcmp(s->key, key, len) == 0))
			return i;
	}
}

static void model_put_slot(struct tu_model *m, const struct tu_slot *src)
{
	size_t mask = m->cap - 1;
	size_t i = src->hash & mask;

	while (m->slots[i].used)
		i = (i + 1) & mask;
	m->slots[i] = *src;
}

static void model_grow(struct tu_model *m)
{
	struct tu_slot *old = m->slots;
	size_t oldcap = m->cap;

	m->cap *= 2;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots)
		abort();
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].used)
			model_put_slot(m, &old[i]);
	free(old);
}

int tu_model_get(const struct tu_model *m, const void *key, size_t len,
		 void **value)
{
	size_t i = model_find(m, key, len);

	if (i == SIZE_MAX)
		return 0;
	if (value)
		*value = m->slots[i].value;
	return 1;
}

int tu_model_set(struct tu_model *m, const void *key, size_t len,
		 void *value, void **old)
{
	size_t i = model_find(m, key, len);
	struct tu_slot s;

	if (i != SIZE_MAX) {
		if (old)
			*old = m->slots[i].value;
		m->slots[i].value = value;
		return 1;
	}
	TU_REQUIRE(len <= TU_KEY_MAX, "model key length %zu too long", len);
	if (2 * (m->size + 1) > m->cap)
		model_grow(m);
	memset(&s, 0, sizeof(s));
	s.hash = model_hash(key, len);
	s.value = value;
	s.len = (uint32_t)len;
	s.used = 1;
	if (len)
		memcpy(s.key, key, len);
	model_put_slot(m, &s);
	m->size++;
	return 0;
}

int tu_model_del(struct tu_model *m, const void *key, size_t len,
		 void **old)
{
	size_t mask = m->cap - 1;
	size_t i = model_find(m, key, len);

	if (i == SIZE_MAX)
		return 0;
	if (old)
		*old = m->slots[i].value;
	/* Backward shift: pull later members of the probe run into the
	 * hole whenever their home slot does not lie after the hole. */
	for (size_t j = (i + 1) & mask; m->slots[j].used; j = (j + 1) & mask) {
		size_t home = m->slots[j].hash & mask;

		if (((j - home) & mask) >= ((j - i) & mask)) {
			m->slots[i] = m->slots[j];
			i = j;
		}
	}
	m->slots[i].used = 0;
	m->size--;
	return 1;
}

int tu_model_next(const struct tu_model *m, size_t *pos, const void **key,
		  size_t *len, void **value)
{
	for (; *pos < m->cap; (*pos)++) {
		const struct tu_slot *s = &m->slots[*pos];

		if (!s->used)
			continue;
		if (key)
			*key = s->key;
		if (len)
			*len = s->len;
		if (value)
			*value = s->value;
		(*pos)++;
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Checks                                                              */
/* ------------------------------------------------------------------ */

/* A key that is probably absent from the model, derived from @k. */
static void make_neighbour(struct tu_key *out, const void *key, size_t len)
{
	if (len)
		memcpy(out->bytes, key, len);
	if (len < TU_KEY_MAX) {
		out->bytes[len] = 0xa5;
		out->len = len + 1;
	} else {
		out->bytes[len - 1] ^= 0x80;
		out->len = len;
	}
}

void check_map_key_matches_model(const struct cowmap *map,
				 const struct tu_model *model,
				 const void *key, size_t len)
{
	void *want = NULL, *got = (void *)&got;
	int in_model = tu_model_get(model, key, len, &want);
	int rc = cowmap_get(map, key, len, &got);

	TU_REQUIRE(cowmap_size(map) == tu_model_size(model),
		   "size %zu, model %zu", cowmap_size(map),
		   tu_model_size(model));
	TU_REQUIRE(rc == in_model, "cowmap_get returned %d, model says %d",
		   rc, in_model);
	if (in_model)
		TU_REQUIRE(got == want, "cowmap_get value %p, model %p", got,
			   want);
}

#define BATCH 64

void check_get_many_matches_model(const struct cowmap *map,
				  const struct tu_model *model)
{
	static struct tu_key nb[BATCH];
	const void *keys[2 * BATCH];
	size_t lens[2 * BATCH];
	void *values[2 * BATCH];
	void *want[2 * BATCH];
	size_t pos = 0, n = 0, expect_found = 0;
	const void *key;
	size_t len;
	void *value;
	int more = 1;

	while (more) {
		more = tu_model_next(model, &pos, &key, &len, &value);
		if (more) {
			/* The model key itself, then an absent neighbour. */
			keys[n] = key;
			lens[n] = len;
			want[n] = value;
			n++;
			expect_found++;
			make_neighbour(&nb[n / 2], key, len);
			keys[n] = nb[n / 2].bytes;
			lens[n] = nb[n / 2].len;
			if (tu_model_get(model, keys[n], lens[n], &want[n]))
				expect_found++;
			else
				want[n] = NULL;
			n++;
		}
		if (n == 2 * BATCH || (!more && n > 0)) {
			size_t found;

			for (size_t i = 0; i < n; i++)
				values[i] = (void *)&values[i]; /* garbage */
			found = cowmap_get_many(map, n, keys, lens, values);
			TU_REQUIRE(found == expect_found,
				   "get_many found %zu of %zu, expected %zu",
				   found, n, expect_found);
			for (size_t i = 0; i < n; i++)
				TU_REQUIRE(values[i] == want[i],
					   "get_many key %zu (len %zu): %p, "
					   "expected %p",
					   i, lens[i], values[i], want[i]);
			n = 0;
			expect_found = 0;
		}
	}
}

void check_iter_matches_model(const struct cowmap *map,
			      const struct tu_model *model)
{
	unsigned char *seen = calloc(model->cap ? model->cap : 1, 1);
	struct cowmap_iter it;
	const void *key;
	size_t len, count = 0;
	void *value;

	TU_REQUIRE(seen != NULL, "out of memory");
	cowmap_iter_init(&it, map);
	while (cowmap_iter_next(&it, &key, &len, &value)) {
		size_t slot;

		TU_REQUIRE(count < tu_model_size(model),
			   "iteration yields more than %zu entries",
			   tu_model_size(model));
		TU_REQUIRE(len <= TU_KEY_MAX && (len == 0 || key != NULL),
			   "iteration key %p len %zu", key, len);
		slot = model_find(model, key, len);
		TU_REQUIRE(slot != SIZE_MAX,
			   "iteration yields a key (len %zu, id %llu) the "
			   "model lacks",
			   len, (unsigned long long)tu_key_id(key, len));
		TU_REQUIRE(!seen[slot],
			   "iteration yields key (len %zu, id %llu) twice", len,
			   (unsigned long long)tu_key_id(key, len));
		seen[slot] = 1;
		TU_REQUIRE(value == model->slots[slot].value,
			   "iteration value %p, model %p", value,
			   model->slots[slot].value);
		count++;
	}
	TU_REQUIRE(count == tu_model_size(model),
		   "iteration yields %zu entries, model has %zu", count,
		   tu_model_size(model));
	TU_REQUIRE(cowmap_iter_next(&it, &key, &len, &value) == 0,
		   "iteration restarts after its end");
	free(seen);
}

void check_map_matches_model(const struct cowmap *map,
			     const struct tu_model *model)
{
	size_t pos = 0;
	const void *key;
	size_t len;
	void *value;

	TU_REQUIRE(map != NULL, "map is NULL");
	TU_REQUIRE(cowmap_size(map) == tu_model_size(model),
		   "size %zu, model %zu", cowmap_size(map),
		   tu_model_size(model));
	while (tu_model_next(model, &pos, &key, &len, &value)) {
		void *got = NULL;
		int rc = cowmap_get(map, key, len, &got);

		TU_REQUIRE(rc == 1,
			   "cowmap_get(len %zu, id %llu) returned %d, "
			   "expected 1",
			   len, (unsigned long long)tu_key_id(key, len), rc);
		TU_REQUIRE(got == value,
			   "cowmap_get(len %zu, id %llu) value %p, expected %p",
			   len, (unsigned long long)tu_key_id(key, len), got,
			   value);
	}
	check_get_many_matches_model(map, model);
	check_iter_matches_model(map, model);
}

void check_txn_matches_model(const struct cowmap_txn *t,
			     const struct tu_model *model)
{
	size_t pos = 0;
	const void *key;
	size_t len;
	void *value;

	TU_REQUIRE(cowmap_txn_size(t) == tu_model_size(model),
		   "txn size %zu, model %zu", cowmap_txn_size(t),
		   tu_model_size(model));
	while (tu_model_next(model, &pos, &key, &len, &value)) {
		struct tu_key nb;
		void *got = NULL;
		int rc = cowmap_txn_get(t, key, len, &got);

		TU_REQUIRE(rc == 1 && got == value,
			   "cowmap_txn_get(len %zu, id %llu) = %d/%p, "
			   "expected 1/%p",
			   len, (unsigned long long)tu_key_id(key, len), rc,
			   got, value);
		make_neighbour(&nb, key, len);
		if (!tu_model_get(model, nb.bytes, nb.len, NULL)) {
			rc = cowmap_txn_get(t, nb.bytes, nb.len, &got);
			TU_REQUIRE(rc == 0, "cowmap_txn_get of an absent key "
					    "returned %d",
				   rc);
		}
	}
}

struct tu_model *tu_model_from_map(const struct cowmap *map)
{
	struct tu_model *model = tu_model_new();
	struct cowmap_iter it;
	const void *key;
	size_t len;
	void *value;

	cowmap_iter_init(&it, map);
	while (cowmap_iter_next(&it, &key, &len, &value))
		TU_REQUIRE(tu_model_set(model, key, len, value, NULL) == 0,
			   "iteration yields a key twice");
	return model;
}

void check_stats_equal(const struct cowmap_stats *a,
		       const struct cowmap_stats *b)
{
	TU_REQUIRE(a->entries == b->entries, "entries %zu != %zu", a->entries,
		   b->entries);
	TU_REQUIRE(a->nodes == b->nodes, "nodes %zu != %zu", a->nodes,
		   b->nodes);
	TU_REQUIRE(a->bytes == b->bytes, "bytes %zu != %zu", a->bytes,
		   b->bytes);
	TU_REQUIRE(a->max_depth == b->max_depth, "max_depth %zu != %zu",
		   a->max_depth, b->max_depth);
}

struct cowmap_stats tu_stats(const struct cowmap *m)
{
	struct cowmap_stats st;
	int rc;

	memset(&st, 0, sizeof(st));
	rc = cowmap_stats(m, &st);
	TU_REQUIRE(rc == 0, "cowmap_stats returned %d", rc);
	return st;
}

/* ------------------------------------------------------------------ */
/* Building maps                                                       */
/* ------------------------------------------------------------------ */

static struct cowmap *map_new(const struct cowmap_options *o)
{
	struct cowmap *m = cowmap_new(o);

	ck_assert_ptr_nonnull(m);
	return m;
}

struct cowmap *tu_map_new(uint64_t seed,
			  uint64_t (*hash)(const void *, size_t, uint64_t,
					   void *),
			  struct tu_free_log *log)
{
	struct cowmap_options o = tu_opts(seed, hash, log);

	return map_new(&o);
}

struct cowmap *tu_map_new_limited(uint64_t seed, struct tu_free_log *log,
				  size_t max_entries)
{
	struct cowmap_options o = tu_opts(seed, NULL, log);

	o.max_entries = max_entries;
	return map_new(&o);
}

struct cowmap *tu_set_replace(struct cowmap *m, const void *key, size_t len,
			      void *value)
{
	struct cowmap *next = cowmap_set(m, key, len, value);

	TU_REQUIRE(next != NULL, "cowmap_set(len %zu, id %llu) failed: %s",
		   len, (unsigned long long)tu_key_id(key, len),
		   strerror(errno));
	cowmap_release(m);
	return next;
}

struct cowmap *tu_del_replace(struct cowmap *m, const void *key, size_t len)
{
	struct cowmap *next = cowmap_del(m, key, len);

	TU_REQUIRE(next != NULL, "cowmap_del(len %zu, id %llu) failed: %s",
		   len, (unsigned long long)tu_key_id(key, len),
		   strerror(errno));
	cowmap_release(m);
	return next;
}

struct cowmap *tu_fill(struct cowmap *m, struct tu_model *model, size_t len,
		       uint64_t first, uint64_t n, uint64_t vbase)
{
	struct tu_key k;

	for (uint64_t id = first; id < first + n; id++) {
		tu_key_make(&k, len, id);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(id + vbase));
		if (model)
			tu_model_set(model, k.bytes, k.len, tu_val(id + vbase),
				     NULL);
	}
	return m;
}

struct tu_entry *tu_iter_collect(const struct cowmap *m, size_t *n)
{
	size_t cap = cowmap_size(m) + 1;
	struct tu_entry *e = calloc(cap, sizeof(*e));
	struct cowmap_iter it;
	const void *key;
	size_t len;
	void *value;

	TU_REQUIRE(e != NULL, "out of memory");
	*n = 0;
	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, &key, &len, &value)) {
		TU_REQUIRE(*n < cap - 1, "iteration yields more than size()");
		e[*n].len = len;
		e[*n].id = tu_key_id(key, len);
		e[*n].value = value;
		(*n)++;
	}
	return e;
}

/* ------------------------------------------------------------------ */
/* Misc                                                                */
/* ------------------------------------------------------------------ */

long tu_env_long(const char *name, long dflt)
{
	const char *s = getenv(name);
	char *end;
	long v;

	if (!s || !*s)
		return dflt;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0)
		return dflt;
	return v;
}

bool tu_verbose(void)
{
	const char *s = getenv("COWMAP_TEST_VERBOSE");

	return s != NULL && *s != '\0' && *s != '0';
}

double tu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A size_t of 0xa5 bytes: what the poisoned stats hold until written. */
#define TU_POISON ((size_t)UINT64_C(0xa5a5a5a5a5a5a5a5))

struct cowmap_cell_stats tu_cell_stats(struct cowmap_cell *c)
{
	struct cowmap_cell_stats st;

	memset(&st, 0xa5, sizeof(st));
	ck_assert_int_eq(cowmap_cell_stats(c, &st), 0);
	TU_REQUIRE(st.published != UINT64_C(0xa5a5a5a5a5a5a5a5) &&
			   st.pending_bytes != TU_POISON &&
			   st.pending_nodes != TU_POISON &&
			   st.pending_versions != TU_POISON,
		   "cowmap_cell_stats left a field unwritten");
	return st;
}

int tu_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
