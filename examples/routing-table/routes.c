/*
 * routes.c - reading and writing route files; interning next hops.
 *
 * A route file holds one route per line as `ip route` prints them:
 *
 *       [TYPE] DEST [via GATEWAY] [dev DEVICE] [ATTRIBUTE VALUE | FLAG]...
 *
 * parse_route() takes one line apart; route_file_read() checks the file
 * as a whole (one family, each prefix once) and sorts the routes.  The
 * next hop of a route is kept as text, "via GATEWAY dev DEVICE" as the
 * file spelled it, so that answers can be printed as the file said them.
 */
#include "routes.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash_text(const char *s)	/* FNV-1a */
{
	uint32_t h = 2166136261u;

	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

int family_of(unsigned width)
{
	return width == 32 ? AF_INET : AF_INET6;
}

void format_prefix(char buf[64], unsigned width, const uint8_t *addr,
			  unsigned len)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(family_of(width), addr, ip, sizeof(ip));
	snprintf(buf, 64, "%s/%u", ip, len);
}

/* ------------------------------------------------------------------ */
/* Next hops                                                           */
/* ------------------------------------------------------------------ */

long nexthop_intern(struct nexthops *hops, const char *text)
{
	if (2 * (hops->n + 1) > hops->nslots) {	/* keep the slots half empty */
		size_t nslots = hops->nslots ? 2 * hops->nslots : 1024;
		uint32_t *slot = calloc(nslots, sizeof(*slot));

		if (slot == NULL)
			return -1;
		for (size_t i = 0; i < hops->n; i++) {
			size_t s = hash_text(hops->text[i]) & (nslots - 1);

			while (slot[s])
				s = (s + 1) & (nslots - 1);
			slot[s] = (uint32_t)i + 1;
		}
		free(hops->slot);
		hops->slot = slot;
		hops->nslots = nslots;
	}

	size_t s = hash_text(text) & (hops->nslots - 1);

	for (; hops->slot[s]; s = (s + 1) & (hops->nslots - 1))
		if (strcmp(hops->text[hops->slot[s] - 1], text) == 0)
			return (long)hops->slot[s] - 1;
	if (hops->n == hops->cap) {
		size_t cap = hops->cap ? 2 * hops->cap : 64;
		char **grown = realloc(hops->text, cap * sizeof(*grown));

		if (grown == NULL)
			return -1;
		hops->text = grown;
		hops->cap = cap;
	}
	hops->text[hops->n] = strdup(text);
	if (hops->text[hops->n] == NULL)
		return -1;
	hops->slot[s] = (uint32_t)hops->n + 1;
	return (long)hops->n++;
}

void nexthops_free(struct nexthops *hops)
{
	for (size_t i = 0; i < hops->n; i++)
		free(hops->text[i]);
	free(hops->text);
	free(hops->slot);
}

/*
 * A country is a device (as if each had its tunnel), the gateways of a
 * synthetic table and the aggregates have documentation addresses.
 */
void rib_hop_text(char buf[64], unsigned width, uint32_t hop)
{
	bool v4 = width == 32;

	if (hop >= RIB_HOP_AGGREGATE)
		snprintf(buf, 64, v4 ? "via 192.0.2.%u dev eth9"
				     : "via 2001:db8:ffff::%u dev eth9",
			 hop - RIB_HOP_AGGREGATE + 1);
	else if (hop >= RIB_HOP_GATEWAY)
		snprintf(buf, 64, v4 ? "via 198.51.100.%u dev eth%u"
				     : "via 2001:db8::%u dev eth%u",
			 hop - RIB_HOP_GATEWAY, (hop - RIB_HOP_GATEWAY - 1) / 2);
	else
		snprintf(buf, 64, "dev geo%u", hop);	/* a GeoIP country */
}

/* ------------------------------------------------------------------ */
/* Route files                                                         */
/* ------------------------------------------------------------------ */

