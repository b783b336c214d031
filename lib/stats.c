/*
 * stats.c - what a version costs (cowmap_stats) and, in debug builds, the
 * checker of every trie invariant run after each write.
 */
#include "map.h"
#include "prefix.h"

#include <stdio.h>
#include <stdlib.h>

static void stats_walk(const struct cm_node *n, const struct cowmap *m,
		       size_t depth, struct cowmap_stats *out)
{
	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);
	struct cm_node **kids = cm_children(n);

	out->nodes++;
	out->bytes += cm_node_bytes(n);
	if (depth > out->max_depth)
		out->max_depth = depth;
	for (unsigned i = 0; i < ne; i++) {
		const struct cm_entry *e = &cm_node_entries(n)[i];

		out->entries++;
		if (cm_entry_boxed(e))
			out->bytes += sizeof(struct cm_leaf) + cm_entry_len(e);
	}
	for (unsigned i = 0; i < nc; i++)
		stats_walk(kids[i], m, depth + 1, out);
}

int cowmap_stats(const struct cowmap *m, struct cowmap_stats *out)
{
	if (!cm_map_valid(m) || out == NULL)
		return -EINVAL;
	if (m->kind == CM_KIND_PREFIX)
		return cm_prefix_stats(m, out);
	*out = (struct cowmap_stats){ .bytes = sizeof(*m) };
	stats_walk(m->root, m, 0, out);
	return 0;
}

#ifdef COWMAP_DEBUG
void cm_debug_report(const char *call, const char *what)
{
	fprintf(stderr, "cowmap: %s: %s\n", call, what);
}

static void invariant(bool ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "cowmap: trie invariant broken: %s\n", what);
		abort();
	}
}

/*
 * The hash bits of @e the checker can know, and how many (*bits).  Entries
 * keep only CM_FRAG_BITS of their hash.  The built-in hash is recomputed
 * from the key; a user's hash override is not called (the checker must
 * not show up in what user code observes, such as a count of hash calls),
 * so with an override only the kept bits are checked.
 */
static uint64_t known_hash(const struct cowmap *m, const struct cm_entry *e,
			   unsigned *bits)
{
	if (m->hash != NULL) {
		*bits = CM_FRAG_BITS;
		return cm_entry_frag(e);
	}
	*bits = 64;
	return cm_map_hash(m, cm_entry_key(e), cm_entry_len(e));
}

static uint64_t low_bits(uint64_t x, unsigned bits)
{
	return bits >= 64 ? x : x & ((UINT64_C(1) << bits) - 1);
}

/*
 * Checks the node whose hashes start with @prefix's first @depth chunks;
 * returns the number of entries under it.  Unless @full, subtrees shared
 * with another version were checked when they were made and are skipped,
 * so a check after a write costs about the path it copied: those with
 * refs > 1, and those that @base (the node at the same place in the
 * version this one was derived from, or NULL) holds too - a copy that
 * took over the old node's references (lib/lend.c) leaves them at 1.
 */
static size_t check_node(const struct cowmap *m, const struct cm_node *n,
			 const struct cm_node *base, unsigned depth,
			 uint64_t prefix, bool is_root, bool full)
{
	uint64_t mask = depth >= 13 ? UINT64_MAX
				    : (UINT64_C(1) << (depth * CM_BITS)) - 1;
	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);
	size_t total = ne;

	invariant((atomic_load(cm_node_refs(n)) & CM_REFS_COUNT) >= 1,
		  "node with no reference");
	invariant(!n->draft, "draft node in a version");
	invariant(n->words == cm_words_for(ne, nc),
		  "node size does not fit its contents (untrimmed draft?)");
	if (depth == CM_COLLISION_DEPTH) {
		unsigned bits;
		uint64_t first = known_hash(m, &cm_node_entries(n)[0], &bits);

		invariant(n->kind == CM_COLLISION, "bitmap node at depth 13");
		invariant(ne >= 2 && n->nodemap == 0, "collision node too small");
		for (unsigned i = 0; i < ne; i++)
			invariant(known_hash(m, &cm_node_entries(n)[i], &bits) ==
					  first,
				  "collision node with different hashes");
		return total;
	}
	invariant(n->kind == CM_BITMAP, "collision node above depth 13");
	invariant((n->datamap & n->nodemap) == 0, "position used twice");
	if (!is_root)
		invariant(ne + nc >= 2 || nc == 1,
			  "non-root node with a lone entry");
	for (unsigned i = 0; i < ne; i++) {
		const struct cm_entry *e = &cm_node_entries(n)[i];
		unsigned bits, prev_bits;
		uint64_t hash = known_hash(m, e, &bits);
		bool chunk_known = (depth + 1) * CM_BITS <= bits;

		invariant(cm_entry_frag(e) == low_bits(hash, CM_FRAG_BITS),
			  "tag does not hold the key's hash");
		invariant(cm_entry_boxed(e) ==
				  cm_is_boxed(cm_entry_len(e), &m->own),
			  "entry boxed against the map's rule");
		invariant(low_bits(hash & mask, bits) ==
				  low_bits(prefix & mask, bits),
			  "misplaced entry");
		if (!chunk_known)
			continue;
		invariant(n->datamap & cm_bit(hash, depth), "entry not in datamap");
		if (i > 0)
			invariant(cm_chunk(hash, depth) >
					  cm_chunk(known_hash(m, e - 1, &prev_bits),
						   depth),
				  "entries out of order");
	}
	unsigned k = 0;

	for (unsigned pos = 0; pos < 32; pos++) {
		if (!(n->nodemap & (UINT32_C(1) << pos)))
			continue;
		uint64_t child_prefix = (prefix & mask) |
					((uint64_t)pos << (depth * CM_BITS));
		const struct cm_node *child = cm_children(n)[k++];
		const struct cm_node *base_child =
			base != NULL && base->kind == CM_BITMAP
				? cm_slot_child(base, UINT32_C(1) << pos)
				: NULL;
		if (!full && ((atomic_load(cm_node_refs(child)) &
			       CM_REFS_COUNT) > 1 ||
			      child == base_child)) {
			total += 2;	/* checked when it was made */
			continue;
		}
		size_t below = check_node(m, child, base_child, depth + 1,
					  child_prefix, false, full);

		invariant(below >= 2, "subtree with fewer than two entries");
		total += below;
	}
	return total;
}

void cm_debug_check_trie(const struct cowmap *m, const struct cowmap *base)
{
	bool full = m->count <= 4096;
	size_t seen = check_node(m, m->root, base ? base->root : NULL, 0, 0,
				 true, full);

	if (full)
		invariant(seen == m->count, "entry count differs from the trie");
}
#endif
