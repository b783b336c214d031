/*
 * routing-table - an IPv4 forwarding table in a cowmap: a packet loop looks
 * destinations up in batches while route updates are applied in batches.
 *
 *   routing-table --generate N FILE
 *       Write a table of N random /24 routes, one per line, like
 *       `ip route` prints them:  "203.0.113.0/24 via 198.51.100.1 dev eth0".
 *
 *   routing-table [--seconds S] [--threads N] [--batch N] [--interval-us N]
 *                 [--no-verify] FILE
 *       Load FILE, then for S seconds (default 2) run N packet loop threads
 *       (default 1) and one updater, and report lookups per second and
 *       updates applied.  Exit status 0 only if every lookup batch was
 *       consistent with one version of the table.
 *
 *       $ ./routing-table --generate 300000 routes.txt
 *       $ ./routing-table --seconds 2 routes.txt
 *
 * The table maps a 4-byte key, the /24 network address in network byte
 * order (a.b.c.0), to a struct route owned by the map (options.value_free
 * frees it once no version and no reader can reach it).
 *
 * Packet loop: 32 destinations at a time are looked up with one
 * cowmap_get_many() call inside one RCU read-side critical section, so the
 * batch pays memory latency about once per trie level, and all 32 answers
 * come from the same version of the table.
 *
 * Updater: a route feed re-announces one slice of the table per batch --
 * new next hops for most routes of the slice, withdrawals for a few --
 * and applies the batch with a transaction, published as one new version.
 *
 * How the packet loop proves that it saw whole versions: every update batch
 * also writes a stamp, a route stored under the key 0.0.0.1 (never a /24
 * network) that carries the batch number V.  The packet loop looks the
 * stamp up in the same get_many call as its destinations.  The feed is
 * deterministic (slice, next hop and withdrawal are functions of the
 * prefix and the batch number), so from V alone the packet loop knows, for
 * each destination, which batch last touched its route and what that batch
 * did.  A route from any other batch -- one not yet published with V, or
 * one that V overwrote -- is reported as an inconsistency.
 */
#include <urcu/urcu-memb.h>	/* the flavor every thread here reads with */
#include <cowmap.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PACKET_BATCH 32		/* destinations per lookup batch */
#define MAX_NEXTHOPS 256
#define MAX_THREADS 16
#define TRACE_SIZE (1u << 16)	/* destination addresses replayed in a loop */
#define MAX_REPORTED 5		/* inconsistencies printed in full */

struct nexthop {
	uint32_t gateway;	/* host byte order */
	char dev[16];
};

/* The value of every key: owned by the map, freed by value_free. */
struct route {
	uint32_t prefix;		/* host byte order; STAMP for the stamp */
	const struct nexthop *via;	/* NULL for the stamp */
	uint64_t batch;			/* update batch that wrote it; 0 = file */
};

/* 0.0.0.1: host bits set, so no /24 route can have this key. */
#define STAMP UINT32_C(0x00000001)

static struct nexthop nexthops[MAX_NEXTHOPS];
static unsigned nnexthops;

/*
 * The routes of the file, grouped by update slice and sorted by prefix
 * within a slice.  The updater walks one slice per batch; the checker
 * finds a prefix by binary search in its slice.  Read-only once loaded.
 */
struct feed_route {
	uint32_t prefix;	/* host byte order */
	uint32_t hop;		/* index of the next hop the file gives it */
};

static struct {
	uint32_t nslices;
	uint32_t *start;	/* nslices + 1 offsets into route[] */
	struct feed_route *route;
	size_t count;
} feed;

static struct cowmap_cell *fib;	/* the forwarding table */
static atomic_bool stop;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_for(double seconds)
{
	struct timespec ts = {
		.tv_sec = (time_t)seconds,
		.tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9),
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint32_t mix32(uint32_t x)	/* murmur3's finalizer */
{
	x ^= x >> 16;
	x *= 0x85ebca6bu;
	x ^= x >> 13;
	x *= 0xc2b2ae35u;
	x ^= x >> 16;
	return x;
}

static uint64_t next_random(uint64_t *state)	/* xorshift64* */
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * UINT64_C(2685821657736338717);
}

