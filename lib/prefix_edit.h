/*
 * prefix_edit.h - what the writers of prefix tables share: a validated
 * prefix, the edit of one prefix along its path (prefix.c), and version
 * set-up.
 */
#ifndef COWMAP_PREFIX_EDIT_H
#define COWMAP_PREFIX_EDIT_H

#include "map.h"
#include "prefix.h"

static inline unsigned cm_pfx_width(const struct cowmap *m)
{
	return m->width;
}

/* A prefix checked against its table and placed in the trie. */
struct cm_pfx_key {
	cm_addr addr;		/* masked to len bits */
	unsigned len;
	unsigned depth;		/* of the node that holds it */
	unsigned heap;		/* its heap index there */
};

/* Fill @k for a table of @width bits, or -EINVAL: NULL @addr, @len
 * beyond the width. */
int cm_pfx_key(unsigned width, const void *addr, unsigned len,
	       struct cm_pfx_key *k);

/* The same, and -EINVAL if @t is not a prefix table. */
int cm_pfx_args(const struct cowmap *t, const void *addr, unsigned len,
		struct cm_pfx_key *k);

/* Exact match under @root; *@box only for tables that own values. */
bool cm_pfx_find(const struct cm_pnode *root, const struct cm_pfx_key *k,
		 bool boxed, void **value, struct cm_pbox **box);

/*
 * One prefix set (with @value and, for owning tables, @box, which the
 * caller holds a reference to and keeps) or deleted, along its path.
 * @gen: 0 for a persistent update (every node on the path is copied), or
 * the draft generation whose nodes are edited in place.  On success
 * new_root is the new root, holding its own reference, and root_was_mine
 * says whether it replaced the old root in place (the old root's holder
 * must then not release it); added/removed say what happened to the
 * prefix.  If the sets changed nothing, new_root is the root itself and
 * root_was_mine is true.  -ENOMEM leaves everything as it was (but a
 * group's no-op routes have given up their boxes).
 */
struct cm_pfx_edit {
	const struct cm_pfx_key *key;
	const struct cm_owner *own;
	bool boxed;
	bool is_del;
	uint32_t gen;
	void *value;
	struct cm_pbox *box;
	/*
	 * Or, with n > 0, a group of sets into one node (set_many): @n
	 * routes whose keys all have @key's depth and path, applied in
	 * order; boxes[j] (owning tables) is route j's box, set to NULL if
	 * the route turned out a no-op (its box released then).
	 */
	size_t n;
	const struct cm_pfx_key *keys;
	const struct cowmap_route *routes;
	struct cm_pbox **boxes;
	/* out */
	struct cm_pnode *new_root;
	bool root_was_mine, added, removed;
	size_t nadded;		/* prefixes the sets added */
};

int cm_pfx_edit(struct cm_pfx_edit *e, struct cm_pnode *root);

/* A box for @value if @t owns its values (*@box NULL otherwise), with one
 * reference, the caller's.  -ENOMEM. */
int cm_pfx_box(const struct cowmap *t, void *value, struct cm_pbox **box);

/* A new, empty prefix table with @like's width and options; NULL with
 * errno ENOMEM. */
struct cowmap *cm_pfx_empty_like(const struct cowmap *like);

/* Make @m a prefix version of @root (its reference taken over) with
 * @count prefixes and the options of @like; checks it in debug builds. */
void cm_pfx_init(struct cowmap *m, const struct cowmap *like,
		 struct cm_pnode *root, size_t count);

#endif
