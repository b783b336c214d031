/*
 * prefix.h - the prefix trie: node layout, address bits, and the calls the
 * rest of the library makes on prefix tables.  The design is described at
 * the top of prefix.c and in doc/prefix-trie.md.
 *
 * A node covers six bits of the address (a stride).  The node at depth d
 * holds the prefixes whose lengths are 6d+1 .. 6d+6 (the root also holds
 * /0), and its children are the nodes for the 64 values of the next six
 * bits.  Layout, all in one block from the node allocator:
 *
 *     +----------+--------+-----------+-------+-----------+--------------+
 *     | childmap | runmap | pfxmap[2] | words | run_words | draft        |
 *     | u64      | u64    | 2 x u64   | u16   | u8  (+u8) | u32          |
 *     +----------+--------+-----------+-------+-----------+--------------+
 *     | runs: a zero byte, then one per set bit of runmap, padded to 8     |
 *     | children: one pointer per set bit of childmap, in slot order     |
 *     | values: one void * per set bit of pfxmap, in heap-index order    |
 *     | boxes: as many struct cm_pbox *, only when the table owns values |
 *     | (spare words of a draft node)                  | refs (u32)      |
 *     +--------------------------------------------------------------------+
 *
 * A lookup reads the first line (the maps and, for up to 24 runs, the
 * runs), one child pointer per level, and at the end one value: the
 * prefixes' own bookkeeping (pfxmap, values, boxes) is not on its way
 * until the last node that matched.  refs sits after the payload, away
 * from what readers load, as in the hash trie (node.h "Ownership").
 */
#ifndef COWMAP_PREFIX_H
#define COWMAP_PREFIX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cowmap.h"

struct cm_owner;

#define CM_PFX_STRIDE 6
#define CM_PFX_SLOTS 64		/* 2^stride children per node */
#define CM_PFX_HEAP 128		/* heap indices 1..127: lengths 0..6 */
#define CM_PFX_MAX_WIDTH 128
#define CM_PFX_MAX_DEPTH 21	/* (128 - 1) / 6: the deepest node */

/* A value the table owns (options.value_free): shared by every node copy
 * that holds it, freed with value_free when the last one goes. */
struct cm_pbox {
	atomic_uint refs;
	void *value;
};

struct cm_pnode {
	uint64_t childmap;	/* slot s has a child */
	uint64_t runmap;	/* slot s starts a run of equal best matches */
	uint64_t pfxmap[2];	/* heap index h: a prefix is stored here */
	uint16_t words;		/* payload words allocated, runs included */
	uint8_t run_words;	/* words the runs take, their zero byte
				   included (children follow) */
	uint8_t reserved;
	uint32_t draft;		/* 0: sealed; else the generation that may edit it */
};

_Static_assert(sizeof(struct cm_pnode) == 40, "prefix node header is 40 bytes");

/* ---- bit helpers ---- */

static inline unsigned cm_popcount64(uint64_t x)
{
#if defined(__POPCNT__) || !defined(__x86_64__)
	return (unsigned)__builtin_popcountll(x);
#else
	x = x - ((x >> 1) & 0x5555555555555555u);
	x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
	x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fu;
	return (unsigned)((x * 0x0101010101010101u) >> 56);
#endif
}

/* An address, left-aligned: bit 0 of the string is bit 127. */
typedef unsigned __int128 cm_addr;

/* The six bits of @a at depth @d (bits beyond the width are zero). */
static inline unsigned cm_pfx_slot(cm_addr a, unsigned d)
{
	return (unsigned)((a << (CM_PFX_STRIDE * d)) >> (128 - CM_PFX_STRIDE));
}

/* @a with only its first @len bits kept. */
static inline cm_addr cm_pfx_mask(cm_addr a, unsigned len)
{
	if (len == 0)
		return 0;
	return a & ~(cm_addr)0 << (128 - len);
}

/* The depth of the node that holds a prefix of @len bits. */
static inline unsigned cm_pfx_depth(unsigned len)
{
	return len == 0 ? 0 : (len - 1) / CM_PFX_STRIDE;
}

/* Its heap index there: 1 followed by its r = len - 6d bits in the node. */
static inline unsigned cm_pfx_heap(cm_addr a, unsigned len)
{
	unsigned d = cm_pfx_depth(len), r = len - CM_PFX_STRIDE * d;

	return (1u << r) | (cm_pfx_slot(a, d) >> (CM_PFX_STRIDE - r));
}

