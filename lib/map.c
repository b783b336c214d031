/*
 * map.c - versions: create, share, release, look up, and the persistent
 * single-key updates cowmap_set() and cowmap_del().
 */
#include "map.h"

#include "alloc.h"
#include "edit.h"
#include "prefix.h"
#include "prefix_edit.h"

#include <errno.h>

uint32_t cowmap_version(void)
{
	return COWMAP_VERSION_NUMBER;
}

void cm_map_init(struct cowmap *m, const struct cowmap *like,
		 struct cm_node *root, size_t count)
{
	if (m != like)
		cm_map_copy_options(m, like);
	atomic_init(&m->refs, 1);
	m->magic = CM_MAP_MAGIC;
	m->root = root;
	m->count = count;
	/* @like is the version @m was derived from, unless it has @root
	 * (a commit: @like is @m) or none (cowmap_new()'s prototype). */
	cm_debug_check_trie(m, like->root != NULL && like->root != root ? like
									 : NULL);
}

/* A new, empty version with @proto's options (seed and key already
 * set); NULL with errno ENOMEM. */
static struct cowmap *empty_version(const struct cowmap *proto)
{
	struct cowmap *m = cm_malloc(sizeof(*m));
	struct cm_node *root = cm_node_alloc(CM_BITMAP, 0, 0, false);

	if (m == NULL || root == NULL) {
		cm_free(m);
		cm_node_free(root);
		errno = ENOMEM;
		return NULL;
	}
	cm_map_init(m, proto, root, 0);
	return m;
}

struct cowmap *cowmap_empty_like(const struct cowmap *m)
{
	if (!cm_map_valid(m)) {
		errno = EINVAL;
		return NULL;
	}
	return m->kind == CM_KIND_PREFIX ? cm_pfx_empty_like(m)
					 : empty_version(m);
}

struct cowmap *cowmap_new(const struct cowmap_options *opts)
{
	struct cowmap proto = { .root = NULL };

	if (opts != NULL) {
		proto.seed = opts->seed;
		proto.hash = opts->hash;
		proto.own.value_free = opts->value_free;
		proto.own.ctx = opts->ctx;
		proto.max_entries = opts->max_entries;
	}
	if (proto.seed == 0) {
		int rc = cm_random_seed(&proto.seed);

		if (rc < 0) {
			errno = -rc;
			return NULL;
		}
	}

	proto.sipkey = cm_sipkey_from_seed(proto.seed);
	return empty_version(&proto);
}

/*
 * The version whose references this thread's cowmap_cell_update() is
 * counting, and the count (see cm_retain_watch_begin()).  Initial-exec:
 * a look at it costs retain and release one load, not a call.
 */
static _Thread_local struct cm_retain_watch watched
	__attribute__((tls_model("initial-exec")));

void cm_retain_watch_begin(struct cm_retain_watch *saved,
			   const struct cowmap *m)
{
	*saved = watched;
	watched = (struct cm_retain_watch){ .version = m };
}

long cm_retain_watch_end(struct cm_retain_watch *saved)
{
	long held = watched.held;

	watched = *saved;
	return held;
}

struct cowmap *cowmap_retain(const struct cowmap *m)
{
	if (!cm_map_valid(m)) {
#ifdef COWMAP_DEBUG
		if (m != NULL)
			cm_debug_report("cowmap_retain", "version already released");
#endif
		errno = EINVAL;
		return NULL;
	}
	struct cowmap *mut = (struct cowmap *)(uintptr_t)m;

	/* Acquire: a lent root's lent_chunk (lib/lend.c). */
	unsigned old = atomic_fetch_add_explicit(&mut->refs, 1,
						 memory_order_acquire);

	if ((old & CM_REFS_COUNT) >= CM_VERSION_REFS_MAX) {
		atomic_fetch_sub_explicit(&mut->refs, 1, memory_order_relaxed);
		errno = ENOSPC;
		return NULL;
	}
	if ((old & (CM_REFS_LENT | CM_REFS_RETURNED)) == CM_REFS_LENT)
		cm_lend_claim_version(mut);
	if (__builtin_expect(m == watched.version, 0))
		watched.held++;
	return mut;
}

void cowmap_release(struct cowmap *m)
{
	if (m != NULL && __builtin_expect(m == watched.version, 0))
		watched.held--;
	cm_version_release(m);
}

