/*
 * check_etcd.c - the etcd mirror against real etcd members.
 *
 * The suite starts its own etcd (tests/etcd_cluster.c): one member shared
 * by the ordinary tests, each on its own key prefix, and clusters of their
 * own for the tests that kill members (one member, three members).  Every
 * member runs on free loopback ports with its data in a temporary
 * directory and dies with the process that started it.  Without an etcd
 * binary the whole program is skipped (exit status 77), saying why.
 *
 * The consistency invariant of the transaction tests: transaction i
 * writes prefix+"n" = i and, for each of NKEYS keys k_j, deletes it when
 * (i + j) % 5 == 0 and puts i otherwise.  A version that mixed two
 * transactions would break it, and the version's revision must be the
 * mod_revision of "n" (the last transaction it holds).  It is checked on
 * every version published (on_publish) and on every version reader
 * threads load.
 *
 * COWMAP_ETCD_TXNS sets the number of transactions of the consistency
 * test (default 2000).
 */
#include <urcu/urcu-memb.h>

#include <check.h>
#include <cowmap-etcd.h>

#include "etcd_cluster.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NKEYS 16

static struct etcd_cluster shared;	/* one member, started by main() */
/* Every cluster's directory lives in here: main() removes it at the end,
 * also what a failed test (a forked child that exits at once) left. */
static char base_dir[512];

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* The invariant                                                       */
/* ------------------------------------------------------------------ */

/*
 * Does @v hold exactly one whole transaction of the pattern under
 * @prefix?  Writes the reason into @why (256 bytes) when not.
 */
static bool invariant_holds(const struct cowmap *v, const char *prefix,
			    char *why)
{
	char key[128];
	struct cowmap_etcd_version_info info;

	if (cowmap_etcd_version_info(v, &info) < 0) {
		snprintf(why, 256, "version without a stamp");
		return false;
	}
	snprintf(key, sizeof(key), "%sn", prefix);

	const struct cowmap_etcd_value *n = cowmap_etcd_get(v, key, strlen(key));

	if (n == NULL) {
		if (info.keys != 0)
			snprintf(why, 256, "no counter but %zu keys", info.keys);
		return info.keys == 0;
	}
	long i = strtol(n->data, NULL, 10);

	if (n->mod_revision != info.revision) {
		snprintf(why, 256, "revision %" PRId64 " but the counter was "
			 "written at %" PRId64, info.revision, n->mod_revision);
		return false;
	}
	size_t present = 1;

	for (int j = 0; j < NKEYS; j++) {
		snprintf(key, sizeof(key), "%sk%02d", prefix, j);

		const struct cowmap_etcd_value *k =
			cowmap_etcd_get(v, key, strlen(key));
		bool expect = (i + j) % 5 != 0;

		if ((k != NULL) != expect) {
			snprintf(why, 256, "txn %ld: k%02d %s", i, j,
				 expect ? "missing" : "present");
			return false;
		}
		if (k && strtol(k->data, NULL, 10) != i) {
			snprintf(why, 256, "txn %ld: k%02d holds %s", i, j,
				 k->data);
			return false;
		}
		present += k != NULL;
	}
	if (present != info.keys) {
		snprintf(why, 256, "txn %ld: %zu keys, expected %zu", i,
			 info.keys, present);
		return false;
	}
	return true;
}

/* Transaction @i of the pattern; returns its revision or -1. */
static int64_t write_txn(const char *endpoints, const char *prefix, long i)
{
	char keys[NKEYS + 1][128], value[32];
	struct etcd_op ops[NKEYS + 1];

	snprintf(value, sizeof(value), "%ld", i);
	for (int j = 0; j < NKEYS; j++) {
		snprintf(keys[j], sizeof(keys[j]), "%sk%02d", prefix, j);
		ops[j] = (struct etcd_op){ .del = (i + j) % 5 == 0,
					   .key = keys[j], .value = value,
					   .len = strlen(value) };
	}
	snprintf(keys[NKEYS], sizeof(keys[NKEYS]), "%sn", prefix);
	ops[NKEYS] = (struct etcd_op){ .key = keys[NKEYS], .value = value,
				       .len = strlen(value) };
	return etcd_txn(endpoints, ops, NKEYS + 1);
}

/* ------------------------------------------------------------------ */
/* What the mirror published and said                                  */
/* ------------------------------------------------------------------ */

struct recorder {
	pthread_mutex_t lock;
	const char *prefix;	/* non-NULL: check the invariant */
	int64_t last;
	int64_t *revs;		/* every published revision, in order */
	unsigned *flags;
	size_t nrevs, cap;
	unsigned out_of_order, broken;
	char first_broken[256];
	size_t last_changes;	/* cowmap_diff() count of the last publish */
	unsigned events[COWMAP_ETCD_UNREACHABLE + 1];
	char messages[COWMAP_ETCD_UNREACHABLE + 1][COWMAP_ETCD_ERROR_MAX];
};

static int count_change(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	(void)what;
	(void)key;
	(void)old_value;
	(void)new_value;
	if (len > 0)	/* the stamp changes every time */
		++*(size_t *)ctx;
	return 0;
}