/* The length, within its node, of the prefix at heap index @h. */
static inline unsigned cm_heap_rlen(unsigned h)
{
	return 31u - (unsigned)__builtin_clz(h);
}

static inline bool cm_pfx_has(const uint64_t map[2], unsigned h)
{
	return (map[h >> 6] >> (h & 63)) & 1;
}

/* Index of heap index @h among the set bits of @map below it. */
static inline unsigned cm_pfx_index(const uint64_t map[2], unsigned h)
{
	if (h < 64)
		return cm_popcount64(map[0] & ((UINT64_C(1) << h) - 1));
	return cm_popcount64(map[0]) +
	       cm_popcount64(map[1] & ((UINT64_C(1) << (h - 64)) - 1));
}

static inline unsigned cm_pfx_count(const uint64_t map[2])
{
	return cm_popcount64(map[0]) + cm_popcount64(map[1]);
}

/* Read a @width-bit address in network order. */
static inline cm_addr cm_addr_load(const void *addr, unsigned width)
{
	const unsigned char *b = addr;
	uint64_t hi = 0, lo = 0;
	unsigned nbytes = (width + 7) / 8;

	if (nbytes == 4) {
		uint32_t w;

		memcpy(&w, b, 4);
		hi = (uint64_t)__builtin_bswap32(w) << 32;
	} else if (nbytes == 16) {
		memcpy(&hi, b, 8);
		memcpy(&lo, b + 8, 8);
		hi = __builtin_bswap64(hi);
		lo = __builtin_bswap64(lo);
	} else {
		for (unsigned i = 0; i < nbytes; i++) {
			if (i < 8)
				hi |= (uint64_t)b[i] << (56 - 8 * i);
			else
				lo |= (uint64_t)b[i] << (56 - 8 * (i - 8));
		}
	}
	return cm_pfx_mask((cm_addr)hi << 64 | lo, width);
}

/* The same for a width of at most 64 bits, left-aligned in 64: the read
 * path of IPv4 tables, kept clear of 128-bit arithmetic. */
static inline uint64_t cm_addr_load64(const void *addr, unsigned width)
{
	const unsigned char *b = addr;
	uint64_t a = 0;

	if (width > 24 && width <= 32) {
		uint32_t w;

		memcpy(&w, b, 4);
		a = (uint64_t)__builtin_bswap32(w) << 32;
	} else {
		for (unsigned i = 0; i < (width + 7) / 8; i++)
			a |= (uint64_t)b[i] << (56 - 8 * i);
	}
	return a & ~UINT64_C(0) << (64 - width);
}

/* Write @a as (width + 7) / 8 bytes in network order. */
static inline void cm_addr_store(void *addr, cm_addr a, unsigned width)
{
	unsigned char *b = addr;

	for (unsigned i = 0; i < (width + 7) / 8; i++)
		b[i] = (unsigned char)(a >> (120 - 8 * i));
}

/* ---- node layout ---- */

static inline const uint8_t *cm_pn_runs(const struct cm_pnode *n)
{
	return (const uint8_t *)(n + 1);
}

static inline struct cm_pnode **cm_pn_children(const struct cm_pnode *n)
{
	return (struct cm_pnode **)(uintptr_t)((const uint64_t *)(n + 1) +
					       n->run_words);
}

static inline void **cm_pn_values(const struct cm_pnode *n)
{
	return (void **)(cm_pn_children(n) + cm_popcount64(n->childmap));
}

static inline struct cm_pbox **cm_pn_boxes(const struct cm_pnode *n)
{
	return (struct cm_pbox **)(cm_pn_values(n) + cm_pfx_count(n->pfxmap));
}

static inline size_t cm_pn_bytes_of(unsigned words)
{
	return sizeof(struct cm_pnode) + 8 * (size_t)words + sizeof(atomic_uint);
}

static inline size_t cm_pn_bytes(const struct cm_pnode *n)
{
	return cm_pn_bytes_of(n->words);
}

static inline atomic_uint *cm_pn_refs(const struct cm_pnode *n)
{
	return (atomic_uint *)(uintptr_t)((const unsigned char *)(n + 1) +
					  8 * (size_t)n->words);
}

/* The child at slot @s, or NULL. */
static inline struct cm_pnode *cm_pn_child(const struct cm_pnode *n,
					   unsigned s)
{
	uint64_t bit = UINT64_C(1) << s;

	if (!(n->childmap & bit))
		return NULL;
	return cm_pn_children(n)[cm_popcount64(n->childmap & (bit - 1))];
}

