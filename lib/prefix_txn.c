/*
 * prefix_txn.c - transactions on prefix tables, and the one-call load of
 * a route list (cowmap_txn_prefix_set_many).
 *
 * The draft is a trie whose nodes carry the transaction's generation in
 * their draft field: those it edits in place (prefix.c "Ownership"), and
 * any other node it meets on a path it copies into the generation first.
 * Nodes the draft allocates get spare words, so a node that keeps growing
 * during a load is not reallocated at every insert; commit seals them
 * (clears the mark and trims the spare words).
 *
 * A batch must be all or nothing, yet a draft edits in place.  So
 * set_many starts a new generation: the nodes of the old one become
 * shared (copied before they change), the draft keeps its old root, and a
 * failure drops the new trie and goes back to the old root untouched.
 * The copies cost one path per node the batch touches, not one per route.
 */
#include "prefix_edit.h"

#include "alloc.h"
#include "txn.h"

#include <errno.h>

static atomic_uint generations;

/* A generation no live node of this draft carries (0 means sealed). */
static uint32_t next_generation(void)
{
	uint32_t g;

	do
		g = atomic_fetch_add_explicit(&generations, 1,
					      memory_order_relaxed) + 1;
	while (g == 0);
	return g;
}

void cm_prefix_txn_begin(struct cowmap_txn *t)
{
	cm_pn_retain(t->proot);
	t->gen = next_generation();
}

void cm_prefix_txn_commit(struct cowmap_txn *t)
{
	struct cowmap *m = t->shell;

	t->proot = cm_pn_seal(t->proot, m->own.value_free != NULL);
	cm_pfx_init(m, m, t->proot, t->count);
}

/* The draft's root after an edit: it drops its reference to the old one
 * unless the edit replaced it in place. */
static void take_root(struct cowmap_txn *t, const struct cm_pfx_edit *e)
{
	if (e->new_root != t->proot && !e->root_was_mine)
		cm_pn_release(t->proot, &t->shell->own);
	t->proot = e->new_root;
	t->count += (e->added ? 1 : 0) - (e->removed ? 1 : 0);
	t->changed = true;
}

int cowmap_txn_prefix_set(struct cowmap_txn *t, const void *addr,
			  unsigned len, void *value)
{
	struct cm_pfx_key k;
	void *old;

	if (!cm_txn_prefix(t, "cowmap_txn_prefix_set") ||
	    cm_pfx_key(cm_pfx_width(t->shell), addr, len, &k) < 0)
		return -EINVAL;

	const struct cowmap *m = t->shell;
	bool found = cm_pfx_find(t->proot, &k, false, &old, NULL);

	if (found && old == value)
		return 0;
	if (!found && m->max_entries != 0 && t->count >= m->max_entries)
		return -ENOSPC;

	struct cm_pfx_edit e = { .key = &k, .own = &m->own,
				 .boxed = m->own.value_free != NULL,
				 .gen = t->gen, .value = value };

	if (cm_pfx_box(m, value, &e.box) < 0)
		return -ENOMEM;

	int rc = cm_pfx_edit(&e, t->proot);

	if (e.box != NULL)	/* the trie holds its own reference */
		cm_pbox_release(e.box, &m->own, true);
	if (rc < 0)
		return rc;
	take_root(t, &e);
	return 0;
}

int cowmap_txn_prefix_del(struct cowmap_txn *t, const void *addr,
			  unsigned len)
{
	struct cm_pfx_key k;

	if (!cm_txn_prefix(t, "cowmap_txn_prefix_del") ||
	    cm_pfx_key(cm_pfx_width(t->shell), addr, len, &k) < 0)
		return -EINVAL;
	if (!cm_pfx_find(t->proot, &k, false, NULL, NULL))
		return 0;

	const struct cowmap *m = t->shell;
	struct cm_pfx_edit e = { .key = &k, .own = &m->own,
				 .boxed = m->own.value_free != NULL,
				 .gen = t->gen, .is_del = true };

	if (cm_pfx_edit(&e, t->proot) < 0)
		return -ENOMEM;
	take_root(t, &e);
	return 1;
}

int cowmap_txn_prefix_get(const struct cowmap_txn *t, const void *addr,
			  unsigned len, void **value)
{
	struct cm_pfx_key k;

	if (!cm_txn_prefix(t, "cowmap_txn_prefix_get") ||
	    cm_pfx_key(cm_pfx_width(t->shell), addr, len, &k) < 0)
		return -EINVAL;
	return cm_pfx_find(t->proot, &k, false, value, NULL);
}

