/*
 * cell.c - the RCU-published current version.
 *
 * Readers: cowmap_cell_load() is one acquire load of `current`.  The
 * version it returns stays allocated until the reader's critical section
 * ends, because the cell drops its own reference to a replaced version
 * only from a call_rcu() callback, i.e. after a grace period.  Nothing
 * else a reader touches is ever freed earlier: every node reachable from
 * that version is held by it or, where a lone write made the successor's
 * root take over its root's references (lib/lend.c), by that successor,
 * which is retired later and so freed after a later grace period still.
 *
 * Writers: one mutex per cell serialises them.  A publish stores the new
 * version with release order (so its nodes are visible before its address
 * is) and retires every version it replaces (the old current one, and
 * in a combined publish the unpublished ones in between): each is
 * retired whole, and its release, after a grace period, frees precisely
 * the nodes and values no remaining version reaches.
 *
 * One callback per grace period, not per version.  Retired versions
 * gather on the cell, and only one batch at a time waits in call_rcu():
 * its callback hands on whatever gathered meanwhile as the next batch.
 * A call_rcu() per publish made every writer an RCU reader (call_rcu()
 * takes the read lock) a few hundred thousand times a second, and each of
 * those unlocks woke the call_rcu thread's grace period while it waited
 * for a reader: on two cores, that thread then kept preempting the reader
 * it was waiting for.  Measured with one reader and a flat-out writer on
 * 100k keys: 14,000 membarrier() calls and 8,000 futex() wake-ups in 2 s,
 * and the reader on its core 80% of the time.  liburcu runs one grace
 * period per loop of its thread whatever the number of callbacks, so a
 * batch per loop frees as soon as before.  The price: rcu_barrier() no
 * longer covers what gathered behind the batch in flight, so
 * cowmap_cell_barrier() sends a mark down the same line and waits for it.
 *
 * Who frees.  The callback only says that the grace period is over: it
 * puts the batch on the cell's ready list, and the cell's writers free
 * what is ready, a few records per publish, after they let go of the
 * writer mutex.  Freeing a version touches every node of the old path,
 * on lines the writer's core has just written; left to liburcu's call_rcu
 * thread, that work ran on a third busy thread, which on a two-core
 * machine took a share of the reader's core and pulled those lines
 * across.  Charged to the writer, a writer that publishes flat out also
 * slows down by what its garbage costs, instead of leaving it to others.
 * When writes stop, nothing may be left waiting: the callback that finds
 * nothing gathered after it (so no later callback is coming) frees the
 * whole list itself, and cowmap_cell_free() waits for the last callback.
 *
 * Combining: cowmap_cell_set/del push their request on a lock-free stack
 * and then take the mutex, or watch their request for a while until the
 * writer holding it has applied it.  Whoever gets the mutex applies every
 * queued request, each a lone update lending from the last (a
 * transaction cannot lend, and copying its paths cost more than the
 * publishes it saved), and publishes once.  The other writers meanwhile
 * return, or free what is ready, instead of sleeping on the mutex.
 *
 * Misuse: debug builds check a magic number in every cowmap_cell_* call
 * and free cells through the allocator's quarantine, poisoned, so a cell
 * used after cowmap_cell_free() is reported and answered with EINVAL
 * instead of corrupting memory that malloc has handed out again.
 *
 * This is the only file that knows about RCU.
 */
#include <urcu/urcu-memb.h>	/* before cowmap.h: see DESIGN / README */

#include "map.h"

