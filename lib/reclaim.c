/*
 * reclaim.c - retired versions, freed after an RCU grace period, with a
 * bound on what may wait.
 *
 * The path of one retired version
 * -------------------------------
 *   cm_reclaim_retire()   the writer that replaced it counts what it alone
 *                         holds (pending_bytes) and pushes it on the
 *                         gathering stack; if no batch waits in call_rcu(),
 *                         it sends the stack as the next batch.
 *   batch_done()          liburcu's call_rcu thread, one grace period
 *                         later: the batch goes on the ready stack, what
 *                         gathered meanwhile goes out as the next batch.
 *   cm_reclaim_pay()      the writers, after each publishing call and
 *                         outside the writer lock, free ready versions:
 *                         cowmap_release() of each, which frees exactly the
 *                         nodes and values no other version holds.
 *
 * What freeing one version does, file by file:
 *   map.c         cm_version_release(): the version's last reference,
 *                 then by the version's kind and whether its root lent:
 *   node.c        cm_node_release(): every node whose last reference
 *                 this was, depth first, and cm_entry_release() for its
 *                 entries (value_free; the leaves of long keys);
 *   lend.c        cm_lend_free_version() / cm_lend_free(): a root or node
 *                 that lent its slots to its successor frees only its
 *                 shell and the one slot it kept;
 *   prefix_node.c cm_prefix_free_root(): the same for a prefix table;
 *   slab.c        cm_slab_free(): each block back to its size class
 *                 (alloc.c's cm_free() for blocks from malloc).
 *
 * One callback per grace period, not per version.  A call_rcu() per
 * publish made every writer an RCU reader (call_rcu() takes the read
 * lock) a few hundred thousand times a second, and each of those unlocks
 * woke the call_rcu thread's grace period while it waited for a reader:
 * on two cores, that thread then kept preempting the reader it was
 * waiting for (measured with one reader and a flat-out writer on 100k
 * keys: 14,000 membarrier() and 8,000 futex() calls in 2 s, the reader on
 * its core 80% of the time).  liburcu runs one grace period per loop of
 * its thread whatever the number of callbacks, so a batch per loop frees
 * as soon as one callback per version would.
 *
 * Why writers free.  Freeing a version touches every node of the old
 * path, on lines the writer's core has just written; left to the
 * call_rcu thread, that work ran on a third busy thread, which on a
 * two-core machine took a share of the reader's core and pulled those
 * lines across.  Charged to the writers, a writer that publishes flat out
 * also slows down by what its garbage costs, instead of leaving it to
 * others.
 *
 * The bound, and why it holds for any number of writers
 * -----------------------------------------------------
 * An earlier version let each writer free at most four versions, only if
 * it won a trylock, and the callback free only once writes stopped: with
 * four or more writers most calls lost the trylock, nothing else freed,
 * and retired versions piled up at hundreds of MB a second.  Now:
 *
 *  1. Every publishing call owes CM_PAY_PER_WRITE records, and each call
 *     retires at most one version per change it applied; so what writers
 *     owe grows at least as fast as what they retire.  A debt is never
 *     dropped while anything is ready: a writer that cannot take the lock
 *     adds its share to `debt`, and whoever holds the lock pays it too.
 *  2. The callback frees whatever has been ready for a whole grace period
 *     without the writers freeing it (writes slowed or stopped), and when
 *     nothing gathered behind its batch, everything ready.
 *  3. Above `limit` pending bytes (COWMAP_CELL_PENDING_LIMIT unless the
 *     cell was told otherwise), a writer waits for the next batch to pass
 *     its grace period, then frees until the cell is back under the limit.
 *     So pending bytes stay below the limit plus what each writer thread
 *     retires in one call, whatever the number of writers and however the
 *     scheduler treats the call_rcu thread.
 *
 * Only a grace period that does not end within CM_STALL_NS (a reader that
 * stays in its critical section, a QSBR thread that stops announcing
 * quiescent states, a writer inside a read-side section) can hold memory
 * back past the bound; that is what pending_bytes shows.  Writers must not
 * stop behind it: a wait that sees no batch end within CM_STALL_NS gives
 * up, and no writer waits again until a batch ends, so writes go on at
 * full speed and pending grows while the grace period is stuck, and drains
 * once it ends.
 *
 * Barriers.  cowmap_cell_barrier() sends a mark down the same line as the
 * retired versions (batches finish one at a time, in order) and waits for
 * it: rcu_barrier() alone would not cover what gathered behind the batch
 * in flight.
 */
