/*
 * node.h - the trie: node layout, entries, and the bit helpers of the walk.
 *
 * 1. The idea
 *
 * A version is a hash array mapped trie in the CHAMP layout (Steindorfer
 * and Vinju, "Optimizing Hash-Array Mapped Tries for Fast and Lean
 * Immutable JVM Collections", OOPSLA 2015).  A key's 64-bit hash is cut
 * into 5-bit chunks, least significant first; chunk d picks one of 32
 * positions in the node at depth d:
 *
 *     hash = ...  00110 10011 00101      (low bits on the right)
 *     depth 0 uses 00101 = 5, depth 1 uses 10011 = 19, depth 2 uses 6 ...
 *
 * Depths 0..12 consume all 64 bits (depth 12 sees the top 4).  Keys whose
 * full hashes are equal meet at depth 13 in a collision node.
 *
 * 2. Bitmap nodes
 *
 * Each node has two 32-bit maps.  datamap bit i says position i holds an
 * entry stored in this node; nodemap bit i says it holds a child node.  A
 * position holds at most one of the two.  The arrays are dense: the entry
 * for position i is entries[popcount(datamap & (bit(i) - 1))], and likewise
 * for children, which precede the entries in the same allocation:
 *
 *     +-------+-------+---------+---------+---------+-----+---------+-----+------+
 *     | kind  | words | datamap | nodemap | child 0 | ... | entry 0 | ... | refs |
 *     | draft | u32   | u32     | u32     | 8 B     |     | 24 B    |     | u32  |
 *     +-------+-------+---------+---------+---------+-----+---------+-----+------+
 *
 * Children come first, right after the header: going down a level then
 * reads the bitmaps and the child pointer from the first cache line or
 * the next, instead of jumping past every entry (on a 1M-entry trie the
 * child pointers of a level-3 node would start ~300 bytes in, a second
 * dependent cache miss per level).
 *
 * 3. Collision nodes
 *
 * kind CM_COLLISION, only at depth 13: datamap is the number of entries
 * (at least two), all with the same hash, in no particular order; nodemap
 * is 0.
 *
 * 4. Canonical form
 *
 * A node other than the root never holds a single entry and nothing else:
 * deletion moves such a lone entry up into the parent.  So the shape of a
 * trie depends only on its set of hashes, which lets equality and diff
 * compare structure and makes a map emptied by deletion look new.
 *
 * 5. Entries and their lifetime
 *
 * An entry is 24 bytes: a 32-bit tag, twelve bytes of key, the value.
 *
 *     +--------------------------+--------------------------+-------+
 *     | tag: hash bits 0..27, len| key bytes 0..11 (inline) | value |
 *     |      code in the low 4   | or 4 unused + leaf ptr   |       |
 *     +--------------------------+--------------------------+-------+
 *       0                          4                          16    24
 *
 * The tag keeps 28 bits of the hash: at the depths where entries live in a
 * large map, a dozen or more of them have not been used for the position,
 * so a mismatch is still rejected without touching key bytes.  The rest of
 * the hash is not stored (8 bytes an entry, a quarter of a 1M-entry map);
 * the writers that need it - a split below depth 4, the debug checker -
 * hash the key again.  Readers never need it.
 *
 * Keys of up to CM_INLINE_KEY bytes live in the entry itself when the map
 * does not own its values, and the tag's length code is their length: an
 * inline key is then found by comparing the first 16 bytes of the entry
 * with the probe (unused key bytes are zero), and such an entry is plain
 * data, copied freely between node versions.  Otherwise the entry is
 * "boxed" (length code CM_LEN_BOXED): it points to a reference-counted
 * leaf holding the length, the key bytes and the value, because the same
 * entry is shared by every node version that contains it and the key (or
 * value_free) must run once, when the last of them goes.
 *
 * 6. Ownership
 *
 * refs counts the parents (nodes, versions, drafts) that hold a node.  A
 * node with draft set belongs to exactly one transaction, which may change
 * it in place; commit clears the flag, after which the node never changes.
 * Readers read only datamap, nodemap, entries and children: they never
 * touch refs or draft.
 *
 * refs sits after the last entry, not in the header: every path copy
 * takes a reference on each child of each node it copies (a hundred or so
 * on a 1M-entry map) and the grace-period callback drops them again, and
 * in the header those writes would keep taking away from readers on other
 * cores the very cache line they read first in every node.  At the tail
 * of a node of several lines they land on a line few lookups read.
 * words (the children and entries in 8-byte words, fixed when the node
 * is allocated) says where the tail is.  A draft node that a transaction
 * shrinks in place keeps its allocation, with spare words between its last
 * entry and refs, until commit trims it (cm_node_trim()).
 *
 * A retired node whose copy took over its references (lib/lend.c) carries
 * CM_REFS_LENT in refs and keeps only its slot at lent_chunk; the first
 * retain after that (see cm_node_retain()) sets CM_REFS_CLAIMED, counts
 * the other slots again and then sets CM_REFS_RETURNED.  The rest of refs
 * is the count, for nodes and versions alike.
 */
