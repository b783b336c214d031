/*
 * prefix_lookup_impl.h - the read path of prefix tables:
 * cowmap_prefix_lookup() and cowmap_prefix_lookup_many().
 *
 * Included once per instruction-set variant, as lookup_impl.h is for maps
 * (prefix_lookup_generic.c, prefix_lookup_popcnt.c): two popcounts a
 * level are most of a cached lookup's instructions.
 *
 * The walk (prefix.c "The lookup"): at each node the slot's six bits
 * select a run, whose byte names the node's best prefix for the slot;
 * the deepest node that has one wins, and only its value is read.
 * Addresses of tables up to 64 bits wide are walked in one 64-bit word,
 * wider ones in 128 bits.
 *
 * A batch advances its addresses in rounds, one level per round, each
 * prefetching the child it goes to, so the misses of a group are in
 * flight together; the values of the answers are prefetched before
 * they are read, for the same reason.
 */
#include "lookup.h"
#include "prefix_edit.h"

#ifndef PFX_VARIANT
#error "define PFX_VARIANT(name) before including prefix_lookup_impl.h"
#endif

/*
 * The answer a node gives for @s, folded into the running best
 * (@bn, @bh, @bd: the answering node, the heap index of its prefix, the
 * depth); with @ask_value, the value of the answer is asked for at once.
 * @ask_value is a constant at every use, so each use compiles to one of
 * the two steps below.
 */
#define PFX_ANSWER(n, s, d, bn, bh, bd, ask_value)                           \
	do {                                                                 \
		unsigned h_ = cm_pn_best(n, s);                              \
		if (h_ != 0) {                                               \
			bn = (n);                                            \
			bh = h_;                                             \
			bd = (d);                                            \
			if (ask_value)                                       \
				__builtin_prefetch(&cm_pn_values(n)[         \
					cm_pfx_index((n)->pfxmap, h_)]);     \
		}                                                            \
	} while (0)

/*
 * The step of narrow tables (IPv4) asks for the value at once: it sits
 * after the node's children, often on a line of its own, and would
 * otherwise be the last miss of the walk, paid after all the others (a
 * quarter of a lookup's time on the GeoIP IPv4 table, measured with
 * perf).  A deeper answer makes the request useless, never wrong.
 */
#define PFX_STEP(n, s, d, bn, bh, bd) PFX_ANSWER(n, s, d, bn, bh, bd, 1)

/*
 * The same without asking for the value: for wide tables (IPv6).  Their
 * answer is almost always in the last node of the walk (GeoIP IPv6, random
 * hosts of its routes: 0.06 levels walked after the deepest answer, 3.5
 * answering nodes of 7.9 on the way), so the early request gains nothing
 * there and its index costs two popcounts and a branch at every node that
 * answers.  Measured in one process, alternating, minimum of 9 to 11
 * passes: single look-ups with a cached table 38.7 -> 34.9 ns; batches
 * faster in 7 of 8 runs, by 0 to 12% (65.6 -> 58.2 at best, 54.1 -> 54.4
 * at worst, ns an address); IPv4's answers are often above the last node
 * (0.15 levels after, answers mostly at depth 1 and 2 of 2.5), and
 * dropping the request there made batches slower (25.8 -> 28.2 ns).
 */
#define PFX_NOTE(n, s, d, bn, bh, bd) PFX_ANSWER(n, s, d, bn, bh, bd, 0)

/*
 * Going down to @n: its first three lines, where the maps, the runs and
 * the start of the children are.  Two lines (as at first) leave the child
 * pointer of a node with many children on a line asked for only once the
 * popcount has named it, a second miss in a row at that level: on GeoIP
 * IPv6, random hosts of its routes, 2.2 such lines a look-up (depth 2:
 * 0.66, 3: 0.88, 4: 0.32 of the nodes visited), on IPv4 1.35.  A third
 * line and PFX_NOTE together, against the read path before both, in one
 * process, alternating, minimum of 9 passes: IPv6
 * single 126.9 -> 88.8 and 88.8 -> 79.5 ns, batched 52.5 -> 51.3 and
 * 53.0 -> 47.3 ns; IPv4 unchanged within the noise (26.3 -> 24.2 single,
 * 25.3 -> 24.9 batched).  A fourth line measured no better.
 */