#include "alloc.h"
#include "prefix.h"

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

	/* Writers only. */
	alignas(64) pthread_mutex_t writer;
	struct cell_request *_Atomic requests;
	atomic_uint_least64_t published;
	atomic_size_t pending_bytes, pending_nodes, pending_versions;

	/*
	 * Retired versions on their way to being freed.  gathering: the
	 * retired versions not yet handed to call_rcu(), a lock-free stack,
	 * with CM_IN_FLIGHT or-ed into the word while a batch waits in
	 * call_rcu() (one word, so that "push, or take the stack if nothing
	 * is in flight" and "take what gathered, or say nothing is in
	 * flight" are each one CAS: see push_or_claim() and batch_done()).
	 * batches_out: batches handed to call_rcu() whose callback has not
	 * returned (cowmap_cell_free() waits for zero).  ready: past their
	 * grace period (see "Who frees"), pushed by the callbacks; a writer
	 * takes the whole stack at once into taken, from which each publish
	 * frees a few.  reclaim_lock guards taken (the atomic is for the
	 * unlocked look that finds nothing to do).
	 */
	atomic_uintptr_t gathering;
	atomic_size_t batches_out;
	struct retired *_Atomic ready;
	pthread_mutex_t reclaim_lock;
	struct retired *_Atomic taken;
};

/* Records a writer frees per publish: more than the one each publish
 * retires, so the list drains, and few enough that a publish stays short.
 * Batches arrive a grace period at a time, so most publishes free none. */
#define CM_FREE_PER_PUBLISH 4

/* Rounds a writer waits for the writer holding the lock to answer its
 * request before sleeping on the lock (see submit()). */
#define CM_COMBINE_SPIN 2000

/* One retired version waiting for its grace period.  head comes first so
 * the callback gets the record back with a plain conversion; only the
 * first record of a batch has its head queued.  A record whose version
 * is NULL is a barrier's mark (struct barrier_mark), not a version. */
struct retired {
	struct rcu_head head;
	struct retired *next;	/* in its batch, then on the ready list */
	struct cowmap *version;
	struct cowmap_cell *cell;
	size_t bytes, nodes;
};

/* cowmap_cell_barrier()'s place in the line of retired versions: set
 * done once the batch that carried it is past its grace period. */
struct barrier_mark {
	struct retired r;
	atomic_bool done;
};

/* In the gathering word: a batch waits in call_rcu().  Records are
 * malloc'd or on a stack, so their low bit is free. */
#define CM_IN_FLIGHT ((uintptr_t)1)

static struct retired *stack_of(uintptr_t word)
{
	return (struct retired *)(word & ~CM_IN_FLIGHT);
}

/*
 * What does a retired version hold that no other version shares?  Follow
 * the references that are the sole ones: after a single-key update that is
 * the old path, so the estimate costs about what the free will.  It counts
 * the retired version as if nobody else held it; a snapshot of it (the
 * `expected` of a cas, say) only delays the free further, so the bytes are
 * still reported as waiting.  Snapshot holders may take or drop references
 * meanwhile, which makes the figure an estimate.
 */
static bool held_once(const atomic_uint *refs)
{
	return (atomic_load_explicit(refs, memory_order_relaxed) &
		CM_REFS_COUNT) == 1;
}

static void count_sole_leaf(const struct cm_entry *e, size_t *bytes)
{
	if (cm_entry_boxed(e) && held_once(&e->u.leaf->refs))
		*bytes += sizeof(struct cm_leaf) + cm_entry_len(e);
}

static void sole_owned(const struct cm_node *n, size_t *bytes, size_t *nodes)
{
	if (!held_once(cm_node_refs(n)))
		return;
	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);

	*bytes += cm_node_bytes(n);
	*nodes += 1;
	for (unsigned i = 0; i < ne; i++)
		count_sole_leaf(&cm_node_entries(n)[i], bytes);
	for (unsigned i = 0; i < nc; i++)
		sole_owned(cm_children(n)[i], bytes, nodes);
}

/*
 * The same for a version that one key's update replaced (the key hashes
 * to @hash): the update retained every child and entry of the nodes it
 * copied except the one on the key's path, so only that path can be the
 * old version's alone.  The walk costs the depth, not a look at every
 * child of every copied node (some 60 scattered reference counts on a
 * 1M-entry map, read under the writer mutex).
 */
static void sole_owned_path(const struct cm_node *n, uint64_t hash,
			    size_t *bytes, size_t *nodes)
{
	for (unsigned depth = 0; n != NULL && held_once(cm_node_refs(n));
	     depth++) {
		*bytes += cm_node_bytes(n);
		*nodes += 1;
		if (depth == CM_COLLISION_DEPTH) {
			for (unsigned i = 0; i < n->datamap; i++)
				count_sole_leaf(&cm_node_entries(n)[i], bytes);
			return;
		}

		uint32_t bit = cm_bit(hash, depth);
		const struct cm_entry *e = cm_slot_entry(n, bit);

		if (e != NULL) {
			count_sole_leaf(e, bytes);
			return;
		}
		n = cm_slot_child(n, bit);
	}
}

