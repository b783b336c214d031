/*
 * fuzz_prefix.c - a libFuzzer harness for prefix tables.
 *
 * The input is decoded into a program of operations over NSLOTS live
 * prefix-table versions and one transaction, all of one width, each with
 * its own reference model (tests/prefix_model.c: every longest match
 * answered by scanning all prefixes).  Every result the library returns is
 * checked against the model; a mismatch prints what went wrong and calls
 * abort(), which libFuzzer (or tests/fuzz/replay-prefix under
 * `make check`) reports as a crash.  Kept apart from fuzz_ops.c so that
 * the map harness's corpus keeps its meaning.
 *
 * Input: byte 0 chooses the width (widths[], low 3 bits), whether the
 * table owns its values (bit 3) and max_entries (limits[], bits 4-6);
 * then operations, an opcode byte (modulo OP_COUNT) and its arguments; a
 * missing byte reads as 0.  A prefix is two bytes: the address (one of
 * four base addresses, with one bit flipped or not, and garbage beyond
 * the length) and the length (modulo width + 1, so /0 and host routes
 * come often enough, and prefixes nest along the bases).
 *
 * Values are fresh tokens (or the prefix's current value, a no-op), so
 * each successful set owes exactly one value_free in an owning table: no
 * token may be freed while a live version or the draft holds it, and at
 * the end each must have been freed exactly once.
 *
 * OP_FAIL k makes the next operation's k-th allocation fail: that call
 * may only fail with ENOMEM, leaving every version and the draft as the
 * model says, and freeing nothing.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <urcu/urcu-memb.h>

#include <cowmap.h>

#include "alloc.h"
#include "harness.h"
#include "prefix_model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSLOTS 4
#define MAX_OPS 1500
#define MAX_TOKENS 6000
#define MANY_MAX 40
#define MAX_CELL_OPS 2

static const unsigned widths[8] = { 32, 128, 8, 7, 1, 64, 33, 126 };
static const size_t limits[8] = { 0, 0, 0, 0, 1, 3, 8, 20 };

static struct {
	unsigned width;
	bool owning;
	size_t limit;
	struct cowmap_options opts;
	struct cowmap *slot[NSLOTS];
	struct pm_model model[NSLOTS];
	struct cowmap_txn *txn;
	struct pm_model tmodel;
	pm_addr base[4];
	uint32_t ntok;
	int cells;
} G;

static unsigned tok_freed[MAX_TOKENS + 1];
static char tokens[MAX_TOKENS + 1];
static bool stored[MAX_TOKENS + 1];	/* handed to the table by a success */

static void *tok(uint32_t t)
{
	return &tokens[t];
}

static uint32_t tok_id(void *v)
{
	return (uint32_t)((char *)v - tokens);
}

static void value_free(void *v, void *ctx)
{
	(void)ctx;
	tok_freed[tok_id(v)]++;
}

/* ---- prefixes from input bytes ---- */

static void rd_prefix(pm_addr *a, unsigned *len)
{
	uint8_t b = fz_rd(), l = fz_rd();
	unsigned w = G.width;

	*len = l % (w + 1);
	*a = G.base[b & 3];
	if (b & 4)	/* flip one bit: a sibling, perhaps inside the prefix */
		*a ^= (pm_addr)1 << (127 - (unsigned)(b >> 3) % w);
	/* garbage beyond the length, which must be ignored */
	*a |= pm_mask(~(pm_addr)0, w) & ~pm_mask(~(pm_addr)0, *len) &
	      ((pm_addr)0x9e3779b97f4a7c15u * (b | 1) << 64 |
	       (pm_addr)0xc2b2ae3d27d4eb4fu * (l | 1));
	*a = pm_mask(*a, w);
}

static void rd_addr(pm_addr *a)
{
	unsigned len;

	rd_prefix(a, &len);
	if (fz_rd() & 1)	/* an end of the prefix's range, or one beyond */
		*a = pm_mask(*a + ((pm_addr)1 << (128 - G.width)), G.width);
}

