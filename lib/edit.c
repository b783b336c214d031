/*
 * edit.c - the copy-on-write path.
 *
 * Invariants that make failure safe:
 *
 *  - A new node is always built by copying.  A copy of a shared node
 *    retains everything it copies and leaves that node intact; whoever
 *    held it drops its reference only after the whole edit succeeded (an
 *    in-place swap in a draft parent, or the transaction's root).  A draft
 *    node's contents are moved into its copy instead (see rebuild()).
 *  - Drafts form a connected region at the top of the trie (a transaction
 *    must own a node's parent to own the node).  Walking back up, all
 *    allocations therefore happen below, or at, the first draft node, and
 *    every in-place change comes after the last allocation.  So an
 *    allocation failure unwinds by releasing the fresh nodes only, and
 *    nothing anyone can see has changed.
 *  - Deletion returns a lone remaining entry upwards (CM_SINGLE) instead
 *    of building a one-entry node, which keeps the trie canonical and
 *    costs no allocation until the level that keeps it.
 */
#include "edit.h"

#include "map.h"

#include <limits.h>

enum walk { W_NOCHANGE, W_NEWNODE, W_SINGLE, W_NOMEM };

#define NONE UINT_MAX

/* One node rebuilt with at most one entry and one child taken out and at
 * most one of each put in (positions are indexes in the new node). */
struct splice {
	uint32_t datamap, nodemap;
	unsigned skip_entry, skip_child;
	const struct cm_entry *add_entry;
	unsigned add_entry_at;
	struct cm_node *add_child;	/* a fresh reference, not retained */
	unsigned add_child_at;
};

/*
 * Write the slots @s describes into @m (whose maps are already set), taking
 * the old slots from @src_e / @src_c.  @retain: the old slots stay where
 * they were too, so each copy takes a reference; otherwise they move.
 */
static void fill(struct cm_node *m, const struct cm_entry *src_e,
		 struct cm_node *const *src_c, const struct splice *s,
		 unsigned ne, unsigned nc, bool retain)
{
	struct cm_entry *dst_e = cm_node_entries(m);
	struct cm_node **dst_c = cm_children(m);
	unsigned from = 0;

	for (unsigned to = 0; to < ne; to++) {
		if (s->add_entry != NULL && to == s->add_entry_at) {
			dst_e[to] = *s->add_entry;
			cm_entry_retain(&dst_e[to]);
			continue;
		}
		if (from == s->skip_entry)
			from++;
		dst_e[to] = src_e[from++];
		if (retain)
			cm_entry_retain(&dst_e[to]);
	}
	from = 0;
	for (unsigned to = 0; to < nc; to++) {
		if (s->add_child != NULL && to == s->add_child_at) {
			dst_c[to] = s->add_child;
			continue;
		}
		if (from == s->skip_child)
			from++;
		dst_c[to] = src_c[from++];
		if (retain)
			cm_node_retain(dst_c[to]);
	}
}

/* What a moved-from draft node left out is its alone: drop it. */
static void drop_skipped(const struct cm_edit *ed, const struct cm_entry *src_e,
			 struct cm_node *const *src_c, const struct splice *s)
{
	if (s->skip_entry != NONE)
		cm_entry_release(&src_e[s->skip_entry], ed->own);
	if (s->skip_child != NONE)
		cm_node_release(src_c[s->skip_child], ed->own);
}

/*
 * A draft bitmap node with room for @s's result is changed in place: its
 * slots are copied aside (at most 32 of each) and written back in the new
 * layout.  No allocation, so this cannot fail.
 */
static struct cm_node *rebuild_in_place(const struct cm_edit *ed,
					struct cm_node *n,
					const struct splice *s,
					unsigned ne, unsigned nc)
{
	struct cm_entry old_e[32];
	struct cm_node *old_c[32];
	unsigned one = cm_entry_count(n), onc = cm_child_count(n);

	/* The two edits of a bulk load, as plain moves of the tail. */
	if (s->add_entry != NULL && s->skip_entry == NONE &&
	    s->add_child == NULL && s->skip_child == NONE) {
		/* A new entry: the entries after it move up one. */
		struct cm_entry *e = cm_node_entries(n);
		unsigned at = s->add_entry_at;

		memmove(&e[at + 1], &e[at], (one - at) * sizeof(*e));
		e[at] = *s->add_entry;
		cm_entry_retain(&e[at]);
		n->datamap = s->datamap;
		return n;
	}
	if (s->skip_entry != NONE && s->add_child != NULL &&
	    s->add_entry == NULL && s->skip_child == NONE) {
		/*
		 * Entry i becomes a child: one more child pointer in front
		 * pushes the entries before i up by 8 bytes, and those after
		 * it (one entry fewer) come down by 16.
		 */
		struct cm_entry *e = cm_node_entries(n);
		struct cm_node **c = cm_children(n);
		unsigned i = s->skip_entry, at = s->add_child_at;
		struct cm_entry gone = e[i];
		unsigned char *base = (unsigned char *)e;

		memmove(base + 8 + i * sizeof(*e), &e[i + 1],
			(one - i - 1) * sizeof(*e));
		memmove(base + 8, base, i * sizeof(*e));
		memmove(&c[at + 1], &c[at], (onc - at) * sizeof(*c));
		c[at] = s->add_child;
		n->datamap = s->datamap;
		n->nodemap = s->nodemap;
		cm_entry_release(&gone, ed->own);
		return n;
	}

	memcpy(old_e, cm_node_entries(n), one * sizeof(old_e[0]));
	memcpy(old_c, cm_children(n), onc * sizeof(old_c[0]));
	n->datamap = s->datamap;
	n->nodemap = s->nodemap;
	fill(n, old_e, old_c, s, ne, nc, false);
	drop_skipped(ed, old_e, old_c, s);
	return n;
}