#include "reclaim.h"

#include "map.h"

#include "alloc.h"

#include <errno.h>
#include <time.h>

/* Records each publishing call frees (or owes): more than the one it
 * retires, so a backlog drains, and few enough that one call stays short
 * when a whole batch becomes ready at once. */
#define CM_PAY_PER_WRITE 4

/* Records freed per hold of the lock before it is let go, so that the
 * writer that happens to hold it does not pay everyone's debt alone for
 * long: the rest stays owed, to the next writer that takes the lock. */
#define CM_PAY_PER_HOLD 256

/* How long a writer over the limit waits for a grace period to end
 * before taking it as stuck (see "The bound").  Grace periods here take
 * about 1 to 30 ms with writers flat out on every core, and passed
 * 100 ms with 16 writers under AddressSanitizer on a loaded machine:
 * a second is well beyond any grace period that is merely slow. */
#define CM_STALL_NS (1000 * 1000 * 1000L)

/*
 * Set on a thread once it has run one of our batch callbacks: a thread
 * that runs call_rcu callbacks.  A callback that writes a cell there must
 * not wait for a batch, which would run only after it, on that thread.
 * A thread is known as such only after its first batch; the header asks
 * callbacks not to write cells at all.
 */
static _Thread_local bool on_callback_thread;

/* One retired version waiting for its grace period.  head comes first so
 * the callback gets the record back with a plain conversion; only the
 * first record of a batch has its head queued.  A record whose version
 * is NULL is a barrier's mark (struct barrier_mark), not a version. */
struct cm_retired {
	struct rcu_head head;
	struct cm_retired *next;	/* in its batch, then on ready */
	struct cowmap *version;
	struct cm_reclaim *rc;
	size_t bytes, nodes;
};

/* cowmap_cell_barrier()'s place in the line of retired versions: set
 * done once the batch that carried it is past its grace period. */
struct barrier_mark {
	struct cm_retired r;
	atomic_bool done;
};

/* In the gathering word: a batch waits in call_rcu().  Records are
 * malloc'd or on a stack, so their low bit is free. */
#define CM_IN_FLIGHT ((uintptr_t)1)

static struct cm_retired *stack_of(uintptr_t word)
{
	return (struct cm_retired *)(word & ~CM_IN_FLIGHT);
}

int cm_reclaim_init(struct cm_reclaim *rc,
		    const struct rcu_flavor_struct *flavor)
{
	rc->flavor = flavor;
	if (pthread_mutex_init(&rc->lock, NULL) != 0)
		return -ENOMEM;
	if (pthread_mutex_init(&rc->wait_lock, NULL) != 0) {
		pthread_mutex_destroy(&rc->lock);
		return -ENOMEM;
	}

	pthread_condattr_t attr;
	int err = pthread_condattr_init(&attr);

	if (err == 0) {
		/* Deadlines on the clock that does not jump. */
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		err = pthread_cond_init(&rc->wait_cond, &attr);
		pthread_condattr_destroy(&attr);
	}
	if (err != 0) {
		pthread_mutex_destroy(&rc->wait_lock);
		pthread_mutex_destroy(&rc->lock);
		return -ENOMEM;
	}
	atomic_init(&rc->gathering, 0);
	atomic_init(&rc->batches_out, 0);
	atomic_init(&rc->ready, NULL);
	atomic_init(&rc->taken, NULL);
	atomic_init(&rc->debt, 0);
	atomic_init(&rc->limit, CM_PENDING_LIMIT_DEFAULT);
	atomic_init(&rc->batches_done, 0);
	atomic_init(&rc->stall_seen, 0);
	atomic_init(&rc->waiters, 0);
	atomic_init(&rc->pending_bytes, 0);
	atomic_init(&rc->pending_nodes, 0);
	atomic_init(&rc->pending_versions, 0);
	return 0;
}

