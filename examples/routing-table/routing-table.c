/*
 * routing-table - a forwarding table in a cowmap prefix table: a packet
 * loop looks destinations up by longest-prefix match, in batches, while
 * route updates are applied in transactions.
 *
 *   routing-table [--seconds S] [--threads N] [--batch N] [--interval-us N]
 *                 [--no-verify] ROUTES
 *   routing-table [same options] --geoip 4|6 [--geoip-dir DIR]
 *       Load the routes, then for S seconds (default 2) run N packet loop
 *       threads (default 1) and one updater, and report lookups per second
 *       and updates applied.  Exit status 0 only if every lookup batch was
 *       consistent with one version of the table.
 *
 *   routing-table --lookup ROUTES
 *       Read addresses, one per line, on standard input and print one line
 *       per address: "ADDR PREFIX/LEN NEXTHOP" for the longest route that
 *       matches it, NEXTHOP as the route file spelled it, or "ADDR -" when
 *       no route does.
 *
 *   routing-table --generate N [--ipv6] FILE
 *       Write a synthetic table: N routes with prefix lengths spread like a
 *       real table's, plus the aggregates that cover them.
 *
 *   routing-table --geoip 4|6 [--geoip-dir DIR] --write FILE
 *       Write the real allocations of the GeoIP country database
 *       (geoip-database: GeoIP.dat, GeoIPv6.dat in /usr/share/GeoIP), one
 *       route per prefix with a next hop per country, plus covering
 *       aggregates with other next hops, so that prefixes nest as in a
 *       real RIB.
 *
 *       $ ./routing-table --geoip 4 --write geoip4.routes
 *       $ ./routing-table --seconds 2 geoip4.routes
 *       $ echo 8.8.8.8 | ./routing-table --lookup geoip4.routes
 *
 * Route files: one route per line as `ip route` prints them, all of one
 * address family (IPv4 or IPv6):
 *
 *       [TYPE] DEST [via GATEWAY] [dev DEVICE] [ATTRIBUTE VALUE | FLAG]...
 *
 *   DEST is PREFIX/LEN, an address alone (a host route) or "default".  The
 *   bits of PREFIX past LEN must be zero.  The next hop is "via GATEWAY"
 *   and/or "dev DEVICE", or a TYPE other than unicast (blackhole,
 *   unreachable, prohibit), and is printed back as written.  The
 *   attributes proto, scope, src, metric, table, mtu, weight, pref and the
 *   flags onlink, linkdown are accepted and ignored.  Blank lines and
 *   lines starting with '#' are skipped.  A prefix may appear once.  A
 *   malformed line is refused with its line number.
 *
 * The table maps each prefix to a struct route owned by the table
 * (options.value_free frees it once no version and no reader can reach it).
 *
 * Packet loop: 32 destinations at a time are looked up with one
 * cowmap_prefix_lookup_many() call inside one RCU read-side critical
 * section, so the batch pays memory latency about once per trie level, and
 * all 32 answers come from the same version of the table.
 *
 * Updater: a route feed re-announces one slice of the table per batch --
 * new next hops for most routes of the slice, withdrawals for a few --
 * and applies the batch with a transaction, published as one new version.
 *
 * How the packet loop proves that it saw whole versions: every update batch
 * also writes a stamp, a host route (/32 or /128) for an address no route
 * of the file names that way, carrying the batch number V.  The packet loop
 * looks the stamp's address up in the same lookup_many call as its
 * destinations.  The feed is deterministic (slice, next hop and withdrawal
 * are functions of the route and the batch number), so from V alone the
 * packet loop knows, for each route, which batch last touched it and what
 * that batch did, and so which of the routes covering a destination is the
 * longest one present at V.  Any other answer -- a route from a batch not
 * yet published with V, a route V withdrew or overwrote, a shorter match
 * than the longest present -- is reported as an inconsistency.
 */
#include <urcu/urcu-memb.h>	/* the flavor every thread here reads with */
#include <cowmap.h>

