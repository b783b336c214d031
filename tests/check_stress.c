/*
 * check_stress.c - readers and writers on one cell, in parallel, for every
 * liburcu flavor.
 *
 * What must hold while writers publish as fast as they can:
 *
 *  - No torn or half-published version.  Every version has a key "gen"
 *    whose value carries the generation G, and keys k0..k31 whose values
 *    all carry G too: writers bump the generation by rewriting all 33
 *    entries in one transaction (cowmap_cell_update, or a snapshot + txn +
 *    cowmap_cell_cas retry loop).  Interleaved with that, each writer w
 *    runs steps s = 0, 1, ... of single-key publishes (cowmap_cell_set/
 *    cowmap_cell_del, which the library may combine):
 *        1. set "r<w>.<s % 8>" = step s
 *        2. s even: set "x<w>" = step s;  s odd: del "x<w>" (must return 1)
 *        3. set "c<w>" = step s
 *    so a version whose counter c<w> says s must show exactly the effects
 *    of steps <= s, plus possibly a prefix of step s + 1.  Readers check
 *    all of it on every version they load, plus cowmap_size().
 *  - Readers see generations and counters only move forward.
 *  - No value is passed to value_free while any reader can see it: every
 *    value is a record with a "freed" counter that readers check on every
 *    value they meet inside a read-side critical section.  The records
 *    themselves are never freed during the run, so a premature value_free
 *    is reported, not crashed on.
 *  - Snapshots (cowmap_cell_snapshot) are recorded when taken and compared
 *    when released, after many later publishes; half of them are released
 *    by the other reader thread.
 *  - At the end: the final version holds exactly the expected state, the
 *    generation equals the number of successful bumps, nothing is pending
 *    after a barrier, and value_free ran exactly once for every value the
 *    map was given (and never for others).
 *
 * The amount of work is bounded by operation counts, not time.
 * COWMAP_STRESS_SCALE (a positive number; default 1, 0.25 in ASan and 0.02
 * in TSan builds) scales them, e.g. COWMAP_STRESS_SCALE=0.1 for valgrind.  COWMAP_TEST_VERBOSE=1
 * prints a line of counters per flavor.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rcu_flavors.h"

#include <cowmap.h>

#include "testutil.h"

Suite *stress_suite(void);

#define NGEN 32		/* k0..k31 carry the generation */
#define RING 8		/* r<w>.0 .. r<w>.7 */
#define NWRITERS 2
#define NREADERS 2
#define NSLOTS (1 + NGEN + NWRITERS * (2 + RING))
#define SNAP_KEEP 16

/* Operation counts at scale 1 (tuned for a 2-core machine, -O2). */
#define BASE_STEPS 12000	/* per writer, per flavor */
#define BASE_MIN_LOADS 20000	/* per reader, per flavor */
#define BASE_HAMMER_SETS 100000	/* per thread, per flavor */

/*
 * Sanitizer builds are slower: ASan about 3-5 times, TSan 20-100 times
 * (run TSan against an instrumented liburcu: see rcu_flavors.h).
 * Smaller defaults keep them usable.
 */
#if defined(__SANITIZE_THREAD__)
#define DEFAULT_SCALE 0.02
#elif defined(__SANITIZE_ADDRESS__)
#define DEFAULT_SCALE 0.25
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEFAULT_SCALE 0.02
#elif __has_feature(address_sanitizer)
#define DEFAULT_SCALE 0.25
#endif
#endif
#ifndef DEFAULT_SCALE
#define DEFAULT_SCALE 1.0
#endif

static double stress_scale(void)
{
	const char *s = getenv("COWMAP_STRESS_SCALE");
	char *end;
	double d;

	if (s == NULL || *s == '\0')
		return DEFAULT_SCALE;
	d = strtod(s, &end);
	if (end == s || !(d > 0.0))
		return DEFAULT_SCALE;
	return d;
}

static long scaled(long base, long min)
{
	double v = (double)base * stress_scale();

	return v < (double)min ? min : (long)v;
}

/* ------------------------------------------------------------------ */
/* Values: records that are never freed while the test runs            */
/* ------------------------------------------------------------------ */

enum vkind { VK_GEN = 1, VK_K, VK_RING, VK_X, VK_CTR, VK_HAM, VK_DEL };

struct sval {
	atomic_int freed;	/* value_free calls */
	atomic_int handed;	/* a successful set gave it to the map */
	int kind;
	int writer;
	uint32_t idx;
	int64_t seq;		/* generation or step */
};

#define CHUNK 4096
#define MAX_CHUNKS 8192

/* Grows by chunks; values never move, so readers may hold pointers. */
struct pool {
	struct sval *chunk[MAX_CHUNKS];
	atomic_size_t used;
	pthread_mutex_t lock;
};

static void pool_init(struct pool *p)
{
	memset(p->chunk, 0, sizeof(p->chunk));
	atomic_init(&p->used, 0);
	pthread_mutex_init(&p->lock, NULL);
}