struct cm_retired *cm_retired_new(void)
{
	return cm_malloc(sizeof(struct cm_retired));
}

void cm_retired_discard(struct cm_retired *r)
{
	cm_free(r);
}

/*
 * Add what @r waits to free to the pending figures (@sign 1), or take it
 * off (-1) once freed.  Release: a stats reader that sees the versions
 * count fall sees the frees before it.
 */
static void count_pending(struct cm_reclaim *rc, const struct cm_retired *r,
			  int sign)
{
	size_t d = sign > 0 ? 1 : SIZE_MAX;	/* +1 or -1, modulo 2^n */

	atomic_fetch_add_explicit(&rc->pending_bytes, d * r->bytes,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&rc->pending_nodes, d * r->nodes,
				  memory_order_relaxed);
	atomic_fetch_add_explicit(&rc->pending_versions, d,
				  memory_order_release);
}

static void free_one(struct cm_reclaim *rc, struct cm_retired *r)
{
	cm_version_release(r->version);	/* not a reference an update's fn took */
	count_pending(rc, r, -1);
	cm_free(r);
}

/*
 * With lock held: free up to @n ready records, taken first; returns how
 * many.  Frees run under the lock so that whoever takes it next knows
 * that records taken off the lists before it are freed, not just on
 * their way (the barrier relies on it).
 */
static size_t free_ready(struct cm_reclaim *rc, size_t n)
{
	struct cm_retired *list = atomic_load_explicit(&rc->taken,
						       memory_order_relaxed);
	size_t freed = 0;

	while (freed < n) {
		if (list == NULL) {
			list = atomic_exchange_explicit(&rc->ready, NULL,
							memory_order_acquire);
			if (list == NULL)
				break;
		}

		struct cm_retired *next = list->next;

		free_one(rc, list);
		list = next;
		freed++;
	}
	atomic_store_explicit(&rc->taken, list, memory_order_relaxed);
	return freed;
}

static bool anything_ready(struct cm_reclaim *rc)
{
	return atomic_load_explicit(&rc->ready, memory_order_relaxed) != NULL ||
	       atomic_load_explicit(&rc->taken, memory_order_relaxed) != NULL;
}

/* Every ready record, freed now. */
static void free_all_ready(struct cm_reclaim *rc)
{
	pthread_mutex_lock(&rc->lock);
	free_ready(rc, SIZE_MAX);
	pthread_mutex_unlock(&rc->lock);
}

/*
 * Pay what is owed, if the lock is free; otherwise the holder will.  A
 * debt that finds nothing ready is forgiven: there is nothing to free,
 * and what becomes ready later is owed by the writes that come later.
 * After letting go, look once more: a writer that failed its trylock
 * while this thread held the lock left its share in debt.
 */
static void settle(struct cm_reclaim *rc)
{
	for (int round = 0; round < 2; round++) {
		if (pthread_mutex_trylock(&rc->lock) != 0)
			return;

		size_t budget = CM_PAY_PER_HOLD;

		while (budget > 0) {
			size_t owed = atomic_exchange_explicit(
				&rc->debt, 0, memory_order_relaxed);

			if (owed == 0)
				break;
			if (owed > budget) {	/* leave the rest owed */
				atomic_fetch_add_explicit(&rc->debt,
							  owed - budget,
							  memory_order_relaxed);
				owed = budget;
			}

			size_t freed = free_ready(rc, owed);

			budget -= freed;
			if (freed < owed) {	/* nothing left ready */
				atomic_store_explicit(&rc->debt, 0,
						      memory_order_relaxed);
				break;
			}
		}
		pthread_mutex_unlock(&rc->lock);
		if (atomic_load_explicit(&rc->debt, memory_order_relaxed) == 0 ||
		    !anything_ready(rc))
			return;
	}
}

bool cm_in_read_section(const struct rcu_flavor_struct *f)
{
	/*
	 * QSBR has no sections to see: read_ongoing() says whether the
	 * thread is online, which a writer must be; so, as rcu_barrier()
	 * does, ask again after going offline, which QSBR answers with
	 * false and the other flavors (where going offline does nothing)
	 * with true inside a section.
	 */
	if (!f->read_ongoing())
		return false;
	f->thread_offline();

	bool inside = f->read_ongoing();

	f->thread_online();
	return inside;
}

