/*
 * prefix_lookup.c - cowmap_prefix_lookup() and cowmap_prefix_lookup_many():
 * the public names of the prefix read path, dispatching to the variant
 * this CPU runs best, on the flag lookup.c sets when the library is
 * loaded (cm_lookup_use_popcnt()).
 */
#include "cowmap.h"
#include "lookup.h"

int cowmap_prefix_lookup(const struct cowmap *t, const void *addr,
			 void **value, unsigned *len)
{
#if CM_LOOKUP_POPCNT
	if (cm_lookup_use_popcnt())
		return cm_prefix_lookup_popcnt(t, addr, value, len);
#endif
	return cm_prefix_lookup_generic(t, addr, value, len);
}

size_t cowmap_prefix_lookup_many(const struct cowmap *t, size_t n,
				 const void *addrs, void *values[],
				 unsigned lens[])
{
#if CM_LOOKUP_POPCNT
	if (cm_lookup_use_popcnt())
		return cm_prefix_lookup_many_popcnt(t, n, addrs, values, lens);
#endif
	return cm_prefix_lookup_many_generic(t, n, addrs, values, lens);
}