static struct sval *pool_at(struct pool *p, size_t i)
{
	return &p->chunk[i / CHUNK][i % CHUNK];
}

static struct sval *sv_new(struct pool *p, int kind, int writer, uint32_t idx,
			   int64_t seq)
{
	size_t i = atomic_fetch_add(&p->used, 1);
	struct sval *v;

	if (i / CHUNK >= MAX_CHUNKS) {
		fprintf(stderr, "check_stress: value pool exhausted\n");
		abort();
	}
	pthread_mutex_lock(&p->lock);
	if (p->chunk[i / CHUNK] == NULL) {
		p->chunk[i / CHUNK] = calloc(CHUNK, sizeof(struct sval));
		if (p->chunk[i / CHUNK] == NULL)
			abort();
	}
	pthread_mutex_unlock(&p->lock);
	v = pool_at(p, i);
	v->kind = kind;
	v->writer = writer;
	v->idx = idx;
	v->seq = seq;
	return v;
}

static void pool_fini(struct pool *p)
{
	for (size_t i = 0; i < MAX_CHUNKS; i++)
		free(p->chunk[i]);
	pthread_mutex_destroy(&p->lock);
}

static void sv_value_free(void *value, void *ctx)
{
	struct sval *v = value;

	(void)ctx;
	atomic_fetch_add(&v->freed, 1);
}

/* ------------------------------------------------------------------ */
/* Shared state and error reporting                                    */
/* ------------------------------------------------------------------ */

struct key {
	char s[16];
	size_t len;
};

struct snaprec {
	struct cowmap *snap;
	int64_t gen;
	int64_t ctr[NWRITERS];
	size_t size;
	const void *ptrs[NSLOTS];
};

struct reader_state {
	struct snaprec keep[SNAP_KEEP];
	int nkeep;
	long loads, snaps, released_by_self, released_by_other, iters;
	int64_t first_gen, last_gen;
};

struct stress {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	struct pool pool;
	long steps, min_loads;
	atomic_int writers_done;
	atomic_long bumps;		/* successful generation bumps */
	atomic_long cas_retries;
	atomic_long ops;		/* cell_set/cell_del/update/cas calls */
	pthread_barrier_t readers_met;
	struct reader_state rd[NREADERS];
	/* keys */
	struct key gen, k[NGEN], ring[NWRITERS][RING], x[NWRITERS],
		ctr[NWRITERS];
	/* errors */
	atomic_long errors;
	pthread_mutex_t err_lock;
	char err_msg[512];
};

/* "<prefix>", "<prefix><a>" or "<prefix><a>.<b>" (a, b < 0: omitted). */
static void mkkey(struct key *k, const char *prefix, int a, int b)
{
	int n;

	if (a < 0)
		n = snprintf(k->s, sizeof(k->s), "%s", prefix);
	else if (b < 0)
		n = snprintf(k->s, sizeof(k->s), "%s%d", prefix, a);
	else
		n = snprintf(k->s, sizeof(k->s), "%s%d.%d", prefix, a, b);
	if (n <= 0 || (size_t)n >= sizeof(k->s))
		abort();
	k->len = (size_t)n;
}

__attribute__((format(printf, 2, 3)))
static void st_fail(struct stress *st, const char *fmt, ...)
{
	if (atomic_fetch_add(&st->errors, 1) == 0) {
		va_list ap;

		pthread_mutex_lock(&st->err_lock);
		va_start(ap, fmt);
		vsnprintf(st->err_msg, sizeof(st->err_msg), fmt, ap);
		va_end(ap);
		pthread_mutex_unlock(&st->err_lock);
	}
}

static void stress_init(struct stress *st, const struct tf_flavor *tf)
{
	memset(st, 0, sizeof(*st));
	st->tf = tf;
	pool_init(&st->pool);
	pthread_mutex_init(&st->err_lock, NULL);
	mkkey(&st->gen, "gen", -1, -1);
	ck_assert_str_eq(st->gen.s, "gen");
	for (int i = 0; i < NGEN; i++)
		mkkey(&st->k[i], "k", i, -1);
	for (int w = 0; w < NWRITERS; w++) {
		for (int j = 0; j < RING; j++)
			mkkey(&st->ring[w][j], "r", w, j);
		mkkey(&st->x[w], "x", w, -1);
		mkkey(&st->ctr[w], "c", w, -1);
	}
}

/* ------------------------------------------------------------------ */
/* The invariant                                                       */
/* ------------------------------------------------------------------ */

