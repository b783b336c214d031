/*
 * edit.c - the copy-on-write path.
 *
 * Invariants that make failure safe:
 *
 *  - A shared node is never changed: its successor is a copy, which
 *    retains everything it copies; whoever held the node drops its
 *    reference only after the whole edit succeeded (an in-place swap in a
 *    draft parent, or the transaction's root).  A draft node is changed in
 *    place when the result fits its allocation, and otherwise its
 *    contents are moved into the copy (see rebuild()).
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
 * Splice a draft node where it is, when the result fits its allocation:
 * in a transaction, a split (an entry gives way to a child, two words
 * fewer) or a delete then costs no allocation and no copy of the node,
 * and commit trims the spare words (cm_node_trim()).  Children and entries
 * are one array of words, [children | entries]; each step below moves the
 * tail of that array by what it takes out or puts in.  Removals come
 * first, so the array never outgrows the result.  What is taken out is
 * the node's alone (see rebuild()) and is dropped at the end.
 */
static void splice_in_place(const struct cm_edit *ed, struct cm_node *n,
			    const struct splice *s, unsigned nc)
{
	unsigned char *w = (unsigned char *)cm_children(n);
	size_t used = 8 * (size_t)cm_words_for(cm_entry_count(n),
						cm_child_count(n));
	size_t kids = sizeof(struct cm_node *), ent = sizeof(struct cm_entry);
	size_t old_kids = kids * cm_child_count(n), at;
	struct cm_entry gone_entry;
	struct cm_node *gone_child = NULL;

	if (s->skip_entry != NONE) {
		at = old_kids + ent * s->skip_entry;
		memcpy(&gone_entry, w + at, ent);
		memmove(w + at, w + at + ent, used - at - ent);
		used -= ent;
	}
	if (s->skip_child != NONE) {
		at = kids * s->skip_child;
		memcpy(&gone_child, w + at, kids);
		memmove(w + at, w + at + kids, used - at - kids);
		used -= kids;
	}
	if (s->add_child != NULL) {
		at = kids * s->add_child_at;
		memmove(w + at + kids, w + at, used - at);
		memcpy(w + at, &s->add_child, kids);
		used += kids;
	}
	if (s->add_entry != NULL) {
		at = kids * nc + ent * s->add_entry_at;
		memmove(w + at + ent, w + at, used - at);
		memcpy(w + at, s->add_entry, ent);
		cm_entry_retain(s->add_entry);
		used += ent;
	}
	n->datamap = s->datamap;
	n->nodemap = s->nodemap;
	if (s->skip_entry != NONE)
		cm_entry_release(&gone_entry, ed->own);
	if (gone_child != NULL)
		cm_node_release(gone_child, ed->own);
}

/*
 * Build @n's successor described by @s.  A node shared with other versions
 * keeps its contents, so the copy retains everything it copies.  A draft
 * node belongs to this transaction alone: it is spliced where it is if the
 * result fits, and otherwise, since its (draft) parent drops it as soon as
 * the successor is in place, its entries and children are moved instead,
 * and @n is left empty so that dropping it frees only its shell.  That
 * saves a retain and a release per slot on every insert of a bulk load.
 * Emptying @n is an in-place change made after the allocation, and nothing
 * above a draft allocates (see the invariants above), so a failure still
 * changes nothing.  A copy that lends (lib/lend.c) takes over @n's
 * references without touching @n, which readers may still be walking.
 */
static struct cm_node *rebuild(struct cm_edit *ed, struct cm_node *n,
			       const struct splice *s, unsigned depth)
{
	bool coll = n->kind == CM_COLLISION;
	bool move = ed->draft && n->draft;
	bool lend = depth < ed->lend_depth;
	unsigned ne = coll ? s->datamap : cm_popcount(s->datamap);
	unsigned nc = cm_popcount(s->nodemap);

	if (move && cm_words_for(ne, nc) <= n->words) {
		splice_in_place(ed, n, s, nc);
		return n;
	}

	struct cm_node *m = cm_node_alloc(n->kind, ne, nc, ed->draft);

	if (m == NULL)
		return NULL;
	m->datamap = s->datamap;
	m->nodemap = s->nodemap;

	const struct cm_entry *src_e = cm_node_entries(n);
	struct cm_entry *dst_e = cm_node_entries(m);
	bool retain = !move && !lend;
	unsigned from = 0;

	if (lend && ed->lent <= depth)
		ed->lent = depth + 1;	/* the deepest copy is made first */

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

	struct cm_node **src = cm_children(n), **dst = cm_children(m);

	if (retain)
		cm_prefetch_refs(src, cm_child_count(n));
	from = 0;
	for (unsigned to = 0; to < nc; to++) {
		if (s->add_child != NULL && to == s->add_child_at) {
			dst[to] = s->add_child;
			continue;
		}
		if (from == s->skip_child)
			from++;
		dst[to] = src[from++];
		if (retain)
			cm_node_retain(dst[to]);
	}
	if (move) {
		/* What was left out is @n's alone: drop it now. */
		if (s->skip_entry != NONE)
			cm_entry_release(&src_e[s->skip_entry], ed->own);
		if (s->skip_child != NONE)
			cm_node_release(src[s->skip_child], ed->own);
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
static struct cm_node *with_entry(struct cm_edit *ed, struct cm_node *n,
				  unsigned depth, unsigned i,
				  const struct cm_entry *e)
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
	return rebuild(ed, n, &s, depth);
}

/* Child @i replaced by @child (a fresh reference); same shape. */
static struct cm_node *with_child(struct cm_edit *ed, struct cm_node *n,
				  unsigned depth, unsigned i,
				  struct cm_node *child)
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
	return rebuild(ed, n, &s, depth);
}