/*
 * The best match inside @n for slot @s: a heap index, 0 for none.  The
 * runs are preceded by a zero byte, so a node without prefixes (runmap 0,
 * a count of 0) answers 0 with no branch: lookups meet both kinds of node
 * in no predictable order.
 */
static inline unsigned cm_pn_best(const struct cm_pnode *n, unsigned s)
{
	return cm_pn_runs(n)[cm_popcount64(n->runmap << (63 - s))];
}

/* ---- nodes (prefix_node.c) ---- */

/*
 * The contents of one node, unpacked into arrays indexed by slot and heap
 * index, which is what every write edits: an edit unpacks a node, changes
 * a slot or a prefix, and packs the result into the same block (a draft
 * node with room) or a new one.  Only entries whose map bit is set are
 * meaningful.
 */
struct cm_pbuild {
	uint64_t childmap, pfxmap[2];
	struct cm_pnode *child[CM_PFX_SLOTS];
	void *value[CM_PFX_HEAP];
	struct cm_pbox *box[CM_PFX_HEAP];
};

void cm_pn_unpack(const struct cm_pnode *n, bool boxed, struct cm_pbuild *b);

/*
 * cm_pn_pack - a node holding @b.  Into @into (a draft node of this
 * generation) when it has room, else into a new block with refs 1 (and
 * @into, if any, is emptied and freed: the caller's pointer to it must be
 * replaced).  @spare: allocate room for growth (drafts).  Takes no
 * references: the node takes over those of @b.  NULL on ENOMEM, with
 * @into untouched.
 */
struct cm_pnode *cm_pn_pack(const struct cm_pbuild *b, bool boxed,
			    struct cm_pnode *into, uint32_t draft, bool spare);

/*
 * cm_pn_clone - a copy of @n (its contents, not its references) with refs
 * 1, draft @draft and, with @spare, room to grow; NULL on ENOMEM.
 */
struct cm_pnode *cm_pn_clone(const struct cm_pnode *n, bool boxed,
			     uint32_t draft, bool spare);

/*
 * Bring the reference counts of @n nodes into this core's cache for
 * writing before they are counted one by one: each sits after its node's
 * payload, found only once the node's header has arrived, and the locked
 * add that follows would let no later miss start (as cm_prefetch_refs()
 * does for the hash trie).
 */
static inline void cm_pn_prefetch_refs(struct cm_pnode *const *kids,
				       unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(&kids[i]->words, 0, 3);
	for (unsigned i = 0; i < n; i++)
		__builtin_prefetch(cm_pn_refs(kids[i]), 1, 3);
}

static inline void cm_pn_retain(struct cm_pnode *n)
{
	atomic_fetch_add_explicit(cm_pn_refs(n), 1, memory_order_relaxed);
}

/* Drop a reference; the last frees the node, its children and boxes. */
void cm_pn_release(struct cm_pnode *n, const struct cm_owner *own);

/* Drop a box reference; the last calls value_free (unless @discard:
 * a value a failed call gives back to its caller) and frees the box. */
void cm_pbox_release(struct cm_pbox *b, const struct cm_owner *own,
		     bool discard);

static inline void cm_pbox_retain(struct cm_pbox *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

/* Clear the draft marks under @n (commit); returns @n, perhaps moved to a
 * block without spare words. */
struct cm_pnode *cm_pn_seal(struct cm_pnode *n, bool boxed);

/* ---- what the version, cell and transaction layers call ---- */

struct cm_pnode *cm_pn_empty(void);	/* refs 1, or NULL */

void cm_prefix_free_root(struct cowmap *m);
int cm_prefix_stats(const struct cowmap *m, struct cowmap_stats *out);
int cm_prefix_equal(const struct cowmap *a, const struct cowmap *b,
		    int (*value_eq)(const void *x, const void *y, void *ctx),
		    void *ctx);

/*
 * cm_prefix_sole_owned - add to *@bytes and *@nodes what only @m holds:
 * the nodes with one reference reached through parents with one
 * reference, and the boxes among them held once (the version header is
 * not counted).  An estimate for the cell's pending figures, read with
 * writers excluded; snapshot holders may change counts meanwhile.
 */
void cm_prefix_sole_owned(const struct cowmap *m, size_t *bytes,
			  size_t *nodes);

#ifdef COWMAP_DEBUG
void cm_prefix_check(const struct cowmap *m);
#else
static inline void cm_prefix_check(const struct cowmap *m)
{
	(void)m;
}
#endif

#endif
