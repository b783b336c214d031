/*
 * prefix_node.c - prefix trie nodes: unpacking and packing them (every
 * write goes through these two), sharing and freeing them, and the walks
 * over a whole version: stats, what a retired version alone holds, and
 * the debug checker.
 *
 * Reference counts follow the hash trie's rules (node.c): relaxed
 * increments, a release decrement and an acquire fence before the free.
 */
#include "prefix.h"

#include "alloc.h"
#include "map.h"
#include "slab.h"

#include <stdio.h>
#include <stdlib.h>

static unsigned drop(atomic_uint *refs)
{
	unsigned old = atomic_fetch_sub_explicit(refs, 1, CM_DROP_ORDER);

	if (old == 1)
		atomic_thread_fence(memory_order_acquire);
	return old;
}

void cm_pbox_release(struct cm_pbox *b, const struct cm_owner *own,
		     bool discard)
{
	if (drop(&b->refs) != 1)
		return;
	if (!discard && own->value_free != NULL)
		own->value_free(b->value, own->ctx);
	cm_slab_free(b, sizeof(*b));
}

/* Visit the set bits of @map, lowest first. */
#define FOR_BITS(map, var)                                                   \
	for (uint64_t m_ = (map); m_ != 0; m_ &= m_ - 1)                     \
		for (unsigned var = (unsigned)__builtin_ctzll(m_), once_ = 1; \
		     once_; once_ = 0)

void cm_pn_unpack(const struct cm_pnode *n, bool boxed, struct cm_pbuild *b)
{
	struct cm_pnode **kids = cm_pn_children(n);
	void **vals = cm_pn_values(n);
	unsigned i = 0;

	b->childmap = n->childmap;
	b->pfxmap[0] = n->pfxmap[0];
	b->pfxmap[1] = n->pfxmap[1];
	FOR_BITS(n->childmap, s)
		b->child[s] = kids[i++];
	i = 0;
	for (unsigned w = 0; w < 2; w++)
		FOR_BITS(n->pfxmap[w], bit)
			b->value[64 * w + bit] = vals[i++];
	if (!boxed)
		return;

	struct cm_pbox **boxes = (struct cm_pbox **)(vals + i);

	i = 0;
	for (unsigned w = 0; w < 2; w++)
		FOR_BITS(n->pfxmap[w], bit)
			b->box[64 * w + bit] = boxes[i++];
}

/*
 * The best match of each of the 64 slots among the prefixes of @pfxmap:
 * paint each prefix over the slots it covers, shorter ones first (heap
 * order is by length), so longer ones overwrite them.
 */
static void paint_runs(const uint64_t pfxmap[2], uint8_t best[CM_PFX_SLOTS])
{
	memset(best, 0, CM_PFX_SLOTS);
	for (unsigned w = 0; w < 2; w++)
		FOR_BITS(pfxmap[w], bit) {
			unsigned h = 64 * w + bit, r = cm_heap_rlen(h);
			unsigned span = 1u << (CM_PFX_STRIDE - r);
			unsigned lo = (h - (1u << r)) * span;

			memset(best + lo, (int)h, span);
		}
}

/* Compress @best into runs: the map of slots where a run starts. */
static uint64_t runs_of(const uint8_t best[CM_PFX_SLOTS], uint8_t *runs,
			unsigned *nruns)
{
	uint64_t map = 1;
	unsigned k = 0;

	runs[k++] = best[0];
	for (unsigned s = 1; s < CM_PFX_SLOTS; s++)
		if (best[s] != best[s - 1]) {
			map |= UINT64_C(1) << s;
			runs[k++] = best[s];
		}
	*nruns = k;
	return map;
}

/* The runs follow a zero byte (prefix.h), padded to 8 bytes. */
static unsigned run_words_for(unsigned nruns)
{
	return (nruns + 1 + 7) / 8;
}

static unsigned words_needed(unsigned nruns, unsigned nc, unsigned np,
			     bool boxed)
{
	return run_words_for(nruns) + nc + np * (boxed ? 2 : 1);
}

static struct cm_pnode *pn_alloc(unsigned words)
{
	struct cm_pnode *n = cm_slab_alloc(cm_pn_bytes_of(words));

	if (n == NULL)
		return NULL;
	n->words = (uint16_t)words;
	atomic_init(cm_pn_refs(n), 1);
	return n;
}

struct cm_pnode *cm_pn_pack(const struct cm_pbuild *b, bool boxed,
			    struct cm_pnode *into, uint32_t draft, bool spare)
{
	uint8_t best[CM_PFX_SLOTS], runs[CM_PFX_SLOTS];
	unsigned nruns = 0;
	uint64_t runmap = 0;
	unsigned nc = cm_popcount64(b->childmap), np = cm_pfx_count(b->pfxmap);

	if (np != 0) {
		paint_runs(b->pfxmap, best);
		runmap = runs_of(best, runs, &nruns);
	}

