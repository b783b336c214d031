/*
 * hash.h - the built-in keyed hash and per-map seeds.
 */
#ifndef COWMAP_HASH_H
#define COWMAP_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * SipHash-1-3 of @key under a 128-bit key derived from @seed.  Keyed so
 * that an outsider who does not know the seed cannot choose keys that
 * collide; SipHash was designed for exactly this (hash-flooding) threat.
 */
uint64_t cm_hash_bytes(const void *key, size_t len, uint64_t seed);

/* A random seed from getrandom(); returns 0 on success, -errno on failure. */
int cm_random_seed(uint64_t *seed);

#endif
