/*
 * map.h - a version: the root of one immutable trie and the options of
 * the map family it belongs to.
 */
#ifndef COWMAP_MAP_H
#define COWMAP_MAP_H

#include "cowmap.h"
#include "hash.h"
#include "node.h"

#include <errno.h>

/*
 * The options are copied into every version rather than shared, so the
 * read path reaches the hash function and seed without another pointer
 * chase, and a version needs no second reference count.
 */
struct cowmap {
	atomic_uint refs;	/* count, and the CM_REFS_* lending flags */
	uint32_t magic;		/* CM_MAP_MAGIC while alive (checked in debug) */
	size_t count;
	union {
		struct cm_node *root;	/* never NULL: an empty map has an empty root */
		struct cm_pnode *proot;	/* a prefix table's (lib/prefix.h) */
	};
	uint8_t kind;		/* enum cm_kind: which trie root points to */
	uint8_t width;		/* prefix tables: bits per address, 1..128 */
	uint64_t seed;
	struct cm_sipkey sipkey;	/* derived from seed, for the built-in hash */
	uint64_t (*hash)(const void *key, size_t len, uint64_t seed, void *ctx);
	struct cm_owner own;	/* value_free and ctx */
	size_t max_entries;
};

/*
 * A retired version whose root lent its references to the successor's
 * root (lib/lend.c) carries CM_REFS_LENT in refs (node.h's flags); the
 * first cowmap_retain() after that sets CM_REFS_RETURNED and takes the
 * references back.  The rest of refs is the count.
 */

/* References to one version past this are refused (cowmap_retain():
 * ENOSPC).  The count has 29 bits; the margin below them keeps retains
 * that are being refused at the same moment, each of which adds one
 * before it takes it back, from carrying into the flags. */
#define CM_VERSION_REFS_MAX (CM_REFS_COUNT / 2)

/*
 * The kinds of version.  Only the few places that free, measure, compare
 * or draft a whole version ask which one they have (cowmap_release,
 * cowmap_stats, cowmap_equal, the transaction shell, the cell's pending
 * bytes) and hand a prefix table to lib/prefix*.c; the calls of one kind
 * refuse the other with EINVAL (cm_hash_valid, cm_prefix_valid).
 * kind and width are part of a version's family, like the options.
 */
enum cm_kind { CM_KIND_HASH = 0, CM_KIND_PREFIX = 1 };

#define CM_MAP_MAGIC 0x636f776du	/* "cowm" */
#define CM_DEAD_MAGIC 0xdeadc0deu

/* Reject what cowmap_get() documents as invalid.  A key longer than
 * UINT32_MAX is unrepresentable in an entry. */
static inline int cm_check_key(const void *key, size_t len)
{
	if (key == NULL && len != 0)
		return -EINVAL;
	if (len > UINT32_MAX)
		return -EINVAL;
	return 0;
}

/* Is @m usable?  Release builds check NULL; debug builds also catch
 * versions that were already freed. */
static inline bool cm_map_valid(const struct cowmap *m)
{
#ifdef COWMAP_DEBUG
	void cm_debug_report(const char *call, const char *what);

	if (m != NULL && m->magic != CM_MAP_MAGIC)
		cm_debug_report("cowmap", "a released version was used");
	return m != NULL && m->magic == CM_MAP_MAGIC;
#else
	return m != NULL;
#endif
}

/* A usable version of the hash kind: what the key calls require. */
static inline bool cm_hash_valid(const struct cowmap *m)
{
	return cm_map_valid(m) && m->kind == CM_KIND_HASH;
}

static inline bool cm_prefix_valid(const struct cowmap *m)
{
	return cm_map_valid(m) && m->kind == CM_KIND_PREFIX;
}

static inline uint64_t cm_map_hash(const struct cowmap *m, const void *key,
				   size_t len)
{
	static const unsigned char nothing;

	if (key == NULL)	/* an empty key may come as NULL */
		key = &nothing;
	if (m->hash != NULL)
		return m->hash(key, len, m->seed, m->own.ctx);
	return cm_hash_keyed(&m->sipkey, key, len);
}

static inline void cm_map_probe(const struct cowmap *m, struct cm_probe *p,
				const void *key, size_t len)
{
	static const unsigned char nothing;

	if (key == NULL)
		key = &nothing;
	cm_probe_init(p, cm_map_hash(m, key, len), key, (uint32_t)len, &m->own);
}

/*
 * Copy the options (not the reference count: another thread may be
 * changing @from's atomically) of one version into another.
 */
static inline void cm_map_copy_options(struct cowmap *to,
				       const struct cowmap *from)
{
	to->seed = from->seed;
	to->sipkey = from->sipkey;
	to->hash = from->hash;
	to->own = from->own;
	to->max_entries = from->max_entries;
	to->kind = from->kind;
	to->width = from->width;
}

/*
 * Turn the allocated shell @m into a version of @root with @count entries
 * and the options of @like; it takes over the caller's reference to @root.
 */
void cm_map_init(struct cowmap *m, const struct cowmap *like,
		 struct cm_node *root, size_t count);

/*
 * A key looked up once in a version, for the writers that answer no-ops
 * and refusals before they allocate anything and then apply the change
 * without hashing or searching again (cowmap_set/del, the cell's lone
 * writes).  @key and @len must have passed cm_check_key().
 */
struct cm_lookup {
	struct cm_probe probe;
	const struct cm_entry *found;	/* NULL: the key is absent */
};