/*
 * Build @n's successor described by @s.  A node shared with other versions
 * keeps its contents, so the copy retains everything it copies.  A draft
 * node belongs to this transaction alone: it changes in place when it has
 * room, and otherwise its entries and children are moved into a bigger
 * successor and @n is left empty, so that when its (draft) parent drops it
 * only its shell is freed.  That saves an allocation, or a retain and a
 * release per slot, on every insert of a bulk load.  Emptying @n is an
 * in-place change made after the allocation, and nothing above a draft
 * allocates (see the invariants above), so a failure still changes
 * nothing.
 */
static struct cm_node *rebuild(const struct cm_edit *ed, struct cm_node *n,
			       const struct splice *s)
{
	bool coll = n->kind == CM_COLLISION;
	bool move = ed->draft && n->draft;
	unsigned ne = coll ? s->datamap : cm_popcount(s->datamap);
	unsigned nc = cm_popcount(s->nodemap);

	if (move && !coll && cm_payload_words(ne, nc) <= n->cap)
		return rebuild_in_place(ed, n, s, ne, nc);

	struct cm_node *m = cm_node_alloc(n->kind, ne, nc, ed->draft);

	if (m == NULL)
		return NULL;
	m->datamap = s->datamap;
	m->nodemap = s->nodemap;
	fill(m, cm_node_entries(n), cm_children(n), s, ne, nc, !move);
	if (move) {
		drop_skipped(ed, cm_node_entries(n), cm_children(n), s);
		n->datamap = 0;	/* a collision node's count, too */
		n->nodemap = 0;
	}
	return m;
}

static struct splice splice_of(const struct cm_node *n)
{
	return (struct splice){ .datamap = n->datamap, .nodemap = n->nodemap,
				.skip_entry = NONE, .skip_child = NONE };
}

/* Entry @i replaced by @e; same shape, so a draft changes in place. */
static struct cm_node *with_entry(const struct cm_edit *ed, struct cm_node *n,
				  unsigned i, const struct cm_entry *e)
{
	if (n->draft) {
		struct cm_entry old = cm_node_entries(n)[i];

		cm_node_entries(n)[i] = *e;
		cm_entry_retain(e);
		cm_entry_release(&old, ed->own);
		return n;
	}
	struct splice s = splice_of(n);

	s.skip_entry = i;
	s.add_entry = e;
	s.add_entry_at = i;
	return rebuild(ed, n, &s);
}

/* Child @i replaced by @child (a fresh reference); same shape. */
static struct cm_node *with_child(const struct cm_edit *ed, struct cm_node *n,
				  unsigned i, struct cm_node *child)
{
	if (n->draft) {
		struct cm_node **kids = cm_children(n);
		struct cm_node *old = kids[i];

		kids[i] = child;
		cm_node_release(old, ed->own);
		return n;
	}
	struct splice s = splice_of(n);

	s.skip_child = i;
	s.add_child = child;
	s.add_child_at = i;
	return rebuild(ed, n, &s);
}

/*
 * The chunk of @x's hash at @depth.  An entry keeps only CM_FRAG_BITS bits
 * of its hash, enough for the first CM_FRAG_BITS / CM_BITS levels; below
 * them the key is hashed again (*full caches the result).
 */
static unsigned entry_chunk(const struct cm_edit *ed, const struct cm_entry *x,
			    unsigned depth, uint64_t *full, bool *have_full)
{
	if ((depth + 1) * CM_BITS <= CM_FRAG_BITS)
		return cm_chunk(cm_entry_frag(x), depth);
	if (!*have_full) {
		*full = cm_map_hash(ed->map, cm_entry_key(x), cm_entry_len(x));
		*have_full = true;
	}
	return cm_chunk(*full, depth);
}

