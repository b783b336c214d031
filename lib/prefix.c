/*
 * prefix.c - prefix tables: versions whose keys are address prefixes,
 * answered by longest-prefix match; creation, exact get, and the
 * persistent updates cowmap_prefix_set() and cowmap_prefix_del(), with the
 * edit that transactions share (prefix_txn.c).
 *
 * 1. The idea
 *
 * A prefix table is a multibit trie over the address bits, six bits a
 * level, in the spirit of Tree Bitmap (Eatherton, Varghese and Dittia,
 * 2004) and Poptrie (Asai and Ohara, 2015): a node has a 64-bit map of
 * its children, indexed by popcount into a dense array, like the hash
 * trie's nodes (node.h) but indexed by address bits instead of hash bits.
 * Take 10.1.2.0/23 in an IPv4 table:
 *
 *     address bits   000010 100000 000100 000010 0000...
 *     depth          0      1      2      3
 *     slot           2      32     4      2
 *
 * A prefix of length L lives in the node at depth d = (L - 1) / 6, at
 * relative length r = L - 6d (1..6; the root also keeps /0, r = 0), so
 * /23 sits in the depth-3 node with r = 5: its first five bits there,
 * 00001, name slots 2 and 3 of that node.  Lengths that are multiples of
 * six end a node rather than open one: /24 is the same node's r = 6.
 *
 * 2. What a node holds (layout in prefix.h)
 *
 * The prefixes stored in a node: a 128-bit map indexed by heap index
 * h = 2^r + (the r bits), 1 for /0, 2..3 for r = 1, ... 64..127 for r = 6,
 * and their values (and, for tables that own values, reference-counted
 * boxes) in a dense array in heap order.  Exact get, iteration, diff and
 * deletion work on these.
 *
 * What lookups read: for each of the 64 slots, the longest prefix of this
 * node that covers it (a heap index, 0 for none) - the node's prefixes
 * expanded over its slots, as controlled prefix expansion does, but inside
 * the node only.  The 64 answers are stored compressed as runs, Poptrie's
 * leaf compression: a 64-bit runmap marks the slots where the answer
 * changes, and one byte per run gives it.  Above, with /23 and 10.0.0.0/8
 * stored, the depth-1 node's slots 0..63 are all answered by /8 (one run)
 * and the depth-3 node's slots 2..3 by /23 (runs at 0, 2, 4).
 *
 * 3. The lookup
 *
 * Walk from the root: at each node take the slot's six bits, remember the
 * node and heap index if its runs answer, and go down if the child bit is
 * set.  The deepest answer wins; only then is its value read.  A node is
 * two maps and a few run bytes on its first line plus a child pointer, so
 * an IPv4 /24 is four such steps (prefix_lookup.c, which also walks a
 * batch of addresses in rounds with prefetching).  Because answers are
 * remembered on the way down rather than pushed into the children (as
 * Poptrie's leaf pushing does), a route change touches only its own node
 * and the path above it.
 *
 * 4. Writes: path copying
 *
 * Every write goes through pfx_edit(): collect the path to the node of
 * the prefix, then rebuild it bottom-up, one level at a time.  The node
 * of the prefix (and any node that gains or loses a child) is unpacked
 * into arrays indexed by slot and heap index (struct cm_pbuild), changed
 * and packed again, which recomputes its runs (prefix_node.c); a node
 * above whose only change is one child pointer is copied as it is and
 * the pointer replaced.  A persistent update does this into new nodes
 * (path copying: the old version is untouched and shares the rest).  A
 * transaction's draft packs into the nodes it already owns, in place,
 * when they have room (nodes it allocates get spare words, trimmed at
 * commit).  Canonical form: a node other than the root exists only while
 * it holds a prefix or a child, so the shape depends only on the set of
 * prefixes and equality and diff can compare structure.
 *
 * 5. Ownership
 *
 * As in the hash trie: refs counts the parents holding a node; readers
 * never touch it.  A node with draft == the transaction's generation is
 * that transaction's alone and may change in place; every node on the
 * path above such a node is the transaction's too, which is what makes
 * an in-place edit unable to fail half way (only a new node can need
 * memory, and a failure then leaves the draft as it was).  Values a table
 * owns live in boxes shared by node copies, so value_free runs once, when
 * the last node holding the box goes.
 *
 * Who does what: prefix.c (this file) create, get, set, del and the edit;
 * prefix_node.c packing, freeing, stats and the debug checker;
 * prefix_lookup.c the lookups; prefix_txn.c transactions and the whole-
 * table load; prefix_diff.c iteration, diff and equality; prefix_cell.c
 * the cell calls.  doc/prefix-trie.md tells what was measured.
 */
#include "prefix.h"

#include "alloc.h"
#include "map.h"
#include "prefix_edit.h"
#include "slab.h"

