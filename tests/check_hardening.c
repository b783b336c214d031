/*
 * check_hardening.c - hostile input: hash flooding, full hash collisions,
 * max_entries on every writing call, and the version macros.
 *
 * Flooding.  An attacker who knows the hash seed can search for keys
 * whose hashes share many low bits: those keys pile up on one path of the
 * trie.  The test runs that search against seed A (2^21 candidate keys,
 * using the library's own cm_hash_bytes), shows that the keys it finds
 * do build a deep trie under seed A (cowmap_stats: max_depth), and that
 * under seed B they are ordinary keys.  Seeds default to a fresh random
 * value per map, so two maps built alike iterate in different orders.
 *
 * Collisions.  With a hash override that gives every key the same hash,
 * N = 2000 keys share one collision node at depth 13.  Everything still
 * works (get, get_many, set, del, iteration, diff, equal, transactions),
 * and the costs that can be observed without a clock stay bounded: every
 * lookup calls the hash exactly once and allocates nothing, and every
 * update allocates at most one path (13 bitmap nodes, the collision node,
 * the version shell and the key's leaf), whatever N is.
 *
 * Keys are byte strings: NUL bytes, prefixes and a 1 MiB key are keys
 * like any other.
 *
 * Limits.  max_entries is enforced by cowmap_set, cowmap_txn_set,
 * cowmap_cell_set (also when concurrent calls are combined into one
 * transaction) and cowmap_cell_update; a refused update changes nothing,
 * publishes nothing and leaves the value with the caller, and replacing
 * the value of an existing key at the limit still works.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include "config.h"

#include "alloc.h"
#include "hash.h"
#include "testutil.h"

Suite *hardening_suite(void);

#define SEED_A UINT64_C(0x5eed00000000000a)
#define SEED_B UINT64_C(0x5eed00000000000b)

/* ------------------------------------------------------------------ */
/* Hash flooding                                                       */
/* ------------------------------------------------------------------ */

#define FLOOD_BITS 20
#define FLOOD_MASK ((UINT64_C(1) << FLOOD_BITS) - 1)
#define FLOOD_TRIES (UINT64_C(1) << 21)
#define FLOOD_MAX 64

static uint64_t flood_key_hash(uint64_t id, uint64_t seed)
{
	unsigned char key[8];

	for (int i = 0; i < 8; i++)
		key[i] = (unsigned char)(id >> (8 * i));
	return cm_hash_bytes(key, sizeof(key), seed);
}

/*
 * The attacker's search: among FLOOD_TRIES candidate keys (8-byte ids),
 * the largest group whose hashes under @seed agree in their low
 * FLOOD_BITS bits.  Returns the group size; ids in @ids.
 */
static size_t flood_search(uint64_t seed, uint64_t ids[FLOOD_MAX])
{
	uint8_t *count = calloc((size_t)1 << FLOOD_BITS, 1);
	uint64_t best = 0;
	size_t n = 0;

	ck_assert_ptr_nonnull(count);
	for (uint64_t id = 0; id < FLOOD_TRIES; id++) {
		uint64_t b = flood_key_hash(id, seed) & FLOOD_MASK;

		if (count[b] < 255)
			count[b]++;
		if (count[b] > count[best])
			best = b;
	}
	for (uint64_t id = 0; id < FLOOD_TRIES && n < FLOOD_MAX; id++)
		if ((flood_key_hash(id, seed) & FLOOD_MASK) == best)
			ids[n++] = id;
	free(count);
	return n;
}

static struct cowmap *map_of_ids(uint64_t seed, const uint64_t *ids, size_t n)
{
	struct cowmap_options o = { .seed = seed };
	struct cowmap *m = cowmap_new(&o);

	ck_assert_ptr_nonnull(m);
	for (size_t i = 0; i < n; i++) {
		unsigned char key[8];

		for (int b = 0; b < 8; b++)
			key[b] = (unsigned char)(ids[i] >> (8 * b));
		m = tu_set_replace(m, key, sizeof(key), tu_val(i));
	}
	return m;
}

START_TEST(flood_keys_found_for_one_seed_are_ordinary_under_another)
{
	uint64_t ids[FLOOD_MAX];
	size_t n = flood_search(SEED_A, ids);
	struct cowmap *a, *b;
	struct cowmap_stats sa, sb;

	/* 2^21 tries into 2^20 buckets: the fullest holds several keys. */
	ck_assert_uint_ge(n, 4);

	/* Under seed A they share FLOOD_BITS = 4 chunks of 5 bits: the trie
	 * holds them in one subtree at depth 4 or deeper. */
	a = map_of_ids(SEED_A, ids, n);
	sa = tu_stats(a);
	ck_assert_uint_eq(sa.entries, n);
	ck_assert_uint_ge(sa.max_depth, FLOOD_BITS / 5);

	/* Under seed B no two of them agree in those bits: the same keys
	 * give a shallow trie. */
	for (size_t i = 0; i < n; i++)
		for (size_t j = i + 1; j < n; j++)
			ck_assert_uint_ne(flood_key_hash(ids[i], SEED_B) & FLOOD_MASK,
					  flood_key_hash(ids[j], SEED_B) & FLOOD_MASK);
	b = map_of_ids(SEED_B, ids, n);
	sb = tu_stats(b);
	ck_assert_uint_eq(sb.entries, n);
	ck_assert_uint_lt(sb.max_depth, FLOOD_BITS / 5);
	ck_assert_uint_lt(sb.nodes, sa.nodes);

	/* The two maps hold the same keys: equal by content (compared key
	 * by key, their seeds differ). */
	ck_assert_int_eq(cowmap_equal(a, b, NULL, NULL), 1);
	cowmap_release(a);
	cowmap_release(b);
}
END_TEST

