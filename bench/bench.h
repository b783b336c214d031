/*
 * bench.h - what the parts of cowmap-bench share: keys, workloads, the
 * table adapters, timing and the result store.
 *
 * The benchmark compares cowmap with the tables a team would otherwise use
 * for a read-mostly shared map, in one process and one run, so that the
 * ratios it reports are taken under the same machine noise:
 *
 *   cowmap        a version published in a cowmap_cell (urcu-memb)
 *   cds_lfht      liburcu's lock-free RCU hash table (urcu-memb)
 *   ck_hs         Concurrency Kit's SPMC hash set of objects
 *   ghash_rwlock  GLib's GHashTable behind a pthread_rwlock_t
 *   copy_swap     a flat open-addressing table copied whole per update and
 *                 published with an atomic pointer (publish latency only)
 *
 * Every table stores the same thing: a private copy of the key bytes and a
 * pointer value, and every table hashes with the same SipHash-1-3
 * (cm_hash_keyed() under the key derived from BENCH_SEED; cowmap uses its
 * built-in hash, the same function, with options.seed = BENCH_SEED).
 */
#ifndef COWMAP_BENCH_H
#define COWMAP_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_SEED UINT64_C(0x5eed5eed12345678)

/*
 * One key with the value it maps to.  Query keys (the workload arrays) and
 * the objects stored by ck_hs, GHashTable and copy_swap share this layout,
 * so the tables' compare callbacks accept either.
 */
struct kv {
	void *value;
	uint32_t len;
	unsigned char key[];
};

static inline size_t kv_size(uint32_t len)
{
	return sizeof(struct kv) + len;
}

/* A private heap copy of @q (the "copied key bytes" every table keeps). */
struct kv *kv_copy(const struct kv *q, void *value);

/* SipHash-1-3 under BENCH_SEED: the hash every peer uses. */
uint64_t bench_hash(const struct kv *q);

/*
 * A workload: n distinct keys.  keys[] is insertion order; order[] is the
 * same keys in a random lookup order, laid out contiguously in that order
 * so the harness's own reads of the query keys stream from memory and do
 * not add a cache miss to every lookup.  kptr/klen are order[] unpacked
 * for cowmap_get_many().
 */
struct workload {
	char name[32];
	char desc[64];
	size_t n;
	struct kv **keys;
	struct kv **order;
	const void **kptr;
	size_t *klen;
	void *arena_keys, *arena_order;
	/* How it was made, so that a fresh process can make it again
	 * (the RSS probe of cowmap-bench.c): words_path NULL for random. */
	const char *words_path;
	size_t limit;	/* n for random keys, the line limit for words */
	uint64_t seed;
};

struct workload *workload_random(const char *name, size_t n, uint64_t seed);
/* The lines of @path (deduplicated), at most @limit of them (0 = all). */
struct workload *workload_words(const char *name, const char *path,
				size_t limit, uint64_t seed);
void workload_free(struct workload *w);

/* splitmix64: the benchmark's only random number generator. */
static inline uint64_t bench_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* ---- deferred freeing for the peers' writers ---- */

/*
 * Objects a writer unlinked from a lock-free table are freed after an RCU
 * grace period, in batches (one call_rcu per batch), so the peers need no
 * rcu_head per entry.  One retire list per writer thread.
 */
struct retire_batch;
struct retire {
	struct retire_batch *batch;
};
void retire_push(struct retire *r, void *p);
void retire_flush(struct retire *r);

/* ---- table adapters ---- */

/*
 * A table under test.  read_loop performs @count lookups of order[pos],
 * order[pos+1], ... (wrapping at n), each inside its own read-side
 * protection (rcu_read_lock, or the read lock), adds the hits to *hits and
 * returns a value derived from the values found so nothing is optimised
 * away.  write_one publishes one single-key change the way that table's
 * users would; it is only called by one writer thread at a time except for
 * cowmap.
 */
struct impl {
	const char *name;
	bool is_peer;	/* compared against cowmap */
	void *(*build)(struct kv *const *keys, size_t n);
	void (*destroy)(void *t);
	uintptr_t (*read_loop)(void *t, struct kv *const *order, size_t n,
			       size_t pos, size_t count, uint64_t *hits);
	void (*write_one)(void *t, const struct kv *q, void *value,
			  struct retire *r);
	/* Wait until what write_one replaced in @t is freed. */
	void (*settle)(void *t);
};

/* cowmap built with one cowmap_txn_set per key instead of one
 * cowmap_txn_set_many (the "build" figure); destroy with impl_cowmap. */
void *bench_cowmap_build_singly(struct kv *const *keys, size_t n);
extern const struct impl impl_cowmap, impl_lfht, impl_ckhs, impl_ghash;
/* bench/peers_cxx.cc (C++ libraries). */
extern const struct impl impl_boost_flat, impl_cuckoo;
#define BENCH_NIMPL 6
extern const struct impl *const bench_impls[BENCH_NIMPL];

/* cowmap specifics (bench/peers.c). */
struct cowmap_cell *bench_cowmap_cell(void *t);

/*
 * copy_swap: built once, then each publish copies the whole slot array,
 * changes one slot and swaps the pointer; the old array is freed after
 * synchronize_rcu().  cs_publish() returns the nanoseconds the copy and
 * swap took (the publish latency), excluding the grace period.
 */
void *cs_build(struct kv *const *keys, size_t n);
uint64_t cs_publish(void *t, const struct kv *q, void *value);
void cs_destroy(void *t);

/* boost_flat's publish (bench/peers_cxx.cc): copy, change, swap, timed
 * like cs_publish(); the table comes from impl_boost_flat.build. */
uint64_t bench_flat_publish(void *t, const struct kv *q, void *value);

/* ---- timing, statistics, results ---- */

uint64_t now_ns(void);
double median(double *v, size_t n);	/* sorts v */
double percentile(double *v, size_t n, double p);	/* sorts v */
size_t heap_in_use(void);	/* mallinfo2: bytes in use (arenas + mmap) */

void result_add(const char *workload, const char *metric, const char *impl,
		double value, const char *unit);
/* NAN when not measured. */
double result_get(const char *workload, const char *metric, const char *impl);
int results_write_csv(const char *path);

#endif
