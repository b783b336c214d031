/*
 * hash.c - SipHash-1-3 (Aumasson and Bernstein, "SipHash: a fast
 * short-input PRF", 2012), written from the paper's description, and the
 * per-map seed.
 *
 * One compression round and three finalisation rounds: the variant that
 * language runtimes adopted for hash tables, where the threat is flooding
 * rather than forgery.  The 64-bit map seed is stretched into the 128-bit
 * SipHash key with two rounds of the splitmix64 finaliser, so nearby seeds
 * give unrelated keys.
 */
#include "hash.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

static inline uint64_t rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const unsigned char *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline uint64_t splitmix64_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#define SIP_ROUND(v0, v1, v2, v3)                                            \
	do {                                                                 \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32); \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                     \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                     \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32); \
	} while (0)

struct cm_sipkey cm_sipkey_from_seed(uint64_t seed)
{
	struct cm_sipkey k;

	k.k0 = splitmix64_mix(seed + 0x9e3779b97f4a7c15ULL);
	k.k1 = splitmix64_mix(k.k0 ^ seed);
	return k;
}

uint64_t cm_hash_bytes(const void *key, size_t len, uint64_t seed)
{
	struct cm_sipkey k = cm_sipkey_from_seed(seed);

	return cm_hash_keyed(&k, key, len);
}

uint64_t cm_hash_keyed(const struct cm_sipkey *k, const void *key, size_t len)
{
	const unsigned char *p = key;
	/* The initial state constants are fixed by the SipHash specification. */
	uint64_t v0 = k->k0 ^ 0x736f6d6570736575ULL;
	uint64_t v1 = k->k1 ^ 0x646f72616e646f6dULL;
	uint64_t v2 = k->k0 ^ 0x6c7967656e657261ULL;
	uint64_t v3 = k->k1 ^ 0x7465646279746573ULL;
	size_t whole = len & ~(size_t)7;
	uint64_t last = (uint64_t)len << 56;
	size_t i;

	for (i = 0; i < whole; i += 8) {
		uint64_t m = load_le64(p + i);

		v3 ^= m;
		SIP_ROUND(v0, v1, v2, v3);
		v0 ^= m;
	}
	last |= cm_load_le_upto8(p + whole, len & 7);

	v3 ^= last;
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= last;

	v2 ^= 0xff;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

int cm_random_seed(uint64_t *seed)
{
	ssize_t got;

	do
		got = getrandom(seed, sizeof(*seed), 0);
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof(*seed))
		return got < 0 ? -errno : -EIO;
	return 0;
}