static bool over_limit(struct cm_reclaim *rc)
{
	return atomic_load_explicit(&rc->pending_bytes, memory_order_relaxed) >
	       atomic_load_explicit(&rc->limit, memory_order_relaxed);
}

/*
 * Wait until a batch passes its grace period (batches_done moves on from
 * @seen), for at most CM_STALL_NS; returns false on a timeout.  Offline
 * meanwhile, so that a QSBR writer does not hold back the very grace
 * period it waits for (the other flavors' offline does nothing).  seq_cst
 * on waiters and batches_done: the callback either sees this waiter or
 * the waiter sees its batch (see batch_done()).
 */
static bool wait_for_batch(struct cm_reclaim *rc, uint64_t seen)
{
	struct timespec deadline;
	bool ended = true;

	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_nsec += CM_STALL_NS;
	deadline.tv_sec += deadline.tv_nsec / 1000000000L;
	deadline.tv_nsec %= 1000000000L;

	/* QSBR: only a thread that is online goes offline, and only it
	 * comes back (liburcu's own waits do the same). */
	bool was_online = rc->flavor->read_ongoing();

	if (was_online)
		rc->flavor->thread_offline();
	pthread_mutex_lock(&rc->wait_lock);
	atomic_fetch_add(&rc->waiters, 1);
	while (atomic_load(&rc->batches_done) == seen) {
		if (pthread_cond_timedwait(&rc->wait_cond, &rc->wait_lock,
					   &deadline) == ETIMEDOUT) {
			ended = atomic_load(&rc->batches_done) != seen;
			break;
		}
	}
	atomic_fetch_sub(&rc->waiters, 1);
	pthread_mutex_unlock(&rc->wait_lock);
	if (was_online)
		rc->flavor->thread_online();
	return ended;
}

/* A wait at @seen timed out: no writer waits again until a batch ends.
 * Only ever raised, so that a late store of an older timeout cannot
 * undo a newer one. */
static void note_stall(struct cm_reclaim *rc, uint64_t seen)
{
	uint64_t old = atomic_load_explicit(&rc->stall_seen,
					    memory_order_relaxed);

	while (old < seen + 1 &&
	       !atomic_compare_exchange_weak_explicit(
		       &rc->stall_seen, &old, seen + 1, memory_order_relaxed,
		       memory_order_relaxed))
		;
}

/*
 * Over the limit: wait for the next grace period, then free until under
 * it.  Not inside a read-side section (the wait would wait for itself),
 * not on a thread that runs call_rcu callbacks (the batch it would wait
 * for is queued behind the very callback that is writing), and not again
 * within a grace period that already made a writer wait in vain
 * (stall_seen holds batches_done + 1 of that one; 0 for none).
 */
static void hold_to_limit(struct cm_reclaim *rc)
{
	if (on_callback_thread)
		return;
	for (;;) {
		/* First: a batch that ends after this load ends the wait
		 * below; one that ended before it shows in the checks. */
		uint64_t seen = atomic_load(&rc->batches_done);

		if (!over_limit(rc))
			return;
		if (anything_ready(rc)) {
			pthread_mutex_lock(&rc->lock);
			while (over_limit(rc) &&
			       free_ready(rc, CM_PAY_PER_WRITE) != 0)
				;
			pthread_mutex_unlock(&rc->lock);
			continue;
		}
		if (!(atomic_load(&rc->gathering) & CM_IN_FLIGHT)) {
			/* No batch to wait for: every pending record is
			 * being freed by the lock's holder, or is a moment
			 * from joining the line (counted, not yet pushed, by
			 * a writer that may have been preempted there: do
			 * not spin on it).  Let the holder finish. */
			pthread_mutex_lock(&rc->lock);
			pthread_mutex_unlock(&rc->lock);
			return;
		}
		if (atomic_load_explicit(&rc->stall_seen,
					 memory_order_relaxed) == seen + 1)
			return;
		if (cm_in_read_section(rc->flavor))
			return;
		if (!wait_for_batch(rc, seen)) {
			note_stall(rc, seen);
			return;
		}
	}
}

