/*
 * lookup.h - the variants of the read path and how one is chosen.
 *
 * cowmap_get() and cowmap_get_many() are compiled twice: generic, and on
 * x86-64 with GCC also with the popcnt instruction.  lookup.c's public
 * functions branch to the best variant the CPU supports, on a flag set
 * once when the library is loaded.
 */
#ifndef COWMAP_LOOKUP_H
#define COWMAP_LOOKUP_H

#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
	!defined(__POPCNT__) && defined(__ELF__)
#define CM_LOOKUP_POPCNT 1
#else
#define CM_LOOKUP_POPCNT 0
#endif

struct cowmap;

int cm_get_generic(const struct cowmap *m, const void *key, size_t len,
		   void **value);
size_t cm_get_many_generic(const struct cowmap *m, size_t n,
			   const void *const keys[], const size_t lens[],
			   void *values[]);
/* The prefix read path's variants (prefix_lookup_impl.h). */
int cm_prefix_lookup_generic(const struct cowmap *t, const void *addr,
			     void **value, unsigned *len);
size_t cm_prefix_lookup_many_generic(const struct cowmap *t, size_t n,
				     const void *addrs, void *values[],
				     unsigned lens[]);
#if CM_LOOKUP_POPCNT
#include <stdbool.h>

int cm_prefix_lookup_popcnt(const struct cowmap *t, const void *addr,
			    void **value, unsigned *len);
size_t cm_prefix_lookup_many_popcnt(const struct cowmap *t, size_t n,
				    const void *addrs, void *values[],
				    unsigned lens[]);

/* Does this CPU have popcnt (set when the library is loaded)?  The prefix
 * read path (prefix_lookup.c) picks its variant by it too. */
bool cm_lookup_use_popcnt(void);
int cm_get_popcnt(const struct cowmap *m, const void *key, size_t len,
		  void **value);
size_t cm_get_many_popcnt(const struct cowmap *m, size_t n,
			  const void *const keys[], const size_t lens[],
			  void *values[]);
#endif

#endif