/* ---- checks ---- */

static void check_lookup(const struct cowmap *t, const struct pm_model *m,
			 pm_addr a)
{
	unsigned char b[16];
	void *v = NULL;
	unsigned len = 0;
	const struct pm_entry *e = pm_lookup(m, a);

	pm_store(b, a, G.width);
	int rc = cowmap_prefix_lookup(t, b, &v, &len);

	CHECK(rc == (e != NULL), "lookup answered %d", rc);
	if (e != NULL)
		CHECK(v == e->value && len == e->len,
		      "lookup gave /%u, model /%u", len, e->len);
}

/* The whole version against its model. */
static void check_slot(const struct cowmap *t, const struct pm_model *m)
{
	struct cowmap_iter it;
	unsigned char b[16];
	unsigned len;
	void *v;
	size_t n = 0;
	struct cowmap_stats st;

	CHECK(cowmap_size(t) == m->n, "size %zu, model %zu", cowmap_size(t),
	      m->n);
	CHECK(cowmap_stats(t, &st) == 0 && st.entries == m->n, "stats");
	cowmap_iter_init(&it, t);
	while (cowmap_prefix_iter_next(&it, b, &len, &v)) {
		pm_addr a = pm_load(b, G.width);
		struct pm_entry *e = pm_find(m, a, len);

		CHECK(e != NULL && e->value == v && pm_mask(a, len) == a,
		      "iteration gave a prefix the model lacks");
		n++;
	}
	CHECK(n == m->n, "iteration saw %zu of %zu", n, m->n);
	for (size_t i = 0; i < m->n; i++) {
		pm_addr a = m->e[i].addr;
		pm_addr last = a | (pm_mask(~(pm_addr)0, G.width) &
				    ~pm_mask(~(pm_addr)0, m->e[i].len));

		check_lookup(t, m, a);
		check_lookup(t, m, last);
		check_lookup(t, m, pm_mask(last + ((pm_addr)1 << (128 - G.width)),
					   G.width));
	}
}

/* No token held by a live version or the draft may have been freed. */
static void check_frees(void)
{
	if (!G.owning)
		return;
	for (int s = 0; s < NSLOTS; s++)
		for (size_t i = 0; i < G.model[s].n; i++)
			CHECK(tok_freed[tok_id(G.model[s].e[i].value)] == 0,
			      "a value still held was freed (token %u)",
			      tok_id(G.model[s].e[i].value));
	if (G.txn != NULL)
		for (size_t i = 0; i < G.tmodel.n; i++)
			CHECK(tok_freed[tok_id(G.tmodel.e[i].value)] == 0,
			      "a value the draft holds was freed (token %u)",
			      tok_id(G.tmodel.e[i].value));
}

/* ---- fault injection ---- */

/* After a call that may have failed under injection: it failed with
 * ENOMEM only if a failure was armed. */
static void check_failure(int err)
{
	CHECK(fz.armed >= 0 && err == ENOMEM, "failed with %d", err);
}

static void *fresh_value(const struct pm_model *m, pm_addr a, unsigned len)
{
	struct pm_entry *e = pm_find(m, a, len);

	if (e != NULL && (fz_rd() & 3) == 0)
		return e->value;	/* the value it has: a no-op */
	return tok(++G.ntok);
}

static void slot_set(int s, struct cowmap *t, const struct pm_model *m)
{
	cowmap_release(G.slot[s]);
	pm_fini(&G.model[s]);
	G.slot[s] = t;
	pm_copy(&G.model[s], m);
}

/* ---- operations ---- */

