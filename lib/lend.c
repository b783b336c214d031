/*
 * lend.c - a retired version lends its path to its successor.
 *
 * A single-key update copies the nodes on the key's path, and each copy
 * takes a reference on every child and boxed entry it keeps: on a
 * 1M-entry map some hundred atomic increments, on lines all over the
 * trie.  When the cell retires the old version a grace period later, the
 * callback drops all of them again.  Both sides touch a hundred cold
 * lines to leave every count where it was.
 *
 * When the old version is about to be retired and nothing but it holds
 * the first few nodes of the path (each with one reference, from its
 * parent, and the version itself with one, from the cell), the copies of
 * those nodes take over the old nodes' references instead: the old node
 * keeps only its slot on the key's path (the next old node, or the entry
 * the update replaced or split).  The old nodes are not changed - readers
 * may be walking them until the grace period ends.  The version records
 * what it lent (lent_hash, lent_levels) and carries CM_REFS_LENT.
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
 * the version, its last release (the cell's, in the callback) frees only
 * the lent nodes' shells and the slot each kept.
 *
 * The race between the writer deciding to lend and a reader retaining
 * is settled on the count itself: the writer sets CM_REFS_LENT only by a
 * compare-and-swap from exactly one reference.  A reader that got in
 * first makes it fail, and the writer returns the references itself.
 *
 * Which nodes may lend.  A count of one is not enough.  The children a
 * lent node handed over are still in its slots, uncounted, and a late
 * return will count them again: a node that is such a child may look
 * held once now and be held twice a moment later.  Were it lent in turn,
 * the callback would free it under the version that took it back.  So
 * only nodes nobody can hold uncounted lend: the root (a root is never
 * anybody's child), and below it the nodes the update that made the
 * version copied (fresh_hash, fresh_levels), which no older version
 * points to.  In practice that is the root and, when two updates in a
 * row share a path prefix, a little more: a third of the children a
 * single-key update on a 1M-key map used to retain.
 */
#include "map.h"

#include "alloc.h"

/* Only bitmap levels lend; collision nodes are always copied. */
unsigned cm_lend_levels(const struct cowmap *m, const struct cm_probe *p)
{
	if (atomic_load_explicit(&m->refs, memory_order_relaxed) != 1)
		return 0;

	const struct cm_node *n = m->root;
	unsigned depth = 0;

	while (depth < CM_COLLISION_DEPTH &&
	       atomic_load_explicit(cm_node_refs(n), memory_order_relaxed) ==
		       1) {
		uint32_t bit = cm_bit(p->hash, depth);

		depth++;
		/* The next node is fresh if the last update copied it: it
		 * went the same way and copied that deep. */
		if (!(n->nodemap & bit) || depth >= m->fresh_levels ||
		    bit != cm_bit(m->fresh_hash, depth - 1))
			break;
		n = cm_children(n)[cm_index(n->nodemap, bit)];
	}
	return depth;
}

/* The path slot of @n at @depth: a child, an entry, or neither. */
static struct cm_node *path_child(const struct cm_node *n, uint64_t hash,
				  unsigned depth)
{
	uint32_t bit = cm_bit(hash, depth);

	return n->nodemap & bit ? cm_children(n)[cm_index(n->nodemap, bit)]
				: NULL;
}

static const struct cm_entry *path_entry(const struct cm_node *n,
					 uint64_t hash, unsigned depth)
{
	uint32_t bit = cm_bit(hash, depth);

	return n->datamap & bit
		       ? &cm_node_entries(n)[cm_index(n->datamap, bit)]
		       : NULL;
}

void cm_lend_mark(struct cowmap *m, uint64_t hash, unsigned levels)
{
	unsigned one = 1;

	if (levels == 0)
		return;
	m->lent_hash = hash;
	m->lent_levels = levels;
	/* Release: whoever sees the flag sees the fields. */
	if (!atomic_compare_exchange_strong_explicit(
		    &m->refs, &one, 1 | CM_REFS_LENT, memory_order_acq_rel,
		    memory_order_acquire))
		cm_lend_return(m);	/* a reader retained it meanwhile */
}

void cm_lend_return(struct cowmap *m)
{
	const struct cm_node *n = m->root;
	uint64_t hash = m->lent_hash;

	for (unsigned depth = 0; depth < m->lent_levels; depth++) {
		const struct cm_node *keep = path_child(n, hash, depth);
		const struct cm_entry *keep_e = path_entry(n, hash, depth);
		unsigned ne = cm_entry_count(n), nc = cm_child_count(n);

		for (unsigned i = 0; i < ne; i++)
			if (&cm_node_entries(n)[i] != keep_e)
				cm_entry_retain(&cm_node_entries(n)[i]);
		for (unsigned i = 0; i < nc; i++)
			if (cm_children(n)[i] != keep)
				cm_node_retain(cm_children(n)[i]);
		n = keep;
	}
}

void cm_lend_free(struct cowmap *m)
{
	struct cm_node *n = m->root;
	uint64_t hash = m->lent_hash;

	for (unsigned depth = 0; depth < m->lent_levels; depth++) {
		struct cm_node *keep = path_child(n, hash, depth);
		const struct cm_entry *keep_e = path_entry(n, hash, depth);

		if (keep_e != NULL)
			cm_entry_release(keep_e, &m->own);
		if (keep != NULL && depth + 1 == m->lent_levels)
			cm_node_release(keep, &m->own);
		cm_free(n);
		n = keep;
	}
}
