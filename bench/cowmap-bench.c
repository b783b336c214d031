/*
 * cowmap-bench - cowmap against the tables it replaces (issue #4).
 *
 * Usage: cowmap-bench [--quick] [--csv FILE] [--plot DIR]
 *                     [--workload NAME]... [--seconds S] [--reps N]
 *                     [--words PATH] [--build-only] [--max-size N]
 *
 * Everything runs in one process, and every figure is measured for all
 * implementations in the same repetition, interleaved, so that the
 * cowmap/peer ratios - the result - see the same machine noise.  Each
 * figure is the median of --reps repetitions (3).  Nothing is pinned.
 *
 * Workloads (all lookups hit, in a random order):
 *   rand1M    1,000,000 random 8-byte keys
 *   words     the lines of /usr/share/dict/words as string keys
 *   rand10k   10,000 random 8-byte keys (cache resident)
 * plus rand1k and rand100k for the latency-versus-size plot.
 *
 * Figures: get ns/op with 1 and 2 reader threads, without and with a
 * writer thread publishing single-key changes the whole time;
 * cowmap_get_many ns/key in batches of 32; build ns/entry; heap bytes per
 * entry (mallinfo2 deltas around each build); single-key publish latency
 * (p50, p99) against copy-and-swap; snapshot cost; diff of two versions
 * 100 keys apart against a full iteration; write throughput with 1 and 2
 * writer threads.  The run ends with the targets, PASS or MISS,
 * and the same bounds held to the words workload where the issue names
 * only the 1M keys, pass or miss.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <urcu/urcu-memb.h>
#include <cowmap.h>

#include "bench.h"
#include "slab.h"

#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBMIMALLOC
#include <mimalloc.h>	/* linked: it is the process's malloc too */
#endif

#define READ_CHUNK 256	/* lookups between two looks at the stop flag */
#define GET_MANY_BATCH 32
#define DIFF_KEYS 100

static struct {
	bool quick;
	const char *csv;
	const char *plot;
	const char *words;
	const char *only[8];
	int nonly;
	double seconds;	/* per reader/writer measurement */
	int reps;
	bool build_only;	/* builds, heap and RSS only: no readers */
	size_t max_size;	/* largest latency-vs-size point (1M) */
} opt = {
	.max_size = 1000000,
	.words = "/usr/share/dict/words",
	.seconds = 0.3,
	.reps = 3,
};

static void die(const char *what)
{
	fprintf(stderr, "cowmap-bench: %s\n", what);
	exit(EXIT_FAILURE);
}

/* ------------------------------------------------------------------ */
/* Timing, statistics, results                                          */
/* ------------------------------------------------------------------ */

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the calling thread: what it ran, not what it waited. */
static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * A single-threaded timing in both clocks.  The figures are wall-clock
 * (CLOCK_MONOTONIC); the thread's CPU time is kept beside them as a
 * cross-check, because on a shared machine a thread that was descheduled
 * part of the time looks slower in wall-clock time only.
 */
struct stopwatch {
	uint64_t wall0, cpu0;
	double wall, cpu;	/* ns, after sw_stop() */
};

static void sw_start(struct stopwatch *sw)
{
	sw->wall0 = now_ns();
	sw->cpu0 = thread_cpu_ns();
}

static void sw_stop(struct stopwatch *sw)
{
	sw->cpu = (double)(thread_cpu_ns() - sw->cpu0);
	sw->wall = (double)(now_ns() - sw->wall0);
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double percentile(double *v, size_t n, double p)
{
	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);

	/* Nearest rank: the smallest value with at least p of them <= it. */
	double rank = p * (double)n;
	size_t i = (size_t)rank;

	if ((double)i < rank)
		i++;
	i = i > 0 ? i - 1 : 0;
	return v[i < n ? i : n - 1];
}

