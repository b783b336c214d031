/*
 * fuzz_ops.c - a libFuzzer harness for cowmap.
 *
 * The input is decoded into a program of operations over up to NSLOTS
 * live versions, NTXNS transactions and, now and then, a cell.  Every
 * version and draft has its own reference model (an array indexed by key
 * number), and every result the library returns is checked against it;
 * any mismatch prints what went wrong and calls abort(), which libFuzzer
 * (or tests/fuzz/replay.c under `make check`) reports as a crash.
 *
 * 1. Input format
 *
 *     byte 0   flags: bit 0  family 0 and 1 own their values (value_free)
 *                     bit 1  family 2 owns its values
 *                     bits 2-7  hash mode: (byte >> 2) modulo HM_COUNT
 *                               (enum hash_mode), so bits 5-7 count too
 *                     bits 5-7  max_entries of families 0 and 2
 *                               (0 = unlimited, else one of limits[])
 *     byte 1   hash parameter (the constant, mask width or group size)
 *     [HM_TABLE only: 2 bytes per key for the first TABLE_KEYS keys]
 *     then     operations: one opcode byte (modulo OP_COUNT) followed by
 *              its argument bytes; a missing byte reads as 0.
 *
 * Key arguments pick key number b % (NKEYS + 1); NKEYS means the empty key
 * passed as a NULL pointer (key 0 is the empty key passed as a pointer).
 * Keys have lengths 0..64, across the inline/boxed boundary (12/13).
 *
 * 2. Families
 *
 * Family 0: seed SEED_A, the input's hash mode, its max_entries.
 * Family 1: the same layout as family 0 (seed, hash, ctx, ownership) but
 *           no limit, so diff/equal between the two compare structure.
 * Family 2: seed SEED_B and another ctx, so diff/equal against it go key
 *           by key.
 * Each family keeps one empty version for the whole input.
 *
 * 3. Values and value_free
 *
 * Values are addresses in a static token array (token 0 is NULL, used
 * only by families that do not own values).  The model counts, per
 * stored entry ("instance": one successful set), how many live versions
 * and drafts hold it.  When that drops to zero in an owning family, the
 * library owes exactly one value_free call for it; after every operation
 * the harness compares calls and debts for every token that changed.
 * A set of a fresh token, of the key's current value (a no-op that must
 * return the same version) or of another key's value (the same pointer
 * stored twice: two debts) is chosen by the input.  Inside a cell
 * operation the check waits until the cell is freed (deferred frees).
 *
 * 4. Allocation failures
 *
 * OP_FAIL k arms cm_test_fail_after(k) for the next operation's library
 * call: that call may then fail only with ENOMEM and must leave every
 * version, draft and cell as it was (and transfer no value).  Calls that
 * are documented not to allocate (lookups, iteration, diff, equal,
 * stats, txn commit, no-op sets and deletes) must succeed anyway; the
 * read-only ones are also checked with cm_test_alloc_count().
 *
 * Cell steps follow the same rule.  A lone cell_set/cell_del (the
 * single-threaded steps of section 5) that changes nothing or that the
 * limit refuses is answered by a lookup before the cell allocates
 * anything, so it must give its exact answer (0, or ENOSPC) under
 * injection too, without an allocation.  Only requests the cell combines
 * with others (the concurrent step) share one transaction, whose failure
 * would answer all of them ENOMEM; that step runs without injection.
 *
 * 5. Cells
 *
 * OP_CELL makes a cell from a slot and runs up to 15 steps on it: set
 * (also from inside a read-side section, checking that the version the
 * reader holds, and its values, survive the publish), del, snapshot,
 * publish, cas (current or stale), update (set+del, no change, or an
 * error), and concurrent writers (2-4 threads whose requests the cell
 * combines into transactions; every answer must agree with the final
 * state).  Then cowmap_cell_barrier(): nothing may be pending, and the
 * cell is freed.  At most MAX_CELL_OPS per input, since each waits for grace
 * periods.
 *
 * 6. Other checks
 *
 * Hash overrides must be called exactly once per lookup or update (no
 * rehashing walks).  OP_CANON rebuilds a version from scratch in another
 * order (with extra keys inserted and deleted again): the trie must be the
 * same (equal, empty diff, identical stats, same iteration order by
 * hash), which is the canonical form diff and equal rely on.  Release
 * builds also probe each finished transaction handle for EINVAL.
 *
 * Set FUZZ_OPS_TRACE=1 in the environment to print each decoded
 * operation (for minimising a reproduction by hand).
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <cowmap.h>

#include "alloc.h"
#include "harness.h"
#include "hash.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------ */
/* Sizes                                                               */
/* ------------------------------------------------------------------ */

#define NKEYS 40		/* key numbers 0..NKEYS-1 */
#define KEY_MAX 64
#define NSLOTS 6		/* live versions */
#define NTXNS 2			/* live transactions */
#define NFAMS 3
#define MAX_OPS 2000		/* operations decoded from one input */
#define MAX_CELL_OPS 3		/* cell operations per input (each waits
				   for grace periods) */
#define MAX_TOKENS 20000
#define MAX_INSTANCES 40000
#define GET_MANY_MAX 40		/* more than one group of 32 */
#define TABLE_KEYS 16

#define SEED_A UINT64_C(0x0123456789abcdef)
#define SEED_B UINT64_C(0x5eed5eed12345678)

enum hash_mode {
	HM_BUILTIN,	/* options.hash = NULL: SipHash */
	HM_CONST,	/* every key hashes alike: one collision node */
	HM_LOWBITS,	/* only the low 0..13 bits vary */
	HM_HIGHBITS,	/* only the top 1..8 bits vary: deepest tries */
	HM_GROUPS,	/* full collisions in groups of 2..5 key numbers */
	HM_TABLE,	/* the input chooses 16 bits per key, repeated */
	HM_COUNT
};

static const size_t limits[8] = { 0, 1, 2, 3, 5, 8, 13, 0 };

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

/* A model: which instance each key holds (0 = absent). */
struct model {
	uint32_t inst[NKEYS];
	uint32_t size;
};

struct instance {
	uint32_t tok;
	uint32_t refs;	/* models (versions, drafts, bases) holding it */
	bool owned;	/* stored in an owning family: value_free is owed */
};

struct family {
	struct cowmap *empty;
	struct cowmap_options opts;
	bool owning;
};

struct slot {
	bool live;
	int fam;
	struct cowmap *v;
	struct model m;
};

struct txnst {
	bool live;
	bool changed;	/* some edit changed the draft */
	int fam;
	struct cowmap_txn *t;
	const struct cowmap *basev;
	struct model base, draft;
};

struct harness {
	/* hashing */
	int hmode;
	uint8_t hparam;
	uint16_t htab[TABLE_KEYS];
	unsigned long hash_calls;

	struct family fam[NFAMS];
	struct slot slot[NSLOTS];
	struct txnst txn[NTXNS];

	uint32_t ntok, ninst;	/* tokens and instances handed out */
	uint32_t ndirty;
	bool defer_checks;	/* inside a cell operation */

	/* fault injection (the armed k is fz.armed) */
	bool fault;		/* the current operation runs armed */
	unsigned cell_ops;
};

static struct harness G;	/* reset for every input */

/* Value accounting; entries up to G.ntok / G.ninst are in use. */
static struct instance insts[MAX_INSTANCES];
static uint32_t tok_owed[MAX_TOKENS];	/* value_free calls owed so far */
static uint32_t tok_freed[MAX_TOKENS];	/* calls received (free_lock) */
static uint8_t tok_dirty[MAX_TOKENS];
static uint32_t dirty[MAX_TOKENS];
static char tokmem[MAX_TOKENS];
static pthread_mutex_t free_lock = PTHREAD_MUTEX_INITIALIZER;
static int ctx_a, ctx_b;	/* options.ctx of families 0/1 and 2 */

static unsigned char key_bytes[NKEYS][KEY_MAX];
static size_t key_len[NKEYS];
static bool initialised;

/* ------------------------------------------------------------------ */
/* Keys and hashes                                                     */
/* ------------------------------------------------------------------ */

static const uint8_t len_table[10] = { 1, 2, 4, 7, 8, 11, 12, 13, 24, 64 };

static void init_keys(void)
{
	key_len[0] = 0;
	for (int k = 1; k < NKEYS; k++) {
		key_len[k] = len_table[k % 10];
		key_bytes[k][0] = (unsigned char)k;
		for (size_t i = 1; i < key_len[k]; i++)
			key_bytes[k][i] = (unsigned char)(k * 7 + i * 13);
	}
}

struct keyarg {
	int kid;
	const void *ptr;
	size_t len;
};

static struct keyarg key_arg(uint8_t b)
{
	struct keyarg k;
	int sel = b % (NKEYS + 1);

	if (sel == NKEYS) {	/* the empty key, as NULL */
		k.kid = 0;
		k.ptr = NULL;
		k.len = 0;
	} else {
		k.kid = sel;
		k.ptr = key_bytes[sel];
		k.len = key_len[sel];
	}
	return k;
}

