/*
 * check_prefix_stress.c - a prefix table in a cell under the four liburcu
 * flavors: one writer applies route changes in transactions and publishes
 * them while readers look addresses up, batch by batch, and check that
 * every answer of a batch came from one version.
 *
 * Version k holds a fixed set of nested prefixes (the default route among
 * them), each present or absent as a function of k and every value naming
 * k and the prefix.  So a reader can tell, from any answer, which version
 * it read, and can recompute from k alone what that version must answer:
 * a torn read (a mix of two versions, or a node freed under it) shows up
 * as answers naming different versions, or an answer that version k
 * could not give.  Values are owned by the table and counted: each is
 * freed exactly once, and nothing is left after cowmap_cell_free().
 *
 * A second test has several threads change single routes of one cell at
 * once (cowmap_cell_prefix_set/del): none of their changes is lost.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_model.h"
#include "rcu_flavors.h"
#include "testutil.h"

#define NPFX 64		/* prefixes per version */
#define NVERSIONS 1500	/* versions the writer publishes */
#define NREADERS 2
#define BATCH 64

/* The prefixes: nested along four base addresses. */
struct spfx {
	unsigned char addr[4];
	unsigned len;
};

static struct spfx pfx[NPFX];

static void make_prefixes(void)
{
	static const uint32_t bases[4] = { 0x0a010203u, 0xc0a80101u,
					   0x0a01ff00u, 0x80000000u };
	struct pm_model seen;

	pm_init(&seen, 32);
	for (int i = 0; i < NPFX; i++) {
		uint32_t b = bases[i % 4];
		unsigned len = i == 0 ? 0 : 1 + (unsigned)((i * 7) % 32);

		pfx[i].addr[0] = (unsigned char)(b >> 24);
		pfx[i].addr[1] = (unsigned char)(b >> 16);
		pfx[i].addr[2] = (unsigned char)(b >> 8);
		pfx[i].addr[3] = (unsigned char)b;
		/* distinct prefixes: lengthen one that names an earlier */
		while (pm_find(&seen, pm_load(pfx[i].addr, 32), len) != NULL)
			len = len % 32 + 1;
		pfx[i].len = len;
		pm_set(&seen, pm_load(pfx[i].addr, 32), len, NULL, NULL);
	}
	pm_fini(&seen);
}

/* Is prefix @i in version @k?  The default route always is. */
static bool present(uint64_t k, int i)
{
	return i == 0 || (tu_mix64(k * 131 + (uint64_t)i) & 3) != 0;
}

/* The value of prefix @i in version @k: names both.  Never dereferenced
 * except by value_free's accounting. */
static void *value_of(uint64_t k, int i)
{
	return (void *)(uintptr_t)(((k + 1) << 8 | (uint64_t)i) << 4);
}

static uint64_t version_of(void *v)
{
	return ((uintptr_t)v >> 12) - 1;
}

static atomic_uchar freed[NVERSIONS + 1][NPFX];
static atomic_long double_frees;

static void count_free(void *v, void *ctx)
{
	(void)ctx;
	uint64_t k = version_of(v);
	unsigned i = (unsigned)(((uintptr_t)v >> 4) & 0xff);

	if (atomic_fetch_add(&freed[k][i], 1) != 0)
		atomic_fetch_add(&double_frees, 1);
}

/* What version @k answers for @a, by scanning its prefixes. */
static void expect(uint64_t k, uint32_t a, void **value, unsigned *len)
{
	struct pm_model m;

	*value = NULL;
	*len = 0;
	pm_init(&m, 32);
	for (int i = 0; i < NPFX; i++)
		if (present(k, i))
			pm_set(&m, pm_load(pfx[i].addr, 32), pfx[i].len,
			       value_of(k, i), NULL);

	unsigned char b[4] = { (unsigned char)(a >> 24),
			       (unsigned char)(a >> 16),
			       (unsigned char)(a >> 8), (unsigned char)a };
	const struct pm_entry *e = pm_lookup(&m, pm_load(b, 32));

	if (e != NULL) {
		/* the value stored last for that prefix in version k */
		*value = e->value;
		*len = e->len;
	}
	pm_fini(&m);
}

struct shared {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	atomic_bool done;
	atomic_long errors, batches;
	char msg[200];
};

static void error(struct shared *sh, const char *what, uint64_t k)
{
	if (atomic_fetch_add(&sh->errors, 1) == 0)
		snprintf(sh->msg, sizeof(sh->msg), "%s (version %llu)", what,
			 (unsigned long long)k);
}