double median(double *v, size_t n)
{
	if (n == 0)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

size_t heap_in_use(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
	struct mallinfo2 mi = mallinfo2();
	size_t mapped, in_use;

	/* cowmap's node slabs are mapped outside malloc: count the blocks
	 * in use, as uordblks counts malloc's (free space in slabs, like
	 * free chunks in malloc's arenas, is not counted). */
	cm_slab_usage(&mapped, &in_use);
	return mi.uordblks + mi.hblkhd + in_use;
#else
	return 0;
#endif
}

/*
 * Resident memory of the process, as the OS counts it, after giving
 * malloc's free pages back (malloc_trim), so that a build that reuses
 * memory an earlier one freed is charged for the pages it touches.
 */
static size_t rss_now(void)
{
	FILE *f;
	unsigned long size = 0, resident = 0;

	malloc_trim(0);
#ifdef HAVE_LIBMIMALLOC
	mi_collect(true);	/* mimalloc keeps freed pages otherwise */
#endif
	if ((f = fopen("/proc/self/statm", "r")) == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/*
 * The resident memory a build adds, as the OS counts it.  Measured in a
 * fresh process (this program run again with --rss-probe), which makes
 * the workload, builds a small table of the same kind first (one-time
 * allocations), then the table, and reports the RSS it grew by: in this
 * process, pages that earlier builds freed and the allocators kept would
 * be reused unseen (and a forked child's writes to pages it shares with
 * its parent do not grow its RSS at all).  @impl is an implementation's
 * name or "singly" (cowmap, one txn_set per key).  NAN if the probe
 * failed.
 */
static double rss_per_entry(const char *impl, const struct workload *w)
{
	char exe[4096], cmd[8400];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	double v = NAN;

	if (len <= 0)
		return NAN;
	exe[len] = '\0';
	/* Where mimalloc is linked (--with-node-allocator=mimalloc) it is
	 * the process's malloc, and by default it gives freed pages back
	 * with MADV_FREE, later: they stay in RSS and the build reuses them
	 * unseen.  These options make it reset them at once. */
	snprintf(cmd, sizeof(cmd),
		 "MIMALLOC_PAGE_RESET=1 MIMALLOC_DECOMMIT_DELAY=0 "
		 "MIMALLOC_RESET_DELAY=0 '%s' --rss-probe %s %zu %llu '%s'", exe,
		 impl, w->limit, (unsigned long long)w->seed,
		 w->words_path ? w->words_path : "-");
	fflush(NULL);

	FILE *p = popen(cmd, "r");

	if (p == NULL)
		return NAN;
	if (fscanf(p, "%lf", &v) != 1)
		v = NAN;
	if (pclose(p) != 0)
		v = NAN;
	return v;
}

static void *(*probe_builder(const char *impl))(struct kv *const *, size_t)
{
	if (strcmp(impl, "singly") == 0)
		return bench_cowmap_build_singly;
	for (int i = 0; i < BENCH_NIMPL; i++)
		if (strcmp(impl, bench_impls[i]->name) == 0)
			return bench_impls[i]->build;
	return NULL;
}

/* --rss-probe IMPL LIMIT SEED WORDS: print the RSS bytes per entry. */
static int rss_probe(char **argv)
{
	void *(*build)(struct kv *const *, size_t) = probe_builder(argv[0]);
	size_t limit = strtoull(argv[1], NULL, 10);
	uint64_t seed = strtoull(argv[2], NULL, 10);
	struct workload *w =
		strcmp(argv[3], "-") == 0
			? workload_random("probe", limit, seed)
			: workload_words("probe", argv[3], limit, seed);
	struct workload *small = workload_random("warmup", 4096, 99);

	if (build == NULL || w == NULL)
		return 1;
	setenv("G_SLICE", "always-malloc", 1);
	urcu_memb_register_thread();
	(void)build(small->keys, small->n);	/* kept: nothing is freed */

	size_t r0 = rss_now();

	(void)build(w->keys, w->n);

	size_t r1 = rss_now();

	printf("%.3f\n", ((double)r1 - (double)r0) / (double)w->n);
	fflush(stdout);
	_exit(0);	/* the tables are not torn down */
}

struct result {
	char workload[24], metric[32], impl[16], unit[12];
	double value;
};

static struct result *results;
static size_t nresults, cap_results;

void result_add(const char *workload, const char *metric, const char *impl,
		double value, const char *unit)
{
	if (nresults == cap_results) {
		cap_results = cap_results ? 2 * cap_results : 256;
		results = realloc(results, cap_results * sizeof(*results));
		if (results == NULL)
			die("out of memory");
	}

	struct result *r = &results[nresults++];

	snprintf(r->workload, sizeof(r->workload), "%s", workload);
	snprintf(r->metric, sizeof(r->metric), "%s", metric);
	snprintf(r->impl, sizeof(r->impl), "%s", impl);
	snprintf(r->unit, sizeof(r->unit), "%s", unit);
	r->value = value;
}

double result_get(const char *workload, const char *metric, const char *impl)
{
	for (size_t i = nresults; i-- > 0;)
		if (strcmp(results[i].workload, workload) == 0 &&
		    strcmp(results[i].metric, metric) == 0 &&
		    strcmp(results[i].impl, impl) == 0)
			return results[i].value;
	return NAN;
}

int results_write_csv(const char *path)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return -errno;
	fprintf(f, "workload,metric,implementation,value,unit\n");
	for (size_t i = 0; i < nresults; i++)
		fprintf(f, "%s,%s,%s,%.6g,%s\n", results[i].workload,
			results[i].metric, results[i].impl, results[i].value,
			results[i].unit);
	return fclose(f) == 0 ? 0 : -errno;
}

/* ------------------------------------------------------------------ */
/* Reader and writer threads                                            */
/* ------------------------------------------------------------------ */

struct run {
	const struct impl *im;
	void *table;
	const struct workload *w;
	pthread_barrier_t start;
	atomic_int stop_readers, stop_writers, writers_up;
};

struct reader {
	pthread_t th;
	struct run *run;
	size_t pos;
	uint64_t ops, hits, ns, cpu_ns;
	uintptr_t acc;
};

struct writer {
	pthread_t th;
	struct run *run;
	uint64_t seed, changes, ns;
	uint64_t pace_ns;	/* 0: flat out; else one change per pace_ns */
	/* cowmap_cell_set only, several writers at once (write throughput). */
	struct cowmap_cell *cell;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	struct run *run = r->run;
	const struct workload *w = run->w;
	size_t pos = r->pos;

	urcu_memb_register_thread();
	pthread_barrier_wait(&run->start);

	uint64_t t0 = now_ns(), c0 = thread_cpu_ns();

	while (!atomic_load_explicit(&run->stop_readers, memory_order_relaxed)) {
		r->acc += run->im->read_loop(run->table, w->order, w->n, pos,
					     READ_CHUNK, &r->hits);
		pos = (pos + READ_CHUNK) % w->n;
		r->ops += READ_CHUNK;
	}
	r->ns = now_ns() - t0;
	r->cpu_ns = thread_cpu_ns() - c0;
	urcu_memb_unregister_thread();
	return NULL;
}

/* A value no build stored (those are multiples of 16) and never repeated,
 * so every call is a real change. */
static void *fresh_value(uint64_t *counter)
{
	return (void *)(uintptr_t)((++*counter << 4) | 8);
}

static void *writer_main(void *arg)
{
	struct writer *wr = arg;
	struct run *run = wr->run;
	const struct workload *w = run->w;
	struct retire ret = { 0 };
	uint64_t rng = wr->seed, counter = wr->seed << 20;

	urcu_memb_register_thread();
	atomic_fetch_add(&run->writers_up, 1);

	uint64_t t0 = now_ns();

	while (!atomic_load_explicit(&run->stop_writers, memory_order_relaxed)) {
		const struct kv *q = w->keys[bench_rand(&rng) % w->n];

		if (wr->pace_ns != 0) {
			uint64_t due = t0 + wr->changes * wr->pace_ns;
			struct timespec ts = { (time_t)(due / 1000000000u),
					       (long)(due % 1000000000u) };

			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
		}

		if (wr->cell != NULL) {
			if (cowmap_cell_set(wr->cell, q->key, q->len,
					    fresh_value(&counter)) < 0)
				die("cowmap_cell_set failed");
		} else {
			run->im->write_one(run->table, q, fresh_value(&counter),
					   &ret);
		}
		wr->changes++;
	}
	wr->ns = now_ns() - t0;
	retire_flush(&ret);
	urcu_memb_unregister_thread();
	return NULL;
}

struct read_result {
	double ns_per_op;	/* per reader, mean over readers */
	double cpu_ns_per_op;	/* the same in the readers' own CPU time */
	double on_cpu;		/* share of the wall time readers were running */
	double mops;		/* all readers together */
	double writer_rate;	/* changes/s, 0 without writer */
};

/*
 * @readers threads look keys up for opt.seconds.  With @writer_hz non-zero
 * one thread publishes single-key changes from before the readers start
 * until after they stop, so every timed lookup runs against a live writer:
 * flat out for a negative @writer_hz, else @writer_hz changes per second.
 */
static struct read_result run_readers(const struct impl *im, void *table,
				      const struct workload *w, int readers,
				      double writer_hz)
{
	struct run run = { .im = im, .table = table, .w = w };
	struct reader rd[8];
	struct writer wr = { .run = &run, .seed = 0x77 + (uint64_t)readers };
	struct read_result out = { 0 };
	bool writer = writer_hz != 0;

	if (writer_hz > 0)
		wr.pace_ns = (uint64_t)(1e9 / writer_hz);

	pthread_barrier_init(&run.start, NULL, (unsigned)readers + 1);
	if (writer) {
		if (pthread_create(&wr.th, NULL, writer_main, &wr) != 0)
			die("pthread_create failed");
		while (atomic_load(&run.writers_up) == 0)
			sleep_s(0.001);
		sleep_s(opt.quick ? 0.005 : 0.02);	/* let it reach speed */
	}
	for (int i = 0; i < readers; i++) {
		rd[i] = (struct reader){ .run = &run,
					 .pos = (size_t)i * w->n / (size_t)readers };
		if (pthread_create(&rd[i].th, NULL, reader_main, &rd[i]) != 0)
			die("pthread_create failed");
	}
	pthread_barrier_wait(&run.start);
	sleep_s(opt.seconds);
	atomic_store(&run.stop_readers, 1);
	for (int i = 0; i < readers; i++)
		pthread_join(rd[i].th, NULL);
	atomic_store(&run.stop_writers, 1);
	if (writer)
		pthread_join(wr.th, NULL);
	pthread_barrier_destroy(&run.start);

	for (int i = 0; i < readers; i++) {
		if (rd[i].hits != rd[i].ops) {
			fprintf(stderr, "cowmap-bench: %s/%s: %llu of %llu lookups missed\n",
				w->name, im->name,
				(unsigned long long)(rd[i].ops - rd[i].hits),
				(unsigned long long)rd[i].ops);
			exit(EXIT_FAILURE);
		}
		out.ns_per_op += (double)rd[i].ns / (double)rd[i].ops / readers;
		out.cpu_ns_per_op += (double)rd[i].cpu_ns / (double)rd[i].ops /
				     readers;
		out.on_cpu += (double)rd[i].cpu_ns / (double)rd[i].ns / readers;
		out.mops += (double)rd[i].ops / (double)rd[i].ns * 1e3;
	}
	if (writer)
		out.writer_rate = (double)wr.changes / ((double)wr.ns / 1e9);
	/* Whatever the writer retired is freed now, not in the next run. */
	im->settle(table);
	return out;
}

/* ------------------------------------------------------------------ */
/* cowmap-only figures                                                  */
/* ------------------------------------------------------------------ */

/* ns per key of cowmap_get_many in batches of 32 (wall, *cpu). */
static double cowmap_get_many_ns(struct cowmap_cell *cell,
				 const struct workload *w, double *cpu)
{
	void *vals[GET_MANY_BATCH];
	size_t lookups = 0, found = 0;
	double budget = opt.seconds * 1e9 / 2;
	uint64_t t0 = now_ns(), t1, c0 = thread_cpu_ns();

	do {
		for (size_t i = 0; i < w->n; i += GET_MANY_BATCH) {
			size_t k = w->n - i < GET_MANY_BATCH ? w->n - i
							      : GET_MANY_BATCH;

			urcu_memb_read_lock();
			found += cowmap_get_many(cowmap_cell_load(cell), k,
						 w->kptr + i, w->klen + i, vals);
			urcu_memb_read_unlock();
			lookups += k;
		}
		t1 = now_ns();
	} while ((double)(t1 - t0) < budget);
	*cpu = (double)(thread_cpu_ns() - c0) / (double)lookups;
	if (found != lookups)
		die("cowmap_get_many missed keys");
	return (double)(t1 - t0) / (double)lookups;
}

/* Latency of single-key cowmap_cell_set calls; returns p50, p99 in ns. */
static void cowmap_publish_latency(struct cowmap_cell *cell,
				   const struct workload *w, size_t iters,
				   double *p50, double *p99)
{
	double *lat = malloc(iters * sizeof(*lat));
	uint64_t rng = 0x1234, counter = 1;

	if (lat == NULL)
		die("out of memory");
	for (size_t i = 0; i < iters; i++) {
		const struct kv *q = w->keys[bench_rand(&rng) % w->n];
		void *v = fresh_value(&counter);
		uint64_t t0 = now_ns();

		if (cowmap_cell_set(cell, q->key, q->len, v) < 0)
			die("cowmap_cell_set failed");
		lat[i] = (double)(now_ns() - t0);
	}
	*p50 = percentile(lat, iters, 0.50);
	*p99 = percentile(lat, iters, 0.99);
	free(lat);
	cowmap_cell_barrier(cell);
}

static void copy_swap_latency(const struct workload *w, size_t iters,
			      double *p50, double *p99)
{
	void *cs = cs_build(w->keys, w->n);
	double *lat = malloc(iters * sizeof(*lat));
	uint64_t rng = 0x4321, counter = 1;

	if (lat == NULL)
		die("out of memory");
	for (size_t i = 0; i < iters; i++) {
		const struct kv *q = w->keys[bench_rand(&rng) % w->n];

		lat[i] = (double)cs_publish(cs, q, fresh_value(&counter));
	}
	*p50 = percentile(lat, iters, 0.50);
	*p99 = percentile(lat, iters, 0.99);
	free(lat);
	cs_destroy(cs);
}

/* The same for Boost's flat map published whole (bench/peers_cxx.cc). */
static void flat_publish_latency(const struct workload *w, size_t iters,
				 double *p50, double *p99)
{
	void *t = impl_boost_flat.build(w->keys, w->n);
	double *lat = malloc(iters * sizeof(*lat));
	uint64_t rng = 0x4321, counter = 1;

	if (lat == NULL)
		die("out of memory");
	for (size_t i = 0; i < iters; i++) {
		const struct kv *q = w->keys[bench_rand(&rng) % w->n];

		lat[i] = (double)bench_flat_publish(t, q,
						    fresh_value(&counter));
	}
	*p50 = percentile(lat, iters, 0.50);
	*p99 = percentile(lat, iters, 0.99);
	free(lat);
	impl_boost_flat.destroy(t);
}

static double cowmap_snapshot_ns(struct cowmap_cell *cell, size_t iters,
				 double *cpu)
{
	struct stopwatch sw;

	sw_start(&sw);
	for (size_t i = 0; i < iters; i++) {
		struct cowmap *m = cowmap_cell_snapshot(cell);

		if (m == NULL)
			die("cowmap_cell_snapshot failed");
		cowmap_release(m);
	}
	sw_stop(&sw);
	*cpu = sw.cpu / (double)iters;
	return sw.wall / (double)iters;
}

static int count_change(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	(void)what;
	(void)key;
	(void)len;
	(void)old_value;
	(void)new_value;
	++*(size_t *)ctx;
	return 0;
}

/* ns for cowmap_diff of two versions DIFF_KEYS apart and for one full
 * iteration of the base version. */
static void cowmap_diff_vs_iter(struct cowmap_cell *cell,
				const struct workload *w, double *diff_ns,
				double *iter_ns, double *diff_cpu, double *iter_cpu)
{
	double dc[7], ic[3];
	struct cowmap *a = cowmap_cell_snapshot(cell);
	struct cowmap_txn *t = cowmap_txn_begin(a);
	uint64_t rng = 0x99, counter = 1;
	size_t nk = w->n < DIFF_KEYS ? w->n : DIFF_KEYS;
	double dv[7], iv[3];

	if (t == NULL)
		die("cowmap_txn_begin failed");
	/* nk distinct keys: a stride through the insertion order. */
	for (size_t i = 0; i < nk; i++) {
		const struct kv *q = w->keys[(i * (w->n / nk) +
					      bench_rand(&rng) % (w->n / nk)) % w->n];

		if (cowmap_txn_set(t, q->key, q->len, fresh_value(&counter)) < 0)
			die("cowmap_txn_set failed");
	}

	struct cowmap *b = cowmap_txn_commit(t);

	for (int r = 0; r < 7; r++) {
		size_t changes = 0;
		struct stopwatch sw;

		sw_start(&sw);
		if (cowmap_diff(a, b, count_change, &changes) != 0)
			die("cowmap_diff failed");
		sw_stop(&sw);
		dv[r] = sw.wall;
		dc[r] = sw.cpu;
		if (changes != nk)
			die("cowmap_diff reported the wrong number of changes");
	}
	for (int r = 0; r < 3; r++) {
		struct cowmap_iter it;
		const void *key;
		size_t len, seen = 0;
		void *v;
		uintptr_t acc = 0;
		struct stopwatch sw;

		sw_start(&sw);
		cowmap_iter_init(&it, a);
		while (cowmap_iter_next(&it, &key, &len, &v)) {
			acc += (uintptr_t)v + len;
			seen++;
		}
		sw_stop(&sw);
		iv[r] = sw.wall;
		ic[r] = sw.cpu;
		if (seen != w->n || acc == 0)
			die("cowmap iteration saw the wrong number of entries");
	}
	*diff_ns = median(dv, 7);
	*iter_ns = median(iv, 3);
	*diff_cpu = median(dc, 7);
	*iter_cpu = median(ic, 3);
	cowmap_release(a);
	cowmap_release(b);
}

/* Changes per second with @nwriters threads calling cowmap_cell_set. */
static double cowmap_write_rate(struct cowmap_cell *cell,
				const struct workload *w, int nwriters,
				double *publishes_per_s)
{
	struct run run = { .im = &impl_cowmap, .w = w };
	struct writer wr[4];
	struct cowmap_cell_stats s0, s1;
	uint64_t changes = 0;

	cowmap_cell_stats(cell, &s0);

	uint64_t t0 = now_ns();

	for (int i = 0; i < nwriters; i++) {
		wr[i] = (struct writer){ .run = &run, .cell = cell,
					 .seed = 0x555 + (uint64_t)i };
		if (pthread_create(&wr[i].th, NULL, writer_main, &wr[i]) != 0)
			die("pthread_create failed");
	}
	sleep_s(opt.seconds);
	atomic_store(&run.stop_writers, 1);
	for (int i = 0; i < nwriters; i++) {
		pthread_join(wr[i].th, NULL);
		changes += wr[i].changes;
	}

	double secs = (double)(now_ns() - t0) / 1e9;

	cowmap_cell_stats(cell, &s1);
	*publishes_per_s = (double)(s1.published - s0.published) / secs;
	cowmap_cell_barrier(cell);
	return (double)changes / secs;
}

/* ------------------------------------------------------------------ */
/* One workload                                                         */
/* ------------------------------------------------------------------ */

#define PACED_HZ 1000.0

/*
 * writer_hz: 0 none, < 0 flat out, else paced (changes per second).
 *
 * The first NCFG_QUIET configurations run, every repetition, before any
 * writer has touched the tables: a writer replaces nodes and objects all
 * over them (a flat-out cowmap writer copies ~100k paths per measurement),
 * which changes their memory layout.  "get_1r_churned" then measures one
 * reader again on the tables the writers left behind.
 */
static const struct {
	int readers;
	double writer_hz;
	const char *metric;
	const char *tput_metric;
} read_cfgs[] = {
	{ 1, 0, "get_1r", "tput_1r" },
	{ 2, 0, "get_2r", "tput_2r" },
	{ 1, -1, "get_1r_writer", "tput_1r_writer" },
	{ 2, -1, "get_2r_writer", "tput_2r_writer" },
	{ 1, PACED_HZ, "get_1r_writer1k", "tput_1r_writer1k" },
	{ 1, 0, "get_1r_churned", "tput_1r_churned" },
};
#define NCFG_QUIET 2
#define NCFG (sizeof(read_cfgs) / sizeof(read_cfgs[0]))

static void verify_all_hit(const struct impl *im, void *t,
			   const struct workload *w)
{
	uint64_t hits = 0;

	im->read_loop(t, w->order, w->n, 0, w->n, &hits);
	if (hits != w->n) {
		fprintf(stderr, "cowmap-bench: %s/%s: %llu of %zu keys found\n",
			w->name, im->name, (unsigned long long)hits, w->n);
		exit(EXIT_FAILURE);
	}
}

/* Build every table --reps times; keep the first build for the reads and
 * measure its heap. */
static void build_all(const struct workload *w, void *tables[BENCH_NIMPL])
{
	double bt[BENCH_NIMPL][16], bc[BENCH_NIMPL][16];

	/* RSS: each build in a fresh process (see rss_per_entry()). */
	for (int i = 0; i < BENCH_NIMPL; i++)
		result_add(w->name, "rss_per_entry", bench_impls[i]->name,
			   rss_per_entry(bench_impls[i]->name, w), "bytes");
	result_add(w->name, "rss_per_entry_singly", "cowmap",
		   rss_per_entry("singly", w), "bytes");

	for (int rep = 0; rep < opt.reps; rep++) {
		for (int i = 0; i < BENCH_NIMPL; i++) {
			const struct impl *im = bench_impls[i];
			size_t h0 = 0;

			if (rep == 0) {
				urcu_memb_barrier();
				h0 = heap_in_use();
			}

			struct stopwatch sw;

			sw_start(&sw);
			void *t = im->build(w->keys, w->n);
			sw_stop(&sw);
			bt[i][rep] = sw.wall / (double)w->n;
			bc[i][rep] = sw.cpu / (double)w->n;
			if (rep == 0) {
				urcu_memb_barrier();
				size_t h1 = heap_in_use();

				result_add(w->name, "heap_per_entry", im->name,
					   ((double)h1 - (double)h0) / (double)w->n,
					   "bytes");

				verify_all_hit(im, t, w);
				tables[i] = t;
			} else {
				im->destroy(t);
				urcu_memb_barrier();
			}
		}
	}
	struct cowmap *built = cowmap_cell_snapshot(bench_cowmap_cell(tables[0]));
	struct cowmap_stats st;

	if (built != NULL && cowmap_stats(built, &st) == 0)
		result_add(w->name, "stats_per_entry", "cowmap",
			   (double)st.bytes / (double)w->n, "bytes");
	cowmap_release(built);

	double single[16], single_cpu[16];

	for (int rep = 0; rep < opt.reps; rep++) {
		struct stopwatch sw;
		size_t h0 = 0;

		if (rep == 0) {
			urcu_memb_barrier();
			h0 = heap_in_use();
		}
		sw_start(&sw);
		void *t = bench_cowmap_build_singly(w->keys, w->n);
		sw_stop(&sw);
		single[rep] = sw.wall / (double)w->n;
		single_cpu[rep] = sw.cpu / (double)w->n;
		if (rep == 0) {
			urcu_memb_barrier();
			size_t h1 = heap_in_use();

			result_add(w->name, "heap_per_entry_singly", "cowmap",
				   ((double)h1 - (double)h0) / (double)w->n,
				   "bytes");

		}
		impl_cowmap.destroy(t);
		urcu_memb_barrier();
	}
	result_add(w->name, "build_singly", "cowmap",
		   median(single, (size_t)opt.reps), "ns/entry");
	result_add(w->name, "build_singly_cpu", "cowmap",
		   median(single_cpu, (size_t)opt.reps), "ns/entry");
	for (int i = 0; i < BENCH_NIMPL; i++) {
		result_add(w->name, "build", bench_impls[i]->name,
			   median(bt[i], (size_t)opt.reps), "ns/entry");
		result_add(w->name, "build_cpu", bench_impls[i]->name,
			   median(bc[i], (size_t)opt.reps), "ns/entry");
	}
}

/* Configurations [first, end) of read_cfgs, every implementation in
 * every repetition. */
static void read_all(const struct workload *w, void *tables[BENCH_NIMPL],
		     size_t first, size_t end)
{
	double ns[NCFG][BENCH_NIMPL][16], mops[NCFG][BENCH_NIMPL][16];
	double wrate[NCFG][BENCH_NIMPL][16], cpu[NCFG][BENCH_NIMPL][16];
	double share[NCFG][BENCH_NIMPL][16];

	for (int rep = 0; rep < opt.reps; rep++)
		for (size_t c = first; c < end; c++)
			for (int i = 0; i < BENCH_NIMPL; i++) {
				struct read_result r = run_readers(
					bench_impls[i], tables[i], w,
					read_cfgs[c].readers, read_cfgs[c].writer_hz);

				ns[c][i][rep] = r.ns_per_op;
				cpu[c][i][rep] = r.cpu_ns_per_op;
				share[c][i][rep] = r.on_cpu;
				mops[c][i][rep] = r.mops;
				wrate[c][i][rep] = r.writer_rate;
			}
	for (size_t c = first; c < end; c++)
		for (int i = 0; i < BENCH_NIMPL; i++) {
			const char *name = bench_impls[i]->name;

			char m[48];

			result_add(w->name, read_cfgs[c].metric, name,
				   median(ns[c][i], (size_t)opt.reps), "ns/op");
			snprintf(m, sizeof(m), "%s_cpu", read_cfgs[c].metric);
			result_add(w->name, m, name,
				   median(cpu[c][i], (size_t)opt.reps), "ns/op");
			snprintf(m, sizeof(m), "%s_oncpu", read_cfgs[c].metric);
			result_add(w->name, m, name,
				   median(share[c][i], (size_t)opt.reps), "share");
			result_add(w->name, read_cfgs[c].tput_metric, name,
				   median(mops[c][i], (size_t)opt.reps), "Mops/s");
			if (read_cfgs[c].writer_hz < 0) {
				snprintf(m, sizeof(m), "writer_rate_%dr",
					 read_cfgs[c].readers);
				result_add(w->name, m, name,
					   median(wrate[c][i], (size_t)opt.reps),
					   "changes/s");
			}
		}
}

static void cowmap_figures(const struct workload *w, struct cowmap_cell *cell,
			   bool big)
{
	double v[16], v2[16], a[16], b[16];
	int reps = opt.reps;

	for (int r = 0; r < reps; r++)
		v[r] = cowmap_get_many_ns(cell, w, &v2[r]);
	result_add(w->name, "get_many32", "cowmap", median(v, (size_t)reps),
		   "ns/key");
	result_add(w->name, "get_many32_cpu", "cowmap",
		   median(v2, (size_t)reps), "ns/key");

	size_t snap_iters = opt.quick ? 100000 : 1000000;

	for (int r = 0; r < reps; r++)
		v[r] = cowmap_snapshot_ns(cell, snap_iters, &v2[r]);
	result_add(w->name, "snapshot_release", "cowmap",
		   median(v, (size_t)reps), "ns/op");
	result_add(w->name, "snapshot_release_cpu", "cowmap",
		   median(v2, (size_t)reps), "ns/op");

	cowmap_diff_vs_iter(cell, w, &a[0], &b[0], &a[1], &b[1]);
	result_add(w->name, "diff_100", "cowmap", a[0], "ns");
	result_add(w->name, "iterate_all", "cowmap", b[0], "ns");
	result_add(w->name, "diff_100_cpu", "cowmap", a[1], "ns");
	result_add(w->name, "iterate_all_cpu", "cowmap", b[1], "ns");

	size_t pub_iters = opt.quick ? 2000 : 20000;

	for (int r = 0; r < reps; r++)
		cowmap_publish_latency(cell, w, pub_iters, &v[r], &v2[r]);
	result_add(w->name, "publish_p50", "cowmap", median(v, (size_t)reps), "ns");
	result_add(w->name, "publish_p99", "cowmap", median(v2, (size_t)reps), "ns");

	/* A 1M copy takes milliseconds: a few iterations only. */
	size_t cs_iters = big ? (opt.quick ? 5 : 15) : (opt.quick ? 50 : 300);

	copy_swap_latency(w, cs_iters, &a[0], &b[0]);
	result_add(w->name, "publish_p50", "copy_swap", a[0], "ns");
	result_add(w->name, "publish_p99", "copy_swap", b[0], "ns");
	flat_publish_latency(w, cs_iters, &a[0], &b[0]);
	result_add(w->name, "publish_p50", "boost_flat", a[0], "ns");
	result_add(w->name, "publish_p99", "boost_flat", b[0], "ns");

	for (int nw = 1; nw <= 2; nw++) {
		char m[32], pm[32];

		for (int r = 0; r < reps; r++)
			v[r] = cowmap_write_rate(cell, w, nw, &v2[r]);
		snprintf(m, sizeof(m), "write_%dw", nw);
		snprintf(pm, sizeof(pm), "publishes_%dw", nw);
		result_add(w->name, m, "cowmap", median(v, (size_t)reps),
			   "changes/s");
		result_add(w->name, pm, "cowmap", median(v2, (size_t)reps),
			   "versions/s");
	}
}

static void destroy_all(void *tables[BENCH_NIMPL])
{
	for (int i = 0; i < BENCH_NIMPL; i++)
		bench_impls[i]->destroy(tables[i]);
	urcu_memb_barrier();
}

static void print_workload(const struct workload *w)
{
	static const struct {
		const char *metric, *label;
		int decimals;
	} rows[] = {
		{ "get_1r", "get, 1 reader (ns/op)", 1 },
		{ "get_2r", "get, 2 readers (ns/op)", 1 },
		{ "get_1r_writer", "get, 1 reader + writer (ns/op)", 1 },
		{ "get_2r_writer", "get, 2 readers + writer (ns/op)", 1 },
		{ "get_1r_writer1k", "get, 1 reader + 1k/s writer (ns/op)", 1 },
		{ "get_1r_churned", "get, 1 reader, after writers (ns/op)", 1 },
		{ "get_1r_cpu", "get, 1 reader, on-CPU (ns/op)", 1 },
		{ "get_1r_oncpu", "  reader on-CPU share", 2 },
		{ "get_2r_cpu", "get, 2 readers, on-CPU (ns/op)", 1 },
		{ "get_2r_oncpu", "  each reader's on-CPU share", 2 },
		{ "get_1r_writer_cpu", "get, 1 r + writer, on-CPU (ns/op)", 1 },
		{ "get_1r_writer_oncpu", "  reader's on-CPU share", 2 },
		{ "tput_1r", "throughput, 1 reader (Mops/s)", 2 },
		{ "tput_2r", "throughput, 2 readers (Mops/s)", 2 },
		{ "writer_rate_1r", "writer beside 1 reader (k/s)", 1 },
		{ "get_many32", "get_many x32 (ns/key)", 1 },
		{ "build", "build (ns/entry)", 1 },
		{ "build_singly", "  cowmap: one txn_set per key", 1 },
		{ "build_cpu", "build, on-CPU (ns/entry)", 1 },
		{ "build_singly_cpu", "  cowmap: one txn_set per key", 1 },
		{ "heap_per_entry", "heap (bytes/entry)", 1 },
		{ "stats_per_entry", "  cowmap_stats bytes/entry", 1 },
		{ "rss_per_entry", "RSS growth (bytes/entry)", 1 },
		{ "heap_per_entry_singly", "  cowmap txn_set loop: heap", 1 },
		{ "rss_per_entry_singly", "  cowmap txn_set loop: RSS", 1 },
	};

	printf("\n== %s: %s ==\n%-38s", w->name, w->desc, "");
	for (int i = 0; i < BENCH_NIMPL; i++)
		printf("%13s", bench_impls[i]->name);
	printf("\n");
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		bool any = false;

		for (int i = 0; i < BENCH_NIMPL; i++)
			any |= !isnan(result_get(w->name, rows[r].metric,
						 bench_impls[i]->name));
		if (!any)	/* not measured in this run (--build-only) */
			continue;
		printf("%-38s", rows[r].label);
		for (int i = 0; i < BENCH_NIMPL; i++) {
			double v = result_get(w->name, rows[r].metric,
					      bench_impls[i]->name);

			if (strcmp(rows[r].metric, "writer_rate_1r") == 0)
				v /= 1e3;
			if (isnan(v))
				printf("%13s", "-");
			else
				printf(" %12.*f", rows[r].decimals, v);
		}
		printf("\n");
	}

	double p50 = result_get(w->name, "publish_p50", "cowmap");

	if (!isnan(p50)) {
		printf("cowmap: publish p50/p99 %.0f/%.0f ns (copy_swap %.0f/%.0f ns, "
		       "boost_flat %.0f/%.0f ns); snapshot+release %.1f ns\n",
		       p50, result_get(w->name, "publish_p99", "cowmap"),
		       result_get(w->name, "publish_p50", "copy_swap"),
		       result_get(w->name, "publish_p99", "copy_swap"),
		       result_get(w->name, "publish_p50", "boost_flat"),
		       result_get(w->name, "publish_p99", "boost_flat"),
		       result_get(w->name, "snapshot_release", "cowmap"));
		printf("cowmap: diff of %d keys %.1f us, full iteration %.1f us; "
		       "cowmap_cell_set 1 writer %.0f k/s, 2 writers %.0f k/s "
		       "(%.0f k versions/s)\n",
		       DIFF_KEYS, result_get(w->name, "diff_100", "cowmap") / 1e3,
		       result_get(w->name, "iterate_all", "cowmap") / 1e3,
		       result_get(w->name, "write_1w", "cowmap") / 1e3,
		       result_get(w->name, "write_2w", "cowmap") / 1e3,
		       result_get(w->name, "publishes_2w", "cowmap") / 1e3);
	}
	fflush(stdout);
}

static void bench_workload(struct workload *w, bool big)
{
	void *tables[BENCH_NIMPL];

	fprintf(stderr, "[%s] building...\n", w->name);
	build_all(w, tables);
	if (opt.build_only) {
		destroy_all(tables);
		print_workload(w);
		return;
	}
	fprintf(stderr, "[%s] readers...\n", w->name);
	read_all(w, tables, 0, NCFG_QUIET);
	fprintf(stderr, "[%s] readers with a writer...\n", w->name);
	read_all(w, tables, NCFG_QUIET, NCFG);
	fprintf(stderr, "[%s] cowmap figures...\n", w->name);
	cowmap_figures(w, bench_cowmap_cell(tables[0]), big);
	destroy_all(tables);
	print_workload(w);
}

/*
 * Run every code path once on a small table before anything is measured,
 * so one-time allocations (liburcu's call_rcu thread and its data, GLib's
 * and the allocator's own first-use state) do not land in a heap delta.
 */
static void warm_up(void)
{
	struct workload *w = workload_random("warmup", 4096, 99);
	void *tables[BENCH_NIMPL];

	for (int i = 0; i < BENCH_NIMPL; i++) {
		tables[i] = bench_impls[i]->build(w->keys, w->n);
		verify_all_hit(bench_impls[i], tables[i], w);
	}
	read_all(w, tables, 0, NCFG);
	destroy_all(tables);
	nresults = 0;	/* nothing from here is a result */
	workload_free(w);
}

/* Latency versus size: one reader, no writer.  Points beyond 1M keys
 * build one table at a time (10M keys take 0.5-1 GB a table, 50M some
 * 2.5-5 GB), so the run needs the largest table and the workload, not
 * all of them at once. */
static void bench_size_point(struct workload *w)
{
	void *tables[BENCH_NIMPL];

	fprintf(stderr, "[%s] size point...\n", w->name);
	if (w->n <= 1000000) {
		for (int i = 0; i < BENCH_NIMPL; i++) {
			tables[i] = bench_impls[i]->build(w->keys, w->n);
			verify_all_hit(bench_impls[i], tables[i], w);
		}
		read_all(w, tables, 0, 1);
		destroy_all(tables);
		return;
	}
	for (int i = 0; i < BENCH_NIMPL; i++) {
		const struct impl *im = bench_impls[i];
		double ns[16];
		void *t = im->build(w->keys, w->n);

		verify_all_hit(im, t, w);
		for (int rep = 0; rep < opt.reps; rep++)
			ns[rep] = run_readers(im, t, w, 1, 0).ns_per_op;
		result_add(w->name, "get_1r", im->name,
			   median(ns, (size_t)opt.reps), "ns/op");
		im->destroy(t);
		urcu_memb_barrier();
	}
}

/* ------------------------------------------------------------------ */
/* The targets of issue #4                                              */
/* ------------------------------------------------------------------ */

static int npass, nmiss;

static double fastest_peer(const char *w, const char *metric, const char **who)
{
	double best = NAN;

	for (int i = 0; i < BENCH_NIMPL; i++) {
		double v;

		if (!bench_impls[i]->is_peer)
			continue;
		v = result_get(w, metric, bench_impls[i]->name);
		if (!isnan(v) && (isnan(best) || v < best)) {
			best = v;
			*who = bench_impls[i]->name;
		}
	}
	return best;
}

/*
 * One line: what, the two measurements, their ratio, the bound.  A target
 * line is one of the issue's targets, PASS or MISS; an extra line holds
 * the words workload to a bound the issue sets for the 1M keys only,
 * pass or miss, counted apart; an info line (a cross-check) says ok or
 * over and is not counted.
 */
enum line_kind { LINE_TARGET, LINE_EXTRA, LINE_INFO };

static int nextra_pass, nextra_miss;

static void line(const char *what, const char *w, double num, double den,
		 const char *den_label, double bound, bool at_most,
		 enum line_kind kind)
{
	double ratio = num / den;
	bool ok = at_most ? ratio <= bound : ratio >= bound;
	const char *verdict;

	if (isnan(ratio))
		verdict = "n/a";
	else if (kind == LINE_INFO)
		verdict = ok ? "(ok)" : "(over)";
	else if (kind == LINE_EXTRA && ok)
		verdict = "pass", nextra_pass++;
	else if (kind == LINE_EXTRA)
		verdict = "miss", nextra_miss++;
	else if (ok)
		verdict = "PASS", npass++;
	else
		verdict = "MISS", nmiss++;

	char bnd[24];

	if (bound < 0.01)
		snprintf(bnd, sizeof(bnd), "%s %.4f", at_most ? "<=" : ">=", bound);
	else
		snprintf(bnd, sizeof(bnd), "%s %.2f", at_most ? "<=" : ">=", bound);
	printf("%-44s %-8s %11.4g %11.4g %-13s %9.4f %-9s %s\n", what, w, num,
	       den, den_label, ratio, bnd, verdict);
}

static void target(const char *what, const char *w, double num, double den,
		   const char *den_label, double bound, bool at_most)
{
	line(what, w, num, den, den_label, bound, at_most, LINE_TARGET);
}

/* A target of the on the 1M keys; on words, an extra line. */
static void target_1m(const char *what, const char *w, double num,
		      double den, const char *den_label, double bound,
		      bool at_most)
{
	line(what, w, num, den, den_label, bound, at_most,
	     strcmp(w, "rand1M") == 0 ? LINE_TARGET : LINE_EXTRA);
}

static void info(const char *what, const char *w, double num, double den,
		 const char *den_label, double bound, bool at_most)
{
	line(what, w, num, den, den_label, bound, at_most, LINE_INFO);
}

static void print_targets(void)
{
	static const char *const pair[] = { "rand1M", "words" };
	const char *who = "-";
	char lab[32];

	printf("\n== Issue #4 targets (ratios from the same run) ==\n");
	printf("%-44s %-8s %11s %11s %-13s %9s %-9s %s\n", "target", "workload",
	       "cowmap", "reference", "(reference)", "ratio", "bound", "result");
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];
		double best = fastest_peer(w, "get_1r", &who);

		snprintf(lab, sizeof(lab), "%s", who);
		target("get, 1 reader (ns) vs fastest peer", w,
		       result_get(w, "get_1r", "cowmap"), best, lab, 1.2, true);
		best = fastest_peer(w, "get_1r_cpu", &who);
		snprintf(lab, sizeof(lab), "%s", who);
		info("  same, readers' on-CPU time", w,
		     result_get(w, "get_1r_cpu", "cowmap"), best, lab, 1.2, true);
		best = fastest_peer(w, "get_1r_churned", &who);
		snprintf(lab, sizeof(lab), "%s", who);
		info("  same, all tables after the writers", w,
		     result_get(w, "get_1r_churned", "cowmap"), best, lab, 1.2,
		     true);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];
		double best = fastest_peer(w, "get_1r", &who);

		snprintf(lab, sizeof(lab), "%s get", who);
		target_1m("get_many x32 (ns/key) vs fastest peer get", w,
		       result_get(w, "get_many32", "cowmap"), best, lab, 0.4, true);
		best = fastest_peer(w, "get_1r_cpu", &who);
		snprintf(lab, sizeof(lab), "%s get", who);
		info("  same, on-CPU time", w,
		     result_get(w, "get_many32_cpu", "cowmap"), best, lab, 0.4, true);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];

		target_1m("2 readers vs 1 reader throughput (Mops/s)", w,
		       result_get(w, "tput_2r", "cowmap"),
		       result_get(w, "tput_1r", "cowmap"), "cowmap 1r", 1.8, false);
		/* What 2 readers would do with a core each: the per-lookup
		 * cost in CPU time, alone and beside another reader. */
		info("  same, from on-CPU ns/op (2 x 1r/2r)", w,
		     2 * result_get(w, "get_1r_cpu", "cowmap"),
		     result_get(w, "get_2r_cpu", "cowmap"), "cowmap 2r", 1.8,
		     false);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];

		target_1m("1 reader with writer vs without (ns)", w,
		       result_get(w, "get_1r_writer", "cowmap"),
		       result_get(w, "get_1r", "cowmap"), "cowmap 1r", 1.10, true);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];

		info("  same, on-CPU time", w,
		     result_get(w, "get_1r_writer_cpu", "cowmap"),
		     result_get(w, "get_1r_cpu", "cowmap"), "cowmap 1r", 1.10,
		     true);
		info("  same, writer paced at 1k changes/s", w,
		     result_get(w, "get_1r_writer1k", "cowmap"),
		     result_get(w, "get_1r", "cowmap"), "cowmap 1r", 1.10, true);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];

		target_1m("heap bytes/entry vs ck_hs", w,
		       result_get(w, "heap_per_entry", "cowmap"),
		       result_get(w, "heap_per_entry", "ck_hs"), "ck_hs", 0.8, true);
		/* Issue #18: what the process pays, on both ways of building. */
		info("RSS bytes/entry vs cowmap_stats bytes", w,
		     result_get(w, "rss_per_entry", "cowmap"),
		     result_get(w, "stats_per_entry", "cowmap"), "stats", 1.1,
		     true);
		info("  same, txn_set loop", w,
		     result_get(w, "rss_per_entry_singly", "cowmap"),
		     result_get(w, "stats_per_entry", "cowmap"), "stats", 1.1,
		     true);
		info("RSS bytes/entry vs ck_hs's RSS", w,
		     result_get(w, "rss_per_entry", "cowmap"),
		     result_get(w, "rss_per_entry", "ck_hs"), "ck_hs", 0.75,
		     true);
		info("  same, txn_set loop", w,
		     result_get(w, "rss_per_entry_singly", "cowmap"),
		     result_get(w, "rss_per_entry", "ck_hs"), "ck_hs", 0.75,
		     true);
	}
	for (int k = 0; k < 2; k++) {
		const char *w = pair[k];
		double best = fastest_peer(w, "build", &who);

		snprintf(lab, sizeof(lab), "%s", who);
		target_1m("build by txn (ns/entry) vs fastest insert", w,
		       result_get(w, "build", "cowmap"), best, lab, 1.5, true);
		info("  same, one txn_set per key", w,
		     result_get(w, "build_singly", "cowmap"), best, lab, 1.5,
		     true);
		best = fastest_peer(w, "build_cpu", &who);
		snprintf(lab, sizeof(lab), "%s", who);
		info("  same, on-CPU time", w, result_get(w, "build_cpu", "cowmap"),
		     best, lab, 1.5, true);
		/* Issue #18: a txn_set loop within 1.0x of the fastest insert
		 * and 1.1x of one set_many. */
		info("  txn_set loop, on-CPU, vs fastest insert", w,
		     result_get(w, "build_singly_cpu", "cowmap"), best, lab, 1.0,
		     true);
		info("  txn_set loop vs set_many, on-CPU", w,
		     result_get(w, "build_singly_cpu", "cowmap"),
		     result_get(w, "build_cpu", "cowmap"), "set_many", 1.1,
		     true);
	}
	target("publish p50 (ns) vs 2 us", "rand1M",
	       result_get("rand1M", "publish_p50", "cowmap"), 2000, "2 us", 1.0,
	       true);
	target("copy_swap p50 / cowmap publish p50", "rand1M",
	       result_get("rand1M", "publish_p50", "copy_swap"),
	       result_get("rand1M", "publish_p50", "cowmap"), "cowmap", 1000,
	       false);
	target("snapshot+release (ns) vs 100 ns", "rand10k",
	       result_get("rand10k", "snapshot_release", "cowmap"), 100,
	       "100 ns", 1.0, true);
	target("snapshot+release (ns) vs 100 ns", "rand1M",
	       result_get("rand1M", "snapshot_release", "cowmap"), 100,
	       "100 ns", 1.0, true);
	info("  same, on-CPU time", "rand1M",
	     result_get("rand1M", "snapshot_release_cpu", "cowmap"), 100,
	     "100 ns", 1.0, true);
	target("snapshot 1M vs 10k", "rand1M",
	       result_get("rand1M", "snapshot_release", "cowmap"),
	       result_get("rand10k", "snapshot_release", "cowmap"), "rand10k",
	       1.5, true);
	info("  same, on-CPU time", "rand1M",
	     result_get("rand1M", "snapshot_release_cpu", "cowmap"),
	     result_get("rand10k", "snapshot_release_cpu", "cowmap"), "rand10k",
	     1.5, true);
	target("diff 100 keys vs full iteration (ns)", "rand1M",
	       result_get("rand1M", "diff_100", "cowmap"),
	       result_get("rand1M", "iterate_all", "cowmap"), "iteration",
	       0.001, true);
	info("  same, on-CPU time", "rand1M",
	     result_get("rand1M", "diff_100_cpu", "cowmap"),
	     result_get("rand1M", "iterate_all_cpu", "cowmap"), "iteration",
	     0.001, true);
	target("2 writers vs 1 writer (changes/s)", "rand1M",
	       result_get("rand1M", "write_2w", "cowmap"),
	       result_get("rand1M", "write_1w", "cowmap"), "1 writer", 1.0,
	       false);
	printf("%d PASS, %d MISS; the 1M bounds on words (beyond the issue): "
	       "%d pass, %d miss\n",
	       npass, nmiss, nextra_pass, nextra_miss);
}