/*
 * Add what @r waits to free to the cell's pending figures (@sign 1), or
 * take it off (-1) once freed.  Release: a stats reader that sees the
 * versions count fall sees the frees before it.
 */
static void count_pending(struct cowmap_cell *c, const struct retired *r,
			  int sign)
{
	size_t d = sign > 0 ? 1 : SIZE_MAX;	/* +1 or -1, modulo 2^n */

	atomic_fetch_add_explicit(&c->pending_bytes, d * r->bytes,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&c->pending_nodes, d * r->nodes,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&c->pending_versions, d,
				  memory_order_release);
}

/* Free retired versions whose grace period is over, and their records. */
static void free_retired(struct cowmap_cell *c, struct retired *r)
{
	while (r != NULL) {
		struct retired *next = r->next;

		cowmap_release(r->version);
		count_pending(c, r, -1);
		cm_free(r);
		r = next;
	}
}

/*
 * Every ready version and the records in taken, freed now.  The frees
 * run under reclaim_lock, here and in free_some_ready(), so that whoever
 * takes the lock next knows that versions taken off the lists before it
 * are freed, not just on their way (cowmap_cell_barrier() relies on it).
 */
static void free_all_ready(struct cowmap_cell *c)
{
	pthread_mutex_lock(&c->reclaim_lock);
	free_retired(c, atomic_exchange_explicit(&c->taken, NULL,
						 memory_order_relaxed));
	free_retired(c, atomic_exchange_explicit(&c->ready, NULL,
						 memory_order_acquire));
	pthread_mutex_unlock(&c->reclaim_lock);
}

static void batch_done(struct rcu_head *head);

static void send_batch(struct cowmap_cell *c, struct retired *batch)
{
	atomic_fetch_add_explicit(&c->batches_out, 1, memory_order_relaxed);
	c->flavor->update_call_rcu(&batch->head, batch_done);
}

/*
 * Push @r on the gathering stack; or, if no batch is in flight, claim the
 * next one and return it (@r alone: the stack is empty whenever the bit
 * is clear, since only the callback of the batch in flight clears it, and
 * only when nothing gathered).  The caller then sends it; the word says a
 * batch is in flight from this CAS on.  Acq_rel: the records pushed
 * before are read by whoever takes them.
 */
static struct retired *push_or_claim(struct cowmap_cell *c, struct retired *r)
{
	uintptr_t old = atomic_load_explicit(&c->gathering,
					     memory_order_relaxed);
	uintptr_t word;

	do {
		r->next = stack_of(old);
		word = (old & CM_IN_FLIGHT) ? (uintptr_t)r | CM_IN_FLIGHT
					    : CM_IN_FLIGHT;
	} while (!atomic_compare_exchange_weak_explicit(
		&c->gathering, &old, word, memory_order_acq_rel,
		memory_order_relaxed));
	return (old & CM_IN_FLIGHT) ? NULL : r;
}

/* @r joins the line: gathered behind the batch in flight, or sent as the
 * next batch if none is. */
static void line_up(struct cowmap_cell *c, struct retired *r)
{
	struct retired *batch = push_or_claim(c, r);

	if (batch != NULL)
		send_batch(c, batch);
}

/*
 * Take @batch's barrier marks out of it (they are no versions), keeping
 * the rest in order; returns what is left, its last record in *@last and
 * the marks in *@marks.  The one walk over the batch.
 */
static struct retired *take_marks(struct retired *batch,
				  struct retired **last,
				  struct retired **marks)
{
	struct retired **link = &batch;

	*last = NULL;
	*marks = NULL;
	while (*link != NULL) {
		struct retired *r = *link;

		if (r->version != NULL) {
			*last = r;
			link = &r->next;
			continue;
		}
		*link = r->next;
		r->next = *marks;
		*marks = r;
	}
	return batch;
}

