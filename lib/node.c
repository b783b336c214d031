/*
 * node.c - allocating, sharing and freeing trie nodes and boxed entries.
 *
 * Reference counts are touched only by writers and snapshot holders, never
 * by readers.  Increments are relaxed: a new reference is always made from
 * an existing one, so the object cannot be freed meanwhile.  The decrement
 * that may free is a release operation followed, for the last reference,
 * by an acquire fence, so every write made through any reference happens
 * before the free.
 */
#include "node.h"

#include <stdio.h>
#include <stdlib.h>

#include "alloc.h"
#include "slab.h"

/* Drop a reference: the count before, with its flags (node.h). */
static unsigned drop_ref_flags(atomic_uint *refs)
{
	unsigned old = atomic_fetch_sub_explicit(refs, 1, CM_DROP_ORDER);

	if ((old & CM_REFS_COUNT) == 1)
		atomic_thread_fence(memory_order_acquire);
	return old;
}

static bool drop_ref(atomic_uint *refs)
{
	return (drop_ref_flags(refs) & CM_REFS_COUNT) == 1;
}

/* Leaves live in the node slabs too: a boxed key is read on every match. */
static void leaf_free(struct cm_leaf *leaf)
{
	cm_slab_free(leaf, sizeof(*leaf) + leaf->len);
}

bool cm_entry_make(struct cm_entry *e, const struct cm_probe *p, void *value)
{
	memcpy(e, p->head, 16);
	e->value = value;
	if (!p->boxed)
		return true;

	struct cm_leaf *leaf = cm_slab_alloc(sizeof(*leaf) + p->len);

	if (leaf == NULL)
		return false;
	atomic_init(&leaf->refs, 1);
	leaf->len = p->len;
	leaf->value = value;
	if (p->len > 0)
		memcpy(leaf->key, p->key, p->len);
	e->tag = p->tag;
	e->u.leaf = leaf;
	return true;
}

void cm_entry_release(const struct cm_entry *e, const struct cm_owner *own)
{
	if (!cm_entry_boxed(e) || !drop_ref(&e->u.leaf->refs))
		return;
	if (own->value_free != NULL)
		own->value_free(e->u.leaf->value, own->ctx);
	leaf_free(e->u.leaf);
}

void cm_entry_discard(const struct cm_entry *e)
{
	if (cm_entry_boxed(e) && drop_ref(&e->u.leaf->refs))
		leaf_free(e->u.leaf);
}

struct cm_node *cm_node_alloc(enum cm_node_kind kind, unsigned entries,
			      unsigned children, bool draft)
{
	uint32_t words = cm_words_for(entries, children);
	struct cm_node *n = cm_slab_alloc(cm_node_bytes_of(words));

	if (n == NULL)
		return NULL;
	n->words = words;
	atomic_init(cm_node_refs(n), 1);
	n->kind = (uint8_t)kind;
	n->draft = draft;
	n->lent_chunk = 0;
	n->reserved = 0;
	n->datamap = kind == CM_COLLISION ? entries : 0;
	n->nodemap = 0;
	return n;
}

void cm_node_release(struct cm_node *n, const struct cm_owner *own)
{
	if (n == NULL)
		return;

	unsigned old = drop_ref_flags(cm_node_refs(n));

	if ((old & CM_REFS_COUNT) != 1)
		return;
	if ((old & (CM_REFS_LENT | CM_REFS_RETURNED)) == CM_REFS_LENT) {
		cm_lend_free(n, own);	/* it holds only the slot it kept */
		return;
	}

	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);
	struct cm_node **kids = cm_children(n);

	cm_prefetch_refs(kids, nc);
	for (unsigned i = 0; i < ne; i++)
		cm_entry_release(&cm_node_entries(n)[i], own);
	/* Depth is bounded by CM_MAX_DEPTH, so recursion is bounded too. */
	for (unsigned i = 0; i < nc; i++)
		cm_node_release(kids[i], own);
	cm_node_free(n);
}

void cm_node_free(struct cm_node *n)
{
	if (n != NULL)
		cm_slab_free(n, cm_node_bytes(n));
}

struct cm_node *cm_node_trim(struct cm_node *n)
{
	uint32_t used = cm_words_for(cm_entry_count(n), cm_child_count(n));

	if (n->words == used)
		return n;

	unsigned refs = atomic_load_explicit(cm_node_refs(n),
					     memory_order_relaxed);
	struct cm_node *m = cm_slab_shrink(n, cm_node_bytes(n),
					   cm_node_bytes_of(used));

	if (m == NULL)	/* no smaller block to be had: keep the spare words */
		return n;
	m->words = used;
	atomic_init(cm_node_refs(m), refs);
	return m;
}

void cm_refs_overflow(const void *what)
{
	fprintf(stderr, "cowmap: more than %u references to the node or leaf "
		"at %p; stopping rather than corrupting memory\n",
		(unsigned)CM_NODE_REFS_MAX, what);
	abort();
}
