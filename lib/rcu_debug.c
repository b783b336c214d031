/*
 * rcu_debug.c - debug builds: is the thread reading a cell registered
 * with the cell's flavor?
 *
 * A thread that never called rcu_register_thread() of the cell's flavor
 * can enter what looks like a read-side critical section (the lock only
 * touches its own thread-local counter), but no grace period waits for
 * it: the version it reads may be freed under it.  Nothing crashes at
 * once, so the mistake goes unseen until memory is reused.  liburcu keeps
 * a "registered" flag in each flavor's thread-local reader state; this
 * file finds that state for the cell's flavor and reads the flag.
 *
 * The flavors are told apart by their flavor structs, looked up by name
 * with dlsym() so that a debug build needs no flavor library it does not
 * otherwise link (the program that reads with a flavor has linked it).
 * dlsym() of a thread-local variable gives the calling thread's copy.
 * urcu-bp registers threads on their first read-side lock by itself, so
 * it is not checked.  The result is cached per thread and flavor.
 */
#include "map.h"

#ifdef COWMAP_DEBUG

/* The reader layouts: liburcu's own headers, only their structs used. */
#include <urcu/static/urcu-qsbr.h>

#include <dlfcn.h>

enum reader_kind { READER_COMMON, READER_QSBR };

static const struct {
	const char *flavor, *reader;
	enum reader_kind kind;
} known[] = {
	{ "urcu_memb_flavor", "urcu_memb_reader", READER_COMMON },
	{ "urcu_mb_flavor", "urcu_mb_reader", READER_COMMON },
	{ "urcu_signal_flavor", "urcu_signal_reader", READER_COMMON },
	{ "urcu_qsbr_flavor", "urcu_qsbr_reader", READER_QSBR },
};

/* This thread's reader state of one flavor, found once. */
static _Thread_local const struct rcu_flavor_struct *cached_flavor;
static _Thread_local const void *cached_reader;
static _Thread_local enum reader_kind cached_kind;

static bool find_reader(const struct rcu_flavor_struct *flavor)
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
		if (dlsym(RTLD_DEFAULT, known[i].flavor) != (void *)flavor)
			continue;

		const void *reader = dlsym(RTLD_DEFAULT, known[i].reader);

		if (reader == NULL)
			return false;
		cached_flavor = flavor;
		cached_reader = reader;
		cached_kind = known[i].kind;
		return true;
	}
	/* urcu-bp, or a flavor this file does not know: remembered too, so
	 * that the look-ups are not repeated on every read. */
	cached_flavor = flavor;
	cached_reader = NULL;
	return false;
}

void cm_debug_check_registered(const struct rcu_flavor_struct *flavor,
			       const char *call)
{
	if (flavor != cached_flavor)
		find_reader(flavor);
	if (cached_reader == NULL)
		return;

	bool registered =
		cached_kind == READER_QSBR
			? ((const struct urcu_qsbr_reader *)cached_reader)
				  ->registered
			: ((const struct urcu_reader *)cached_reader)->registered;

	if (!registered)
		cm_debug_report(call, "this thread is not registered with the "
				      "cell's RCU flavor (rcu_register_thread()); "
				      "no grace period waits for its reads");
}

#endif