static void *reader(void *arg)
{
	struct shared *sh = arg;
	struct tu_rng rng;
	unsigned char addrs[BATCH][4];
	uint32_t a32[BATCH];
	void *values[BATCH];
	unsigned lens[BATCH];

	tu_rng_init(&rng, (uint64_t)(uintptr_t)&rng);
	tf_register(sh->tf);
	while (!atomic_load(&sh->done)) {
		for (int j = 0; j < BATCH; j++) {
			/* near the prefixes: a base with low bits changed */
			const struct spfx *p = &pfx[tu_rng_below(&rng, NPFX)];
			uint32_t a = (uint32_t)p->addr[0] << 24 |
				     (uint32_t)p->addr[1] << 16 |
				     (uint32_t)p->addr[2] << 8 | p->addr[3];

			a ^= (uint32_t)tu_rng_next(&rng) >>
			     tu_rng_below(&rng, 32);
			a32[j] = a;
			addrs[j][0] = (unsigned char)(a >> 24);
			addrs[j][1] = (unsigned char)(a >> 16);
			addrs[j][2] = (unsigned char)(a >> 8);
			addrs[j][3] = (unsigned char)a;
		}

		void *one;
		unsigned onelen;

		tf_read_lock(sh->tf);
		const struct cowmap *t = cowmap_cell_load(sh->c);
		size_t found = cowmap_prefix_lookup_many(t, BATCH, addrs,
							 values, lens);
		int single = cowmap_prefix_lookup(t, addrs[0], &one, &onelen);

		tf_read_unlock(sh->tf);
		tf_quiescent(sh->tf);

		/* the default route covers everything */
		if (found != BATCH || single != 1) {
			error(sh, "an address found no route", 0);
			continue;
		}

		uint64_t k = version_of(values[0]);

		if (version_of(one) != k)
			error(sh, "a single lookup read another version", k);
		for (int j = 0; j < BATCH; j++) {
			void *want;
			unsigned wlen;

			if (version_of(values[j]) != k) {
				error(sh, "one batch read two versions", k);
				break;
			}
			expect(k, a32[j], &want, &wlen);
			if (want != values[j] || wlen != lens[j]) {
				error(sh, "an answer that version cannot give",
				      k);
				break;
			}
		}
		atomic_fetch_add(&sh->batches, 1);
	}
	tf_unregister(sh->tf);
	return NULL;
}

/* Build version @k from the current one: a transaction with single sets,
 * deletes and a route load, then a publish (or a cas against the
 * snapshot, which must win: this is the only writer). */
static void write_version(struct shared *sh, uint64_t k)
{
	struct cowmap *cur = cowmap_cell_snapshot(sh->c);
	struct cowmap_txn *x = cowmap_txn_begin(cur);
	struct cowmap_route r[NPFX];
	size_t nr = 0;

	ck_assert_ptr_nonnull(x);
	for (int i = 0; i < NPFX; i++) {
		if (!present(k, i)) {
			ck_assert_int_ge(cowmap_txn_prefix_del(x, pfx[i].addr,
							       pfx[i].len),
					 0);
		} else if (i % 2 == 0) {
			ck_assert_int_eq(cowmap_txn_prefix_set(x, pfx[i].addr,
							       pfx[i].len,
							       value_of(k, i)),
					 0);
		} else {
			r[nr].addr = pfx[i].addr;
			r[nr].len = pfx[i].len;
			r[nr].value = value_of(k, i);
			nr++;
		}
	}
	ck_assert_int_eq(cowmap_txn_prefix_set_many(x, nr, r), 0);

	struct cowmap *next = cowmap_txn_commit(x);

	ck_assert_ptr_nonnull(next);
	if (k % 2)
		ck_assert_int_eq(cowmap_cell_cas(sh->c, cur, next), 0);
	else
		ck_assert_int_eq(cowmap_cell_publish(sh->c, next), 0);
	cowmap_release(cur);
}

START_TEST(readers_see_one_version_per_batch)
{
	struct shared sh = { .tf = &tf_flavors[_i] };
	struct cowmap_options o = { .value_free = count_free };
	pthread_t th[NREADERS];
	struct cowmap_cell_stats cs;

	make_prefixes();
	memset(freed, 0, sizeof(freed));
	atomic_store(&double_frees, 0);
	tf_register(sh.tf);

	/* version 0, loaded in one transaction */
	struct cowmap *t0 = cowmap_prefix_new(32, &o);

	sh.c = cowmap_cell_new(t0, sh.tf->flavor);
	ck_assert_ptr_nonnull(sh.c);
	write_version(&sh, 0);
	for (int i = 0; i < NREADERS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &sh), 0);
	for (uint64_t k = 1; k <= NVERSIONS; k++) {
		write_version(&sh, k);
		tf_quiescent(sh.tf);
	}
	atomic_store(&sh.done, true);
	tf_offline(sh.tf);
	for (int i = 0; i < NREADERS; i++)
		pthread_join(th[i], NULL);
	tf_online(sh.tf);
	ck_assert_msg(atomic_load(&sh.errors) == 0, "%s: %ld errors; first: %s",
		      sh.tf->name, atomic_load(&sh.errors), sh.msg);
	ck_assert_int_gt(atomic_load(&sh.batches), 0);

	ck_assert_int_eq(cowmap_cell_barrier(sh.c), 0);
	ck_assert_int_eq(cowmap_cell_stats(sh.c, &cs), 0);
	ck_assert_uint_eq(cs.pending_versions, 0);
	ck_assert_uint_eq(cs.pending_bytes, 0);
	cowmap_cell_free(sh.c);
	tf_unregister(sh.tf);

	/* every value stored was freed exactly once */
	ck_assert_int_eq(atomic_load(&double_frees), 0);
	for (uint64_t k = 0; k <= NVERSIONS; k++)
		for (int i = 0; i < NPFX; i++)
			if (present(k, i))
				ck_assert_msg(atomic_load(&freed[k][i]) == 1,
					      "value of prefix %d in version "
					      "%llu freed %d times",
					      i, (unsigned long long)k,
					      atomic_load(&freed[k][i]));
}
END_TEST

