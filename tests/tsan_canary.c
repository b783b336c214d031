/*
 * tsan_canary.c - proves that a ThreadSanitizer build against the
 * instrumented liburcu (scripts/tsan-liburcu.sh) sees grace periods, and
 * still sees their absence.  Run by scripts/tsan-check.sh; not part of
 * make check.
 *
 *	tsan_canary grace FLAVOR	must exit 0 with no report
 *	tsan_canary nograce FLAVOR	must be reported (TSan's exitcode)
 *
 * FLAVOR is memb, qsbr, mb or bp.  A reader thread reads a published
 * box inside a read-side section, pausing in the middle; the main thread
 * replaces the box meanwhile and frees the old one.  "grace" waits for a
 * grace period first (synchronize_rcu, then call_rcu + rcu_barrier for a
 * second box): the reads happen before the free, and only liburcu's
 * grace period says so.  "nograce" frees at once: a real race, which
 * must be reported.  Without the instrumented liburcu the first reports
 * false races; with a model of liburcu that orders too much the second
 * goes silent.  Either way the TSan section of CI fails.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rcu_flavors.h"

struct box {
	struct rcu_head head;
	long value[8];
};

static _Atomic(struct box *) shared;
static const struct tf_flavor *tf;
static atomic_int reader_inside;

static void pause_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0)
		;
}

static long read_box(const struct box *b)
{
	long sum = 0;

	for (int i = 0; i < 8; i++)
		sum += b->value[i];
	return sum;
}

static struct box *new_box(long v)
{
	struct box *b = malloc(sizeof(*b));

	if (b == NULL)
		abort();
	for (int i = 0; i < 8; i++)
		b->value[i] = v;
	return b;
}

/*
 * Reads the box twice in one read-side section, 200 ms apart, so the
 * main thread replaces it in between.  reader_inside is only a relaxed
 * hint for the main thread's timing: it orders nothing (TSan agrees).
 */
static void *reader(void *arg)
{
	long sum;

	(void)arg;
	tf_register(tf);
	tf_read_lock(tf);
	struct box *b = atomic_load_explicit(&shared, memory_order_acquire);
	sum = read_box(b);
	atomic_store_explicit(&reader_inside, 1, memory_order_relaxed);
	pause_ms(200);
	sum += read_box(b);
	tf_read_unlock(tf);
	tf_quiescent(tf);
	tf_unregister(tf);
	return (void *)(sum != 8 * 2 ? arg : NULL);
}

static void free_box_cb(struct rcu_head *head)
{
	free((struct box *)(void *)((char *)head - offsetof(struct box, head)));
}

/* One replacement while the reader is inside its section. */
static int round_trip(int grace, int use_call_rcu)
{
	pthread_t t;
	void *ret;

	atomic_store_explicit(&reader_inside, 0, memory_order_relaxed);
	atomic_store_explicit(&shared, new_box(1), memory_order_release);
	if (pthread_create(&t, NULL, reader, NULL) != 0)
		return -1;
	while (!atomic_load_explicit(&reader_inside, memory_order_relaxed))
		pause_ms(1);

	struct box *old = atomic_exchange_explicit(&shared, new_box(2),
						   memory_order_acq_rel);
	if (!grace) {
		free(old);		/* the reader may still be reading it */
	} else if (!use_call_rcu) {
		tf_synchronize(tf);	/* unregistered caller: allowed */
		free(old);
	} else {
		tf_register(tf);
		tf->flavor->update_call_rcu(&old->head, free_box_cb);
		tf_barrier(tf);		/* QSBR: offline while it waits */
		tf_unregister(tf);
	}
	/* Without a grace period the second read may see freed memory. */
	if (pthread_join(t, &ret) != 0 || (grace && ret != NULL))
		return -1;
	free(atomic_load_explicit(&shared, memory_order_relaxed));
	return 0;
}

int main(int argc, char **argv)
{
	int grace;

	if (argc != 3 || (strcmp(argv[1], "grace") != 0 &&
			  strcmp(argv[1], "nograce") != 0))
		goto usage;
	grace = strcmp(argv[1], "grace") == 0;
	for (int i = 0; i < TF_COUNT; i++)
		if (strcmp(argv[2], tf_flavors[i].name) == 0)
			tf = &tf_flavors[i];
	if (tf == NULL)
		goto usage;

	if (round_trip(grace, 0) != 0 || (grace && round_trip(grace, 1) != 0)) {
		fprintf(stderr, "tsan_canary: %s %s: reader or thread failed\n",
			argv[1], argv[2]);
		return 1;
	}
	printf("tsan_canary %s %s: done\n", argv[1], argv[2]);
	return 0;
usage:
	fprintf(stderr, "usage: tsan_canary grace|nograce memb|qsbr|mb|bp\n");
	return 2;
}
