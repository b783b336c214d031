/*
 * merge.c - a batch of keys merged into a trie, each node built once.
 *
 * Setting k keys one at a time rebuilds a node each time a key lands in
 * it: a node that ends with 20 entries is allocated, copied and freed 20
 * times, and every insert walks from the root again through nodes that
 * are scattered in memory.  A batch does better by going the other way
 * round.  At each node the batch's range is partitioned in place by the
 * node's 5-bit hash chunk (one pass of an MSD radix sort, 32 buckets), and
 * each position of the node is decided from what it held and what its
 * bucket brings:
 *
 *     held        bucket                    becomes
 *     anything    empty                     what it held (shared)
 *     nothing     one key                   an entry for it
 *     an entry    only that entry's key     the winning value's entry
 *     nothing,    two keys or more          a child merged from the bucket
 *      an entry                              (the entry moves down with it)
 *     a child     anything                  that child merged with it
 *
 * Then the node is allocated once, at its final size.  The partition of a
 * bucket happens when the walk reaches its child, so the sort and the
 * walk are the same recursion and a range is in cache when it is used.
 *
 * Duplicates: "one key" means every item of the bucket (and the entry held
 * there) has the same key; the item that came last in the caller's arrays
 * (highest seq) wins and the others are settled as losers.  Buckets with
 * several keys go down until the keys part, at the latest at depth 13,
 * where a collision node takes every key of one full 64-bit hash.
 *
 * Ownership: nodes made here are fresh references.  Everything they share
 * with the old trie (kept entries, children nobody touched) is retained
 * when the node is filled, after its allocation succeeded; the leaf made
 * for a placed boxed item passes its one reference to the node.  So a
 * failure releases fresh nodes only, and the old trie is as it was.  It
 * releases them as a map without value_free (cm_merge_unwind): the values
 * in fresh leaves are still the caller's, and everything shared was
 * retained by the fresh node, so dropping it frees nothing of the old.
 *
 * Draft flags: a node merged with an old node may hold the old node's
 * draft children, so it is a draft too (the drafts of a transaction must
 * stay connected at the top, see edit.c).  A node built from nothing but
 * the batch holds no draft below it and is made final at once, which
 * spares commit a walk over every node of a bulk load.
 */
#include "merge.h"

#include "alloc.h"
#include "map.h"

enum merged { M_SAME, M_NODE, M_NOMEM };

/* Fresh nodes are released as if their map had no value_free when a
 * merge fails: see "Ownership" above. */
static const struct cm_owner unwind_owner = { .value_free = NULL };

struct merge {
	const struct cowmap *map;
	const struct cm_owner *own;
	size_t added;
};

/* An entry of the old trie moving down with a bucket that it collides
 * with; its full hash is computed only if the walk goes below the bits
 * its tag keeps. */
struct lone {
	const struct cm_entry *e;
	uint64_t full;
	bool have_full;
};

/* Does entry @e hold @it's key? */
static bool item_matches(const struct cm_entry *e, const struct cm_item *it)
{
	struct cm_probe p;

	cm_item_probe(it, &p);
	return cm_entry_matches(e, &p);
}

/* Do two unplaced items hold the same key? */
static bool items_same_key(const struct cm_item *a, const struct cm_item *b)
{
	if (a->hash != b->hash || a->boxed != b->boxed)
		return false;
	if (!a->boxed)
		return a->u.in.head[0] == b->u.in.head[0] &&
		       a->u.in.head[1] == b->u.in.head[1];

	uint32_t la, lb;
	const unsigned char *ka = cm_item_key(a, &la), *kb = cm_item_key(b, &lb);

	return la == lb && memcmp(ka, kb, la) == 0;
}

/*
 * Turn winning item @it into its entry: an inline item already is one; a
 * boxed one gets its leaf, and the union then holds the entry (a leafed
 * one has it already).  Returns false on ENOMEM (the item stays as it
 * was).
 */
static bool item_place(struct cm_item *it)
{
	if (it->leafed) {
		/* The node takes a reference of its own; the item keeps its. */
		cm_entry_retain(&it->u.entry);
	} else if (it->boxed) {
		struct cm_probe p;
		struct cm_entry e;

		cm_item_probe(it, &p);
		if (!cm_entry_make(&e, &p, it->u.box.value))
			return false;
		it->u.entry = e;
	}
	it->fate = CM_ITEM_PLACED;
	return true;
}