void cm_reclaim_pay(struct cm_reclaim *rc, size_t quota)
{
	if (anything_ready(rc)) {
		atomic_fetch_add_explicit(&rc->debt, quota * CM_PAY_PER_WRITE,
					  memory_order_relaxed);
		settle(rc);
	}
	if (over_limit(rc))
		hold_to_limit(rc);
}

/* ---- the line of batches ---- */

static void batch_done(struct rcu_head *head);

static void send_batch(struct cm_reclaim *rc, struct cm_retired *batch)
{
	atomic_fetch_add_explicit(&rc->batches_out, 1, memory_order_relaxed);
	rc->flavor->update_call_rcu(&batch->head, batch_done);
}

/*
 * Push @r on the gathering stack; or, if no batch is in flight, claim the
 * next one and return it (@r alone: the stack is empty whenever the bit
 * is clear, since only the callback of the batch in flight clears it, and
 * only when nothing gathered).  The caller then sends it; the word says a
 * batch is in flight from this CAS on.  Acq_rel: the records pushed
 * before are read by whoever takes them.
 */
static struct cm_retired *push_or_claim(struct cm_reclaim *rc,
					struct cm_retired *r)
{
	uintptr_t old = atomic_load_explicit(&rc->gathering,
					     memory_order_relaxed);
	uintptr_t word;

	do {
		r->next = stack_of(old);
		word = (old & CM_IN_FLIGHT) ? (uintptr_t)r | CM_IN_FLIGHT
					    : CM_IN_FLIGHT;
	} while (!atomic_compare_exchange_weak_explicit(
		&rc->gathering, &old, word, memory_order_acq_rel,
		memory_order_relaxed));
	return (old & CM_IN_FLIGHT) ? NULL : r;
}

/* @r joins the line: gathered behind the batch in flight, or sent as the
 * next batch if none is. */
static void line_up(struct cm_reclaim *rc, struct cm_retired *r)
{
	struct cm_retired *batch = push_or_claim(rc, r);

	if (batch != NULL)
		send_batch(rc, batch);
}

void cm_retired_fill(struct cm_retired *r, struct cowmap *old,
		     const uint64_t *lone_hash)
{
	r->version = old;
	r->bytes = sizeof(*old);
	r->nodes = 0;
	cm_version_sole_owned(old, lone_hash, &r->bytes, &r->nodes);
}

struct cm_retired **cm_retired_link(struct cm_retired *r)
{
	return &r->next;
}

void cm_reclaim_retire(struct cm_reclaim *rc, struct cm_retired *r)
{
	r->rc = rc;
	count_pending(rc, r, 1);
	line_up(rc, r);
}

/*
 * Take @batch's barrier marks out of it (they are no versions), keeping
 * the rest in order; returns what is left, its last record in *@last and
 * the marks in *@marks.  The one walk over the batch.
 */
static struct cm_retired *take_marks(struct cm_retired *batch,
				     struct cm_retired **last,
				     struct cm_retired **marks)
{
	struct cm_retired **link = &batch;