/* ------------------------------------------------------------------ */
/* Plots                                                                */
/* ------------------------------------------------------------------ */

static void write_plots(const char *dir, const char *big, const size_t *sizes,
			const char *const *size_names, int nsizes)
{
	char path[4096];
	FILE *f;

	mkdir(dir, 0777);
	snprintf(path, sizeof(path), "%s/reader_throughput.dat", dir);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		return;
	}
	fprintf(f, "# %s: readers, then per implementation Mops/s without "
		   "and with a writer\n# threads", big);
	for (int i = 0; i < BENCH_NIMPL; i++)
		fprintf(f, " %s %s+writer", bench_impls[i]->name,
			bench_impls[i]->name);
	fprintf(f, "\n");
	for (int r = 1; r <= 2; r++) {
		fprintf(f, "%d", r);
		for (int i = 0; i < BENCH_NIMPL; i++) {
			char m[32], mw[32];

			snprintf(m, sizeof(m), "tput_%dr", r);
			snprintf(mw, sizeof(mw), "tput_%dr_writer", r);
			fprintf(f, " %.4f %.4f",
				result_get(big, m, bench_impls[i]->name),
				result_get(big, mw, bench_impls[i]->name));
		}
		fprintf(f, "\n");
	}
	fclose(f);

	snprintf(path, sizeof(path), "%s/latency_vs_size.dat", dir);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		return;
	}
	fprintf(f, "# entries, then per implementation get ns/op (1 reader)\n# n");
	for (int i = 0; i < BENCH_NIMPL; i++)
		fprintf(f, " %s", bench_impls[i]->name);
	fprintf(f, "\n");
	for (int s = 0; s < nsizes; s++) {
		fprintf(f, "%zu", sizes[s]);
		for (int i = 0; i < BENCH_NIMPL; i++)
			fprintf(f, " %.3f", result_get(size_names[s], "get_1r",
						       bench_impls[i]->name));
		fprintf(f, "\n");
	}
	fclose(f);

	snprintf(path, sizeof(path), "%s/reader_throughput.gp", dir);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		return;
	}
	fprintf(f, "set terminal pngcairo size 900,560 noenhanced\n"
		   "set key outside right\nset grid\n"
		   "set output '%s/reader_throughput.png'\n"
		   "set title 'Reader throughput vs reader threads (%s)'\n"
		   "set xlabel 'reader threads'\nset ylabel 'Mlookups/s, all readers'\n"
		   "set xtics 1\nset xrange [0.8:2.2]\nset yrange [0:*]\n"
		   "plot ", dir, big);
	for (int i = 0; i < BENCH_NIMPL; i++)
		fprintf(f, "%s'%s/reader_throughput.dat' using 1:%d with linespoints "
			   "lw 2 lc %d dt 1 title '%s', "
			   "'' using 1:%d with linespoints lw 2 lc %d dt 2 title '%s + writer'",
			i ? ", " : "", dir, 2 + 2 * i, i + 1, bench_impls[i]->name,
			3 + 2 * i, i + 1, bench_impls[i]->name);
	fprintf(f, "\n");
	fclose(f);

	snprintf(path, sizeof(path), "%s/latency_vs_size.gp", dir);
	if ((f = fopen(path, "w")) == NULL) {
		perror(path);
		return;
	}
	fprintf(f, "set terminal pngcairo size 900,560 noenhanced\n"
		   "set key outside right\nset grid\n"
		   "set output '%s/latency_vs_size.png'\n"
		   "set title 'get latency vs map size (1 reader, random 8-byte keys)'\n"
		   "set xlabel 'entries'\nset ylabel 'ns per get'\n"
		   "set logscale x\nset yrange [0:*]\n"
		   "plot ", dir);
	for (int i = 0; i < BENCH_NIMPL; i++)
		fprintf(f, "%s'%s/latency_vs_size.dat' using 1:%d with linespoints "
			   "lw 2 lc %d title '%s'",
			i ? ", " : "", dir, 2 + i, i + 1, bench_impls[i]->name);
	fprintf(f, "\n");
	fclose(f);

	if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
		fprintf(stderr, "cowmap-bench: gnuplot not found; data and "
				"scripts left in %s\n", dir);
		return;
	}

	static const char *const plots[] = { "reader_throughput",
					     "latency_vs_size" };

	for (int p = 0; p < 2; p++) {
		char cmd[4200];

		/* A partial run (--workload) leaves a plot without data:
		 * gnuplot then complains and that plot is skipped. */
		snprintf(cmd, sizeof(cmd), "gnuplot '%s/%s.gp' 2>/dev/null", dir,
			 plots[p]);
		if (system(cmd) != 0)
			fprintf(stderr, "cowmap-bench: no %s plot (%s)\n",
				plots[p], cmd);
		else
			fprintf(stderr, "plot: %s/%s.png\n", dir, plots[p]);
	}
}

