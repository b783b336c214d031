/*
 * lookup_generic.c - the read path for any CPU of the target architecture.
 */
#define LOOKUP_VARIANT(name) name##_generic
#include "lookup_impl.h"
