/*
 * rib.c - lists of routes: sorting, lookup by prefix, covering aggregates,
 * synthetic tables and query addresses.  See rib.h.
 */
#include "rib.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void rib_init(struct rib *r, unsigned width)
{
	*r = (struct rib){ .width = width };
}

void rib_free(struct rib *r)
{
	free(r->route);
	*r = (struct rib){ .width = r->width };
}

uint64_t rib_random(uint64_t *state)
{
	*state ^= *state >> 12;
	*state ^= *state << 25;
	*state ^= *state >> 27;
	return *state * UINT64_C(2685821657736338717);
}

/* Clear the bits of @addr (@bytes long) past the first @len. */
static void mask_to(uint8_t *addr, unsigned bytes, unsigned len)
{
	for (unsigned i = 0; i < bytes; i++) {
		if (len >= 8 * (i + 1))
			continue;
		addr[i] &= len > 8 * i ? (uint8_t)(0xff00u >> (len - 8 * i)) : 0;
	}
}

int rib_add(struct rib *r, const uint8_t *addr, unsigned len, uint32_t hop)
{
	if (len > r->width)
		return -EINVAL;
	if (r->n == r->cap) {
		size_t cap = r->cap ? 2 * r->cap : 1024;
		struct rib_route *grown = realloc(r->route, cap * sizeof(*grown));

		if (grown == NULL)
			return -ENOMEM;
		r->route = grown;
		r->cap = cap;
	}

	struct rib_route *e = &r->route[r->n++];

	memset(e, 0, sizeof(*e));
	memcpy(e->addr, addr, rib_bytes(r));
	mask_to(e->addr, rib_bytes(r), len);
	e->len = (uint8_t)len;
	e->hop = hop;
	return 0;
}

static int by_prefix(const void *a, const void *b)
{
	const struct rib_route *x = a, *y = b;
	int c = memcmp(x->addr, y->addr, RIB_MAX_BYTES);

	return c ? c : (x->len > y->len) - (x->len < y->len);
}

void rib_sort(struct rib *r)
{
	qsort(r->route, r->n, sizeof(*r->route), by_prefix);
}

size_t rib_sort_unique(struct rib *r)
{
	size_t kept = 0;

	/* qsort is not stable: among duplicates, "first" is any one. */
	rib_sort(r);
	for (size_t i = 0; i < r->n; i++)
		if (kept == 0 || by_prefix(&r->route[kept - 1], &r->route[i]) != 0)
			r->route[kept++] = r->route[i];

	size_t dropped = r->n - kept;

	r->n = kept;
	return dropped;
}