#include <errno.h>

static bool width_ok(unsigned width)
{
	return width >= 1 && width <= CM_PFX_MAX_WIDTH;
}

struct cowmap *cowmap_prefix_new(unsigned width,
				 const struct cowmap_options *opts)
{
	if (!width_ok(width)) {
		errno = EINVAL;
		return NULL;
	}

	struct cowmap proto = { .kind = CM_KIND_PREFIX,
				.width = (uint8_t)width };

	if (opts != NULL) {
		proto.own.value_free = opts->value_free;
		proto.own.ctx = opts->ctx;
		proto.max_entries = opts->max_entries;
	}

	return cm_pfx_empty_like(&proto);
}

struct cowmap *cm_pfx_empty_like(const struct cowmap *like)
{
	struct cowmap *m = cm_malloc(sizeof(*m));
	struct cm_pnode *root = cm_pn_empty();

	if (m == NULL || root == NULL) {
		cm_free(m);
		if (root != NULL)
			cm_slab_free(root, cm_pn_bytes(root));
		errno = ENOMEM;
		return NULL;
	}
	cm_pfx_init(m, like, root, 0);
	return m;
}

unsigned cowmap_prefix_width(const struct cowmap *m)
{
	return cm_prefix_valid(m) ? cm_pfx_width(m) : 0;
}

void cm_pfx_init(struct cowmap *m, const struct cowmap *like,
		 struct cm_pnode *root, size_t count)
{
	if (m != like)
		cm_map_copy_options(m, like);
	atomic_init(&m->refs, 1);
	m->magic = CM_MAP_MAGIC;
	m->proot = root;
	m->count = count;
	cm_prefix_check(m);
}

int cm_pfx_key(unsigned width, const void *addr, unsigned len,
	       struct cm_pfx_key *k)
{
	if (addr == NULL || len > width)
		return -EINVAL;
	k->len = len;
	k->addr = cm_pfx_mask(cm_addr_load(addr, width), len);
	k->depth = cm_pfx_depth(len);
	k->heap = cm_pfx_heap(k->addr, len);
	return 0;
}

int cm_pfx_args(const struct cowmap *t, const void *addr, unsigned len,
		struct cm_pfx_key *k)
{
	if (!cm_prefix_valid(t))
		return -EINVAL;
	return cm_pfx_key(cm_pfx_width(t), addr, len, k);
}

bool cm_pfx_find(const struct cm_pnode *n, const struct cm_pfx_key *k,
		 bool boxed, void **value, struct cm_pbox **box)
{
	for (unsigned d = 0; d < k->depth; d++) {
		n = cm_pn_child(n, cm_pfx_slot(k->addr, d));
		if (n == NULL)
			return false;
	}
	if (!cm_pfx_has(n->pfxmap, k->heap))
		return false;

	unsigned i = cm_pfx_index(n->pfxmap, k->heap);

	if (value != NULL)
		*value = cm_pn_values(n)[i];
	if (box != NULL)
		*box = boxed ? cm_pn_boxes(n)[i] : NULL;
	return true;
}

int cowmap_prefix_get(const struct cowmap *t, const void *addr, unsigned len,
		      void **value)
{
	struct cm_pfx_key k;

	if (cm_pfx_args(t, addr, len, &k) < 0)
		return -EINVAL;
	return cm_pfx_find(t->proot, &k, false, value, NULL);
}

/* The node's references to what @b holds are new: take them, except the
 * child at @skip_slot (its reference came with it; -1 for none). */
static void retain_contents(const struct cm_pnode *n, bool boxed, int skip_slot)
{
	struct cm_pnode **kids = cm_pn_children(n);
	unsigned i = 0;

	cm_pn_prefetch_refs(kids, cm_popcount64(n->childmap));
	for (uint64_t m = n->childmap; m != 0; m &= m - 1, i++)
		if ((int)__builtin_ctzll(m) != skip_slot)
			cm_pn_retain(kids[i]);
	if (boxed) {
		unsigned np = cm_pfx_count(n->pfxmap);
		struct cm_pbox **boxes = cm_pn_boxes(n);

		for (i = 0; i < np; i++)
			cm_pbox_retain(boxes[i]);
	}
}

static void unpack_or_empty(const struct cm_pnode *n, bool boxed,
			    struct cm_pbuild *b)
{
	if (n != NULL) {
		cm_pn_unpack(n, boxed, b);
	} else {
		b->childmap = 0;
		b->pfxmap[0] = b->pfxmap[1] = 0;
	}
}

static bool mine(const struct cm_pnode *n, uint32_t gen)
{
	return n != NULL && gen != 0 && n->draft == gen;
}

/* What the sets of one edit did to the node of their prefixes. */
struct changes {
	uint64_t changed[2];	/* heap indices set */
	struct cm_pbox *replaced[CM_PFX_HEAP];	/* boxes of the node's own
						   prefixes they replaced */
	unsigned nreplaced;
};