int route_file_write(const struct rib *r, const char *path,
		     const char *origin)
{
	FILE *out = fopen(path, "w");

	if (out == NULL) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		return EXIT_FAILURE;
	}
	fprintf(out, "# %zu %s routes: %s\n", r->n,
		r->width == 32 ? "IPv4" : "IPv6", origin);
	for (size_t i = 0; i < r->n; i++) {
		char prefix[64], hop[64];

		format_prefix(prefix, r->width, r->route[i].addr, r->route[i].len);
		rib_hop_text(hop, r->width, r->route[i].hop);
		fprintf(out, "%s %s\n", prefix, hop);
	}
	if (fclose(out) != 0) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		return EXIT_FAILURE;
	}
	printf("routing-table: wrote %zu routes to %s\n", r->n, path);
	return EXIT_SUCCESS;
}

int parse_addr(const char *text, uint8_t addr[RIB_MAX_BYTES])
{
	memset(addr, 0, RIB_MAX_BYTES);
	if (inet_pton(AF_INET, text, addr) == 1)
		return 4;
	if (inet_pton(AF_INET6, text, addr) == 1)
		return 6;
	return 0;
}

static bool host_bits_zero(const uint8_t *addr, unsigned bytes, unsigned len)
{
	for (unsigned i = 0; i < bytes; i++) {
		unsigned keep = len >= 8 * (i + 1) ? 8 : len > 8 * i ? len - 8 * i : 0;

		if (addr[i] & (uint8_t)~(0xff00u >> keep))
			return false;
	}
	return true;
}

static bool is_one_of(const char *word, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(word, *list) == 0)
			return true;
	return false;
}

/*
 * One route line, split into words (at most 32).  @family is 0 until a
 * line has named an address, then 4 or 6.  Fills @addr/@len and the next
 * hop's text; returns NULL or what is wrong with the line.
 */
static const char *parse_route(char *line, int *family,
			       uint8_t addr[RIB_MAX_BYTES], unsigned *len,
			       char *hop, size_t hop_size)
{
	static const char *const types[] = { "blackhole", "unreachable",
					     "prohibit", NULL };
	static const char *const attributes[] = { "proto", "scope", "src",
		"metric", "table", "mtu", "weight", "pref", "advmss", "realm",
		"expires", NULL };
	static const char *const flags[] = { "onlink", "linkdown", NULL };
	char *word[32];
	unsigned n = 0, w = 0;
	int line_family = 0;
	bool next_hop = false;

	for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
		if (n == 32)
			return "too many words";
		word[n++] = tok;
	}
	hop[0] = '\0';
	if (n > 0 && strcmp(word[0], "unicast") == 0)
		w++;
	else if (n > 0 && is_one_of(word[0], types)) {
		snprintf(hop, hop_size, "%s", word[0]);
		next_hop = true;
		w++;
	}
	if (w == n)
		return "expected a destination";

	/* The destination. */
	char *dest = word[w++], *slash = strchr(dest, '/');

	if (strcmp(dest, "default") == 0) {
		memset(addr, 0, RIB_MAX_BYTES);
		*len = 0;
	} else {
		if (slash)
			*slash = '\0';
		line_family = parse_addr(dest, addr);
		if (line_family == 0)
			return "bad destination address";

		unsigned width = line_family == 4 ? 32 : 128;

		*len = width;
		if (slash) {
			char *end;
			unsigned long l = strtoul(slash + 1, &end, 10);

			if (slash[1] < '0' || slash[1] > '9' || *end || l > width)
				return "bad prefix length";
			*len = (unsigned)l;
		}
		if (!host_bits_zero(addr, width / 8, *len))
			return "host bits set in the prefix";
	}

	/* The next hop and the attributes. */
	while (w < n) {
		const char *key = word[w++], *value = w < n ? word[w] : NULL;
		size_t used = strlen(hop);

		if (strcmp(key, "via") == 0 || strcmp(key, "dev") == 0) {
			if (value == NULL)
				return strcmp(key, "via") == 0
					? "via without a gateway"
					: "dev without a device";
			if (strcmp(key, "via") == 0) {
				uint8_t gw[RIB_MAX_BYTES];
				int f = parse_addr(value, gw);

				if (f == 0)
					return "bad gateway address";
				if (line_family && f != line_family)
					return "gateway of the other address family";
				line_family = f;
			}
			if (used + strlen(key) + strlen(value) + 3 > hop_size)
				return "next hop too long";
			snprintf(hop + used, hop_size - used, "%s%s %s",
				 used ? " " : "", key, value);
			next_hop = true;
			w++;
		} else if (is_one_of(key, attributes)) {
			if (value == NULL)
				return "attribute without a value";
			w++;
		} else if (!is_one_of(key, flags)) {
			return "unknown word (see the route file format in --help)";
		}
	}
	if (!next_hop)
		return "no next hop (via GATEWAY or dev DEVICE)";
	if (line_family && *family && line_family != *family)
		return *family == 4 ? "an IPv6 route in an IPv4 file"
				    : "an IPv4 route in an IPv6 file";
	if (line_family)
		*family = line_family;
	return NULL;
}