/* The key number of key bytes handed back by the library, or -1. */
static int kid_of(const void *key, size_t len)
{
	const unsigned char *p = key;

	if (len == 0)
		return 0;
	if (p == NULL)
		return -1;
	int k = p[0];

	if (k == 0 || k >= NKEYS || key_len[k] != len ||
	    memcmp(p, key_bytes[k], len) != 0)
		return -1;
	return k;
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

static uint64_t hash_of(int kid, const void *key, size_t len, uint64_t seed)
{
	uint64_t base;

	if (kid >= 0) {
		base = mix64((uint64_t)kid * UINT64_C(0x9e3779b97f4a7c15) ^ seed);
	} else {	/* not one of ours: still a pure function */
		const unsigned char *p = key;

		base = seed ^ len;
		for (size_t i = 0; i < len; i++)
			base = mix64(base ^ p[i]);
	}
	switch (G.hmode) {
	case HM_CONST:
		return UINT64_C(0x5a5aa5a55a5aa5a5) ^ G.hparam;
	case HM_LOWBITS:
		return base & ((UINT64_C(1) << (G.hparam % 14)) - 1);
	case HM_HIGHBITS:
		return base & ~(UINT64_MAX >> (1 + G.hparam % 8));
	case HM_GROUPS:
		if (kid < 0)
			return base;
		return mix64((uint64_t)(kid / (2 + G.hparam % 4)) ^ seed);
	case HM_TABLE:
		if (kid < 0 || kid >= TABLE_KEYS)
			return base;
		/* 16 bits repeated: equal table entries collide fully, and
		 * entries differing only in high bits share long prefixes. */
		return ((uint64_t)G.htab[kid] * UINT64_C(0x0001000100010001)) ^
		       (seed & UINT64_C(0xffff000000000000));
	default:
		return base;
	}
}

static uint64_t fz_hash(const void *key, size_t len, uint64_t seed, void *ctx)
{
	CHECK(ctx == &ctx_a || ctx == &ctx_b, "hash got ctx %p", ctx);
	CHECK(key != NULL, "hash got a NULL key (len %zu)", len);
	__atomic_fetch_add(&G.hash_calls, 1, __ATOMIC_RELAXED);
	return hash_of(kid_of(key, len), key, len, seed);
}

/* The hash the library uses for key @kid in family @f. */
static uint64_t key_hash(int f, int kid)
{
	static const unsigned char nothing;
	const void *p = key_len[kid] ? (const void *)key_bytes[kid] : &nothing;

	if (G.hmode == HM_BUILTIN)
		return cm_hash_bytes(p, key_len[kid], G.fam[f].opts.seed);
	return hash_of(kid, p, key_len[kid], G.fam[f].opts.seed);
}

/* ------------------------------------------------------------------ */
/* Values, instances and value_free accounting                         */
/* ------------------------------------------------------------------ */

static void *tok_ptr(uint32_t tok)
{
	return tok == 0 ? NULL : &tokmem[tok];
}

static uint32_t tok_of(const void *p)
{
	if (p == NULL)
		return 0;
	uintptr_t off = (uintptr_t)p - (uintptr_t)tokmem;

	CHECK((uintptr_t)p >= (uintptr_t)tokmem && off > 0 && off < MAX_TOKENS,
	      "value %p is not one of ours", p);
	return (uint32_t)off;
}

static void *inst_ptr(uint32_t i)
{
	return tok_ptr(insts[i].tok);
}

/* Called with free_lock held (or from the only running thread). */
static void mark_dirty(uint32_t tok)
{
	if (!tok_dirty[tok]) {
		tok_dirty[tok] = 1;
		dirty[G.ndirty++] = tok;
	}
}

static void fz_value_free(void *value, void *ctx)
{
	CHECK(ctx == &ctx_a || ctx == &ctx_b, "value_free got ctx %p", ctx);
	CHECK(value != NULL, "value_free(NULL): no owning family stores NULL");
	uint32_t tok = tok_of(value);

	pthread_mutex_lock(&free_lock);
	tok_freed[tok]++;
	mark_dirty(tok);
	pthread_mutex_unlock(&free_lock);
}

static bool tokens_left(void)
{
	return G.ntok + 64 < MAX_TOKENS && G.ninst + 2 * NKEYS + 64 < MAX_INSTANCES;
}

static uint32_t new_token(void)
{
	return ++G.ntok;
}

static uint32_t new_instance(uint32_t tok, int fam)
{
	uint32_t i = ++G.ninst;

	insts[i] = (struct instance){ .tok = tok,
				       .owned = G.fam[fam].owning };
	return i;
}

static void inst_ref(uint32_t i)
{
	insts[i].refs++;
}

static void inst_unref(uint32_t i)
{
	CHECK(insts[i].refs > 0, "model bug: instance %u over-released", i);
	if (--insts[i].refs == 0 && insts[i].owned) {
		pthread_mutex_lock(&free_lock);
		tok_owed[insts[i].tok]++;
		mark_dirty(insts[i].tok);
		pthread_mutex_unlock(&free_lock);
	}
}

static void model_hold(const struct model *m)
{
	for (int k = 0; k < NKEYS; k++)
		if (m->inst[k])
			inst_ref(m->inst[k]);
}

static void model_drop(const struct model *m)
{
	for (int k = 0; k < NKEYS; k++)
		if (m->inst[k])
			inst_unref(m->inst[k]);
}

/* Edit a held model in place. */
static void model_put(struct model *m, int kid, uint32_t inst)
{
	uint32_t old = m->inst[kid];

	inst_ref(inst);
	m->inst[kid] = inst;
	if (old)
		inst_unref(old);
	else
		m->size++;
}

static void model_remove(struct model *m, int kid)
{
	uint32_t old = m->inst[kid];

	if (!old)
		return;
	m->inst[kid] = 0;
	m->size--;
	inst_unref(old);
}

/* Every token whose calls or debts changed: calls == debts. */
static void check_frees(void)
{
	if (G.defer_checks)
		return;
	pthread_mutex_lock(&free_lock);
	for (uint32_t i = 0; i < G.ndirty; i++) {
		uint32_t tok = dirty[i];

		if (tok_freed[tok] != tok_owed[tok]) {
			pthread_mutex_unlock(&free_lock);
			fz_fail(__LINE__,
				"value_free called %u times for token %u, "
				"expected %u",
				tok_freed[tok], tok, tok_owed[tok]);
		}
		tok_dirty[tok] = 0;
	}
	G.ndirty = 0;
	pthread_mutex_unlock(&free_lock);
}

/*
 * The value a set stores, as the input chooses: a fresh token, the key's
 * current value (a no-op), another key's value, or NULL (families that do
 * not own values).
 */
static uint32_t pick_value(uint8_t sel, const struct model *m, int kid,
			   int fam)
{
	switch (sel % 4) {
	case 2:
		if (m->inst[kid])
			return insts[m->inst[kid]].tok;
		break;
	case 3: {
		int other = (sel / 4) % NKEYS;

		if (m->inst[other])
			return insts[m->inst[other]].tok;
		if (!G.fam[fam].owning)
			return 0;
		break;
	}
	default:
		break;
	}
	return new_token();
}

/* ------------------------------------------------------------------ */
/* Fault injection                                                     */
/* ------------------------------------------------------------------ */

/* A call failed with @err: acceptable only as ENOMEM under injection. */
static void check_failure(int err, const char *call)
{
	CHECK(err == ENOMEM && G.fault,
	      "%s failed with %s (%d)%s", call, strerror(err), err,
	      G.fault ? "" : " without fault injection");
}

/* ------------------------------------------------------------------ */
/* Checking a version against its model                                */
/* ------------------------------------------------------------------ */

static void check_get(const struct cowmap *v, const struct model *m,
		      struct keyarg k, const char *what)
{
	void *got = NULL;
	unsigned long a0 = cm_test_alloc_count();
	unsigned long h0 = G.hash_calls;
	int rc = cowmap_get(v, k.ptr, k.len, &got);

	CHECK(cm_test_alloc_count() == a0, "%s: cowmap_get allocated", what);
	if (G.hmode != HM_BUILTIN)
		CHECK(G.hash_calls == h0 + 1,
		      "%s: cowmap_get hashed %lu times", what,
		      G.hash_calls - h0);
	if (m->inst[k.kid]) {
		CHECK(rc == 1, "%s: get(key %d) = %d, expected 1", what, k.kid,
		      rc);
		CHECK(got == inst_ptr(m->inst[k.kid]),
		      "%s: get(key %d) value %p, expected %p", what, k.kid, got,
		      inst_ptr(m->inst[k.kid]));
	} else {
		CHECK(rc == 0, "%s: get(key %d) = %d, expected 0", what, k.kid,
		      rc);
	}
	CHECK(cowmap_get(v, k.ptr, k.len, NULL) == rc,
	      "%s: get with value NULL disagrees", what);
}

static void check_iter(const struct cowmap *v, const struct model *m,
		       unsigned copy_at, bool null_outs)
{
	struct cowmap_iter it, copy;
	bool seen[NKEYS] = { false };
	int seq[NKEYS + 1];
	unsigned n = 0;
	const void *key;
	size_t len;
	void *val;
	unsigned long a0 = cm_test_alloc_count();

	cowmap_iter_init(&it, v);
	copy = it;
	if (null_outs) {
		while (cowmap_iter_next(&it, NULL, NULL, NULL))
			CHECK(++n <= m->size, "iteration yields more than %u",
			      m->size);
		CHECK(n == m->size, "iteration (NULL outs) yields %u of %u", n,
		      m->size);
		return;
	}
	while (cowmap_iter_next(&it, &key, &len, &val)) {
		int k = kid_of(key, len);

		CHECK(k >= 0, "iteration yields unknown key (len %zu)", len);
		CHECK(!seen[k], "iteration yields key %d twice", k);
		CHECK(m->inst[k], "iteration yields absent key %d", k);
		CHECK(val == inst_ptr(m->inst[k]),
		      "iteration: key %d value %p, expected %p", k, val,
		      inst_ptr(m->inst[k]));
		seen[k] = true;
		seq[n++] = k;
		if (n == copy_at)
			copy = it;	/* plain data: must resume alike */
	}
	CHECK(n == m->size, "iteration yields %u entries, size %u", n, m->size);
	CHECK(cowmap_iter_next(&it, &key, &len, &val) == 0,
	      "iterator restarts after its end");
	if (copy_at > 0 && copy_at <= n) {
		unsigned j = copy_at;

		while (cowmap_iter_next(&copy, &key, &len, NULL)) {
			CHECK(j < n && kid_of(key, len) == seq[j],
			      "a copied iterator diverges at %u", j);
			j++;
		}
		CHECK(j == n, "a copied iterator stops at %u of %u", j, n);
	}
	CHECK(cm_test_alloc_count() == a0, "iteration allocated");
}

static void check_version(const struct cowmap *v, const struct model *m,
			  const char *what)
{
	CHECK(cowmap_size(v) == m->size, "%s: size %zu, model %u", what,
	      cowmap_size(v), m->size);
	for (int k = 0; k < NKEYS; k++)
		check_get(v, m, key_arg((uint8_t)k), what);
	check_iter(v, m, 0, false);
}

static void check_draft(const struct txnst *x, int kid)
{
	const struct model *m = &x->draft;
	struct keyarg k = key_arg((uint8_t)kid);
	void *got = NULL;
	int rc = cowmap_txn_get(x->t, k.ptr, k.len, &got);

	CHECK(cowmap_txn_size(x->t) == m->size, "txn_size %zu, model %u",
	      cowmap_txn_size(x->t), m->size);
	CHECK(rc == (m->inst[kid] ? 1 : 0), "txn_get(key %d) = %d", kid, rc);
	if (rc == 1)
		CHECK(got == inst_ptr(m->inst[kid]),
		      "txn_get(key %d) value %p, expected %p", kid, got,
		      inst_ptr(m->inst[kid]));
}

static void check_stats(const struct cowmap *v, const struct model *m)
{
	struct cowmap_stats st;
	unsigned long a0 = cm_test_alloc_count();

	memset(&st, 0xff, sizeof(st));
	CHECK(cowmap_stats(v, &st) == 0, "cowmap_stats failed");
	CHECK(cm_test_alloc_count() == a0, "cowmap_stats allocated");
	CHECK(st.entries == m->size, "stats.entries %zu, size %u", st.entries,
	      m->size);
	CHECK(st.max_depth <= 13, "stats.max_depth %zu", st.max_depth);
	CHECK(st.nodes >= 1 && st.nodes <= 1 + 13 * (size_t)m->size,
	      "stats.nodes %zu for %u entries", st.nodes, m->size);
	CHECK(st.bytes > 0, "stats.bytes 0");
	if (m->size <= 1)
		CHECK(st.nodes == 1 && st.max_depth == 0,
		      "%u entries in %zu nodes, depth %zu", m->size, st.nodes,
		      st.max_depth);
	if (G.hmode == HM_CONST && m->size >= 2)
		CHECK(st.max_depth == 13,
		      "all keys collide but max_depth is %zu", st.max_depth);
}

/* ------------------------------------------------------------------ */
/* Slots                                                               */
/* ------------------------------------------------------------------ */

static int slot_arg(uint8_t b)
{
	return b % NSLOTS;
}

/* Store version @v (a new reference) with a copy of model @m in @dst. */
static void slot_put(int dst, struct cowmap *v, const struct model *m,
		     int fam)
{
	struct slot old = G.slot[dst];

	G.slot[dst] = (struct slot){ .live = true, .fam = fam, .v = v,
				     .m = *m };
	model_hold(&G.slot[dst].m);
	if (old.live) {
		cowmap_release(old.v);
		model_drop(&old.m);
	}
}

static void slot_clear(int s)
{
	if (!G.slot[s].live)
		return;
	cowmap_release(G.slot[s].v);
	model_drop(&G.slot[s].m);
	G.slot[s].live = false;
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

static void op_new(void)
{
	int dst = slot_arg(fz_rd());
	uint8_t a = fz_rd();
	int fam = a % NFAMS;
	struct model empty = { { 0 }, 0 };
	struct cowmap *v;

	fz_trace("slot %d = empty of family %d%s", dst, fam,
	      a & 0x80 ? " (cowmap_new)" : "");
	if (a & 0x80) {
		fz_arm();
		v = cowmap_new(&G.fam[fam].opts);
		fz_disarm();
		if (v == NULL) {
			check_failure(errno, "cowmap_new");
			return;
		}
	} else {
		v = cowmap_retain(G.fam[fam].empty);
		CHECK(v == G.fam[fam].empty, "retain returned another pointer");
	}
	check_version(v, &empty, "new");
	slot_put(dst, v, &empty, fam);
}

/* Would setting @kid in a version of @fam holding @m hit max_entries? */
static bool over_limit(int fam, const struct model *m, int kid)
{
	size_t lim = G.fam[fam].opts.max_entries;

	return lim != 0 && !m->inst[kid] && m->size >= lim;
}

static void op_set(void)
{
	int dst = slot_arg(fz_rd()), src = slot_arg(fz_rd());
	struct keyarg k = key_arg(fz_rd());
	uint8_t vs = fz_rd();

	if (!G.slot[src].live)
		return;

	struct slot *s = &G.slot[src];
	int fam = s->fam;
	uint32_t tok = pick_value(vs, &s->m, k.kid, fam);
	bool noop = s->m.inst[k.kid] && insts[s->m.inst[k.kid]].tok == tok;
	bool full = over_limit(fam, &s->m, k.kid);
	unsigned long h0 = G.hash_calls;

	fz_trace("slot %d = set(slot %d, key %d%s, token %u)%s%s", dst, src,
	      k.kid, k.ptr ? "" : " NULL", tok, noop ? " no-op" : "",
	      full ? " over the limit" : "");
	fz_arm();
	errno = 0;
	struct cowmap *v = cowmap_set(s->v, k.ptr, k.len, tok_ptr(tok));
	int err = errno;

	fz_disarm();
	/* The new key once, and at most one key already there: entries keep
	 * 28 bits of their hash, so a key that must be split from the new one
	 * below depth 4 is hashed again. */
	if (G.hmode != HM_BUILTIN)
		CHECK(G.hash_calls - h0 >= 1 && G.hash_calls - h0 <= 2,
		      "cowmap_set hashed %lu times", G.hash_calls - h0);
	if (full) {
		CHECK(v == NULL && err == ENOSPC,
		      "set over max_entries returned %p, errno %d", (void *)v,
		      err);
		check_get(s->v, &s->m, k, "slot after ENOSPC");
		return;
	}
	if (noop) {
		CHECK(v == s->v, "a no-op set returned %p, not the version %p",
		      (void *)v, (void *)s->v);
	}
	if (v == NULL) {
		check_failure(err, "cowmap_set");
		CHECK(cowmap_size(s->v) == s->m.size, "size changed on failure");
		check_get(s->v, &s->m, k, "slot after a failed set");
		return;
	}

	struct model m = s->m;

	if (!noop) {
		if (!m.inst[k.kid])
			m.size++;
		m.inst[k.kid] = new_instance(tok, fam);
	}
	CHECK(cowmap_size(v) == m.size, "set: size %zu, model %u",
	      cowmap_size(v), m.size);
	check_get(v, &m, k, "new version");
	check_get(s->v, &s->m, k, "old version");
	slot_put(dst, v, &m, fam);
}

static void op_del(void)
{
	int dst = slot_arg(fz_rd()), src = slot_arg(fz_rd());
	struct keyarg k = key_arg(fz_rd());

	if (!G.slot[src].live)
		return;

	struct slot *s = &G.slot[src];
	bool present = s->m.inst[k.kid] != 0;

	fz_trace("slot %d = del(slot %d, key %d%s)%s", dst, src, k.kid,
	      k.ptr ? "" : " NULL", present ? "" : " absent");
	fz_arm();
	errno = 0;
	struct cowmap *v = cowmap_del(s->v, k.ptr, k.len);
	int err = errno;

	fz_disarm();
	if (!present)
		CHECK(v == s->v, "deleting an absent key returned %p, not %p",
		      (void *)v, (void *)s->v);
	if (v == NULL) {
		check_failure(err, "cowmap_del");
		check_get(s->v, &s->m, k, "slot after a failed del");
		return;
	}

	struct model m = s->m;

	if (present) {
		m.inst[k.kid] = 0;
		m.size--;
	}
	CHECK(cowmap_size(v) == m.size, "del: size %zu, model %u",
	      cowmap_size(v), m.size);
	check_get(v, &m, k, "new version");
	check_get(s->v, &s->m, k, "old version");
	slot_put(dst, v, &m, s->fam);
}

/* Several sets on one slot in a row: grows maps quickly. */
static void op_set_many(void)
{
	int s = slot_arg(fz_rd());
	unsigned n = fz_rd() % 17;

	if (!G.slot[s].live)
		return;
	fz_trace("%u sets on slot %d", n, s);
	for (unsigned i = 0; i < n && tokens_left(); i++) {
		struct slot *sl = &G.slot[s];
		struct keyarg k = key_arg(fz_rd());

		if (over_limit(sl->fam, &sl->m, k.kid))
			continue;

		uint32_t tok = new_token();
		struct cowmap *v = cowmap_set(sl->v, k.ptr, k.len, tok_ptr(tok));

		CHECK(v != NULL, "cowmap_set failed: %s", strerror(errno));

		struct model m = sl->m;

		if (!m.inst[k.kid])
			m.size++;
		m.inst[k.kid] = new_instance(tok, sl->fam);
		slot_put(s, v, &m, sl->fam);
	}
	check_get(G.slot[s].v, &G.slot[s].m, key_arg(0), "after set_many");
}

static void op_retain(void)
{
	int dst = slot_arg(fz_rd()), src = slot_arg(fz_rd());

	if (!G.slot[src].live)
		return;
	fz_trace("slot %d = retain(slot %d)", dst, src);

	struct cowmap *v = cowmap_retain(G.slot[src].v);

	CHECK(v == G.slot[src].v, "retain returned another pointer");

	struct model m = G.slot[src].m;

	slot_put(dst, v, &m, G.slot[src].fam);
}

static void op_release(void)
{
	int s = slot_arg(fz_rd());

	fz_trace("release slot %d", s);
	slot_clear(s);
}

static void op_get(void)
{
	int s = slot_arg(fz_rd());
	struct keyarg k = key_arg(fz_rd());

	if (!G.slot[s].live)
		return;
	fz_trace("get(slot %d, key %d)", s, k.kid);
	fz_arm();
	check_get(G.slot[s].v, &G.slot[s].m, k, "get");
	fz_disarm();
}

static void op_get_many(void)
{
	int s = slot_arg(fz_rd());
	size_t n = fz_rd() % (GET_MANY_MAX + 1);
	const void *keys[GET_MANY_MAX];
	size_t lens[GET_MANY_MAX];
	void *vals[GET_MANY_MAX];
	int kids[GET_MANY_MAX];
	size_t expect = 0, valid = 0;

	for (size_t i = 0; i < n; i++) {
		uint8_t b = fz_rd();

		if (b == 0xff) {	/* an invalid key: NULL with a length */
			keys[i] = NULL;
			lens[i] = 3;
			kids[i] = -1;
			continue;
		}
		struct keyarg k = key_arg(b);

		keys[i] = k.ptr;
		lens[i] = k.len;
		kids[i] = k.kid;
		valid++;
	}
	if (!G.slot[s].live)
		return;

	const struct model *m = &G.slot[s].m;

	for (size_t i = 0; i < n; i++) {
		vals[i] = (void *)&vals[i];
		if (kids[i] >= 0 && m->inst[kids[i]])
			expect++;
	}
	fz_trace("get_many(slot %d, %zu keys)", s, n);

	unsigned long a0 = cm_test_alloc_count(), h0 = G.hash_calls;

	fz_arm();
	size_t found = cowmap_get_many(G.slot[s].v, n, keys, lens, vals);

	fz_disarm();
	CHECK(cm_test_alloc_count() == a0, "cowmap_get_many allocated");
	if (G.hmode != HM_BUILTIN)
		CHECK(G.hash_calls - h0 == valid,
		      "get_many hashed %lu times for %zu valid keys",
		      G.hash_calls - h0, valid);
	CHECK(found == expect, "get_many found %zu, expected %zu", found,
	      expect);
	for (size_t i = 0; i < n; i++) {
		void *want = kids[i] >= 0 && m->inst[kids[i]]
				     ? inst_ptr(m->inst[kids[i]])
				     : NULL;

		CHECK(vals[i] == want, "get_many[%zu] (key %d) = %p, expected %p",
		      i, kids[i], vals[i], want);
	}
}

static void op_iter(void)
{
	int s = slot_arg(fz_rd());
	uint8_t a = fz_rd();

	if (!G.slot[s].live)
		return;
	fz_trace("iterate slot %d (copy at %u)", s, a % 48);
	fz_arm();
	check_iter(G.slot[s].v, &G.slot[s].m, a % 48, a >= 0xf0);
	fz_disarm();
}

struct diff_rec {
	const struct model *a, *b;
	bool seen[NKEYS];
	unsigned calls, stop_at;
};

static int diff_cb(enum cowmap_change what, const void *key, size_t len,
		   void *old_value, void *new_value, void *ctx)
{
	struct diff_rec *d = ctx;
	int k = kid_of(key, len);

	CHECK(k >= 0, "diff reports an unknown key (len %zu)", len);
	CHECK(!d->seen[k], "diff reports key %d twice", k);
	d->seen[k] = true;

	uint32_t ia = d->a->inst[k], ib = d->b->inst[k];
	void *va = ia ? inst_ptr(ia) : NULL, *vb = ib ? inst_ptr(ib) : NULL;

	switch (what) {
	case COWMAP_ADDED:
		CHECK(!ia && ib && old_value == NULL && new_value == vb,
		      "diff: ADDED key %d wrong (%p -> %p)", k, old_value,
		      new_value);
		break;
	case COWMAP_REMOVED:
		CHECK(ia && !ib && old_value == va && new_value == NULL,
		      "diff: REMOVED key %d wrong (%p -> %p)", k, old_value,
		      new_value);
		break;
	case COWMAP_CHANGED:
		CHECK(ia && ib && va != vb && old_value == va &&
			      new_value == vb,
		      "diff: CHANGED key %d wrong (%p -> %p)", k, old_value,
		      new_value);
		break;
	default:
		CHECK(0, "diff: unknown change %d", (int)what);
	}
	d->calls++;
	return d->calls == d->stop_at ? 7 : 0;
}

static unsigned model_diff_count(const struct model *a, const struct model *b)
{
	unsigned n = 0;

	for (int k = 0; k < NKEYS; k++) {
		uint32_t ia = a->inst[k], ib = b->inst[k];

		if (!ia != !ib || (ia && inst_ptr(ia) != inst_ptr(ib)))
			n++;
	}
	return n;
}

static void op_diff(void)
{
	int x = slot_arg(fz_rd()), y = slot_arg(fz_rd());
	unsigned stop_at = fz_rd() % 8;

	if (!G.slot[x].live || !G.slot[y].live)
		return;

	struct diff_rec d = { .a = &G.slot[x].m, .b = &G.slot[y].m,
			      .stop_at = stop_at };
	unsigned total = model_diff_count(d.a, d.b);
	unsigned long a0 = cm_test_alloc_count();

	fz_trace("diff(slot %d, slot %d), stop at %u of %u", x, y, stop_at, total);
	fz_arm();
	int rc = cowmap_diff(G.slot[x].v, G.slot[y].v, diff_cb, &d);

	fz_disarm();
	CHECK(cm_test_alloc_count() == a0, "cowmap_diff allocated");
	if (stop_at == 0 || stop_at > total) {
		CHECK(rc == 0, "diff returned %d, expected 0", rc);
		CHECK(d.calls == total, "diff reported %u of %u changes",
		      d.calls, total);
	} else {
		CHECK(rc == 7, "diff returned %d, expected the callback's 7",
		      rc);
		CHECK(d.calls == stop_at, "diff went on after the callback "
					  "stopped it (%u calls)", d.calls);
	}
}

static int value_class(const void *p)
{
	return p == NULL ? 99 : (int)(tok_of(p) % 3);
}

static int value_eq(const void *x, const void *y, void *ctx)
{
	CHECK(ctx == &G, "value_eq got ctx %p", ctx);
	return value_class(x) == value_class(y);
}

static void op_equal(void)
{
	int x = slot_arg(fz_rd()), y = slot_arg(fz_rd());
	bool custom = fz_rd() & 1;

	if (!G.slot[x].live || !G.slot[y].live)
		return;

	const struct model *a = &G.slot[x].m, *b = &G.slot[y].m;
	int expect = 1;

	for (int k = 0; k < NKEYS; k++) {
		uint32_t ia = a->inst[k], ib = b->inst[k];

		if (!ia != !ib)
			expect = 0;
		else if (ia && custom &&
			 value_class(inst_ptr(ia)) != value_class(inst_ptr(ib)))
			expect = 0;
		else if (ia && !custom && inst_ptr(ia) != inst_ptr(ib))
			expect = 0;
	}
	fz_trace("equal(slot %d, slot %d, %s) expect %d", x, y,
	      custom ? "value_eq" : "pointers", expect);

	unsigned long a0 = cm_test_alloc_count();

	fz_arm();
	int rc = cowmap_equal(G.slot[x].v, G.slot[y].v,
			      custom ? value_eq : NULL, custom ? &G : NULL);

	fz_disarm();
	CHECK(cm_test_alloc_count() == a0, "cowmap_equal allocated");
	CHECK(rc == expect, "equal returned %d, expected %d", rc, expect);
}

static void op_stats(void)
{
	int s = slot_arg(fz_rd());

	if (!G.slot[s].live)
		return;
	fz_trace("stats(slot %d)", s);
	check_stats(G.slot[s].v, &G.slot[s].m);
}

/* ---- transactions ---- */

static struct txnst *txn_arg(uint8_t b)
{
	return &G.txn[b % NTXNS];
}

/* A finished handle answers EINVAL (release builds; debug builds print a
 * report for each, so they are left to tests/check_debug_misuse.c). */
static void probe_stale(struct cowmap_txn *t)
{
#ifndef COWMAP_DEBUG
	CHECK(cowmap_txn_size(t) == 0, "txn_size of a finished txn");
	CHECK(cowmap_txn_set(t, "k", 1, NULL) == -EINVAL,
	      "txn_set on a finished txn");
	CHECK(cowmap_txn_del(t, "k", 1) == -EINVAL,
	      "txn_del on a finished txn");
	CHECK(cowmap_txn_get(t, "k", 1, NULL) == -EINVAL,
	      "txn_get on a finished txn");
	errno = 0;
	CHECK(cowmap_txn_commit(t) == NULL && errno == EINVAL,
	      "txn_commit of a finished txn");
	cowmap_txn_abort(t);
#else
	(void)t;
#endif
}

static void op_txn_begin(void)
{
	struct txnst *x = txn_arg(fz_rd());
	int s = slot_arg(fz_rd());

	if (x->live || !G.slot[s].live)
		return;
	fz_trace("txn %d = begin(slot %d)", (int)(x - G.txn), s);
	fz_arm();
	errno = 0;
	struct cowmap_txn *t = cowmap_txn_begin(G.slot[s].v);
	int err = errno;

	fz_disarm();
	if (t == NULL) {
		check_failure(err, "cowmap_txn_begin");
		return;
	}
	*x = (struct txnst){ .live = true, .fam = G.slot[s].fam, .t = t,
			     .basev = G.slot[s].v, .base = G.slot[s].m,
			     .draft = G.slot[s].m };
	model_hold(&x->base);
	model_hold(&x->draft);
	CHECK(cowmap_txn_size(t) == x->draft.size, "txn_size after begin");
}

static void op_txn_set(void)
{
	struct txnst *x = txn_arg(fz_rd());
	struct keyarg k = key_arg(fz_rd());
	uint8_t vs = fz_rd();

	if (!x->live)
		return;

	uint32_t tok = pick_value(vs, &x->draft, k.kid, x->fam);
	bool noop = x->draft.inst[k.kid] &&
		    insts[x->draft.inst[k.kid]].tok == tok;
	bool full = over_limit(x->fam, &x->draft, k.kid);

	fz_trace("txn %d: set(key %d, token %u)%s%s", (int)(x - G.txn), k.kid,
	      tok, noop ? " no-op" : "", full ? " over the limit" : "");
	fz_arm();
	int rc = cowmap_txn_set(x->t, k.ptr, k.len, tok_ptr(tok));

	fz_disarm();
	if (full) {
		CHECK(rc == -ENOSPC, "txn_set over max_entries returned %d", rc);
	} else if (rc < 0) {
		/* Also a no-op may fail: a set is gathered (its key copied)
		 * before anything looks the key up. */
		check_failure(-rc, "cowmap_txn_set");
	} else if (!noop) {
		CHECK(rc == 0, "txn_set returned %d", rc);
		model_put(&x->draft, k.kid, new_instance(tok, x->fam));
		x->changed = true;
	}
	check_draft(x, k.kid);
}

/*
 * A batch.  The pairs are chosen one by one on a scratch copy of the
 * draft's model, as successive txn_set calls would see it (so a value can
 * be the key's current one, set earlier in the same batch).  Then the
 * library must apply all of them or, failing, none, and owes value_free
 * as documented: per key, the last pair wins; if its value is not the one
 * the key had, that one is released; and each other distinct value the
 * key's pairs stored that is neither the final nor the previous value was
 * given and replaced, so it is owed once.
 */
static void op_txn_set_many(void)
{
	struct txnst *x = txn_arg(fz_rd());
	unsigned n = fz_rd() % (GET_MANY_MAX + 1);
	const void *kp[GET_MANY_MAX];
	size_t lens[GET_MANY_MAX];
	void *values[GET_MANY_MAX];
	int kids[GET_MANY_MAX];
	uint32_t toks[GET_MANY_MAX];

	if (!x->live || !tokens_left())
		return;

	struct model sim = x->draft;

	for (unsigned i = 0; i < n; i++) {
		struct keyarg k = key_arg(fz_rd());
		uint32_t tok = pick_value(fz_rd(), &sim, k.kid, x->fam);

		kp[i] = k.ptr;
		lens[i] = k.len;
		values[i] = tok_ptr(tok);
		kids[i] = k.kid;
		toks[i] = tok;
		if (!sim.inst[k.kid] || insts[sim.inst[k.kid]].tok != tok) {
			sim.size += sim.inst[k.kid] == 0;
			/* a scratch instance, never held */
			sim.inst[k.kid] = new_instance(tok, x->fam);
		}
	}

	size_t lim = G.fam[x->fam].opts.max_entries;
	bool full = lim != 0 && sim.size > lim;

	fz_trace("txn %d: set_many(%u pairs)%s", (int)(x - G.txn), n,
	      full ? " over the limit" : "");
	fz_arm();
	int rc = cowmap_txn_set_many(x->t, n, kp, lens, values);

	fz_disarm();
	if (full && rc != -ENOMEM) {
		/* The count is known only once the batch is merged, so a
		 * failure to merge may come first. */
		CHECK(rc == -ENOSPC, "txn_set_many over max_entries returned %d",
		      rc);
	} else if (rc < 0) {
		check_failure(-rc, "cowmap_txn_set_many");
	} else {
		CHECK(rc == 0, "txn_set_many returned %d", rc);
		for (unsigned i = 0; i < n; i++) {
			int kid = kids[i];
			unsigned last = i;
			bool first = true;

			for (unsigned j = 0; j < i; j++)
				first &= kids[j] != kid;
			if (!first)
				continue;	/* the key's pairs were done */
			for (unsigned j = i + 1; j < n; j++)
				if (kids[j] == kid)
					last = j;

			uint32_t fin = toks[last];
			bool had = x->draft.inst[kid] != 0;
			uint32_t prev = had ? insts[x->draft.inst[kid]].tok : 0;

			for (unsigned j = i; j < last; j++) {
				bool owed = kids[j] == kid && toks[j] != fin &&
					    !(had && toks[j] == prev);

				for (unsigned e = i; e < j && owed; e++)
					owed = !(kids[e] == kid &&
						 toks[e] == toks[j]);
				if (owed) {	/* given, then replaced */
					uint32_t gone = new_instance(toks[j],
								     x->fam);

					inst_ref(gone);
					inst_unref(gone);
				}
			}
			if (!had || fin != prev) {
				model_put(&x->draft, kid,
					  new_instance(fin, x->fam));
				x->changed = true;
			}
		}
	}
	for (unsigned i = 0; i < n; i++)
		check_draft(x, kids[i]);
	check_draft(x, 0);
}

static void op_txn_del(void)
{
	struct txnst *x = txn_arg(fz_rd());
	struct keyarg k = key_arg(fz_rd());

	if (!x->live)
		return;

	bool present = x->draft.inst[k.kid] != 0;

	fz_trace("txn %d: del(key %d)%s", (int)(x - G.txn), k.kid,
	      present ? "" : " absent");
	fz_arm();
	int rc = cowmap_txn_del(x->t, k.ptr, k.len);

	fz_disarm();
	if (!present) {
		CHECK(rc == 0, "txn_del of an absent key returned %d", rc);
	} else if (rc < 0) {
		check_failure(-rc, "cowmap_txn_del");
	} else {
		CHECK(rc == 1, "txn_del returned %d, expected 1", rc);
		model_remove(&x->draft, k.kid);
		x->changed = true;
	}
	check_draft(x, k.kid);
}

static void op_txn_get(void)
{
	struct txnst *x = txn_arg(fz_rd());
	int kid = key_arg(fz_rd()).kid;

	if (!x->live)
		return;
	fz_trace("txn %d: get(key %d)", (int)(x - G.txn), kid);

	unsigned long a0 = cm_test_alloc_count();

	check_draft(x, kid);
	CHECK(cm_test_alloc_count() == a0, "txn_get allocated");
}

static void txn_finish_model(struct txnst *x)
{
	model_drop(&x->draft);
	model_drop(&x->base);
	x->live = false;
}

static void op_txn_commit(void)
{
	struct txnst *x = txn_arg(fz_rd());
	int dst = slot_arg(fz_rd());

	if (!x->live)
		return;
	fz_trace("slot %d = commit(txn %d)%s", dst, (int)(x - G.txn),
	      x->changed ? "" : " unchanged");
	fz_arm();
	errno = 0;
	struct cowmap *v = cowmap_txn_commit(x->t);
	int err = errno;

	fz_disarm();
	CHECK(v != NULL, "txn_commit failed: %s%s", strerror(err),
	      G.fault ? " (commit must not allocate)" : "");
	if (!x->changed)
		CHECK(v == x->basev, "an unchanged commit returned a new version");
	check_version(v, &x->draft, "committed");
	slot_put(dst, v, &x->draft, x->fam);
	probe_stale(x->t);
	txn_finish_model(x);
}

static void op_txn_abort(void)
{
	struct txnst *x = txn_arg(fz_rd());

	if (!x->live)
		return;
	fz_trace("abort(txn %d)", (int)(x - G.txn));
	cowmap_txn_abort(x->t);
	probe_stale(x->t);
	txn_finish_model(x);
}

static void op_fail(void)
{
	fz.armed = fz_rd() % 24;
	fz_trace("the next operation's allocation #%ld fails", fz.armed + 1);
}

/* ---- canonical form ---- */

/*
 * Rebuild a slot's contents from its family's empty version, in an order
 * the input chooses, with extra keys inserted first and deleted last; the
 * result must be the same trie: equal, no diff, identical stats, and the
 * same iteration order by hash.
 */
static void op_canon(void)
{
	int s = slot_arg(fz_rd());
	uint8_t a = fz_rd(), b = fz_rd();

	if (!G.slot[s].live || !tokens_left())
		return;

	const struct slot *sl = &G.slot[s];
	int fam = sl->fam;
	int order[NKEYS], n = 0, extras[3], nextra = 0;

	for (int i = 0; i < NKEYS; i++) {
		int k = (i + a) % NKEYS;

		if (sl->m.inst[k])
			order[n++] = k;
	}
	if (b & 1)
		for (int i = 0; i < n / 2; i++) {
			int t = order[i];

			order[i] = order[n - 1 - i];
			order[n - 1 - i] = t;
		}
	for (int i = 0; i < NKEYS && nextra < (b >> 1) % 4; i++) {
		int k = (i * 7 + b) % NKEYS;

		if (!sl->m.inst[k])
			extras[nextra++] = k;
	}
	size_t lim = G.fam[fam].opts.max_entries;

	if (lim != 0 && (size_t)n + (size_t)nextra > lim)
		nextra = 0;
	bool use_txn = b & 0x80;

	fz_trace("rebuild slot %d (%d keys, %d extras, %s)", s, n, nextra,
	      use_txn ? "txn" : "sets");

	struct model m = { { 0 }, 0 };
	struct cowmap *v = cowmap_retain(G.fam[fam].empty);
	struct cowmap_txn *t = NULL;

	if (use_txn) {
		t = cowmap_txn_begin(v);
		CHECK(t != NULL, "txn_begin failed");
	}
	for (int pass = 0; pass < 2; pass++) {
		int cnt = pass == 0 ? nextra : n;

		for (int i = 0; i < cnt; i++) {
			int k = pass == 0 ? extras[i] : order[i];
			uint32_t tok = pass == 0 ? new_token()
						 : insts[sl->m.inst[k]].tok;
			struct keyarg ka = key_arg((uint8_t)k);

			if (t) {
				CHECK(cowmap_txn_set(t, ka.ptr, ka.len,
						     tok_ptr(tok)) == 0,
				      "rebuild: txn_set failed");
			} else {
				struct cowmap *w = cowmap_set(v, ka.ptr, ka.len,
							      tok_ptr(tok));

				CHECK(w != NULL, "rebuild: set failed");
				cowmap_release(v);
				v = w;
			}
			m.inst[k] = new_instance(tok, fam);
			m.size++;
			inst_ref(m.inst[k]);
		}
	}
	for (int i = 0; i < nextra; i++) {
		struct keyarg ka = key_arg((uint8_t)extras[i]);

		if (t) {
			CHECK(cowmap_txn_del(t, ka.ptr, ka.len) == 1,
			      "rebuild: txn_del failed");
		} else {
			struct cowmap *w = cowmap_del(v, ka.ptr, ka.len);

			CHECK(w != NULL, "rebuild: del failed");
			cowmap_release(v);
			v = w;
		}
		model_remove(&m, extras[i]);
	}
	if (t) {
		cowmap_release(v);
		v = cowmap_txn_commit(t);
		CHECK(v != NULL, "rebuild: commit failed");
	}

	check_version(v, &m, "rebuilt");
	CHECK(cowmap_equal(sl->v, v, NULL, NULL) == 1,
	      "a rebuilt version is not equal to the original");

	struct diff_rec d = { .a = &sl->m, .b = &m };

	CHECK(cowmap_diff(sl->v, v, diff_cb, &d) == 0 && d.calls == 0,
	      "a rebuilt version differs from the original");

	struct cowmap_stats x, y;

	CHECK(cowmap_stats(sl->v, &x) == 0 && cowmap_stats(v, &y) == 0,
	      "stats failed");
	CHECK(x.entries == y.entries && x.nodes == y.nodes &&
		      x.bytes == y.bytes && x.max_depth == y.max_depth,
	      "rebuilt trie differs: nodes %zu/%zu bytes %zu/%zu depth "
	      "%zu/%zu",
	      x.nodes, y.nodes, x.bytes, y.bytes, x.max_depth, y.max_depth);

	/* Iteration visits entries in hash order: the same hash sequence. */
	struct cowmap_iter i1, i2;
	const void *k1, *k2;
	size_t l1, l2;

	cowmap_iter_init(&i1, sl->v);
	cowmap_iter_init(&i2, v);
	for (;;) {
		int r1 = cowmap_iter_next(&i1, &k1, &l1, NULL);
		int r2 = cowmap_iter_next(&i2, &k2, &l2, NULL);

		CHECK(r1 == r2, "rebuilt version iterates a different count");
		if (!r1)
			break;
		CHECK(key_hash(fam, kid_of(k1, l1)) ==
			      key_hash(fam, kid_of(k2, l2)),
		      "rebuilt version iterates in another hash order");
	}
	cowmap_release(v);
	model_drop(&m);
}

/* ---- full verification ---- */

static void op_verify(void)
{
	fz_trace("verify everything");
	for (int s = 0; s < NSLOTS; s++)
		if (G.slot[s].live) {
			check_version(G.slot[s].v, &G.slot[s].m, "verify");
			check_stats(G.slot[s].v, &G.slot[s].m);
		}
	for (int t = 0; t < NTXNS; t++)
		if (G.txn[t].live)
			for (int k = 0; k < NKEYS; k++)
				check_draft(&G.txn[t], k);
}

/* ---- cells ---- */

struct update_plan {
	int mode;	/* 0 no change, 1 set+del, 2 fail with EPERM */
	struct keyarg set_key, del_key;
	uint32_t tok;
	const struct model *cur;
	int fam;
	/* out */
	bool ran;
	bool set_done;	/* mode 1: the set made a version (its value stored) */
	int err;
	struct model result;
};

static struct cowmap *update_fn(const struct cowmap *cur, void *arg)
{
	struct update_plan *p = arg;

	p->ran = true;
	if (p->mode == 0)
		return cowmap_retain(cur);
	if (p->mode == 2) {
		errno = EPERM;
		return NULL;
	}

	struct cowmap *a = cowmap_set(cur, p->set_key.ptr, p->set_key.len,
				      tok_ptr(p->tok));

	if (a == NULL) {
		p->err = errno;
		return NULL;
	}
	p->set_done = true;

	struct cowmap *b = cowmap_del(a, p->del_key.ptr, p->del_key.len);
	int err = errno;

	cowmap_release(a);
	p->err = err;
	errno = err;
	return b;	/* NULL with errno from del, or the new version */
}

struct cellst {
	struct cowmap_cell *c;
	struct model cur;	/* held */
	int fam;
	uint64_t published;
	/* Versions the cell may have retired: one per publish, and in a
	 * combined publish one per change (the unpublished versions in
	 * between are retired too). */
	uint64_t retired;
};

static const struct cowmap *cell_peek(struct cellst *cs)
{
	urcu_memb_read_lock();
	const struct cowmap *p = cowmap_cell_load(cs->c);

	urcu_memb_read_unlock();
	return p;	/* compared by address only */
}

/* Replace the cell model (the old one is dropped: its frees are due after
 * a grace period, checked when the cell operation ends). */
static void cell_model_set(struct cellst *cs, const struct model *m, int fam)
{
	struct model old = cs->cur;

	cs->cur = *m;
	model_hold(&cs->cur);
	model_drop(&old);
	cs->fam = fam;
}

/* Make the held model @m (taken over) the cell's. */
static void cell_model_take(struct cellst *cs, struct model *m)
{
	struct model old = cs->cur;

	cs->cur = *m;
	model_drop(&old);
}

static void cell_check_stats(struct cellst *cs)
{
	struct cowmap_cell_stats st;

	CHECK(cowmap_cell_stats(cs->c, &st) == 0, "cell_stats failed");
	CHECK(st.published == cs->published,
	      "cell published %llu, expected %llu",
	      (unsigned long long)st.published,
	      (unsigned long long)cs->published);
	CHECK(st.pending_versions <= cs->retired,
	      "%zu versions pending after %llu retired",
	      st.pending_versions, (unsigned long long)cs->retired);
}

static void cell_check_current(struct cellst *cs, int kid)
{
	urcu_memb_read_lock();
	check_get(cowmap_cell_load(cs->c), &cs->cur, key_arg((uint8_t)kid),
		  "cell");
	CHECK(cowmap_size(cowmap_cell_load(cs->c)) == cs->cur.size,
	      "cell size %zu, model %u",
	      cowmap_size(cowmap_cell_load(cs->c)), cs->cur.size);
	urcu_memb_read_unlock();
}

static void cell_sub_set(struct cellst *cs, bool in_reader)
{
	struct keyarg k = key_arg(fz_rd());
	uint8_t vs = fz_rd();
	uint32_t tok = pick_value(vs, &cs->cur, k.kid, cs->fam);
	bool noop = cs->cur.inst[k.kid] && insts[cs->cur.inst[k.kid]].tok == tok;
	bool full = over_limit(cs->fam, &cs->cur, k.kid);
	const struct cowmap *before = NULL;
	uint32_t freed_before[NKEYS] = { 0 };
	unsigned long a0, allocs;

	fz_trace("cell: set(key %d, token %u)%s%s%s", k.kid, tok,
	      noop ? " no-op" : "", full ? " over the limit" : "",
	      in_reader ? " inside a read-side section" : "");
	if (in_reader) {
		/* The version a reader holds must stay whole (and its values
		 * unfreed) while the reader's section lasts. */
		urcu_memb_read_lock();
		before = cowmap_cell_load(cs->c);
		pthread_mutex_lock(&free_lock);
		for (int i = 0; i < NKEYS; i++)
			if (cs->cur.inst[i])
				freed_before[i] =
					tok_freed[insts[cs->cur.inst[i]].tok];
		pthread_mutex_unlock(&free_lock);
	}
	a0 = cm_test_alloc_count();
	fz_arm();
	int rc = cowmap_cell_set(cs->c, k.ptr, k.len, tok_ptr(tok));

	fz_disarm();
	allocs = cm_test_alloc_count() - a0;
	if (in_reader) {
		for (int i = 0; i < NKEYS; i++)
			check_get(before, &cs->cur, key_arg((uint8_t)i),
				  "a reader's version after a publish");
		check_iter(before, &cs->cur, 0, false);
		pthread_mutex_lock(&free_lock);
		for (int i = 0; i < NKEYS; i++)
			if (cs->cur.inst[i] &&
			    tok_freed[insts[cs->cur.inst[i]].tok] !=
				    freed_before[i]) {
				pthread_mutex_unlock(&free_lock);
				fz_fail(__LINE__, "value of key %d freed while "
						  "a reader can see it", i);
			}
		pthread_mutex_unlock(&free_lock);
		urcu_memb_read_unlock();
	}
	if (noop || full) {
		/* A lone request the cell answers by a lookup: exact result,
		 * nothing allocated, also under injection (section 4). */
		CHECK(rc == (full ? -ENOSPC : 0), "lone cell_set %s returned %d",
		      full ? "over max_entries" : "of the same value", rc);
		CHECK(allocs == 0, "lone cell_set %s made %lu allocations",
		      full ? "over max_entries" : "of the same value", allocs);
	} else if (rc == -ENOMEM && G.fault) {
		/* Nothing changes. */
	} else if (rc < 0) {
		check_failure(-rc, "cowmap_cell_set");
	} else {
		CHECK(rc == 0, "cell_set returned %d", rc);
		if (!noop) {
			struct model m = cs->cur;

			if (!m.inst[k.kid])
				m.size++;
			m.inst[k.kid] = new_instance(tok, cs->fam);
			cell_model_set(cs, &m, cs->fam);
			cs->published++;
			cs->retired++;
		}
	}
	cell_check_current(cs, k.kid);
	cell_check_stats(cs);
}

static void cell_sub_del(struct cellst *cs)
{
	struct keyarg k = key_arg(fz_rd());
	bool present = cs->cur.inst[k.kid] != 0;

	fz_trace("cell: del(key %d)%s", k.kid, present ? "" : " absent");

	unsigned long a0 = cm_test_alloc_count(), allocs;

	fz_arm();
	int rc = cowmap_cell_del(cs->c, k.ptr, k.len);

	fz_disarm();
	allocs = cm_test_alloc_count() - a0;
	if (!present) {
		/* Answered by a lookup, also under injection: see
		 * cell_sub_set. */
		CHECK(rc == 0, "cell_del of an absent key returned %d", rc);
		CHECK(allocs == 0, "cell_del of an absent key made %lu "
				   "allocations", allocs);
	} else if (rc == -ENOMEM && G.fault) {
		/* Nothing changes. */
	} else if (rc < 0) {
		check_failure(-rc, "cowmap_cell_del");
	} else {
		CHECK(rc == 1, "cell_del returned %d", rc);
		struct model m = cs->cur;

		m.inst[k.kid] = 0;
		m.size--;
		cell_model_set(cs, &m, cs->fam);
		cs->published++;
		cs->retired++;
	}
	cell_check_current(cs, k.kid);
	cell_check_stats(cs);
}

static void cell_sub_snapshot(struct cellst *cs)
{
	int dst = slot_arg(fz_rd());

	fz_trace("cell: slot %d = snapshot", dst);

	struct cowmap *v = cowmap_cell_snapshot(cs->c);

	CHECK(v != NULL, "cell_snapshot failed");
	check_version(v, &cs->cur, "snapshot");
	slot_put(dst, v, &cs->cur, cs->fam);
}

/* Does the library take versions of families @a and @b for one cell's
 * (cowmap_cell_publish: the same hash function, value_free, context and
 * limit; the seed may differ)? */
static bool same_family(int a, int b)
{
	const struct cowmap_options *x = &G.fam[a].opts, *y = &G.fam[b].opts;

	return x->hash == y->hash && x->value_free == y->value_free &&
	       x->ctx == y->ctx && x->max_entries == y->max_entries;
}

static void cell_sub_publish(struct cellst *cs, bool use_cas)
{
	int src = slot_arg(fz_rd());
	uint8_t how = fz_rd();

	if (!G.slot[src].live)
		return;

	const struct cowmap *expected = NULL;
	bool expect_ok = true;
	struct cowmap *snap = NULL;

	if (use_cas) {
		if (how & 1) {
			snap = cowmap_cell_snapshot(cs->c);
			expected = snap;
		} else {
			int e = slot_arg(how >> 1);

			if (!G.slot[e].live)
				return;
			expected = G.slot[e].v;
		}
		expect_ok = expected == cell_peek(cs);
	}
	fz_trace("cell: %s slot %d%s", use_cas ? "cas" : "publish", src,
	      use_cas ? (expect_ok ? " (expected current)" : " (stale)") : "");

	struct cowmap *next = cowmap_retain(G.slot[src].v);

	fz_arm();
	int rc = use_cas ? cowmap_cell_cas(cs->c, expected, next)
			 : cowmap_cell_publish(cs->c, next);

	fz_disarm();
	cowmap_release(snap);
	if (rc == -ENOMEM) {
		check_failure(ENOMEM, "cell publish");
	} else if (!same_family(G.slot[src].fam, cs->fam)) {
		CHECK(rc == -EINVAL, "a version of another family: %d", rc);
	} else if (!expect_ok) {
		CHECK(rc == -EAGAIN, "cas with a stale version returned %d", rc);
	} else {
		CHECK(rc == 0, "publish/cas returned %d", rc);
		cell_model_set(cs, &G.slot[src].m, G.slot[src].fam);
		cs->published++;
		cs->retired++;
		CHECK(cell_peek(cs) == G.slot[src].v,
		      "the published version is not current");
	}
	cell_check_current(cs, 0);
	cell_check_stats(cs);
}

static void cell_sub_update(struct cellst *cs)
{
	struct update_plan p = { .mode = fz_rd() % 3 };

	p.set_key = key_arg(fz_rd());
	p.del_key = key_arg(fz_rd());
	p.tok = new_token();
	p.fam = cs->fam;

	struct model m = cs->cur;
	bool full = p.mode == 1 && over_limit(cs->fam, &m, p.set_key.kid);

	fz_trace("cell: update mode %d (set key %d, del key %d)%s", p.mode,
	      p.set_key.kid, p.del_key.kid, full ? " over the limit" : "");
	fz_arm();
	int rc = cowmap_cell_update(cs->c, update_fn, &p);

	fz_disarm();
	if (rc == -ENOMEM && G.fault && !p.ran)
		goto out;	/* the retirement record failed first */
	CHECK(p.ran, "update_fn did not run (rc %d)", rc);
	if (p.mode == 0) {
		CHECK(rc == 0, "a no-change update returned %d", rc);
	} else if (p.mode == 2) {
		CHECK(rc == -EPERM, "update passed on %d, not fn's -EPERM", rc);
	} else if (full) {
		CHECK(rc == -ENOSPC, "update over max_entries returned %d", rc);
	} else if (rc < 0) {
		check_failure(-rc, "cowmap_cell_update");
		/* The set succeeded and the delete failed: the value was
		 * stored in a version that update_fn then released, so it is
		 * owed one value_free already. */
		if (p.set_done) {
			uint32_t gone = new_instance(p.tok, cs->fam);

			inst_ref(gone);
			inst_unref(gone);
		}
	} else {
		CHECK(rc == 0, "update returned %d", rc);
		/* Build the result on a held copy: a key set and deleted in
		 * the same update makes an entry no version keeps, whose
		 * value is still owed one value_free. */
		model_hold(&m);
		model_put(&m, p.set_key.kid, new_instance(p.tok, cs->fam));
		model_remove(&m, p.del_key.kid);
		cell_model_take(cs, &m);
		cs->published++;	/* set + del never returns cur */
		cs->retired++;
	}
out:
	cell_check_current(cs, p.set_key.kid);
	cell_check_current(cs, p.del_key.kid);
	cell_check_stats(cs);
}

/*
 * Concurrent writers: 2-4 threads send cell_set/cell_del requests for
 * distinct keys at once, so the cell combines them into transactions
 * (apply_batch).  Which requests share a batch is up to the scheduler,
 * but every answer must agree with the final state: a set that returned 0
 * is there with its value, one refused with ENOSPC left its key as it
 * was, a delete answered 1 exactly when its key was present.
 */
struct conc_req {
	struct keyarg k;
	bool del;
	uint32_t tok;
	int rc;
};

struct conc_thread {
	pthread_t th;
	struct cowmap_cell *c;
	pthread_barrier_t *start;
	struct conc_req req[4];
	int n;
};

static void *conc_main(void *arg)
{
	struct conc_thread *t = arg;

	urcu_memb_register_thread();
	pthread_barrier_wait(t->start);
	for (int i = 0; i < t->n; i++) {
		struct conc_req *q = &t->req[i];

		q->rc = q->del ? cowmap_cell_del(t->c, q->k.ptr, q->k.len)
			       : cowmap_cell_set(t->c, q->k.ptr, q->k.len,
						 tok_ptr(q->tok));
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void cell_sub_concurrent(struct cellst *cs)
{
	uint8_t a = fz_rd(), b = fz_rd(), dels = fz_rd();
	int nthreads = 2 + a % 3, per = 1 + b % 4, first = fz_rd() % NKEYS;
	struct conc_thread th[4];
	pthread_barrier_t start;
	struct model m = cs->cur;
	int changes = 0;

	fz_trace("cell: %d threads x %d requests", nthreads, per);
	pthread_barrier_init(&start, NULL, (unsigned)nthreads);
	for (int t = 0; t < nthreads; t++) {
		th[t] = (struct conc_thread){ .c = cs->c, .start = &start,
					      .n = per };
		for (int i = 0; i < per; i++) {
			struct conc_req *q = &th[t].req[i];
			int idx = t * per + i;

			q->k = key_arg((uint8_t)((first + idx) % NKEYS));
			q->del = (dels >> (idx % 8)) & 1;
			q->tok = q->del ? 0 : new_token();
		}
	}
	for (int t = 0; t < nthreads; t++)
		CHECK(pthread_create(&th[t].th, NULL, conc_main, &th[t]) == 0,
		      "pthread_create failed");
	for (int t = 0; t < nthreads; t++)
		pthread_join(th[t].th, NULL);
	pthread_barrier_destroy(&start);

	/* The model after the changes that were answered as made. */
	model_hold(&m);
	for (int t = 0; t < nthreads; t++)
		for (int i = 0; i < per; i++) {
			struct conc_req *q = &th[t].req[i];
			bool present = cs->cur.inst[q->k.kid] != 0;

			if (q->del) {
				CHECK(q->rc == (present ? 1 : 0),
				      "concurrent cell_del(key %d) = %d, key "
				      "was %s",
				      q->k.kid, q->rc,
				      present ? "present" : "absent");
				if (present) {
					model_remove(&m, q->k.kid);
					changes++;
				}
			} else if (q->rc == -ENOSPC) {
				CHECK(!present && G.fam[cs->fam].opts.max_entries,
				      "concurrent cell_set(key %d) refused "
				      "with ENOSPC",
				      q->k.kid);
			} else {
				CHECK(q->rc == 0, "concurrent cell_set(key %d) "
						  "= %d",
				      q->k.kid, q->rc);
				model_put(&m, q->k.kid,
					  new_instance(q->tok, cs->fam));
				changes++;
			}
		}
	size_t lim = G.fam[cs->fam].opts.max_entries;

	CHECK(lim == 0 || m.size <= lim, "%u entries over the limit %zu",
	      m.size, lim);
	cell_model_take(cs, &m);

	/* Combined requests share publishes: between one and one each. */
	struct cowmap_cell_stats st;

	CHECK(cowmap_cell_stats(cs->c, &st) == 0, "cell_stats failed");
	CHECK(changes == 0 ? st.published == cs->published
			   : st.published >= cs->published + 1 &&
				     st.published <= cs->published +
							     (uint64_t)changes,
	      "%d changes made %llu publishes", changes,
	      (unsigned long long)(st.published - cs->published));
	cs->published = st.published;
	cs->retired += (uint64_t)changes;

	struct cowmap *v = cowmap_cell_snapshot(cs->c);

	CHECK(v != NULL, "cell_snapshot failed");
	check_version(v, &cs->cur, "cell after concurrent writers");
	cowmap_release(v);
}

static void op_cell(void)
{
	int src = slot_arg(fz_rd());
	unsigned n = fz_rd() % 16;

	if (!G.slot[src].live || G.cell_ops >= MAX_CELL_OPS)
		return;
	G.cell_ops++;
	fz_trace("cell from slot %d, %u steps", src, n);

	struct cellst cs = { .fam = G.slot[src].fam };

	G.defer_checks = true;
	fz_arm();
	errno = 0;
	cs.c = cowmap_cell_new(cowmap_retain(G.slot[src].v), NULL);
	int err = errno;

	fz_disarm();
	if (cs.c == NULL) {	/* the initial version was stolen anyway */
		check_failure(err, "cowmap_cell_new");
		G.defer_checks = false;
		return;
	}
	fz.armed = -1;
	G.fault = false;
	cs.cur = G.slot[src].m;
	model_hold(&cs.cur);
	for (unsigned i = 0; i < n && fz_input_left() && tokens_left(); i++) {
		uint8_t sub = fz_rd();

		if (sub >= 0xf8) {	/* arm the next step */
			fz.armed = sub & 7;
			G.fault = true;
			continue;
		}
		switch (sub % 8) {
		case 0:
		case 1:
			cell_sub_set(&cs, sub & 0x40);
			break;
		case 2:
			cell_sub_del(&cs);
			break;
		case 3:
			cell_sub_snapshot(&cs);
			break;
		case 4:
			cell_sub_publish(&cs, false);
			break;
		case 5:
			cell_sub_publish(&cs, true);
			break;
		case 6:
			cell_sub_update(&cs);
			break;
		default:
			if (sub & 0x20)
				cell_sub_concurrent(&cs);
			else
				cell_check_current(&cs, fz_rd() % NKEYS);
			break;
		}
		fz.armed = -1;
		G.fault = false;
	}

	/* Every retired version of this cell is released after the barrier. */
	struct cowmap_cell_stats st;

	CHECK(cowmap_cell_barrier(cs.c) == 0, "cell_barrier failed");
	CHECK(cowmap_cell_stats(cs.c, &st) == 0, "cell_stats failed");
	CHECK(st.pending_versions == 0 && st.pending_bytes == 0 &&
		      st.pending_nodes == 0,
	      "after cowmap_cell_barrier: %zu versions, %zu bytes, %zu nodes pending",
	      st.pending_versions, st.pending_bytes, st.pending_nodes);
	CHECK(st.published == cs.published, "cell published %llu, expected %llu",
	      (unsigned long long)st.published,
	      (unsigned long long)cs.published);

	struct cowmap *last = cowmap_cell_snapshot(cs.c);

	CHECK(last != NULL, "cell_snapshot failed");
	check_version(last, &cs.cur, "cell at the end");
	cowmap_release(last);
	cowmap_cell_free(cs.c);
	model_drop(&cs.cur);
	G.defer_checks = false;
}

/* ------------------------------------------------------------------ */
/* The program                                                         */
/* ------------------------------------------------------------------ */

struct op {
	const char *name;
	void (*run)(void);
};

static const struct op ops[] = {
	{ "new", op_new },		{ "set", op_set },
	{ "del", op_del },		{ "set_many", op_set_many },
	{ "retain", op_retain },	{ "release", op_release },
	{ "get", op_get },		{ "get_many", op_get_many },
	{ "iter", op_iter },		{ "diff", op_diff },
	{ "equal", op_equal },		{ "stats", op_stats },
	{ "txn_begin", op_txn_begin },	{ "txn_set", op_txn_set },
	{ "txn_del", op_txn_del },	{ "txn_get", op_txn_get },
	{ "txn_commit", op_txn_commit }, { "txn_abort", op_txn_abort },
	{ "fail", op_fail },		{ "canon", op_canon },
	{ "verify", op_verify },	{ "cell", op_cell },
	{ "set", op_set },		{ "txn_set_many", op_txn_set_many },
};
#define OP_COUNT (sizeof(ops) / sizeof(ops[0]))

static void setup(const uint8_t *data, size_t size)
{
	if (!initialised) {
		init_keys();
		urcu_memb_register_thread();
		initialised = true;
	}
	memset(&G, 0, sizeof(G));
	fz_start("fuzz_ops", data, size);

	uint8_t flags = fz_rd();

	G.hmode = (flags >> 2) % HM_COUNT;
	G.hparam = fz_rd();
	if (G.hmode == HM_TABLE)
		for (int i = 0; i < TABLE_KEYS; i++) {
			G.htab[i] = (uint16_t)(fz_rd() | fz_rd() << 8);
		}

	size_t limit = limits[flags >> 5];

	for (int f = 0; f < NFAMS; f++) {
		struct family *fm = &G.fam[f];

		memset(&fm->opts, 0, sizeof(fm->opts));
		fm->owning = f < 2 ? (flags & 1) : (flags & 2);
		fm->opts.seed = f < 2 ? SEED_A : SEED_B;
		fm->opts.hash = G.hmode == HM_BUILTIN ? NULL : fz_hash;
		fm->opts.ctx = f < 2 ? &ctx_a : &ctx_b;
		fm->opts.value_free = fm->owning ? fz_value_free : NULL;
		fm->opts.max_entries = f == 1 ? 0 : limit;
		fm->empty = cowmap_new(&fm->opts);
		CHECK(fm->empty != NULL, "cowmap_new failed");
	}
	if (fz.trace)
		fprintf(stderr, "flags %#x: hash mode %d param %u, limit %zu, "
				"owning %d/%d\n",
			flags, G.hmode, G.hparam, limit, G.fam[0].owning,
			G.fam[2].owning);
}

static void teardown(void)
{
	fz.op_name = "teardown";
	for (int t = 0; t < NTXNS; t++)
		if (G.txn[t].live) {
			cowmap_txn_abort(G.txn[t].t);
			txn_finish_model(&G.txn[t]);
		}
	for (int s = 0; s < NSLOTS; s++)
		slot_clear(s);
	for (int f = 0; f < NFAMS; f++)
		cowmap_release(G.fam[f].empty);
	check_frees();

	/* Every value given to an owning family was freed exactly once. */
	for (uint32_t i = 1; i <= G.ninst; i++)
		CHECK(insts[i].refs == 0, "model bug: instance %u still held",
		      i);
	for (uint32_t t = 1; t <= G.ntok; t++) {
		CHECK(tok_freed[t] == tok_owed[t],
		      "token %u: value_free called %u times, expected %u", t,
		      tok_freed[t], tok_owed[t]);
		tok_freed[t] = tok_owed[t] = 0;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup(data, size);
	while (fz_input_left() && fz.op_no < MAX_OPS && tokens_left()) {
		const struct op *op = &ops[fz_rd() % OP_COUNT];

		fz.op_no++;
		fz.op_name = op->name;
		G.fault = fz.armed >= 0;
		op->run();
		fz_disarm();
		if (op->run != op_fail)
			fz.armed = -1;
		check_frees();
	}
	teardown();
	return 0;
}