/* ------------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: cowmap-bench [--quick] [--csv FILE] [--plot DIR]\n"
		"                    [--workload rand1M|words|rand10k|sizes]...\n"
		"                    [--seconds S] [--reps N] [--words PATH]\n"
		"                    [--build-only] [--max-size N]\n"
		"  --quick     small sizes and short runs (a smoke test)\n"
		"  --csv FILE  write rows workload,metric,implementation,value,unit\n"
		"  --plot DIR  write reader_throughput.png and latency_vs_size.png\n"
		"  --workload  run only the named workloads (repeatable)\n"
		"  --seconds   length of each reader/writer measurement (0.3)\n"
		"  --reps      repetitions per figure, median reported (3)\n"
		"  --build-only  builds, heap and RSS per entry only (no readers)\n"
		"  --max-size N  latency-vs-size points up to N keys: 10000000 adds\n"
		"                10M, 50000000 adds 10M and 50M (1000000; 50M\n"
		"                needs some 8 GB and several minutes)\n");
}

static bool selected(const char *name)
{
	if (opt.nonly == 0)
		return true;
	for (int i = 0; i < opt.nonly; i++)
		if (strcmp(opt.only[i], name) == 0)
			return true;
	return false;
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "--rss-probe") == 0)
		return rss_probe(argv + 2);
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *next = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--quick") == 0) {
			opt.quick = true;
		} else if (strcmp(a, "--csv") == 0 && next) {
			opt.csv = argv[++i];
		} else if (strcmp(a, "--plot") == 0 && next) {
			opt.plot = argv[++i];
		} else if (strcmp(a, "--words") == 0 && next) {
			opt.words = argv[++i];
		} else if (strcmp(a, "--workload") == 0 && next && opt.nonly < 8) {
			opt.only[opt.nonly++] = argv[++i];
		} else if (strcmp(a, "--seconds") == 0 && next) {
			opt.seconds = atof(argv[++i]);
		} else if (strcmp(a, "--reps") == 0 && next) {
			opt.reps = atoi(argv[++i]);
		} else if (strcmp(a, "--build-only") == 0) {
			opt.build_only = true;
		} else if (strcmp(a, "--max-size") == 0 && next) {
			opt.max_size = strtoull(argv[++i], NULL, 10);
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (opt.quick && opt.seconds == 0.3)
		opt.seconds = 0.05;
	if (opt.reps < 1 || opt.reps > 15 || !(opt.seconds > 0))
		die("--reps must be 1..15 and --seconds positive");

	/* GLib 2.74 may still use its slice allocator; make every GLib
	 * allocation a malloc so mallinfo2 accounts for it like the rest. */
	setenv("G_SLICE", "always-malloc", 1);
	urcu_memb_register_thread();

	/* Warm-up runs are short whatever the options. */
	double seconds = opt.seconds;

	opt.seconds = 0.01;
	warm_up();
	opt.seconds = seconds;

	size_t n_big = opt.quick ? 50000 : 1000000;
	size_t n_small = opt.quick ? 2000 : 10000;
	size_t n_words = opt.quick ? 20000 : 0;
	uint64_t t_start = now_ns();

	double load[3] = { NAN, NAN, NAN };

	getloadavg(load, 3);
	printf("cowmap-bench: %s run, %d repetitions, %.2f s per reader "
	       "measurement; medians; load average at start %.2f\n",
	       opt.quick ? "quick" : "full", opt.reps, opt.seconds, load[0]);

	/* Workload names stay those of the full run so the targets apply. */
	if (selected("rand1M")) {
		struct workload *w = workload_random("rand1M", n_big, 1);

		bench_workload(w, true);
		workload_free(w);
	}
	if (selected("words")) {
		struct workload *w = workload_words("words", opt.words, n_words, 2);

		if (w == NULL)
			fprintf(stderr, "cowmap-bench: skipping words\n");
		else {
			bench_workload(w, false);
			workload_free(w);
		}
	}
	if (selected("rand10k")) {
		struct workload *w = workload_random("rand10k", n_small, 3);

		bench_workload(w, false);
		workload_free(w);
	}

	size_t sizes[6];
	const char *size_names[6] = { "rand1k", "rand10k", "rand100k", "rand1M",
				      "rand10M", "rand50M" };
	int nsizes = 4;

	sizes[0] = 1000;
	sizes[1] = n_small;
	sizes[2] = opt.quick ? 10000 : 100000;
	sizes[3] = n_big;
	sizes[4] = 10000000;
	sizes[5] = 50000000;
	while (nsizes < 6 && sizes[nsizes] <= opt.max_size)
		nsizes++;
	if (selected("sizes") && !opt.build_only) {
		/* 1k and 100k, and the points --max-size adds; 10k and 1M
		 * ran as workloads of their own (if selected). */
		for (int s = 0; s < nsizes; s++) {
			if (s == 1 || s == 3)
				continue;

			struct workload *w = workload_random(
				size_names[s], sizes[s], 10 + (uint64_t)s);

			bench_size_point(w);
			workload_free(w);
		}
	}

	print_targets();
	getloadavg(load, 3);
	printf("total run time %.1f s; load average at end %.2f (%ld CPUs)\n",
	       (double)(now_ns() - t_start) / 1e9, load[0],
	       sysconf(_SC_NPROCESSORS_ONLN));

	if (opt.csv != NULL) {
		int rc = results_write_csv(opt.csv);

		if (rc < 0)
			fprintf(stderr, "cowmap-bench: %s: %s\n", opt.csv, strerror(-rc));
	}
	if (opt.plot != NULL)
		write_plots(opt.plot, "rand1M", sizes, size_names, nsizes);

	urcu_memb_barrier();
	urcu_memb_unregister_thread();
	free(results);
	return 0;
}
