/*
 * lend.c - a retired path lends its references to the path that
 * replaced it.
 *
 * A single-key update copies the nodes on the key's path, and each copy
 * would take a reference on every child and boxed entry it keeps; when
 * the cell retires the old version a grace period later, the callback
 * would drop them all again.  On a 1M-entry map that is some sixty
 * counts per update, each on a line of its own, each written once by the
 * writer's core and once by the core of liburcu's call_rcu thread, only
 * to end where it started.  Lending skips both halves.
 *
 * Why it stays (issue #18, measured against plain retains in the same
 * build with COWMAP_LEND=0, bench/ full runs interleaved on and off, two
 * of each, AMD EPYC, 2 cores under a load average of 6-8): without
 * lending, cowmap_cell_set with one writer made 0.29-0.40 of the changes
 * a second on 1M keys and 0.39-0.41 on the 104k words; two writers
 * 0.41-0.52 and 0.63-0.72; a writer beside a reader 0.38-0.41 and
 * 0.41-0.67; publish p99 was 1.64-1.78 and 1.08-2.06 times as long; a
 * reader beside a flat-out writer took 1.27-2.05 times as long (wall).
 * Lookups alone, builds and memory did not change beyond the noise.
 *
 * What lends.  The cell's writer, updating the version V it is about to
 * retire, when V is held by the cell alone (count one): V's root, and
 * below it each node on the key's path that is held by its parent alone,
 * as far down as that holds and the update copies (not collision nodes).
 * Each such node's copy takes over the node's references instead of
 * adding its own; the old node keeps only its slot on the key's path (the
 * old child there, or the entry the update replaced or split), records
 * that slot (lent_chunk) and carries CM_REFS_LENT.  V itself carries the
 * flag for its root.  The old nodes are not changed otherwise - readers
 * may be walking them until the grace period ends.
 *
 * Who can reach a lent node afterwards.  Only someone who reaches it
 * through V: a reader whose critical section loaded V before it was
 * retired, or whoever such a reader gives a reference.  A reader may
 * retain V (cowmap_retain, cowmap_cell_snapshot), or derive an update
 * from V, which copies V's root and so retains the root's children but
 * not V, and deeper copies retain deeper nodes.  Any of those references
 * may outlive the grace period, and then so must everything the node
 * reaches.  So the first retain of a lent node, or of a lent V, sets
 * CM_REFS_CLAIMED, counts the node's other slots again (one increment
 * each, the work the update skipped), and since the node holds its path
 * slot, settles the lent node there too, and so on down the path; then
 * it sets CM_REFS_RETURNED.  Every other retain that finds the node lent
 * waits for that flag before it goes on, so no thread ever holds a
 * reference whose slots are not counted yet (one that did could leave
 * its critical section and retain, outside any, a node a later update
 * lent: a review found that use-after-free in a version that let such
 * retains go on at once).
 * That is safe because it runs inside a read-side critical section that
 * started before V was retired (or in the writer, before the successor
 * can be retired): the successors that now hold the lent slots cannot be
 * freed before it ends.  If nobody retains them, the last release (the
 * cell's, in the callback) frees each lent node's shell and its path
 * slot, and nothing else.
 *
 * The race between the writer deciding to lend and a reader retaining is
 * settled on each count: the writer sets CM_REFS_LENT only by a
 * compare-and-swap from exactly one reference, and it goes from the
 * bottom of the path up, V last.  A reader that got in first makes the
 * swap fail, and the writer then counts that node's slots for the copy
 * itself and returns the lent path under it.  Going up means that when a
 * node is flagged, everything under it is settled: lent, or given back.
 *
 * Why every retain checks.  Each reference to a lent node is a way to
 * reach its uncounted slots after the grace period, whichever path it
 * came by: a derived update retaining a lent root's child, or a late
 * return of one lent node counting a child that a later update has lent
 * in turn.  So cm_node_retain() looks at the flags the add returns, a
 * branch that is taken only on these nodes.  (Two reviews found those
 * two cases in an earlier version that lent below the root without it.)
 */
#include "map.h"

#include "alloc.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <urcu/arch.h>	/* caa_cpu_relax() */

/*
 * COWMAP_LEND=0 in the environment turns lending off (every copy retains
 * what it keeps), so that bench/ can measure what lending buys in the
 * same build.  Read once.
 */
static bool lend_enabled(void)
{
	static _Atomic int enabled = -1;
	int e = atomic_load_explicit(&enabled, memory_order_relaxed);

	if (e < 0) {
		const char *env = getenv("COWMAP_LEND");

		e = env == NULL || strcmp(env, "0") != 0;
		atomic_store_explicit(&enabled, e, memory_order_relaxed);
	}
	return e;
}

bool cm_lend_root_ok(const struct cowmap *m)
{
	if (!lend_enabled())
		return false;
	/* Acquire: if the root's count just fell to one, what its other
	 * holder did with it happens before the callback frees it. */
	return atomic_load_explicit(&m->refs, memory_order_acquire) == 1 &&
	       atomic_load_explicit(cm_node_refs(m->root),
				    memory_order_acquire) == 1;
}

bool cm_lend_node_ok(const struct cm_node *n)
{
	return n->kind == CM_BITMAP && !n->draft &&
	       atomic_load_explicit(cm_node_refs(n), memory_order_acquire) ==
		       1;
}

/* Count @n's slots except the one at @bit: what a copy that took them
 * over had skipped. */