static void op_set(void)
{
	int dst = fz_rd() % NSLOTS, src = fz_rd() % NSLOTS;
	pm_addr a;
	unsigned len;
	unsigned char b[16];

	rd_prefix(&a, &len);
	pm_store(b, a, G.width);

	struct pm_model m;
	void *v = fresh_value(&G.model[src], a, len);
	bool had = pm_find(&G.model[src], a, len) != NULL;

	fz_arm();
	struct cowmap *t = cowmap_prefix_set(G.slot[src], b, len, v);
	int err = errno;

	fz_disarm();
	if (t == NULL) {
		if (!had && G.limit != 0 && G.model[src].n >= G.limit) {
			CHECK(err == ENOSPC, "limit answered %d", err);
			return;
		}
		check_failure(err);
		check_slot(G.slot[src], &G.model[src]);
		return;
	}
	CHECK(had || G.limit == 0 || G.model[src].n < G.limit,
	      "set beyond max_entries");
	stored[tok_id(v)] = true;
	pm_copy(&m, &G.model[src]);
	pm_set(&m, a, len, v, NULL);
	if (had && pm_find(&G.model[src], a, len)->value == v)
		CHECK(t == G.slot[src], "a no-op set made a new version");
	slot_set(dst, t, &m);
	pm_fini(&m);
}

static void op_del(void)
{
	int dst = fz_rd() % NSLOTS, src = fz_rd() % NSLOTS;
	pm_addr a;
	unsigned len;
	unsigned char b[16];
	struct pm_model m;

	rd_prefix(&a, &len);
	if ((fz_rd() & 1) && G.model[src].n > 0) {	/* one that is there */
		struct pm_entry *e = &G.model[src].e[fz_rd() % G.model[src].n];

		a = e->addr;
		len = e->len;
	}
	pm_store(b, a, G.width);
	fz_arm();
	struct cowmap *t = cowmap_prefix_del(G.slot[src], b, len);
	int err = errno;

	fz_disarm();
	if (t == NULL) {
		check_failure(err);
		check_slot(G.slot[src], &G.model[src]);
		return;
	}
	pm_copy(&m, &G.model[src]);
	if (!pm_del(&m, a, len, NULL))
		CHECK(t == G.slot[src], "deleting an absent prefix made a "
					"new version");
	slot_set(dst, t, &m);
	pm_fini(&m);
}

static void op_get(void)
{
	int s = fz_rd() % NSLOTS;
	pm_addr a;
	unsigned len;
	unsigned char b[16];
	void *v = NULL;

	rd_prefix(&a, &len);
	pm_store(b, a, G.width);

	struct pm_entry *e = pm_find(&G.model[s], a, len);
	int rc = cowmap_prefix_get(G.slot[s], b, len, &v);

	CHECK(rc == (e != NULL) && (e == NULL || e->value == v), "get");
}

static void op_lookup(void)
{
	int s = fz_rd() % NSLOTS;
	pm_addr a;

	rd_addr(&a);
	check_lookup(G.slot[s], &G.model[s], a);
}

static void op_lookup_many(void)
{
	int s = fz_rd() % NSLOTS;
	size_t n = fz_rd() % (MANY_MAX + 1), found = 0;
	unsigned char b[MANY_MAX * 16] = { 0 };	/* n may be 0 */
	pm_addr a[MANY_MAX];
	void *v[MANY_MAX];
	unsigned lens[MANY_MAX];
	unsigned stride = (G.width + 7) / 8;

	for (size_t i = 0; i < n; i++) {
		rd_addr(&a[i]);
		pm_store(b + i * stride, a[i], G.width);
	}

	size_t got = cowmap_prefix_lookup_many(G.slot[s], n, b, v, lens);

	for (size_t i = 0; i < n; i++) {
		const struct pm_entry *e = pm_lookup(&G.model[s], a[i]);

		found += e != NULL;
		CHECK(v[i] == (e ? e->value : NULL) &&
			      lens[i] == (e ? e->len : 0),
		      "lookup_many answer %zu", i);
	}
	CHECK(got == found, "lookup_many found %zu, model %zu", got, found);
}

static void op_verify(void)
{
	int s = fz_rd() % NSLOTS;

	check_slot(G.slot[s], &G.model[s]);
}

struct seen {
	struct pm_model *from, *to;
	size_t n;
};

