/*
 * etcd_mirror.c - what the etcd mirror costs: revisions applied per second
 * and the lag from an etcd write's answer to the version a reader sees.
 *
 *   bench/etcd-mirror [--seconds S] [--writers W] [--keys K] [--samples N]
 *
 * It starts its own one-member etcd (tests/etcd_cluster.c: free loopback
 * ports, data in /dev/shm or $TMPDIR) and a mirror of one prefix, then:
 *
 *   1. throughput: W writer threads write transactions of K keys each for
 *      S seconds, as fast as etcd takes them; reported are the
 *      transactions etcd answered per second and the revisions the mirror
 *      published per second over the same time, and the mirror thread's
 *      CPU time per revision (CLOCK_THREAD_CPUTIME_ID read in on_publish),
 *      which says how many revisions a second one core could apply.
 *   2. lag: one writer puts a key, and as soon as etcd answers with
 *      revision N a reader thread spins on the cell until the version it
 *      loads says N or later.  N samples idle, then N with W-1 other
 *      writers loading etcd.  p50, p99 and max.
 *
 * Not a test: nothing is asserted, and the numbers depend on the machine
 * and on etcd far more than on cowmap.  `make bench-etcd` runs it.
 */
#include <urcu/urcu-memb.h>

#include <cowmap-etcd.h>

#include "../tests/etcd_cluster.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct bench {
	struct etcd_cluster c;
	struct cowmap_etcd *m;
	unsigned keys;
	atomic_bool stop;
	atomic_long written;
	atomic_int_least64_t mirror_cpu_ns;	/* at the last publish */
};