static inline void pfx_prefetch_node(const struct cm_pnode *n)
{
	__builtin_prefetch(n, 0, 3);
	__builtin_prefetch((const char *)n + 64, 0, 3);
	__builtin_prefetch((const char *)n + 128, 0, 3);
}

static inline int pfx_answer(const struct cm_pnode *bn, unsigned bh,
			     unsigned bd, void **value, unsigned *len)
{
	if (bn == NULL)
		return 0;
	if (value != NULL)
		*value = cm_pn_values(bn)[cm_pfx_index(bn->pfxmap, bh)];
	if (len != NULL)
		*len = CM_PFX_STRIDE * bd + cm_heap_rlen(bh);
	return 1;
}

static inline int walk64(const struct cm_pnode *n, uint64_t a, void **value,
			 unsigned *len)
{
	const struct cm_pnode *bn = NULL;
	unsigned bh = 0, bd = 0;

	/* @a is shifted six bits a level, so the slot is always its top six
	 * bits: a constant shift, where a shift by 6d of a 128-bit value
	 * takes several instructions and a branch. */
	for (unsigned d = 0;; d++, a <<= CM_PFX_STRIDE) {
		unsigned s = (unsigned)(a >> 58);
		uint64_t bit = UINT64_C(1) << s;

		PFX_STEP(n, s, d, bn, bh, bd);
		if (!(n->childmap & bit))
			break;
		n = cm_pn_children(n)[cm_popcount64(n->childmap & (bit - 1))];
		pfx_prefetch_node(n);
	}
	return pfx_answer(bn, bh, bd, value, len);
}

static inline int walk128(const struct cm_pnode *n, cm_addr a, void **value,
			  unsigned *len)
{
	const struct cm_pnode *bn = NULL;
	unsigned bh = 0, bd = 0;

	for (unsigned d = 0;; d++, a <<= CM_PFX_STRIDE) {
		unsigned s = (unsigned)(a >> (128 - CM_PFX_STRIDE));
		uint64_t bit = UINT64_C(1) << s;

		PFX_NOTE(n, s, d, bn, bh, bd);
		if (!(n->childmap & bit))
			break;
		n = cm_pn_children(n)[cm_popcount64(n->childmap & (bit - 1))];
		pfx_prefetch_node(n);
	}
	return pfx_answer(bn, bh, bd, value, len);
}

int PFX_VARIANT(cm_prefix_lookup)(const struct cowmap *t, const void *addr,
				  void **value, unsigned *len)
{
	if (!cm_prefix_valid(t) || addr == NULL)
		return -EINVAL;

	unsigned width = cm_pfx_width(t);

	if (width <= 64)
		return walk64(t->proot, cm_addr_load64(addr, width), value,
			      len);
	return walk128(t->proot, cm_addr_load(addr, width), value, len);
}

#define PFX_GROUP 16

/*
 * One group of addresses.  @narrow (a width of at most 64 bits) keeps the
 * addresses in 64 bits; the function is inlined into two callers with
 * @narrow constant, so each gets its own loop without the other's
 * arithmetic (GeoIP IPv4 in batches of 16, minimum of five alternating
 * runs: 31.3 -> 28.7 ns an address).
 */
