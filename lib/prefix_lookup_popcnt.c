/*
 * prefix_lookup_popcnt.c - the prefix read path for x86-64 CPUs with the
 * popcnt instruction.  The pragma comes before the headers so that their
 * bit helpers see __POPCNT__ (as lookup_popcnt.c).
 */
#include "lookup.h"

#if CM_LOOKUP_POPCNT
#pragma GCC target("popcnt")
#define PFX_VARIANT(name) name##_popcnt
#include "prefix_lookup_impl.h"
#endif