/*
 * If the @k items of @b, and @held if there is one, all hold one key: the
 * winner, the item that came last.  Otherwise NULL.
 */
static struct cm_item *single_key(struct cm_item *b, size_t k,
				  const struct cm_entry *held)
{
	struct cm_item *w = &b[0];

	if (held != NULL && !item_matches(held, &b[0]))
		return NULL;
	for (size_t i = 1; i < k; i++) {
		if (!items_same_key(&b[0], &b[i]))
			return NULL;
		if (b[i].seq > w->seq)
			w = &b[i];
	}
	return w;
}

/*
 * Item @i of @items is a loser of its key, whose winner is @w: a later
 * pair won.  Its value was given to the map and replaced, so value_free
 * gets it once, unless the key keeps it (it is the winner's value, or the
 * value @held already had, which the old entry's release takes care of)
 * or a loser before it already owes it.  The look back is quadratic in a
 * key's repeats within one batch, and only value-owning maps pay it.
 */
static void settle_loser(const struct merge *mg, struct cm_item *items,
			 size_t i, const struct cm_item *w,
			 const struct cm_entry *held)
{
	void *v = items[i].u.entry.value;
	bool kept = mg->own->value_free == NULL || v == w->u.entry.value ||
		    (held != NULL && v == held->value);

	for (size_t j = 0; j < i && !kept; j++)
		kept = items[j].fate == CM_ITEM_REPLACED &&
		       items[j].u.entry.value == v &&
		       items_same_key(&items[j], w);
	items[i].fate = kept ? CM_ITEM_DROPPED : CM_ITEM_REPLACED;
}

/* Ranges this short are sorted by insertion: the buckets of a counting
 * sort cost more than the moves they save. */
#define SHORT_RANGE 12

/*
 * Sort the @k items in place by their hash chunk at @depth, so that every
 * bucket is one run, and count the items of each bucket in @count; returns
 * the set of chunks present.  Long ranges take an American flag sort (a
 * counting pass, then each item swapped straight into its bucket), short
 * ones an insertion sort.
 */
static uint32_t sort_by_chunk(struct cm_item *items, size_t k, unsigned depth,
			      size_t count[32])
{
	uint32_t present = 0;

	if (k <= SHORT_RANGE) {
		for (size_t i = 0; i < k; i++) {
			struct cm_item t = items[i];
			unsigned c = cm_chunk(t.hash, depth);
			size_t j = i;

			if (!(present >> c & 1))
				count[c] = 0;
			count[c]++;
			present |= UINT32_C(1) << c;
			for (; j > 0 && cm_chunk(items[j - 1].hash, depth) > c;
			     j--)
				items[j] = items[j - 1];
			items[j] = t;
		}
		return present;
	}

	size_t next[32], end[32], at = 0;

	memset(count, 0, 32 * sizeof(count[0]));
	for (size_t i = 0; i < k; i++)
		count[cm_chunk(items[i].hash, depth)]++;
	for (unsigned c = 0; c < 32; c++) {
		next[c] = at;
		at += count[c];
		end[c] = at;
		if (count[c] != 0)
			present |= UINT32_C(1) << c;
	}
	for (uint32_t todo = present; todo != 0; todo &= todo - 1) {
		unsigned c = (unsigned)__builtin_ctz(todo);

		/* Every bucket below c is complete, so what stands in the
		 * unsorted rest of bucket c belongs at c or above.  A
		 * misplaced item is carried round its cycle, each item it
		 * displaces taken along, until one for bucket c turns up:
		 * every item moves once. */
		while (next[c] < end[c]) {
			unsigned to = cm_chunk(items[next[c]].hash, depth);

			if (to == c) {
				next[c]++;
				continue;
			}

			struct cm_item carried = items[next[c]];

			do {
				struct cm_item displaced = items[next[to]];

				items[next[to]++] = carried;
				carried = displaced;
				to = cm_chunk(carried.hash, depth);
			} while (to != c);
			items[next[c]++] = carried;
		}
	}
	return present;
}

static enum merged merge_node(struct merge *mg, unsigned depth,
			      struct cm_item *items, size_t k,
			      struct cm_node *old, struct lone *x,
			      struct cm_node **out);