#include "geoip.h"
#include "rib.h"
#include "routes.h"

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
#define LOOKUP_BATCH 64		/* addresses per batch in --lookup */
#define MAX_THREADS 16
#define TRACE_SIZE (1u << 16)	/* destination addresses replayed in a loop */
#define MAX_REPORTED 5		/* inconsistencies printed in full */
#define STAMP UINT32_MAX	/* route index of the version stamp */

/* The value of every prefix: owned by the table, freed by value_free. */
struct route {
	uint32_t index;		/* in feed.rib; STAMP for the stamp */
	uint32_t hop;		/* in nexthops */
	uint64_t batch;		/* update batch that wrote it; 0 = file */
};

/* Next hops, as the route file spelled them. */
static struct nexthops hops;

/*
 * The routes of the file, in address order (feed.rib, whose hop field is
 * the next hop index), and their slices: the updater re-announces one
 * slice per batch.  Read-only once loaded.
 */
static struct {
	struct rib rib;
	uint32_t nslices;
	uint32_t *slice;	/* of each route */
	uint32_t *start;	/* nslices + 1 offsets into member[] */
	uint32_t *member;	/* route indexes, slice by slice */
	uint8_t stamp[RIB_MAX_BYTES];	/* the stamp's address */
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

/* The routes of GeoIP's database for @width, with aggregates, into @r. */
static int read_geoip(struct rib *r, unsigned width, const char *dir)
{
	char path[4096];
	long found, added;

	snprintf(path, sizeof(path), "%s/%s", dir, geoip_file_name(width));
	rib_init(r, width);
	found = geoip_load(r, path);
	if (found < 0) {
		fprintf(stderr, "routing-table: %s: %s%s\n", path,
			strerror((int)-found), found == -ENOENT
			? " (install geoip-database, or give --geoip-dir)" : "");
		rib_free(r);
		return -1;
	}
	added = rib_add_aggregates(r);
	if (added < 0) {
		fprintf(stderr, "routing-table: out of memory\n");
		rib_free(r);
		return -1;
	}
	printf("routing-table: %ld prefixes from %s, %ld covering aggregates\n",
	       found, path, added);
	return 0;
}

/* feed.rib from GeoIP: the next hops named as route files name them. */
static int load_geoip(unsigned width, const char *dir)
{
	if (read_geoip(&feed.rib, width, dir) < 0)
		return -1;
	for (size_t i = 0; i < feed.rib.n; i++) {
		char text[64];
		long h;

		rib_hop_text(text, width, feed.rib.route[i].hop);
		h = nexthop_intern(&hops, text);
		if (h < 0) {
			fprintf(stderr, "routing-table: out of memory\n");
			return -1;
		}
		feed.rib.route[i].hop = (uint32_t)h;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* The route feed: what update batch v does                            */
/* ------------------------------------------------------------------ */

/* Batch v (v >= 1) re-announces slice (v - 1) % nslices. */
static uint32_t slice_of_batch(uint64_t v)
{
	return (uint32_t)((v - 1) % feed.nslices);
}

static bool withdrawn_in(uint32_t route, uint64_t v)
{
	return mix32(route ^ (uint32_t)(v * 0x9e3779b9u)) % 32 == 0;
}

static uint32_t hop_in(uint32_t route, uint64_t v)
{
	return (uint32_t)((mix32(route) + v) % hops.n);
}

/* The last batch at or before @v that re-announced @slice; 0 = none. */
static uint64_t last_touch(uint32_t slice, uint64_t v)
{
	if (v <= slice)
		return 0;
	return v - (v - 1 - slice) % feed.nslices;
}

/* Slices of about @slice_size routes, picked by a hash of the route. */
static int make_slices(size_t slice_size)
{
	size_t n = feed.rib.n;

	feed.nslices = (uint32_t)((n + slice_size - 1) / slice_size);
	feed.slice = malloc(n * sizeof(uint32_t));
	feed.start = calloc(feed.nslices + 1, sizeof(uint32_t));
	feed.member = malloc(n * sizeof(uint32_t));

	uint32_t *fill = malloc(feed.nslices * sizeof(uint32_t));

	if (!feed.slice || !feed.start || !feed.member || !fill) {
		free(fill);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		feed.slice[i] = mix32((uint32_t)i * 0x9e3779b9u) % feed.nslices;
		feed.start[feed.slice[i] + 1]++;
	}
	for (uint32_t s = 0; s < feed.nslices; s++)
		feed.start[s + 1] += feed.start[s];
	memcpy(fill, feed.start, feed.nslices * sizeof(uint32_t));
	for (size_t i = 0; i < n; i++)
		feed.member[fill[feed.slice[i]]++] = (uint32_t)i;
	free(fill);
	return 0;
}

/*
 * The stamp's address: the first of 0.0.0.1, 0.0.0.2, ... (::1, ::2, ...)
 * that is not a host route of the file, so that its host route belongs to
 * the stamp alone.
 */
static void choose_stamp(void)
{
	const unsigned width = feed.rib.width, bytes = width / 8;

	memset(feed.stamp, 0, sizeof(feed.stamp));
	for (unsigned k = 1;; k++) {
		feed.stamp[bytes - 2] = (uint8_t)(k >> 8);
		feed.stamp[bytes - 1] = (uint8_t)k;
		if (rib_find(&feed.rib, feed.stamp, width) < 0)
			return;
	}
}

/* ------------------------------------------------------------------ */
/* Building the table                                                  */
/* ------------------------------------------------------------------ */

/* Options of the table: the table owns its routes. */
static void free_route(void *value, void *ctx)
{
	(void)ctx;
	free(value);
}

static struct route *new_route(uint32_t index, uint32_t hop, uint64_t batch)
{
	struct route *r = malloc(sizeof(*r));

	if (r)
		*r = (struct route){ .index = index, .hop = hop, .batch = batch };
	return r;
}

/*
 * The first version: every route of the file, and with @stamp the stamp
 * of batch 0.  The routes go in as one batch: cowmap_txn_prefix_set_many()
 * fills the nodes it creates in place.  Returns a new reference, or NULL
 * with errno set.
 */
static struct cowmap *build_table(bool stamp)
{
	const struct cowmap_options opts = { .value_free = free_route };
	const struct rib *rib = &feed.rib;
	size_t n = rib->n + stamp;
	struct cowmap_route *routes = calloc(n, sizeof(*routes));
	struct cowmap *empty = cowmap_prefix_new(rib->width, &opts);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;
	int rc = t && routes ? 0 : -ENOMEM;

	cowmap_release(empty);	/* the transaction holds its own reference */
	for (size_t i = 0; rc == 0 && i < n; i++) {
		bool is_stamp = i == rib->n;

		routes[i] = (struct cowmap_route){
			.addr = is_stamp ? feed.stamp : rib->route[i].addr,
			.len = is_stamp ? rib->width : rib->route[i].len,
			.value = is_stamp ? new_route(STAMP, 0, 0)
				 : new_route((uint32_t)i, rib->route[i].hop, 0),
		};
		if (routes[i].value == NULL)
			rc = -ENOMEM;
	}
	if (rc == 0)
		rc = cowmap_txn_prefix_set_many(t, n, routes);
	if (rc < 0 && routes != NULL)	/* on failure the routes are ours */
		for (size_t i = 0; i < n; i++)
			free(routes[i].value);
	free(routes);
	if (rc < 0) {
		cowmap_txn_abort(t);	/* NULL is fine */
		errno = -rc;
		return NULL;
	}
	return cowmap_txn_commit(t);
}

/* ------------------------------------------------------------------ */
/* --lookup: addresses on standard input                               */
/* ------------------------------------------------------------------ */

static void print_answers(const struct cowmap *table, size_t n,
			  const uint8_t *addrs, char (*text)[INET6_ADDRSTRLEN + 1])
{
	void *values[LOOKUP_BATCH];
	unsigned lens[LOOKUP_BATCH];
	const unsigned width = feed.rib.width;

	cowmap_prefix_lookup_many(table, n, addrs, values, lens);
	for (size_t i = 0; i < n; i++) {
		const struct route *r = values[i];
		char prefix[64];

		if (r == NULL) {
			printf("%s -\n", text[i]);
			continue;
		}
		format_prefix(prefix, width, feed.rib.route[r->index].addr, lens[i]);
		printf("%s %s %s\n", text[i], prefix, hops.text[r->hop]);
	}
}

static int lookup_stdin(const char *path)
{
	uint8_t addrs[LOOKUP_BATCH * RIB_MAX_BYTES];
	char text[LOOKUP_BATCH][INET6_ADDRSTRLEN + 1];
	char *line = NULL;
	size_t size = 0, n = 0;
	unsigned lineno = 0;
	int status = EXIT_SUCCESS;
	struct cowmap *table;

	if (route_file_read(&feed.rib, &hops, path) < 0)
		return EXIT_FAILURE;
	table = build_table(false);
	if (table == NULL) {
		perror("routing-table: building the table");
		return EXIT_FAILURE;
	}

	const unsigned bytes = feed.rib.width / 8;

	while (getline(&line, &size, stdin) >= 0) {
		char *word = line + strspn(line, " \t");
		uint8_t addr[RIB_MAX_BYTES];

		lineno++;
		word[strcspn(word, " \t\r\n")] = '\0';
		if (*word == '\0')
			continue;	/* blank line */
		if (strlen(word) > INET6_ADDRSTRLEN ||
		    parse_addr(word, addr) != (bytes == 4 ? 4 : 6)) {
			print_answers(table, n, addrs, text);
			fflush(stdout);
			fprintf(stderr, "routing-table: standard input:%u: not an "
				"%s address: %s\n", lineno, bytes == 4 ? "IPv4" : "IPv6",
				word);
			status = EXIT_FAILURE;
			n = 0;
			break;
		}
		memcpy(addrs + n * bytes, addr, bytes);
		strcpy(text[n], word);
		if (++n == LOOKUP_BATCH) {
			print_answers(table, n, addrs, text);
			n = 0;
		}
	}
	print_answers(table, n, addrs, text);
	free(line);
	cowmap_release(table);	/* frees every route */
	return status;
}

/* ------------------------------------------------------------------ */
/* The packet loop                                                     */
/* ------------------------------------------------------------------ */

/*
 * The destinations replayed by the packet loops, and for each the routes
 * of the file that cover it, longest first: cover[cover_start[i]] up to
 * cover[cover_start[i + 1]].
 */
static uint8_t trace[TRACE_SIZE * RIB_MAX_BYTES];
static uint32_t cover_start[TRACE_SIZE + 1];
static uint32_t *cover;
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

/* What version @v must answer for trace address @t: the route, or -1. */
static long expected_route(uint32_t t, uint64_t v, uint64_t *touched)
{
	for (uint32_t k = cover_start[t]; k < cover_start[t + 1]; k++) {
		uint32_t route = cover[k];
		uint64_t last = last_touch(feed.slice[route], v);

		if (last && withdrawn_in(route, last))
			continue;	/* withdrawn: a shorter one answers */
		*touched = last;
		return route;
	}
	*touched = 0;
	return -1;
}

/*
 * Check one batch against the version its stamp names.  Runs inside the
 * read-side critical section: the routes are borrowed from the version.
 * Returns the number of wrong answers.
 */
static unsigned check_batch(const uint32_t dst[PACKET_BATCH],
			    void *const values[PACKET_BATCH + 1],
			    const unsigned lens[PACKET_BATCH + 1],
			    uint64_t *last_stamp)
{
	const struct route *stamp = values[PACKET_BATCH];
	const unsigned width = feed.rib.width;
	unsigned bad = 0;

	if (stamp == NULL || stamp->index != STAMP || lens[PACKET_BATCH] != width) {
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
		const struct route *r = values[i];
		uint64_t touched;
		long want = expected_route(dst[i], v, &touched);
		const char *wrong = NULL;

		if (want < 0) {
			if (r)
				wrong = "a route where every covering route is withdrawn";
		} else if (r == NULL) {
			wrong = "no route";
		} else if (r->index != (uint32_t)want) {
			wrong = "another route than the longest present";
		} else if (lens[i] != feed.rib.route[want].len) {
			wrong = "the wrong prefix length";
		} else if (r->batch != touched) {
			wrong = "a route from another batch";
		} else if (r->hop != (touched ? hop_in((uint32_t)want, touched)
					    : feed.rib.route[want].hop)) {
			wrong = "the wrong next hop";
		}
		if (wrong == NULL)
			continue;

		char ip[INET6_ADDRSTRLEN];

		inet_ntop(family_of(width), trace + (size_t)dst[i] * (width / 8),
			  ip, sizeof(ip));
		report("%s at stamp %" PRIu64 ": %s (route %ld expected, last "
		       "touched by batch %" PRIu64 ")", ip, v, wrong, want, touched);
		bad++;
	}
	return bad;
}

static void *packet_loop_main(void *arg)
{
	struct packet_loop *pl = arg;
	const unsigned bytes = feed.rib.width / 8;
	uint8_t addrs[(PACKET_BATCH + 1) * RIB_MAX_BYTES];
	void *values[PACKET_BATCH + 1];
	unsigned lens[PACKET_BATCH + 1];
	uint32_t dst[PACKET_BATCH];	/* indexes into trace[] */
	uint32_t pos = pl->id * (TRACE_SIZE / MAX_THREADS);
	uint64_t last_stamp = 0;

	/* The stamp is looked up with every batch, as its last address. */
	memcpy(addrs + PACKET_BATCH * bytes, feed.stamp, bytes);

	urcu_memb_register_thread();
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		for (unsigned i = 0; i < PACKET_BATCH; i++) {
			dst[i] = pos++ % TRACE_SIZE;
			memcpy(addrs + i * bytes, trace + (size_t)dst[i] * bytes,
			       bytes);
		}

		urcu_memb_read_lock();
		const struct cowmap *table = cowmap_cell_load(fib);

		cowmap_prefix_lookup_many(table, PACKET_BATCH + 1, addrs, values,
					  lens);
		/*
		 * Here a router would hand packet i to values[i]'s next hop,
		 * or drop it when values[i] is NULL.  The routes are borrowed
		 * from the version: use them before the unlock.
		 */
		for (unsigned i = 0; i < PACKET_BATCH; i++)
			pl->no_route += values[i] == NULL;
		if (verify)
			pl->inconsistent += check_batch(dst, values, lens,
							&last_stamp);
		urcu_memb_read_unlock();

		pl->packets += PACKET_BATCH;
		pl->batches++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/*
 * Mostly packets to hosts of routed prefixes, some to random addresses
 * (never the stamp's).  Then the covering routes of each, longest first,
 * found by looking each prefix length of the file up in the sorted routes.
 * Returns 0 or -1 (out of memory).
 */
static int make_trace(void)
{
	const struct rib *rib = &feed.rib;
	const unsigned width = rib->width, bytes = width / 8;
	bool has_len[129] = { false };
	size_t cap = 4 * TRACE_SIZE, used = 0;
	uint64_t rng = 0xfeed;

	for (size_t i = 0; i < rib->n; i++)
		has_len[rib->route[i].len] = true;
	rib_random_addresses(rib, trace, TRACE_SIZE, 1, 0xfeed);
	for (unsigned i = 0; i < TRACE_SIZE; i++) {
		uint8_t *a = trace + (size_t)i * bytes;

		if (rib_random(&rng) % 100 >= 95)	/* anywhere */
			for (unsigned b = 0; b < bytes; b++)
				a[b] = (uint8_t)rib_random(&rng);
		if (memcmp(a, feed.stamp, bytes) == 0)
			a[0] ^= 0x80;
	}

	cover = malloc(cap * sizeof(*cover));
	if (cover == NULL)
		return -1;
	for (unsigned i = 0; i < TRACE_SIZE; i++) {
		cover_start[i] = (uint32_t)used;
		for (int len = (int)width; len >= 0; len--) {
			long k;

			if (!has_len[len])
				continue;
			k = rib_find(rib, trace + (size_t)i * bytes, (unsigned)len);
			if (k < 0)
				continue;
			if (used == cap) {
				uint32_t *grown = realloc(cover, 2 * cap * sizeof(*cover));

				if (grown == NULL)
					return -1;
				cover = grown;
				cap *= 2;
			}
			cover[used++] = (uint32_t)k;
		}
	}
	cover_start[TRACE_SIZE] = (uint32_t)used;
	return 0;
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

/* Set @addr/@len to a new route in the draft; the route is ours on failure. */
static int txn_set_route(struct cowmap_txn *t, const void *addr, unsigned len,
			 uint32_t index, uint32_t hop, uint64_t batch)
{
	struct route *r = new_route(index, hop, batch);
	int rc;

	if (r == NULL)
		return -ENOMEM;
	rc = cowmap_txn_prefix_set(t, addr, len, r);
	if (rc < 0)
		free(r);	/* on failure the value is still ours */
	return rc;
}

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
	for (uint32_t k = feed.start[s]; rc >= 0 && k < feed.start[s + 1]; k++) {
		uint32_t i = feed.member[k];
		const struct rib_route *e = &feed.rib.route[i];

		if (withdrawn_in(i, v)) {
			rc = cowmap_txn_prefix_del(t, e->addr, e->len);
			u->withdrawn += rc > 0;
		} else {
			rc = txn_set_route(t, e->addr, e->len, i, hop_in(i, v), v);
			u->announced += rc >= 0;
		}
	}
	if (rc >= 0)	/* the version stamp */
		rc = txn_set_route(t, feed.stamp, feed.rib.width, STAMP, 0, v);
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
		"usage: routing-table [--seconds S] [--threads N] [--batch N]\n"
		"                     [--interval-us N] [--no-verify]\n"
		"                     ROUTES | --geoip 4|6 [--geoip-dir DIR]\n"
		"       routing-table --lookup ROUTES    (addresses on standard input)\n"
		"       routing-table --generate N [--ipv6] FILE\n"
		"       routing-table --geoip 4|6 [--geoip-dir DIR] --write FILE\n"
		"\n"
		"ROUTES: one route per line as `ip route` prints them, one address\n"
		"family per file:\n"
		"    [TYPE] DEST [via GATEWAY] [dev DEVICE] [ATTRIBUTE VALUE | FLAG]...\n"
		"DEST is PREFIX/LEN (host bits zero), an address (a host route) or\n"
		"\"default\".  The next hop is \"via GATEWAY\" and/or \"dev DEVICE\", or\n"
		"TYPE blackhole, unreachable or prohibit; --lookup prints it as\n"
		"written.  Attributes proto, scope, src, metric, table, mtu, weight,\n"
		"pref, advmss, realm, expires and flags onlink, linkdown are ignored.\n"
		"'#' starts a comment line.  Each prefix may appear once.  Examples:\n"
		"    default via 192.0.2.1 dev eth0\n"
		"    10.0.0.0/8 via 192.0.2.254\n"
		"    198.51.100.7 dev tun0 proto static metric 10\n"
		"    2001:db8::/32 dev eth1\n"
		"--lookup prints \"ADDR PREFIX/LEN NEXTHOP\" per address, or \"ADDR -\".\n"
		"GeoIP files: geoip-database's GeoIP.dat (4) and GeoIPv6.dat (6),\n"
		"in %s unless --geoip-dir says otherwise.\n",
		GEOIP_DEFAULT_DIR);
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

static int generate(size_t n, unsigned width, const char *path)
{
	struct rib r;
	long added;
	char origin[128];
	int status;

	rib_init(&r, width);
	if (rib_generate(&r, n, 0x5eed) < 0 || (added = rib_add_aggregates(&r)) < 0) {
		fprintf(stderr, "routing-table: out of memory\n");
		rib_free(&r);
		return EXIT_FAILURE;
	}
	snprintf(origin, sizeof(origin), "%zu written by routing-table "
		 "--generate, %ld covering aggregates", n, added);
	status = route_file_write(&r, path, origin);
	rib_free(&r);
	return status;
}

static int write_geoip(unsigned width, const char *dir, const char *path)
{
	struct rib r;
	int status;

	if (read_geoip(&r, width, dir) < 0)
		return EXIT_FAILURE;
	status = route_file_write(&r, path, "GeoIP country prefixes and "
				  "covering aggregates, from routing-table --geoip");
	rib_free(&r);
	return status;
}

static void free_feed(void)
{
	rib_free(&feed.rib);
	free(feed.slice);
	free(feed.start);
	free(feed.member);
	free(cover);
	nexthops_free(&hops);
}

int main(int argc, char **argv)
{
	double seconds = 2, interval_us = 1000;
	unsigned threads = 1, geoip = 0;
	size_t slice_size = 256, generate_n = 0;
	const char *path = NULL, *lookup = NULL, *write = NULL;
	const char *geoip_dir = GEOIP_DEFAULT_DIR;
	bool ipv6 = false;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--generate") == 0) {
			generate_n = (size_t)number(a, v, 1, 4000000);
			i++;
		} else if (strcmp(a, "--ipv6") == 0) {
			ipv6 = true;
		} else if (strcmp(a, "--geoip") == 0) {
			geoip = (unsigned)number(a, v, 4, 6);
			if (geoip == 5) {
				usage(stderr);
				return 2;
			}
			i++;
		} else if (strcmp(a, "--geoip-dir") == 0 && v) {
			geoip_dir = v;
			i++;
		} else if (strcmp(a, "--write") == 0 && v) {
			write = v;
			i++;
		} else if (strcmp(a, "--lookup") == 0 && v) {
			lookup = v;
			i++;
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
	if (generate_n && path && !geoip && !lookup && !write)
		return generate(generate_n, ipv6 ? 128 : 32, path);
	if (geoip && write && !path && !lookup && !generate_n)
		return write_geoip(geoip == 4 ? 32 : 128, geoip_dir, write);
	if (lookup && !path && !geoip && !write && !generate_n) {
		int status = lookup_stdin(lookup);

		free_feed();
		return status;
	}
	if (generate_n || write || lookup || ipv6 || (path == NULL) == !geoip) {
		usage(stderr);
		return 2;
	}

	/* --- Load --------------------------------------------------------- */
	urcu_memb_register_thread();	/* this thread creates and frees the cell */

	double t0 = now();

	if ((geoip ? load_geoip(geoip == 4 ? 32 : 128, geoip_dir)
		   : route_file_read(&feed.rib, &hops, path)) < 0 ||
	    make_slices(slice_size) < 0) {
		free_feed();
		return EXIT_FAILURE;
	}
	choose_stamp();

	struct cowmap *table = build_table(true);

	if (table == NULL) {
		perror("routing-table: building the table");
		free_feed();
		return EXIT_FAILURE;
	}

	struct cowmap_stats st;

	cowmap_stats(table, &st);
	printf("routing-table: %zu %s routes via %zu next hops from %s in "
	       "%.2f s; table: %zu nodes, %.1f MiB, depth %zu\n",
	       feed.rib.n, feed.rib.width == 32 ? "IPv4" : "IPv6", hops.n,
	       path ? path : "GeoIP", now() - t0, st.nodes, mib(st.bytes),
	       st.max_depth);
	fib = cowmap_cell_new(table, &urcu_memb_flavor);	/* takes table */
	if (fib == NULL) {
		perror("routing-table: cowmap_cell_new");
		free_feed();
		return EXIT_FAILURE;
	}
	if (make_trace() < 0) {
		fprintf(stderr, "routing-table: out of memory\n");
		cowmap_cell_free(fib);
		free_feed();
		return EXIT_FAILURE;
	}

	/* --- Run ---------------------------------------------------------- */
	struct packet_loop loops[MAX_THREADS] = { { 0 } };
	struct updater up = { .interval = interval_us / 1e6 };
	unsigned started = 0;
	bool ok = true;

	printf("running %.1f s: %u packet loop%s (lookup_many of %d destinations "
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
	free_feed();
	urcu_memb_unregister_thread();
	printf("routing-table: %s\n", ok ? "OK" : "FAILED");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