/* A value a reader met: the right kind and not yet given to value_free. */
static int sv_ok(struct stress *st, const void *p, int kind, int writer,
		 const char *where, const char *key)
{
	const struct sval *v = p;

	if (v == NULL) {
		st_fail(st, "%s: %s maps to NULL", where, key);
		return 0;
	}
	if (atomic_load_explicit(&v->freed, memory_order_acquire) != 0) {
		st_fail(st, "%s: %s's value (seq %lld) was passed to value_free "
			 "while still reachable",
		     where, key, (long long)v->seq);
		return 0;
	}
	if (v->kind != kind || (writer >= 0 && v->writer != writer)) {
		st_fail(st, "%s: %s has a value of kind %d/writer %d", where, key,
		     v->kind, v->writer);
		return 0;
	}
	return 1;
}

/* The latest step t <= s of writer-ring slot j, or -1 if none. */
static int64_t ring_latest(int64_t s, int j)
{
	if (s < j)
		return -1;
	return s - ((s - j) % RING);
}

/*
 * check_version - verify the invariant on @m and describe it in @out.
 * Safe inside a read-side critical section (allocates nothing) and on
 * snapshots.  Returns 1 if it holds, 0 after recording a failure.
 */
static int check_version(struct stress *st, const struct cowmap *m,
			 struct snaprec *out, const char *where)
{
	void *v;
	const struct sval *sv;
	int64_t g;
	size_t expect;
	int slot = 0;

	if (m == NULL) {
		st_fail(st, "%s: no version", where);
		return 0;
	}
	if (cowmap_get(m, st->gen.s, st->gen.len, &v) != 1) {
		st_fail(st, "%s: no gen key", where);
		return 0;
	}
	if (!sv_ok(st, v, VK_GEN, -1, where, "gen"))
		return 0;
	g = ((const struct sval *)v)->seq;
	out->gen = g;
	out->ptrs[slot++] = v;
	for (int i = 0; i < NGEN; i++) {
		if (cowmap_get(m, st->k[i].s, st->k[i].len, &v) != 1) {
			st_fail(st, "%s: gen %lld lacks %s", where, (long long)g,
			     st->k[i].s);
			return 0;
		}
		if (!sv_ok(st, v, VK_K, -1, where, st->k[i].s))
			return 0;
		sv = v;
		if (sv->seq != g || sv->idx != (uint32_t)i) {
			st_fail(st, "%s: torn version: gen %lld but %s is from "
				 "gen %lld (idx %u)",
			     where, (long long)g, st->k[i].s,
			     (long long)sv->seq, sv->idx);
			return 0;
		}
		out->ptrs[slot++] = v;
	}
	expect = 1 + NGEN;

	for (int w = 0; w < NWRITERS; w++) {
		int64_t s = -1, xs = -1;
		int64_t next_ring = -1;	/* seq in ring[(s+1)%RING] */

		if (cowmap_get(m, st->ctr[w].s, st->ctr[w].len, &v) == 1) {
			if (!sv_ok(st, v, VK_CTR, w, where, st->ctr[w].s))
				return 0;
			s = ((const struct sval *)v)->seq;
			expect++;
			out->ptrs[slot++] = v;
		} else {
			out->ptrs[slot++] = NULL;
		}
		out->ctr[w] = s;

		for (int j = 0; j < RING; j++) {
			int64_t want = ring_latest(s, j);

			if (cowmap_get(m, st->ring[w][j].s, st->ring[w][j].len,
				       &v) != 1) {
				if (want >= 0) {
					st_fail(st, "%s: c%d = %lld but %s is "
						 "missing (step %lld)",
					     where, w, (long long)s,
					     st->ring[w][j].s,
					     (long long)want);
					return 0;
				}
				out->ptrs[slot++] = NULL;
				continue;
			}
			if (!sv_ok(st, v, VK_RING, w, where, st->ring[w][j].s))
				return 0;
			sv = v;
			if (sv->idx != (uint32_t)j ||
			    (sv->seq != want && sv->seq != s + 1)) {
				st_fail(st, "%s: c%d = %lld but %s holds step "
					 "%lld (want %lld or %lld)",
				     where, w, (long long)s, st->ring[w][j].s,
				     (long long)sv->seq, (long long)want,
				     (long long)(s + 1));
				return 0;
			}
			if ((s + 1) % RING == j)
				next_ring = sv->seq;
			expect++;
			out->ptrs[slot++] = v;
		}

		if (cowmap_get(m, st->x[w].s, st->x[w].len, &v) == 1) {
			if (!sv_ok(st, v, VK_X, w, where, st->x[w].s))
				return 0;
			xs = ((const struct sval *)v)->seq;
			/* x is set at even steps: the even one of s, s+1. */
			if ((xs & 1) != 0 || (xs != s && xs != s + 1) ||
			    (xs == s + 1 && next_ring != s + 1)) {
				st_fail(st, "%s: c%d = %lld but %s holds step "
					 "%lld (ring says %lld)",
				     where, w, (long long)s, st->x[w].s,
				     (long long)xs, (long long)next_ring);
				return 0;
			}
			expect++;
			out->ptrs[slot++] = v;
		} else {
			/* Absent after an odd step, or step s+1 (odd) has
			 * deleted it already, which its ring write precedes. */
			if (s >= 0 && (s & 1) == 0 && next_ring != s + 1) {
				st_fail(st, "%s: c%d = %lld (even) but %s is "
					 "absent and step %lld is not visible",
				     where, w, (long long)s, st->x[w].s,
				     (long long)(s + 1));
				return 0;
			}
			out->ptrs[slot++] = NULL;
		}
	}
	out->size = cowmap_size(m);
	if (out->size != expect) {
		st_fail(st, "%s: cowmap_size = %zu, entries found = %zu", where,
		     out->size, expect);
		return 0;
	}
	return 1;
}