void cm_version_release(struct cowmap *m)
{
	if (m == NULL)
		return;
#ifdef COWMAP_DEBUG
	if (m->magic != CM_MAP_MAGIC) {
		cm_debug_report("cowmap_release", "version already released");
		return;
	}
#endif
	unsigned old = atomic_fetch_sub_explicit(&m->refs, 1, CM_DROP_ORDER);

	if ((old & CM_REFS_COUNT) != 1)
		return;
	atomic_thread_fence(memory_order_acquire);
	if (m->kind == CM_KIND_PREFIX)
		cm_prefix_free_root(m);
	else if ((old & (CM_REFS_LENT | CM_REFS_RETURNED)) == CM_REFS_LENT)
		cm_lend_free_version(m);	/* its root lent what it held */
	else
		cm_node_release(m->root, &m->own);
	m->magic = CM_DEAD_MAGIC;
#ifdef COWMAP_DEBUG
	cm_free_quarantined(m);	/* so a second release is caught */
#else
	cm_free(m);
#endif
}

size_t cowmap_size(const struct cowmap *m)
{
	return cm_map_valid(m) ? m->count : 0;
}

void cm_map_lookup(const struct cowmap *m, const void *key, size_t len,
		   struct cm_lookup *out)
{
	cm_map_probe(m, &out->probe, key, len);
	out->found = cm_node_find(m->root, &out->probe);
}

/*
 * Both updates follow the same steps: validate, look the key up (a no-op
 * or a refusal allocates nothing), allocate the version shell first (so
 * nothing below can be half done when it fails), walk, and on success
 * hand the new root to the shell.
 */
struct cowmap *cm_map_set_at(const struct cowmap *m, const struct cm_lookup *l,
			     void *value, bool lend, unsigned *lent)
{
	const struct cm_probe *p = &l->probe;
	struct cm_entry e;
	struct cm_node *root;

	int outcome = cm_lookup_outcome(m, l, false, value);

	if (outcome == 0)
		return cowmap_retain(m);
	if (outcome < 0) {
		errno = -outcome;
		return NULL;
	}

	struct cowmap *next = cm_malloc(sizeof(*next));

	if (next == NULL || !cm_entry_make(&e, p, value)) {
		cm_free(next);
		errno = ENOMEM;
		return NULL;
	}

	struct cm_edit ed = { .map = m, .own = &m->own, .draft = false,
			      .lend_depth = lend ? 1 : 0 };
	enum cm_edit_result r = cm_edit_set(&ed, m->root, p, &e, &root);

	cm_entry_discard(&e);	/* the trie holds its own reference */
	if (r != CM_EDIT_CHANGED) {
		cm_free(next);
		errno = ENOMEM;
		return NULL;
	}
	cm_map_init(next, m, root, m->count + (ed.added ? 1 : 0));
	if (lent != NULL)
		*lent = ed.lent;
	return next;
}

struct cowmap *cm_map_del_at(const struct cowmap *m, const struct cm_lookup *l,
			     bool lend, unsigned *lent)
{
	struct cm_node *root;

	if (cm_lookup_outcome(m, l, true, NULL) == 0)
		return cowmap_retain(m);

	struct cowmap *next = cm_malloc(sizeof(*next));

	if (next == NULL) {
		errno = ENOMEM;
		return NULL;
	}

	struct cm_edit ed = { .map = m, .own = &m->own, .draft = false,
			      .lend_depth = lend ? 1 : 0 };

	if (cm_edit_del(&ed, m->root, &l->probe, &root) != CM_EDIT_CHANGED) {
		cm_free(next);
		errno = ENOMEM;
		return NULL;
	}
	cm_map_init(next, m, root, m->count - 1);
	if (lent != NULL)
		*lent = ed.lent;
	return next;
}

struct cowmap *cowmap_set(const struct cowmap *m, const void *key,
			  size_t len, void *value)
{
	struct cm_lookup l;

	if (!cm_hash_valid(m) || cm_check_key(key, len) < 0) {
		errno = EINVAL;
		return NULL;
	}
	cm_map_lookup(m, key, len, &l);
	return cm_map_set_at(m, &l, value, false, NULL);
}

struct cowmap *cowmap_del(const struct cowmap *m, const void *key, size_t len)
{
	struct cm_lookup l;

	if (!cm_hash_valid(m) || cm_check_key(key, len) < 0) {
		errno = EINVAL;
		return NULL;
	}
	cm_map_lookup(m, key, len, &l);
	return cm_map_del_at(m, &l, false, NULL);
}
