/*
 * cell.c - the RCU-published current version.
 *
 * Readers: cowmap_cell_load() is one acquire load of `current`.  The
 * version it returns stays allocated until the reader's critical section
 * ends, because the cell drops its own reference to a replaced version
 * only after a grace period (lib/reclaim.c).  Nothing else a reader
 * touches is ever freed earlier: every node reachable from that version
 * is held by it or, where a lone write made the successor's root take
 * over its root's references (lib/lend.c), by that successor, which is
 * retired later and so freed after a later grace period still.
 *
 * Writers: one mutex per cell serialises them.  A publish stores the new
 * version with release order (so its nodes are visible before its address
 * is) and retires every version it replaces (the old current one, and
 * in a combined publish the unpublished ones in between) to the cell's
 * reclaim line (lib/reclaim.c); after letting go of the mutex, each
 * publishing call pays its share of the freeing there, which is what
 * keeps the memory waiting for a grace period bounded.
 *
 * Combining: cowmap_cell_set/del push their request on a lock-free stack
 * and then take the mutex, or watch their request for a while until the
 * writer holding it has applied it.  Whoever gets the mutex applies every
 * queued request, each a lone update lending from the last (a
 * transaction cannot lend, and copying its paths cost more than the
 * publishes it saved), and publishes once.  The other writers meanwhile
 * return, or free what is ready, instead of sleeping on the mutex.
 *
 * A cell publishes only versions of the family of its first (same kind
 * and width, hash function, value_free, context and limit; the seed may
 * differ, see cm_same_family()): a version of another family would have
 * its values freed by the wrong function, or never.
 *
 * Misuse: debug builds check a magic number in every cowmap_cell_* call
 * and free cells through the allocator's quarantine, poisoned, so a cell
 * used after cowmap_cell_free() is reported and answered with EINVAL
 * instead of corrupting memory that malloc has handed out again; they
 * also report a cell read from a thread that is not registered with the
 * cell's flavor (lib/rcu_debug.c).
 */
#include <urcu/urcu-memb.h>	/* before cowmap.h: see DESIGN / README */

#include "map.h"
#include "reclaim.h"

#include "alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>

#define CM_CELL_LIVE 0x63656c6cu	/* "cell" */
#define CM_CELL_DEAD 0x63656c2du	/* "cel-" */

struct cell_request {
	struct cell_request *next;
	const void *key;
	size_t len;
	void *value;
	bool is_del;
	atomic_bool done;	/* set, after result, by whoever applied it */
	int result;
};

struct cowmap_cell {
	/* Read by every reader: kept on its own cache line. */
	alignas(64) struct cowmap *_Atomic current;
	const struct rcu_flavor_struct *flavor;
	uint32_t magic;		/* CM_CELL_LIVE until freed (checked in debug) */
	bool holds_map;		/* a hash map's cell, not a prefix table's: every
				 * version it publishes is of the first's kind */

	/* Writers only. */
	alignas(64) pthread_mutex_t writer;
	struct cell_request *_Atomic requests;
	atomic_uint_least64_t published;

	struct cm_reclaim reclaim;	/* what waits for a grace period */
};

/* Rounds a writer waits for the writer holding the lock to answer its
 * request before sleeping on the lock (see submit()). */
#define CM_COMBINE_SPIN 2000

/*
 * Make @next current; called with the writer mutex held.  Consumes @next
 * and @r (the retirement record allocated before anything changed, so
 * nothing here can fail).  @lone_hash: when @next is the current version
 * with one key's update, that key's hash; otherwise NULL.
 */
static void install(struct cowmap_cell *c, struct cowmap *next,
		    struct cm_retired *r, const uint64_t *lone_hash)
{
	struct cowmap *old = atomic_load_explicit(&c->current,
						  memory_order_relaxed);

	atomic_store_explicit(&c->current, next, memory_order_release);
	atomic_fetch_add_explicit(&c->published, 1, memory_order_relaxed);
	cm_retired_fill(r, old, lone_hash);
	cm_reclaim_retire(&c->reclaim, r);
}

/*
 * Is @c a cell that was not freed?  Release builds check NULL only: the
 * memory of a freed cell may already belong to someone else.  Debug builds
 * keep freed cells poisoned in the quarantine, so the magic can be read.
 */
static bool cell_live(const struct cowmap_cell *c, const char *call)
{
	if (c == NULL)
		return false;
#ifdef COWMAP_DEBUG
	if (c->magic != CM_CELL_LIVE) {
		cm_debug_report(call, "cell already freed");
		return false;
	}
#else
	(void)call;
#endif
	return true;
}

/* May @next be published in @c?  Only a version of the cell's family:
 * the current version's, which is the first version's.  Call with the
 * writer lock held: outside it, and outside a read-side section, the
 * current version may be retired and freed under the look. */