static void on_publish(const struct cowmap *prev, const struct cowmap *next,
		       const struct cowmap_etcd_version_info *info, void *ctx)
{
	struct recorder *r = ctx;
	char why[256];
	size_t changes = 0;

	cowmap_diff(prev, next, count_change, &changes);
	pthread_mutex_lock(&r->lock);
	if (info->revision <= r->last)
		r->out_of_order++;
	r->last = info->revision;
	if (r->nrevs == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 1024;
		r->revs = realloc(r->revs, r->cap * sizeof(*r->revs));
		r->flags = realloc(r->flags, r->cap * sizeof(*r->flags));
	}
	r->revs[r->nrevs] = info->revision;
	r->flags[r->nrevs++] = info->flags;
	r->last_changes = changes;
	if (r->prefix && !invariant_holds(next, r->prefix, why) &&
	    r->broken++ == 0)
		snprintf(r->first_broken, sizeof(r->first_broken),
			 "revision %" PRId64 ": %.200s", info->revision, why);
	pthread_mutex_unlock(&r->lock);
}

static void on_event(enum cowmap_etcd_event what, int64_t revision,
		     const char *message, void *ctx)
{
	struct recorder *r = ctx;

	(void)revision;
	pthread_mutex_lock(&r->lock);
	r->events[what]++;
	snprintf(r->messages[what], sizeof(r->messages[what]), "%s", message);
	pthread_mutex_unlock(&r->lock);
	if (getenv("COWMAP_ETCD_VERBOSE"))
		fprintf(stderr, "event %d: %s\n", what, message);
}

static void recorder_init(struct recorder *r, const char *prefix)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->lock, NULL);
	r->prefix = prefix;
}

static bool recorder_has(struct recorder *r, int64_t rev, unsigned *flags)
{
	bool found = false;

	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->nrevs && !found; i++)
		if (r->revs[i] == rev) {
			found = true;
			if (flags)
				*flags = r->flags[i];
		}
	pthread_mutex_unlock(&r->lock);
	return found;
}

