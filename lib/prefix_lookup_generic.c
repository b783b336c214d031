/*
 * prefix_lookup_generic.c - the prefix read path for any CPU of the
 * target architecture.
 */
#define PFX_VARIANT(name) name##_generic
#include "prefix_lookup_impl.h"
