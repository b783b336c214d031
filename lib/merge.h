/*
 * merge.h - merging a batch of keys into a trie in one pass.
 *
 * cowmap_txn_set_many() hands its pairs here as an array of items.  The
 * merge sorts them in place by trie position, a radix sort on the 5-bit
 * hash chunks that is also the walk (each node's range is split by its
 * chunk, then every bucket is merged into the slot it lands in), and it
 * builds every node it changes once, at its final size, instead of once
 * per key that passes through it.
 */
#ifndef COWMAP_MERGE_H
#define COWMAP_MERGE_H

#include "edit.h"
#include "node.h"

struct cowmap;

/* What became of an item; decided by the merge, acted on by the caller. */
enum cm_item_fate {
	CM_ITEM_PENDING = 0,	/* not reached (the merge failed first) */
	CM_ITEM_PLACED,		/* its entry is in the trie */
	CM_ITEM_KEPT,		/* the key already had this value: no-op */
	CM_ITEM_REPLACED,	/* a later pair for the key won; the value must
				   go to value_free if the merge succeeds */
	CM_ITEM_DROPPED,	/* a later pair won, and the value stays held
				   (it is the key's final or previous value) */
	CM_ITEM_WINNER,		/* inside the merge only: settled, not placed */
};

/*
 * One pair of the batch, 40 bytes.  Before the merge the union holds the
 * key: for an inline key the 16 bytes its entry starts with (so an inline
 * item is already its own entry), for a boxed key the caller's bytes.
 * Once placed, a boxed item's union holds a copy of the entry made for
 * it (the node holds the leaf's reference).
 */
struct cm_item {
	union {
		struct cm_entry entry;
		struct {
			uint64_t head[2];
			void *value;
		} in;
		struct {
			const unsigned char *key;
			size_t len;
			void *value;
		} box;
	} u;
	uint64_t hash;
	uint32_t seq;	/* its place in the caller's arrays: the later wins */
	uint8_t boxed;
	uint8_t fate;	/* enum cm_item_fate */
	/* A boxed item whose leaf already exists (a set gathered by a
	 * transaction, lib/txn.c): the union holds its entry from the start,
	 * and the item keeps its own reference to the leaf whatever the
	 * merge does, so a merge that fails can be tried again. */
	uint8_t leafed;
};

_Static_assert(sizeof(struct cm_item) == 40, "items are 40 bytes");

_Static_assert(offsetof(struct cm_item, u.in.value) ==
			       offsetof(struct cm_item, u.entry.value) &&
		       offsetof(struct cm_item, u.box.value) ==
			       offsetof(struct cm_item, u.entry.value),
	       "every view of an item keeps its value in the same place");

/* Fill @it for the probed key @p (hashed under the target map). */
static inline void cm_item_init(struct cm_item *it, const struct cm_probe *p,
				void *value, uint32_t seq)
{
	if (p->boxed) {
		it->u.box.key = p->key;
		it->u.box.len = p->len;
	} else {
		it->u.in.head[0] = p->head[0];
		it->u.in.head[1] = p->head[1];
	}
	it->u.entry.value = value;
	it->hash = p->hash;
	it->seq = seq;
	it->boxed = p->boxed;
	it->fate = CM_ITEM_PENDING;
	it->leafed = 0;
}

/* The key bytes of an unplaced or leafed boxed item. */
static inline const unsigned char *cm_item_key(const struct cm_item *it,
					       uint32_t *len)
{
	if (it->leafed) {
		*len = it->u.entry.u.leaf->len;
		return it->u.entry.u.leaf->key;
	}
	*len = (uint32_t)it->u.box.len;
	return it->u.box.key;
}

/* The probe an unplaced (or leafed) item's key would have, for the
 * matching and entry-making helpers of node.h. */
static inline void cm_item_probe(const struct cm_item *it, struct cm_probe *p)
{
	p->hash = it->hash;
	p->boxed = it->boxed;
	if (it->boxed) {
		p->key = cm_item_key(it, &p->len);
		p->tag = cm_tag(it->hash, CM_LEN_BOXED);
		p->head[0] = p->head[1] = 0;
	} else {
		p->key = NULL;	/* an inline key is matched by its head */
		p->head[0] = it->u.in.head[0];
		p->head[1] = it->u.in.head[1];
		memcpy(&p->tag, p->head, sizeof(p->tag));
		p->len = p->tag & 15u;
	}
}

/*
 * cm_merge - the trie under @root with every item's key set to its value
 * (the last item of a key wins).  @map is the version whose hash placed
 * the keys under @root.  The items are reordered.
 *
 * CM_EDIT_CHANGED: *out is a new draft root (a fresh reference; @root is
 * untouched and still the caller's), *added the number of new keys, and
 * the items' fates say which values later pairs replaced (REPLACED: owed
 * to value_free once the batch takes effect).  CM_EDIT_NOCHANGE: every
 * pair was a no-op, but REPLACED values are owed all the same.
 * CM_EDIT_NOMEM: nothing changed and nothing is owed.
 */
enum cm_edit_result cm_merge(const struct cowmap *map, struct cm_node *root,
			     struct cm_item *items, size_t n,
			     struct cm_node **out, size_t *added);

/* Drop a new root from cm_merge() that is not used after all (a limit
 * refused it): frees what the batch made, without value_free, since the
 * values are still the caller's. */
void cm_merge_unwind(struct cm_node *root);

#endif
