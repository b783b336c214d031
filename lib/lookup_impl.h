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
 * per level.  Here every key of a group advances one level per round and
 * prefetches the next node it will read, so the misses of the whole group
 * are in flight together and the batch pays roughly once per level.
 */
#include "lookup.h"
#include "map.h"

#ifndef LOOKUP_VARIANT
#error "define LOOKUP_VARIANT(name) before including lookup_impl.h"
#endif

#define GROUP 32

struct pending {
	const struct cm_node *node;	/* next node to read */
	const struct cm_entry *entry;	/* or: the candidate entry to compare */
	unsigned depth;
};

static void prefetch(const void *p)
{
	__builtin_prefetch(p, 0, 3);
}

enum step_result { STEP_MORE, STEP_HIT, STEP_MISS };

static enum step_result finish(const struct cm_entry *e, void **value)
{
	*value = e != NULL ? e->value : NULL;
	return e != NULL ? STEP_HIT : STEP_MISS;
}

/* Advance one lookup by one node (or compare its candidate entry). */
static enum step_result step(struct pending *s, const struct cm_probe *p,
			     void **value)
{
	if (s->entry != NULL)
		return finish(cm_entry_matches(s->entry, p) ? s->entry : NULL,
			      value);

	const struct cm_node *n = s->node;

	if (s->depth == CM_COLLISION_DEPTH) {
		for (unsigned i = 0; i < n->datamap; i++)
			if (cm_entry_matches(&cm_node_entries(n)[i], p))
				return finish(&cm_node_entries(n)[i], value);
		return finish(NULL, value);
	}

	uint32_t bit = cm_bit(p->hash, s->depth);

	if (n->datamap & bit) {
		s->entry = &cm_node_entries(n)[cm_index(n->datamap, bit)];
		prefetch(s->entry);
		return STEP_MORE;
	}
	if (n->nodemap & bit) {
		s->node = cm_children(n)[cm_index(n->nodemap, bit)];
		s->depth++;
		prefetch(s->node);	/* and its next lines: see cm_node_find() */
		prefetch((const char *)s->node + 64);
		prefetch((const char *)s->node + 128);
		return STEP_MORE;
	}
	return finish(NULL, value);
}

static size_t lookup_group(const struct cowmap *m, size_t n,
			   const void *const keys[], const size_t lens[],
			   void *values[])
{
	struct cm_probe probes[GROUP];
	struct pending st[GROUP];
	unsigned active[GROUP], nactive = 0;
	size_t found = 0;

	for (size_t i = 0; i < n; i++) {
		values[i] = NULL;
		if (cm_check_key(keys[i], lens[i]) < 0)
			continue;
		cm_map_probe(m, &probes[i], keys[i], lens[i]);
		st[i] = (struct pending){ .node = m->root };
		active[nactive++] = (unsigned)i;
	}

	/* Round-robin: every unfinished lookup moves one level per round. */
	while (nactive > 0) {
		unsigned still = 0;

		for (unsigned k = 0; k < nactive; k++) {
			unsigned i = active[k];
			enum step_result r = step(&st[i], &probes[i], &values[i]);

			if (r == STEP_MORE)
				active[still++] = i;
			else if (r == STEP_HIT)
				found++;
		}
		nactive = still;
	}
	return found;
}

int LOOKUP_VARIANT(cm_get)(const struct cowmap *m, const void *key,
			   size_t len, void **value)
{
	struct cm_probe p;

	if (cm_check_key(key, len) < 0 || !cm_map_valid(m))
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

	if (!cm_map_valid(m) || (n > 0 && (keys == NULL || lens == NULL ||
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