static bool family_ok(struct cowmap_cell *c, const struct cowmap *next)
{
	return cm_same_family(atomic_load_explicit(&c->current,
						   memory_order_relaxed),
			      next);
}

struct cowmap_cell *cowmap_cell_new(struct cowmap *initial,
				    const struct rcu_flavor_struct *flavor)
{
	/* A released @initial cannot be stolen (nor released again): refuse
	 * it before anything is allocated.  Only debug builds can tell. */
	if (initial != NULL && !cm_map_valid(initial)) {
		errno = EINVAL;
		return NULL;
	}

	struct cowmap_cell *c = cm_aligned_alloc(alignof(struct cowmap_cell),
						 sizeof(*c));

	if (initial == NULL && c != NULL) {
		initial = cowmap_new(NULL);
		if (initial == NULL) {
			cm_free(c);
			return NULL;
		}
	}
	if (c != NULL && pthread_mutex_init(&c->writer, NULL) != 0) {
		cm_free(c);
		c = NULL;
	}
	if (c != NULL &&
	    cm_reclaim_init(&c->reclaim, flavor != NULL ? flavor
							: &urcu_memb_flavor) != 0) {
		pthread_mutex_destroy(&c->writer);
		cm_free(c);
		c = NULL;
	}
	if (c == NULL) {
		cowmap_release(initial);
		errno = ENOMEM;
		return NULL;
	}
	atomic_init(&c->current, initial);
	c->flavor = c->reclaim.flavor;
	c->magic = CM_CELL_LIVE;
	c->holds_map = initial->kind == CM_KIND_HASH;
	atomic_init(&c->requests, NULL);
	atomic_init(&c->published, 0);
	return c;
}

int cowmap_cell_barrier(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_barrier"))
		return -EINVAL;
	return cm_reclaim_barrier(&c->reclaim);
}

void cowmap_cell_free(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_free"))
		return;
	/* Waiting for the readers below would wait for this one: leave the
	 * cell as it is, usable, and say so, rather than hang. */
	if (cm_in_read_section(c->flavor)) {
#ifdef COWMAP_DEBUG
		cm_debug_report("cowmap_cell_free",
				"called inside a read-side critical section; "
				"the cell was not freed");
#endif
		errno = EDEADLK;
		return;
	}

	struct cowmap *last = atomic_load_explicit(&c->current,
						   memory_order_relaxed);

	/* A reader that (wrongly) still runs cannot be left with freed
	 * memory: wait for it, then for every queued callback of ours. */
	c->flavor->update_synchronize_rcu();
	cowmap_release(last);
	cm_reclaim_destroy(&c->reclaim);
	pthread_mutex_destroy(&c->writer);
	c->magic = CM_CELL_DEAD;
#ifdef COWMAP_DEBUG
	cm_free_quarantined(c);	/* so a later use is caught */
#else
	cm_free(c);
#endif
}

const struct cowmap *cowmap_cell_load(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_load"))
		return NULL;
#ifdef COWMAP_DEBUG
	cm_debug_check_registered(c->flavor, "cowmap_cell_load");
#endif
	return atomic_load_explicit(&c->current, memory_order_acquire);
}

struct cowmap *cowmap_cell_snapshot(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_snapshot")) {
		errno = EINVAL;
		return NULL;
	}
#ifdef COWMAP_DEBUG
	cm_debug_check_registered(c->flavor, "cowmap_cell_snapshot");
#endif
	c->flavor->read_lock();
	/* Safe to retain: the cell's own reference outlives this section. */
	struct cowmap *m = cowmap_retain(
		atomic_load_explicit(&c->current, memory_order_acquire));
	c->flavor->read_unlock();
	return m;
}

/* Publish @next, if @check only while @expected is current. */
static int publish_if(struct cowmap_cell *c, bool check,
		      const struct cowmap *expected, struct cowmap *next)
{
	if (!cell_live(c, check ? "cowmap_cell_cas" : "cowmap_cell_publish") ||
	    !cm_map_valid(next)) {
		cowmap_release(next);
		return -EINVAL;
	}

	struct cm_retired *r = cm_retired_new();

	if (r == NULL) {
		cowmap_release(next);
		return -ENOMEM;
	}
	pthread_mutex_lock(&c->writer);
	if (!family_ok(c, next)) {
		pthread_mutex_unlock(&c->writer);
		cm_retired_discard(r);
		cowmap_release(next);
		return -EINVAL;
	}
	if (check &&
	    atomic_load_explicit(&c->current, memory_order_relaxed) != expected) {
		pthread_mutex_unlock(&c->writer);
		cm_retired_discard(r);
		cowmap_release(next);
		return -EAGAIN;
	}
	install(c, next, r, NULL);
	pthread_mutex_unlock(&c->writer);
	cm_reclaim_pay(&c->reclaim, 1);
	return 0;
}