static unsigned recorder_events(struct recorder *r, enum cowmap_etcd_event e)
{
	pthread_mutex_lock(&r->lock);
	unsigned n = r->events[e];
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* Events are told after the version they concern is published: wait. */
static unsigned wait_events(struct recorder *r, enum cowmap_etcd_event e,
			    unsigned at_least)
{
	unsigned n;

	for (int i = 0; (n = recorder_events(r, e)) < at_least && i < 500; i++)
		usleep(10 * 1000);
	return n;
}

static void recorder_free(struct recorder *r)
{
	free(r->revs);
	free(r->flags);
}

static struct cowmap_etcd *start(const char *endpoints, const char *prefix,
				 struct recorder *r, unsigned flags)
{
	struct cowmap_etcd_options o = {
		.endpoints = endpoints, .prefix = prefix, .flags = flags,
		.start_timeout_ms = 5000, .request_timeout_ms = 2000,
		.probe_interval_ms = 300, .retry_max_ms = 400,
		.on_publish = on_publish, .on_event = on_event, .ctx = r,
	};
	char err[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd *m = cowmap_etcd_start(&o, err);

	ck_assert_msg(m != NULL, "cowmap_etcd_start: %s", err);
	return m;
}

/* The mirror's current version equals a fresh range read of @prefix. */
static void assert_mirror_equals_store(struct cowmap_etcd *m,
				       const char *endpoints,
				       const char *prefix)
{
	struct etcd_kv *kvs;
	size_t n;
	int64_t rev = etcd_range(endpoints, prefix, &kvs, &n);

	ck_assert_msg(rev > 0, "range read of %s failed", prefix);
	ck_assert_int_eq(cowmap_etcd_wait(m, rev, 20000), 0);

	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(m));
	struct cowmap_etcd_version_info info;

	ck_assert_int_eq(cowmap_etcd_version_info(v, &info), 0);
	/* The mirror's revision is the last one that touched the prefix:
	 * at most the store's, at least every key's mod_revision. */
	ck_assert_int_le(info.revision, rev);
	ck_assert_uint_eq(info.keys, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_ge(info.revision, kvs[i].mod_revision);
	for (size_t i = 0; i < n; i++) {
		const struct cowmap_etcd_value *val =
			cowmap_etcd_get(v, kvs[i].key, kvs[i].klen);

		ck_assert_msg(val != NULL, "key %s missing from the mirror",
			      kvs[i].key);
		ck_assert_uint_eq(val->len, kvs[i].vlen);
		ck_assert_msg(memcmp(val->data, kvs[i].value, val->len) == 0,
			      "key %s: value differs", kvs[i].key);
		ck_assert_int_eq(val->mod_revision, kvs[i].mod_revision);
	}
	cowmap_release(v);
	etcd_kvs_free(kvs, n);
}

/* ------------------------------------------------------------------ */
/* Ordinary tests, on the shared member                                */
/* ------------------------------------------------------------------ */

START_TEST(initial_range_is_one_version_with_its_revision)
{
	const char *ep = shared.endpoints;
	struct recorder r;

	recorder_init(&r, NULL);
	ck_assert_int_gt(etcd_put(ep, "/initial/a", "1"), 0);
	ck_assert_int_gt(etcd_put(ep, "/initial/b", "two"), 0);
	ck_assert_int_gt(etcd_put(ep, "/initial0", "outside"), 0);
	int64_t rev = etcd_put(ep, "/initial/c", "");

	ck_assert_int_gt(rev, 0);

	struct cowmap_etcd *m = start(ep, "/initial/", &r, 0);
	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(m));
	struct cowmap_etcd_version_info info;

	ck_assert_int_eq(cowmap_etcd_version_info(v, &info), 0);
	ck_assert_int_eq(info.revision, rev);
	ck_assert_uint_eq(info.flags, COWMAP_ETCD_VERSION_INITIAL);
	ck_assert_uint_eq(info.keys, 3);
	ck_assert_int_eq(cowmap_etcd_revision(v), rev);
	ck_assert_str_eq(cowmap_etcd_get(v, "/initial/b", 10)->data, "two");
	ck_assert_uint_eq(cowmap_etcd_get(v, "/initial/c", 10)->len, 0);
	ck_assert_int_eq(cowmap_etcd_get(v, "/initial/c", 10)->mod_revision, rev);
	ck_assert_ptr_null(cowmap_etcd_get(v, "/initial0", 9));
	ck_assert_ptr_null(cowmap_etcd_get(v, "", 0));
	cowmap_release(v);
	ck_assert_uint_eq(r.nrevs, 1);

	cowmap_etcd_free(m);
	recorder_free(&r);
}
END_TEST

/* Pages of 4 keys, all read at the first page's revision, make one
 * version. */
START_TEST(paged_read_is_one_version_at_one_revision)
{
	const char *ep = shared.endpoints;
	struct recorder r;
	struct etcd_op ops[25];
	char keys[25][32];
	int64_t rev;

	recorder_init(&r, NULL);
	for (int i = 0; i < 25; i++) {
		snprintf(keys[i], sizeof(keys[i]), "/paged/%02d", i);
		ops[i] = (struct etcd_op){ .key = keys[i], .value = keys[i],
					   .len = strlen(keys[i]) };
	}
	rev = etcd_txn(ep, ops, 25);
	ck_assert_int_gt(rev, 0);

	struct cowmap_etcd_options o = {
		.endpoints = ep, .prefix = "/paged/", .range_page = 4,
		.on_publish = on_publish, .on_event = on_event, .ctx = &r,
	};
	char err[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd *m = cowmap_etcd_start(&o, err);

	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_uint_eq(r.nrevs, 1);
	assert_mirror_equals_store(m, ep, "/paged/");

	/* The whole keyspace (prefix ""), paged too, holds them as well. */
	struct recorder all;

	recorder_init(&all, NULL);
	o.prefix = "";
	o.ctx = &all;
	struct cowmap_etcd *whole = cowmap_etcd_start(&o, err);

	ck_assert_msg(whole != NULL, "%s", err);

	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(whole));
	struct cowmap_etcd_version_info info;

	cowmap_etcd_version_info(v, &info);
	ck_assert_uint_gt(info.keys, 25);
	for (int i = 0; i < 25; i++)
		ck_assert_str_eq(cowmap_etcd_get(v, keys[i], strlen(keys[i]))->data,
				 keys[i]);
	cowmap_release(v);
	cowmap_etcd_free(whole);
	cowmap_etcd_free(m);
	recorder_free(&r);
	recorder_free(&all);
}
END_TEST

START_TEST(each_etcd_transaction_is_one_version)
{
	const char *ep = shared.endpoints;
	struct recorder r;

	recorder_init(&r, NULL);
	etcd_put(ep, "/txn/gone", "x");
	etcd_put(ep, "/txn/kept", "same");

	struct cowmap_etcd *m = start(ep, "/txn/", &r, 0);
	size_t before = r.nrevs;
	struct etcd_op ops[] = {
		{ .key = "/txn/a", .value = "A", .len = 1 },
		{ .key = "/txn/b", .value = "B\0b", .len = 3 },
		{ .del = true, .key = "/txn/gone" },
		{ .key = "/other/x", .value = "not mirrored", .len = 12 },
	};
	int64_t rev = etcd_txn(ep, ops, 4);

	ck_assert_int_gt(rev, 0);
	ck_assert_int_eq(cowmap_etcd_wait(m, rev, 10000), 0);

	pthread_mutex_lock(&r.lock);
	ck_assert_uint_eq(r.nrevs, before + 1);	/* one version, not three */
	ck_assert_int_eq(r.revs[r.nrevs - 1], rev);
	ck_assert_uint_eq(r.flags[r.nrevs - 1], 0);
	ck_assert_uint_eq(r.last_changes, 3);
	pthread_mutex_unlock(&r.lock);

	urcu_memb_read_lock();
	const struct cowmap *v = cowmap_cell_load(cowmap_etcd_cell(m));
	const struct cowmap_etcd_value *b = cowmap_etcd_get(v, "/txn/b", 6);

	ck_assert_int_eq(cowmap_etcd_revision(v), rev);
	ck_assert_ptr_nonnull(b);
	ck_assert_uint_eq(b->len, 3);
	ck_assert_int_eq(memcmp(b->data, "B\0b", 4), 0);
	ck_assert_int_eq(b->mod_revision, rev);
	ck_assert_int_eq(b->create_revision, rev);
	ck_assert_ptr_null(cowmap_etcd_get(v, "/txn/gone", 9));
	ck_assert_str_eq(cowmap_etcd_get(v, "/txn/kept", 9)->data, "same");
	urcu_memb_read_unlock();

	struct cowmap_etcd_stats st;

	ck_assert_int_eq(cowmap_etcd_stats(m, &st), 0);
	ck_assert_int_eq(st.applied_revision, rev);
	ck_assert_int_ge(st.store_revision, rev);
	ck_assert_uint_eq(st.revisions, 1);
	ck_assert_uint_eq(st.events, 3);
	ck_assert_int_eq(st.connected, 1);
	ck_assert_int_ge(st.ms_since_contact, 0);

	cowmap_etcd_free(m);
	recorder_free(&r);
}
END_TEST

/* Reader threads: every version they load satisfies the invariant and
 * revisions never go backwards. */
struct readers {
	const char *prefix;
	struct cowmap_cell *cell;
	atomic_bool stop;
	atomic_uint broken, backwards;
	atomic_ulong loads;
	char first_broken[256];
};

static void *reader_main(void *arg)
{
	struct readers *rd = arg;
	int64_t last = 0;
	char why[256];

	urcu_memb_register_thread();
	while (!atomic_load(&rd->stop)) {
		urcu_memb_read_lock();
		const struct cowmap *v = cowmap_cell_load(rd->cell);
		int64_t rev = cowmap_etcd_revision(v);

		if (rev < last)
			atomic_fetch_add(&rd->backwards, 1);
		last = rev;
		if (!invariant_holds(v, rd->prefix, why) &&
		    atomic_fetch_add(&rd->broken, 1) == 0)
			snprintf(rd->first_broken, sizeof(rd->first_broken),
				 "%s", why);
		urcu_memb_read_unlock();
		atomic_fetch_add_explicit(&rd->loads, 1, memory_order_relaxed);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static long txn_count(void)
{
	const char *env = getenv("COWMAP_ETCD_TXNS");
	long n = env ? strtol(env, NULL, 10) : 0;

	return n > 0 ? n : 2000;
}

START_TEST(readers_never_see_half_a_transaction)
{
	const char *ep = shared.endpoints, *prefix = "/consistency/";
	struct recorder r;
	struct readers rd = { .prefix = prefix };
	pthread_t th[2];
	long n = txn_count();
	int64_t last = 0;

	recorder_init(&r, prefix);
	struct cowmap_etcd *m = start(ep, prefix, &r, 0);

	rd.cell = cowmap_etcd_cell(m);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader_main, &rd), 0);

	int64_t t0 = now_ms();

	for (long i = 1; i <= n; i++) {
		last = write_txn(ep, prefix, i);
		ck_assert_msg(last > 0, "transaction %ld failed", i);
	}
	int64_t t1 = now_ms();

	ck_assert_int_eq(cowmap_etcd_wait(m, last, 20000), 0);
	atomic_store(&rd.stop, true);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);

	printf("consistency: %ld transactions of %d keys in %" PRId64 " ms; "
	       "readers loaded %lu versions\n", n, NKEYS + 1, t1 - t0,
	       (unsigned long)atomic_load(&rd.loads));
	ck_assert_msg(r.broken == 0, "a published version broke the invariant: %s",
		      r.first_broken);
	ck_assert_msg(atomic_load(&rd.broken) == 0,
		      "a reader saw a broken version: %s", rd.first_broken);
	ck_assert_uint_eq(atomic_load(&rd.backwards), 0);
	ck_assert_uint_eq(r.out_of_order, 0);
	/* The initial version, then one version per transaction. */
	ck_assert_uint_eq(r.nrevs, (size_t)n + 1);
	assert_mirror_equals_store(m, ep, prefix);

	cowmap_etcd_free(m);
	recorder_free(&r);
}
END_TEST