/*
 * Depth 13: @old (a collision node) or @x (or neither), and the @k items,
 * all have one full hash.  Each key's winner replaces the entry of that key or joins
 * the end of the node.
 */
static enum merged merge_collision(struct merge *mg, struct cm_item *items,
				   size_t k, const struct cm_node *old,
				   const struct lone *x, struct cm_node **out)
{
	unsigned nold = old != NULL ? old->datamap : x != NULL;
	const struct cm_entry *held = old != NULL ? cm_node_entries(old)
				      : x != NULL ? x->e
						  : NULL;
	size_t fresh = 0;
	bool changed = old == NULL;

	/* Settle every key first: placing a boxed item overwrites the key
	 * bytes the comparisons read. */
	for (size_t i = 0; i < k; i++) {
		if (items[i].fate != CM_ITEM_PENDING)
			continue;

		struct cm_item *w = &items[i];
		const struct cm_entry *match = NULL;

		for (size_t j = i + 1; j < k; j++)
			if (items[j].fate == CM_ITEM_PENDING &&
			    items_same_key(&items[i], &items[j]) &&
			    items[j].seq > w->seq)
				w = &items[j];
		for (unsigned o = 0; o < nold && match == NULL; o++)
			if (item_matches(&held[o], w))
				match = &held[o];

		for (size_t j = i; j < k; j++)
			if (&items[j] != w && items[j].fate == CM_ITEM_PENDING &&
			    items_same_key(&items[j], w))
				settle_loser(mg, items, j, w, match);
		if (match != NULL && match->value == w->u.entry.value) {
			w->fate = CM_ITEM_KEPT;
			continue;
		}
		w->fate = CM_ITEM_WINNER;
		changed = true;
		fresh += match == NULL;
	}
	if (!changed)
		return M_SAME;

	struct cm_node *n = cm_node_alloc(CM_COLLISION, nold + (unsigned)fresh,
					  0, false);

	if (n == NULL)
		return M_NOMEM;

	struct cm_entry *dst = cm_node_entries(n);
	unsigned ne = nold;

	/* What the node shares is retained first, so that unwinding can
	 * release the node like any other fresh one. */
	for (unsigned i = 0; i < nold; i++) {
		dst[i] = held[i];
		cm_entry_retain(&dst[i]);
	}
	for (size_t i = 0; i < k; i++) {
		struct cm_item *w = &items[i];
		unsigned at = ne;

		if (w->fate != CM_ITEM_WINNER)
			continue;
		for (unsigned o = 0; o < nold; o++)
			if (item_matches(&held[o], w))
				at = o;
		if (!item_place(w)) {
			w->fate = CM_ITEM_PENDING;
			n->datamap = ne;
			cm_node_release(n, &unwind_owner);
			return M_NOMEM;
		}
		if (at < nold)	/* the old entry stays held by @old or @x */
			cm_entry_release(&dst[at], &unwind_owner);
		dst[at] = w->u.entry;
		ne += at == ne;
	}
	mg->added += fresh;
	*out = n;
	return M_NODE;
}

/*
 * The node at @depth that holds what @old held (or, with @old NULL, the
 * entry @x if there is one) and the @k items, which share every chunk
 * above @depth.  @old and @x are never both given, and a node below the
 * root receives at least two keys in all, so the result is never a lone
 * entry.  M_SAME: the node would equal @old; M_NODE: *out is fresh.
 */
static enum merged merge_node(struct merge *mg, unsigned depth,
			      struct cm_item *items, size_t k,
			      struct cm_node *old, struct lone *x,
			      struct cm_node **out)
{
	if (depth == CM_COLLISION_DEPTH)
		return merge_collision(mg, items, k, old, x, out);

	size_t count[32];	/* valid for the chunks in buckets */
	uint32_t buckets = sort_by_chunk(items, k, depth, count);
	size_t next = 0;	/* the first item of the next bucket */
	uint32_t old_data = old != NULL ? old->datamap : 0;
	uint32_t old_kids = old != NULL ? old->nodemap : 0;
	uint32_t x_bit = x != NULL ? UINT32_C(1)
					     << cm_entry_chunk(mg->map, x->e, depth,
							       &x->full,
							       &x->have_full)
				   : 0;
	struct cm_entry ents[32];
	struct cm_node *kids[32];
	bool kid_fresh[32];
	uint32_t ent_fresh = 0;	/* bit i: ents[i] is a placed item's */
	uint32_t datamap = 0, nodemap = 0;
	unsigned ne = 0, nc = 0;
	bool changed = old == NULL;