static void format_ip(char buf[16], uint32_t addr)
{
	snprintf(buf, 16, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 255,
		 (addr >> 8) & 255, addr & 255);
}

/* ------------------------------------------------------------------ */
/* The route feed: what update batch v does                            */
/* ------------------------------------------------------------------ */

static uint32_t slice_of(uint32_t prefix)
{
	return mix32(prefix) % feed.nslices;
}

/* Batch v (v >= 1) re-announces slice (v - 1) % nslices. */
static uint32_t slice_of_batch(uint64_t v)
{
	return (uint32_t)((v - 1) % feed.nslices);
}

static bool withdrawn_in(uint32_t prefix, uint64_t v)
{
	return mix32(prefix ^ (uint32_t)(v * 0x9e3779b9u)) % 32 == 0;
}

static const struct nexthop *hop_in(uint32_t prefix, uint64_t v)
{
	return &nexthops[(mix32(prefix) + v) % nnexthops];
}

/* The last batch at or before @v that re-announced @slice; 0 = none. */
static uint64_t last_touch(uint32_t slice, uint64_t v)
{
	if (v <= slice)
		return 0;
	return v - (v - 1 - slice) % feed.nslices;
}

/* Index of @prefix among the file's routes, or -1. */
static long feed_find(uint32_t prefix)
{
	uint32_t s = slice_of(prefix);
	size_t lo = feed.start[s], hi = feed.start[s + 1];

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (feed.route[mid].prefix == prefix)
			return (long)mid;
		if (feed.route[mid].prefix < prefix)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* ------------------------------------------------------------------ */
/* Generating and loading a table                                      */
/* ------------------------------------------------------------------ */

/* Addresses no public route covers: private, loopback, multicast... */
static bool reserved_prefix(uint32_t p24)
{
	uint32_t a = p24 >> 16, b = (p24 >> 8) & 255;

	return a == 0 || a == 10 || a == 127 || a >= 224 ||
	       (a == 100 && b >= 64 && b < 128) || (a == 169 && b == 254) ||
	       (a == 172 && b >= 16 && b < 32) || (a == 192 && b == 168) ||
	       (a == 198 && (b == 18 || b == 19));
}

static int generate(unsigned long n, const char *path)
{
	/* Eight gateways, the first ones carrying most routes. */
	static const unsigned weight[8] = { 30, 20, 15, 10, 10, 5, 5, 5 };
	uint8_t *used = calloc((1u << 24) / 8, 1);
	uint64_t rng = 0x5eed;
	unsigned long made = 0;
	FILE *out = fopen(path, "w");

	if (used == NULL || out == NULL) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		free(used);
		if (out)
			fclose(out);
		return EXIT_FAILURE;
	}
	while (made < n) {
		uint32_t p24 = (uint32_t)(next_random(&rng) >> 40);	/* 24 bits */

		if (reserved_prefix(p24) || used[p24 / 8] & (1u << (p24 % 8)))
			continue;
		used[p24 / 8] |= (uint8_t)(1u << (p24 % 8));
		made++;
	}

	/* In address order, like a routing table dump. */
	fprintf(out, "# %lu routes written by routing-table --generate\n", n);
	for (uint32_t p24 = 0; p24 < (1u << 24); p24++) {
		if (!(used[p24 / 8] & (1u << (p24 % 8))))
			continue;

		unsigned pick = mix32(p24) % 100, hop = 0;

		while (pick >= weight[hop]) {
			pick -= weight[hop];
			hop++;
		}
		fprintf(out, "%u.%u.%u.0/24 via 198.51.100.%u dev eth%u\n",
			p24 >> 16, (p24 >> 8) & 255, p24 & 255, hop + 1, hop / 2);
	}
	free(used);
	if (fclose(out) != 0) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		return EXIT_FAILURE;
	}
	printf("routing-table: wrote %lu routes to %s\n", n, path);
	return EXIT_SUCCESS;
}