/*
 * Apply the edit's sets, in order, to the unpacked node @b: one (key,
 * value, box), or the group of routes that set_many found consecutive and
 * bound for this node.  A set of the value the prefix has at that moment
 * is a no-op; a group's no-op gives its box up at once (it transferred
 * nothing).  Returns false if nothing changed.
 */
static bool set_prefixes(struct cm_pfx_edit *e, struct cm_pbuild *b,
			 struct changes *ch)
{
	uint64_t orig[2] = { b->pfxmap[0], b->pfxmap[1] };
	size_t n = e->n != 0 ? e->n : 1;

	ch->changed[0] = ch->changed[1] = 0;
	ch->nreplaced = 0;
	for (size_t j = 0; j < n; j++) {
		unsigned h = e->n != 0 ? e->keys[j].heap : e->key->heap;
		void *v = e->n != 0 ? e->routes[j].value : e->value;
		struct cm_pbox *box = e->n != 0 ? (e->boxed ? e->boxes[j] : NULL)
						: e->box;
		uint64_t bit = UINT64_C(1) << (h & 63);

		if ((b->pfxmap[h >> 6] & bit) && b->value[h] == v) {
			if (e->n != 0 && box != NULL) {
				cm_pbox_release(box, e->own, true);
				e->boxes[j] = NULL;
			}
			continue;
		}
		if (e->boxed && (orig[h >> 6] & bit) &&
		    !(ch->changed[h >> 6] & bit))
			ch->replaced[ch->nreplaced++] = b->box[h];
		b->pfxmap[h >> 6] |= bit;
		b->value[h] = v;
		b->box[h] = box;
		ch->changed[h >> 6] |= bit;
	}
	e->nadded = cm_popcount64(ch->changed[0] & ~orig[0]) +
		    cm_popcount64(ch->changed[1] & ~orig[1]);
	e->added = e->nadded > 0;
	return (ch->changed[0] | ch->changed[1]) != 0;
}

/* The sets went into a node edited in place: it holds the final box of
 * each prefix they set, and no longer the node's own boxes they
 * replaced (which the draft alone may have held: value_free now). */
static void settle_boxes(struct cm_pfx_edit *e, const struct cm_pbuild *b,
			 const struct changes *ch)
{
	if (!e->boxed)
		return;
	for (unsigned i = 0; i < ch->nreplaced; i++)
		cm_pbox_release(ch->replaced[i], e->own, false);
	for (unsigned w = 0; w < 2; w++)
		for (uint64_t m = ch->changed[w]; m != 0; m &= m - 1)
			cm_pbox_retain(b->box[64 * w +
					       (unsigned)__builtin_ctzll(m)]);
}

/*
 * The edit (see "Writes" above).  Levels are rebuilt from the prefix's
 * node up to the root with one unpacked node, so the stack holds one
 * struct cm_pbuild however deep the path.
 */