/*
 * SipHash-1-3 written the plain way, byte by byte, from the paper's
 * description: the library reads key tails with overlapping word loads
 * and derives the key once per map, and must still compute this.
 */
static uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static void sip_round(uint64_t v[4])
{
	v[0] += v[1]; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32);
	v[2] += v[3]; v[3] = rotl(v[3], 16); v[3] ^= v[2];
	v[0] += v[3]; v[3] = rotl(v[3], 21); v[3] ^= v[0];
	v[2] += v[1]; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32);
}

static uint64_t reference_siphash13(uint64_t k0, uint64_t k1,
				    const unsigned char *p, size_t len)
{
	uint64_t v[4] = { k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
			  k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL };
	uint64_t m = 0;
	size_t i;

	for (i = 0; i < len; i++) {
		m |= (uint64_t)p[i] << (8 * (i % 8));
		if (i % 8 == 7) {
			v[3] ^= m;
			sip_round(v);
			v[0] ^= m;
			m = 0;
		}
	}
	m |= (uint64_t)(len & 0xff) << 56;
	v[3] ^= m;
	sip_round(v);
	v[0] ^= m;
	v[2] ^= 0xff;
	for (i = 0; i < 3; i++)
		sip_round(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

START_TEST(builtin_hash_is_siphash13_for_every_tail_length)
{
	unsigned char buf[80];
	uint64_t seeds[] = { 1, 0x9e3779b97f4a7c15ULL, UINT64_MAX };

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 37 + 11);
	for (size_t si = 0; si < sizeof(seeds) / sizeof(seeds[0]); si++) {
		struct cm_sipkey k = cm_sipkey_from_seed(seeds[si]);

		for (size_t off = 0; off < 3; off++)
			for (size_t len = 0; len + off <= sizeof(buf); len++) {
				uint64_t want = reference_siphash13(
					k.k0, k.k1, buf + off, len);

				ck_assert_uint_eq(cm_hash_keyed(&k, buf + off, len),
						  want);
				ck_assert_uint_eq(cm_hash_bytes(buf + off, len,
								seeds[si]),
						  want);
			}
	}
}
END_TEST

START_TEST(the_default_seed_is_random_per_map)
{
	struct cowmap *m1 = cowmap_new(NULL), *m2, *s1, *s2;
	struct cowmap_options fixed = { .seed = SEED_A };
	struct tu_entry *e1, *e2;
	size_t n1, n2, same = 0;

	m2 = cowmap_new(NULL);
	ck_assert_ptr_nonnull(m1);
	ck_assert_ptr_nonnull(m2);
	m1 = tu_fill(m1, NULL, 8, 0, 1000, 0);
	m2 = tu_fill(m2, NULL, 8, 0, 1000, 0);
	e1 = tu_iter_collect(m1, &n1);
	e2 = tu_iter_collect(m2, &n2);
	ck_assert_uint_eq(n1, 1000);
	ck_assert_uint_eq(n2, 1000);
	for (size_t i = 0; i < n1; i++)
		same += e1[i].id == e2[i].id;
	/* Two random seeds give two unrelated orders: about one position in
	 * a thousand agrees by chance. */
	ck_assert_msg(same < 100, "%zu of 1000 positions agree", same);
	ck_assert_int_eq(cowmap_equal(m1, m2, NULL, NULL), 1);
	free(e1);
	free(e2);

	/* A fixed seed gives the same order every time. */
	s1 = tu_fill(cowmap_new(&fixed), NULL, 8, 0, 1000, 0);
	s2 = tu_fill(cowmap_new(&fixed), NULL, 8, 0, 1000, 0);
	e1 = tu_iter_collect(s1, &n1);
	e2 = tu_iter_collect(s2, &n2);
	for (size_t i = 0; i < n1; i++)
		ck_assert_uint_eq(e1[i].id, e2[i].id);
	free(e1);
	free(e2);
	cowmap_release(s1);
	cowmap_release(s2);
	cowmap_release(m1);
	cowmap_release(m2);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Full collisions                                                     */
/* ------------------------------------------------------------------ */

#define NCOLL 2000
#define COLL_HASH UINT64_C(0x0123456789abcdef)

struct hash_counter {
	unsigned long calls;
};

static uint64_t one_hash(const void *key, size_t len, uint64_t seed,
			 void *ctx)
{
	struct hash_counter *hc = ctx;

	(void)key, (void)len, (void)seed;
	hc->calls++;
	return COLL_HASH;
}

/* Key i of the collision tests: lengths vary across the inline/boxed
 * boundary (8, 12, 13 and 100 bytes) and include the empty key. */
static void coll_key(struct tu_key *k, uint64_t i)
{
	static const size_t lens[4] = { 8, 12, 13, TU_LONG_KEY_LEN };

	if (i == 0) {
		tu_key_make(k, 0, 0);
		return;
	}
	tu_key_make(k, lens[i % 4], i);
}

static struct cowmap *collision_map(struct hash_counter *hc, size_t n,
				    uint64_t vbase)
{
	struct cowmap_options o = { .seed = SEED_A, .hash = one_hash,
				    .ctx = hc };
	struct cowmap *m = cowmap_new(&o);

	ck_assert_ptr_nonnull(m);
	for (uint64_t i = 0; i < n; i++) {
		struct tu_key k;

		coll_key(&k, i);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i + vbase));
	}
	return m;
}