static int on_change(enum cowmap_change what, const void *addr, unsigned len,
		     void *o, void *n, void *ctx)
{
	struct seen *sn = ctx;
	pm_addr a = pm_load(addr, G.width);
	struct pm_entry *f = pm_find(sn->from, a, len),
			*t = pm_find(sn->to, a, len);

	switch (what) {
	case COWMAP_ADDED:
		CHECK(f == NULL && t != NULL && t->value == n && o == NULL,
		      "diff: bad ADDED");
		break;
	case COWMAP_REMOVED:
		CHECK(f != NULL && t == NULL && f->value == o && n == NULL,
		      "diff: bad REMOVED");
		break;
	case COWMAP_CHANGED:
		CHECK(f != NULL && t != NULL && f->value == o &&
			      t->value == n && o != n,
		      "diff: bad CHANGED");
		break;
	}
	sn->n++;
	return 0;
}

static void op_diff(void)
{
	int x = fz_rd() % NSLOTS, y = fz_rd() % NSLOTS;
	struct seen sn = { &G.model[x], &G.model[y], 0 };
	size_t want = 0;

	CHECK(cowmap_prefix_diff(G.slot[x], G.slot[y], on_change, &sn) == 0,
	      "diff failed");
	for (size_t i = 0; i < G.model[x].n; i++) {
		struct pm_entry *e = &G.model[x].e[i],
				*f = pm_find(&G.model[y], e->addr, e->len);

		want += f == NULL || f->value != e->value;
	}
	for (size_t i = 0; i < G.model[y].n; i++)
		want += pm_find(&G.model[x], G.model[y].e[i].addr,
				G.model[y].e[i].len) == NULL;
	CHECK(sn.n == want, "diff reported %zu changes, model %zu", sn.n, want);
	CHECK(cowmap_equal(G.slot[x], G.slot[y], NULL, NULL) == (want == 0),
	      "equal disagrees with diff");
}

static void op_txn_begin(void)
{
	int s = fz_rd() % NSLOTS;

	if (G.txn != NULL)
		return;
	fz_arm();
	G.txn = cowmap_txn_begin(G.slot[s]);
	int err = errno;

	fz_disarm();
	if (G.txn == NULL) {
		check_failure(err);
		return;
	}
	pm_copy(&G.tmodel, &G.model[s]);
}

static void check_txn(void)
{
	CHECK(cowmap_txn_size(G.txn) == G.tmodel.n, "draft size");
	for (size_t i = 0; i < G.tmodel.n; i++) {
		unsigned char b[16];
		void *v;

		pm_store(b, G.tmodel.e[i].addr, G.width);
		CHECK(cowmap_txn_prefix_get(G.txn, b, G.tmodel.e[i].len, &v) ==
				      1 &&
			      v == G.tmodel.e[i].value,
		      "draft lost a prefix");
	}
}

static void op_txn_set(void)
{
	pm_addr a;
	unsigned len;
	unsigned char b[16];

	rd_prefix(&a, &len);
	if (G.txn == NULL)
		return;
	pm_store(b, a, G.width);

	void *v = fresh_value(&G.tmodel, a, len);
	bool had = pm_find(&G.tmodel, a, len) != NULL;

	fz_arm();
	int rc = cowmap_txn_prefix_set(G.txn, b, len, v);

	fz_disarm();
	if (rc == -ENOSPC) {
		CHECK(!had && G.limit != 0 && G.tmodel.n >= G.limit,
		      "ENOSPC below the limit");
	} else if (rc < 0) {
		check_failure(-rc);
	} else {
		CHECK(had || G.limit == 0 || G.tmodel.n < G.limit,
		      "draft beyond max_entries");
		stored[tok_id(v)] = true;
		pm_set(&G.tmodel, a, len, v, NULL);
	}
	check_txn();
}

