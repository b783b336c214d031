/*
 * txn.c - transactions: a private draft that owns the nodes it copied.
 *
 * The first edit that passes through a shared node copies it into the
 * draft (marked draft); later edits change draft nodes in place, so a
 * batch pays one path copy per touched path.  Commit clears the draft
 * marks and returns the version shell allocated at begin, so commit
 * cannot fail half way.
 *
 * Finished handles are poisoned and go through the allocator's quarantine
 * (alloc.h), so the common mistake of using a transaction right after
 * commit or abort is answered with EINVAL instead of touching freed
 * memory.
 */
#include "map.h"

#include "alloc.h"
#include "edit.h"
#include "merge.h"
#include "prefix.h"
#include "txn.h"

#include <errno.h>

static void txn_retire(struct cowmap_txn *t)
{
	t->magic = CM_TXN_DONE;
	cm_free_quarantined(t);
}

bool cm_txn_live(const struct cowmap_txn *t, const char *call)
{
	if (t == NULL)
		return false;
	if (t->magic == CM_TXN_LIVE)
		return true;
#ifdef COWMAP_DEBUG
	cm_debug_report(call, "transaction already committed or aborted");
#else
	(void)call;
#endif
	return false;
}

struct cowmap_txn *cowmap_txn_begin(const struct cowmap *base)
{
	if (!cm_map_valid(base)) {
		errno = EINVAL;
		return NULL;
	}

	struct cowmap *held = cowmap_retain(base);	/* ENOSPC at the limit */

	if (held == NULL)
		return NULL;

	struct cowmap_txn *t = cm_malloc(sizeof(*t));
	struct cowmap *shell = cm_malloc(sizeof(*shell));

	if (t == NULL || shell == NULL) {
		cm_free(t);
		cm_free(shell);
		cowmap_release(held);
		errno = ENOMEM;
		return NULL;
	}
	cm_map_copy_options(shell, base);
	t->magic = CM_TXN_LIVE;
	t->changed = false;
	t->base = held;
	t->shell = shell;
	t->root = base->root;
	if (base->kind == CM_KIND_PREFIX)
		cm_prefix_txn_begin(t);
	else
		cm_node_retain(t->root);
	t->count = base->count;
	return t;
}

void cm_txn_release_root(struct cowmap_txn *t)
{
	if (t->shell->kind == CM_KIND_PREFIX)
		cm_pn_release(t->proot, &t->shell->own);
	else
		cm_node_release(t->root, &t->shell->own);
}

/* Install the root an edit returned; the draft drops its old reference. */
static void txn_take_root(struct cowmap_txn *t, struct cm_node *root)
{
	if (root != t->root)
		cm_node_release(t->root, &t->shell->own);
	t->root = root;
	t->changed = true;
}

int cowmap_txn_set(struct cowmap_txn *t, const void *key, size_t len,
		   void *value)
{
	struct cm_probe p;
	struct cm_entry e;
	struct cm_node *root;

	if (!cm_txn_hash(t, "cowmap_txn_set") || cm_check_key(key, len) < 0)
		return -EINVAL;

	const struct cowmap *m = t->shell;

	cm_map_probe(m, &p, key, len);

	/*
	 * Look first only where the walk below cannot answer alone: a limit
	 * needs to know whether the key is new before anything changes, and
	 * a boxed key would allocate its leaf even for a no-op.  Otherwise
	 * the edit itself notices an unchanged value (no allocation), and a
	 * bulk load saves a walk per insert.
	 */
	if (p.boxed || m->max_entries != 0) {
		const struct cm_entry *old = cm_node_find(t->root, &p);

		if (old != NULL && old->value == value)
			return 0;
		if (old == NULL && m->max_entries != 0 &&
		    t->count >= m->max_entries)
			return -ENOSPC;
	}
	if (!cm_entry_make(&e, &p, value))
		return -ENOMEM;

	struct cm_edit ed = { .map = m, .own = &m->own, .draft = true };
	enum cm_edit_result r = cm_edit_set(&ed, t->root, &p, &e, &root);

	cm_entry_discard(&e);
	if (r == CM_EDIT_NOMEM)
		return -ENOMEM;
	if (r == CM_EDIT_NOCHANGE)	/* the key already had this value */
		return 0;
	txn_take_root(t, root);
	t->count += ed.added ? 1 : 0;
	return 0;
}

