/*
 * stats.c - what a version costs (cowmap_stats) and, in debug builds, the
 * checker of every trie invariant run after each write.
 */
#include "map.h"

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
		if (cm_is_boxed(e->len, &m->own))
			out->bytes += sizeof(struct cm_leaf) + e->len;
	}
	for (unsigned i = 0; i < nc; i++)
		stats_walk(kids[i], m, depth + 1, out);
}

int cowmap_stats(const struct cowmap *m, struct cowmap_stats *out)
{
	if (!cm_map_valid(m) || out == NULL)
		return -EINVAL;
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
 * Checks the node whose hashes start with @prefix's first @depth chunks;
 * returns the number of entries under it.  Unless @full, subtrees shared
 * with another version (refs > 1) were checked when they were made and are
 * skipped, so a check after a write costs about the path it copied.
 */
static size_t check_node(const struct cowmap *m, const struct cm_node *n,
			 unsigned depth, uint64_t prefix, bool is_root,
			 bool full)
{
	uint64_t mask = depth >= 13 ? UINT64_MAX
				    : (UINT64_C(1) << (depth * CM_BITS)) - 1;
	unsigned ne = cm_entry_count(n), nc = cm_child_count(n);
	size_t total = ne;

	invariant(atomic_load(&n->refs) >= 1, "node with no reference");
	invariant(!n->draft, "draft node in a version");
	if (depth == CM_COLLISION_DEPTH) {
		invariant(n->kind == CM_COLLISION, "bitmap node at depth 13");
		invariant(ne >= 2 && n->nodemap == 0, "collision node too small");
		for (unsigned i = 0; i < ne; i++)
			invariant(cm_node_entries(n)[i].hash == cm_node_entries(n)[0].hash,
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

		invariant((e->hash & mask) == (prefix & mask), "misplaced entry");
		invariant(n->datamap & cm_bit(e->hash, depth), "entry not in datamap");
		if (i > 0)
			invariant(cm_chunk(e->hash, depth) >
					  cm_chunk(cm_node_entries(n)[i - 1].hash, depth),
				  "entries out of order");
	}
	unsigned k = 0;

	for (unsigned pos = 0; pos < 32; pos++) {
		if (!(n->nodemap & (UINT32_C(1) << pos)))
			continue;
		uint64_t child_prefix = (prefix & mask) |
					((uint64_t)pos << (depth * CM_BITS));
		const struct cm_node *child = cm_children(n)[k++];

		if (!full && atomic_load(&child->refs) > 1) {
			total += 2;	/* checked when it was made */
			continue;
		}
		size_t below = check_node(m, child, depth + 1, child_prefix,
					  false, full);

		invariant(below >= 2, "subtree with fewer than two entries");
		total += below;
	}
	return total;
}

void cm_debug_check_trie(const struct cowmap *m)
{
	bool full = m->count <= 4096;
	size_t seen = check_node(m, m->root, 0, 0, true, full);

	if (full)
		invariant(seen == m->count, "entry count differs from the trie");
}
#endif
