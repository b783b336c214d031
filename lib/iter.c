/*
 * iter.c - depth-first iteration over one version with an explicit stack
 * kept in the caller's struct cowmap_iter: no allocation, no reference
 * counts, and nothing another thread does can change what it visits.
 */
#include "map.h"

_Static_assert(COWMAP_ITER_DEPTH > CM_MAX_DEPTH,
	       "the iterator stack must hold a root-to-collision path");

void cowmap_iter_init(struct cowmap_iter *it, const struct cowmap *m)
{
	if (it == NULL)
		return;
	it->priv_map = m;
	it->priv_depth = cm_map_valid(m) ? 0 : -1;
	if (it->priv_depth == 0) {
		it->priv_node[0] = m->root;
		it->priv_pos[0] = 0;
	}
}

int cowmap_iter_next(struct cowmap_iter *it, const void **key, size_t *len,
		     void **value)
{
	if (it == NULL || !cm_hash_valid(it->priv_map))
		return 0;

	while (it->priv_depth >= 0) {
		int d = it->priv_depth;
		const struct cm_node *n = it->priv_node[d];
		unsigned pos = it->priv_pos[d];
		unsigned ne = cm_entry_count(n), nc = cm_child_count(n);

		if (pos < ne) {
			const struct cm_entry *e = &cm_node_entries(n)[pos];

			it->priv_pos[d] = pos + 1;
			if (key != NULL)
				*key = cm_entry_key(e);
			if (len != NULL)
				*len = cm_entry_len(e);
			if (value != NULL)
				*value = e->value;
			return 1;
		}
		if (pos < ne + nc) {
			it->priv_pos[d] = pos + 1;
			it->priv_node[d + 1] = cm_children(n)[pos - ne];
			it->priv_pos[d + 1] = 0;
			it->priv_depth = d + 1;
			continue;
		}
		it->priv_depth = d - 1;
	}
	return 0;
}
