/*
 * testutil.h - helpers shared by the cowmap Check suites.
 *
 * A reference model (an obviously correct map from key bytes to value
 * pointers), a seeded PRNG, key generators, hash overrides that force
 * collisions, a value_free logger, and the checks that compare a cowmap
 * version (or a draft) with the model.
 *
 * Checks in hot loops use TU_REQUIRE rather than ck_assert: Check's
 * ck_assert records the location of every *passing* assertion through a
 * pipe, which costs a system call each time.
 */
#ifndef COWMAP_TESTUTIL_H
#define COWMAP_TESTUTIL_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cowmap.h>

/* Fail the running test with a message, but pay nothing when @cond holds. */
#define TU_REQUIRE(cond, ...)                                                \
	do {                                                                 \
		if (!(cond))                                                 \
			ck_abort_msg(__VA_ARGS__);                           \
	} while (0)

/* ------------------------------------------------------------------ */
/* Deterministic PRNG (splitmix64)                                     */
/* ------------------------------------------------------------------ */

struct tu_rng {
	uint64_t state;
};

void tu_rng_init(struct tu_rng *r, uint64_t seed);
uint64_t tu_rng_next(struct tu_rng *r);
/* Uniform-enough in [0, bound); bound must be > 0. */
uint64_t tu_rng_below(struct tu_rng *r, uint64_t bound);

/* splitmix64's finaliser: a good 64-bit mixer. */
uint64_t tu_mix64(uint64_t x);

/* ------------------------------------------------------------------ */
/* Keys and values                                                     */
/* ------------------------------------------------------------------ */

#define TU_KEY_MAX 128     /* longest key the helpers handle */
#define TU_LONG_KEY_LEN 100 /* the "long key" length of the tests */

struct tu_key {
	size_t len;
	unsigned char bytes[TU_KEY_MAX];
};

/*
 * tu_key_make - the key number @id of length @len.
 *
 * The id is stored big-endian in the last min(len, 8) bytes; longer keys
 * start with a fixed filler, so long keys share a long prefix and differ
 * only at the end.  (len, id) pairs give distinct keys as long as id fits
 * in len bytes: only id 0 for len 0, id < 256 for len 1.
 */
void tu_key_make(struct tu_key *k, size_t len, uint64_t id);

/* The id tu_key_make() stored in a key (0 for the empty key). */
uint64_t tu_key_id(const void *key, size_t len);

/* How many distinct keys of length @len exist, capped at @cap. */
uint64_t tu_key_space(size_t len, uint64_t cap);

/*
 * tu_key_pick - a random key: length from @lens[0..nlens), id below
 * min(@universe, tu_key_space(len)).
 */
void tu_key_pick(struct tu_key *k, struct tu_rng *r, const size_t *lens,
		 size_t nlens, uint64_t universe);

/* A distinct, non-NULL, never dereferenced value pointer for number @i. */
void *tu_val(uint64_t i);

/* ------------------------------------------------------------------ */
/* Hash overrides (struct cowmap_options.hash); all ignore ctx.        */
/* ------------------------------------------------------------------ */

/* A decent seeded hash (FNV-1a then a 64-bit mix). */
uint64_t tu_hash_fnv(const void *key, size_t len, uint64_t seed, void *ctx);
/* Only 4 distinct hash values: almost every key fully collides. */
uint64_t tu_hash_four(const void *key, size_t len, uint64_t seed, void *ctx);
/* Only the low 4 bits vary: 16 distinct values. */
uint64_t tu_hash_low4(const void *key, size_t len, uint64_t seed, void *ctx);
/* Only the high 4 bits vary: 16 values that share every other bit, so
 * tries grow to their deepest level before keys separate. */
uint64_t tu_hash_high4(const void *key, size_t len, uint64_t seed, void *ctx);
/* Full 64-bit collisions within groups of 8 consecutive ids of one length. */
uint64_t tu_hash_group8(const void *key, size_t len, uint64_t seed,
			void *ctx);
/* The same hash for every key. */
uint64_t tu_hash_const(const void *key, size_t len, uint64_t seed,
		       void *ctx);
/* hash = tu_key_id(key): lets a test choose hash bits, hence trie shapes. */
uint64_t tu_hash_identity(const void *key, size_t len, uint64_t seed,
			  void *ctx);

/* ------------------------------------------------------------------ */
/* value_free logging                                                  */
/* ------------------------------------------------------------------ */

/*
 * Pass &log as options.ctx and tu_value_free_logged as value_free: every
 * call is counted and the freed pointer recorded.  tu_value_free_heap
 * counts (without recording) and free()s the value: for malloc'd values.
 */
struct tu_free_log {
	size_t calls;
	size_t n, cap;
	void **ptrs;
};

void tu_free_log_init(struct tu_free_log *log);
void tu_free_log_fini(struct tu_free_log *log);
void tu_value_free_logged(void *value, void *ctx);
void tu_value_free_heap(void *value, void *ctx);
/* How many times @value was passed to tu_value_free_logged. */
size_t tu_free_log_count(const struct tu_free_log *log, const void *value);

/* tu_val(i) for every i in [@first, @end) was passed to
 * tu_value_free_logged exactly @times times. */
void check_values_freed(const struct tu_free_log *log, uint64_t first,
			uint64_t end, size_t times);