int cowmap_cell_publish(struct cowmap_cell *c, struct cowmap *next)
{
	return publish_if(c, false, NULL, next);
}

int cowmap_cell_cas(struct cowmap_cell *c, const struct cowmap *expected,
		    struct cowmap *next)
{
	return publish_if(c, true, expected, next);
}

int cowmap_cell_update(struct cowmap_cell *c,
		       struct cowmap *(*fn)(const struct cowmap *cur,
					    void *arg),
		       void *arg)
{
	if (!cell_live(c, "cowmap_cell_update") || fn == NULL)
		return -EINVAL;

	struct cm_retired *r = cm_retired_new();
	int rc = 0;

	if (r == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&c->writer);

	struct cowmap *cur = atomic_load_explicit(&c->current,
						  memory_order_relaxed);
	struct cm_retain_watch watch;

	/* Count what fn does with cur's references: "no change" may come
	 * back as cur retained (as documented) or, a common slip, as cur
	 * itself; only in the first case is there a reference to drop. */
	cm_retain_watch_begin(&watch, cur);
	errno = 0;

	struct cowmap *next = fn(cur, arg);
	long held = cm_retain_watch_end(&watch);

	if (next == NULL) {
		rc = errno != 0 ? -errno : -EINVAL;
	} else if (next == cur) {
#ifdef COWMAP_DEBUG
		if (held < 0)
			cm_debug_report("cowmap_cell_update",
					"fn released the current version");
#endif
		if (held > 0)
			cowmap_release(next);
	} else if (!family_ok(c, next)) {
		cowmap_release(next);
		rc = -EINVAL;
	} else {
		install(c, next, r, NULL);
		r = NULL;
	}
	pthread_mutex_unlock(&c->writer);
	cm_retired_discard(r);
	cm_reclaim_pay(&c->reclaim, 1);
	return rc;
}

/**
 * cowmap_cell_set_pending_limit - see cowmap.h.
 */
int cowmap_cell_set_pending_limit(struct cowmap_cell *c, size_t bytes)
{
	if (!cell_live(c, "cowmap_cell_set_pending_limit"))
		return -EINVAL;
	atomic_store_explicit(&c->reclaim.limit, bytes, memory_order_relaxed);
	return 0;
}

/* ---- combined single-key writers ---- */

/* Tell each request's writer that it is answered.  A writer may return
 * the moment it sees its flag, taking the request (on its stack) with it,
 * so the next one is read first. */
static void mark_done(struct cell_request *list)
{
	while (list != NULL) {
		struct cell_request *next = list->next;

		atomic_store_explicit(&list->done, true, memory_order_release);
		list = next;
	}
}

static struct cowmap *cur_of(struct cowmap_cell *c)
{
	return atomic_load_explicit(&c->current, memory_order_relaxed);
}

/*
 * One request, which the look-up @l in @cur could not answer, as a
 * persistent update.  @cur is retired right after, so if only it holds
 * its root, the path's copies take over its references (lib/lend.c)
 * instead of adding to every child's count.
 */
static struct cowmap *apply_one(struct cowmap *cur, const struct cm_lookup *l,
				struct cell_request *q)
{
	bool lend = cm_lend_root_ok(cur);
	unsigned lent = 0;
	struct cowmap *next;

	if (q->is_del) {
		next = cm_map_del_at(cur, l, lend, &lent);
		q->result = next == NULL ? -errno : next != cur;
	} else {
		next = cm_map_set_at(cur, l, q->value, lend, &lent);
		q->result = next == NULL ? -errno : 0;
	}
	if (lend && next != NULL && next != cur)
		cm_lend_mark(cur, l->probe.hash, lent);
	return next;
}