/* Put a batch (a list from @batch to @last) on the ready stack in one
 * CAS. */
static void push_ready(struct cowmap_cell *c, struct retired *batch,
		       struct retired *last)
{
	struct retired *top = atomic_load_explicit(&c->ready,
						   memory_order_relaxed);

	do
		last->next = top;
	while (!atomic_compare_exchange_weak_explicit(
		&c->ready, &top, batch, memory_order_release,
		memory_order_relaxed));
}

/*
 * @head's batch is past its grace period: ready it for the writers, send
 * what gathered meanwhile as the next batch or, if nothing did, say that
 * no batch is in flight and free every ready version now (no later
 * callback is coming to do it), then tell the barriers whose marks rode
 * in this batch.  The batch count goes down last: from then on
 * cowmap_cell_free() may free the cell.
 */
static void batch_done(struct rcu_head *head)
{
	struct retired *last, *marks;
	struct cowmap_cell *c = ((struct retired *)(void *)head)->cell;
	struct retired *batch = take_marks((struct retired *)(void *)head,
					   &last, &marks);

	if (batch != NULL)
		push_ready(c, batch, last);

	uintptr_t old = atomic_load_explicit(&c->gathering,
					     memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(
		&c->gathering, &old, stack_of(old) != NULL ? CM_IN_FLIGHT : 0,
		memory_order_acq_rel, memory_order_relaxed))
		;
#ifdef COWMAP_DEBUG
	/* This batch was the one in flight; a flavor that ran a callback
	 * twice, or a second batch, would break that. */
	if (!(old & CM_IN_FLIGHT))
		cm_debug_report("cowmap cell callback", "no batch was in flight");
#endif
	if (stack_of(old) != NULL)
		send_batch(c, stack_of(old));
	else
		free_all_ready(c);
	while (marks != NULL) {
		struct retired *next = marks->next;
		struct barrier_mark *m =
			(struct barrier_mark *)(void *)marks;

		atomic_store_explicit(&m->done, true, memory_order_release);
		marks = next;
	}
	atomic_fetch_sub_explicit(&c->batches_out, 1, memory_order_release);
}

/* A writer, after its publish and outside the writer mutex: free a few
 * of the versions that are ready, unless another thread is at it. */
static void free_some_ready(struct cowmap_cell *c)
{
	if (atomic_load_explicit(&c->ready, memory_order_relaxed) == NULL &&
	    atomic_load_explicit(&c->taken, memory_order_relaxed) == NULL)
		return;
	if (pthread_mutex_trylock(&c->reclaim_lock) != 0)
		return;

	struct retired *batch = atomic_load_explicit(&c->taken,
						     memory_order_relaxed);

	if (batch == NULL)
		batch = atomic_exchange_explicit(&c->ready, NULL,
						 memory_order_acquire);

	struct retired *rest = batch, *last = NULL;

	for (int i = 0; i < CM_FREE_PER_PUBLISH && rest != NULL; i++) {
		last = rest;
		rest = rest->next;
	}
	if (last != NULL)
		last->next = NULL;
	atomic_store_explicit(&c->taken, rest, memory_order_relaxed);
	free_retired(c, batch);
	pthread_mutex_unlock(&c->reclaim_lock);
}

/*
 * Fill @r for retiring @old: what it alone holds.  @lone_hash: when the
 * version that replaces @old is @old with one key's update, that key's
 * hash; otherwise NULL.
 */
static void count_retired(struct cowmap_cell *c, struct retired *r,
			  struct cowmap *old, const uint64_t *lone_hash)
{
	r->version = old;
	r->cell = c;
	r->bytes = sizeof(*old);
	r->nodes = 0;
	if (old->kind == CM_KIND_PREFIX)
		cm_prefix_sole_owned(old, &r->bytes, &r->nodes);
	else if (lone_hash != NULL)
		sole_owned_path(old->root, *lone_hash, &r->bytes, &r->nodes);
	else
		sole_owned(old->root, &r->bytes, &r->nodes);
}