START_TEST(oversized_value_is_refused_and_last_version_kept)
{
	const char *ep = shared.endpoints;
	struct recorder r;
	struct cowmap_etcd_options o = {
		.endpoints = ep, .prefix = "/big/", .max_value_bytes = 1024,
		.retry_max_ms = 200, .on_publish = on_publish,
		.on_event = on_event, .ctx = &r,
	};
	char err[COWMAP_ETCD_ERROR_MAX], big[2001];

	recorder_init(&r, NULL);
	memset(big, 'x', 2000);
	big[2000] = '\0';
	int64_t good = etcd_put(ep, "/big/a", "small");
	struct cowmap_etcd *m = cowmap_etcd_start(&o, err);

	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_int_gt(etcd_put(ep, "/big/b", big), 0);
	ck_assert_uint_ge(wait_events(&r, COWMAP_ETCD_REFUSED, 1), 1);
	ck_assert_msg(strstr(r.messages[COWMAP_ETCD_REFUSED],
			     "value of 2000 bytes is larger than max_value_bytes (1024)") &&
		      strstr(r.messages[COWMAP_ETCD_REFUSED], "/big/b"),
		      "unclear message: %s", r.messages[COWMAP_ETCD_REFUSED]);

	/* Later writes do not get past the refused revision... */
	ck_assert_int_gt(etcd_put(ep, "/big/c", "later"), 0);
	usleep(300 * 1000);

	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(m));

	ck_assert_int_eq(cowmap_etcd_revision(v), good);
	ck_assert_ptr_nonnull(cowmap_etcd_get(v, "/big/a", 6));
	ck_assert_ptr_null(cowmap_etcd_get(v, "/big/b", 6));
	ck_assert_ptr_null(cowmap_etcd_get(v, "/big/c", 6));
	cowmap_release(v);

	struct cowmap_etcd_stats st;

	cowmap_etcd_stats(m, &st);
	ck_assert_uint_ge(st.refused, 1);
	ck_assert_int_eq(st.applied_revision, good);
	ck_assert_msg(strstr(st.last_error, "max_value_bytes") != NULL,
		      "last_error: %s", st.last_error);

	/* ...until the store holds acceptable data again: one whole re-read. */
	int64_t fixed = etcd_put(ep, "/big/b", "fits now");

	ck_assert_int_eq(cowmap_etcd_wait(m, fixed, 10000), 0);
	v = cowmap_cell_snapshot(cowmap_etcd_cell(m));

	struct cowmap_etcd_version_info info;

	cowmap_etcd_version_info(v, &info);
	ck_assert_uint_eq(info.flags, COWMAP_ETCD_VERSION_RESYNC);
	ck_assert_str_eq(cowmap_etcd_get(v, "/big/b", 6)->data, "fits now");
	ck_assert_str_eq(cowmap_etcd_get(v, "/big/c", 6)->data, "later");
	cowmap_release(v);
	ck_assert_uint_ge(wait_events(&r, COWMAP_ETCD_RESYNCED, 1), 1);
	assert_mirror_equals_store(m, ep, "/big/");

	cowmap_etcd_free(m);
	recorder_free(&r);
}
END_TEST