/* The index of next hop (@gw, @dev), added if new; -1 when full. */
static int intern_nexthop(uint32_t gw, const char *dev)
{
	for (unsigned i = 0; i < nnexthops; i++)
		if (nexthops[i].gateway == gw && strcmp(nexthops[i].dev, dev) == 0)
			return (int)i;
	if (nnexthops == MAX_NEXTHOPS)
		return -1;
	nexthops[nnexthops].gateway = gw;
	/* parse_route() checked that it fits. */
	memcpy(nexthops[nnexthops].dev, dev, strlen(dev) + 1);
	return (int)nnexthops++;
}

static bool parse_ip(const char *text, uint32_t *addr)
{
	struct in_addr in;

	if (inet_pton(AF_INET, text, &in) != 1)
		return false;
	*addr = ntohl(in.s_addr);
	return true;
}

/* One route line; returns NULL or what is wrong with it. */
static const char *parse_route(char *line, uint32_t *prefix, int *hop)
{
	char net[32], gw[32], dev[32], extra[2];
	unsigned len;

	if (sscanf(line, "%31[0-9.]/%u via %31s dev %31s %1s", net, &len, gw,
		   dev, extra) != 4)
		return "expected \"A.B.C.0/24 via GATEWAY dev DEVICE\"";
	if (!parse_ip(net, prefix))
		return "bad network address";
	if (len != 24)
		return "only /24 routes are supported";
	if (*prefix & 255)
		return "host bits set in a /24 network";

	uint32_t gateway;

	if (!parse_ip(gw, &gateway))
		return "bad gateway address";
	if (strlen(dev) >= sizeof(nexthops[0].dev))
		return "device name too long";
	*hop = intern_nexthop(gateway, dev);
	if (*hop < 0)
		return "too many distinct next hops";
	return NULL;
}

static int by_prefix(const void *a, const void *b)
{
	uint32_t x = ((const struct feed_route *)a)->prefix;
	uint32_t y = ((const struct feed_route *)b)->prefix;

	return (x > y) - (x < y);
}

/* Options of the table: the map owns its routes. */
static void free_route(void *value, void *ctx)
{
	(void)ctx;
	free(value);
}

/*
 * Read @path into the feed, in slices of about @slice_size routes.
 * Returns 0, or -1 after printing "file:line: reason".
 */