/*
 * Existing entry @x and new entry @y (hash @hy), which share the chunks
 * before @depth: the smallest subtree holding both, with single-child
 * nodes down to where their chunks part (or a collision node when their
 * full hashes are equal).
 */
static struct cm_node *make_pair(const struct cm_edit *ed,
				 const struct cm_entry *x,
				 const struct cm_entry *y, uint64_t hy,
				 unsigned depth)
{
	uint64_t hx = 0;
	bool have_hx = false;
	unsigned d = depth, cx = 0;

	while (d < CM_COLLISION_DEPTH &&
	       (cx = entry_chunk(ed, x, d, &hx, &have_hx)) == cm_chunk(hy, d))
		d++;

	struct cm_node *sub;

	if (d == CM_COLLISION_DEPTH) {
		sub = cm_node_alloc(CM_COLLISION, 2, 0, ed->draft);
		if (sub == NULL)
			return NULL;
		cm_node_entries(sub)[0] = *x;
		cm_node_entries(sub)[1] = *y;
	} else {
		unsigned cy = cm_chunk(hy, d);

		sub = cm_node_alloc(CM_BITMAP, 2, 0, ed->draft);
		if (sub == NULL)
			return NULL;
		sub->datamap = (UINT32_C(1) << cx) | (UINT32_C(1) << cy);
		cm_node_entries(sub)[0] = cx < cy ? *x : *y;
		cm_node_entries(sub)[1] = cx < cy ? *y : *x;
	}
	cm_entry_retain(x);
	cm_entry_retain(y);

	while (d > depth) {
		struct cm_node *wrap = cm_node_alloc(CM_BITMAP, 0, 1, ed->draft);

		d--;
		if (wrap == NULL) {
			cm_node_release(sub, ed->own);
			return NULL;
		}
		wrap->nodemap = cm_bit(hy, d);	/* where both agree */
		cm_children(wrap)[0] = sub;
		sub = wrap;
	}
	return sub;
}

static enum walk collision_set(struct cm_edit *ed, struct cm_node *n,
			       const struct cm_probe *p,
			       const struct cm_entry *e, struct cm_node **out)
{
	for (unsigned i = 0; i < n->datamap; i++) {
		if (!cm_entry_matches(&cm_node_entries(n)[i], p))
			continue;
		if (cm_node_entries(n)[i].value == e->value)
			return W_NOCHANGE;
		*out = with_entry(ed, n, i, e);
		return *out ? W_NEWNODE : W_NOMEM;
	}
	struct splice s = splice_of(n);

	s.datamap = n->datamap + 1;
	s.add_entry = e;
	s.add_entry_at = n->datamap;
	*out = rebuild(ed, n, &s);
	if (*out == NULL)
		return W_NOMEM;
	ed->added = true;
	return W_NEWNODE;
}

static enum walk set_walk(struct cm_edit *ed, struct cm_node *n,
			  unsigned depth, const struct cm_probe *p,
			  const struct cm_entry *e, struct cm_node **out)
{
	if (depth == CM_COLLISION_DEPTH)
		return collision_set(ed, n, p, e, out);

	uint32_t bit = cm_bit(p->hash, depth);
	struct splice s = splice_of(n);

	if (n->datamap & bit) {
		unsigned i = cm_index(n->datamap, bit);
		const struct cm_entry *x = &cm_node_entries(n)[i];

		if (cm_entry_matches(x, p)) {
			if (x->value == e->value)
				return W_NOCHANGE;
			*out = with_entry(ed, n, i, e);
			return *out ? W_NEWNODE : W_NOMEM;
		}
		/* Another key owns this position: both move one level down. */
		struct cm_node *sub = make_pair(ed, x, e, p->hash, depth + 1);

		if (sub == NULL)
			return W_NOMEM;
		s.datamap &= ~bit;
		s.nodemap |= bit;
		s.skip_entry = i;
		s.add_child = sub;
		s.add_child_at = cm_index(s.nodemap, bit);
		*out = rebuild(ed, n, &s);
		if (*out == NULL) {
			cm_node_release(sub, ed->own);
			return W_NOMEM;
		}
		ed->added = true;
		return W_NEWNODE;
	}

	if (n->nodemap & bit) {
		unsigned i = cm_index(n->nodemap, bit);
		struct cm_node *child = cm_children(n)[i], *next;
		enum walk r = set_walk(ed, child, depth + 1, p, e, &next);

		if (r != W_NEWNODE)
			return r;
		if (next == child) {	/* changed in place: we are a draft too */
			*out = n;
			return W_NEWNODE;
		}
		*out = with_child(ed, n, i, next);
		if (*out == NULL) {
			cm_node_release(next, ed->own);
			return W_NOMEM;
		}
		return W_NEWNODE;
	}

	s.datamap |= bit;
	s.add_entry = e;
	s.add_entry_at = cm_index(s.datamap, bit);
	*out = rebuild(ed, n, &s);
	if (*out == NULL)
		return W_NOMEM;
	ed->added = true;
	return W_NEWNODE;
}