/* Queue @r's grace period; the version must be out of every reader's
 * reach from now on. */
static void queue_retired(struct cowmap_cell *c, struct retired *r)
{
	count_pending(c, r, 1);
	line_up(c, r);
}

/*
 * Make @next current; called with the writer mutex held.  Consumes @next
 * and @r (the retirement record allocated before anything changed, so
 * nothing here can fail).  @lone_hash as for count_retired().
 */
static void install(struct cowmap_cell *c, struct cowmap *next,
		    struct retired *r, const uint64_t *lone_hash)
{
	struct cowmap *old = atomic_load_explicit(&c->current,
						  memory_order_relaxed);

	atomic_store_explicit(&c->current, next, memory_order_release);
	atomic_fetch_add_explicit(&c->published, 1, memory_order_relaxed);
	count_retired(c, r, old, lone_hash);
	queue_retired(c, r);
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
	if (c != NULL && pthread_mutex_init(&c->reclaim_lock, NULL) != 0) {
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
	c->flavor = flavor != NULL ? flavor : &urcu_memb_flavor;
	c->magic = CM_CELL_LIVE;
	atomic_init(&c->requests, NULL);
	atomic_init(&c->published, 0);
	atomic_init(&c->pending_bytes, 0);
	atomic_init(&c->pending_nodes, 0);
	atomic_init(&c->pending_versions, 0);
	atomic_init(&c->gathering, 0);
	atomic_init(&c->batches_out, 0);
	atomic_init(&c->ready, NULL);
	atomic_init(&c->taken, NULL);
	return c;
}

/*
 * Is the calling thread inside a read-side critical section of @c's
 * flavor?  Waiting there for a grace period would wait for itself:
 * rcu_barrier() then returns at once with a warning, so the loop of
 * cowmap_cell_barrier() would spin for ever, and cowmap_cell_free()
 * would hang in synchronize_rcu().  QSBR has no sections to see:
 * read_ongoing() says whether the thread is online, which a writer must
 * be; so, as rcu_barrier() does, ask again after going offline, which
 * QSBR answers with false and the other flavors (where going offline
 * does nothing) with true inside a section.
 */
static bool in_read_section(struct cowmap_cell *c)
{
	const struct rcu_flavor_struct *f = c->flavor;

	if (!f->read_ongoing())
		return false;
	f->thread_offline();

	bool inside = f->read_ongoing();

	f->thread_online();
	return inside;
}

/*
 * A barrier mark joins the line of retired versions like one of them:
 * every version retired before it is in its batch or an earlier one, and
 * batches finish one at a time, in order.  So once the mark's batch is
 * done, each of those versions is ready or freed; free_all_ready() then
 * frees the ready ones, and takes the lock a writer frees under, so the
 * rest are freed too.  Each flavor barrier waits for the callbacks queued
 * before it; the batch carrying the mark may be queued later (a callback
 * or a writer between taking the stack and sending it), hence the loop.
 */
int cowmap_cell_barrier(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_barrier"))
		return -EINVAL;

	if (in_read_section(c))
		return -EDEADLK;

	struct barrier_mark mark = { .r = { .cell = c } };

	atomic_init(&mark.done, false);
	line_up(c, &mark.r);
	while (!atomic_load_explicit(&mark.done, memory_order_acquire))
		c->flavor->barrier();
	free_all_ready(c);
	return 0;
}

void cowmap_cell_free(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_free"))
		return;
	/* Waiting for the readers below would wait for this one: leave the
	 * cell as it is (a leak a checker shows) rather than hang. */
	if (in_read_section(c)) {
#ifdef COWMAP_DEBUG
		cm_debug_report("cowmap_cell_free",
				"called inside a read-side critical section; "
				"the cell was not freed");
#endif
		return;
	}

	struct cowmap *last = atomic_load_explicit(&c->current,
						   memory_order_relaxed);

	/* A reader that (wrongly) still runs cannot be left with freed
	 * memory: wait for it, then for every queued callback of ours. */
	c->flavor->update_synchronize_rcu();
	cowmap_release(last);
	/* Until the last callback has returned: it decrements the count as
	 * its last touch of the cell. */
	while (atomic_load_explicit(&c->batches_out, memory_order_acquire) != 0)
		c->flavor->barrier();
	/* That callback found nothing gathered and freed what was ready; a
	 * cell that never retired a version has the lists empty anyway. */
	free_all_ready(c);
	pthread_mutex_destroy(&c->reclaim_lock);
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
	return atomic_load_explicit(&c->current, memory_order_acquire);
}

struct cowmap *cowmap_cell_snapshot(struct cowmap_cell *c)
{
	if (!cell_live(c, "cowmap_cell_snapshot")) {
		errno = EINVAL;
		return NULL;
	}
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