void cm_map_lookup(const struct cowmap *m, const void *key, size_t len,
		   struct cm_lookup *out);

/*
 * What setting @value for the key @l looked up in @m (or, with @is_del,
 * deleting it) would do, decided before anything is allocated: 0 if it
 * changes nothing, -ENOSPC if the limit refuses a new key, 1 if it makes
 * a new version.
 */
static inline int cm_lookup_outcome(const struct cowmap *m,
				    const struct cm_lookup *l, bool is_del,
				    void *value)
{
	if (is_del)
		return l->found != NULL;
	if (l->found != NULL)
		return l->found->value != value;
	if (m->max_entries != 0 && m->count >= m->max_entries)
		return -ENOSPC;
	return 1;
}

/*
 * cowmap_set() and cowmap_del() of a key @l looked up in @m.  @lend: copy
 * the path lending (only if cm_lend_root_ok(@m)); if a new version comes
 * back, *@lent (unless NULL) levels of the path lent, the root's
 * included, and the caller must cm_lend_mark() @m with them.
 */
struct cowmap *cm_map_set_at(const struct cowmap *m, const struct cm_lookup *l,
			     void *value, bool lend, unsigned *lent);
struct cowmap *cm_map_del_at(const struct cowmap *m, const struct cm_lookup *l,
			     bool lend, unsigned *lent);

/*
 * Lending (lib/lend.c).  A single-key update of the version a cell is
 * about to retire copies the key's path; where nothing but that version
 * holds the root, and nothing but its parent holds a node below, the
 * copy may take over the node's references to its children and entries
 * instead of adding its own.  Then neither the writer's copy nor the
 * grace-period callback's free touches those counts: the callback frees
 * the old path's shells and the slots they kept on the key's path.
 *
 * cm_lend_root_ok - may an update of @m copy its root lending?  Only if
 *   @m's only reference is its holder's and @m alone holds its root.
 *   Call with writers excluded.
 * cm_lend_mark - after the update of the key hashing to @hash, whose
 *   first @levels copies lent: flag the old nodes and @m.  Those a reader
 *   retained meanwhile are given back at once; otherwise the first retain
 *   to come gives them back (cm_lend_claim_version for @m), or, if none comes
 *   before the grace period ends, the last release frees only what each
 *   kept (cm_lend_free_version).
 */
bool cm_lend_root_ok(const struct cowmap *m);
void cm_lend_mark(struct cowmap *m, uint64_t hash, unsigned levels);
void cm_lend_claim_version(struct cowmap *m);
void cm_lend_free_version(struct cowmap *m);

/*
 * May @b be published where @a is: the same family (the same kind and
 * width, value_free, context, hash function and limit)?  Values would
 * otherwise be freed by the wrong function, or never, and the limit would
 * change unseen.  The seed is not part of it: another seed costs
 * cowmap_diff() its shortcut (cowmap_empty_like() keeps it), not
 * correctness.
 */
static inline bool cm_same_family(const struct cowmap *a,
				  const struct cowmap *b)
{
	return a->kind == b->kind && a->width == b->width &&
	       a->hash == b->hash && a->own.value_free == b->own.value_free &&
	       a->own.ctx == b->own.ctx && a->max_entries == b->max_entries;
}

/*
 * References this thread takes and drops on one version, counted while a
 * cell's update function runs: returning the current version unretained
 * ("no change") must not drop the cell's own reference.  Nested updates
 * (of other cells) save and restore the outer count.
 */
struct cm_retain_watch {
	const struct cowmap *version;
	long held;	/* retains minus releases of version */
};

void cm_retain_watch_begin(struct cm_retain_watch *saved,
			   const struct cowmap *m);
long cm_retain_watch_end(struct cm_retain_watch *saved);

/* cowmap_release() for the library's own references (a cell's retired
 * versions), which an update's count must not see. */
void cm_version_release(struct cowmap *m);

/* Do two versions hash the same key to the same place? */
static inline bool cm_same_layout(const struct cowmap *a, const struct cowmap *b)
{
	return a->seed == b->seed && a->hash == b->hash &&
	       a->own.ctx == b->own.ctx &&
	       (a->own.value_free != NULL) == (b->own.value_free != NULL);
}

/*
 * Add to *@bytes and *@nodes what @m holds that no other version shares
 * (lib/stats.c): the figure a cell reports as pending once it retires @m.
 * @lone_hash: when @m's successor is @m with one key's update, that key's
 * hash, so the walk costs the path; else NULL (a walk of what @m alone
 * holds).  An estimate: snapshot holders may retain or release meanwhile.
 */
void cm_version_sole_owned(const struct cowmap *m, const uint64_t *lone_hash,
			   size_t *bytes, size_t *nodes);

#ifdef COWMAP_DEBUG
/* Debug builds: check every trie invariant after each write, and report
 * misuse (a released version, a finished transaction, a cell read from a
 * thread the cell's flavor does not know: lib/rcu_debug.c) on stderr. */
void cm_debug_check_trie(const struct cowmap *m, const struct cowmap *base);
void cm_debug_report(const char *call, const char *what);
void cm_debug_check_registered(const struct rcu_flavor_struct *flavor,
			       const char *call);
#else
static inline void cm_debug_check_trie(const struct cowmap *m,
				       const struct cowmap *base)
{
	(void)m;
	(void)base;
}
#endif

#endif
