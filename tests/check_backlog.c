/*
 * check_backlog.c - the memory waiting for a grace period stays bounded
 * under any number of writers, and grows only while a reader is stuck.
 *
 * The load: W writer threads (1, 2, 4, 8, 16: more than this machine's
 * cores on purpose; a policy tuned for one or two threads is what once let
 * retired versions pile up to hundreds of MB in seconds) write one cell of
 * a 1000-key table flat out with every writing call the cell has
 * (cowmap_cell_set and _del, which combine, and update, publish and cas,
 * which do not), with no reader and then beside two readers that look
 * keys up.  A sampler thread reads
 * cowmap_cell_stats() and the process's resident set every few
 * milliseconds.  The test fails if
 *  - pending_bytes ever exceeds the bound README.md states (the cell's
 *    pending limit plus one call's retirement per writer thread), or
 *  - resident memory grows past twice that bound, or
 *  - in runs of 10 s or more (make soak), where a trend has time to show
 *    through the noise of grace periods that run long for a while,
 *    pending bytes or RSS trend upward: the second half of the run sits
 *    well above the first half (medians of pending bytes, peaks of RSS)
 *    and, for pending, near the limit (below it, grace periods that got
 *    longer when the machine got busier move the median as much);
 * and, at the end, every value the writers stored was freed exactly once.
 *
 * The values are heap blocks so that a leak of retired versions is a leak
 * of real memory that RSS shows, as it would in a server.
 *
 * COWMAP_BACKLOG_SECONDS (default 1.5) is the length of each writer
 * count's run; `make soak` runs minutes.  COWMAP_TEST_VERBOSE=1 prints the
 * samples' summary.
 */
