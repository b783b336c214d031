/*
 * lookup-table - a read-mostly table of user records: many threads look
 * users up while one writer changes a few records per second.
 *
 *   lookup-table [--seconds S] [--readers N] [--users N] [--rate N]
 *                [--stall-ms N]
 *
 *   S seconds (default 2), N reader threads (default 4), a table of N users
 *   (default 100000), N changes per second (default 20).  --stall-ms makes
 *   one reader sit inside its read-side critical section for that long, a
 *   third of the way through, to show what a stalled grace period looks
 *   like in the statistics.
 *
 * The table maps a user id (its 8 bytes as stored in memory) to a struct
 * user that the map owns: options.value_free frees a record once no
 * version holds it and no reader can still see it, so the writer replaces
 * records with cowmap_cell_set() and never frees one itself.
 *
 * Watching a table's memory
 * -------------------------
 * cowmap_cell_stats() costs a few atomic loads: poll it as often as you
 * like (here every half second).  After each publish, pending_bytes holds
 * what the replaced version alone kept alive, and falls back within a few
 * grace periods (replaced versions wait in batches, one grace period per
 * batch), once every reader that might use them has left its read-side
 * critical section.  If pending_bytes (and pending_versions)
 * keeps growing, grace periods are stalled: some thread is stuck inside a
 * read-side critical section (or, with urcu-qsbr, stopped announcing
 * quiescent states), and no replaced version can be freed until it moves.
 * cowmap_stats() walks a whole version (O(size)): call it now and then to
 * see what the table itself costs.  Its bytes count the trie, not the
 * records the values point to.
 */
#include <urcu/urcu-memb.h>	/* the flavor every thread here reads with */
#include <cowmap.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_READERS 64

enum {
	USER_ACTIVE = 1u << 0,
	USER_ADMIN = 1u << 1,
	USER_LOCKED = 1u << 2,
};

/* A value of the table.  Immutable once published: changes replace it. */
struct user {
	uint64_t id;
	char name[24];
	uint32_t flags;
	uint32_t revision;	/* bumped by every change */
	uint64_t check;		/* checksum of the fields above */
};

static struct cowmap_cell *users;
static atomic_bool stop;

/* Records alive: made by the writer, freed by the map's value_free. */
static atomic_uint_least64_t records_made, records_freed;

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

static uint64_t next_random(uint64_t *state)	/* xorshift64* */
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * UINT64_C(2685821657736338717);
}

static uint64_t user_checksum(const struct user *u)
{
	uint64_t h = UINT64_C(1469598103934665603);	/* FNV-1a */
	const unsigned char *name = (const unsigned char *)u->name;

	h = (h ^ u->id) * UINT64_C(1099511628211);
	h = (h ^ u->flags) * UINT64_C(1099511628211);
	h = (h ^ u->revision) * UINT64_C(1099511628211);
	for (size_t i = 0; i < sizeof(u->name); i++)
		h = (h ^ name[i]) * UINT64_C(1099511628211);
	return h;
}

/* A new record; NULL when memory runs out. */
static struct user *user_new(uint64_t id, uint32_t revision, uint32_t flags)
{
	struct user *u = calloc(1, sizeof(*u));

	if (u == NULL)
		return NULL;
	u->id = id;
	u->flags = flags;
	u->revision = revision;
	snprintf(u->name, sizeof(u->name), "user%" PRIu64 "-r%" PRIu32, id,
		 revision);
	u->check = user_checksum(u);
	atomic_fetch_add_explicit(&records_made, 1, memory_order_relaxed);
	return u;
}