#ifndef COWMAP_NODE_H
#define COWMAP_NODE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hash.h"

#define CM_BITS 5
#define CM_CHUNK_MASK 31u
#define CM_COLLISION_DEPTH 13	/* 13 * 5 > 64: the hash is used up */
#define CM_MAX_DEPTH CM_COLLISION_DEPTH
#define CM_INLINE_KEY 12
#define CM_FRAG_BITS 28		/* hash bits kept in an entry's tag */

#define CM_REFS_LENT (1u << 31)
#define CM_REFS_RETURNED (1u << 30)
#define CM_REFS_CLAIMED (1u << 29)	/* being given back (lib/lend.c) */
#define CM_REFS_COUNT (CM_REFS_CLAIMED - 1)
#define CM_LEN_BOXED 15u	/* length code of a boxed entry */

/*
 * The order of the decrement that drops a reference.  The holder of the
 * last one frees, after an acquire fence that orders the other holders'
 * reads before the free.  ThreadSanitizer does not model fences, so it
 * reported every such free as a race with those reads; under it the
 * decrement itself acquires, which orders the same things.
 */
#if defined(__SANITIZE_THREAD__)
#define CM_DROP_ORDER memory_order_acq_rel
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CM_DROP_ORDER memory_order_acq_rel
#endif
#endif
#ifndef CM_DROP_ORDER
#define CM_DROP_ORDER memory_order_release
#endif

enum cm_node_kind { CM_BITMAP = 0, CM_COLLISION = 1 };

/* Boxed entry: an out-of-line key and/or a value the map owns. */
struct cm_leaf {
	atomic_uint refs;
	uint32_t len;
	void *value;
	unsigned char key[];
};

/* 24 bytes; see "Entries and their lifetime" above. */
struct cm_entry {
	uint32_t tag;
	unsigned char inl[4];	/* inline key bytes 0..3 */
	union {
		unsigned char inl_tail[8];	/* inline key bytes 4..11 */
		struct cm_leaf *leaf;
	} u;
	void *value;
};

_Static_assert(sizeof(struct cm_entry) == 24, "entries are 24 bytes");
_Static_assert(offsetof(struct cm_entry, u) == 8 &&
		       offsetof(struct cm_entry, value) == 16,
	       "the tag and the inline key fill the first 16 bytes");

struct cm_node {
	uint8_t kind;
	uint8_t draft;
	uint8_t lent_chunk;	/* with CM_REFS_LENT: the slot it kept */
	uint8_t reserved;
	uint32_t words;		/* children and entries, in 8-byte words */
	uint32_t datamap;	/* collision node: number of entries */
	uint32_t nodemap;
	/* followed by cm_child_count() children, the entries, and refs */
};

/* The configuration every node operation needs: who owns keys and values. */
struct cm_owner {
	void (*value_free)(void *value, void *ctx);
	void *ctx;
};

/*
 * A key prepared for the walk: hashed once, and for an inline key the
 * first 16 bytes its entry would have (tag and zero-padded key), so that
 * matching an entry is two 8-byte compares.
 */
struct cm_probe {
	uint64_t hash;
	const unsigned char *key;
	uint32_t len;
	bool boxed;
	uint32_t tag;		/* the tag its entry has */
	uint64_t head[2];	/* inline key: the entry's first 16 bytes */
};

/* ---- bit helpers ---- */

/*
 * Bits set in @x.  Without a popcnt instruction in the target (baseline
 * x86-64 has none) __builtin_popcount becomes a libgcc call on the hottest
 * line of the walk; the branch-free bit-summing form stays inline.
 */
