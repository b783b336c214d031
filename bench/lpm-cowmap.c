/*
 * lpm-cowmap.c - cowmap's side of the LPM bench: a prefix table built by
 * one transaction, looked up one address at a time and in batches, routes
 * published one by one through a cell, and a reader that checks every
 * answer while a writer publishes route changes flat out.
 *
 * Values are the rib's next hop ids, stored as (hop + 1) << 1: never NULL,
 * and bit 0 free for the writer, which toggles it.  So a reader under the
 * writer knows the right answer whatever version it sees: the length of
 * the match never changes, and the value is the route's hop with bit 0
 * either way.
 */
#include "lpm.h"

#include <urcu/urcu-memb.h>
#include <cowmap.h>

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_BATCH 256
#define PUBLISHES 20000		/* single-route publishes timed */

static void *hop_value(uint32_t hop)
{
	return (void *)(((uintptr_t)hop + 1) << 1);
}

static uint32_t value_hop(const void *v)
{
	return (uint32_t)(((uintptr_t)v >> 1) - 1);
}

/* Resident memory after giving freed heap back, so that both sides count
 * what they hold rather than what malloc kept. */
static double settled_rss(void)
{
	malloc_trim(0);
	return lpm_rss_mib();
}

static struct cowmap *load(const struct lpm_set *s, double *seconds)
{
	const struct rib *r = &s->rib;
	struct cowmap_route *routes = malloc(r->n * sizeof(*routes));
	struct cowmap *empty = NULL, *t = NULL;
	struct cowmap_txn *txn = NULL;
	double t0 = lpm_cpu_now();

	/* Copying the routes into the call's array is part of the load. */
	if (routes == NULL)
		goto out;
	for (size_t i = 0; i < r->n; i++)
		routes[i] = (struct cowmap_route){
			.addr = r->route[i].addr,
			.len = r->route[i].len,
			.value = hop_value(r->route[i].hop),
		};
	empty = cowmap_prefix_new(r->width, NULL);
	txn = empty ? cowmap_txn_begin(empty) : NULL;
	if (txn == NULL)
		goto out;
	if (cowmap_txn_prefix_set_many(txn, r->n, routes) < 0) {
		cowmap_txn_abort(txn);
		goto out;
	}
	t = cowmap_txn_commit(txn);
	*seconds = lpm_cpu_now() - t0;
out:
	cowmap_release(empty);
	free(routes);
	return t;
}

/* Per route, building the table with one cowmap_prefix_set() each. */
static double add_singly(const struct lpm_set *s)
{
	const struct rib *r = &s->rib;
	struct cowmap *t = cowmap_prefix_new(r->width, NULL);
	double t0 = lpm_cpu_now();

	for (size_t i = 0; t && i < r->n; i++) {
		struct cowmap *next = cowmap_prefix_set(t, r->route[i].addr,
							r->route[i].len,
							hop_value(r->route[i].hop));

		cowmap_release(t);
		t = next;
	}
	if (t == NULL)
		return -1;

	double per = (lpm_cpu_now() - t0) / (double)r->n * 1e6;

	cowmap_release(t);
	return per;
}

/* --- Reader and writer on a cell ------------------------------------- */

struct shared {
	const struct lpm_set *s;
	struct cowmap_cell *cell;
	const uint32_t *want_hop;	/* per address, LPM_NO_ROUTE = none */
	const unsigned *want_len;
	atomic_bool stop;
};

struct reader {
	struct shared *sh;
	uint64_t done, errors;
	double cpu;		/* the thread's on-CPU seconds */
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	struct shared *sh = rd->sh;
	const struct lpm_set *s = sh->s;
	const unsigned b = s->batch;
	void *values[MAX_BATCH];
	unsigned lens[MAX_BATCH];
	size_t pos = 0;
	double cpu0 = lpm_cpu_now();