static int count_changes(enum cowmap_change what, const void *key,
			 size_t len, void *old_value, void *new_value,
			 void *ctx)
{
	size_t *counts = ctx;

	(void)key, (void)len, (void)old_value, (void)new_value;
	counts[what]++;
	return 0;
}

START_TEST(full_collisions_stay_correct)
{
	struct hash_counter hc = { 0 };
	struct cowmap *m = collision_map(&hc, NCOLL, 0), *half;
	struct cowmap_stats st = tu_stats(m);
	struct tu_key k;
	void *v;

	/* One collision node at depth 13 under a chain of single-child
	 * nodes: root + 12 + 1. */
	ck_assert_uint_eq(st.entries, NCOLL);
	ck_assert_uint_eq(st.max_depth, 13);
	ck_assert_uint_eq(st.nodes, 14);

	for (uint64_t i = 0; i < NCOLL; i++) {
		coll_key(&k, i);
		TU_REQUIRE(cowmap_get(m, k.bytes, k.len, &v) == 1 &&
				   v == tu_val(i),
			   "key %llu lost among collisions",
			   (unsigned long long)i);
	}
	for (uint64_t i = NCOLL; i < NCOLL + 200; i++) {	/* misses */
		coll_key(&k, i);
		TU_REQUIRE(cowmap_get(m, k.bytes, k.len, &v) == 0,
			   "absent key %llu found", (unsigned long long)i);
	}

	/* Iteration: every key once. */
	size_t n;
	struct tu_entry *e = tu_iter_collect(m, &n);
	unsigned char *seen = calloc(NCOLL, 1);

	ck_assert_uint_eq(n, NCOLL);
	for (size_t i = 0; i < n; i++) {
		uint64_t id = e[i].id;

		ck_assert_uint_lt(id, NCOLL);
		ck_assert(!seen[id]);
		seen[id] = 1;
		ck_assert_ptr_eq(e[i].value, tu_val(id));
	}
	free(seen);
	free(e);

	/* get_many across the collision node, hits and misses mixed. */
	const void *keys[64];
	size_t lens[64];
	void *vals[64];
	struct tu_key kk[64];

	for (int i = 0; i < 64; i++) {
		coll_key(&kk[i], (uint64_t)i * 61);	/* some beyond NCOLL */
		keys[i] = kk[i].bytes;
		lens[i] = kk[i].len;
	}
	size_t found = cowmap_get_many(m, 64, keys, lens, vals);
	size_t expect = 0;

	for (int i = 0; i < 64; i++) {
		uint64_t id = (uint64_t)i * 61;

		expect += id < NCOLL;
		ck_assert_ptr_eq(vals[i], id < NCOLL ? tu_val(id) : NULL);
	}
	ck_assert_uint_eq(found, expect);

	/* Delete every other key; diff and equal against the full map. */
	half = cowmap_retain(m);
	for (uint64_t i = 0; i < NCOLL; i += 2) {
		coll_key(&k, i);
		half = tu_del_replace(half, k.bytes, k.len);
	}
	ck_assert_uint_eq(cowmap_size(half), NCOLL / 2);
	for (uint64_t i = 0; i < NCOLL; i++) {
		coll_key(&k, i);
		TU_REQUIRE(cowmap_get(half, k.bytes, k.len, NULL) == (int)(i % 2),
			   "key %llu wrong after deletes", (unsigned long long)i);
	}

	size_t counts[3] = { 0, 0, 0 };

	ck_assert_int_eq(cowmap_diff(m, half, count_changes, counts), 0);
	ck_assert_uint_eq(counts[COWMAP_REMOVED], NCOLL / 2);
	ck_assert_uint_eq(counts[COWMAP_ADDED] + counts[COWMAP_CHANGED], 0);
	ck_assert_int_eq(cowmap_equal(m, half, NULL, NULL), 0);

	/* The same keys inserted in another order: equal, no difference,
	 * the same shape (collision nodes hold entries in insertion order,
	 * so the comparison must search them). */
	struct cowmap *rev = cowmap_retain(m);

	for (uint64_t i = 0; i < NCOLL; i += 2) {
		coll_key(&k, i);
		rev = tu_del_replace(rev, k.bytes, k.len);
	}
	for (uint64_t i = NCOLL; i-- > 0;) {
		if (i % 2 == 0) {
			coll_key(&k, i);
			rev = tu_set_replace(rev, k.bytes, k.len, tu_val(i));
		}
	}
	ck_assert_int_eq(cowmap_equal(m, rev, NULL, NULL), 1);
	memset(counts, 0, sizeof(counts));
	ck_assert_int_eq(cowmap_diff(m, rev, count_changes, counts), 0);
	ck_assert_uint_eq(counts[0] + counts[1] + counts[2], 0);
	struct cowmap_stats sr = tu_stats(rev);

	check_stats_equal(&st, &sr);

	/* Delete down to one key: the trie collapses back to the root. */
	struct cowmap *one = cowmap_retain(half);

	for (uint64_t i = 1; i < NCOLL - 1; i += 2) {
		coll_key(&k, i);
		one = tu_del_replace(one, k.bytes, k.len);
	}
	ck_assert_uint_eq(cowmap_size(one), 1);
	st = tu_stats(one);
	ck_assert_uint_eq(st.nodes, 1);
	ck_assert_uint_eq(st.max_depth, 0);

	cowmap_release(one);
	cowmap_release(rev);
	cowmap_release(half);
	cowmap_release(m);
}
END_TEST

