/*
 * hash.h - the built-in keyed hash and per-map seeds.
 */
#ifndef COWMAP_HASH_H
#define COWMAP_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The 128-bit SipHash key, derived once from a map's 64-bit seed. */
struct cm_sipkey {
	uint64_t k0, k1;
};

struct cm_sipkey cm_sipkey_from_seed(uint64_t seed);

/*
 * SipHash-1-3 of @key under @k.  Keyed so that an outsider who does not
 * know the seed cannot choose keys that collide; SipHash was designed for
 * exactly this (hash-flooding) threat.
 */
uint64_t cm_hash_keyed(const struct cm_sipkey *k, const void *key, size_t len);

/* The same under the key derived from @seed (derives it on every call). */
uint64_t cm_hash_bytes(const void *key, size_t len, uint64_t seed);

/*
 * Bytes 0..n-1 of @p (n <= 8) as a little-endian number.  Two overlapping
 * fixed-size loads instead of a loop or a variable-length copy: key tails
 * are read this way on every lookup.
 */
static inline uint64_t cm_load_le_upto8(const unsigned char *p, size_t n)
{
	uint32_t a, b;

	if (n >= 4) {
		memcpy(&a, p, 4);
		memcpy(&b, p + n - 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
		a = __builtin_bswap32(a);
		b = __builtin_bswap32(b);
#endif
		return a | (uint64_t)b << (8 * (n - 4));
	}
	if (n == 0)
		return 0;
	return p[0] | (uint64_t)p[n / 2] << (8 * (n / 2)) |
	       (uint64_t)p[n - 1] << (8 * (n - 1));
}

/* A random seed from getrandom(); returns 0 on success, -errno on failure. */
int cm_random_seed(uint64_t *seed);

#endif