/*
 * After a batch: each box the batch made and the trie does not hold was
 * stored and then replaced by a later route for its prefix.  Its value
 * goes to value_free, unless the prefix ends with that very pointer (see
 * cowmap_txn_prefix_set_many()), or the batch failed (@discard: every
 * value is the caller's again).
 */
static void drop_boxes(const struct cowmap_txn *t, struct cm_pbox **boxes,
		       const struct cm_pfx_key *keys, size_t n, bool discard)
{
	const struct cowmap *m = t->shell;

	for (size_t i = 0; i < n; i++) {
		bool keep = discard;

		if (boxes[i] == NULL)	/* a no-op route's, dropped already */
			continue;

		if (!keep && atomic_load_explicit(&boxes[i]->refs,
						  memory_order_relaxed) == 1) {
			void *now;

			keep = cm_pfx_find(t->proot, &keys[i], false, &now,
					   NULL) &&
			       now == boxes[i]->value;
		}
		cm_pbox_release(boxes[i], &m->own, keep);
	}
}

int cowmap_txn_prefix_set_many(struct cowmap_txn *t, size_t n,
			       const struct cowmap_route routes[])
{
	if (!cm_txn_prefix(t, "cowmap_txn_prefix_set_many"))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (routes == NULL)
		return -EINVAL;

	const struct cowmap *m = t->shell;
	bool boxed = m->own.value_free != NULL;

	if (n > SIZE_MAX / (sizeof(struct cm_pfx_key) + sizeof(void *)))
		return -ENOMEM;

	struct cm_pfx_key *keys = cm_malloc(n * sizeof(*keys));
	struct cm_pbox **boxes = boxed ? cm_calloc(n, sizeof(*boxes)) : NULL;
	size_t made = 0;
	int rc = 0;

	if (keys == NULL || (boxed && boxes == NULL)) {
		rc = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (cm_pfx_key(cm_pfx_width(m), routes[i].addr, routes[i].len,
			       &keys[i]) < 0) {
			rc = -EINVAL;
			goto out;
		}
	for (; boxed && made < n; made++)
		if (cm_pfx_box(m, routes[made].value, &boxes[made]) < 0) {
			rc = -ENOMEM;
			goto out;
		}

	/* A new generation: what the draft owned so far is shared with the
	 * old root, which stays as it was until the batch has succeeded. */
	struct cm_pnode *old_root = t->proot;
	size_t old_count = t->count;
	uint32_t old_gen = t->gen;

	t->gen = next_generation();
	for (size_t i = 0, j; i < n && rc == 0; i = j) {
		/* the routes from i on that land in the same node: one edit */
		unsigned depth = keys[i].depth;
		cm_addr path = cm_pfx_mask(keys[i].addr, CM_PFX_STRIDE * depth);

		for (j = i + 1; j < n && keys[j].depth == depth &&
				cm_pfx_mask(keys[j].addr,
					    CM_PFX_STRIDE * depth) == path;
		     j++)
			;

		struct cm_pfx_edit e = { .key = &keys[i], .own = &m->own,
					 .boxed = boxed, .gen = t->gen,
					 .n = j - i, .keys = keys + i,
					 .routes = routes + i,
					 .boxes = boxed ? boxes + i : NULL };

		rc = cm_pfx_edit(&e, t->proot);
		if (rc < 0)
			break;
		if (e.new_root != t->proot && !e.root_was_mine &&
		    t->proot != old_root)
			cm_pn_release(t->proot, &m->own);
		t->proot = e.new_root;
		t->count += e.nadded;
	}
	if (rc == 0 && m->max_entries != 0 && t->count > m->max_entries)
		rc = -ENOSPC;
	if (rc < 0) {
		if (t->proot != old_root)
			cm_pn_release(t->proot, &m->own);
		t->proot = old_root;
		t->count = old_count;
		t->gen = old_gen;
		goto out;
	}
	if (t->proot != old_root) {
		cm_pn_release(old_root, &m->own);
		t->changed = true;
	}
out:
	if (boxed)
		drop_boxes(t, boxes, keys, made, rc < 0);
	cm_free(boxes);
	cm_free(keys);
	return rc;
}