START_TEST(refused_data_at_start_is_a_clear_error)
{
	const char *ep = shared.endpoints;
	char big[2001], err[COWMAP_ETCD_ERROR_MAX];
	struct recorder r;
	struct cowmap_etcd_options o = {
		.endpoints = ep, .prefix = "/bigstart/", .max_value_bytes = 1024,
		.on_event = on_event, .ctx = &r,
	};

	recorder_init(&r, NULL);
	memset(big, 'y', 2000);
	big[2000] = '\0';
	ck_assert_int_gt(etcd_put(ep, "/bigstart/k", big), 0);

	int64_t t0 = now_ms();

	errno = 0;
	ck_assert_ptr_null(cowmap_etcd_start(&o, err));
	ck_assert_int_eq(errno, EPROTO);
	ck_assert_msg(strstr(err, "/bigstart/k") && strstr(err, "max_value_bytes"),
		      "unclear message: %s", err);
	ck_assert_int_lt(now_ms() - t0, 3000);	/* no waiting for the timeout */
	recorder_free(&r);
}
END_TEST

START_TEST(unreachable_at_start_is_a_clear_error)
{
	char ep[64], err[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd_options o = { .endpoints = ep, .prefix = "/x/",
					 .start_timeout_ms = 300,
					 .on_event = on_event };
	struct recorder r;

	recorder_init(&r, NULL);
	o.ctx = &r;
	snprintf(ep, sizeof(ep), "127.0.0.1:%d", etcd_free_port());

	int64_t t0 = now_ms();

	errno = 0;
	ck_assert_ptr_null(cowmap_etcd_start(&o, err));
	ck_assert_int_eq(errno, ECONNREFUSED);
	ck_assert_msg(strstr(err, "etcd unreachable") && strstr(err, ep),
		      "unclear message: %s", err);
	ck_assert_int_lt(now_ms() - t0, 3000);

	o.endpoints = "";
	errno = 0;
	ck_assert_ptr_null(cowmap_etcd_start(&o, err));
	ck_assert_int_eq(errno, EINVAL);
	recorder_free(&r);
}
END_TEST

/* ------------------------------------------------------------------ */
/* A fake gateway that sends what etcd never would                     */
/* ------------------------------------------------------------------ */

struct fake {
	int fd, port;
	const char *watch_lines;	/* what the watch stream carries */
	atomic_bool stop;
	pthread_t thread;
};

static void fake_answer(int c, const char *status, const char *body)
{
	char head[256];

	snprintf(head, sizeof(head),
		 "HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n", status,
		 strlen(body));
	if (write(c, head, strlen(head)) < 0 || write(c, body, strlen(body)) < 0)
		return;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!atomic_load(&f->stop)) {
		int c = accept(f->fd, NULL, NULL);
		char req[8192];
		ssize_t len = 0, got;

		if (c < 0)
			continue;
		/* The request line and headers are enough to route it. */
		while (len < (ssize_t)sizeof(req) - 1 &&
		       (got = read(c, req + len, sizeof(req) - 1 - (size_t)len)) > 0) {
			len += got;
			req[len] = '\0';
			if (strstr(req, "\r\n\r\n"))
				break;
		}
		req[len > 0 ? len : 0] = '\0';
		if (strstr(req, "POST /v3/kv/range")) {
			/* /fake/a = "1" at revision 5. */
			fake_answer(c, "200 OK",
				    "{\"header\":{\"revision\":\"5\"},\"kvs\":[{"
				    "\"key\":\"L2Zha2UvYQ==\",\"create_revision\":\"5\","
				    "\"mod_revision\":\"5\",\"version\":\"1\","
				    "\"value\":\"MQ==\"}],\"count\":\"1\"}");
		} else if (strstr(req, "POST /v3/watch")) {
			const char *head = "HTTP/1.1 200 OK\r\n"
					   "Content-Type: application/json\r\n"
					   "Connection: close\r\n\r\n";

			if (write(c, head, strlen(head)) >= 0 &&
			    write(c, f->watch_lines, strlen(f->watch_lines)) >= 0)
				while (!atomic_load(&f->stop))
					usleep(20 * 1000);
		} else {
			fake_answer(c, "404 Not Found", "{\"error\":\"no\"}");
		}
		close(c);
	}
	return NULL;
}