long rib_find(const struct rib *r, const uint8_t *addr, unsigned len)
{
	struct rib_route key = { .len = (uint8_t)len };
	size_t lo = 0, hi = r->n;

	memcpy(key.addr, addr, rib_bytes(r));
	mask_to(key.addr, rib_bytes(r), len);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = by_prefix(&r->route[mid], &key);

		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static uint32_t hash_prefix(const uint8_t *addr, unsigned bytes, unsigned len)
{
	uint64_t h = 0x9e3779b97f4a7c15u ^ len;

	for (unsigned i = 0; i < bytes; i++) {
		h = (h ^ addr[i]) * 0x100000001b3u;
		h ^= h >> 29;
	}
	return (uint32_t)(h ^ (h >> 32));
}

long rib_add_aggregates(struct rib *r)
{
	static const unsigned levels4[] = { 8, 12, 16 }, levels6[] = { 16, 24, 32 };
	const unsigned *levels = r->width == 32 ? levels4 : levels6;
	const unsigned bytes = rib_bytes(r);
	size_t before;
	long added = 0;

	rib_sort_unique(r);
	before = r->n;
	for (unsigned l = 0; l < 3; l++) {
		unsigned level = levels[l];
		uint8_t last[RIB_MAX_BYTES];
		int have_last = 0;

		/*
		 * The original routes are sorted, so the blocks that hold them
		 * come in order too: one comparison with the previous block
		 * is enough to add each once.
		 */
		for (size_t i = 0; i < before; i++) {
			uint8_t block[RIB_MAX_BYTES];

			if (r->route[i].len <= level)
				continue;
			memcpy(block, r->route[i].addr, bytes);
			mask_to(block, bytes, level);
			if (have_last && memcmp(block, last, bytes) == 0)
				continue;
			memcpy(last, block, bytes);
			have_last = 1;

			struct rib old = { .width = r->width, .n = before,
					   .route = r->route };

			if (rib_find(&old, block, level) >= 0)
				continue;

			uint32_t hop = RIB_HOP_AGGREGATE +
				       hash_prefix(block, bytes, level) %
					       RIB_AGGREGATE_HOPS;

			if (rib_add(r, block, level, hop) < 0) {
				rib_sort_unique(r);
				return -ENOMEM;
			}
			added++;
		}
	}
	rib_sort_unique(r);
	return added;
}

/* A prefix length drawn from @weights ({length, weight} pairs, 0-ended). */
static unsigned pick_len(const unsigned (*weights)[2], uint64_t x)
{
	unsigned total = 0;

	for (unsigned i = 0; weights[i][0]; i++)
		total += weights[i][1];

	unsigned pick = (unsigned)(x % total), i = 0;

	while (pick >= weights[i][1])
		pick -= weights[i++][1];
	return weights[i][0];
}

int rib_generate(struct rib *r, size_t n, uint64_t seed)
{
	/* Shaped after public BGP tables: per mille of the routes. */
	static const unsigned weights4[][2] = {
		{ 8, 1 },    { 10, 1 },   { 12, 2 },   { 13, 2 },  { 14, 4 },
		{ 15, 6 },   { 16, 30 },  { 17, 15 },  { 18, 25 }, { 19, 40 },
		{ 20, 50 },  { 21, 60 },  { 22, 120 }, { 23, 100 }, { 24, 544 },
		{ 0, 0 } };
	static const unsigned weights6[][2] = {
		{ 29, 50 },  { 32, 200 }, { 33, 10 },  { 36, 50 }, { 40, 60 },
		{ 44, 80 },  { 46, 30 },  { 47, 30 },  { 48, 450 }, { 56, 20 },
		{ 64, 20 },  { 0, 0 } };
	/* Eight gateways, the first ones carrying most routes. */
	static const unsigned gw_weight[8] = { 30, 20, 15, 10, 10, 5, 5, 5 };
	uint64_t rng = seed ? seed : 1;
	size_t target = r->n + n;

	while (r->n < target) {
		while (r->n < target) {
			uint8_t addr[RIB_MAX_BYTES];
			uint64_t x = rib_random(&rng), y = rib_random(&rng);
			unsigned len, pick = (unsigned)(y % 100), g = 0;

			memcpy(addr, &x, 8);
			memcpy(addr + 8, &y, 8);
			if (r->width == 32) {
				/* Unicast space, without 10/8 and 127/8. */
				addr[0] = (uint8_t)(1 + addr[0] % 223);
				if (addr[0] == 10 || addr[0] == 127)
					continue;
				len = pick_len(weights4, x >> 32);
			} else {
				/*
				 * Inside one of n/16 allocations (the first 32
				 * bits), so that the /48s of one network share
				 * its /32 as in a real table.
				 */
				uint64_t alloc = 2 * (seed ^ ((x >> 40) % (n / 16 + 1))) + 1;
				uint32_t top = (uint32_t)(rib_random(&alloc) >> 32);

				addr[0] = (uint8_t)(0x20 | ((top >> 24) & 0x1f));
				addr[1] = (uint8_t)(top >> 16);
				addr[2] = (uint8_t)(top >> 8);
				addr[3] = (uint8_t)top;
				len = pick_len(weights6, x >> 32);
			}
			while (pick >= gw_weight[g])
				pick -= gw_weight[g++];
			if (rib_add(r, addr, len, RIB_HOP_GATEWAY + 1 + g) < 0)
				return -ENOMEM;
		}
		rib_sort_unique(r);	/* the few duplicates are drawn again */
	}
	return 0;
}

void rib_random_addresses(const struct rib *r, uint8_t *out, size_t n,
			  int inside, uint64_t seed)
{
	const unsigned bytes = rib_bytes(r);
	uint64_t rng = seed ? seed : 1;

	for (size_t i = 0; i < n; i++) {
		uint8_t *a = out + i * bytes;
		uint64_t x = rib_random(&rng), y = rib_random(&rng);
		uint8_t host[RIB_MAX_BYTES];

		memcpy(host, &x, 8);
		memcpy(host + 8, &y, 8);
		if (!inside || r->n == 0) {
			memcpy(a, host, bytes);
			continue;
		}

		const struct rib_route *e = &r->route[rib_random(&rng) % r->n];

		/* The route's bits, then random host bits. */
		for (unsigned b = 0; b < bytes; b++) {
			unsigned keep = e->len >= 8 * (b + 1) ? 8
					: e->len > 8 * b ? e->len - 8 * b : 0;
			uint8_t net = (uint8_t)(0xff00u >> keep);

			a[b] = (uint8_t)((e->addr[b] & net) | (host[b] & ~net));
		}
	}
}