/* A batch took effect: values that later pairs of their keys replaced
 * were given to the map and are dropped now, as by cowmap_txn_set(). */
static void txn_free_replaced(const struct cowmap *m,
			      const struct cm_item *items, size_t n)
{
	if (m->own.value_free == NULL)
		return;
	for (size_t i = 0; i < n; i++)
		if (items[i].fate == CM_ITEM_REPLACED)
			m->own.value_free(items[i].u.entry.value, m->own.ctx);
}

int cowmap_txn_set_many(struct cowmap_txn *t, size_t n,
			const void *const keys[], const size_t lens[],
			void *const values[])
{
	if (!cm_txn_hash(t, "cowmap_txn_set_many"))
		return -EINVAL;
	if (n == 0)
		return 0;
	if (keys == NULL || lens == NULL || values == NULL || n > UINT32_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (cm_check_key(keys[i], lens[i]) < 0)
			return -EINVAL;
	if (n > SIZE_MAX / sizeof(struct cm_item))
		return -ENOMEM;

	const struct cowmap *m = t->shell;
	struct cm_item *items = cm_malloc(n * sizeof(*items));

	if (items == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		struct cm_probe p;

		cm_map_probe(m, &p, keys[i], lens[i]);
		cm_item_init(&items[i], &p, values[i], (uint32_t)i);
	}

	struct cm_node *root;
	size_t added;
	int rc = 0;

	switch (cm_merge(m, t->root, items, n, &root, &added)) {
	case CM_EDIT_CHANGED:
		if (m->max_entries != 0 && t->count + added > m->max_entries) {
			cm_merge_unwind(root);
			rc = -ENOSPC;
			break;
		}
		txn_take_root(t, root);
		t->count += added;
		break;
	case CM_EDIT_NOCHANGE:
		break;
	case CM_EDIT_NOMEM:
		rc = -ENOMEM;
		break;
	}
	if (rc == 0)
		txn_free_replaced(m, items, n);
	cm_free(items);
	return rc;
}

int cowmap_txn_del(struct cowmap_txn *t, const void *key, size_t len)
{
	struct cm_probe p;
	struct cm_node *root;

	if (!cm_txn_hash(t, "cowmap_txn_del") || cm_check_key(key, len) < 0)
		return -EINVAL;
	cm_map_probe(t->shell, &p, key, len);
	if (cm_node_find(t->root, &p) == NULL)
		return 0;

	struct cm_edit ed = { .map = t->shell, .own = &t->shell->own,
			      .draft = true };

	if (cm_edit_del(&ed, t->root, &p, &root) != CM_EDIT_CHANGED)
		return -ENOMEM;
	txn_take_root(t, root);
	t->count--;
	return 1;
}

int cowmap_txn_get(const struct cowmap_txn *t, const void *key, size_t len,
		   void **value)
{
	struct cm_probe p;

	if (!cm_txn_hash(t, "cowmap_txn_get") || cm_check_key(key, len) < 0)
		return -EINVAL;
	cm_map_probe(t->shell, &p, key, len);

	const struct cm_entry *e = cm_node_find(t->root, &p);

	if (e == NULL)
		return 0;
	if (value != NULL)
		*value = e->value;
	return 1;
}

size_t cowmap_txn_size(const struct cowmap_txn *t)
{
	return cm_txn_live(t, "cowmap_txn_size") ? t->count : 0;
}

struct cowmap *cowmap_txn_commit(struct cowmap_txn *t)
{
	struct cowmap *result;

	if (!cm_txn_live(t, "cowmap_txn_commit")) {
		errno = EINVAL;
		return NULL;
	}
	if (!t->changed) {
		cm_txn_release_root(t);
		cm_free(t->shell);
		result = t->base;	/* the draft's reference becomes the caller's */
	} else {
		result = t->shell;
		if (result->kind == CM_KIND_PREFIX) {
			cm_prefix_txn_commit(t);
		} else {
			t->root = cm_edit_seal(t->root);
			cm_map_init(result, result, t->root, t->count);
		}
		cowmap_release(t->base);
	}
	txn_retire(t);
	return result;
}

void cowmap_txn_abort(struct cowmap_txn *t)
{
	if (!cm_txn_live(t, "cowmap_txn_abort"))
		return;
	cm_txn_release_root(t);
	cowmap_release(t->base);
	cm_free(t->shell);
	txn_retire(t);
}
