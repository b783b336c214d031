/*
 * lookup.c - cowmap_get() and cowmap_get_many(): the public names of the
 * read path, dispatching to the variant this CPU runs best (lookup.h).
 *
 * A flag set by a constructor picks the variant: a predictable branch and
 * a direct tail call.  (A GNU indirect function would save the branch, but
 * libtool's symbol export list does not see such symbols.)  Until the
 * constructor has run - another library's constructor calling in, say -
 * the generic variant answers, which is only slower.
 */
#include "cowmap.h"
#include "lookup.h"

#include <stdbool.h>

#if CM_LOOKUP_POPCNT
#include <cpuid.h>

static bool use_popcnt;

__attribute__((constructor)) static void pick_variant(void)
{
	unsigned a, b, c, d;

	use_popcnt = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_POPCNT) != 0;
}

bool cm_lookup_use_popcnt(void)
{
	return use_popcnt;
}
#endif

int cowmap_get(const struct cowmap *m, const void *key, size_t len,
	       void **value)
{
#if CM_LOOKUP_POPCNT
	if (use_popcnt)
		return cm_get_popcnt(m, key, len, value);
#endif
	return cm_get_generic(m, key, len, value);
}

size_t cowmap_get_many(const struct cowmap *m, size_t n,
		       const void *const keys[], const size_t lens[],
		       void *values[])
{
#if CM_LOOKUP_POPCNT
	if (use_popcnt)
		return cm_get_many_popcnt(m, n, keys, lens, values);
#endif
	return cm_get_many_generic(m, n, keys, lens, values);
}