/* Every entry once, values alive. */
static int check_iteration(struct stress *st, const struct cowmap *m,
			   const char *where)
{
	struct cowmap_iter it;
	const void *key;
	size_t len, n = 0;
	void *v;

	cowmap_iter_init(&it, m);
	while (cowmap_iter_next(&it, &key, &len, &v)) {
		const struct sval *sv = v;

		n++;
		if (sv == NULL ||
		    atomic_load_explicit(&sv->freed, memory_order_acquire)) {
			st_fail(st, "%s: iteration met a freed value (key %.*s)",
			     where, (int)len, (const char *)key);
			return 0;
		}
	}
	if (n != cowmap_size(m)) {
		st_fail(st, "%s: iteration gave %zu entries, size %zu", where, n,
		     cowmap_size(m));
		return 0;
	}
	return 1;
}

/* A snapshot still shows exactly what it showed when it was taken. */
static void snap_verify_release(struct stress *st, struct snaprec *r,
				const char *where)
{
	struct snaprec now;

	if (check_version(st, r->snap, &now, where)) {
		if (now.gen != r->gen || now.size != r->size ||
		    memcmp(now.ptrs, r->ptrs, sizeof(now.ptrs)) != 0 ||
		    memcmp(now.ctr, r->ctr, sizeof(now.ctr)) != 0)
			st_fail(st, "%s: snapshot of gen %lld changed (now gen "
				 "%lld, size %zu -> %zu)",
			     where, (long long)r->gen, (long long)now.gen,
			     r->size, now.size);
		else
			check_iteration(st, r->snap, where);
	}
	cowmap_release(r->snap);
	r->snap = NULL;
}

/* ------------------------------------------------------------------ */
/* Readers                                                             */
/* ------------------------------------------------------------------ */

struct rarg {
	struct stress *st;
	int id;
};