	struct retired *r = cm_malloc(sizeof(*r));

	if (r == NULL) {
		cowmap_release(next);
		return -ENOMEM;
	}
	pthread_mutex_lock(&c->writer);
	if (check &&
	    atomic_load_explicit(&c->current, memory_order_relaxed) != expected) {
		pthread_mutex_unlock(&c->writer);
		cm_free(r);
		cowmap_release(next);
		return -EAGAIN;
	}
	install(c, next, r, NULL);
	pthread_mutex_unlock(&c->writer);
	free_some_ready(c);
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

	struct retired *r = cm_malloc(sizeof(*r));
	int rc = 0;

	if (r == NULL)
		return -ENOMEM;
	pthread_mutex_lock(&c->writer);

	struct cowmap *cur = atomic_load_explicit(&c->current,
						  memory_order_relaxed);

	errno = 0;
	struct cowmap *next = fn(cur, arg);

	if (next == NULL) {
		rc = errno != 0 ? -errno : -EINVAL;
	} else if (next == cur) {
		cowmap_release(next);	/* "no change": drop fn's reference */
	} else {
		install(c, next, r, NULL);
		r = NULL;
	}
	pthread_mutex_unlock(&c->writer);
	cm_free(r);
	free_some_ready(c);
	return rc;
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
	struct retired *cur_record = NULL, *between = NULL;
	uint64_t cur_hash = 0;

	for (struct cell_request *q = list; q != NULL; q = q->next) {
		struct cm_lookup l;

		if (v->kind != CM_KIND_HASH) {	/* a prefix table's cell */
			q->result = -EINVAL;
			continue;
		}
		cm_map_lookup(v, q->key, q->len, &l);

		int outcome = cm_lookup_outcome(v, &l, q->is_del, q->value);

		if (outcome <= 0) {
			q->result = outcome;
			continue;
		}

		struct retired *r = cm_malloc(sizeof(*r));

		if (r == NULL) {
			q->result = -ENOMEM;
			continue;
		}

		struct cowmap *next = apply_one(v, &l, q);

		if (next == NULL || next == v) {
			cowmap_release(next);
			cm_free(r);
			continue;
		}
		if (v == cur) {
			cur_record = r;
			cur_hash = l.probe.hash;
		} else {
			count_retired(c, r, v, &l.probe.hash);
			r->next = between;
			between = r;
		}
		v = next;
	}
	if (v != cur)
		install(c, v, cur_record, &cur_hash);
	while (between != NULL) {
		struct retired *r = between;

		between = r->next;
		queue_retired(c, r);
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
	free_some_ready(c);
	return q->result;
}

int cowmap_cell_set(struct cowmap_cell *c, const void *key, size_t len,
		    void *value)
{
	if (!cell_live(c, "cowmap_cell_set") || cm_check_key(key, len) < 0)
		return -EINVAL;

	struct cell_request q = { .key = key, .len = len, .value = value };

	return submit(c, &q);
}

int cowmap_cell_del(struct cowmap_cell *c, const void *key, size_t len)
{
	if (!cell_live(c, "cowmap_cell_del") || cm_check_key(key, len) < 0)
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
	out->pending_bytes = atomic_load_explicit(&c->pending_bytes,
						  memory_order_relaxed);
	out->pending_nodes = atomic_load_explicit(&c->pending_nodes,
						  memory_order_relaxed);
	out->pending_versions = atomic_load_explicit(&c->pending_versions,
						     memory_order_acquire);
	return 0;
}