	for (uint32_t todo = buckets | old_data | old_kids | x_bit; todo != 0;
	     todo &= todo - 1) {
		unsigned pos = (unsigned)__builtin_ctz(todo);
		uint32_t bit = UINT32_C(1) << pos;
		struct cm_item *b = items + next;
		size_t bk = 0;
		const struct cm_entry *held = NULL;
		struct cm_node *sub;
		enum merged r;

		if (buckets & bit)
			bk = count[pos];
		next += bk;
		if (old_kids & bit) {
			struct cm_node *child =
				cm_children(old)[cm_index(old_kids, bit)];

			r = bk == 0 ? M_SAME
				    : merge_node(mg, depth + 1, b, bk, child,
						 NULL, &sub);
			if (r == M_NOMEM)
				goto fail;
			kid_fresh[nc] = r == M_NODE;
			kids[nc++] = r == M_NODE ? sub : child;
			nodemap |= bit;
			changed |= r == M_NODE;
			continue;
		}
		if (old_data & bit)
			held = &cm_node_entries(old)[cm_index(old_data, bit)];
		else if (x_bit & bit)
			held = x->e;
		if (bk == 0) {
			ents[ne++] = *held;
			datamap |= bit;
			continue;
		}

		struct cm_item *w = single_key(b, bk, held);

		if (w != NULL) {
			for (size_t i = 0; i < bk; i++)
				if (&b[i] != w)
					settle_loser(mg, b, i, w, held);
			if (held != NULL && held->value == w->u.entry.value) {
				w->fate = CM_ITEM_KEPT;
				ents[ne++] = *held;
			} else {
				if (!item_place(w))
					goto fail;
				mg->added += held == NULL;
				ent_fresh |= UINT32_C(1) << ne;
				ents[ne++] = w->u.entry;
				changed = true;
			}
			datamap |= bit;
			continue;
		}

		/* Two keys or more: a child, which the held entry joins. */
		struct lone down = { .e = held };

		if (x != NULL && held == x->e)
			down = *x;	/* keep its hash, if computed */
		r = merge_node(mg, depth + 1, b, bk, NULL,
			       held != NULL ? &down : NULL, &sub);
		if (r == M_NOMEM)
			goto fail;
		kid_fresh[nc] = true;
		kids[nc++] = sub;
		nodemap |= bit;
		changed = true;
	}
	if (!changed)
		return M_SAME;

	struct cm_node *n = cm_node_alloc(CM_BITMAP, ne, nc, old != NULL);

	if (n == NULL)
		goto fail;
	n->datamap = datamap;
	n->nodemap = nodemap;
	memcpy(cm_children(n), kids, nc * sizeof(kids[0]));
	memcpy(cm_node_entries(n), ents, ne * sizeof(ents[0]));
	for (unsigned i = 0; i < ne; i++)
		if (!(ent_fresh >> i & 1))
			cm_entry_retain(&ents[i]);
	for (unsigned i = 0; i < nc; i++)
		if (!kid_fresh[i])
			cm_node_retain(kids[i]);
	*out = n;
	return M_NODE;

fail:
	for (unsigned i = 0; i < ne; i++)
		if (ent_fresh >> i & 1)
			cm_entry_discard(&ents[i]);
	for (unsigned i = 0; i < nc; i++)
		if (kid_fresh[i])
			cm_node_release(kids[i], &unwind_owner);
	return M_NOMEM;
}

enum cm_edit_result cm_merge(const struct cowmap *map, struct cm_node *root,
			     struct cm_item *items, size_t n,
			     struct cm_node **out, size_t *added)
{
	struct merge mg = { .map = map, .own = &map->own };

	*out = root;
	*added = 0;
	if (n == 0)
		return CM_EDIT_NOCHANGE;
	switch (merge_node(&mg, 0, items, n, root, NULL, out)) {
	case M_NODE:
		*added = mg.added;
		return CM_EDIT_CHANGED;
	case M_SAME:
		return CM_EDIT_NOCHANGE;
	case M_NOMEM:
		break;
	}
	*out = root;
	return CM_EDIT_NOMEM;
}

void cm_merge_unwind(struct cm_node *root)
{
	cm_node_release(root, &unwind_owner);
}
