/*
 * lookup_impl.h - the read path: cowmap_get() and cowmap_get_many().
 *
 * Included once per instruction-set variant (lookup_generic.c,
 * lookup_popcnt.c); LOOKUP_VARIANT(name) names the functions of the
 * variant, and lookup.c picks one when the library is loaded.  The trie
 * walk spends most of its instructions on popcount, which baseline x86-64
 * lacks: the popcnt variant takes a third off a cache-resident lookup.
 *
 * Batched lookups overlap their cache misses.
 * A lookup in a large map is a chain of dependent loads: one node per
 * level.  Done one key at a time, the batch pays that latency once per key
 * per level.  Here the keys of a group advance in rounds, one level per
 * round, and each prefetches the next node it will read, so the misses of
 * the whole group are in flight together and the batch pays roughly once
 * per level.  Every unfinished key is at the same depth, the round's
 * number; a key whose entry turns up in a node is compared at once, since
 * the entries of the small nodes where lookups end arrive with the lines
 * prefetched for the node.
 */
#include "lookup.h"
#include "map.h"

#ifndef LOOKUP_VARIANT
#error "define LOOKUP_VARIANT(name) before including lookup_impl.h"
#endif

#define GROUP 32

static void prefetch_node(const struct cm_node *n)
{
	/* its first lines: see cm_node_find() */
	__builtin_prefetch(n, 0, 3);
	__builtin_prefetch((const char *)n + 64, 0, 3);
	__builtin_prefetch((const char *)n + 128, 0, 3);
}

static size_t lookup_group(const struct cowmap *m, size_t n,
			   const void *const keys[], const size_t lens[],
			   void *values[])
{
	struct cm_probe probes[GROUP];
	uint64_t hashes[GROUP];			/* probes[i].hash, packed */
	const struct cm_node *at[GROUP];	/* the node key i reads next */
	unsigned char active[GROUP];		/* unfinished keys */
	unsigned nactive = 0;
	size_t found = 0;

	for (size_t i = 0; i < n; i++) {
		values[i] = NULL;
		if (cm_check_key(keys[i], lens[i]) < 0)
			continue;
		cm_map_probe(m, &probes[i], keys[i], lens[i]);
		hashes[i] = probes[i].hash;
		at[i] = m->root;
		active[nactive++] = (unsigned char)i;
	}

	/* The rounds read only the packed hashes and nodes; the probe is
	 * looked at once, for the entry a key's walk ends on. */
	for (unsigned depth = 0; nactive > 0 && depth < CM_COLLISION_DEPTH;
	     depth++) {
		unsigned still = 0;

		for (unsigned k = 0; k < nactive; k++) {
			unsigned i = active[k];
			const struct cm_node *node = at[i];
			uint32_t bit = cm_bit(hashes[i], depth);

			if (node->nodemap & bit) {
				at[i] = cm_children(node)[cm_index(
					node->nodemap, bit)];
				prefetch_node(at[i]);
				active[still++] = (unsigned char)i;
				continue;
			}
			if (node->datamap & bit) {
				const struct cm_entry *e = &cm_node_entries(
					node)[cm_index(node->datamap, bit)];

				if (cm_entry_matches(e, &probes[i])) {
					values[i] = e->value;
					found++;
				}
			}
		}
		nactive = still;
	}
	for (unsigned k = 0; k < nactive; k++) {	/* collision nodes */
		unsigned i = active[k];
		const struct cm_entry *e = cm_collision_find(at[i], &probes[i]);

		if (e != NULL) {
			values[i] = e->value;
			found++;
		}
	}
	return found;
}

int LOOKUP_VARIANT(cm_get)(const struct cowmap *m, const void *key,
			   size_t len, void **value)
{
	struct cm_probe p;

	if (cm_check_key(key, len) < 0 || !cm_hash_valid(m))
		return -EINVAL;
	cm_map_probe(m, &p, key, len);

	const struct cm_entry *e = cm_node_find(m->root, &p);

	if (e == NULL)
		return 0;
	if (value != NULL)
		*value = e->value;
	return 1;
}

size_t LOOKUP_VARIANT(cm_get_many)(const struct cowmap *m, size_t n,
				   const void *const keys[],
				   const size_t lens[], void *values[])
{
	size_t found = 0;

	if (!cm_hash_valid(m) || (n > 0 && (keys == NULL || lens == NULL ||
					   values == NULL))) {
		errno = EINVAL;
		return 0;
	}
	for (size_t done = 0; done < n; done += GROUP) {
		size_t len = n - done < GROUP ? n - done : GROUP;

		found += lookup_group(m, len, keys + done, lens + done,
				      values + done);
	}
	return found;
}
