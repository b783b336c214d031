/*
 * routes.h - route files as `ip route` prints them, and the next hops they
 * name.  The format is defined in routing-table's usage text (--help).
 */
#ifndef ROUTES_H
#define ROUTES_H

#include "rib.h"

#include <stddef.h>
#include <stdint.h>

/* Next hops as the route file spelled them, each text once. */
struct nexthops {
	char **text;
	size_t n, cap;
	uint32_t *slot;		/* open addressing: index + 1, 0 = empty */
	size_t nslots;
};

/* The index of next hop @text in @hops, added if new; -1 out of memory. */
long nexthop_intern(struct nexthops *hops, const char *text);
void nexthops_free(struct nexthops *hops);

/*
 * route_file_read - read the route file @path into @out (overwritten,
 * in address order; route[i].hop is the index of the route's next hop in
 * @hops).  Returns 0, or -1 after printing "routing-table: FILE:LINE:
 * reason" (a malformed line, a prefix given twice, a file of no routes or
 * of both families) or why the file cannot be read; @out is not touched.
 */
int route_file_read(struct rib *out, struct nexthops *hops, const char *path);

/*
 * route_file_write - write @r to @path, one line per route, next hops
 * named by rib_hop_text(), after a comment line that says @origin.
 * Returns EXIT_SUCCESS or EXIT_FAILURE (after saying why).
 */
int route_file_write(const struct rib *r, const char *path,
		     const char *origin);

/* The name of next hop id @hop of rib.c (a country, gateway, aggregate). */
void rib_hop_text(char buf[64], unsigned width, uint32_t hop);

/* An address of either family into @addr: 4 or 6, or 0 if it is neither. */
int parse_addr(const char *text, uint8_t addr[RIB_MAX_BYTES]);

/* AF_INET for width 32, AF_INET6 for 128. */
int family_of(unsigned width);

/* "PREFIX/LEN" of @addr/@len, the address as inet_ntop() writes it. */
void format_prefix(char buf[64], unsigned width, const uint8_t *addr,
		   unsigned len);

#endif /* ROUTES_H */
