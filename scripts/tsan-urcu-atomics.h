/*
 * tsan-urcu-atomics.h - liburcu's shared accesses as C11-style atomics,
 * for a ThreadSanitizer build of liburcu 0.13 (scripts/tsan-liburcu.sh).
 *
 * Force-included (-include) ahead of every liburcu source file; never
 * part of cowmap itself, which reaches liburcu only through its
 * functions.
 *
 * Why: liburcu 0.13 orders its grace periods with hand-written x86
 * assembly (lock-prefixed read-modify-writes in <urcu/uatomic/x86.h>),
 * volatile loads and stores (CMM_LOAD_SHARED / CMM_STORE_SHARED) and
 * fences or membarrier(2).  ThreadSanitizer sees none of these as
 * synchronisation: assembly is invisible to it, volatile accesses are
 * plain accesses, and it does not model standalone fences.  So a reader
 * leaving its read-side section and a writer that then sees it gone
 * (the reader's counter store, the writer's counter load) look
 * unrelated, and every free after a grace period is reported as a race
 * with the reads the grace period waited for.
 *
 * Here every such access becomes a compiler atomic that TSan models:
 * the shared loads acquire, the shared stores release, and the
 * read-modify-writes are sequentially consistent.  That is the
 * ordering the fences and membarrier(2) give these accesses on the
 * real machine (a reader's accesses inside its section come before its
 * counter store leaving it; a writer acts on what it loaded only after
 * the load), expressed in a form TSan can see.  liburcu's own compiler
 * barriers, fences and membarrier(2) calls stay where they are, and on
 * x86-64 these loads and stores are still plain moves and the
 * read-modify-writes locked instructions.  liburcu 0.14 and later can
 * do the same by themselves (--enable-compiler-atomic-builtins), but
 * Debian 12 ships 0.13.
 *
 * What this cannot hide: a free that no grace period orders after a
 * reader's accesses is still a race to TSan (tests/tsan_canary checks
 * both directions).  What it could hide is a liburcu bug in the
 * orderings it assumes; that is liburcu's to test, not cowmap's.
 *
 * The header includes the liburcu headers whose definitions it
 * replaces; their include guards keep the originals from coming back.
 */
#ifndef COWMAP_TSAN_URCU_ATOMICS_H
#define COWMAP_TSAN_URCU_ATOMICS_H

#include <urcu/compiler.h>
#include <urcu/arch.h>
#include <urcu/system.h>
#include <urcu/uatomic.h>

/* Loads and stores of shared words (system.h). */
#undef _CMM_LOAD_SHARED
#define _CMM_LOAD_SHARED(p) __atomic_load_n(&(p), __ATOMIC_ACQUIRE)

#undef _CMM_STORE_SHARED
#define _CMM_STORE_SHARED(x, v)						\
	__extension__ ({						\
		__typeof__(x) tsan_urcu_v_ = (v);			\
		__atomic_store_n(&(x), tsan_urcu_v_, __ATOMIC_RELEASE);\
		tsan_urcu_v_;						\
	})

/* The uatomic_* operations (uatomic/x86.h, uatomic/generic.h). */
#undef uatomic_read
#define uatomic_read(addr) __atomic_load_n((addr), __ATOMIC_ACQUIRE)

#undef uatomic_set
#define uatomic_set(addr, v)						\
	((void) __atomic_store_n((addr), (v), __ATOMIC_RELEASE))

#undef uatomic_cmpxchg
#define uatomic_cmpxchg(addr, old, _new)				\
	__extension__ ({						\
		__typeof__(*(addr)) tsan_urcu_old_ = (old);		\
		(void) __atomic_compare_exchange_n((addr),		\
			&tsan_urcu_old_, (_new), 0,			\
			__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);		\
		tsan_urcu_old_;						\
	})

#undef uatomic_xchg
#define uatomic_xchg(addr, v)						\
	__atomic_exchange_n((addr), (v), __ATOMIC_SEQ_CST)

#undef uatomic_add_return
#define uatomic_add_return(addr, v)					\
	__atomic_add_fetch((addr), (v), __ATOMIC_SEQ_CST)

#undef uatomic_sub_return
#define uatomic_sub_return(addr, v)					\
	__atomic_sub_fetch((addr), (v), __ATOMIC_SEQ_CST)

#undef uatomic_add
#define uatomic_add(addr, v)						\
	((void) __atomic_add_fetch((addr), (v), __ATOMIC_SEQ_CST))

#undef uatomic_sub
#define uatomic_sub(addr, v)						\
	((void) __atomic_sub_fetch((addr), (v), __ATOMIC_SEQ_CST))

#undef uatomic_inc
#define uatomic_inc(addr) uatomic_add((addr), 1)

#undef uatomic_dec
#define uatomic_dec(addr) uatomic_sub((addr), 1)

/*
 * and/or also serve tagged pointers (rculfhash marks a node's next
 * pointer removed), which the __atomic_fetch_ bitwise builtins refuse:
 * a compare-and-swap loop on the word takes any scalar.
 */
#define tsan_urcu_bitop_(addr, op, v)					\
	__extension__ ({						\
		__typeof__(*(addr)) tsan_urcu_o_ =			\
			__atomic_load_n((addr), __ATOMIC_RELAXED);	\
		while (!__atomic_compare_exchange_n((addr),		\
			&tsan_urcu_o_,					\
			(__typeof__(tsan_urcu_o_))			\
				((unsigned long) tsan_urcu_o_ op	\
				 (unsigned long) (v)),			\
			0, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))		\
			;						\
	})

#undef uatomic_and
#define uatomic_and(addr, v) ((void) tsan_urcu_bitop_(addr, &, v))

#undef uatomic_or
#define uatomic_or(addr, v) ((void) tsan_urcu_bitop_(addr, |, v))

#endif /* COWMAP_TSAN_URCU_ATOMICS_H */