	*last = NULL;
	*marks = NULL;
	while (*link != NULL) {
		struct cm_retired *r = *link;

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
static void push_ready(struct cm_reclaim *rc, struct cm_retired *batch,
		       struct cm_retired *last)
{
	struct cm_retired *top = atomic_load_explicit(&rc->ready,
						      memory_order_relaxed);

	do
		last->next = top;
	while (!atomic_compare_exchange_weak_explicit(
		&rc->ready, &top, batch, memory_order_release,
		memory_order_relaxed));
}

/* Tell waiting writers that a batch ended (see wait_for_batch()). */
static void wake_waiters(struct cm_reclaim *rc)
{
	atomic_fetch_add(&rc->batches_done, 1);
	if (atomic_load(&rc->waiters) == 0)
		return;
	pthread_mutex_lock(&rc->wait_lock);
	pthread_cond_broadcast(&rc->wait_cond);
	pthread_mutex_unlock(&rc->wait_lock);
}

/*
 * @head's batch is past its grace period.  What was ready before it came
 * has waited a whole grace period for the writers, who are slow or gone:
 * free that here.  Ready this batch, send what gathered meanwhile as the
 * next batch or, if nothing did, say that no batch is in flight and free
 * everything ready now (no later callback is coming to do it); then tell
 * the barriers whose marks rode in this batch and the writers waiting on
 * the limit.  The batch count goes down last: from then on
 * cowmap_cell_free() may free the cell.
 */
static void batch_done(struct rcu_head *head)
{
	struct cm_retired *last, *marks;
	struct cm_reclaim *rc = ((struct cm_retired *)(void *)head)->rc;
	struct cm_retired *batch = take_marks((struct cm_retired *)(void *)head,
					      &last, &marks);

	on_callback_thread = true;

	if (anything_ready(rc))	/* ready since the last batch, or longer */
		free_all_ready(rc);
	if (batch != NULL)
		push_ready(rc, batch, last);

	uintptr_t old = atomic_load_explicit(&rc->gathering,
					     memory_order_relaxed);

	while (!atomic_compare_exchange_weak_explicit(
		&rc->gathering, &old, stack_of(old) != NULL ? CM_IN_FLIGHT : 0,
		memory_order_acq_rel, memory_order_relaxed))
		;
#ifdef COWMAP_DEBUG
	/* This batch was the one in flight; a flavor that ran a callback
	 * twice, or a second batch, would break that. */
	if (!(old & CM_IN_FLIGHT))
		cm_debug_report("cowmap cell callback", "no batch was in flight");
#endif
	if (stack_of(old) != NULL)
		send_batch(rc, stack_of(old));
	else
		free_all_ready(rc);
	while (marks != NULL) {
		struct cm_retired *next = marks->next;
		struct barrier_mark *m =
			(struct barrier_mark *)(void *)marks;

		atomic_store_explicit(&m->done, true, memory_order_release);
		marks = next;
	}
	wake_waiters(rc);
	atomic_fetch_sub_explicit(&rc->batches_out, 1, memory_order_release);
}

/*
 * A barrier mark joins the line of retired versions like one of them:
 * every version retired before it is in its batch or an earlier one, and
 * batches finish one at a time, in order.  So once the mark's batch is
 * done, each of those versions is ready or freed; free_all_ready() then
 * frees the ready ones, and takes the lock payers free under, so the
 * rest are freed too.  Each flavor barrier waits for the callbacks queued
 * before it; the batch carrying the mark may be queued later (a callback
 * or a writer between taking the stack and sending it), hence the loop.
 */
int cm_reclaim_barrier(struct cm_reclaim *rc)
{
	if (cm_in_read_section(rc->flavor))
		return -EDEADLK;

	struct barrier_mark mark = { .r = { .rc = rc } };

	atomic_init(&mark.done, false);
	line_up(rc, &mark.r);
	while (!atomic_load_explicit(&mark.done, memory_order_acquire))
		rc->flavor->barrier();
	free_all_ready(rc);
	return 0;
}

void cm_reclaim_destroy(struct cm_reclaim *rc)
{
	/* Until the last callback has returned: it decrements the count as
	 * its last touch of rc. */
	while (atomic_load_explicit(&rc->batches_out, memory_order_acquire) != 0)
		rc->flavor->barrier();
	/* That callback found nothing gathered and freed what was ready; a
	 * cell that never retired a version has the lists empty anyway. */
	free_all_ready(rc);
	pthread_cond_destroy(&rc->wait_cond);
	pthread_mutex_destroy(&rc->wait_lock);
	pthread_mutex_destroy(&rc->lock);
}

void cm_reclaim_stats(struct cm_reclaim *rc, struct cowmap_cell_stats *out)
{
	out->pending_bytes = atomic_load_explicit(&rc->pending_bytes,
						  memory_order_relaxed);
	out->pending_nodes = atomic_load_explicit(&rc->pending_nodes,
						  memory_order_relaxed);
	out->pending_versions = atomic_load_explicit(&rc->pending_versions,
						     memory_order_acquire);
}