/* Called with the writer mutex held: serve every queued request. */
static void combine(struct cowmap_cell *c)
{
	struct cell_request *stack = atomic_exchange_explicit(
		&c->requests, NULL, memory_order_acquire);
	struct cell_request *list = NULL;

	while (stack != NULL) {	/* reverse into arrival order */
		struct cell_request *q = stack;

		stack = q->next;
		q->next = list;
		list = q;
	}
	if (list == NULL)
		return;

	/*
	 * The writer mutex is held: cur stays current until install().  Each
	 * request is a lone update of the version before it, lending from it
	 * (lib/lend.c), and only the last version is published.  The ones in
	 * between were never readers' to see, but they lent from cur, which
	 * readers may walk until the publish: they are retired after it, so
	 * that their grace period covers those readers too.
	 *
	 * A request that changes nothing (deleting an absent key, storing
	 * the value a key already has) or that the limit refuses is answered
	 * from the look-up before anything is allocated, so it cannot fail
	 * with ENOMEM; otherwise the update reuses the look-up.
	 */
	struct cowmap *cur = cur_of(c), *v = cur;
	struct cm_retired *cur_record = NULL, *between = NULL;
	uint64_t cur_hash = 0;

	for (struct cell_request *q = list; q != NULL; q = q->next) {
		struct cm_lookup l;

		cm_map_lookup(v, q->key, q->len, &l);

		int outcome = cm_lookup_outcome(v, &l, q->is_del, q->value);

		if (outcome <= 0) {
			q->result = outcome;
			continue;
		}

		struct cm_retired *r = cm_retired_new();

		if (r == NULL) {
			q->result = -ENOMEM;
			continue;
		}

		struct cowmap *next = apply_one(v, &l, q);

		if (next == NULL || next == v) {
			cowmap_release(next);
			cm_retired_discard(r);
			continue;
		}
		if (v == cur) {
			cur_record = r;
			cur_hash = l.probe.hash;
		} else {
			cm_retired_fill(r, v, &l.probe.hash);
			*cm_retired_link(r) = between;
			between = r;
		}
		v = next;
	}
	if (v != cur)
		install(c, v, cur_record, &cur_hash);
	while (between != NULL) {
		struct cm_retired *r = between;

		between = *cm_retired_link(r);
		cm_reclaim_retire(&c->reclaim, r);
	}
	mark_done(list);
}

/* Put @q on the cell's stack of requests for the lock holder. */
static void queue_request(struct cowmap_cell *c, struct cell_request *q)
{
	struct cell_request *head =
		atomic_load_explicit(&c->requests, memory_order_relaxed);

	do
		q->next = head;
	while (!atomic_compare_exchange_weak_explicit(
		&c->requests, &head, q, memory_order_release,
		memory_order_relaxed));
}

/*
 * Another writer holds the lock and may well apply @q with its own
 * requests: watch for that, and for the lock, a little while before
 * sleeping on it.  A publish is a microsecond or two; being put to sleep
 * and woken costs more, and made two writers slower than one.  Returns
 * true with the lock held, false once @q is answered.
 */
static bool wait_for_answer_or_lock(struct cowmap_cell *c,
				    struct cell_request *q)
{
	for (int spin = 0;; spin++) {
		if (atomic_load_explicit(&q->done, memory_order_acquire))
			return false;
		if (spin % 8 == 0 && pthread_mutex_trylock(&c->writer) == 0)
			return true;
		if (spin == CM_COMBINE_SPIN) {
			pthread_mutex_lock(&c->writer);
			return true;
		}
		caa_cpu_relax();
	}
}

static int submit(struct cowmap_cell *c, struct cell_request *q)
{
	if (pthread_mutex_trylock(&c->writer) == 0) {
		queue_request(c, q);
	} else {
		/* While the holder works, walk the key's path: whoever
		 * applies the request then finds those nodes in the cache
		 * instead of waiting on memory for each, with the lock held.
		 * (Two writers went from about 0.8 to 1.0-1.2 times one.) */
		struct cm_lookup warm;

		c->flavor->read_lock();
		cm_map_lookup(atomic_load_explicit(&c->current,
						   memory_order_acquire),
			      q->key, q->len, &warm);
		c->flavor->read_unlock();
		queue_request(c, q);
		if (!wait_for_answer_or_lock(c, q))
			goto answered;
	}
	if (!atomic_load_explicit(&q->done, memory_order_relaxed))
		combine(c);
	pthread_mutex_unlock(&c->writer);
answered:
	cm_reclaim_pay(&c->reclaim, 1);
	return q->result;
}

int cowmap_cell_set(struct cowmap_cell *c, const void *key, size_t len,
		    void *value)
{
	if (!cell_live(c, "cowmap_cell_set") || !c->holds_map ||
	    cm_check_key(key, len) < 0)
		return -EINVAL;

	struct cell_request q = { .key = key, .len = len, .value = value };

	return submit(c, &q);
}

int cowmap_cell_del(struct cowmap_cell *c, const void *key, size_t len)
{
	if (!cell_live(c, "cowmap_cell_del") || !c->holds_map ||
	    cm_check_key(key, len) < 0)
		return -EINVAL;

	struct cell_request q = { .key = key, .len = len, .is_del = true };

	return submit(c, &q);
}

int cowmap_cell_stats(struct cowmap_cell *c, struct cowmap_cell_stats *out)
{
	if (!cell_live(c, "cowmap_cell_stats") || out == NULL)
		return -EINVAL;
	out->published = atomic_load_explicit(&c->published,
					      memory_order_relaxed);
	cm_reclaim_stats(&c->reclaim, out);
	return 0;
}