static void op_txn_del(void)
{
	pm_addr a;
	unsigned len;
	unsigned char b[16];

	rd_prefix(&a, &len);
	if (G.txn == NULL)
		return;
	if ((fz_rd() & 1) && G.tmodel.n > 0) {
		struct pm_entry *e = &G.tmodel.e[fz_rd() % G.tmodel.n];

		a = e->addr;
		len = e->len;
	}
	pm_store(b, a, G.width);
	fz_arm();
	int rc = cowmap_txn_prefix_del(G.txn, b, len);

	fz_disarm();
	if (rc < 0)
		check_failure(-rc);
	else
		CHECK(rc == pm_del(&G.tmodel, a, len, NULL), "txn_del said %d",
		      rc);
	check_txn();
}

static void op_txn_set_many(void)
{
	size_t n = fz_rd() % (MANY_MAX + 1);
	struct cowmap_route r[MANY_MAX];
	unsigned char b[MANY_MAX][16];
	struct pm_model m;
	uint32_t tok_before = G.ntok;

	if (G.txn == NULL)
		return;
	pm_copy(&m, &G.tmodel);
	for (size_t i = 0; i < n; i++) {
		pm_addr a;
		unsigned len;

		if (i > 0 && (fz_rd() & 7) == 0) {	/* the same prefix again */
			memcpy(b[i], b[i - 1], 16);
			len = r[i - 1].len;
			a = pm_load(b[i], G.width);
		} else {
			rd_prefix(&a, &len);
			pm_store(b[i], a, G.width);
		}
		r[i].addr = b[i];
		r[i].len = len;
		r[i].value = fresh_value(&m, a, len);
		pm_set(&m, a, len, r[i].value, NULL);
	}
	fz_arm();
	int rc = cowmap_txn_prefix_set_many(G.txn, n, r);

	fz_disarm();
	if (rc == -ENOSPC) {
		CHECK(G.limit != 0 && m.n > G.limit, "ENOSPC below the limit");
	} else if (rc < 0) {
		check_failure(-rc);
	} else {
		CHECK(G.limit == 0 || m.n <= G.limit, "load beyond the limit");
		for (size_t i = 0; i < n; i++)
			stored[tok_id(r[i].value)] = true;
		pm_fini(&G.tmodel);
		pm_copy(&G.tmodel, &m);
	}
	if (rc < 0)	/* nothing was given: no value may be freed */
		for (uint32_t t = tok_before + 1; t <= G.ntok; t++)
			CHECK(tok_freed[t] == 0, "a failed load freed a value");
	pm_fini(&m);
	check_txn();
}

static void op_txn_commit(void)
{
	int dst = fz_rd() % NSLOTS;

	if (G.txn == NULL)
		return;

	struct cowmap *t = cowmap_txn_commit(G.txn);

	CHECK(t != NULL, "commit failed");
	G.txn = NULL;
	slot_set(dst, t, &G.tmodel);
	pm_fini(&G.tmodel);
	check_slot(G.slot[dst], &G.model[dst]);
}

static void op_txn_abort(void)
{
	if (G.txn == NULL)
		return;
	cowmap_txn_abort(G.txn);
	G.txn = NULL;
	pm_fini(&G.tmodel);
}

static void op_fail(void)
{
	fz.armed = fz_rd() % 24;
}

/* A cell over a slot: a few route changes published, then the result
 * snapshotted back into the slot and the cell freed. */
static void op_cell(void)
{
	int s = fz_rd() % NSLOTS, steps = fz_rd() % 6;

	if (G.cells >= MAX_CELL_OPS)
		return;
	G.cells++;

	struct cowmap_cell *c = cowmap_cell_new(cowmap_retain(G.slot[s]), NULL);
	struct pm_model m;

	CHECK(c != NULL, "cell_new");
	pm_copy(&m, &G.model[s]);
	for (int i = 0; i < steps; i++) {
		pm_addr a;
		unsigned len;
		unsigned char b[16];
		bool del = fz_rd() & 1;

		rd_prefix(&a, &len);
		pm_store(b, a, G.width);
		if (del) {
			int rc = cowmap_cell_prefix_del(c, b, len);

			CHECK(rc == pm_del(&m, a, len, NULL), "cell del %d", rc);
		} else {
			void *v = fresh_value(&m, a, len);
			bool had = pm_find(&m, a, len) != NULL;
			int rc = cowmap_cell_prefix_set(c, b, len, v);

			if (rc == -ENOSPC)
				CHECK(!had && G.limit && m.n >= G.limit,
				      "cell ENOSPC");
			else
				CHECK(rc == 0, "cell set %d", rc);
			if (rc == 0) {
				stored[tok_id(v)] = true;
				pm_set(&m, a, len, v, NULL);
			}
		}
	}

	struct cowmap *t = cowmap_cell_snapshot(c);

	CHECK(t != NULL, "snapshot");
	check_slot(t, &m);
	cowmap_cell_free(c);
	slot_set(s, t, &m);
	pm_fini(&m);
}