unsigned cm_entry_chunk(const struct cowmap *map, const struct cm_entry *x,
			unsigned depth, uint64_t *full, bool *have_full)
{
	if ((depth + 1) * CM_BITS <= CM_FRAG_BITS)
		return cm_chunk(cm_entry_frag(x), depth);
	if (!*have_full) {
		*full = cm_map_hash(map, cm_entry_key(x), cm_entry_len(x));
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
	       (cx = cm_entry_chunk(ed->map, x, d, &hx, &have_hx)) ==
		       cm_chunk(hy, d))
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
	const unsigned depth = CM_COLLISION_DEPTH;

	for (unsigned i = 0; i < n->datamap; i++) {
		if (!cm_entry_matches(&cm_node_entries(n)[i], p))
			continue;
		if (cm_node_entries(n)[i].value == e->value)
			return W_NOCHANGE;
		*out = with_entry(ed, n, depth, i, e);
		return *out ? W_NEWNODE : W_NOMEM;
	}
	struct splice s = splice_of(n);

	s.datamap = n->datamap + 1;
	s.add_entry = e;
	s.add_entry_at = n->datamap;
	*out = rebuild(ed, n, &s, depth);
	if (*out == NULL)
		return W_NOMEM;
	ed->added = true;
	return W_NEWNODE;
}

/* About to walk into @child at @depth: may its copy lend too? */
static void extend_lending(struct cm_edit *ed, const struct cm_node *child,
			   unsigned depth)
{
	if (ed->lend_depth == depth && cm_lend_node_ok(child))
		ed->lend_depth = depth + 1;
}

/* Drop @next, the copy at @depth that a failed update leaves unused. */
static void drop_copy(struct cm_edit *ed, struct cm_node *next,
		      unsigned depth, const struct cm_probe *p)
{
	if (depth < ed->lent)
		cm_lend_unwind(next, depth, ed->lent, p->hash);
	cm_node_release(next, ed->own);
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
			*out = with_entry(ed, n, depth, i, e);
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
		*out = rebuild(ed, n, &s, depth);
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

		extend_lending(ed, child, depth + 1);

		enum walk r = set_walk(ed, child, depth + 1, p, e, &next);

		if (r != W_NEWNODE)
			return r;
		if (next == child) {	/* changed in place: we are a draft too */
			*out = n;
			return W_NEWNODE;
		}
		*out = with_child(ed, n, depth, i, next);
		if (*out == NULL) {
			drop_copy(ed, next, depth + 1, p);
			return W_NOMEM;
		}
		return W_NEWNODE;
	}

	s.datamap |= bit;
	s.add_entry = e;
	s.add_entry_at = cm_index(s.datamap, bit);
	*out = rebuild(ed, n, &s, depth);
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
			*out = rebuild(ed, n, &s, depth);
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
		*out = rebuild(ed, n, &s, depth);
		return *out ? W_NEWNODE : W_NOMEM;
	}

	if (!(n->nodemap & bit))
		return W_NOCHANGE;

	unsigned i = cm_index(n->nodemap, bit);
	struct cm_node *child = cm_children(n)[i], *next;

	extend_lending(ed, child, depth + 1);

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
		*out = rebuild(ed, n, &s, depth);
		return *out ? W_NEWNODE : W_NOMEM;
	case W_NEWNODE:
		if (next == child) {
			*out = n;
			return W_NEWNODE;
		}
		*out = with_child(ed, n, depth, i, next);
		if (*out == NULL) {
			drop_copy(ed, next, depth + 1, p);
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
	ed->lent = 0;
	*out = root;
	switch (set_walk(ed, root, 0, p, e, out)) {
	case W_NEWNODE:
		return CM_EDIT_CHANGED;
	case W_NOMEM:
		*out = root;
		ed->added = false;
		ed->lent = 0;
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
	ed->lent = 0;
	*out = root;
	switch (del_walk(ed, root, 0, p, out, &single)) {
	case W_NEWNODE:
		return CM_EDIT_CHANGED;
	case W_NOMEM:
		*out = root;
		ed->removed = false;
		ed->lent = 0;
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
	n->draft = 0;

	struct cm_node **kids = cm_children(n);
	unsigned nc = cm_child_count(n);

	for (unsigned i = 0; i < nc; i++)
		kids[i] = cm_edit_seal(kids[i]);
	return cm_node_trim(n);
}