static int read_routes(const char *path, size_t slice_size)
{
	FILE *in = fopen(path, "r");
	struct feed_route *routes = NULL;
	char *line = NULL;
	size_t size = 0, cap = 0, n = 0;
	unsigned lineno = 0;
	const char *why = NULL;

	if (in == NULL) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (getline(&line, &size, in) >= 0) {
		char *text = line + strspn(line, " \t");
		uint32_t prefix;
		int hop;

		lineno++;
		if (*text == '#' || *text == '\n' || *text == '\0')
			continue;
		why = parse_route(text, &prefix, &hop);
		if (why == NULL && n == cap) {
			size_t grown = cap ? 2 * cap : 4096;
			struct feed_route *r = realloc(routes, grown * sizeof(*r));

			if (r == NULL) {
				why = "out of memory";
			} else {
				routes = r;
				cap = grown;
			}
		}
		if (why)
			break;
		routes[n++] = (struct feed_route){ prefix, (uint32_t)hop };
	}
	free(line);
	fclose(in);
	if (why == NULL && n == 0)
		why = "no routes";
	if (why) {
		fprintf(stderr, "routing-table: %s:%u: %s\n", path, lineno, why);
		free(routes);
		return -1;
	}

	/* Counting sort into slices, then by prefix within each slice. */
	feed.count = n;
	feed.nslices = (uint32_t)((n + slice_size - 1) / slice_size);
	feed.start = calloc(feed.nslices + 1, sizeof(uint32_t));
	feed.route = malloc(n * sizeof(*feed.route));

	uint32_t *fill = malloc(feed.nslices * sizeof(uint32_t));

	if (!feed.start || !feed.route || !fill) {
		fprintf(stderr, "routing-table: out of memory\n");
		free(fill);
		free(routes);
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		feed.start[slice_of(routes[i].prefix) + 1]++;
	for (uint32_t s = 0; s < feed.nslices; s++)
		feed.start[s + 1] += feed.start[s];
	memcpy(fill, feed.start, feed.nslices * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		feed.route[fill[slice_of(routes[i].prefix)]++] = routes[i];
	free(fill);
	free(routes);
	for (uint32_t s = 0; s < feed.nslices; s++)
		qsort(feed.route + feed.start[s],
		      feed.start[s + 1] - feed.start[s], sizeof(*feed.route),
		      by_prefix);
	for (size_t i = 1; i < n; i++) {
		if (feed.route[i].prefix == feed.route[i - 1].prefix) {
			char ip[16];

			format_ip(ip, feed.route[i].prefix);
			fprintf(stderr, "routing-table: %s: %s/24 appears twice\n",
				path, ip);
			return -1;
		}
	}
	return 0;
}

/* Set @key to a new route: @prefix via @via, written by @batch. */
static int txn_set_route(struct cowmap_txn *t, uint32_t prefix,
			 const struct nexthop *via, uint64_t batch)
{
	uint32_t key = htonl(prefix);	/* the 4-byte key, network order */
	struct route *r = malloc(sizeof(*r));
	int rc;

	if (r == NULL)
		return -ENOMEM;
	*r = (struct route){ .prefix = prefix, .via = via, .batch = batch };
	rc = cowmap_txn_set(t, &key, sizeof(key), r);
	if (rc < 0)
		free(r);	/* on failure the value is still ours */
	return rc;
}

/*
 * The first version: every route of the file and stamp 0.  The routes go
 * in as one batch: cowmap_txn_set_many() sorts them by their place in the
 * trie and builds each node once.  Returns a new reference, or NULL with
 * errno set.
 */
static struct cowmap *build_table(void)
{
	const struct cowmap_options opts = { .value_free = free_route };
	size_t n = feed.count, cap = n ? n : 1;
	uint32_t *keys = malloc(cap * sizeof(*keys));
	const void **kp = malloc(cap * sizeof(*kp));
	size_t *lens = malloc(cap * sizeof(*lens));
	void **routes = calloc(cap, sizeof(*routes));
	struct cowmap *empty = cowmap_new(&opts);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;
	int rc = t && keys && kp && lens && routes ? 0 : -ENOMEM;

	cowmap_release(empty);	/* the transaction holds its own reference */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		struct route *r = malloc(sizeof(*r));

		if (r == NULL) {
			rc = -ENOMEM;
			break;
		}
		*r = (struct route){ .prefix = feed.route[i].prefix,
				     .via = &nexthops[feed.route[i].hop] };
		keys[i] = htonl(feed.route[i].prefix);	/* network order */
		kp[i] = &keys[i];
		lens[i] = sizeof(keys[i]);
		routes[i] = r;
	}
	if (rc == 0)
		rc = cowmap_txn_set_many(t, n, kp, lens, routes);
	if (rc < 0 && routes != NULL)	/* on failure the routes are ours */
		for (size_t i = 0; i < n; i++)
			free(routes[i]);
	if (rc == 0)
		rc = txn_set_route(t, STAMP, NULL, 0);
	free(keys);
	free(kp);
	free(lens);
	free(routes);
	if (rc < 0) {
		cowmap_txn_abort(t);	/* frees the routes it took */
		errno = -rc;
		return NULL;
	}
	return cowmap_txn_commit(t);
}

/* ------------------------------------------------------------------ */
/* The packet loop                                                     */
/* ------------------------------------------------------------------ */

static uint32_t trace[TRACE_SIZE];	/* destination addresses */
static bool verify = true;

struct packet_loop {
	pthread_t thread;
	unsigned id;
	uint64_t packets, no_route, batches, inconsistent;
};

static atomic_uint reported;

__attribute__((format(printf, 1, 2)))
static void report(const char *fmt, ...)
{
	va_list ap;

	if (atomic_fetch_add(&reported, 1) >= MAX_REPORTED)
		return;
	va_start(ap, fmt);
	fputs("routing-table: inconsistent lookup: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/*
 * Check one batch against the version its stamp names.  Runs inside the
 * read-side critical section: the routes are borrowed from the version.
 * Returns the number of wrong answers.
 */
static unsigned check_batch(const uint32_t dst[PACKET_BATCH],
			    void *const values[PACKET_BATCH + 1],
			    uint64_t *last_stamp)
{
	const struct route *stamp = values[PACKET_BATCH];
	unsigned bad = 0;
	char ip[16];

	if (stamp == NULL || stamp->prefix != STAMP) {
		report("no version stamp");
		return PACKET_BATCH;
	}

	uint64_t v = stamp->batch;

	if (v < *last_stamp) {
		report("stamp went back from %" PRIu64 " to %" PRIu64,
		       *last_stamp, v);
		bad++;
	}
	*last_stamp = v;

	for (unsigned i = 0; i < PACKET_BATCH; i++) {
		uint32_t prefix = dst[i] & 0xffffff00u;
		const struct route *r = values[i];
		long idx = feed_find(prefix);
		uint64_t touched = idx < 0 ? 0 : last_touch(slice_of(prefix), v);
		const char *wrong = NULL;

		if (idx < 0) {
			if (r)
				wrong = "a route that no file or batch announced";
		} else if (touched && withdrawn_in(prefix, touched)) {
			if (r)
				wrong = "a route withdrawn by its last batch";
		} else if (r == NULL) {
			wrong = "no route";
		} else if (r->prefix != prefix || r->batch != touched) {
			wrong = "a route from another batch";
		} else if (r->via != (touched ? hop_in(prefix, touched)
					     : &nexthops[feed.route[idx].hop])) {
			wrong = "the wrong next hop";
		}
		if (wrong == NULL)
			continue;
		format_ip(ip, prefix);
		if (r)
			report("%s/24 at stamp %" PRIu64 " (last touched by batch %"
			       PRIu64 "): %s, written by batch %" PRIu64, ip, v,
			       touched, wrong, r->batch);
		else
			report("%s/24 at stamp %" PRIu64 " (last touched by batch %"
			       PRIu64 "): %s", ip, v, touched, wrong);
		bad++;
	}
	return bad;
}

static void *packet_loop_main(void *arg)
{
	struct packet_loop *pl = arg;
	uint32_t keys_be[PACKET_BATCH + 1];	/* network byte order */
	const void *keys[PACKET_BATCH + 1];
	size_t lens[PACKET_BATCH + 1];
	void *values[PACKET_BATCH + 1];
	uint32_t dst[PACKET_BATCH];
	uint32_t pos = pl->id * (TRACE_SIZE / MAX_THREADS);
	uint64_t last_stamp = 0;

	for (unsigned i = 0; i <= PACKET_BATCH; i++) {
		keys[i] = &keys_be[i];
		lens[i] = sizeof(uint32_t);
	}
	keys_be[PACKET_BATCH] = htonl(STAMP);	/* looked up with every batch */

	urcu_memb_register_thread();
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		for (unsigned i = 0; i < PACKET_BATCH; i++) {
			dst[i] = trace[pos++ % TRACE_SIZE];
			keys_be[i] = htonl(dst[i] & 0xffffff00u);
		}

		urcu_memb_read_lock();
		const struct cowmap *table = cowmap_cell_load(fib);

		cowmap_get_many(table, PACKET_BATCH + 1, keys, lens, values);
		/*
		 * Here a router would hand packet i to values[i]->via, or
		 * drop it when values[i] is NULL.  The routes are borrowed
		 * from the version: use them before the unlock.
		 */
		for (unsigned i = 0; i < PACKET_BATCH; i++)
			pl->no_route += values[i] == NULL;
		if (verify)
			pl->inconsistent += check_batch(dst, values, &last_stamp);
		urcu_memb_read_unlock();

		pl->packets += PACKET_BATCH;
		pl->batches++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* Mostly packets to routed prefixes, some to nowhere. */
static void make_trace(void)
{
	uint64_t rng = 0xfeed;

	for (unsigned i = 0; i < TRACE_SIZE; i++) {
		uint64_t x = next_random(&rng);
		uint32_t host = 1 + (uint32_t)(x >> 56) % 254;

		if (x % 100 < 95)
			trace[i] = feed.route[(x >> 8) % feed.count].prefix | host;
		else
			trace[i] = (uint32_t)(x >> 16);
	}
}

/* ------------------------------------------------------------------ */
/* The updater                                                         */
/* ------------------------------------------------------------------ */

struct updater {
	pthread_t thread;
	double interval;	/* pause between batches, seconds */
	uint64_t batches, announced, withdrawn;
	bool failed;
};

/*
 * Batch @v as one transaction on top of the current version.  This
 * thread is the table's only writer, so the snapshot it starts from is
 * still current when it publishes.  (With several writers, build the batch
 * in a cowmap_cell_update() callback instead.)
 */
static int apply_batch(struct updater *u, uint64_t v)
{
	struct cowmap *base = cowmap_cell_snapshot(fib);
	struct cowmap_txn *t = base ? cowmap_txn_begin(base) : NULL;
	uint32_t s = slice_of_batch(v);
	int rc = t ? 0 : -ENOMEM;

	/*
	 * The draft holds its own reference to the base until the commit.
	 * Dropping ours now means the cell alone holds the old version when
	 * it is replaced, so cowmap_cell_stats() counts the memory it frees
	 * as pending until the grace period ends.
	 */
	cowmap_release(base);
	for (uint32_t i = feed.start[s]; rc >= 0 && i < feed.start[s + 1]; i++) {
		uint32_t prefix = feed.route[i].prefix, key = htonl(prefix);

		if (withdrawn_in(prefix, v)) {
			rc = cowmap_txn_del(t, &key, sizeof(key));
			u->withdrawn += rc > 0;
		} else {
			rc = txn_set_route(t, prefix, hop_in(prefix, v), v);
			u->announced += rc >= 0;
		}
	}
	if (rc >= 0)
		rc = txn_set_route(t, STAMP, NULL, v);	/* the version stamp */
	if (rc < 0) {
		cowmap_txn_abort(t);	/* NULL is fine */
		return rc;
	}
	/* One publish for the whole batch: readers see all of it or none. */
	return cowmap_cell_publish(fib, cowmap_txn_commit(t));
}

static void *updater_main(void *arg)
{
	struct updater *u = arg;

	urcu_memb_register_thread();	/* publishing uses call_rcu() */
	for (uint64_t v = 1; !atomic_load(&stop); v++) {
		int rc = apply_batch(u, v);

		if (rc < 0) {
			fprintf(stderr, "routing-table: update batch %" PRIu64
				": %s\n", v, strerror(-rc));
			u->failed = true;
			break;
		}
		u->batches++;
		if (u->interval > 0)
			sleep_for(u->interval);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */

static void usage(FILE *out)
{
	fprintf(out,
		"usage: routing-table --generate N FILE\n"
		"       routing-table [--seconds S] [--threads N] [--batch N]\n"
		"                     [--interval-us N] [--no-verify] FILE\n");
}

static double number(const char *opt, const char *text, double min,
		     double max)
{
	char *end;
	double v = strtod(text ? text : "", &end);

	if (text == NULL || end == text || *end || !(v >= min && v <= max)) {
		fprintf(stderr, "routing-table: %s: expected a number in "
				"[%g, %g]\n", opt, min, max);
		exit(2);
	}
	return v;
}

static double mib(size_t bytes)
{
	return (double)bytes / (1024.0 * 1024.0);
}

int main(int argc, char **argv)
{
	double seconds = 2, interval_us = 1000;
	unsigned threads = 1;
	size_t slice_size = 256;
	const char *path = NULL;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--generate") == 0 && i + 2 < argc) {
			return generate((unsigned long)number(a, v, 1, 4000000),
					argv[i + 2]);
		} else if (strcmp(a, "--seconds") == 0) {
			seconds = number(a, v, 0.01, 3600);
			i++;
		} else if (strcmp(a, "--threads") == 0) {
			threads = (unsigned)number(a, v, 1, MAX_THREADS);
			i++;
		} else if (strcmp(a, "--batch") == 0) {
			slice_size = (size_t)number(a, v, 1, 1000000);
			i++;
		} else if (strcmp(a, "--interval-us") == 0) {
			interval_us = number(a, v, 0, 1e6);
			i++;
		} else if (strcmp(a, "--no-verify") == 0) {
			verify = false;
		} else if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return EXIT_SUCCESS;
		} else if (a[0] != '-' && path == NULL) {
			path = a;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (path == NULL) {
		usage(stderr);
		return 2;
	}

	/* --- Load --------------------------------------------------------- */
	urcu_memb_register_thread();	/* this thread creates and frees the cell */

	double t0 = now();

	if (read_routes(path, slice_size) < 0)
		return EXIT_FAILURE;

	struct cowmap *table = build_table();

	if (table == NULL) {
		perror("routing-table: building the table");
		return EXIT_FAILURE;
	}

	struct cowmap_stats st;

	cowmap_stats(table, &st);
	printf("routing-table: %zu routes via %u next hops from %s in %.2f s; "
	       "table: %zu nodes, %.1f MiB, depth %zu\n",
	       feed.count, nnexthops, path, now() - t0, st.nodes, mib(st.bytes),
	       st.max_depth);
	fib = cowmap_cell_new(table, &urcu_memb_flavor);	/* takes table */
	if (fib == NULL) {
		perror("routing-table: cowmap_cell_new");
		return EXIT_FAILURE;
	}
	make_trace();

	/* --- Run ---------------------------------------------------------- */
	struct packet_loop loops[MAX_THREADS] = { { 0 } };
	struct updater up = { .interval = interval_us / 1e6 };
	unsigned started = 0;
	bool ok = true;

	printf("running %.1f s: %u packet loop%s (get_many of %d destinations "
	       "+ the stamp), 1 updater (slices of ~%zu routes)\n",
	       seconds, threads, threads == 1 ? "" : "s", PACKET_BATCH,
	       slice_size);
	fflush(stdout);
	atomic_init(&stop, false);
	for (; started < threads; started++) {
		loops[started].id = started;
		if (pthread_create(&loops[started].thread, NULL, packet_loop_main,
				   &loops[started]) != 0) {
			ok = false;
			break;
		}
	}
	bool updater_started = ok && pthread_create(&up.thread, NULL,
						    updater_main, &up) == 0;

	/* Watch the memory that waits for grace periods while they run. */
	size_t peak_pending = 0;
	double start = now();

	while (ok && updater_started && now() - start < seconds) {
		struct cowmap_cell_stats cs;

		cowmap_cell_stats(fib, &cs);
		if (cs.pending_bytes > peak_pending)
			peak_pending = cs.pending_bytes;
		sleep_for(0.01);
	}
	atomic_store(&stop, true);
	double elapsed = now() - start;

	for (unsigned i = 0; i < started; i++)
		pthread_join(loops[i].thread, NULL);
	if (updater_started)
		pthread_join(up.thread, NULL);
	else
		ok = false;

	/* --- Report ------------------------------------------------------- */
	uint64_t packets = 0, no_route = 0, batches = 0, inconsistent = 0;

	for (unsigned i = 0; i < started; i++) {
		packets += loops[i].packets;
		no_route += loops[i].no_route;
		batches += loops[i].batches;
		inconsistent += loops[i].inconsistent;
	}

	struct cowmap_cell_stats cs;

	cowmap_cell_barrier(fib);	/* every retired version is freed */
	cowmap_cell_stats(fib, &cs);

	printf("lookups: %" PRIu64 " (%.1f M/s), no route: %.1f%%; "
	       "batches %s: %" PRIu64 ", inconsistent answers: %" PRIu64 "\n",
	       packets, (double)packets / elapsed / 1e6,
	       packets ? 100.0 * (double)no_route / (double)packets : 0.0,
	       verify ? "checked" : "(not checked)", batches, inconsistent);
	printf("updates: %" PRIu64 " batches published (%.0f/s), %" PRIu64
	       " routes re-announced, %" PRIu64 " withdrawn\n",
	       up.batches, (double)up.batches / elapsed, up.announced,
	       up.withdrawn);
	printf("memory waiting for grace periods: peak %.2f MiB, %zu bytes "
	       "after cowmap_cell_barrier()\n", mib(peak_pending),
	       cs.pending_bytes);

	if (inconsistent || up.failed || up.batches == 0 || batches == 0 ||
	    cs.pending_bytes != 0 || cs.pending_versions != 0)
		ok = false;

	cowmap_cell_free(fib);	/* frees the table and every route in it */
	free(feed.start);
	free(feed.route);
	urcu_memb_unregister_thread();
	printf("routing-table: %s\n", ok ? "OK" : "FAILED");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