/* Options with the given seed, hash (may be NULL) and value_free logger
 * (may be NULL: no value_free). */
struct cowmap_options tu_opts(uint64_t seed,
			      uint64_t (*hash)(const void *, size_t,
					       uint64_t, void *),
			      struct tu_free_log *log);

/* ------------------------------------------------------------------ */
/* Reference model                                                     */
/* ------------------------------------------------------------------ */

struct tu_model;

struct tu_model *tu_model_new(void);
struct tu_model *tu_model_copy(const struct tu_model *m);
void tu_model_free(struct tu_model *m);
size_t tu_model_size(const struct tu_model *m);
/* 1 and *value if present, 0 if absent; value may be NULL. */
int tu_model_get(const struct tu_model *m, const void *key, size_t len,
		 void **value);
/* Returns 1 if the key was present (its old value in *old), 0 if new. */
int tu_model_set(struct tu_model *m, const void *key, size_t len,
		 void *value, void **old);
/* Returns 1 if removed (its value in *old), 0 if absent. */
int tu_model_del(struct tu_model *m, const void *key, size_t len,
		 void **old);
/*
 * Iterate: start with *pos = 0; returns 1 and fills the entry (any
 * out-parameter may be NULL), 0 at the end.  The model must not change
 * while iterating.
 */
int tu_model_next(const struct tu_model *m, size_t *pos, const void **key,
		  size_t *len, void **value);

/* ------------------------------------------------------------------ */
/* Checks (fail the running test on mismatch)                          */
/* ------------------------------------------------------------------ */

/*
 * check_map_matches_model - @map holds exactly @model: size, every key
 * via cowmap_get, batches via cowmap_get_many (with keys absent from the
 * model mixed in), and a full iteration that meets every entry exactly
 * once with the right value.
 */
void check_map_matches_model(const struct cowmap *map,
			     const struct tu_model *model);

/* The cowmap_get_many part alone. */
void check_get_many_matches_model(const struct cowmap *map,
				  const struct tu_model *model);

/* The iteration part alone. */
void check_iter_matches_model(const struct cowmap *map,
			      const struct tu_model *model);

/* A draft holds exactly @model: txn_size, txn_get of every model key and
 * of absent neighbours. */
void check_txn_matches_model(const struct cowmap_txn *t,
			     const struct tu_model *model);

/* Cheap: size, and the one key that was touched. */
void check_map_key_matches_model(const struct cowmap *map,
				 const struct tu_model *model,
				 const void *key, size_t len);

/* Build a model from a map's iteration (for comparing two maps). */
struct tu_model *tu_model_from_map(const struct cowmap *map);

/* Two stats agree on every field. */
void check_stats_equal(const struct cowmap_stats *a,
		       const struct cowmap_stats *b);

/* Stats of @m; fails the test if cowmap_stats fails. */
struct cowmap_stats tu_stats(const struct cowmap *m);

/* ------------------------------------------------------------------ */
/* Building maps                                                       */
/* ------------------------------------------------------------------ */

/* An empty map with tu_opts(@seed, @hash, @log); fails the test if it
 * cannot be made. */
struct cowmap *tu_map_new(uint64_t seed,
			  uint64_t (*hash)(const void *, size_t, uint64_t,
					   void *),
			  struct tu_free_log *log);

/* The same, holding at most @max_entries entries (0: no limit). */
struct cowmap *tu_map_new_limited(uint64_t seed, struct tu_free_log *log,
				  size_t max_entries);

/* cowmap_set that must succeed: releases @m, returns the new version. */
struct cowmap *tu_set_replace(struct cowmap *m, const void *key, size_t len,
			      void *value);
/* cowmap_del that must succeed: releases @m, returns the new version. */
struct cowmap *tu_del_replace(struct cowmap *m, const void *key, size_t len);
/*
 * tu_fill - set keys (len, id) for id in [first, first + n) to
 * tu_val(id + vbase) in @m (released) and in @model (if not NULL).
 * Returns the new version.
 */
struct cowmap *tu_fill(struct cowmap *m, struct tu_model *model, size_t len,
		       uint64_t first, uint64_t n, uint64_t vbase);

/* One entry as seen by iteration, for keys made by tu_key_make(). */
struct tu_entry {
	size_t len;
	uint64_t id;
	void *value;
};
/* The entries of @m in iteration order (count in *n); free() it. */
struct tu_entry *tu_iter_collect(const struct cowmap *m, size_t *n);

/* ------------------------------------------------------------------ */
/* Misc                                                                */
/* ------------------------------------------------------------------ */

/* COWMAP_TEST_VERBOSE is set (and not 0): print what a test measured. */
bool tu_verbose(void);

/* CLOCK_MONOTONIC in seconds. */
double tu_now(void);

/* The stats of cell @c; fails the test if cowmap_cell_stats fails or
 * leaves a field unwritten (the struct is poisoned before the call). */
struct cowmap_cell_stats tu_cell_stats(struct cowmap_cell *c);

/* Run every test of @s, as make check does (CK_FORK and the other CK_
 * variables apply); the exit status for main(). */
int tu_run_suite(Suite *s);

/* getenv(@name) as a positive long, or @dflt when unset or invalid. */
long tu_env_long(const char *name, long dflt);

#endif