int cm_pfx_edit(struct cm_pfx_edit *e, struct cm_pnode *root)
{
	struct cm_pnode *path[CM_PFX_MAX_DEPTH + 1];
	const struct cm_pfx_key *k = e->key;
	struct cm_pbuild b;
	unsigned td = k->depth;
	struct cm_pnode *n = root;

	for (unsigned d = 0; d <= td; d++) {
		path[d] = n;
		if (d < td && n != NULL)
			n = cm_pn_child(n, cm_pfx_slot(k->addr, d));
	}

	struct cm_pnode *below = NULL;
	bool below_mine = false;
	struct changes ch;

	ch.changed[0] = ch.changed[1] = 0;
	ch.nreplaced = 0;
	e->added = e->removed = false;
	e->nadded = 0;
	for (int d = (int)td; d >= 0; d--) {
		struct cm_pnode *old = path[d], *nn;
		bool own = mine(old, e->gen);
		unsigned s = 0;
		struct cm_pnode *old_child = NULL;
		struct cm_pbox *old_box = NULL;

		if (d == (int)td) {
			unpack_or_empty(old, e->boxed, &b);
			if (e->is_del) {
				unsigned h = k->heap;
				bool had = cm_pfx_has(b.pfxmap, h);

				if (had && e->boxed)
					old_box = b.box[h];
				b.pfxmap[h >> 6] &= ~(UINT64_C(1) << (h & 63));
				e->removed = had;
			} else if (!set_prefixes(e, &b, &ch)) {
				/* every set was a no-op */
				e->new_root = root;
				e->root_was_mine = true;
				return 0;
			}
		} else {
			s = cm_pfx_slot(k->addr, (unsigned)d);
			old_child = old != NULL ? cm_pn_child(old, s) : NULL;
			if (below == old_child) {
				/* changed in place below: nothing above moves */
				e->new_root = root;
				e->root_was_mine = true;
				return 0;
			}
			if (old_child != NULL && below != NULL) {
				/* only a child pointer changes: no need to
				 * unpack and pack the node */
				unsigned i = cm_popcount64(
					old->childmap &
					((UINT64_C(1) << s) - 1));

				if (own) {
					nn = old;
					if (!below_mine)
						cm_pn_release(old_child, e->own);
				} else {
					nn = cm_pn_clone(old, e->boxed, e->gen,
							 e->gen != 0);
					if (nn == NULL) {
						if (!below_mine)
							cm_pn_release(below,
								      e->own);
						return -ENOMEM;
					}
					retain_contents(nn, e->boxed, (int)s);
				}
				cm_pn_children(nn)[i] = below;
				below = nn;
				below_mine = own;
				continue;
			}
			unpack_or_empty(old, e->boxed, &b);
			if (below != NULL) {
				b.childmap |= UINT64_C(1) << s;
				b.child[s] = below;
			} else {
				b.childmap &= ~(UINT64_C(1) << s);
			}
		}

		if (d > 0 && b.childmap == 0 && b.pfxmap[0] == 0 &&
		    b.pfxmap[1] == 0) {
			nn = NULL;	/* canonical form: no empty nodes */
			if (own) {
				if (old_box != NULL)
					cm_pbox_release(old_box, e->own, false);
				if (old_child != NULL && !below_mine)
					cm_pn_release(old_child, e->own);
				cm_slab_free(old, cm_pn_bytes(old));
			}
		} else {
			nn = cm_pn_pack(&b, e->boxed, own ? old : NULL, e->gen,
					e->gen != 0);
			if (nn == NULL) {
				/* Only a copy or a growing node needs memory,
				 * and then everything below is new. */
				if (below != NULL && !below_mine)
					cm_pn_release(below, e->own);
				return -ENOMEM;
			}
			if (own) {
				if (old_box != NULL)
					cm_pbox_release(old_box, e->own, false);
				if (d == (int)td && !e->is_del)
					settle_boxes(e, &b, &ch);
				if (old_child != NULL && !below_mine)
					cm_pn_release(old_child, e->own);
			} else {
				retain_contents(nn, e->boxed,
						d == (int)td ? -1 : (int)s);
			}
		}
		below = nn;
		below_mine = own;
	}
	e->new_root = below;
	e->root_was_mine = below_mine;
	return 0;
}

int cm_pfx_box(const struct cowmap *t, void *value, struct cm_pbox **box)
{
	*box = NULL;
	if (t->own.value_free == NULL)
		return 0;
	*box = cm_slab_alloc(sizeof(**box));
	if (*box == NULL)
		return -ENOMEM;
	atomic_init(&(*box)->refs, 1);
	(*box)->value = value;
	return 0;
}

/* cowmap_prefix_set() and cowmap_prefix_del(): validate, answer no-ops
 * and refusals before allocating, allocate the version shell and the box,
 * then copy the path. */
static struct cowmap *persistent_edit(const struct cowmap *t, const void *addr,
				      unsigned len, bool is_del, void *value)
{
	struct cm_pfx_key k;
	void *old;

	if (cm_pfx_args(t, addr, len, &k) < 0) {
		errno = EINVAL;
		return NULL;
	}

	bool found = cm_pfx_find(t->proot, &k, false, &old, NULL);

	if (is_del ? !found : (found && old == value))
		return cowmap_retain(t);
	if (!is_del && !found && t->max_entries != 0 &&
	    t->count >= t->max_entries) {
		errno = ENOSPC;
		return NULL;
	}

	struct cowmap *next = cm_malloc(sizeof(*next));
	struct cm_pfx_edit e = { .key = &k, .own = &t->own,
				 .boxed = t->own.value_free != NULL,
				 .is_del = is_del, .value = value };

	if (next == NULL || (!is_del && cm_pfx_box(t, value, &e.box) < 0) ||
	    cm_pfx_edit(&e, t->proot) < 0) {
		if (e.box != NULL)
			cm_pbox_release(e.box, &t->own, true);
		cm_free(next);
		errno = ENOMEM;
		return NULL;
	}
	if (e.box != NULL)
		cm_pbox_release(e.box, &t->own, true);	/* the trie holds it */
	cm_pfx_init(next, t, e.new_root,
		    t->count + (e.added ? 1 : 0) - (e.removed ? 1 : 0));
	return next;
}

struct cowmap *cowmap_prefix_set(const struct cowmap *t, const void *addr,
				 unsigned len, void *value)
{
	return persistent_edit(t, addr, len, false, value);
}

struct cowmap *cowmap_prefix_del(const struct cowmap *t, const void *addr,
				 unsigned len)
{
	return persistent_edit(t, addr, len, true, NULL);
}
