/*
 * edit.h - the copy-on-write path: setting and deleting one key.
 *
 * Both persistent updates (cowmap_set/del) and transactions use these.
 * The difference is the draft flag: a persistent update copies every node
 * on the path (none of them is a draft), a transaction changes the nodes
 * it already owns in place and copies only the shared ones, once.
 */
#ifndef COWMAP_EDIT_H
#define COWMAP_EDIT_H

#include "node.h"

struct cowmap;

struct cm_edit {
	const struct cowmap *map;	/* the hash that placed the keys */
	const struct cm_owner *own;
	bool draft;	/* nodes made by this edit belong to a transaction */
	/*
	 * Lending (lib/lend.c): the copies of the path's nodes at depths
	 * below lend_depth take over the old node's references to the slots
	 * they keep instead of adding their own (the old node keeps only its
	 * slot on the key's path).  The caller sets 1 when the version is
	 * about to be retired and alone holds its root, else 0; the walk
	 * extends it down the path while each node is held by its parent
	 * alone (cm_lend_node_ok()).  lent (out): how many levels' copies
	 * lent, the root's included, on success.
	 */
	unsigned lend_depth;
	unsigned lent;
	bool added;	/* out: set inserted a new key */
	bool removed;	/* out: del removed a key */
};

enum cm_edit_result {
	CM_EDIT_NOCHANGE = 0,	/* *out is the old root; nothing was touched */
	CM_EDIT_CHANGED = 1,	/* *out is the new root (maybe the old one,
				   changed in place when it is a draft) */
	CM_EDIT_NOMEM = -1,	/* nothing changed, nothing leaked */
};

/*
 * cm_edit_set - make the probed key map to @e in the trie under @root.
 * @e is placed by copy and retained; the caller keeps its own reference.
 * Ownership of the roots: a new root is a fresh reference (or @root itself
 * when changed in place); the caller still holds its reference to @root
 * and decides whether to drop it.
 */
enum cm_edit_result cm_edit_set(struct cm_edit *ed, struct cm_node *root,
				const struct cm_probe *p,
				const struct cm_entry *e, struct cm_node **out);

/* cm_edit_del - remove the probed key; same contract as cm_edit_set. */
enum cm_edit_result cm_edit_del(struct cm_edit *ed, struct cm_node *root,
				const struct cm_probe *p,
				struct cm_node **out);

/*
 * cm_entry_chunk - the chunk at @depth of the hash of @x, an entry of a
 * trie of @map.  An entry keeps only CM_FRAG_BITS bits of its hash, enough
 * for the first CM_FRAG_BITS / CM_BITS levels; below them the key is
 * hashed again, once: *full caches the result (*have_full says it does).
 */
unsigned cm_entry_chunk(const struct cowmap *map, const struct cm_entry *x,
			unsigned depth, uint64_t *full, bool *have_full);

/* Clear the draft flag on every node of a committed transaction and trim
 * its spare words; returns the root, which may have moved. */
struct cm_node *cm_edit_seal(struct cm_node *root);

#endif