static void on_publish(const struct cowmap *prev, const struct cowmap *next,
		       const struct cowmap_etcd_version_info *info, void *ctx)
{
	struct bench *b = ctx;
	struct timespec ts;

	(void)prev;
	(void)next;
	(void)info;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	atomic_store(&b->mirror_cpu_ns,
		     (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
}

static void on_event(enum cowmap_etcd_event what, int64_t revision,
		     const char *message, void *ctx)
{
	(void)revision;
	(void)ctx;
	if (what != COWMAP_ETCD_CONNECTED)
		fprintf(stderr, "etcd-mirror: %s\n", message);
}

static void *writer_main(void *arg)
{
	struct bench *b = arg;
	char keys[64][64], value[32];
	struct etcd_op ops[64];
	static atomic_long next_id;

	for (unsigned j = 0; j < b->keys; j++)
		snprintf(keys[j], sizeof(keys[j]), "/bench/k%03u", j);
	while (!atomic_load(&b->stop)) {
		snprintf(value, sizeof(value), "%ld",
			 atomic_fetch_add(&next_id, 1));
		for (unsigned j = 0; j < b->keys; j++)
			ops[j] = (struct etcd_op){ .key = keys[j], .value = value,
						   .len = strlen(value) };
		if (etcd_txn(b->c.endpoints, ops, b->keys) > 0)
			atomic_fetch_add(&b->written, 1);
	}
	return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* @n lag samples: put, then spin until a reader's version says so. */
static void lag_run(struct bench *b, const char *label, int n)
{
	int64_t *lag = calloc((size_t)n, sizeof(*lag));
	struct cowmap_cell *cell = cowmap_etcd_cell(b->m);
	char value[32];
	int already = 0;

	for (int i = 0; i < n; i++) {
		snprintf(value, sizeof(value), "%d", i);

		int64_t rev = etcd_put(b->c.endpoints, "/bench/lag", value);
		int64_t t0 = now_ns(), seen;

		if (rev < 0) {
			fprintf(stderr, "etcd-mirror: put failed\n");
			exit(1);
		}
		for (bool first = true;; first = false) {
			urcu_memb_read_lock();
			seen = cowmap_etcd_revision(cowmap_cell_load(cell));
			urcu_memb_read_unlock();
			if (seen >= rev) {
				already += first;
				break;
			}
			sched_yield();
		}
		lag[i] = now_ns() - t0;
	}
	qsort(lag, (size_t)n, sizeof(*lag), cmp_i64);
	printf("lag %-20s p50 %7.1f us   p99 %7.1f us   max %7.1f us   "
	       "(%d puts; %d%% visible when the put returned)\n",
	       label, lag[n / 2] / 1e3, lag[(size_t)n * 99 / 100] / 1e3,
	       lag[n - 1] / 1e3, n, already * 100 / n);
	free(lag);
}

int main(int argc, char **argv)
{
	struct bench b = { .keys = 8 };
	double seconds = 5;
	unsigned writers = 2;
	int samples = 500;

	for (int i = 1; i < argc; i += 2) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (v && strcmp(argv[i], "--seconds") == 0)
			seconds = atof(v);
		else if (v && strcmp(argv[i], "--writers") == 0)
			writers = (unsigned)atoi(v);
		else if (v && strcmp(argv[i], "--keys") == 0)
			b.keys = (unsigned)atoi(v);
		else if (v && strcmp(argv[i], "--samples") == 0)
			samples = atoi(v);
		else {
			fprintf(stderr, "usage: etcd-mirror [--seconds S] "
					"[--writers W] [--keys K] [--samples N]\n");
			return 2;
		}
	}
	if (seconds <= 0 || writers < 1 || writers > 64 || b.keys < 1 ||
	    b.keys > 64 || samples < 10) {
		fprintf(stderr, "etcd-mirror: bad arguments\n");
		return 2;
	}
	if (etcd_binary() == NULL) {
		fprintf(stderr, "etcd-mirror: no etcd binary (etcd-server)\n");
		return 77;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	urcu_memb_register_thread();
	if (etcd_cluster_start(&b.c, 1, NULL) < 0)
		return 1;

	struct cowmap_etcd_options o = {
		.endpoints = b.c.endpoints, .prefix = "/bench/",
		.on_publish = on_publish, .on_event = on_event, .ctx = &b,
	};
	char err[COWMAP_ETCD_ERROR_MAX];

	b.m = cowmap_etcd_start(&o, err);
	if (b.m == NULL) {
		fprintf(stderr, "etcd-mirror: %s\n", err);
		etcd_cluster_stop(&b.c);
		return 1;
	}
	printf("etcd-mirror: one etcd member at %s, data in %s\n",
	       b.c.endpoints, b.c.dir);

	/* 1. Throughput. */
	pthread_t th[64];
	struct cowmap_etcd_stats s0, s1;

	cowmap_etcd_stats(b.m, &s0);

	int64_t cpu0 = atomic_load(&b.mirror_cpu_ns), t0 = now_ns();

	for (unsigned i = 0; i < writers; i++)
		pthread_create(&th[i], NULL, writer_main, &b);
	struct timespec pause = { .tv_sec = (time_t)seconds,
				  .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9) };

	nanosleep(&pause, NULL);
	atomic_store(&b.stop, true);
	for (unsigned i = 0; i < writers; i++)
		pthread_join(th[i], NULL);

	int64_t t1 = now_ns();

	cowmap_etcd_stats(b.m, &s1);

	int64_t behind = s1.store_revision - s1.applied_revision;
	struct cowmap_etcd_stats s2;

	cowmap_etcd_wait(b.m, s1.store_revision, 10000);
	cowmap_etcd_stats(b.m, &s2);

	int64_t cpu1 = atomic_load(&b.mirror_cpu_ns);
	double secs = (double)(t1 - t0) / 1e9;
	uint64_t revs = s2.revisions - s0.revisions;

	printf("throughput: %u writers, %u keys per transaction, %.1f s\n",
	       writers, b.keys, secs);
	printf("  etcd answered       %8.0f transactions/s\n",
	       (double)atomic_load(&b.written) / secs);
	printf("  mirror published    %8.0f revisions/s  (%" PRIu64
	       " revisions, %" PRIu64 " events; %" PRId64
	       " revisions behind when the writers stopped)\n",
	       (double)(s1.revisions - s0.revisions) / secs, revs,
	       s2.events - s0.events, behind);
	if (revs > 0)
		printf("  mirror thread CPU   %8.1f us/revision -> one core "
		       "applies %.0f revisions/s\n",
		       (double)(cpu1 - cpu0) / 1e3 / (double)revs,
		       1e9 * (double)revs / (double)(cpu1 - cpu0));

	/* 2. Lag, idle then loaded. */
	lag_run(&b, "(idle etcd)", samples);
	if (writers > 1) {
		char label[64];

		atomic_store(&b.stop, false);
		for (unsigned i = 0; i + 1 < writers; i++)
			pthread_create(&th[i], NULL, writer_main, &b);
		snprintf(label, sizeof(label), "(%u other writers)", writers - 1);
		lag_run(&b, label, samples);
		atomic_store(&b.stop, true);
		for (unsigned i = 0; i + 1 < writers; i++)
			pthread_join(th[i], NULL);
	}

	cowmap_etcd_free(b.m);
	etcd_cluster_stop(&b.c);
	urcu_memb_unregister_thread();
	curl_global_cleanup();
	return 0;
}
