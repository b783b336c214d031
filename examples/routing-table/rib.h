/*
 * rib.h - a list of routes (prefix, length, next hop id) of one address
 * family, and the ways of filling one: real allocations read from the
 * GeoIP country databases (geoip.h), a synthetic table, and covering
 * aggregates that make the prefixes nest as they do in a real RIB.
 *
 * Shared by examples/routing-table and bench/lpm-bench.  Plain C, no
 * cowmap: the list is what both programs load into their tables.
 */
#ifndef RIB_H
#define RIB_H

#include <stddef.h>
#include <stdint.h>

#define RIB_MAX_BYTES 16	/* an IPv6 address */

/*
 * Next hop ids say where a route came from, so that a program can name
 * the next hop (see routing-table's hop_text()):
 *   1..255             a GeoIP country id (the database's own numbering)
 *   RIB_HOP_GATEWAY+k  gateway k (1..8) of a synthetic table
 *   RIB_HOP_AGGREGATE+k  the k-th (0..RIB_AGGREGATE_HOPS-1) next hop of the
 *                      covering aggregates
 */
#define RIB_HOP_GATEWAY 0x100u
#define RIB_HOP_AGGREGATE 0x200u
#define RIB_AGGREGATE_HOPS 16u

struct rib_route {
	uint8_t addr[RIB_MAX_BYTES];	/* network order; bits past len are 0 */
	uint8_t len;
	uint32_t hop;
};

struct rib {
	unsigned width;		/* 32 (IPv4) or 128 (IPv6) */
	size_t n, cap;
	struct rib_route *route;
};

/* An empty list of @width-bit routes.  rib_free() releases it. */
void rib_init(struct rib *r, unsigned width);
void rib_free(struct rib *r);

/* Bytes of one address: 4 or 16. */
static inline unsigned rib_bytes(const struct rib *r)
{
	return r->width / 8;
}

/*
 * rib_add - append @addr/@len with next hop @hop.  Bits of @addr past @len
 * are cleared.  Duplicates are not looked for (rib_sort_unique() drops
 * them).  Returns 0, or -ENOMEM with the list unchanged.
 */
int rib_add(struct rib *r, const uint8_t *addr, unsigned len, uint32_t hop);

/* rib_sort - sort in address order, a shorter prefix before the longer
 * ones it covers; routes for the same prefix end up side by side. */
void rib_sort(struct rib *r);

/*
 * rib_sort_unique - sort in address order, a shorter prefix before the
 * longer ones it covers, and keep the first of several routes for one
 * prefix.  Returns the number of duplicates dropped.
 */
size_t rib_sort_unique(struct rib *r);

/* Index of @addr/@len (masked) in a sorted list, or -1. */
long rib_find(const struct rib *r, const uint8_t *addr, unsigned len);

/*
 * rib_add_aggregates - for every block of length 8, 12 or 16 (IPv4; 16,
 * 24 or 32 for IPv6) that holds a longer route and is not a route itself,
 * add a route for the block, with one of RIB_AGGREGATE_HOPS next hops
 * chosen by a hash of the block.  A lookup that falls between the routes of
 * the block then matches the aggregate, and every route under it is a
 * more specific one, as in a table of announcements from several peers.
 * Leaves the list sorted.  Returns the number added, or -ENOMEM (the list
 * then holds the routes it had, sorted).
 */
long rib_add_aggregates(struct rib *r);

/*
 * rib_generate - add @n distinct random routes with prefix lengths spread
 * like those of a real table (IPv4: mostly /24, /22, /16...; IPv6 inside
 * 2000::/3: mostly /48, /32, /29...) and next hops RIB_HOP_GATEWAY + 1..8,
 * the first gateways carrying most routes.  Deterministic for a @seed.
 * Leaves the list sorted and unique.  Returns 0 or -ENOMEM.
 */
int rib_generate(struct rib *r, size_t n, uint64_t seed);

/*
 * rib_random_addresses - fill @out with @n addresses (rib_bytes() each,
 * packed, network order).  @inside 0: uniformly random addresses; 1: each
 * a random host of a random route (for IPv6, where random addresses would
 * almost all miss at the first byte).
 */
void rib_random_addresses(const struct rib *r, uint8_t *out, size_t n,
			  int inside, uint64_t seed);

/* xorshift64*: the generator behind the functions above. */
uint64_t rib_random(uint64_t *state);

#endif /* RIB_H */