/* options.value_free: may run in liburcu's call_rcu thread. */
static void user_free(void *value, void *ctx)
{
	(void)ctx;
	free(value);
	atomic_fetch_add_explicit(&records_freed, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* Readers                                                             */
/* ------------------------------------------------------------------ */

struct reader {
	pthread_t thread;
	uint64_t rng;
	uint64_t users;		/* ids are 1..users */
	unsigned stall_ms;	/* 0, or stall once for that long */
	double stall_at;
	_Atomic uint64_t lookups;	/* read by the monitor */
	uint64_t found, admins, corrupt;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	urcu_memb_register_thread();	/* before the first read-side section */
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		/* Some ids were never assigned: lookups miss too. */
		uint64_t id = 1 + next_random(&r->rng) % (r->users + r->users / 20);
		void *value;
		bool found, admin = false, corrupt = false;

		urcu_memb_read_lock();
		const struct cowmap *table = cowmap_cell_load(users);

		found = cowmap_get(table, &id, sizeof(id), &value) == 1;
		if (found) {
			/* Borrowed: use the record before the unlock. */
			const struct user *u = value;

			corrupt = u->id != id || u->check != user_checksum(u);
			admin = u->flags & USER_ADMIN;
		}
		if (r->stall_ms && now() >= r->stall_at) {
			/*
			 * Never do this: sleeping inside a read-side critical
			 * section holds up every grace period meanwhile.
			 */
			sleep_for(r->stall_ms / 1000.0);
			r->stall_ms = 0;
		}
		urcu_memb_read_unlock();

		r->found += found;
		r->admins += admin;
		r->corrupt += corrupt;
		/* Only this thread writes it: no read-modify-write needed. */
		atomic_store_explicit(&r->lookups,
				      atomic_load_explicit(&r->lookups,
							   memory_order_relaxed) + 1,
				      memory_order_relaxed);
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The writer                                                          */
/* ------------------------------------------------------------------ */

struct writer {
	pthread_t thread;
	uint64_t users;
	double rate;		/* changes per second */
	_Atomic uint64_t changes;	/* read by the monitor */
	uint64_t updated, deleted, created;
	bool failed;
};

/* Change one user: update most, delete some, bring deleted ones back. */
static int change_one(struct writer *w, uint64_t *rng)
{
	uint64_t id = 1 + next_random(rng) % w->users;
	struct user old = { 0 };
	bool exists;
	void *value;
	int rc;

	urcu_memb_read_lock();
	exists = cowmap_get(cowmap_cell_load(users), &id, sizeof(id),
			    &value) == 1;
	if (exists)
		old = *(const struct user *)value;	/* copy before unlocking */
	urcu_memb_read_unlock();

	if (exists && next_random(rng) % 10 == 0) {
		rc = cowmap_cell_del(users, &id, sizeof(id));
		w->deleted += rc == 1;
		return rc < 0 ? rc : 0;
	}

	uint32_t flags = exists ? old.flags ^ USER_LOCKED : USER_ACTIVE;
	struct user *u = user_new(id, exists ? old.revision + 1 : 1, flags);

	if (u == NULL)
		return -ENOMEM;
	/* The map owns u from here; the record it replaces is freed after
	 * a grace period, by value_free. */
	rc = cowmap_cell_set(users, &id, sizeof(id), u);
	if (rc < 0) {
		user_free(u, NULL);	/* on failure it is still ours */
		return rc;
	}
	if (exists)
		w->updated++;
	else
		w->created++;
	return 0;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t rng = 0x3779b97f4a7c15u;
	double next = now();

	urcu_memb_register_thread();	/* publishing uses call_rcu() */
	while (!atomic_load(&stop)) {
		int rc = change_one(w, &rng);

		if (rc < 0) {
			fprintf(stderr, "lookup-table: change failed: %s\n",
				strerror(-rc));
			w->failed = true;
			break;
		}
		atomic_store_explicit(&w->changes,
				      atomic_load_explicit(&w->changes,
							   memory_order_relaxed) + 1,
				      memory_order_relaxed);
		next += 1.0 / w->rate;
		if (next > now())
			sleep_for(next - now());
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */

/* The first version: users 1..n, built with one transaction. */
static struct cowmap *make_table(uint64_t n)
{
	const struct cowmap_options opts = { .value_free = user_free };
	struct cowmap *empty = cowmap_new(&opts);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;
	int rc = t ? 0 : -ENOMEM;

	cowmap_release(empty);	/* the transaction holds its own reference */
	for (uint64_t id = 1; rc == 0 && id <= n; id++) {
		struct user *u = user_new(id, 1, USER_ACTIVE |
					  (id % 100 == 0 ? USER_ADMIN : 0));

		if (u == NULL) {
			rc = -ENOMEM;
			break;
		}
		rc = cowmap_txn_set(t, &id, sizeof(id), u);
		if (rc < 0)
			user_free(u, NULL);
	}
	if (rc < 0) {
		cowmap_txn_abort(t);	/* frees the records it took */
		errno = -rc;
		return NULL;
	}
	return cowmap_txn_commit(t);
}

static double number(const char *opt, const char *text, double min,
		     double max)
{
	char *end;
	double v = strtod(text ? text : "", &end);

	if (text == NULL || end == text || *end || !(v >= min && v <= max)) {
		fprintf(stderr, "lookup-table: %s: expected a number in "
				"[%g, %g]\n", opt, min, max);
		exit(2);
	}
	return v;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: lookup-table [--seconds S] [--readers N] "
		     "[--users N] [--rate N] [--stall-ms N]\n");
}

static double kib(size_t bytes)
{
	return (double)bytes / 1024.0;
}

int main(int argc, char **argv)
{
	double seconds = 2, rate = 20;
	unsigned nreaders = 4, stall_ms = 0;
	uint64_t nusers = 100000;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[++i] : NULL;

		if (strcmp(a, "--seconds") == 0) {
			seconds = number(a, v, 0.1, 3600);
		} else if (strcmp(a, "--readers") == 0) {
			nreaders = (unsigned)number(a, v, 1, MAX_READERS);
		} else if (strcmp(a, "--users") == 0) {
			nusers = (uint64_t)number(a, v, 1, 1e8);
		} else if (strcmp(a, "--rate") == 0) {
			rate = number(a, v, 0.1, 1e6);
		} else if (strcmp(a, "--stall-ms") == 0) {
			stall_ms = (unsigned)number(a, v, 0, 60000);
		} else {
			usage(strcmp(a, "--help") == 0 ? stdout : stderr);
			return strcmp(a, "--help") == 0 ? EXIT_SUCCESS : 2;
		}
	}

	urcu_memb_register_thread();	/* creates, watches and frees the cell */

	struct cowmap *table = make_table(nusers);

	if (table == NULL) {
		perror("lookup-table: building the table");
		return EXIT_FAILURE;
	}
	users = cowmap_cell_new(table, &urcu_memb_flavor);	/* takes table */
	if (users == NULL) {
		perror("lookup-table: cowmap_cell_new");
		return EXIT_FAILURE;
	}
	printf("lookup-table: %" PRIu64 " users, %u reader threads, 1 writer "
	       "changing %.0f records/s, %.1f s%s\n", nusers, nreaders, rate,
	       seconds, stall_ms ? ", one reader stalls" : "");

	/* --- Run ---------------------------------------------------------- */
	static struct reader readers[MAX_READERS];
	struct writer w = { .users = nusers, .rate = rate };
	unsigned started = 0;
	bool ok = true;
	double start = now();

	atomic_init(&stop, false);
	for (; started < nreaders; started++) {
		struct reader *r = &readers[started];

		r->rng = 0x9e3779b97f4a7c15u * (started + 1);
		r->users = nusers;
		if (started == 0 && stall_ms) {
			r->stall_ms = stall_ms;
			r->stall_at = start + seconds / 3;
		}
		if (pthread_create(&r->thread, NULL, reader_main, r) != 0) {
			ok = false;
			break;
		}
	}
	bool writer_started = ok && pthread_create(&w.thread, NULL, writer_main,
						   &w) == 0;

	/* The monitor: O(1) cell statistics, twice a second. */
	printf("      time     lookups/s  changes  published  pending "
	       "(bytes in versions)\n");
	uint64_t last_lookups = 0;
	double last = start;

	for (unsigned tick = 1; ok && writer_started; tick++) {
		double at = start + tick * 0.5;

		if (at > start + seconds)
			at = start + seconds;

		double wait = at - now();

		if (wait > 0)
			sleep_for(wait);

		struct cowmap_cell_stats cs;
		uint64_t lookups = 0;
		double t = now();

		for (unsigned i = 0; i < started; i++)
			lookups += atomic_load_explicit(&readers[i].lookups,
							memory_order_relaxed);
		cowmap_cell_stats(users, &cs);
		printf("    %5.1f s  %10.0f  %7" PRIu64 "  %9" PRIu64
		       "  %8.1f KiB in %zu\n", t - start,
		       (double)(lookups - last_lookups) / (t - last),
		       atomic_load(&w.changes), cs.published,
		       kib(cs.pending_bytes), cs.pending_versions);
		last_lookups = lookups;
		last = t;
		if (t - start >= seconds - 1e-3)
			break;
	}
	atomic_store(&stop, true);
	double elapsed = now() - start;

	for (unsigned i = 0; i < started; i++)
		pthread_join(readers[i].thread, NULL);
	if (writer_started)
		pthread_join(w.thread, NULL);
	else
		ok = false;

	/* --- Report ------------------------------------------------------- */
	uint64_t lookups = 0, found = 0, corrupt = 0;

	for (unsigned i = 0; i < started; i++) {
		lookups += readers[i].lookups;
		found += readers[i].found;
		corrupt += readers[i].corrupt;
	}
	printf("lookups: %" PRIu64 " (%.1f M/s), %.1f%% found, corrupt "
	       "records seen: %" PRIu64 "\n", lookups,
	       (double)lookups / elapsed / 1e6,
	       lookups ? 100.0 * (double)found / (double)lookups : 0.0, corrupt);
	printf("changes: %" PRIu64 " updated, %" PRIu64 " deleted, %" PRIu64
	       " re-created\n", w.updated, w.deleted, w.created);

	/* What the current version costs: a snapshot, then an O(size) walk. */
	struct cowmap *snap = cowmap_cell_snapshot(users);
	struct cowmap_stats st;

	cowmap_stats(snap, &st);
	cowmap_release(snap);
	printf("cowmap_stats: %zu entries, %zu nodes, %.1f KiB (%.1f bytes per "
	       "entry, records not included), depth %zu\n", st.entries,
	       st.nodes, kib(st.bytes), (double)st.bytes / (double)st.entries,
	       st.max_depth);

	/* After a barrier every retired version has been freed. */
	struct cowmap_cell_stats cs;

	cowmap_cell_barrier(users);
	cowmap_cell_stats(users, &cs);
	printf("cowmap_cell_stats: %" PRIu64 " versions published; after "
	       "cowmap_cell_barrier(): %zu bytes in %zu versions pending\n",
	       cs.published, cs.pending_bytes, cs.pending_versions);
	printf("(pending_bytes is memory that replaced versions hold until "
	       "readers move on; if it keeps\n growing, a reader is stuck in "
	       "a read-side critical section and grace periods are stalled)\n");

	cowmap_cell_free(users);	/* frees every record still in the table */

	uint64_t made = atomic_load(&records_made);
	uint64_t freed = atomic_load(&records_freed);

	printf("records: %" PRIu64 " allocated, %" PRIu64 " freed by "
	       "value_free\n", made, freed);
	if (corrupt || w.failed || made != freed || cs.pending_bytes ||
	    cs.pending_versions || st.entries != nusers - w.deleted + w.created)
		ok = false;
	urcu_memb_unregister_thread();
	printf("lookup-table: %s\n", ok ? "OK" : "FAILED");
	return ok ? EXIT_SUCCESS : EXIT_FAILURE;
}