static void retain_all_but(const struct cm_node *n, uint32_t bit)
{
	const struct cm_entry *keep_e = cm_slot_entry(n, bit);
	const struct cm_node *keep = cm_slot_child(n, bit);
	struct cm_node *const *kids = cm_children(n);
	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);

	cm_prefetch_refs(kids, nc);
	for (unsigned i = 0; i < ne; i++)
		if (&cm_node_entries(n)[i] != keep_e)
			cm_entry_retain(&cm_node_entries(n)[i]);
	for (unsigned i = 0; i < nc; i++)
		if (kids[i] != keep)
			cm_node_retain(kids[i]);
}

/* A test may pause each give-back here (cm_test_lend_pause()). */
static void (*_Atomic give_back_hook)(void);

void cm_test_lend_pause(void (*hook)(void))
{
	atomic_store(&give_back_hook, hook);
}

/*
 * @refs is the count of a node or version that a retain found lent: must
 * the caller give its slots back?  One thread does (CM_REFS_CLAIMED); the
 * others wait here until it has (CM_REFS_RETURNED).  Going on at once
 * would be wrong: such a thread would hold a reference whose slots are
 * not counted yet, might leave its read-side critical section, and
 * could then retain, outside any, a node that a later update lent, and
 * give that one back when nothing keeps the slots it lent alive any more.
 * The giver is running, and gives back only what lies below, so the
 * waits cannot form a cycle.
 */
static bool must_give_back(atomic_uint *refs)
{
	/* Acquire (with the swap's release): lent_chunk, and the state of
	 * the lent path below, which was settled first. */
	unsigned v = atomic_load_explicit(refs, memory_order_acquire);

	if ((v & (CM_REFS_LENT | CM_REFS_RETURNED)) != CM_REFS_LENT)
		return false;
	v = atomic_fetch_or_explicit(refs, CM_REFS_CLAIMED,
				     memory_order_acq_rel);
	if (!(v & CM_REFS_CLAIMED))
		return true;
	for (unsigned spin = 0;
	     !(atomic_load_explicit(refs, memory_order_acquire) &
	       CM_REFS_RETURNED);
	     spin++) {
		if (spin < 64)
			caa_cpu_relax();
		else
			sched_yield();
	}
	return false;
}

/* Release: whoever sees the flag sees the counts. */
static void mark_given_back(atomic_uint *refs)
{
	atomic_fetch_or_explicit(refs, CM_REFS_RETURNED, memory_order_release);
}

/* @n's slots are counted again, and the lent node in its path slot, which
 * @n keeps and so will reach as long as it lives, is settled too. */
static void give_back(struct cm_node *n)
{
	uint32_t bit = UINT32_C(1) << n->lent_chunk;
	void (*hook)(void) = atomic_load(&give_back_hook);

	if (hook != NULL)
		hook();
	retain_all_but(n, bit);

	struct cm_node *kept = cm_slot_child(n, bit);

	if (kept != NULL)
		cm_lend_claim(kept);
}

/* A retain found @refs lent: give back @n's slots (@n is the node itself,
 * or a version's root), or wait until the thread doing it has. */
static void claim(atomic_uint *refs, struct cm_node *n)
{
	if (must_give_back(refs)) {
		give_back(n);
		mark_given_back(refs);
	}
}

void cm_lend_claim(struct cm_node *n)
{
	claim(cm_node_refs(n), n);
}

void cm_lend_claim_version(struct cowmap *m)
{
	claim(&m->refs, m->root);
}

void cm_lend_free(struct cm_node *n, const struct cm_owner *own)
{
	uint32_t bit = UINT32_C(1) << n->lent_chunk;
	const struct cm_entry *keep_e = cm_slot_entry(n, bit);

	/* Only the slot on the lent key's path is still the old node's. */
	if (keep_e != NULL)
		cm_entry_release(keep_e, own);
	cm_node_release(cm_slot_child(n, bit), own);	/* or NULL */
	cm_node_free(n);
}

void cm_lend_mark(struct cowmap *m, uint64_t hash, unsigned levels)
{
	struct cm_node *path[CM_COLLISION_DEPTH];
	unsigned one;

	path[0] = m->root;
	for (unsigned d = 1; d < levels; d++)
		path[d] = cm_slot_child(path[d - 1], cm_bit(hash, d - 1));
	for (unsigned d = 0; d < levels; d++)
		path[d]->lent_chunk = (uint8_t)cm_chunk(hash, d);

	/* Bottom up, so that a node is flagged only over a settled path. */
	for (unsigned d = levels; d-- > 1;) {
		one = 1;
		/* Release: whoever sees the flag sees lent_chunk. */
		if (!atomic_compare_exchange_strong_explicit(
			    cm_node_refs(path[d]), &one, 1 | CM_REFS_LENT,
			    memory_order_release, memory_order_relaxed))
			give_back(path[d]);	/* a reader retained it */
	}
	one = 1;
	if (!atomic_compare_exchange_strong_explicit(
		    &m->refs, &one, 1 | CM_REFS_LENT, memory_order_release,
		    memory_order_relaxed))
		give_back(m->root);	/* a reader retained it meanwhile */
}

void cm_lend_free_version(struct cowmap *m)
{
	cm_lend_free(m->root, &m->own);
}

void cm_lend_unwind(struct cm_node *copy, unsigned depth, unsigned levels,
		    uint64_t hash)
{
	for (unsigned d = depth; d < levels && copy != NULL; d++) {
		uint32_t bit = cm_bit(hash, d);

		retain_all_but(copy, bit);
		copy = cm_slot_child(copy, bit);
	}
}