#include "testutil.h"
#include "rcu_flavors.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Sanitizers keep memory resident that the program freed (ASan's
 * quarantine) or add their own (TSan's shadow): RSS tells nothing there. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif

#define KEYS 1000
#define MAX_READERS 2
#define MAX_SAMPLES 200000

static const int writer_counts[] = { 1, 2, 4, 8, 16 };
#define WRITER_COUNTS (sizeof(writer_counts) / sizeof(writer_counts[0]))

static double run_seconds(void)
{
	const char *s = getenv("COWMAP_BACKLOG_SECONDS");
	double v = s != NULL ? strtod(s, NULL) : 0;

	return v > 0 ? v : 1.5;
}

/* Resident set size in bytes, from /proc/self/statm. */
static size_t rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size = 0, resident = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%lu %lu", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* ---- values: heap blocks, counted ---- */

static atomic_long values_made, values_freed;

static void value_free_counted(void *value, void *ctx)
{
	(void)ctx;
	free(value);
	atomic_fetch_add_explicit(&values_freed, 1, memory_order_relaxed);
}

static void *value_new(uint64_t n)
{
	uint64_t *v = malloc(32);	/* a small config value */

	ck_assert_ptr_nonnull(v);
	v[0] = n;
	atomic_fetch_add_explicit(&values_made, 1, memory_order_relaxed);
	return v;
}

/* ---- the load ---- */

struct load {
	const struct tf_flavor *tf;
	struct cowmap_cell *cell;
	atomic_bool stop;
	atomic_long writes;
	atomic_long reads;
};

struct writer_arg {
	struct load *load;
	uint64_t seed;
};

struct one_set {
	struct tu_key key;
	void *value;
};

static struct cowmap *update_set(const struct cowmap *cur, void *arg)
{
	const struct one_set *s = arg;

	return cowmap_set(cur, s->key.bytes, s->key.len, s->value);
}

/* One write with a randomly chosen call; the value is freed here if the
 * call did not take it. */
static void write_once(struct load *ld, struct tu_rng *rng)
{
	struct one_set s;
	unsigned op = (unsigned)tu_rng_below(rng, 100);
	int rc;

	tu_key_make(&s.key, 8, tu_rng_below(rng, KEYS));
	if (op < 10) {
		rc = cowmap_cell_del(ld->cell, s.key.bytes, s.key.len);
		TU_REQUIRE(rc >= 0, "cell_del: %d", rc);
		return;
	}
	s.value = value_new(tu_rng_next(rng));
	if (op < 75) {
		rc = cowmap_cell_set(ld->cell, s.key.bytes, s.key.len, s.value);
	} else if (op < 85) {
		rc = cowmap_cell_update(ld->cell, update_set, &s);
	} else {
		/* Copy and swap, as a reload does: publish, or cas against
		 * the snapshot it was derived from. */
		struct cowmap *base = cowmap_cell_snapshot(ld->cell);

		TU_REQUIRE(base != NULL, "snapshot: %d", errno);

		struct cowmap *next = cowmap_set(base, s.key.bytes, s.key.len,
						 s.value);

		TU_REQUIRE(next != NULL, "set: %d", errno);
		if (op < 92) {
			rc = cowmap_cell_publish(ld->cell, next);
		} else {
			rc = cowmap_cell_cas(ld->cell, base, next);
			if (rc == -EAGAIN)
				rc = 0;	/* another writer won; next released */
		}
		cowmap_release(base);
		TU_REQUIRE(rc == 0, "publish/cas: %d", rc);
		atomic_fetch_add_explicit(&ld->writes, 1, memory_order_relaxed);
		return;
	}
	if (rc != 0)
		value_free_counted(s.value, NULL);
	TU_REQUIRE(rc == 0, "write: %d", rc);
	atomic_fetch_add_explicit(&ld->writes, 1, memory_order_relaxed);
}

static void *writer_main(void *p)
{
	struct writer_arg *a = p;
	struct load *ld = a->load;
	struct tu_rng rng;

	tu_rng_init(&rng, a->seed);
	tf_register(ld->tf);
	while (!atomic_load_explicit(&ld->stop, memory_order_relaxed)) {
		write_once(ld, &rng);
		tf_quiescent(ld->tf);
	}
	tf_offline(ld->tf);
	tf_unregister(ld->tf);
	return NULL;
}

static void *reader_main(void *p)
{
	struct load *ld = p;
	struct tu_rng rng;
	long n = 0;

	tu_rng_init(&rng, (uint64_t)(uintptr_t)p);
	tf_register(ld->tf);
	while (!atomic_load_explicit(&ld->stop, memory_order_relaxed)) {
		struct tu_key k;
		void *v;

		tu_key_make(&k, 8, tu_rng_below(&rng, KEYS));
		tf_read_lock(ld->tf);

		const struct cowmap *m = cowmap_cell_load(ld->cell);

		if (cowmap_get(m, k.bytes, k.len, &v) == 1)
			TU_REQUIRE(v != NULL, "found a NULL value");
		tf_read_unlock(ld->tf);
		tf_quiescent(ld->tf);
		n++;
	}
	tf_offline(ld->tf);
	tf_unregister(ld->tf);
	atomic_fetch_add_explicit(&ld->reads, n, memory_order_relaxed);
	return NULL;
}

struct sample {
	double t;
	size_t pending;
	size_t rss;
};

static struct sample *samples;

static size_t peak(const struct sample *s, size_t from, size_t to,
		   bool rss)
{
	size_t m = 0;

	for (size_t i = from; i < to; i++) {
		size_t v = rss ? s[i].rss : s[i].pending;

		if (v > m)
			m = v;
	}
	return m;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* The median of pending bytes over samples [from, to): a slow grace
 * period moves a peak, a trend moves the median. */
static size_t median_pending(const struct sample *s, size_t from, size_t to)
{
	size_t n = to - from;
	size_t *v = malloc((n + 1) * sizeof(*v));

	ck_assert_ptr_nonnull(v);
	for (size_t i = 0; i < n; i++)
		v[i] = s[from + i].pending;
	qsort(v, n, sizeof(*v), cmp_size);

	size_t m = n > 0 ? v[n / 2] : 0;

	free(v);
	return m;
}

static struct cowmap_cell *filled_cell(const struct tf_flavor *tf)
{
	struct cowmap_options o = { .value_free = value_free_counted };
	struct cowmap *m = cowmap_new(&o);
	struct cowmap_txn *t;

	ck_assert_ptr_nonnull(m);
	t = cowmap_txn_begin(m);
	cowmap_release(m);
	ck_assert_ptr_nonnull(t);
	for (uint64_t i = 0; i < KEYS; i++) {
		struct tu_key k;

		tu_key_make(&k, 8, i);
		ck_assert_int_eq(cowmap_txn_set(t, k.bytes, k.len,
						value_new(i)), 0);
	}
	m = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(m);

	struct cowmap_cell *c = cowmap_cell_new(m, tf->flavor);

	ck_assert_ptr_nonnull(c);
	return c;
}

/*
 * Run @writers writers and READERS readers for @seconds, sampling; then
 * check the bound and the trend.
 */
static void run_load(const struct tf_flavor *tf, int writers, int readers,
		     size_t limit, double seconds)
{
	struct load ld = { .tf = tf };
	pthread_t wt[16], rt[MAX_READERS];
	struct writer_arg wa[16];
	size_t n = 0;

	atomic_store(&values_made, 0);
	atomic_store(&values_freed, 0);
	tf_register(tf);
	ld.cell = filled_cell(tf);
	ck_assert_int_eq(cowmap_cell_set_pending_limit(ld.cell, limit), 0);

	/* What one call may retire: a lone set or del one path, but a
	 * publish or cas of a version derived from an older snapshot every
	 * path that other writers changed meanwhile, up to the nodes of a
	 * whole version.  CI's soak saw 2 writers go 8 KiB past a 256 KiB
	 * limit that way, twice the "4 KiB a call" this test once assumed. */
	struct cowmap *first = cowmap_cell_snapshot(ld.cell);
	struct cowmap_stats table;

	ck_assert_int_eq(cowmap_stats(first, &table), 0);
	cowmap_release(first);

	size_t per_call = table.bytes + 4096;

	atomic_init(&ld.stop, false);
	atomic_init(&ld.writes, 0);
	atomic_init(&ld.reads, 0);
	tf_offline(tf);	/* the sampler blocks: no grace period waits on it */

	size_t rss_start = rss_bytes();

	for (int i = 0; i < readers; i++)
		ck_assert_int_eq(pthread_create(&rt[i], NULL, reader_main,
						&ld), 0);
	for (int i = 0; i < writers; i++) {
		wa[i] = (struct writer_arg){ &ld, 0x5eed0000u + (uint64_t)i };
		ck_assert_int_eq(pthread_create(&wt[i], NULL, writer_main,
						&wa[i]), 0);
	}

	double start = tu_now(), t;

	do {
		usleep(5000);
		t = tu_now() - start;

		struct cowmap_cell_stats st = tu_cell_stats(ld.cell);

		if (n < MAX_SAMPLES)
			samples[n++] = (struct sample){ t, st.pending_bytes,
							rss_bytes() };
	} while (t < seconds);

	atomic_store(&ld.stop, true);
	for (int i = 0; i < writers; i++)
		pthread_join(wt[i], NULL);
	for (int i = 0; i < readers; i++)
		pthread_join(rt[i], NULL);

	/* Once writes stop, a barrier leaves nothing pending. */
	tf_online(tf);
	ck_assert_int_eq(cowmap_cell_barrier(ld.cell), 0);

	struct cowmap_cell_stats end = tu_cell_stats(ld.cell);

	ck_assert_uint_eq(end.pending_bytes, 0);
	ck_assert_uint_eq(end.pending_versions, 0);
	cowmap_cell_free(ld.cell);
	tf_unregister(tf);

	/* The first quarter warms up (slabs, the first grace periods). */
	size_t q = n / 4, h = n / 2;
	size_t pend_early = median_pending(samples, q, h);
	size_t pend_late = median_pending(samples, h, n);
	size_t pend_max = peak(samples, 0, n, false);
	size_t rss_early = peak(samples, q, h, true);
	size_t rss_late = peak(samples, h, n, true);
	long writes = atomic_load(&ld.writes);

	if (tu_verbose())
		fprintf(stderr,
			"%s %2d writers, %d readers: %ld writes, %ld reads, %zu samples; "
			"pending peak %zu KiB (medians early %zu, late %zu); "
			"rss early %zu KiB late %zu KiB\n",
			tf->name, writers, readers, writes, atomic_load(&ld.reads), n,
			pend_max >> 10, pend_early >> 10, pend_late >> 10,
			rss_early >> 10, rss_late >> 10);

	ck_assert_msg(writes > 0, "the writers made no progress");
	/* The bound: the limit plus one call's retirement per writer. */
	ck_assert_msg(pend_max <= limit + (size_t)writers * per_call,
		      "%d writers: %zu bytes pending, over the limit of %zu "
		      "plus %zu a writer", writers, pend_max, limit, per_call);
	/* No upward trend: the late median stays near the early one.  The
	 * slack covers grace periods that run long for a while; in a short
	 * run on a loaded machine that is all a trend would show, so only
	 * runs long enough to tell (make soak) check it. */
	/* With the limit in force pending cannot grow for ever: what a
	 * reclamation that falls behind looks like is pending settling near
	 * the limit in the second half when it did not in the first. */
	if (seconds >= 10)
		ck_assert_msg(pend_late <= 2 * pend_early + (4u << 20) ||
				      pend_late <= limit / 4 * 3,
			      "%d writers: pending grew from %zu to %zu bytes",
			      writers, pend_early, pend_late);
#ifndef UNDER_SANITIZER
	/* Resident memory follows: at most the pending bound twice over
	 * (slabs that the frees leave part empty) beyond the start, ... */
	size_t rss_max = peak(samples, 0, n, true);

	ck_assert_msg(rss_max <= rss_start + 2 * limit + (64u << 20),
		      "%d writers: RSS reached %zu bytes from %zu", writers,
		      rss_max, rss_start);
	/* ... and flat once it got there: in a run long enough to tell
	 * (make soak), the second half peaks near the first. */
	if (seconds >= 10)
		ck_assert_msg(rss_late <= rss_early + rss_early / 4 +
						  limit / 2 + (16u << 20),
			      "%d writers: RSS grew from %zu to %zu bytes",
			      writers, rss_early, rss_late);
#else
	(void)rss_start;
#endif
	ck_assert_int_eq(atomic_load(&values_made), atomic_load(&values_freed));
}

START_TEST(pending_stays_bounded_whatever_the_writer_count)
{
	/* Even: no readers, as the report that found the pile-up had;
	 * odd: readers beside the writers. */
	run_load(&tf_flavors[TF_MEMB], writer_counts[_i / 2],
		 (_i % 2) * MAX_READERS, COWMAP_CELL_PENDING_LIMIT,
		 run_seconds());
}
END_TEST

START_TEST(pending_stays_bounded_under_every_flavor)
{
	run_load(&tf_flavors[_i], 4, MAX_READERS, COWMAP_CELL_PENDING_LIMIT,
		 run_seconds() / 2);
}
END_TEST

/* A limit well below one grace period's worth of retired versions: the
 * writers wait for grace periods, and the bound holds all the same. */
START_TEST(pending_stays_under_a_small_limit)
{
	run_load(&tf_flavors[TF_MEMB], writer_counts[_i], MAX_READERS,
		 256 << 10, run_seconds() / 2);
}
END_TEST

/* ---- a stuck reader ---- */

/* The stuck-reader test's cell limit: far below what piles up while the
 * reader is stuck, so that "back under the limit" means the same on every
 * machine and build. */
#define STUCK_LIMIT ((size_t)1 << 20)
#define STUCK_WRITERS 2
/* How far past the limit pending must grow, and how many writes each
 * writer must make after that, while the reader is stuck. */
#define STUCK_GROWTH 4
#define STUCK_MORE_WRITES 1000
/* A call this long waited for a grace period: a writer over the limit
 * gives up on one after a second (CM_STALL_NS in lib/reclaim.c); no
 * write here takes a tenth of that otherwise, even under valgrind. */
#define STUCK_SLOW_CALL 0.5
/* The one wait, and one call that a heavily loaded machine stalled as
 * long: a writer that waited again and again would run into the dozens
 * (or into the deadline) before its thousand writes. */
#define STUCK_SLOW_CALLS_MAX 2
/* Each phase waits for an event, not for a time; this only turns a hang
 * into a failure that says which event never came. */
#define STUCK_DEADLINE 90.0

struct stuck {
	const struct tf_flavor *tf;
	struct cowmap_cell *cell;
	atomic_int phase;	/* 0 start, 1 inside, 2 leave, 3 left */
};

static void *stuck_reader_main(void *p)
{
	struct stuck *s = p;

	tf_register(s->tf);
	tf_read_lock(s->tf);
	(void)cowmap_cell_load(s->cell);
	atomic_store(&s->phase, 1);
	while (atomic_load(&s->phase) != 2)
		usleep(1000);
	tf_read_unlock(s->tf);
	tf_offline(s->tf);	/* QSBR: leaving is a quiescent state */
	tf_unregister(s->tf);
	atomic_store(&s->phase, 3);
	return NULL;
}

static void wait_for_phase(struct stuck *s, int phase)
{
	while (atomic_load(&s->phase) != phase)
		usleep(1000);
}

/* A writer beside the stuck reader; it counts the calls that waited. */
struct stuck_writer {
	struct load ld;
	uint64_t seed;
	long slow_calls;	/* read after the join */
};

static void *stuck_writer_main(void *p)
{
	struct stuck_writer *w = p;
	struct tu_rng rng;

	tu_rng_init(&rng, w->seed);
	tf_register(w->ld.tf);
	while (!atomic_load_explicit(&w->ld.stop, memory_order_relaxed)) {
		double t = tu_now();

		write_once(&w->ld, &rng);
		if (tu_now() - t >= STUCK_SLOW_CALL)
			w->slow_calls++;
		tf_quiescent(w->ld.tf);
	}
	tf_offline(w->ld.tf);
	tf_unregister(w->ld.tf);
	return NULL;
}

static long writes_of(struct stuck_writer *w)
{
	return atomic_load_explicit(&w->ld.writes, memory_order_relaxed);
}

/*
 * Sample pending bytes until @done says so: while the reader is stuck no
 * grace period ends, so nothing retired can be freed and pending bytes
 * never go down.  Returns the last sample.
 */
static size_t sample_while_stuck(struct cowmap_cell *c, size_t last,
				 bool (*done)(size_t pending, void *arg),
				 void *arg, const char *what)
{
	double deadline = tu_now() + STUCK_DEADLINE;

	for (;;) {
		size_t p = tu_cell_stats(c).pending_bytes;

		ck_assert_msg(p >= last, "pending fell from %zu to %zu bytes "
			      "while the reader was stuck", last, p);
		last = p;
		if (done(p, arg))
			return last;
		ck_assert_msg(tu_now() < deadline,
			      "%s: not within %.0f s (pending %zu bytes)",
			      what, STUCK_DEADLINE, p);
		usleep(1000);
	}
}

static bool far_past_the_limit(size_t pending, void *arg)
{
	(void)arg;
	return pending >= STUCK_GROWTH * STUCK_LIMIT;
}

struct progress {
	struct stuck_writer *w;
	long from[STUCK_WRITERS];
};

static bool every_writer_went_on(size_t pending, void *arg)
{
	struct progress *pr = arg;

	(void)pending;
	for (int i = 0; i < STUCK_WRITERS; i++)
		if (writes_of(&pr->w[i]) < pr->from[i] + STUCK_MORE_WRITES)
			return false;
	return true;
}

/* Write for @seconds from this thread. */
static void write_for(struct cowmap_cell *c, const struct tf_flavor *tf,
		      struct tu_rng *rng, double seconds)
{
	struct load ld = { .tf = tf, .cell = c };
	double end = tu_now() + seconds;

	atomic_init(&ld.writes, 0);
	while (tu_now() < end) {
		for (int i = 0; i < 64; i++)
			write_once(&ld, rng);
		tf_quiescent(tf);
	}
}

/*
 * The README's promise about a grace period that does not end.  While a
 * reader stays in its critical section:
 *  - pending bytes only grow, far past the limit, and every version
 *    retired meanwhile shows in pending_versions (none can be freed);
 *  - the writers go on: each makes a thousand writes after pending passed
 *    the limit several times over, and none keeps waiting for a grace
 *    period (after the one wait of a second, none waits again).
 * Once the reader leaves, writes alone bring pending back under the limit
 * and free the versions it held; a barrier then frees all that is left,
 * and every value is freed exactly once.
 */
START_TEST(pending_grows_only_while_a_reader_is_stuck)
{
	const struct tf_flavor *tf = &tf_flavors[_i];
	struct stuck s = { .tf = tf };
	struct stuck_writer w[STUCK_WRITERS];
	struct progress pr = { .w = w };
	struct tu_rng rng;
	pthread_t reader, writer[STUCK_WRITERS];

	atomic_store(&values_made, 0);
	atomic_store(&values_freed, 0);
	tu_rng_init(&rng, 77);
	tf_register(tf);
	s.cell = filled_cell(tf);
	ck_assert_int_eq(cowmap_cell_set_pending_limit(s.cell, STUCK_LIMIT), 0);
	/* Nothing retired before the reader is inside: the grace period of
	 * every version retired from here on waits for it. */
	ck_assert_int_eq(cowmap_cell_barrier(s.cell), 0);
	atomic_init(&s.phase, 0);
	ck_assert_int_eq(pthread_create(&reader, NULL, stuck_reader_main, &s),
			 0);
	wait_for_phase(&s, 1);

	struct cowmap_cell_stats start = tu_cell_stats(s.cell);

	for (int i = 0; i < STUCK_WRITERS; i++) {
		w[i] = (struct stuck_writer){
			.ld = { .tf = tf, .cell = s.cell },
			.seed = 0x57c4000u + (uint64_t)i,
		};
		atomic_init(&w[i].ld.stop, false);
		atomic_init(&w[i].ld.writes, 0);
		ck_assert_int_eq(pthread_create(&writer[i], NULL,
						stuck_writer_main, &w[i]), 0);
	}
	tf_offline(tf);	/* the sampler sleeps: no grace period waits on it */

	size_t pending = sample_while_stuck(s.cell, start.pending_bytes,
					    far_past_the_limit, NULL,
					    "pending grew past the limit");

	for (int i = 0; i < STUCK_WRITERS; i++)
		pr.from[i] = writes_of(&w[i]);
	pending = sample_while_stuck(s.cell, pending, every_writer_went_on,
				     &pr, "every writer made more writes "
				     "past the limit");
	for (int i = 0; i < STUCK_WRITERS; i++)
		atomic_store(&w[i].ld.stop, true);
	for (int i = 0; i < STUCK_WRITERS; i++)
		pthread_join(writer[i], NULL);
	tf_online(tf);

	struct cowmap_cell_stats stuck = tu_cell_stats(s.cell);

	if (tu_verbose())
		fprintf(stderr, "%s stuck: %" PRIu64 " published, %zu versions "
			"and %zu bytes pending\n", tf->name,
			stuck.published - start.published,
			stuck.pending_versions, stuck.pending_bytes);
	ck_assert_uint_ge(stuck.pending_bytes, pending);
	ck_assert_msg(stuck.pending_versions >=
			      stuck.published - start.published,
		      "%zu versions pending, but %" PRIu64 " were replaced "
		      "while the reader was stuck", stuck.pending_versions,
		      stuck.published - start.published);
	for (int i = 0; i < STUCK_WRITERS; i++)
		ck_assert_msg(w[i].slow_calls <= STUCK_SLOW_CALLS_MAX,
			      "writer %d waited for a grace period %ld times "
			      "behind the stuck reader", i, w[i].slow_calls);

	atomic_store(&s.phase, 2);
	tf_offline(tf);
	wait_for_phase(&s, 3);
	pthread_join(reader, NULL);
	tf_online(tf);

	/* No barrier: writes go on, and within a few grace periods the
	 * backlog is back under the limit (plus one call's retirement). */
	struct cowmap_cell_stats after = stuck;
	double deadline = tu_now() + STUCK_DEADLINE;

	while (after.pending_bytes > STUCK_LIMIT + 4096 &&
	       tu_now() < deadline) {
		write_for(s.cell, tf, &rng, 0.01);
		after = tu_cell_stats(s.cell);
	}
	ck_assert_msg(after.pending_bytes <= STUCK_LIMIT + 4096,
		      "pending stayed at %zu bytes (stuck: %zu) %.0f s after "
		      "the reader left", after.pending_bytes,
		      stuck.pending_bytes, STUCK_DEADLINE);
	ck_assert_uint_lt(after.pending_versions, stuck.pending_versions);

	/* What is left is freed by a barrier; every value that the current
	 * version does not hold was freed. */
	ck_assert_int_eq(cowmap_cell_barrier(s.cell), 0);
	after = tu_cell_stats(s.cell);
	ck_assert_uint_eq(after.pending_bytes, 0);
	ck_assert_uint_eq(after.pending_nodes, 0);
	ck_assert_uint_eq(after.pending_versions, 0);

	struct cowmap *cur = cowmap_cell_snapshot(s.cell);

	ck_assert_ptr_nonnull(cur);
	ck_assert_int_eq(atomic_load(&values_made) - atomic_load(&values_freed),
			 (long)cowmap_size(cur));
	cowmap_release(cur);

	tf_offline(tf);
	cowmap_cell_free(s.cell);
	tf_unregister(tf);
	ck_assert_int_eq(atomic_load(&values_made), atomic_load(&values_freed));
}
END_TEST

static Suite *backlog_suite(void)
{
	Suite *s = suite_create("backlog");
	TCase *tc = tcase_create("writers");

	tcase_set_timeout(tc, 120 + 20 * run_seconds());
	tcase_add_loop_test(tc, pending_stays_bounded_whatever_the_writer_count,
			    0, 2 * (int)WRITER_COUNTS);
	tcase_add_loop_test(tc, pending_stays_bounded_under_every_flavor, 0,
			    TF_COUNT);
	tcase_add_loop_test(tc, pending_stays_under_a_small_limit, 0,
			    (int)WRITER_COUNTS);
	suite_add_tcase(s, tc);

	tc = tcase_create("stuck reader");
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, pending_grows_only_while_a_reader_is_stuck, 0,
			    TF_COUNT);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	samples = calloc(MAX_SAMPLES, sizeof(*samples));
	if (samples == NULL)
		return 99;

	SRunner *sr = srunner_create(backlog_suite());

	srunner_run_all(sr, CK_NORMAL);

	int failed = srunner_ntests_failed(sr);

	srunner_free(sr);
	free(samples);
	return failed == 0 ? 0 : 1;
}