START_TEST(collision_lookups_hash_once_and_allocate_nothing)
{
	struct hash_counter hc = { 0 };
	struct cowmap *m = collision_map(&hc, NCOLL, 0);
	struct tu_key k;
	unsigned long max_allocs = 0;

	for (uint64_t i = 0; i < NCOLL + 100; i += 7) {
		unsigned long calls = hc.calls, allocs = cm_test_alloc_count();

		coll_key(&k, i);
		ck_assert_int_eq(cowmap_get(m, k.bytes, k.len, NULL),
				 i < NCOLL ? 1 : 0);
		ck_assert_uint_eq(hc.calls - calls, 1);
		ck_assert_uint_eq(cm_test_alloc_count() - allocs, 0);
	}

	/* Updates: one hash, one path of allocations, independent of N. */
	for (uint64_t i = 0; i < NCOLL + 100; i += 13) {
		unsigned long calls = hc.calls, allocs = cm_test_alloc_count();
		struct cowmap *n;

		coll_key(&k, i);
		n = cowmap_set(m, k.bytes, k.len, tu_val(i + 5000));
		ck_assert_ptr_nonnull(n);
		ck_assert_uint_eq(hc.calls - calls, 1);
		allocs = cm_test_alloc_count() - allocs;
		if (allocs > max_allocs)
			max_allocs = allocs;
		cowmap_release(n);

		calls = hc.calls;
		n = cowmap_del(m, k.bytes, k.len);
		ck_assert_ptr_nonnull(n);
		ck_assert_uint_eq(hc.calls - calls, 1);
		cowmap_release(n);
	}
	/* 13 bitmap nodes + the collision node + the shell + a leaf. */
	ck_assert_uint_le(max_allocs, 16);
	cowmap_release(m);
}
END_TEST

START_TEST(full_collisions_in_a_transaction)
{
	struct hash_counter hc = { 0 };
	struct cowmap *base = collision_map(&hc, 0, 0), *c, *p;
	struct cowmap_txn *t = cowmap_txn_begin(base);
	struct tu_key k;

	ck_assert_ptr_nonnull(t);
	for (uint64_t i = 0; i < NCOLL; i++) {
		coll_key(&k, i);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, tu_val(i)), 0);
	}
	for (uint64_t i = 0; i < NCOLL; i += 3) {
		coll_key(&k, i);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 0);
	}
	c = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(c);

	/* The same contents built persistently, in reverse order. */
	p = cowmap_retain(base);
	for (uint64_t i = NCOLL; i-- > 0;)
		if (i % 3 != 0) {
			coll_key(&k, i);
			p = tu_set_replace(p, k.bytes, k.len, tu_val(i));
		}
	ck_assert_uint_eq(cowmap_size(c), cowmap_size(p));
	ck_assert_int_eq(cowmap_equal(c, p, NULL, NULL), 1);
	struct cowmap_stats sc = tu_stats(c), sp = tu_stats(p);

	check_stats_equal(&sc, &sp);

	/* And emptied again in one transaction. */
	t = cowmap_txn_begin(c);
	for (uint64_t i = 0; i < NCOLL; i++) {
		coll_key(&k, i);
		ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len),
				 i % 3 != 0 ? 1 : 0);
	}
	cowmap_release(p);
	p = cowmap_txn_commit(t);
	ck_assert_uint_eq(cowmap_size(p), 0);
	sp = tu_stats(p);
	ck_assert_uint_eq(sp.nodes, 1);
	ck_assert_int_eq(cowmap_equal(p, base, NULL, NULL), 1);
	cowmap_release(p);
	cowmap_release(c);
	cowmap_release(base);
}
END_TEST