static inline unsigned cm_popcount(uint32_t x)
{
#if defined(__POPCNT__) || !defined(__x86_64__)
	return (unsigned)__builtin_popcount(x);
#else
	x = x - ((x >> 1) & 0x55555555u);
	x = (x & 0x33333333u) + ((x >> 2) & 0x33333333u);
	x = (x + (x >> 4)) & 0x0f0f0f0fu;
	return (x * 0x01010101u) >> 24;
#endif
}

static inline unsigned cm_chunk(uint64_t hash, unsigned depth)
{
	return (unsigned)(hash >> (depth * CM_BITS)) & CM_CHUNK_MASK;
}

static inline uint32_t cm_bit(uint64_t hash, unsigned depth)
{
	return UINT32_C(1) << cm_chunk(hash, depth);
}

/* Index of @bit's slot among the set bits of @map below it. */
static inline unsigned cm_index(uint32_t map, uint32_t bit)
{
	return cm_popcount(map & (bit - 1));
}

static inline unsigned cm_entry_count(const struct cm_node *n)
{
	return n->kind == CM_COLLISION ? n->datamap
				       : cm_popcount(n->datamap);
}

static inline unsigned cm_child_count(const struct cm_node *n)
{
	return cm_popcount(n->nodemap);
}

static inline struct cm_node **cm_children(const struct cm_node *n)
{
	return (struct cm_node **)(uintptr_t)(n + 1);
}

static inline struct cm_entry *cm_node_entries(const struct cm_node *n)
{
	return (struct cm_entry *)(uintptr_t)(cm_children(n) + cm_child_count(n));
}

/* What bitmap node @n holds at position @bit: its child or its entry
 * there, or NULL.  (The walks inline the same indexing on their hot
 * paths.) */
static inline struct cm_node *cm_slot_child(const struct cm_node *n,
					    uint32_t bit)
{
	return n->nodemap & bit ? cm_children(n)[cm_index(n->nodemap, bit)]
				: NULL;
}

static inline struct cm_entry *cm_slot_entry(const struct cm_node *n,
					     uint32_t bit)
{
	return n->datamap & bit
		       ? &cm_node_entries(n)[cm_index(n->datamap, bit)]
		       : NULL;
}

/* Children and entries of a node, in 8-byte words. */
static inline uint32_t cm_words_for(unsigned entries, unsigned children)
{
	return (uint32_t)((entries * sizeof(struct cm_entry) +
			   children * sizeof(struct cm_node *)) / 8);
}

static inline size_t cm_node_bytes_of(uint32_t words)
{
	return sizeof(struct cm_node) + 8 * (size_t)words +
	       sizeof(atomic_uint);
}

static inline size_t cm_node_bytes(const struct cm_node *n)
{
	return cm_node_bytes_of(n->words);
}

/* The node's reference count, after its last entry (see "Ownership"). */
static inline atomic_uint *cm_node_refs(const struct cm_node *n)
{
	return (atomic_uint *)(uintptr_t)((const unsigned char *)(n + 1) +
					  8 * (size_t)n->words);
}

/* ---- entries ---- */

static inline bool cm_is_boxed(uint32_t len, const struct cm_owner *own)
{
	return len > CM_INLINE_KEY || own->value_free != NULL;
}

static inline uint32_t cm_tag(uint64_t hash, unsigned len_code)
{
	return (uint32_t)(hash << 4) | len_code;
}

static inline bool cm_entry_boxed(const struct cm_entry *e)
{
	return (e->tag & 15u) == CM_LEN_BOXED;
}

/* The low CM_FRAG_BITS bits of the entry's hash. */
static inline uint64_t cm_entry_frag(const struct cm_entry *e)
{
	return e->tag >> 4;
}

static inline uint32_t cm_entry_len(const struct cm_entry *e)
{
	return cm_entry_boxed(e) ? e->u.leaf->len : (e->tag & 15u);
}

static inline const unsigned char *cm_entry_key(const struct cm_entry *e)
{
	return cm_entry_boxed(e) ? e->u.leaf->key
				  : (const unsigned char *)e +
					    offsetof(struct cm_entry, inl);
}

/* The entry's first 16 bytes (tag and inline key) as two words. */
static inline void cm_entry_head(const struct cm_entry *e, uint64_t head[2])
{
	memcpy(head, e, 16);
}

static inline bool cm_leaf_same_key(const struct cm_leaf *a,
				    const unsigned char *key, uint32_t len)
{
	return a->len == len && memcmp(a->key, key, len) == 0;
}

