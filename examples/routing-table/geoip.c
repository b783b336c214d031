/*
 * geoip.c - the prefixes of a legacy GeoIP country database.
 *
 * The file is a binary trie over the address bits, most significant bit
 * first, followed by a few bytes of trailer:
 *
 *   node i, at byte 6*i:   | left record (3 bytes) | right record (3 bytes) |
 *                            bit 0 goes left          bit 1 goes right
 *
 * A record is a little-endian 24-bit number.  Below COUNTRY_BEGIN it is the
 * index of the next node; at or above it the walk ends there: the record is
 * a leaf, COUNTRY_BEGIN + country id, and id 0 means "no country".  The
 * prefix of a leaf is the path to it: the bits chosen so far, and the depth
 * at which the record was read.  Node 0 is the root.
 *
 * The trailer ends with 0xff 0xff 0xff and a byte that names the edition
 * (1: IPv4 country, 12: IPv6 country) within the last 20 bytes.
 *
 * Both files are read whole (2 and 8 MB) and walked depth first with an
 * explicit stack no deeper than the address width.
 */
#include "geoip.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COUNTRY_BEGIN 16776960u
#define EDITION_COUNTRY 1
#define EDITION_COUNTRY_V6 12
#define NODE_BYTES 6

const char *geoip_file_name(unsigned width)
{
	return width == 32 ? "GeoIP.dat" : "GeoIPv6.dat";
}

static uint32_t record(const uint8_t *file, uint32_t node, unsigned bit)
{
	const uint8_t *p = file + (size_t)node * NODE_BYTES + 3 * bit;

	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
}

/* The edition byte of the trailer, or -1 when there is no trailer. */
static int edition(const uint8_t *file, size_t size)
{
	for (size_t back = 4; back <= 20 && back <= size; back++) {
		const uint8_t *p = file + size - back;

		if (p[0] == 0xff && p[1] == 0xff && p[2] == 0xff)
			return p[3];
	}
	return -1;
}

/*
 * The IPv4 copies in GeoIPv6.dat: IPv4-compatible (::/96), IPv4-mapped
 * (::ffff:0:0/96) and 6to4 (2002::/16) space.
 */
static int ipv4_copy(const uint8_t addr[16], unsigned len)
{
	static const uint8_t zero[10];

	if (len == 16)
		return addr[0] == 0x20 && addr[1] == 0x02;
	if (len != 96 || memcmp(addr, zero, 10) != 0)
		return 0;
	return (addr[10] == 0 && addr[11] == 0) ||
	       (addr[10] == 0xff && addr[11] == 0xff);
}

static long walk(struct rib *r, const uint8_t *file, size_t nodes)
{
	struct frame {
		uint32_t node;
		unsigned depth;		/* bits of addr chosen */
		uint8_t addr[RIB_MAX_BYTES];
	} stack[RIB_MAX_BYTES * 8 + 2];
	unsigned top = 0;
	long found = 0;

	stack[top++] = (struct frame){ .node = 0, .depth = 0 };
	while (top > 0) {
		struct frame f = stack[--top];

		if (f.node >= nodes)
			return -EINVAL;	/* a record points past the trie */
		/* Right first, so that the left half comes off the stack first. */
		for (int bit = 1; bit >= 0; bit--) {
			uint32_t rec = record(file, f.node, (unsigned)bit);
			struct frame child = f;

			child.depth = f.depth + 1;
			if (bit)
				child.addr[f.depth / 8] |= (uint8_t)(0x80u >> (f.depth % 8));
			if (r->width == 128 && ipv4_copy(child.addr, child.depth))
				continue;
			if (rec >= COUNTRY_BEGIN) {
				uint32_t country = rec - COUNTRY_BEGIN;

				if (country == 0)
					continue;
				if (rib_add(r, child.addr, child.depth, country) < 0)
					return -ENOMEM;
				found++;
			} else if (child.depth >= r->width) {
				return -EINVAL;	/* deeper than an address */
			} else {
				child.node = rec;
				stack[top++] = child;
			}
		}
	}
	return found;
}

long geoip_load(struct rib *r, const char *path)
{
	FILE *in = fopen(path, "rb");
	uint8_t *file = NULL;
	size_t size = 0, cap = 0;
	long rc;

	if (in == NULL)
		return -errno;
	for (;;) {
		if (size == cap) {
			size_t grown = cap ? 2 * cap : 1u << 20;
			uint8_t *p = realloc(file, grown);

			if (p == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			file = p;
			cap = grown;
		}

		size_t got = fread(file + size, 1, cap - size, in);

		size += got;
		if (got == 0)
			break;
	}
	if (ferror(in)) {
		rc = -EIO;
		goto out;
	}
	if (edition(file, size) !=
	    (r->width == 32 ? EDITION_COUNTRY : EDITION_COUNTRY_V6)) {
		rc = -EINVAL;
		goto out;
	}
	rc = walk(r, file, size / NODE_BYTES);
out:
	free(file);
	fclose(in);
	return rc;
}