/* Two groups that collide fully, whose hashes differ only in the top bit:
 * two collision nodes under one deep chain. */
static uint64_t two_hashes(const void *key, size_t len, uint64_t seed,
			   void *ctx)
{
	(void)seed, (void)ctx;
	return COLL_HASH ^ ((tu_key_id(key, len) & 1) << 63);
}

START_TEST(two_collision_groups_that_split_at_the_last_level)
{
	struct cowmap_options o = { .seed = SEED_A, .hash = two_hashes };
	struct cowmap *m = cowmap_new(&o);
	struct cowmap_stats st;
	struct tu_key k;

	for (uint64_t i = 0; i < 400; i++) {
		tu_key_make(&k, 8, i);
		m = tu_set_replace(m, k.bytes, k.len, tu_val(i));
	}
	st = tu_stats(m);
	ck_assert_uint_eq(st.max_depth, 13);
	/* root + 11 single-child nodes + the node at depth 12 where the
	 * groups part + two collision nodes */
	ck_assert_uint_eq(st.nodes, 15);
	for (uint64_t i = 0; i < 400; i++) {
		tu_key_make(&k, 8, i);
		TU_REQUIRE(cowmap_get(m, k.bytes, k.len, NULL) == 1,
			   "key %llu lost", (unsigned long long)i);
	}
	/* Remove all odd keys: one collision node is left, still at 13. */
	for (uint64_t i = 1; i < 400; i += 2) {
		tu_key_make(&k, 8, i);
		m = tu_del_replace(m, k.bytes, k.len);
	}
	st = tu_stats(m);
	ck_assert_uint_eq(st.entries, 200);
	ck_assert_uint_eq(st.max_depth, 13);
	ck_assert_uint_eq(st.nodes, 14);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Hostile keys                                                        */
/* ------------------------------------------------------------------ */

/* Keys are byte strings, not C strings: NUL bytes, prefixes of each
 * other across the inline/boxed boundary (12/13 bytes), and a 1 MiB key
 * are all distinct keys. */
START_TEST(binary_and_huge_keys_are_distinct_keys)
{
	struct cowmap_options o = { .seed = SEED_A };
	struct cowmap *m = cowmap_new(&o);
	static const unsigned char zeros[16];
	size_t big_len = (size_t)1 << 20;
	unsigned char *big = malloc(big_len);
	void *v;

	ck_assert_ptr_nonnull(m);
	ck_assert_ptr_nonnull(big);
	memset(big, 0xab, big_len);
	for (size_t len = 0; len <= 16; len++)	/* "", "\0", "\0\0", ... */
		m = tu_set_replace(m, zeros, len, tu_val(len));
	m = tu_set_replace(m, "a\0b", 3, tu_val(100));
	m = tu_set_replace(m, "a\0c", 3, tu_val(101));
	m = tu_set_replace(m, big, big_len, tu_val(102));
	big[big_len - 1] ^= 1;
	m = tu_set_replace(m, big, big_len, tu_val(103));
	ck_assert_uint_eq(cowmap_size(m), 17 + 4);

	for (size_t len = 0; len <= 16; len++) {
		ck_assert_int_eq(cowmap_get(m, zeros, len, &v), 1);
		ck_assert_ptr_eq(v, tu_val(len));
	}
	ck_assert_int_eq(cowmap_get(m, "a\0b", 3, &v), 1);
	ck_assert_ptr_eq(v, tu_val(100));
	ck_assert_int_eq(cowmap_get(m, "a\0d", 3, &v), 0);
	ck_assert_int_eq(cowmap_get(m, big, big_len, &v), 1);
	ck_assert_ptr_eq(v, tu_val(103));
	big[big_len - 1] ^= 1;
	ck_assert_int_eq(cowmap_get(m, big, big_len, &v), 1);
	ck_assert_ptr_eq(v, tu_val(102));
	ck_assert_int_eq(cowmap_get(m, big, big_len - 1, &v), 0);

	/* Iteration returns the bytes, lengths included. */
	struct cowmap_iter it;
	const void *key;
	size_t len, seen_big = 0;

	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, &key, &len, &v))
		if (len == big_len) {
			ck_assert(memcmp(key, big, big_len - 1) == 0);
			seen_big++;
		}
	ck_assert_uint_eq(seen_big, 2);
	free(big);
	cowmap_release(m);
}
END_TEST

/* ------------------------------------------------------------------ */
/* max_entries                                                         */
/* ------------------------------------------------------------------ */

#define LIMIT 16

static char lvals[4096];
static atomic_uint lfreed[4096];

static void lval_free(void *value, void *ctx)
{
	(void)ctx;
	atomic_fetch_add(&lfreed[(char *)value - lvals], 1);
}