/* Does @e hold the probed key?  The tag rejects almost all mismatches
 * before any key byte outside the entry is read. */
static inline bool cm_entry_matches(const struct cm_entry *e,
				    const struct cm_probe *p)
{
	uint64_t h[2];

	cm_entry_head(e, h);
	if (!p->boxed)
		return ((h[0] ^ p->head[0]) | (h[1] ^ p->head[1])) == 0;
	return e->tag == p->tag &&
	       cm_leaf_same_key(e->u.leaf, p->key, p->len);
}

/* Two entries of maps with the same owner rules: same key? */
static inline bool cm_entries_same_key(const struct cm_entry *a,
				       const struct cm_entry *b)
{
	uint64_t ha[2], hb[2];

	if (cm_entry_boxed(a))
		return a->tag == b->tag &&
		       cm_leaf_same_key(a->u.leaf, b->u.leaf->key,
					b->u.leaf->len);
	cm_entry_head(a, ha);
	cm_entry_head(b, hb);
	return ((ha[0] ^ hb[0]) | (ha[1] ^ hb[1])) == 0;
}

/* Prepare @p for the walk: @hash is the key's hash under its map. */
static inline void cm_probe_init(struct cm_probe *p, uint64_t hash,
				 const void *key, uint32_t len,
				 const struct cm_owner *own)
{
	p->hash = hash;
	p->key = key;
	p->len = len;
	p->boxed = cm_is_boxed(len, own);
	p->tag = cm_tag(hash, p->boxed ? CM_LEN_BOXED : len);
	if (p->boxed) {
		p->head[0] = p->head[1] = 0;	/* unused */
		return;
	}
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	p->head[0] = p->tag |
		     cm_load_le_upto8(key, len < 4 ? len : 4) << 32;
	p->head[1] = len > 4 ? cm_load_le_upto8(p->key + 4, len - 4) : 0;
#else
	struct cm_entry image;

	memset(&image, 0, sizeof(image));
	image.tag = p->tag;
	if (len > 0)
		memcpy((unsigned char *)&image + offsetof(struct cm_entry, inl),
		       key, len);	/* on into u.inl_tail */
	cm_entry_head(&image, p->head);
#endif
}

/*
 * cm_entry_make - fill @e for the probed key and @value.  For a boxed key it
 * allocates the leaf with one reference (the caller's); returns false on
 * ENOMEM with nothing allocated.
 */
bool cm_entry_make(struct cm_entry *e, const struct cm_probe *p, void *value);

/* Take / drop one reference on what @e points to (nothing if inline).
 * The last drop frees the key and calls value_free. */
/*
 * References to one node or leaf past this stop the process (see
 * cm_refs_overflow()) rather than carry into the lending flags, which
 * would free memory that is still in use.  As for versions
 * (CM_VERSION_REFS_MAX), half the count's range: the margin keeps
 * concurrent increments that are about to stop from carrying.
 */
#define CM_NODE_REFS_MAX (CM_REFS_COUNT / 2)

/*
 * Every reference to a node or leaf is held by a parent node, a draft or
 * a version, each a separate allocation of at least 64 bytes, so the
 * limit needs some 16 GiB of parents of one node.  Copies that take
 * references cannot fail after they allocate (their callers rely on it),
 * so instead of an error this reports the overflow on stderr and aborts:
 * a stop, never a silent use-after-free.
 */
_Noreturn void cm_refs_overflow(const void *what);

static inline void cm_refs_check(unsigned old, const void *what)
{
	if (__builtin_expect((old & CM_REFS_COUNT) >= CM_NODE_REFS_MAX, 0))
		cm_refs_overflow(what);
}

static inline void cm_entry_retain(const struct cm_entry *e)
{
	if (cm_entry_boxed(e))
		cm_refs_check(atomic_fetch_add_explicit(&e->u.leaf->refs, 1,
							memory_order_relaxed),
			      e->u.leaf);
}

void cm_entry_release(const struct cm_entry *e, const struct cm_owner *own);

/* Drop the caller's reference on a leaf from cm_entry_make() whose set
 * failed: frees it without calling value_free (the value stays the
 * caller's). */
void cm_entry_discard(const struct cm_entry *e);

/* ---- nodes ---- */