	unsigned words = words_needed(nruns, nc, np, boxed);
	struct cm_pnode *n = into;

	if (n == NULL || n->words < words) {
		unsigned room = words;

		if (spare) {
			room = words + words / 2 + 2;
			if (room > UINT16_MAX)
				room = UINT16_MAX;
		}
		n = pn_alloc(room);
		if (n == NULL)
			return NULL;
	}
	n->childmap = b->childmap;
	n->runmap = runmap;
	n->pfxmap[0] = b->pfxmap[0];
	n->pfxmap[1] = b->pfxmap[1];
	n->run_words = (uint8_t)run_words_for(nruns);
	n->reserved = 0;
	n->draft = draft;
	((uint8_t *)(n + 1))[0] = 0;
	memcpy((uint8_t *)(n + 1) + 1, runs, nruns);

	struct cm_pnode **kids = cm_pn_children(n);
	unsigned i = 0;

	FOR_BITS(b->childmap, s)
		kids[i++] = b->child[s];

	void **vals = cm_pn_values(n);

	i = 0;
	for (unsigned w = 0; w < 2; w++)
		FOR_BITS(b->pfxmap[w], bit)
			vals[i++] = b->value[64 * w + bit];
	if (boxed) {
		struct cm_pbox **boxes = (struct cm_pbox **)(vals + i);

		i = 0;
		for (unsigned w = 0; w < 2; w++)
			FOR_BITS(b->pfxmap[w], bit)
				boxes[i++] = b->box[64 * w + bit];
	}
	if (into != NULL && n != into)
		cm_slab_free(into, cm_pn_bytes(into));	/* its contents moved */
	return n;
}

static unsigned pn_words_used(const struct cm_pnode *n, bool boxed);

struct cm_pnode *cm_pn_clone(const struct cm_pnode *n, bool boxed,
			     uint32_t draft, bool spare)
{
	unsigned used = pn_words_used(n, boxed), room = used;

	if (spare) {
		room = used + used / 2 + 2;
		if (room > UINT16_MAX)
			room = UINT16_MAX;
	}

	struct cm_pnode *c = pn_alloc(room);

	if (c == NULL)
		return NULL;
	memcpy(c, n, offsetof(struct cm_pnode, words));
	c->run_words = n->run_words;
	c->reserved = 0;
	c->draft = draft;
	memcpy(c + 1, n + 1, 8 * (size_t)used);
	return c;
}

struct cm_pnode *cm_pn_empty(void)
{
	struct cm_pnode *n = pn_alloc(run_words_for(0));

	if (n != NULL) {
		memset(n, 0, offsetof(struct cm_pnode, words));
		n->run_words = (uint8_t)run_words_for(0);
		n->reserved = 0;
		n->draft = 0;
		((uint8_t *)(n + 1))[0] = 0;
	}
	return n;
}

void cm_pn_release(struct cm_pnode *n, const struct cm_owner *own)
{
	if (n == NULL || drop(cm_pn_refs(n)) != 1)
		return;

	unsigned nc = cm_popcount64(n->childmap), np = cm_pfx_count(n->pfxmap);
	struct cm_pnode **kids = cm_pn_children(n);

	if (own->value_free != NULL) {
		struct cm_pbox **boxes = cm_pn_boxes(n);

		for (unsigned i = 0; i < np; i++)
			cm_pbox_release(boxes[i], own, false);
	}
	/* Depth is at most CM_PFX_MAX_DEPTH, so the recursion is bounded. */
	cm_pn_prefetch_refs(kids, nc);
	for (unsigned i = 0; i < nc; i++)
		cm_pn_release(kids[i], own);
	cm_slab_free(n, cm_pn_bytes(n));
}

static unsigned pn_words_used(const struct cm_pnode *n, bool boxed)
{
	return n->run_words + cm_popcount64(n->childmap) +
	       cm_pfx_count(n->pfxmap) * (boxed ? 2 : 1);
}

struct cm_pnode *cm_pn_seal(struct cm_pnode *n, bool boxed)
{
	if (n->draft == 0)
		return n;

	struct cm_pnode **kids = cm_pn_children(n);
	unsigned nc = cm_popcount64(n->childmap);

	for (unsigned i = 0; i < nc; i++)
		kids[i] = cm_pn_seal(kids[i], boxed);
	n->draft = 0;

	unsigned used = pn_words_used(n, boxed);

	if (used == n->words)
		return n;

	unsigned refs = atomic_load_explicit(cm_pn_refs(n),
					     memory_order_relaxed);
	struct cm_pnode *m = cm_slab_shrink(n, cm_pn_bytes(n),
					    cm_pn_bytes_of(used));

	if (m == NULL)	/* no smaller block: keep the spare words */
		return n;
	m->words = (uint16_t)used;
	atomic_init(cm_pn_refs(m), refs);
	return m;
}

void cm_prefix_free_root(struct cowmap *m)
{
	cm_pn_release(m->proot, &m->own);
}