	urcu_memb_register_thread();
	while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
		if (pos + b > s->naddrs)
			pos = 0;
		urcu_memb_read_lock();
		cowmap_prefix_lookup_many(cowmap_cell_load(sh->cell), b,
					  s->addrs + pos * s->bytes, values,
					  lens);
		urcu_memb_read_unlock();
		for (unsigned j = 0; j < b; j++) {
			uint32_t want = sh->want_hop[pos + j];

			if (want == LPM_NO_ROUTE ? values[j] != NULL
			    : values[j] == NULL || lens[j] != sh->want_len[pos + j] ||
			      value_hop((void *)((uintptr_t)values[j] & ~(uintptr_t)1)) != want)
				rd->errors++;
		}
		pos += b;
		rd->done += b;
	}
	urcu_memb_unregister_thread();
	rd->cpu = lpm_cpu_now() - cpu0;
	return NULL;
}

struct writer {
	struct shared *sh;
	uint64_t published;
	int failed;
};

/* Toggle bit 0 of route after route, each its own publish. */
static void *writer_main(void *arg)
{
	struct writer *w = arg;
	const struct rib *r = &w->sh->s->rib;
	size_t i = 0;

	urcu_memb_register_thread();
	while (!atomic_load_explicit(&w->sh->stop, memory_order_relaxed)) {
		const struct rib_route *e = &r->route[i];
		uintptr_t flip = (uintptr_t)(w->published / r->n) & 1;
		void *v = (void *)((uintptr_t)hop_value(e->hop) | (flip ^ 1));

		if (cowmap_cell_prefix_set(w->sh->cell, e->addr, e->len, v) < 0) {
			w->failed = 1;
			break;
		}
		w->published++;
		i = i + 1 == r->n ? 0 : i + 1;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* Reader for s->seconds, with or without the writer; M addresses per
 * second of the reader's on-CPU time. */
static double reader_run(struct shared *sh, int with_writer,
			 struct lpm_figures *f)
{
	struct reader rd = { .sh = sh };
	struct writer w = { .sh = sh };
	pthread_t rt, wt;
	double t0 = lpm_now(), elapsed;

	atomic_store(&sh->stop, false);
	if (pthread_create(&rt, NULL, reader_main, &rd) != 0)
		return -1;
	if (with_writer && pthread_create(&wt, NULL, writer_main, &w) != 0) {
		atomic_store(&sh->stop, true);
		pthread_join(rt, NULL);
		return -1;
	}
	while (lpm_now() - t0 < sh->s->seconds)
		usleep(10000);
	atomic_store(&sh->stop, true);
	pthread_join(rt, NULL);
	if (with_writer)
		pthread_join(wt, NULL);
	elapsed = lpm_now() - t0;
	f->reader_errors += rd.errors;
	if (with_writer)
		f->writer_kops = w.failed ? -1 : (double)w.published / elapsed / 1e3;
	return rd.cpu > 0 ? (double)rd.done / rd.cpu / 1e6 : -1;
}

static int by_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* p50 and p99 of single-route publishes on the full table. */
static int publish_latency(const struct lpm_set *s, struct cowmap_cell *cell,
			   struct lpm_figures *f)
{
	const struct rib *r = &s->rib;
	size_t n = r->n < PUBLISHES ? r->n : PUBLISHES;
	double *lat = malloc(n * sizeof(*lat));
	size_t stride = r->n / n;

	if (lat == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct rib_route *e = &r->route[i * stride];
		void *v = (void *)((uintptr_t)hop_value(e->hop) | 1);
		double t0 = lpm_now();
		int rc = cowmap_cell_prefix_set(cell, e->addr, e->len, v);

		lat[i] = (lpm_now() - t0) * 1e6;
		if (rc < 0) {
			free(lat);
			return rc;
		}
	}
	qsort(lat, n, sizeof(*lat), by_double);
	f->publish_p50_us = lat[n / 2];
	f->publish_p99_us = lat[n * 99 / 100];
	free(lat);
	return 0;
}

/* --- Timed passes (run by lpm_dpdk_run, in turns with the peer's) ---- */

static volatile uintptr_t sink;	/* keeps the answers of timed loops alive */

static double pass_single(const struct lpm_set *s, void *ctx)
{
	const struct cowmap *t = ctx;
	uintptr_t sum = 0;
	double t0 = lpm_cpu_now();

	/* The next hop only, as the peer answers. */
	for (size_t i = 0; i < s->naddrs; i++) {
		void *v;

		if (cowmap_prefix_lookup(t, s->addrs + i * s->bytes, &v, NULL) == 1)
			sum += (uintptr_t)v;
	}
	t0 = lpm_cpu_now() - t0;
	sink += sum;
	return t0 / (double)s->naddrs * 1e9;
}

static double pass_bulk(const struct lpm_set *s, void *ctx)
{
	const struct cowmap *t = ctx;
	size_t n = s->naddrs - s->naddrs % s->batch;
	void *values[MAX_BATCH];
	uintptr_t sum = 0;
	double t0 = lpm_cpu_now();

	for (size_t i = 0; i < n; i += s->batch) {
		cowmap_prefix_lookup_many(t, s->batch, s->addrs + i * s->bytes,
					  values, NULL);
		for (unsigned j = 0; j < s->batch; j++)
			sum += (uintptr_t)values[j];
	}
	t0 = lpm_cpu_now() - t0;
	sink += sum;
	return t0 / (double)n * 1e9;
}

struct cowmap *lpm_cowmap_build(const struct lpm_set *s, struct lpm_figures *f,
				struct lpm_pass *pass)
{
	const size_t na = s->naddrs, bytes = s->bytes;
	void *values[MAX_BATCH];
	unsigned lens[MAX_BATCH];
	struct cowmap_stats st;
	double secs = 0;

	if (s->batch > MAX_BATCH || s->reps > 64) {
		errno = EINVAL;
		return NULL;
	}

	double rss0 = settled_rss();
	struct cowmap *t = load(s, &secs);

	if (t == NULL) {
		fprintf(stderr, "lpm-bench: cowmap load: %s\n", strerror(errno));
		return NULL;
	}
	f->load_us = secs / (double)s->rib.n * 1e6;
	f->rss_mib = settled_rss() - rss0;
	if (cowmap_stats(t, &st) == 0)
		f->alloc_mib = (double)st.bytes / (1024.0 * 1024.0);
	f->add_us = add_singly(s);

	/* Answers, outside the timing. */
	for (size_t i = 0; i < na; i++) {
		void *v;

		f->answers[i] = cowmap_prefix_lookup(t, s->addrs + i * bytes, &v,
						     NULL) == 1
					? value_hop(v) : LPM_NO_ROUTE;
	}
	for (size_t i = 0; i + s->batch <= na; i += s->batch) {
		cowmap_prefix_lookup_many(t, s->batch, s->addrs + i * bytes,
					  values, lens);
		for (unsigned j = 0; j < s->batch; j++)
			f->answers_bulk[i + j] = values[j] ? value_hop(values[j])
							   : LPM_NO_ROUTE;
	}
	*pass = (struct lpm_pass){ .single = pass_single, .bulk = pass_bulk,
				   .ctx = t, .single_ns = -1, .bulk_ns = -1 };
	return t;
}

int lpm_cowmap_cell(const struct lpm_set *s, struct cowmap *t,
		    struct lpm_figures *f)
{
	unsigned *want_len = malloc(s->naddrs * sizeof(*want_len));
	struct cowmap_cell *cell;
	int rc;

	if (want_len == NULL) {
		cowmap_release(t);
		return -ENOMEM;
	}
	for (size_t i = 0; i < s->naddrs; i++)
		if (cowmap_prefix_lookup(t, s->addrs + i * s->bytes, NULL,
					 &want_len[i]) != 1)
			want_len[i] = 0;

	urcu_memb_register_thread();	/* the cell calls below */
	cell = cowmap_cell_new(t, NULL);	/* takes t */
	if (cell == NULL) {
		rc = -errno;
		goto out;
	}
	rc = publish_latency(s, cell, f);

	struct shared sh = { .s = s, .cell = cell, .want_hop = f->answers,
			     .want_len = want_len };

	if (rc == 0) {
		f->reader_mops = reader_run(&sh, 0, f);
		f->reader_writer_mops = reader_run(&sh, 1, f);
	}
	cowmap_cell_free(cell);
out:
	urcu_memb_unregister_thread();
	free(want_len);
	return rc;
}