static void *lval(int i)
{
	return &lvals[i];
}

static void lreset(void)
{
	for (size_t i = 0; i < sizeof(lvals); i++)
		atomic_store(&lfreed[i], 0);
}

/* A map at its limit: keys 0..LIMIT-1 -> lval(0..LIMIT-1), owned. */
static struct cowmap *full_map(void)
{
	struct cowmap_options o = { .seed = SEED_B, .value_free = lval_free,
				    .max_entries = LIMIT };
	struct cowmap *m = cowmap_new(&o);
	struct tu_key k;

	ck_assert_ptr_nonnull(m);
	for (int i = 0; i < LIMIT; i++) {
		tu_key_make(&k, 8, (uint64_t)i);
		m = tu_set_replace(m, k.bytes, k.len, lval(i));
	}
	ck_assert_uint_eq(cowmap_size(m), LIMIT);
	return m;
}

START_TEST(set_at_the_limit_is_enospc_and_changes_nothing)
{
	struct cowmap *m, *n;
	struct tu_key k;
	void *v;

	lreset();
	m = full_map();
	tu_key_make(&k, 8, 1000);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, k.bytes, k.len, lval(100)));
	ck_assert_int_eq(errno, ENOSPC);
	ck_assert_uint_eq(cowmap_size(m), LIMIT);
	ck_assert_int_eq(cowmap_get(m, k.bytes, k.len, NULL), 0);

	/* Replacing an existing key at the limit works. */
	tu_key_make(&k, 8, 3);
	n = cowmap_set(m, k.bytes, k.len, lval(101));
	ck_assert_ptr_nonnull(n);
	ck_assert_uint_eq(cowmap_size(n), LIMIT);
	ck_assert_int_eq(cowmap_get(n, k.bytes, k.len, &v), 1);
	ck_assert_ptr_eq(v, lval(101));
	/* ... and setting the value it already has returns the version
	 * (a new reference to it). */
	struct cowmap *same = cowmap_set(n, k.bytes, k.len, lval(101));

	ck_assert_ptr_eq(same, n);
	cowmap_release(same);
	cowmap_release(n);

	/* After a deletion there is room for one more, once. */
	tu_key_make(&k, 8, 5);
	m = tu_del_replace(m, k.bytes, k.len);
	tu_key_make(&k, 8, 1001);
	m = tu_set_replace(m, k.bytes, k.len, lval(102));
	tu_key_make(&k, 8, 1002);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(m, k.bytes, k.len, lval(103)));
	ck_assert_int_eq(errno, ENOSPC);

	/* The limit travels with every derived version. */
	struct cowmap_txn *t = cowmap_txn_begin(m);

	tu_key_make(&k, 8, 6);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	n = cowmap_txn_commit(t);
	tu_key_make(&k, 8, 1003);
	n = tu_set_replace(n, k.bytes, k.len, lval(104));
	tu_key_make(&k, 8, 1004);
	errno = 0;
	ck_assert_ptr_null(cowmap_set(n, k.bytes, k.len, lval(105)));
	ck_assert_int_eq(errno, ENOSPC);
	cowmap_release(n);
	cowmap_release(m);

	/* Refused values were never the map's. */
	ck_assert_uint_eq(atomic_load(&lfreed[100]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[103]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[105]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[101]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[102]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[104]), 1);
	for (int i = 0; i < LIMIT; i++)
		ck_assert_uint_eq(atomic_load(&lfreed[i]), 1);
}
END_TEST

START_TEST(txn_set_at_the_limit_is_enospc_and_keeps_the_draft)
{
	struct cowmap *m, *c;
	struct cowmap_txn *t;
	struct tu_key k;
	void *v;

	lreset();
	m = full_map();
	t = cowmap_txn_begin(m);
	ck_assert_ptr_nonnull(t);
	tu_key_make(&k, 8, 2000);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, lval(200)), -ENOSPC);
	ck_assert_uint_eq(cowmap_txn_size(t), LIMIT);
	ck_assert_int_eq(cowmap_txn_get(t, k.bytes, k.len, NULL), 0);

	/* Replacing at the limit, twice (the second replaces a value the
	 * draft itself stored, which is freed at once). */
	tu_key_make(&k, 8, 0);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, lval(201)), 0);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, lval(202)), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[201]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[0]), 0);	/* m holds it */

	/* Delete, then two new keys: the second is refused. */
	tu_key_make(&k, 8, 1);
	ck_assert_int_eq(cowmap_txn_del(t, k.bytes, k.len), 1);
	tu_key_make(&k, 8, 2001);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, lval(203)), 0);
	tu_key_make(&k, 8, 2002);
	ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len, lval(204)), -ENOSPC);
	c = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(cowmap_size(c), LIMIT);
	tu_key_make(&k, 8, 0);
	ck_assert_int_eq(cowmap_get(c, k.bytes, k.len, &v), 1);
	ck_assert_ptr_eq(v, lval(202));
	cowmap_release(c);
	cowmap_release(m);
	ck_assert_uint_eq(atomic_load(&lfreed[200]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[204]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[202]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[203]), 1);
}
END_TEST

