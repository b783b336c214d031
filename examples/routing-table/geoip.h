/*
 * geoip.h - real address allocations from the legacy GeoIP country
 * databases (Debian's geoip-database: GeoIP.dat for IPv4, GeoIPv6.dat for
 * IPv6), as routes whose next hop is the country id.
 */
#ifndef GEOIP_H
#define GEOIP_H

#include "rib.h"

/* Where geoip-database installs the files; programs let the user override. */
#define GEOIP_DEFAULT_DIR "/usr/share/GeoIP"

/* The file name of @width's database in GEOIP_DEFAULT_DIR or another. */
const char *geoip_file_name(unsigned width);	/* "GeoIP.dat", "GeoIPv6.dat" */

/*
 * geoip_load - add to @r every prefix the database at @path assigns a
 * country, with the country id (1..255) as next hop.  @r->width chooses
 * the database: 32 reads a country edition (GeoIP.dat), 128 a country v6
 * edition (GeoIPv6.dat), of which only the native IPv6 prefixes are taken:
 * the copies of the IPv4 tree that file keeps under ::/96, ::ffff:0:0/96
 * and 2002::/16 are skipped.  The prefixes do not overlap.
 *
 * Returns the number of prefixes added, or a negative errno: -ENOENT and
 * the others of fopen() when the file cannot be read, -EINVAL when it is
 * not a database of the expected edition or its trie is damaged, -ENOMEM.
 * On failure @r may hold some of the prefixes.
 */
long geoip_load(struct rib *r, const char *path);

#endif /* GEOIP_H */