/* ---- walks over a version ---- */

static void stats_walk(const struct cm_pnode *n, bool boxed, size_t depth,
		       struct cowmap_stats *out)
{
	unsigned nc = cm_popcount64(n->childmap), np = cm_pfx_count(n->pfxmap);

	out->nodes++;
	out->bytes += cm_pn_bytes(n);
	out->entries += np;
	if (boxed)
		out->bytes += np * sizeof(struct cm_pbox);
	if (depth > out->max_depth)
		out->max_depth = depth;
	for (unsigned i = 0; i < nc; i++)
		stats_walk(cm_pn_children(n)[i], boxed, depth + 1, out);
}

int cm_prefix_stats(const struct cowmap *m, struct cowmap_stats *out)
{
	*out = (struct cowmap_stats){ .bytes = sizeof(*m) };
	stats_walk(m->proot, m->own.value_free != NULL, 0, out);
	return 0;
}

static bool held_once(const atomic_uint *refs)
{
	return atomic_load_explicit(refs, memory_order_relaxed) == 1;
}

static void sole_walk(const struct cm_pnode *n, bool boxed, size_t *bytes,
		      size_t *nodes)
{
	if (!held_once(cm_pn_refs(n)))
		return;

	unsigned nc = cm_popcount64(n->childmap), np = cm_pfx_count(n->pfxmap);

	*bytes += cm_pn_bytes(n);
	*nodes += 1;
	if (boxed)
		for (unsigned i = 0; i < np; i++)
			if (held_once(&cm_pn_boxes(n)[i]->refs))
				*bytes += sizeof(struct cm_pbox);
	for (unsigned i = 0; i < nc; i++)
		sole_walk(cm_pn_children(n)[i], boxed, bytes, nodes);
}

void cm_prefix_sole_owned(const struct cowmap *m, size_t *bytes,
			  size_t *nodes)
{
	sole_walk(m->proot, m->own.value_free != NULL, bytes, nodes);
}

#ifdef COWMAP_DEBUG
static void invariant(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "cowmap: prefix trie invariant broken: %s\n",
			what);
		abort();
	}
}

/* Checks @n at @depth and returns the prefixes under it.  Subtrees held
 * by more than one parent were checked when they were made (unless @full). */
static size_t check_pnode(const struct cowmap *m, const struct cm_pnode *n,
			  unsigned depth, bool full)
{
	bool boxed = m->own.value_free != NULL;
	unsigned width = m->width, base = CM_PFX_STRIDE * depth;
	size_t total = cm_pfx_count(n->pfxmap);
	uint8_t best[CM_PFX_SLOTS], runs[CM_PFX_SLOTS];
	unsigned nruns = 0;

	invariant(atomic_load(cm_pn_refs(n)) >= 1, "node with no reference");
	invariant(n->draft == 0, "draft node in a version");
	invariant(n->words == pn_words_used(n, boxed),
		  "node size does not fit its contents");
	invariant(depth <= cm_pfx_depth(width), "node below the width");
	if (depth > 0) {
		invariant(n->childmap != 0 || total != 0, "empty node");
		invariant(!cm_pfx_has(n->pfxmap, 1), "/0 below the root");
	}
	invariant(!(n->pfxmap[0] & 1), "heap index 0 used");
	for (unsigned h = 1; h < CM_PFX_HEAP; h++)
		if (cm_pfx_has(n->pfxmap, h))
			invariant(base + cm_heap_rlen(h) <= width,
				  "prefix longer than the width");
	if (total != 0) {
		paint_runs(n->pfxmap, best);
		invariant(runs_of(best, runs, &nruns) == n->runmap,
			  "runmap does not follow the prefixes");
		invariant(memcmp(runs, cm_pn_runs(n) + 1, nruns) == 0,
			  "runs do not follow the prefixes");
	} else {
		invariant(n->runmap == 0, "runs without prefixes");
	}
	invariant(cm_pn_runs(n)[0] == 0, "no zero byte before the runs");
	invariant(n->run_words == run_words_for(nruns), "run words");
	if (n->childmap != 0)
		invariant(base + CM_PFX_STRIDE < width, "child beyond the width");
	if (boxed)
		for (unsigned i = 0; i < total; i++)
			invariant(cm_pn_boxes(n)[i]->value == cm_pn_values(n)[i],
				  "box and value differ");

	unsigned nc = cm_popcount64(n->childmap);

	for (unsigned i = 0; i < nc; i++) {
		const struct cm_pnode *c = cm_pn_children(n)[i];

		if (!full && atomic_load(cm_pn_refs(c)) > 1)
			continue;
		total += check_pnode(m, c, depth + 1, full);
	}
	return total;
}

void cm_prefix_check(const struct cowmap *m)
{
	bool full = m->count <= 4096;
	size_t seen = check_pnode(m, m->proot, 0, full);

	if (full)
		invariant(seen == m->count, "prefix count differs from the trie");
}
#endif