static const struct cowmap *cell_current(struct cowmap_cell *c)
{
	const struct cowmap *m;

	urcu_memb_read_lock();
	m = cowmap_cell_load(c);
	urcu_memb_read_unlock();
	return m;	/* compared by address only */
}

START_TEST(cell_set_at_the_limit_is_enospc_and_publishes_nothing)
{
	struct cowmap_cell *c;
	struct cowmap_cell_stats before, after;
	const struct cowmap *cur;
	struct tu_key k;

	urcu_memb_register_thread();
	lreset();
	c = cowmap_cell_new(full_map(), NULL);
	ck_assert_ptr_nonnull(c);
	before = tu_cell_stats(c);
	cur = cell_current(c);

	tu_key_make(&k, 8, 3000);
	ck_assert_int_eq(cowmap_cell_set(c, k.bytes, k.len, lval(300)), -ENOSPC);
	after = tu_cell_stats(c);
	ck_assert_uint_eq(after.published, before.published);
	ck_assert_uint_eq(after.pending_versions, before.pending_versions);
	ck_assert_ptr_eq(cell_current(c), cur);

	/* Replacing at the limit publishes. */
	tu_key_make(&k, 8, 7);
	ck_assert_int_eq(cowmap_cell_set(c, k.bytes, k.len, lval(301)), 0);
	ck_assert_uint_eq(tu_cell_stats(c).published, before.published + 1);
	/* A delete makes room for exactly one. */
	ck_assert_int_eq(cowmap_cell_del(c, k.bytes, k.len), 1);
	tu_key_make(&k, 8, 3001);
	ck_assert_int_eq(cowmap_cell_set(c, k.bytes, k.len, lval(302)), 0);
	tu_key_make(&k, 8, 3002);
	ck_assert_int_eq(cowmap_cell_set(c, k.bytes, k.len, lval(303)), -ENOSPC);
	ck_assert_uint_eq(tu_cell_stats(c).published, before.published + 3);

	cowmap_cell_free(c);
	ck_assert_uint_eq(atomic_load(&lfreed[300]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[303]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[301]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[302]), 1);
	urcu_memb_unregister_thread();
}
END_TEST

struct add_one {
	int id;
	void *value;
	int err;
};

static struct cowmap *add_key(const struct cowmap *cur, void *arg)
{
	struct add_one *a = arg;
	struct tu_key k;
	struct cowmap *n;

	tu_key_make(&k, 8, (uint64_t)a->id);
	n = cowmap_set(cur, k.bytes, k.len, a->value);
	a->err = n ? 0 : errno;
	return n;	/* NULL with errno ENOSPC over the limit */
}

START_TEST(cell_update_over_the_limit_is_enospc_and_publishes_nothing)
{
	struct cowmap_cell *c;
	struct cowmap_cell_stats before;
	const struct cowmap *cur;
	struct add_one a = { .id = 4000, .value = lval(400) };

	urcu_memb_register_thread();
	lreset();
	c = cowmap_cell_new(full_map(), NULL);
	ck_assert_ptr_nonnull(c);
	before = tu_cell_stats(c);
	cur = cell_current(c);

	ck_assert_int_eq(cowmap_cell_update(c, add_key, &a), -ENOSPC);
	ck_assert_int_eq(a.err, ENOSPC);
	ck_assert_uint_eq(tu_cell_stats(c).published, before.published);
	ck_assert_ptr_eq(cell_current(c), cur);

	/* Replacing through update at the limit works. */
	a = (struct add_one){ .id = 2, .value = lval(401) };
	ck_assert_int_eq(cowmap_cell_update(c, add_key, &a), 0);
	ck_assert_uint_eq(tu_cell_stats(c).published, before.published + 1);
	cowmap_cell_free(c);
	ck_assert_uint_eq(atomic_load(&lfreed[400]), 0);
	ck_assert_uint_eq(atomic_load(&lfreed[401]), 1);
	ck_assert_uint_eq(atomic_load(&lfreed[2]), 1);
	urcu_memb_unregister_thread();
}
END_TEST

#define NWRITERS 4
#define KEYS_PER_WRITER 64
#define CLIMIT 100

struct climit_arg {
	struct cowmap_cell *c;
	int first;
	int ok, full, other;
};

