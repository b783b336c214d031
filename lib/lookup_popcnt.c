/*
 * lookup_popcnt.c - the read path for x86-64 CPUs with the popcnt
 * instruction (every one since about 2008).  The pragma comes before the
 * trie's headers so that their bit helpers see __POPCNT__ and use it.
 */
#include "lookup.h"

#if CM_LOOKUP_POPCNT
#pragma GCC target("popcnt")
#define LOOKUP_VARIANT(name) name##_popcnt
#include "lookup_impl.h"
#endif
