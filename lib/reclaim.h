/*
 * reclaim.h - retired versions, freed after an RCU grace period, with a
 * bound on what may wait.
 *
 * A cell (lib/cell.c) owns one struct cm_reclaim.  Its writers hand it
 * every version they replace (cm_reclaim_retire), then, outside the
 * writer lock, pay their share of the freeing (cm_reclaim_pay).  The
 * design and its bound are in lib/reclaim.c's opening comment; the rules
 * a user sees are under cowmap_cell_stats() and
 * cowmap_cell_set_pending_limit() in cowmap.h.
 *
 * This layer and the cell are the only parts of the library that know
 * about RCU.
 */
#ifndef COWMAP_RECLAIM_H
#define COWMAP_RECLAIM_H

#include <urcu/urcu-memb.h>	/* struct rcu_head, the flavor struct */

#include "cowmap.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One retired version waiting for its grace period (lib/reclaim.c). */
struct cm_retired;

struct cm_reclaim {
	const struct rcu_flavor_struct *flavor;

	/*
	 * gathering: retired records not yet handed to call_rcu(), a
	 * lock-free stack, with CM_IN_FLIGHT or-ed in while a batch waits in
	 * call_rcu() (one word, so "push, or take the stack if nothing is in
	 * flight" and "take what gathered, or say nothing is in flight" are
	 * each one CAS).  batches_out: batches handed to call_rcu() whose
	 * callback has not returned.  ready: past their grace period, pushed
	 * by the callbacks.  taken: what a payer took off ready and has not
	 * freed yet, guarded by lock (atomic for the unlocked look).
	 */
	atomic_uintptr_t gathering;
	atomic_size_t batches_out;
	struct cm_retired *_Atomic ready;
	struct cm_retired *_Atomic taken;
	pthread_mutex_t lock;	/* serialises frees; guards taken */

	/* Records writers owe but could not free themselves (someone else
	 * held lock): whoever holds it frees them too. */
	atomic_size_t debt;

	/* The bound: above it writers wait for the next grace period. */
	atomic_size_t limit;
	/* Batches whose grace period is over, counted, for writers waiting
	 * on the bound; stall_seen: the count at which a wait timed out, so
	 * that a stuck grace period stalls each writer once, not per write. */
	atomic_uint_least64_t batches_done;
	atomic_uint_least64_t stall_seen;
	atomic_int waiters;
	pthread_mutex_t wait_lock;
	pthread_cond_t wait_cond;

	atomic_size_t pending_bytes, pending_nodes, pending_versions;
};

/* Default bound on pending bytes (cowmap.h: COWMAP_CELL_PENDING_LIMIT). */
#define CM_PENDING_LIMIT_DEFAULT COWMAP_CELL_PENDING_LIMIT

/* Returns 0 or -ENOMEM (the mutexes or condition could not be made). */
int cm_reclaim_init(struct cm_reclaim *rc,
		    const struct rcu_flavor_struct *flavor);

/*
 * Wait for every batch's callback and free everything retired; then
 * destroy.  The caller is registered, outside any read-side section, and
 * nothing retires any more.
 */
void cm_reclaim_destroy(struct cm_reclaim *rc);

/* A record for one retirement, allocated before the publish it belongs
 * to so that nothing can fail after the publish.  NULL on ENOMEM. */
struct cm_retired *cm_retired_new(void);
void cm_retired_discard(struct cm_retired *r);

/*
 * Fill @r for retiring @old: measure what @old alone holds.  Call while
 * @old's successor is the newest version derived from it (the cell's
 * writer lock held).  @lone_hash: when the successor is @old with one
 * key's update, that key's hash (so the walk costs the path, not the
 * whole trie); else NULL.  Takes over the caller's reference to @old.
 */
void cm_retired_fill(struct cm_retired *r, struct cowmap *old,
		     const uint64_t *lone_hash);

/*
 * @r's version is out of every reader's reach from now on (its successor
 * was stored, or it never was published): free it after a grace period.
 * Consumes @r.  Never fails.
 */
void cm_reclaim_retire(struct cm_reclaim *rc, struct cm_retired *r);

/* The record's place in a caller's private list (a combined publish
 * retires the versions between the published ones after the publish). */
struct cm_retired **cm_retired_link(struct cm_retired *r);

/*
 * A writer's share, after every publishing call, outside the writer
 * lock: free up to @quota ready records (or leave them to the thread
 * that is freeing, as debt), and if pending bytes are over the limit,
 * wait for the next grace period first.  May call value_free.
 */
void cm_reclaim_pay(struct cm_reclaim *rc, size_t quota);

/* cowmap_cell_barrier()'s work: 0, or -EDEADLK inside a read-side
 * critical section. */
int cm_reclaim_barrier(struct cm_reclaim *rc);

/*
 * Is the calling thread inside a read-side critical section of @f, where
 * waiting for a grace period would wait for itself?
 */
bool cm_in_read_section(const struct rcu_flavor_struct *f);

void cm_reclaim_stats(struct cm_reclaim *rc, struct cowmap_cell_stats *out);

#endif