int route_file_read(struct rib *out, struct nexthops *hops, const char *path)
{
	struct line_info {
		unsigned line;
		uint32_t hop;
	} *info = NULL;
	FILE *in = fopen(path, "r");
	char *line = NULL, hop[256];
	size_t size = 0, info_cap = 0;
	unsigned lineno = 0;
	int family = 0;
	const char *why = NULL;
	struct rib all;

	if (in == NULL) {
		fprintf(stderr, "routing-table: %s: %s\n", path, strerror(errno));
		return -1;
	}
	/*
	 * 16-byte addresses until the file says which family it is ("default"
	 * has none); route[i].hop is the index of its line in info[] until
	 * the routes are sorted.
	 */
	rib_init(&all, 128);
	while (getline(&line, &size, in) >= 0) {
		char *text = line + strspn(line, " \t");
		uint8_t addr[RIB_MAX_BYTES];
		unsigned len;
		long h;

		lineno++;
		if (*text == '#' || *text == '\n' || *text == '\0')
			continue;
		why = parse_route(text, &family, addr, &len, hop, sizeof(hop));
		if (why)
			break;
		if (all.n == info_cap) {
			size_t cap = info_cap ? 2 * info_cap : 4096;
			struct line_info *grown = realloc(info, cap * sizeof(*grown));

			if (grown == NULL) {
				why = "out of memory";
				break;
			}
			info = grown;
			info_cap = cap;
		}
		h = nexthop_intern(hops, hop);
		if (h < 0 || rib_add(&all, addr, len, (uint32_t)all.n) < 0) {
			why = "out of memory";
			break;
		}
		info[all.n - 1] = (struct line_info){ lineno, (uint32_t)h };
	}
	free(line);
	fclose(in);
	if (why == NULL && all.n == 0)
		why = "no routes";
	if (why == NULL) {
		all.width = family == 6 ? 128 : 32;
		rib_sort(&all);
		for (size_t i = 1; i < all.n; i++) {
			const struct rib_route *a = &all.route[i - 1], *b = &all.route[i];

			if (a->len != b->len || memcmp(a->addr, b->addr, RIB_MAX_BYTES))
				continue;

			unsigned first = info[a->hop].line, second = info[b->hop].line;
			char prefix[64];

			format_prefix(prefix, all.width, a->addr, a->len);
			fprintf(stderr, "routing-table: %s:%u: %s already at line %u\n",
				path, first > second ? first : second, prefix,
				first < second ? first : second);
			free(info);
			rib_free(&all);
			return -1;
		}
	}
	if (why) {
		fprintf(stderr, "routing-table: %s:%u: %s\n", path, lineno, why);
		free(info);
		rib_free(&all);
		return -1;
	}
	for (size_t i = 0; i < all.n; i++)
		all.route[i].hop = info[all.route[i].hop].hop;
	free(info);
	*out = all;
	return 0;
}