static void *climit_writer(void *p)
{
	struct climit_arg *a = p;

	urcu_memb_register_thread();
	for (int i = 0; i < KEYS_PER_WRITER; i++) {
		struct tu_key k;
		int id = a->first + i;
		int rc;

		tu_key_make(&k, 8, (uint64_t)id);
		rc = cowmap_cell_set(a->c, k.bytes, k.len, lval(id));
		if (rc == 0)
			a->ok++;
		else if (rc == -ENOSPC)
			a->full++;
		else
			a->other++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* Concurrent cell_set calls are combined into transactions; each request
 * still gets its own answer, and exactly max_entries of them win. */
START_TEST(concurrent_cell_sets_stop_exactly_at_the_limit)
{
	struct cowmap_options o = { .seed = SEED_B, .value_free = lval_free,
				    .max_entries = CLIMIT };
	struct cowmap_cell *c;
	struct climit_arg args[NWRITERS];
	pthread_t th[NWRITERS];
	int ok = 0, full = 0;

	urcu_memb_register_thread();
	lreset();
	c = cowmap_cell_new(cowmap_new(&o), NULL);
	ck_assert_ptr_nonnull(c);
	for (int i = 0; i < NWRITERS; i++) {
		args[i] = (struct climit_arg){ .c = c,
					       .first = i * KEYS_PER_WRITER };
		ck_assert_int_eq(pthread_create(&th[i], NULL, climit_writer,
						&args[i]),
				 0);
	}
	for (int i = 0; i < NWRITERS; i++) {
		pthread_join(th[i], NULL);
		ok += args[i].ok;
		full += args[i].full;
		ck_assert_int_eq(args[i].other, 0);
	}
	ck_assert_int_eq(ok, CLIMIT);
	ck_assert_int_eq(full, NWRITERS * KEYS_PER_WRITER - CLIMIT);

	struct cowmap *snap = cowmap_cell_snapshot(c);
	int present = 0;

	ck_assert_uint_eq(cowmap_size(snap), CLIMIT);
	for (int id = 0; id < NWRITERS * KEYS_PER_WRITER; id++) {
		struct tu_key k;

		tu_key_make(&k, 8, (uint64_t)id);
		present += cowmap_get(snap, k.bytes, k.len, NULL);
	}
	ck_assert_int_eq(present, CLIMIT);
	cowmap_release(snap);
	cowmap_cell_free(c);

	/* Winners' values freed once, losers' never. */
	int freed = 0;

	for (int id = 0; id < NWRITERS * KEYS_PER_WRITER; id++) {
		unsigned f = atomic_load(&lfreed[id]);

		ck_assert_uint_le(f, 1);
		freed += (int)f;
	}
	ck_assert_int_eq(freed, CLIMIT);
	urcu_memb_unregister_thread();
}
END_TEST

/* ------------------------------------------------------------------ */
/* ABI                                                                 */
/* ------------------------------------------------------------------ */

START_TEST(version_macros_match_the_library_and_the_package)
{
	char v[32];

	ck_assert_uint_eq(cowmap_version(), COWMAP_VERSION_NUMBER);
	ck_assert_uint_eq(COWMAP_VERSION_NUMBER,
			  ((uint32_t)COWMAP_VERSION_MAJOR << 16) |
				  ((uint32_t)COWMAP_VERSION_MINOR << 8) |
				  (uint32_t)COWMAP_VERSION_PATCH);
	ck_assert_int_lt(COWMAP_VERSION_MINOR, 256);
	ck_assert_int_lt(COWMAP_VERSION_PATCH, 256);
	snprintf(v, sizeof(v), "%d.%d.%d", COWMAP_VERSION_MAJOR,
		 COWMAP_VERSION_MINOR, COWMAP_VERSION_PATCH);
	ck_assert_str_eq(v, PACKAGE_VERSION);
	snprintf(v, sizeof(v), "%u.%u.%u", cowmap_version() >> 16,
		 (cowmap_version() >> 8) & 0xff, cowmap_version() & 0xff);
	ck_assert_str_eq(v, PACKAGE_VERSION);
}
END_TEST

Suite *hardening_suite(void)
{
	Suite *s = suite_create("hardening");
	TCase *tc;

	tc = tcase_create("flooding");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, flood_keys_found_for_one_seed_are_ordinary_under_another);
	tcase_add_test(tc, the_default_seed_is_random_per_map);
	tcase_add_test(tc, builtin_hash_is_siphash13_for_every_tail_length);
	suite_add_tcase(s, tc);

	tc = tcase_create("collisions");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, full_collisions_stay_correct);
	tcase_add_test(tc, collision_lookups_hash_once_and_allocate_nothing);
	tcase_add_test(tc, full_collisions_in_a_transaction);
	tcase_add_test(tc, two_collision_groups_that_split_at_the_last_level);
	tcase_add_test(tc, binary_and_huge_keys_are_distinct_keys);
	suite_add_tcase(s, tc);

	tc = tcase_create("limits");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, set_at_the_limit_is_enospc_and_changes_nothing);
	tcase_add_test(tc, txn_set_at_the_limit_is_enospc_and_keeps_the_draft);
	tcase_add_test(tc, cell_set_at_the_limit_is_enospc_and_publishes_nothing);
	tcase_add_test(tc,
		       cell_update_over_the_limit_is_enospc_and_publishes_nothing);
	tcase_add_test(tc, concurrent_cell_sets_stop_exactly_at_the_limit);
	suite_add_tcase(s, tc);

	tc = tcase_create("abi");
	tcase_add_test(tc, version_macros_match_the_library_and_the_package);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(hardening_suite());
}