/* ---- concurrent single-route writers ---- */

#define NWRITERS 3
#define ROUTES_PER_WRITER 300

struct writer_arg {
	struct shared *sh;
	int id;
};

/* Writer @id's route @k: a /24 of its own. */
static void writer_route(int id, int k, unsigned char a[4], unsigned *len)
{
	a[0] = 10;
	a[1] = (unsigned char)(2 * id + k / 256);
	a[2] = (unsigned char)(k % 256);
	a[3] = 0;
	*len = 24;
}

static void *single_writer(void *arg)
{
	struct writer_arg *w = arg;
	struct shared *sh = w->sh;

	tf_register(sh->tf);
	for (int k = 0; k < ROUTES_PER_WRITER; k++) {
		unsigned char a[4];
		unsigned len;

		writer_route(w->id, k, a, &len);
		if (cowmap_cell_prefix_set(sh->c, a, len,
					   value_of((uint64_t)k, w->id)) != 0)
			error(sh, "a route change failed", (uint64_t)k);
		if (k % 3 == 2) {
			writer_route(w->id, k - 1, a, &len);
			if (cowmap_cell_prefix_del(sh->c, a, len) != 1)
				error(sh, "a route just set was not deleted",
				      (uint64_t)k);
		}
		tf_quiescent(sh->tf);
	}
	tf_unregister(sh->tf);
	return NULL;
}

START_TEST(concurrent_route_changes_lose_nothing)
{
	struct shared sh = { .tf = &tf_flavors[_i] };
	struct cowmap_options o = { .value_free = count_free };
	pthread_t th[NWRITERS];
	struct writer_arg wa[NWRITERS];

	memset(freed, 0, sizeof(freed));
	atomic_store(&double_frees, 0);
	tf_register(sh.tf);
	sh.c = cowmap_cell_new(cowmap_prefix_new(32, &o), sh.tf->flavor);
	ck_assert_ptr_nonnull(sh.c);
	for (int i = 0; i < NWRITERS; i++) {
		wa[i] = (struct writer_arg){ &sh, i + 1 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, single_writer,
						&wa[i]),
				 0);
	}
	tf_offline(sh.tf);
	for (int i = 0; i < NWRITERS; i++)
		pthread_join(th[i], NULL);
	tf_online(sh.tf);
	ck_assert_msg(atomic_load(&sh.errors) == 0, "%s", sh.msg);

	struct cowmap *t = cowmap_cell_snapshot(sh.c);

	for (int id = 1; id <= NWRITERS; id++)
		for (int k = 0; k < ROUTES_PER_WRITER; k++) {
			unsigned char a[4];
			unsigned len;
			void *v;
			bool gone = k % 3 == 1 && k + 1 < ROUTES_PER_WRITER;

			writer_route(id, k, a, &len);
			int rc = cowmap_prefix_get(t, a, len, &v);

			ck_assert_int_eq(rc, (gone ? 0 : 1));
			if (!gone)
				ck_assert_ptr_eq(v, value_of((uint64_t)k, id));
		}
	ck_assert_uint_eq(cowmap_size(t),
			  NWRITERS * (ROUTES_PER_WRITER -
				      ROUTES_PER_WRITER / 3));
	cowmap_release(t);
	cowmap_cell_free(sh.c);
	tf_unregister(sh.tf);

	/* every value stored was freed exactly once */
	ck_assert_int_eq(atomic_load(&double_frees), 0);
	for (int id = 1; id <= NWRITERS; id++)
		for (int k = 0; k < ROUTES_PER_WRITER; k++)
			ck_assert_int_eq(atomic_load(&freed[k][id]), 1);
}
END_TEST

Suite *prefix_stress_suite(void);

Suite *prefix_stress_suite(void)
{
	Suite *s = suite_create("prefix_stress");
	TCase *tc = tcase_create("flavors");

	tcase_set_timeout(tc, 600);
	tcase_add_loop_test(tc, readers_see_one_version_per_batch, 0, TF_COUNT);
	tcase_add_loop_test(tc, concurrent_route_changes_lose_nothing, 0,
			    TF_COUNT);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(prefix_stress_suite());
}