/* A node with refs 1 and uninitialised slots, or NULL (ENOMEM). */
struct cm_node *cm_node_alloc(enum cm_node_kind kind, unsigned entries,
			      unsigned children, bool draft);

/* Give a draft node's spare words back, at commit: the node, perhaps
 * moved (its parent must be updated), with words fitting its contents
 * (or, if no smaller block could be had, @n as it was). */
struct cm_node *cm_node_trim(struct cm_node *n);

/* Someone retained a lent node: count its slots again, or wait until the
 * thread doing that has (lib/lend.c). */
void cm_lend_claim(struct cm_node *n);

/* Tests: call @hook (NULL: nothing) at the start of every give-back. */
void cm_test_lend_pause(void (*hook)(void));

/* The last reference to a lent node is gone: free it and the slot it
 * kept (lib/lend.c). */
void cm_lend_free(struct cm_node *n, const struct cm_owner *own);

/* May an update's copy of @n, whose parent lends, lend too: is @n held by
 * its parent alone (lib/lend.c)? */
bool cm_lend_node_ok(const struct cm_node *n);

/* A failed update drops @copy, made at @depth of the path of the key
 * hashing to @hash, where the copies down to @levels lent: count what
 * they took over, so that dropping them gives back only their own. */
void cm_lend_unwind(struct cm_node *copy, unsigned depth, unsigned levels,
		    uint64_t hash);

/* Take a reference.  On a node that lent its slots (see "Ownership") the
 * holder-to-be must first make the node own them again: it may outlive
 * the successor that holds them now. */
static inline void cm_node_retain(struct cm_node *n)
{
	unsigned old = atomic_fetch_add_explicit(cm_node_refs(n), 1,
						 memory_order_relaxed);

	cm_refs_check(old, n);
	if (__builtin_expect((old & (CM_REFS_LENT | CM_REFS_RETURNED)) ==
				     CM_REFS_LENT,
			     0))
		cm_lend_claim(n);
}

/*
 * Bring the reference counts of @n children into this core's cache, for
 * writing, before they are counted one by one.  Each count sits at the end
 * of its node (after its slots, away from the words readers load), so
 * finding it means reading the node's header first: two misses per child,
 * and the locked add or subtract that follows lets no later miss start
 * while it waits.  Asking for every line first lets the misses overlap
 * (a writer beside a reader on the 1M map went from about 140k to 170k
 * changes/s, before lending took most of these counts off the path).
 */
static inline void cm_prefetch_refs(struct cm_node *const *kids, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(kids[i], 0, 3);
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(cm_node_refs(kids[i]), 1, 3);
}

/* Free @n's memory alone (what it holds is the caller's); NULL is fine. */
void cm_node_free(struct cm_node *n);

/* Drop a reference; the last one frees the node and releases what it holds. */
void cm_node_release(struct cm_node *n, const struct cm_owner *own);

/* The probed key's entry in collision node @n, or NULL. */
static inline const struct cm_entry *
cm_collision_find(const struct cm_node *n, const struct cm_probe *p)
{
	for (unsigned i = 0; i < n->datamap; i++)
		if (cm_entry_matches(&cm_node_entries(n)[i], p))
			return &cm_node_entries(n)[i];
	return NULL;
}

/*
 * cm_node_find - the trie walk: the entry holding the probed key, or NULL.
 * Reads only immutable fields, so it is safe on any version from any
 * thread, inside RCU read-side critical sections included.
 */

static inline const struct cm_entry *cm_node_find(const struct cm_node *n,
						  const struct cm_probe *p)
{
	for (unsigned depth = 0;; depth++) {
		if (depth == CM_COLLISION_DEPTH)
			return cm_collision_find(n, p);
		uint32_t bit = cm_bit(p->hash, depth);

		if (n->datamap & bit) {
			const struct cm_entry *e =
				&cm_node_entries(n)[cm_index(n->datamap, bit)];

			return cm_entry_matches(e, p) ? e : NULL;
		}
		if (!(n->nodemap & bit))
			return NULL;
		n = cm_children(n)[cm_index(n->nodemap, bit)];
		/* Which line of the child we need is known only once its
		 * header arrives; most nodes below the cached top levels end
		 * within the next two lines, so ask for them now and let the
		 * misses overlap instead of queueing. */
		__builtin_prefetch((const char *)n + 64, 0, 3);
		__builtin_prefetch((const char *)n + 128, 0, 3);
	}
}

#endif
