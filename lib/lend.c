/*
 * lend.c - a retired version lends its root's references to its successor.
 *
 * A single-key update copies the nodes on the key's path, and each copy
 * takes a reference on every child and boxed entry it keeps; when the
 * cell retires the old version a grace period later, the callback drops
 * them all again.  The root is the widest of those nodes (32 children on
 * a large map), and its children are the nodes every update touches, so
 * those counts kept passing between the writer's core and the core of
 * liburcu's call_rcu thread, only to end where they started.
 *
 * When the version being retired is held by nothing but the cell (count
 * one) and its root by nothing but the version, the copy of the root
 * takes over the old root's references instead: the old root keeps only
 * its slot on the key's path (the old child there, or the entry the
 * update replaced or split), and no count is touched.  The old root is
 * not changed - readers may be walking it until the grace period ends.
 * The version records the key (lent_hash) and carries CM_REFS_LENT.
 *
 * Until the grace period ends a reader may still retain the old version
 * (cowmap_cell_snapshot(), or cowmap_retain() in the critical section
 * that loaded it), and from then on it must own everything it reaches
 * again.  So the first cowmap_retain() of a lent version returns the
 * references (CM_REFS_RETURNED, set once by whoever gets there first):
 * one increment per lent slot, the work the update skipped.  That is
 * safe because it runs inside a read-side critical section that started
 * before the version was retired: the successors that now hold the lent
 * children cannot be freed before that section ends.  If nobody retains
 * the version, its last release (the cell's, in the callback) frees the
 * old root's shell and its path slot, and nothing else.
 *
 * The race between the writer deciding to lend and a reader retaining
 * is settled on the count itself: the writer sets CM_REFS_LENT only by a
 * compare-and-swap from exactly one reference.  A reader that got in
 * first makes it fail, and the writer returns the references itself.
 *
 * Why only the root.  A node below it can be held without its version
 * being retained: any update derived from the version (cowmap_set() in a
 * reader's critical section, say) retains the root's children, not the
 * version; and a child of a lent root is still in the old root's slots,
 * uncounted, where a late return will count it again.  Either way a
 * lower node that looked held once could be held twice by the time the
 * callback freed it.  A root is nobody's child, and only a transaction
 * retains one, after retaining its version.  (A review found the first
 * case, the stress test the second, in a version that lent more levels.)
 */
#include "map.h"

#include "alloc.h"

bool cm_lend_root_ok(const struct cowmap *m)
{
	/* Acquire: if the root's count just fell to one, what its other
	 * holder did with it happens before the callback frees it. */
	return atomic_load_explicit(&m->refs, memory_order_acquire) == 1 &&
	       atomic_load_explicit(cm_node_refs(m->root),
				    memory_order_acquire) == 1;
}

void cm_lend_mark(struct cowmap *m, uint64_t hash)
{
	unsigned one = 1;

	m->lent_hash = hash;
	/* Release: whoever sees the flag sees lent_hash. */
	if (!atomic_compare_exchange_strong_explicit(
		    &m->refs, &one, 1 | CM_REFS_LENT, memory_order_acq_rel,
		    memory_order_acquire))
		cm_lend_return(m);	/* a reader retained it meanwhile */
}

void cm_lend_return(struct cowmap *m)
{
	/* The old root's slot on the lent key's path, which it kept. */
	uint32_t bit = cm_bit(m->lent_hash, 0);
	const struct cm_node *r = m->root, *keep = cm_slot_child(r, bit);
	const struct cm_entry *keep_e = cm_slot_entry(r, bit);
	unsigned ne = cm_entry_count(r), nc = cm_child_count(r);

	for (unsigned i = 0; i < ne; i++)
		if (&cm_node_entries(r)[i] != keep_e)
			cm_entry_retain(&cm_node_entries(r)[i]);
	for (unsigned i = 0; i < nc; i++)
		if (cm_children(r)[i] != keep)
			cm_node_retain(cm_children(r)[i]);
}

void cm_lend_free(struct cowmap *m)
{
	uint32_t bit = cm_bit(m->lent_hash, 0);
	const struct cm_entry *keep_e = cm_slot_entry(m->root, bit);

	/* Only the slot on the lent key's path is still the old root's. */
	if (keep_e != NULL)
		cm_entry_release(keep_e, &m->own);
	cm_node_release(cm_slot_child(m->root, bit), &m->own);	/* or NULL */
	cm_node_free(m->root);
}