/*
 * Remove the probed key below @n.  W_SINGLE means @n would be left with
 * one entry and nothing else: *single is that entry (still owned by @n)
 * and @n is untouched; the parent takes the entry in place of the child.
 */
static enum walk del_walk(struct cm_edit *ed, struct cm_node *n,
			  unsigned depth, const struct cm_probe *p,
			  struct cm_node **out, struct cm_entry *single)
{
	struct splice s = splice_of(n);

	if (depth == CM_COLLISION_DEPTH) {
		for (unsigned i = 0; i < n->datamap; i++) {
			if (!cm_entry_matches(&cm_node_entries(n)[i], p))
				continue;
			ed->removed = true;
			if (n->datamap == 2) {
				*single = cm_node_entries(n)[1 - i];
				return W_SINGLE;
			}
			s.datamap = n->datamap - 1;
			s.skip_entry = i;
			*out = rebuild(ed, n, &s);
			return *out ? W_NEWNODE : W_NOMEM;
		}
		return W_NOCHANGE;
	}

	uint32_t bit = cm_bit(p->hash, depth);

	if (n->datamap & bit) {
		unsigned i = cm_index(n->datamap, bit);

		if (!cm_entry_matches(&cm_node_entries(n)[i], p))
			return W_NOCHANGE;
		ed->removed = true;
		if (depth > 0 && n->nodemap == 0 &&
		    cm_popcount(n->datamap) == 2) {
			*single = cm_node_entries(n)[1 - i];
			return W_SINGLE;
		}
		s.datamap &= ~bit;
		s.skip_entry = i;
		*out = rebuild(ed, n, &s);
		return *out ? W_NEWNODE : W_NOMEM;
	}

	if (!(n->nodemap & bit))
		return W_NOCHANGE;

	unsigned i = cm_index(n->nodemap, bit);
	struct cm_node *child = cm_children(n)[i], *next;
	enum walk r = del_walk(ed, child, depth + 1, p, &next, single);

	switch (r) {
	case W_NOCHANGE:
	case W_NOMEM:
		return r;
	case W_SINGLE:
		/* Our only content was that child: pass the lone entry up. */
		if (depth > 0 && n->datamap == 0 &&
		    cm_popcount(n->nodemap) == 1)
			return W_SINGLE;
		s.nodemap &= ~bit;
		s.datamap |= bit;
		s.skip_child = i;
		s.add_entry = single;
		s.add_entry_at = cm_index(s.datamap, bit);
		*out = rebuild(ed, n, &s);
		return *out ? W_NEWNODE : W_NOMEM;
	case W_NEWNODE:
		if (next == child) {
			*out = n;
			return W_NEWNODE;
		}
		*out = with_child(ed, n, i, next);
		if (*out == NULL) {
			cm_node_release(next, ed->own);
			return W_NOMEM;
		}
		return W_NEWNODE;
	}
	return W_NOMEM;	/* not reached */
}

enum cm_edit_result cm_edit_set(struct cm_edit *ed, struct cm_node *root,
				const struct cm_probe *p,
				const struct cm_entry *e, struct cm_node **out)
{
	ed->added = false;
	*out = root;
	switch (set_walk(ed, root, 0, p, e, out)) {
	case W_NEWNODE:
		return CM_EDIT_CHANGED;
	case W_NOMEM:
		*out = root;
		ed->added = false;
		return CM_EDIT_NOMEM;
	default:
		*out = root;
		return CM_EDIT_NOCHANGE;
	}
}

enum cm_edit_result cm_edit_del(struct cm_edit *ed, struct cm_node *root,
				const struct cm_probe *p,
				struct cm_node **out)
{
	struct cm_entry single;

	ed->removed = false;
	*out = root;
	switch (del_walk(ed, root, 0, p, out, &single)) {
	case W_NEWNODE:
		return CM_EDIT_CHANGED;
	case W_NOMEM:
		*out = root;
		ed->removed = false;
		return CM_EDIT_NOMEM;
	default:	/* the root never answers W_SINGLE */
		*out = root;
		ed->removed = false;
		return CM_EDIT_NOCHANGE;
	}
}

struct cm_node *cm_edit_seal(struct cm_node *n)
{
	if (!n->draft)
		return n;

	struct cm_node **kids = cm_children(n);
	unsigned nc = cm_child_count(n);

	for (unsigned i = 0; i < nc; i++)
		kids[i] = cm_edit_seal(kids[i]);
	n = cm_node_shrink(n);
	n->draft = 0;
	return n;
}