static void fake_start(struct fake *f, const char *watch_lines)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };

	f->watch_lines = watch_lines;
	atomic_init(&f->stop, false);
	f->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(f->fd, 0);
	ck_assert_int_eq(bind(f->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(f->fd, 16), 0);
	getsockname(f->fd, (struct sockaddr *)&a, &alen);
	f->port = ntohs(a.sin_port);
	setsockopt(f->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ck_assert_int_eq(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, true);
	pthread_join(f->thread, NULL);
	close(f->fd);
}

static void malformed_case(const char *watch_lines, const char *expected)
{
	struct fake f;
	struct recorder r;
	char ep[64];

	recorder_init(&r, NULL);
	fake_start(&f, watch_lines);
	snprintf(ep, sizeof(ep), "127.0.0.1:%d", f.port);

	struct cowmap_etcd_options o = {
		.endpoints = ep, .prefix = "/fake/", .retry_max_ms = 100,
		.on_publish = on_publish, .on_event = on_event, .ctx = &r,
	};
	char err[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd *m = cowmap_etcd_start(&o, err);

	ck_assert_msg(m != NULL, "%s", err);
	ck_assert_uint_ge(wait_events(&r, COWMAP_ETCD_REFUSED, 1), 1);
	ck_assert_msg(strstr(r.messages[COWMAP_ETCD_REFUSED], expected),
		      "message \"%s\" does not say \"%s\"",
		      r.messages[COWMAP_ETCD_REFUSED], expected);

	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(m));

	ck_assert_int_eq(cowmap_etcd_revision(v), 5);
	ck_assert_str_eq(cowmap_etcd_get(v, "/fake/a", 7)->data, "1");
	ck_assert_ptr_null(cowmap_etcd_get(v, "/fake/b", 7));
	cowmap_release(v);
	ck_assert_uint_eq(r.nrevs, 1);	/* nothing but the initial read */

	cowmap_etcd_free(m);
	fake_stop(&f);
	recorder_free(&r);
}

/* Revision 6 puts /fake/b (fine) and /fake/a with a value that is not
 * base64: the whole revision is refused, /fake/b included. */
START_TEST(malformed_event_is_refused_and_last_version_kept)
{
	malformed_case(
		"{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
		"{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":["
		"{\"kv\":{\"key\":\"L2Zha2UvYg==\",\"mod_revision\":\"6\","
		"\"create_revision\":\"6\",\"version\":\"1\",\"value\":\"MQ==\"}},"
		"{\"kv\":{\"key\":\"L2Zha2UvYQ==\",\"mod_revision\":\"6\","
		"\"create_revision\":\"5\",\"version\":\"2\",\"value\":\"!!not base64\"}}"
		"]}}\n",
		"value is not base64");
}
END_TEST

START_TEST(malformed_watch_message_is_refused)
{
	malformed_case(
		"{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
		"{\"result\": {\"events\": [ truncated\n",
		"malformed watch message");
}
END_TEST

START_TEST(event_outside_the_prefix_is_refused)
{
	malformed_case(
		"{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
		"{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":["
		"{\"kv\":{\"key\":\"L290aGVy\",\"mod_revision\":\"6\","
		"\"create_revision\":\"6\",\"version\":\"1\",\"value\":\"MQ==\"}}"
		"]}}\n",
		"outside the prefix");
}
END_TEST

/* ------------------------------------------------------------------ */
/* Faults, on clusters of their own                                    */
/* ------------------------------------------------------------------ */

/* A writer of pattern transactions that retries through failures. */
struct writer {
	const char *endpoints, *prefix;
	long n;
	atomic_long done;
	int64_t *acked;		/* acked[i - 1]: revision of transaction i */
	atomic_bool failed;
	pthread_t thread;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;

	for (long i = 1; i <= w->n; i++) {
		int64_t rev;
		int64_t deadline = now_ms() + 30000;

		/* A transaction whose answer was lost may be applied twice:
		 * the second is a later revision with the same values. */
		while ((rev = write_txn(w->endpoints, w->prefix, i)) < 0) {
			if (now_ms() > deadline) {
				atomic_store(&w->failed, true);
				return NULL;
			}
			usleep(50 * 1000);
		}
		w->acked[i - 1] = rev;
		atomic_store(&w->done, i);
	}
	return NULL;
}

static void writer_start(struct writer *w, const char *endpoints,
			 const char *prefix, long n)
{
	*w = (struct writer){ .endpoints = endpoints, .prefix = prefix, .n = n };
	w->acked = calloc((size_t)n, sizeof(int64_t));
	ck_assert_int_eq(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static void writer_wait_done(struct writer *w, long count)
{
	int64_t deadline = now_ms() + 60000;

	while (atomic_load(&w->done) < count && !atomic_load(&w->failed) &&
	       now_ms() < deadline)
		usleep(5 * 1000);
	ck_assert_msg(!atomic_load(&w->failed), "the writer gave up");
}

/*
 * The writer's run came through whole: every acknowledged transaction was
 * published as its own version, from its own events (no re-read), and the
 * mirror ends equal to the store.
 */
static void assert_writer_run_mirrored(struct cowmap_etcd *m,
				       struct recorder *r, struct writer *w,
				       const char *endpoints)
{
	int64_t last = 0;
	struct cowmap_etcd_stats st;

	pthread_join(w->thread, NULL);
	ck_assert(!atomic_load(&w->failed));
	for (long i = 0; i < w->n; i++)
		last = w->acked[i] > last ? w->acked[i] : last;
	ck_assert_int_eq(cowmap_etcd_wait(m, last, 20000), 0);
	ck_assert_msg(r->broken == 0, "a version broke the invariant: %s",
		      r->first_broken);
	ck_assert_uint_eq(r->out_of_order, 0);
	for (long i = 0; i < w->n; i++) {
		unsigned flags = 0;

		ck_assert_msg(recorder_has(r, w->acked[i], &flags),
			      "revision %" PRId64 " (transaction %ld) was not "
			      "published", w->acked[i], i + 1);
		ck_assert_msg(flags == 0, "revision %" PRId64 " came from a "
			      "re-read, not from its own events", w->acked[i]);
	}
	free(w->acked);
	assert_mirror_equals_store(m, endpoints, w->prefix);
	cowmap_etcd_stats(m, &st);
	ck_assert_uint_eq(st.resyncs, 0);
}

/* A fault test's own cluster of @members, and what its mirror of
 * @prefix publishes. */
struct rig {
	struct etcd_cluster c;
	struct recorder r;
	const char *prefix;
};

static void rig_start(struct rig *x, int members, const char *prefix)
{
	ck_assert_int_eq(etcd_cluster_start(&x->c, members, base_dir), 0);
	recorder_init(&x->r, prefix);
	x->prefix = prefix;
}

static void rig_stop(struct rig *x, struct cowmap_etcd *m)
{
	cowmap_etcd_free(m);
	etcd_cluster_stop(&x->c);
	recorder_free(&x->r);
}

START_TEST(killed_member_restarted_mirror_misses_no_revision)
{
	struct rig x;
	struct writer w;

	rig_start(&x, 1, "/kill/");

	struct cowmap_etcd *m = start(x.c.endpoints, x.prefix, &x.r, 0);

	writer_start(&w, x.c.endpoints, x.prefix, 600);
	writer_wait_done(&w, 200);
	etcd_member_signal(&x.c, 0, SIGKILL);	/* in the middle of the run */
	usleep(300 * 1000);
	ck_assert_int_eq(etcd_member_restart(&x.c, 0), 0);
	ck_assert_int_eq(etcd_member_wait_ready(&x.c, 0, 20000), 0);
	assert_writer_run_mirrored(m, &x.r, &w, x.c.endpoints);

	struct cowmap_etcd_stats st;

	cowmap_etcd_stats(m, &st);
	ck_assert_uint_ge(st.reconnects, 1);
	ck_assert_uint_ge(wait_events(&x.r, COWMAP_ETCD_DISCONNECTED, 1), 1);
	rig_stop(&x, m);
}
END_TEST

/* The member the mirror watches, once it watches one other than @from
 * (-1: any); -1 if it does not within 15 s. */
static int watched_member(struct cowmap_etcd *m, int from)
{
	struct cowmap_etcd_stats st;

	for (int i = 0; i < 300; i++) {
		cowmap_etcd_stats(m, &st);
		if (st.connected && (int)st.endpoint != from)
			return (int)st.endpoint;
		usleep(50 * 1000);
	}
	return -1;
}

START_TEST(three_members_failover_misses_no_revision)
{
	struct rig x;
	struct writer w;

	rig_start(&x, 3, "/failover/");

	struct cowmap_etcd *m = start(x.c.endpoints, x.prefix, &x.r, 0);

	writer_start(&w, x.c.endpoints, x.prefix, 900);

	/* 1. The watched member dies and stays down. */
	writer_wait_done(&w, 200);
	int down = watched_member(m, -1);

	ck_assert_int_ge(down, 0);
	etcd_member_signal(&x.c, down, SIGKILL);
	ck_assert_int_ge(watched_member(m, down), 0);

	/* 2. The member it moved to hangs (SIGSTOP): its connection stays
	 * open and silent; the probe must notice. */
	writer_wait_done(&w, 400);
	int hung = watched_member(m, -1);

	ck_assert_int_ge(hung, 0);
	ck_assert_int_ne(hung, down);
	etcd_member_signal(&x.c, hung, SIGSTOP);
	ck_assert_msg(watched_member(m, hung) >= 0,
		      "the mirror stayed on a hung member");
	etcd_member_signal(&x.c, hung, SIGCONT);

	/* 3. The watched member dies and comes back. */
	writer_wait_done(&w, 600);
	int killed = watched_member(m, -1);

	ck_assert_int_ge(killed, 0);
	ck_assert_int_ne(killed, down);
	etcd_member_signal(&x.c, killed, SIGKILL);
	usleep(300 * 1000);
	ck_assert_int_eq(etcd_member_restart(&x.c, killed), 0);

	assert_writer_run_mirrored(m, &x.r, &w, x.c.endpoints);

	struct cowmap_etcd_stats st;

	cowmap_etcd_stats(m, &st);
	ck_assert_uint_ge(st.reconnects, 3);
	ck_assert_int_ne((int)st.endpoint, down);
	rig_stop(&x, m);
}
END_TEST

START_TEST(compaction_during_disconnect_forces_a_whole_reread)
{
	struct rig x;
	const char *prefix = "/compact/";
	char others[256];

	rig_start(&x, 3, prefix);
	snprintf(others, sizeof(others), "%s,%s", x.c.m[1].url, x.c.m[2].url);

	/* The mirror knows member 0 only. */
	struct cowmap_etcd *m = start(x.c.m[0].url, prefix, &x.r, 0);
	int64_t rev = 0;

	for (long i = 1; i <= 5; i++)
		rev = write_txn(x.c.endpoints, prefix, i);
	ck_assert_int_eq(cowmap_etcd_wait(m, rev, 10000), 0);

	etcd_member_signal(&x.c, 0, SIGKILL);
	for (long i = 6; i <= 30; i++)
		ck_assert_int_gt(rev = write_txn(others, prefix, i), 0);
	ck_assert_int_eq(etcd_compact(others, rev), 0);
	ck_assert_int_eq(etcd_member_restart(&x.c, 0), 0);

	ck_assert_int_eq(cowmap_etcd_wait(m, rev, 20000), 0);
	unsigned flags = 0;

	ck_assert(recorder_has(&x.r, rev, &flags));
	ck_assert_uint_eq(flags, COWMAP_ETCD_VERSION_RESYNC);
	ck_assert_uint_ge(wait_events(&x.r, COWMAP_ETCD_RESYNCED, 1), 1);
	ck_assert_msg(strstr(x.r.messages[COWMAP_ETCD_RESYNCED], "compacted"),
		      "message: %s", x.r.messages[COWMAP_ETCD_RESYNCED]);
	ck_assert_msg(x.r.broken == 0, "%s", x.r.first_broken);
	/* The revisions in between were never published one by one. */
	ck_assert(!recorder_has(&x.r, rev - 1, NULL));
	assert_mirror_equals_store(m, x.c.endpoints, prefix);

	struct cowmap_etcd_stats st;

	cowmap_etcd_stats(m, &st);
	ck_assert_uint_eq(st.resyncs, 1);

	rig_stop(&x, m);
}
END_TEST

START_TEST(unreachable_at_start_publishes_marked_empty_version_by_option)
{
	struct rig x;
	const char *prefix = "/late/";

	rig_start(&x, 1, NULL);

	int64_t rev = etcd_put(x.c.endpoints, "/late/k", "v");

	ck_assert_int_gt(rev, 0);
	etcd_member_signal(&x.c, 0, SIGKILL);

	struct cowmap_etcd_options o = {
		.endpoints = x.c.endpoints, .prefix = prefix,
		.flags = COWMAP_ETCD_START_EMPTY, .start_timeout_ms = 300,
		.retry_max_ms = 200, .on_publish = on_publish,
		.on_event = on_event, .ctx = &x.r,
	};
	char err[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd *m = cowmap_etcd_start(&o, err);

	ck_assert_msg(m != NULL, "%s", err);

	struct cowmap *v = cowmap_cell_snapshot(cowmap_etcd_cell(m));
	struct cowmap_etcd_version_info info;

	ck_assert_int_eq(cowmap_etcd_version_info(v, &info), 0);
	ck_assert_int_eq(info.revision, 0);
	ck_assert_uint_eq(info.flags, COWMAP_ETCD_VERSION_UNREACHABLE);
	ck_assert_uint_eq(info.keys, 0);
	cowmap_release(v);
	ck_assert_uint_eq(wait_events(&x.r, COWMAP_ETCD_UNREACHABLE, 1), 1);

	/* etcd comes up: the first read is published. */
	ck_assert_int_eq(etcd_member_restart(&x.c, 0), 0);
	ck_assert_int_eq(cowmap_etcd_wait(m, rev, 20000), 0);
	v = cowmap_cell_snapshot(cowmap_etcd_cell(m));
	ck_assert_int_eq(cowmap_etcd_version_info(v, &info), 0);
	ck_assert_uint_eq(info.flags, COWMAP_ETCD_VERSION_INITIAL);
	ck_assert_str_eq(cowmap_etcd_get(v, "/late/k", 7)->data, "v");
	cowmap_release(v);

	rig_stop(&x, m);
}
END_TEST

/* Each test's thread reads and frees cells: registered with urcu-memb. */
static void register_thread(void)
{
	urcu_memb_register_thread();
}

static void unregister_thread(void)
{
	urcu_memb_unregister_thread();
}

static Suite *etcd_suite(void)
{
	Suite *s = suite_create("etcd");
	TCase *tc = tcase_create("mirror");

	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, register_thread, unregister_thread);
	tcase_add_test(tc, initial_range_is_one_version_with_its_revision);
	tcase_add_test(tc, paged_read_is_one_version_at_one_revision);
	tcase_add_test(tc, each_etcd_transaction_is_one_version);
	tcase_add_test(tc, readers_never_see_half_a_transaction);
	tcase_add_test(tc, oversized_value_is_refused_and_last_version_kept);
	tcase_add_test(tc, refused_data_at_start_is_a_clear_error);
	tcase_add_test(tc, unreachable_at_start_is_a_clear_error);
	tcase_add_test(tc, malformed_event_is_refused_and_last_version_kept);
	tcase_add_test(tc, malformed_watch_message_is_refused);
	tcase_add_test(tc, event_outside_the_prefix_is_refused);
	suite_add_tcase(s, tc);

	tc = tcase_create("faults");
	tcase_set_timeout(tc, 120);
	tcase_add_checked_fixture(tc, register_thread, unregister_thread);
	tcase_add_test(tc, killed_member_restarted_mirror_misses_no_revision);
	tcase_add_test(tc, three_members_failover_misses_no_revision);
	tcase_add_test(tc, compaction_during_disconnect_forces_a_whole_reread);
	tcase_add_test(tc, unreachable_at_start_publishes_marked_empty_version_by_option);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *bin = etcd_binary();

	if (bin == NULL) {
		printf("SKIP: no etcd binary on PATH (Debian package etcd-server;"
		       " or set ETCD): the etcd mirror tests need a real etcd\n");
		return 77;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);

	const char *tmp = getenv("TMPDIR");

	if (tmp == NULL || !*tmp)
		tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	snprintf(base_dir, sizeof(base_dir), "%s/cowmap-check-etcd.XXXXXX", tmp);
	if (mkdtemp(base_dir) == NULL) {
		perror("check_etcd: mkdtemp");
		return 1;
	}
	if (etcd_cluster_start(&shared, 1, base_dir) < 0) {
		fprintf(stderr, "check_etcd: cannot start %s\n", bin);
		etcd_rm_rf(base_dir);
		return 1;
	}
	printf("check_etcd: %s, shared member at %s\n", bin, shared.endpoints);

	SRunner *sr = srunner_create(etcd_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	etcd_cluster_stop(&shared);
	etcd_rm_rf(base_dir);
	curl_global_cleanup();
	return failed == 0 ? 0 : 1;
}
