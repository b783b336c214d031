/*
 * txn.h - the transaction handle, shared by the hash map's drafts
 * (txn.c) and the prefix table's (prefix_txn.c).
 */
#ifndef COWMAP_TXN_H
#define COWMAP_TXN_H

#include "map.h"

#define CM_TXN_LIVE 0x74786e21u	/* "txn!" */
#define CM_TXN_DONE 0x74786e2du	/* "txn-" */

struct cowmap_txn {
	uint32_t magic;
	bool changed;
	uint32_t gen;		/* prefix drafts: nodes with draft == gen are ours */
	struct cowmap *base;	/* retained: returned as is if nothing changed */
	struct cowmap *shell;	/* the committed version, options preset */
	union {
		struct cm_node *root;	/* the draft's own reference */
		struct cm_pnode *proot;	/* (prefix tables) */
	};
	size_t count;
};

/* Is @t a live handle?  Debug builds report a finished one for @call. */
bool cm_txn_live(const struct cowmap_txn *t, const char *call);

/* A live handle of the hash kind / the prefix kind (EINVAL otherwise). */
static inline bool cm_txn_hash(const struct cowmap_txn *t, const char *call)
{
	return cm_txn_live(t, call) && t->shell->kind == CM_KIND_HASH;
}

static inline bool cm_txn_prefix(const struct cowmap_txn *t, const char *call)
{
	return cm_txn_live(t, call) && t->shell->kind == CM_KIND_PREFIX;
}

/* Drop the draft's reference to its root, whatever the kind. */
void cm_txn_release_root(struct cowmap_txn *t);

/* prefix_txn.c: the prefix kind's part of begin and commit. */
void cm_prefix_txn_begin(struct cowmap_txn *t);
void cm_prefix_txn_commit(struct cowmap_txn *t);

#endif
