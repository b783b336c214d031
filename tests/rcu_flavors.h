/*
 * rcu_flavors.h - the four liburcu flavors, for tests that loop over them.
 *
 * A cell is created with one flavor (cowmap_cell_new(..., flavor)) and its
 * readers and writers must use that same flavor.  The tests drive every
 * flavor through its struct rcu_flavor_struct rather than the unprefixed
 * rcu_read_lock() macros, which name one flavor per translation unit.
 *
 * liburcu 0.13: all four flavor headers can be included in one translation
 * unit (each ends by including <urcu/map/clear.h>, which drops the
 * unprefixed names), but <urcu/flavor.h> has an include guard, so only the
 * first flavor header's `rcu_flavor` mapping declares its flavor struct
 * (urcu_memb_flavor here); urcu_qsbr_flavor, urcu_mb_flavor and
 * urcu_bp_flavor end up undeclared.  They are declared below.
 *
 * Usage in a test:
 *
 *	const struct tf_flavor *tf = &tf_flavors[_i];	(tcase_add_loop_test)
 *	tf_register(tf);
 *	... cowmap_cell_new(initial, tf->flavor) ...
 *	tf_read_lock(tf); m = cowmap_cell_load(c); ...; tf_read_unlock(tf);
 *	tf_quiescent(tf);	(QSBR: between critical sections; else no-op)
 *	tf_barrier(tf);		(all queued call_rcu callbacks have run)
 *	tf_unregister(tf);
 *
 * Rules worth remembering (see also include/cowmap.h):
 *  - call_rcu() and rcu_barrier() must be called from registered threads,
 *    so test threads that write a cell register first.
 *  - QSBR: a registered thread is "online" and holds back every grace
 *    period until it announces a quiescent state or goes offline; reader
 *    and writer threads call tf_quiescent() between operations and
 *    tf_offline() before blocking (joins, barriers, condition waits).
 *    QSBR's rcu_read_lock() is a no-op: only quiescent states matter.
 *    rcu_barrier() of QSBR takes an online caller offline while it waits.
 *  - urcu-bp registers threads lazily; tf_register() forces it so that the
 *    registration (which may allocate) never happens inside a measured
 *    read path.
 *
 * ThreadSanitizer: the distribution's liburcu 0.13 is not instrumented,
 * so against it TSan does not see grace periods and reports every free
 * after one as a race with the reads it waited for.  Run the suites
 * under TSan with scripts/tsan-check.sh, which builds liburcu from
 * Debian's source package with TSan and with its shared accesses made
 * atomics TSan models (scripts/tsan-urcu-atomics.h), configures cowmap
 * with --enable-tsan against it and runs them with CK_FORK=no: they
 * report nothing.  (Frees by the last holder of a snapshot reference
 * need no liburcu: under TSan the decrement itself acquires, see
 * CM_DROP_ORDER in lib/node.h.)  check_slab also needs
 * detect_deadlocks=0: the fork handlers hold every slab class lock,
 * more than TSan's deadlock detector tracks.
 */
#ifndef COWMAP_TESTS_RCU_FLAVORS_H
#define COWMAP_TESTS_RCU_FLAVORS_H

#include <stddef.h>

#include <urcu/urcu-memb.h>
#include <urcu/urcu-qsbr.h>
#include <urcu/urcu-mb.h>
#include <urcu/urcu-bp.h>

/* The first flavor header already declared urcu_memb_flavor (see above). */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wredundant-decls"
#endif
extern const struct rcu_flavor_struct urcu_memb_flavor;
extern const struct rcu_flavor_struct urcu_qsbr_flavor;
extern const struct rcu_flavor_struct urcu_mb_flavor;
extern const struct rcu_flavor_struct urcu_bp_flavor;
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

enum tf_kind { TF_MEMB, TF_QSBR, TF_MB, TF_BP };

struct tf_flavor {
	const char *name;
	const struct rcu_flavor_struct *flavor;
	enum tf_kind kind;
	int is_qsbr;	/* needs quiescent states / offline periods */
};

#define TF_COUNT 4

static const struct tf_flavor tf_flavors[TF_COUNT] = {
	{ "memb", &urcu_memb_flavor, TF_MEMB, 0 },
	{ "qsbr", &urcu_qsbr_flavor, TF_QSBR, 1 },
	{ "mb", &urcu_mb_flavor, TF_MB, 0 },
	{ "bp", &urcu_bp_flavor, TF_BP, 0 },
};

/* Register the calling thread (every flavor; a no-op-ish force for bp). */
static inline void tf_register(const struct tf_flavor *tf)
{
	tf->flavor->register_thread();
}

static inline void tf_unregister(const struct tf_flavor *tf)
{
	tf->flavor->unregister_thread();
}

static inline void tf_read_lock(const struct tf_flavor *tf)
{
	tf->flavor->read_lock();
}

static inline void tf_read_unlock(const struct tf_flavor *tf)
{
	tf->flavor->read_unlock();
}

/* QSBR: announce a quiescent state (no borrowed pointer may be held). */
static inline void tf_quiescent(const struct tf_flavor *tf)
{
	if (tf->is_qsbr)
		tf->flavor->read_quiescent_state();
}

/* QSBR: stop holding back grace periods before blocking. */
static inline void tf_offline(const struct tf_flavor *tf)
{
	if (tf->is_qsbr)
		tf->flavor->thread_offline();
}

static inline void tf_online(const struct tf_flavor *tf)
{
	if (tf->is_qsbr)
		tf->flavor->thread_online();
}

/* Wait for every call_rcu callback queued so far (caller registered). */
static inline void tf_barrier(const struct tf_flavor *tf)
{
	tf->flavor->barrier();
}

/* Full grace period (caller registered, outside read-side sections). */
static inline void tf_synchronize(const struct tf_flavor *tf)
{
	tf->flavor->update_synchronize_rcu();
}

#endif /* COWMAP_TESTS_RCU_FLAVORS_H */