static void *reader_main(void *arg)
{
	struct rarg *ra = arg;
	struct stress *st = ra->st;
	const struct tf_flavor *tf = st->tf;
	struct reader_state *me = &st->rd[ra->id];
	int64_t last_gen = -1, last_ctr[NWRITERS];
	struct snaprec view;
	int rc;

	for (int w = 0; w < NWRITERS; w++)
		last_ctr[w] = -1;
	tf_register(tf);
	me->first_gen = -1;
	for (;;) {
		const struct cowmap *m;
		int ok;

		if (atomic_load(&st->writers_done) == NWRITERS &&
		    me->loads >= st->min_loads)
			break;
		if (atomic_load(&st->errors) != 0)
			break;

		tf_read_lock(tf);
		m = cowmap_cell_load(st->c);
		ok = check_version(st, m, &view, "reader");
		if (ok && (me->loads & 15) == 0)
			ok = check_iteration(st, m, "reader iteration");
		tf_read_unlock(tf);
		tf_quiescent(tf);
		me->loads++;
		if (!ok)
			break;

		if (view.gen < last_gen)
			st_fail(st, "reader %d: generation went back %lld -> "
				 "%lld", ra->id, (long long)last_gen,
			     (long long)view.gen);
		for (int w = 0; w < NWRITERS; w++)
			if (view.ctr[w] < last_ctr[w])
				st_fail(st, "reader %d: c%d went back %lld -> "
					 "%lld", ra->id, w,
				     (long long)last_ctr[w],
				     (long long)view.ctr[w]);
		last_gen = view.gen;
		memcpy(last_ctr, view.ctr, sizeof(last_ctr));
		if (me->first_gen < 0)
			me->first_gen = view.gen;

		if ((me->loads & 31) == 0) {
			struct snaprec *r;

			if (me->nkeep == SNAP_KEEP) {
				/* Release the oldest here: this thread took
				 * it. */
				snap_verify_release(st, &me->keep[0],
						    "snapshot (own)");
				memmove(&me->keep[0], &me->keep[1],
					sizeof(me->keep[0]) * (SNAP_KEEP - 1));
				me->nkeep--;
				me->released_by_self++;
			}
			r = &me->keep[me->nkeep];
			r->snap = cowmap_cell_snapshot(st->c);
			if (r->snap == NULL) {
				st_fail(st, "cowmap_cell_snapshot failed: %d",
				     errno);
				break;
			}
			if (!check_version(st, r->snap, &view, "snapshot")) {
				cowmap_release(r->snap);
				break;
			}
			if (view.gen < last_gen)
				st_fail(st, "snapshot older than the version "
					 "loaded before it (%lld < %lld)",
				     (long long)view.gen, (long long)last_gen);
			r->gen = view.gen;
			r->size = view.size;
			memcpy(r->ctr, view.ctr, sizeof(r->ctr));
			memcpy(r->ptrs, view.ptrs, sizeof(r->ptrs));
			me->nkeep++;
			me->snaps++;
		}
	}
	me->last_gen = last_gen;

	/* Meet the other reader, then release its snapshots. */
	tf_offline(tf);
	rc = pthread_barrier_wait(&st->readers_met);
	if (rc != 0 && rc != PTHREAD_BARRIER_SERIAL_THREAD)
		st_fail(st, "pthread_barrier_wait: %d", rc);
	tf_online(tf);
	{
		struct reader_state *other = &st->rd[(ra->id + 1) % NREADERS];

		for (int i = 0; i < other->nkeep; i++) {
			snap_verify_release(st, &other->keep[i],
					    "snapshot (other thread)");
			me->released_by_other++;
		}
		other->nkeep = 0;
	}
	tf_unregister(tf);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Writers                                                             */
/* ------------------------------------------------------------------ */

struct bump_ctx {
	struct stress *st;
	int failed;
};

/* cur -> the next generation: all NGEN keys and "gen" rewritten in one
 * transaction.  Used by cowmap_cell_update and by the cas loop. */
static struct cowmap *bump_fn(const struct cowmap *cur, void *arg)
{
	struct bump_ctx *b = arg;
	struct stress *st = b->st;
	struct cowmap_txn *t;
	struct sval *v;
	void *gv;
	int64_t g;
	int r;

	if (cowmap_get(cur, st->gen.s, st->gen.len, &gv) != 1) {
		st_fail(st, "bump: no gen in the current version");
		b->failed = 1;
		errno = EINVAL;
		return NULL;
	}
	g = ((struct sval *)gv)->seq + 1;
	t = cowmap_txn_begin(cur);
	if (t == NULL) {
		st_fail(st, "cowmap_txn_begin: errno %d", errno);
		b->failed = 1;
		return NULL;
	}
	for (int i = 0; i <= NGEN; i++) {
		const struct key *k = i < NGEN ? &st->k[i] : &st->gen;

		v = sv_new(&st->pool, i < NGEN ? VK_K : VK_GEN, -1,
			   (uint32_t)i, g);
		r = cowmap_txn_set(t, k->s, k->len, v);
		if (r != 0) {
			st_fail(st, "cowmap_txn_set(%s): %d", k->s, r);
			cowmap_txn_abort(t);
			b->failed = 1;
			errno = -r;
			return NULL;
		}
		atomic_store(&v->handed, 1);
	}
	return cowmap_txn_commit(t);
}

struct warg {
	struct stress *st;
	int id;
};

static int bump_by_cas(struct stress *st)
{
	struct bump_ctx b = { st, 0 };

	for (long tries = 0; tries < 1000000; tries++) {
		struct cowmap *exp = cowmap_cell_snapshot(st->c);
		struct cowmap *next;
		int r;

		if (exp == NULL) {
			st_fail(st, "snapshot: errno %d", errno);
			return -1;
		}
		next = bump_fn(exp, &b);
		if (next == NULL) {
			cowmap_release(exp);
			return -1;
		}
		r = cowmap_cell_cas(st->c, exp, next);
		cowmap_release(exp);
		atomic_fetch_add(&st->ops, 1);
		if (r == 0)
			return 0;
		if (r != -EAGAIN) {
			st_fail(st, "cowmap_cell_cas: %d", r);
			return -1;
		}
		atomic_fetch_add(&st->cas_retries, 1);
		tf_quiescent(st->tf);
	}
	st_fail(st, "cas never succeeded");
	return -1;
}

static void *writer_main(void *arg)
{
	struct warg *wa = arg;
	struct stress *st = wa->st;
	const struct tf_flavor *tf = st->tf;
	const int w = wa->id;

	tf_register(tf);
	for (long s = 0; s < st->steps && atomic_load(&st->errors) == 0;
	     s++) {
		struct sval *v;
		int r;

		/* The generation bump: mostly update, every 4th by cas. */
		if ((s & 3) == 3) {
			if (bump_by_cas(st) != 0)
				break;
		} else {
			struct bump_ctx b = { st, 0 };

			r = cowmap_cell_update(st->c, bump_fn, &b);
			atomic_fetch_add(&st->ops, 1);
			if (r != 0) {
				st_fail(st, "cowmap_cell_update: %d", r);
				break;
			}
		}
		atomic_fetch_add(&st->bumps, 1);

		/* 1. ring slot */
		v = sv_new(&st->pool, VK_RING, w, (uint32_t)(s % RING), s);
		r = cowmap_cell_set(st->c, st->ring[w][s % RING].s,
				    st->ring[w][s % RING].len, v);
		if (r != 0) {
			st_fail(st, "cell_set(ring): %d", r);
			break;
		}
		atomic_store(&v->handed, 1);

		/* 2. x: set at even steps, deleted at odd ones */
		if ((s & 1) == 0) {
			v = sv_new(&st->pool, VK_X, w, 0, s);
			r = cowmap_cell_set(st->c, st->x[w].s, st->x[w].len, v);
			if (r != 0) {
				st_fail(st, "cell_set(x): %d", r);
				break;
			}
			atomic_store(&v->handed, 1);
		} else {
			r = cowmap_cell_del(st->c, st->x[w].s, st->x[w].len);
			if (r != 1) {
				st_fail(st, "writer %d step %ld: cell_del(x) = %d, "
					 "want 1 (only this writer sets x)",
				     w, s, r);
				break;
			}
		}

		/* 3. the counter, last */
		v = sv_new(&st->pool, VK_CTR, w, 0, s);
		r = cowmap_cell_set(st->c, st->ctr[w].s, st->ctr[w].len, v);
		if (r != 0) {
			st_fail(st, "cell_set(ctr): %d", r);
			break;
		}
		atomic_store(&v->handed, 1);
		atomic_fetch_add(&st->ops, 3);
		tf_quiescent(tf);
	}
	atomic_fetch_add(&st->writers_done, 1);
	tf_unregister(tf);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Final accounting                                                    */
/* ------------------------------------------------------------------ */

/*
 * After a barrier, with @live values still in the current version: every
 * handed value freed at most once and exactly @live of them not yet;
 * values never handed over never freed.
 */
static void check_value_accounting(struct pool *p, size_t live,
				   const char *when)
{
	size_t used = atomic_load(&p->used), unfreed = 0;

	for (size_t i = 0; i < used; i++) {
		struct sval *v = pool_at(p, i);
		int freed = atomic_load(&v->freed);

		if (atomic_load(&v->handed)) {
			ck_assert_msg(freed <= 1,
				      "%s: value %zu (kind %d seq %lld) freed "
				      "%d times",
				      when, i, v->kind, (long long)v->seq,
				      freed);
			unfreed += freed == 0;
		} else {
			ck_assert_msg(freed == 0,
				      "%s: value %zu was never given to the "
				      "map but was freed %d times",
				      when, i, freed);
		}
	}
	ck_assert_msg(unfreed == live,
		      "%s: %zu handed values not freed, %zu in the map", when,
		      unfreed, live);
}

static struct timespec now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts;
}

static double secs_since(struct timespec t0)
{
	struct timespec t1 = now();

	return (double)(t1.tv_sec - t0.tv_sec) +
	       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */
/* ------------------------------------------------------------------ */

START_TEST(readers_never_see_torn_versions)
{
	const struct tf_flavor *tf = &tf_flavors[_i];
	struct stress *st = calloc(1, sizeof(*st));
	struct cowmap_options o;
	struct cowmap *init;
	struct cowmap_txn *t;
	pthread_t wth[NWRITERS], rth[NREADERS];
	struct warg wa[NWRITERS];
	struct rarg ra[NREADERS];
	struct cowmap_cell_stats cs;
	struct cowmap *final;
	struct snaprec fv;
	struct timespec t0 = now();

	ck_assert_ptr_nonnull(st);
	stress_init(st, tf);
	st->steps = scaled(BASE_STEPS, 20);
	st->min_loads = scaled(BASE_MIN_LOADS, 100);
	ck_assert_int_eq(pthread_barrier_init(&st->readers_met, NULL,
					      NREADERS),
			 0);
	tf_register(tf);

	/* Generation 0. */
	memset(&o, 0, sizeof(o));
	o.value_free = sv_value_free;
	init = cowmap_new(&o);
	ck_assert_ptr_nonnull(init);
	t = cowmap_txn_begin(init);
	ck_assert_ptr_nonnull(t);
	for (int i = 0; i <= NGEN; i++) {
		const struct key *k = i < NGEN ? &st->k[i] : &st->gen;
		struct sval *v = sv_new(&st->pool, i < NGEN ? VK_K : VK_GEN,
					-1, (uint32_t)i, 0);

		ck_assert_int_eq(cowmap_txn_set(t, k->s, k->len, v), 0);
		atomic_store(&v->handed, 1);
	}
	cowmap_release(init);
	init = cowmap_txn_commit(t);
	ck_assert_ptr_nonnull(init);
	st->c = cowmap_cell_new(init, tf->flavor);
	ck_assert_ptr_nonnull(st->c);

	for (int r = 0; r < NREADERS; r++) {
		ra[r].st = st;
		ra[r].id = r;
		ck_assert_int_eq(pthread_create(&rth[r], NULL, reader_main,
						&ra[r]),
				 0);
	}
	for (int w = 0; w < NWRITERS; w++) {
		wa[w].st = st;
		wa[w].id = w;
		ck_assert_int_eq(pthread_create(&wth[w], NULL, writer_main,
						&wa[w]),
				 0);
	}
	tf_offline(tf);
	for (int w = 0; w < NWRITERS; w++)
		pthread_join(wth[w], NULL);
	for (int r = 0; r < NREADERS; r++)
		pthread_join(rth[r], NULL);
	tf_online(tf);

	ck_assert_msg(atomic_load(&st->errors) == 0, "%s: %ld errors; first: %s",
		      tf->name, atomic_load(&st->errors), st->err_msg);

	/* The final version: exactly every step of both writers. */
	final = cowmap_cell_snapshot(st->c);
	ck_assert_ptr_nonnull(final);
	ck_assert(check_version(st, final, &fv, "final"));
	ck_assert_msg(atomic_load(&st->errors) == 0, "%s", st->err_msg);
	ck_assert_int_eq(fv.gen, atomic_load(&st->bumps));
	ck_assert_int_eq(fv.gen, NWRITERS * st->steps);
	for (int w = 0; w < NWRITERS; w++)
		ck_assert_int_eq(fv.ctr[w], st->steps - 1);
	ck_assert(check_iteration(st, final, "final"));
	cowmap_release(final);

	for (int r = 0; r < NREADERS; r++) {
		ck_assert_int_eq(st->rd[r].nkeep, 0);
		ck_assert_int_ge(st->rd[r].loads, st->min_loads);
	}

	ck_assert_int_eq(cowmap_cell_barrier(st->c), 0);
	ck_assert_int_eq(cowmap_cell_stats(st->c, &cs), 0);
	ck_assert_uint_eq(cs.pending_bytes, 0);
	ck_assert_uint_eq(cs.pending_nodes, 0);
	ck_assert_uint_eq(cs.pending_versions, 0);
	ck_assert_uint_ge(cs.published, 1);
	ck_assert_uint_le(cs.published,
			  (uint64_t)atomic_load(&st->ops));
	check_value_accounting(&st->pool, fv.size, "before cell_free");

	cowmap_cell_free(st->c);
	check_value_accounting(&st->pool, 0, "after cell_free");

	if (tu_verbose())
		fprintf(stderr,
			"stress %-4s: %ld steps/writer, %ld bumps (%ld cas "
			"retries), %llu published of %ld ops, loads %ld/%ld, "
			"snapshots %ld/%ld (released by other thread %ld/%ld), "
			"gens seen %lld..%lld, %zu values, %.2f s\n",
			tf->name, st->steps, atomic_load(&st->bumps),
			atomic_load(&st->cas_retries),
			(unsigned long long)cs.published,
			atomic_load(&st->ops), st->rd[0].loads,
			st->rd[1].loads, st->rd[0].snaps, st->rd[1].snaps,
			st->rd[1].released_by_other,
			st->rd[0].released_by_other,
			(long long)st->rd[0].first_gen,
			(long long)st->rd[0].last_gen,
			atomic_load(&st->pool.used), secs_since(t0));

	tf_unregister(tf);
	pthread_barrier_destroy(&st->readers_met);
	pthread_mutex_destroy(&st->err_lock);
	pool_fini(&st->pool);
	free(st);
}
END_TEST

/* ---- concurrent cowmap_cell_set on one cell ---- */

#define HKEYS 64

struct hammer {
	const struct tf_flavor *tf;
	struct cowmap_cell *c;
	struct pool pool;
	long sets;			/* per thread */
	struct key keys[2][HKEYS], dkey[2];
	struct sval *last[2][HKEYS];
	atomic_long errors;
	char err_msg[256];
	atomic_long calls;
};

struct harg {
	struct hammer *h;
	int id;
};

static void *hammer_main(void *arg)
{
	struct harg *ha = arg;
	struct hammer *h = ha->h;
	const int t = ha->id;

	tf_register(h->tf);
	for (long i = 0; i < h->sets; i++) {
		int j = (int)(i % HKEYS);
		struct sval *v = sv_new(&h->pool, VK_HAM, t, (uint32_t)j, i);
		int r = cowmap_cell_set(h->c, h->keys[t][j].s,
					h->keys[t][j].len, v);

		atomic_fetch_add(&h->calls, 1);
		if (r != 0) {
			if (atomic_fetch_add(&h->errors, 1) == 0)
				snprintf(h->err_msg, sizeof(h->err_msg),
					 "thread %d set %ld: %d", t, i, r);
			break;
		}
		atomic_store(&v->handed, 1);
		h->last[t][j] = v;

		/* Every 8th: a set/del pair on a private key, whose results
		 * must not be confused with the other thread's. */
		if ((i & 7) == 7) {
			struct sval *d = sv_new(&h->pool, VK_DEL, t, 0, i);

			r = cowmap_cell_set(h->c, h->dkey[t].s, h->dkey[t].len,
					    d);
			if (r == 0) {
				atomic_store(&d->handed, 1);
				r = cowmap_cell_del(h->c, h->dkey[t].s,
						    h->dkey[t].len);
				r = r == 1 ? 0 : (r == 0 ? -ENOENT : r);
			}
			atomic_fetch_add(&h->calls, 2);
			if (r != 0) {
				if (atomic_fetch_add(&h->errors, 1) == 0)
					snprintf(h->err_msg,
						 sizeof(h->err_msg),
						 "thread %d private set/del "
						 "at %ld: %d",
						 t, i, r);
				break;
			}
		}
		tf_quiescent(h->tf);
	}
	tf_unregister(h->tf);
	return NULL;
}

START_TEST(concurrent_cell_set_loses_nothing)
{
	const struct tf_flavor *tf = &tf_flavors[_i];
	struct hammer *h = calloc(1, sizeof(*h));
	struct cowmap_options o;
	struct cowmap_cell_stats s0, s1;
	struct harg ha[2];
	pthread_t th[2];
	struct cowmap *fin;
	struct timespec t0 = now();

	ck_assert_ptr_nonnull(h);
	h->tf = tf;
	pool_init(&h->pool);
	h->sets = scaled(BASE_HAMMER_SETS, 2 * HKEYS);
	for (int t = 0; t < 2; t++) {
		for (int j = 0; j < HKEYS; j++)
			mkkey(&h->keys[t][j], "h", t, j);
		mkkey(&h->dkey[t], "d", t, -1);
	}
	tf_register(tf);
	memset(&o, 0, sizeof(o));
	o.value_free = sv_value_free;
	h->c = cowmap_cell_new(cowmap_new(&o), tf->flavor);
	ck_assert_ptr_nonnull(h->c);
	ck_assert_int_eq(cowmap_cell_stats(h->c, &s0), 0);

	for (int t = 0; t < 2; t++) {
		ha[t].h = h;
		ha[t].id = t;
		ck_assert_int_eq(pthread_create(&th[t], NULL, hammer_main,
						&ha[t]),
				 0);
	}
	tf_offline(tf);
	for (int t = 0; t < 2; t++)
		pthread_join(th[t], NULL);
	tf_online(tf);
	ck_assert_msg(atomic_load(&h->errors) == 0, "%s: %s", tf->name,
		      h->err_msg);

	fin = cowmap_cell_snapshot(h->c);
	ck_assert_ptr_nonnull(fin);
	ck_assert_uint_eq(cowmap_size(fin), 2 * HKEYS);
	for (int t = 0; t < 2; t++) {
		void *v;

		for (int j = 0; j < HKEYS; j++) {
			ck_assert_int_eq(cowmap_get(fin, h->keys[t][j].s,
						    h->keys[t][j].len, &v),
					 1);
			ck_assert_msg(v == h->last[t][j],
				      "%s: %s holds set #%lld, last was #%lld",
				      tf->name, h->keys[t][j].s,
				      (long long)((struct sval *)v)->seq,
				      (long long)h->last[t][j]->seq);
		}
		ck_assert_int_eq(cowmap_get(fin, h->dkey[t].s, h->dkey[t].len,
					    NULL),
				 0);
	}
	cowmap_release(fin);

	ck_assert_int_eq(cowmap_cell_stats(h->c, &s1), 0);
	ck_assert_uint_ge(s1.published - s0.published, 1);
	ck_assert_uint_le(s1.published - s0.published,
			  (uint64_t)atomic_load(&h->calls));

	ck_assert_int_eq(cowmap_cell_barrier(h->c), 0);
	check_value_accounting(&h->pool, 2 * HKEYS, "before cell_free");
	ck_assert_int_eq(cowmap_cell_stats(h->c, &s1), 0);
	ck_assert_uint_eq(s1.pending_bytes, 0);
	ck_assert_uint_eq(s1.pending_versions, 0);
	cowmap_cell_free(h->c);
	check_value_accounting(&h->pool, 0, "after cell_free");

	if (tu_verbose())
		fprintf(stderr,
			"hammer %-4s: %ld calls, %llu publishes (%.2f calls "
			"per publish), %.2f s\n",
			tf->name, atomic_load(&h->calls),
			(unsigned long long)(s1.published - s0.published),
			(double)atomic_load(&h->calls) /
				(double)(s1.published - s0.published),
			secs_since(t0));
	tf_unregister(tf);
	pool_fini(&h->pool);
	free(h);
}
END_TEST

Suite *stress_suite(void)
{
	Suite *s = suite_create("stress");
	TCase *tc;

	tc = tcase_create("readers_writers");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, readers_never_see_torn_versions, 0, TF_COUNT);
	suite_add_tcase(s, tc);

	tc = tcase_create("concurrent_set");
	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, concurrent_cell_set_loses_nothing, 0,
			    TF_COUNT);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(stress_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