static inline __attribute__((always_inline)) size_t
lookup_group(const struct cowmap *t, size_t n, const unsigned char *addrs,
	     size_t stride, void *values[], unsigned lens[], bool narrow)
{
	uint64_t a64[PFX_GROUP];
	cm_addr a128[PFX_GROUP];
	const struct cm_pnode *at[PFX_GROUP], *bn[PFX_GROUP];
	unsigned char bh[PFX_GROUP], bd[PFX_GROUP], active[PFX_GROUP];
	unsigned nactive = 0, width = cm_pfx_width(t);
	size_t found = 0;

	for (size_t i = 0; i < n; i++) {
		if (narrow)
			a64[i] = cm_addr_load64(addrs + i * stride, width);
		else
			a128[i] = cm_addr_load(addrs + i * stride, width);
		at[i] = t->proot;
		bn[i] = NULL;
		bh[i] = bd[i] = 0;
		active[nactive++] = (unsigned char)i;
	}
	for (unsigned d = 0; nactive > 0; d++) {
		unsigned still = 0;

		for (unsigned k = 0; k < nactive; k++) {
			unsigned i = active[k];
			const struct cm_pnode *node = at[i];
			unsigned s = narrow ? (unsigned)(a64[i] >> 58)
					    : (unsigned)(a128[i] >> 122);
			uint64_t bit = UINT64_C(1) << s;
			const struct cm_pnode *b = bn[i];
			unsigned h = bh[i], bdep = bd[i];

			if (narrow)
				PFX_STEP(node, s, d, b, h, bdep);
			else
				PFX_NOTE(node, s, d, b, h, bdep);
			bn[i] = b;
			bh[i] = (unsigned char)h;
			bd[i] = (unsigned char)bdep;
			if (node->childmap & bit) {
				at[i] = cm_pn_children(node)[cm_popcount64(
					node->childmap & (bit - 1))];
				if (narrow)
					a64[i] <<= CM_PFX_STRIDE;
				else
					a128[i] <<= CM_PFX_STRIDE;
				pfx_prefetch_node(at[i]);
				active[still++] = (unsigned char)i;
			}
		}
		nactive = still;
	}
	/* Wide tables ask for their answers' values here, all of them
	 * before the first is read (PFX_NOTE). */
	if (!narrow)
		for (size_t i = 0; i < n; i++)
			if (bn[i] != NULL)
				__builtin_prefetch(&cm_pn_values(bn[i])[cm_pfx_index(
					bn[i]->pfxmap, bh[i])]);
	for (size_t i = 0; i < n; i++) {
		void *v = NULL;
		unsigned len = 0;

		if (pfx_answer(bn[i], bh[i], bd[i], &v, &len))
			found++;
		values[i] = v;
		if (lens != NULL)
			lens[i] = len;
	}
	return found;
}

static size_t lookup_group64(const struct cowmap *t, size_t n,
			     const unsigned char *addrs, size_t stride,
			     void *values[], unsigned lens[])
{
	return lookup_group(t, n, addrs, stride, values, lens, true);
}

static size_t lookup_group128(const struct cowmap *t, size_t n,
			      const unsigned char *addrs, size_t stride,
			      void *values[], unsigned lens[])
{
	return lookup_group(t, n, addrs, stride, values, lens, false);
}

size_t PFX_VARIANT(cm_prefix_lookup_many)(const struct cowmap *t, size_t n,
					  const void *addrs, void *values[],
					  unsigned lens[])
{
	if (!cm_prefix_valid(t) || (n > 0 && (addrs == NULL || values == NULL))) {
		errno = EINVAL;
		return 0;
	}

	size_t stride = (cm_pfx_width(t) + 7) / 8, found = 0;
	const unsigned char *p = addrs;

	size_t (*group)(const struct cowmap *, size_t, const unsigned char *,
			size_t, void *[], unsigned[]) =
		cm_pfx_width(t) <= 64 ? lookup_group64 : lookup_group128;

	for (size_t i = 0; i < n; i += PFX_GROUP) {
		size_t g = n - i < PFX_GROUP ? n - i : PFX_GROUP;

		found += group(t, g, p + i * stride, stride, values + i,
			       lens != NULL ? lens + i : NULL);
	}
	return found;
}