struct op {
	const char *name;
	void (*run)(void);
};

static const struct op ops[] = {
	{ "set", op_set },		{ "del", op_del },
	{ "get", op_get },		{ "lookup", op_lookup },
	{ "lookup_many", op_lookup_many }, { "verify", op_verify },
	{ "diff", op_diff },		{ "txn_begin", op_txn_begin },
	{ "txn_set", op_txn_set },	{ "txn_del", op_txn_del },
	{ "txn_set_many", op_txn_set_many }, { "txn_commit", op_txn_commit },
	{ "txn_abort", op_txn_abort },	{ "fail", op_fail },
	{ "cell", op_cell },		{ "set", op_set },
};
#define OP_COUNT (sizeof(ops) / sizeof(ops[0]))

static bool initialised;

static void setup(const uint8_t *data, size_t size)
{
	if (!initialised) {
		urcu_memb_register_thread();
		initialised = true;
	}
	memset(&G, 0, sizeof(G));
	memset(tok_freed, 0, sizeof(tok_freed));
	memset(stored, 0, sizeof(stored));
	fz_start("fuzz_prefix", data, size);

	uint8_t flags = fz_rd();

	G.width = widths[flags & 7];
	G.owning = flags & 8;
	G.limit = limits[(flags >> 4) & 7];
	G.opts.value_free = G.owning ? value_free : NULL;
	G.opts.max_entries = G.limit;
	for (int i = 0; i < 4; i++) {
		G.base[i] = (pm_addr)0x0a0102030405060fu << 64 |
			    0x1122334455667788u;
		G.base[i] ^= (pm_addr)(i * 0x5bd1e995u) << 96;
		G.base[i] = pm_mask(G.base[i], G.width);
	}
	G.base[3] = 0;
	for (int s = 0; s < NSLOTS; s++) {
		G.slot[s] = cowmap_prefix_new(G.width, &G.opts);
		CHECK(G.slot[s] != NULL, "prefix_new");
		pm_init(&G.model[s], G.width);
	}
	pm_init(&G.tmodel, G.width);
}

static void teardown(void)
{
	fz.op_name = "teardown";
	if (G.txn != NULL)
		cowmap_txn_abort(G.txn);
	for (int s = 0; s < NSLOTS; s++) {
		cowmap_release(G.slot[s]);
		pm_fini(&G.model[s]);
	}
	pm_fini(&G.tmodel);
	if (!G.owning)
		return;
	/* Every value a successful set stored was freed exactly once;
	 * tokens never stored were never freed. */
	for (uint32_t t = 1; t <= G.ntok; t++)
		CHECK(tok_freed[t] == (stored[t] ? 1u : 0u),
		      "token %u freed %u times (stored: %d)", t, tok_freed[t],
		      stored[t]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	setup(data, size);
	while (fz_input_left() && fz.op_no < MAX_OPS &&
	       G.ntok < MAX_TOKENS - 64) {
		const struct op *op = &ops[fz_rd() % OP_COUNT];

		fz.op_no++;
		fz.op_name = op->name;
		fz_trace("start");
		op->run();
		if (op->run != op_fail)
			fz.armed = -1;
		check_frees();
	}
	teardown();
	return 0;
}
