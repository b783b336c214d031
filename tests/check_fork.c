/*
 * check_fork.c - a process that uses a cell forks, and both processes go
 * on using it.
 *
 * The liburcu rules (liburcu README, "Interaction with fork()"), as they
 * apply to cowmap's default flavor, urcu-memb:
 *
 *  - Only the forking thread exists in the child, so no other thread may
 *    be registered (or be inside a read-side section, a grace period or a
 *    cell write) when fork() is called: the reader and writer threads are
 *    joined first, and they unregister before they exit.  The forking
 *    thread itself may stay registered; its registration lives in its
 *    own memory, which the child gets a copy of.
 *  - call_rcu users call call_rcu_before_fork() before fork(), then
 *    call_rcu_after_fork_parent() in the parent and
 *    call_rcu_after_fork_child() in the child.  Callbacks queued before
 *    the fork run in both processes afterwards, each on its own copy of
 *    the memory.  Those unprefixed names exist only through <urcu.h>:
 *    <urcu/urcu-memb.h> ends with <urcu/map/clear.h>, which removes them,
 *    so a program that includes the flavor header (as cowmap.h advises)
 *    calls urcu_memb_call_rcu_before_fork() and so on, as here.
 *  - urcu_bp_before_fork() and friends exist for urcu-bp only: liburcu
 *    0.13's <urcu/map/urcu-memb.h> still maps rcu_memb_before_fork to
 *    urcu_memb_before_fork, but liburcu-memb.so exports no such symbol, so
 *    a program using it does not link.
 *
 * The fork happens with a snapshot held and retired versions still
 * waiting for their grace period.  Then each process starts a new reader
 * and writer, publishes versions of its own (which the other never sees),
 * reads them back, checks that nothing is pending after cowmap_cell_barrier(),
 * frees the cell and checks that every value it ever stored was freed
 * exactly once.  The child reports through its exit status, read with
 * waitpid(); it never calls into Check.
 *
 * Values are heap objects with a key and a liveness mark, freed by
 * value_free: readers check the mark of every value they see, so a value
 * freed too early shows up (and ASan or valgrind say where).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <urcu/urcu-memb.h>

#include <cowmap.h>

Suite *fork_suite(void);

#define NKEYS 64
#define VAL_LIVE 0x4c495645u	/* "LIVE" */
#define VAL_DEAD 0x44454144u	/* "DEAD" */

struct fval {
	unsigned magic;
	unsigned key;
};

/* Per process: after fork() each process counts its own copy. */
static atomic_ulong values_stored, values_freed;
static atomic_ulong problems;
static char problem_text[256];

static void problem(const char *what)
{
	if (atomic_fetch_add(&problems, 1) == 0)
		snprintf(problem_text, sizeof(problem_text), "%s", what);
}

static void fval_free(void *p, void *ctx)
{
	struct fval *v = p;

	(void)ctx;
	if (v->magic != VAL_LIVE)
		problem("value_free on a value that is not live");
	v->magic = VAL_DEAD;
	free(v);
	atomic_fetch_add(&values_freed, 1);
}

static void key_of(unsigned k, char buf[16], size_t *len)
{
	*len = (size_t)snprintf(buf, 16, "key-%u", k);
}

struct world {
	struct cowmap_cell *c;
	atomic_int stop;
	unsigned sets_per_writer;
	unsigned seed;
};

static void *reader_main(void *arg)
{
	struct world *w = arg;
	unsigned long reads = 0;

	urcu_memb_register_thread();
	while (!atomic_load(&w->stop) || reads < 100) {
		urcu_memb_read_lock();

		const struct cowmap *m = cowmap_cell_load(w->c);

		for (unsigned k = 0; k < NKEYS; k++) {
			char key[16];
			size_t len;
			void *v;

			key_of(k, key, &len);
			if (cowmap_get(m, key, len, &v) == 1) {
				const struct fval *f = v;

				if (f->magic != VAL_LIVE || f->key != k)
					problem("a reader saw a freed or "
						"wrong value");
			}
		}
		urcu_memb_read_unlock();
		reads++;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

static void *writer_main(void *arg)
{
	struct world *w = arg;
	unsigned r = w->seed;

	urcu_memb_register_thread();
	for (unsigned i = 0; i < w->sets_per_writer; i++) {
		char key[16];
		size_t len;
		unsigned k;

		r = r * 1103515245u + 12345u;
		k = (r >> 8) % NKEYS;
		key_of(k, key, &len);
		if (i % 8 == 7) {
			if (cowmap_cell_del(w->c, key, len) < 0)
				problem("cell_del failed");
			continue;
		}

		struct fval *v = malloc(sizeof(*v));

		if (v == NULL) {
			problem("out of memory");
			break;
		}
		v->magic = VAL_LIVE;
		v->key = k;
		if (cowmap_cell_set(w->c, key, len, v) == 0) {
			atomic_fetch_add(&values_stored, 1);
		} else {
			free(v);	/* still ours on failure */
			problem("cell_set failed");
		}
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* One reader and two writers on @c until the writers are done; every
 * thread is joined (and unregistered) on return. */
static int run_threads(struct cowmap_cell *c, unsigned sets, unsigned seed)
{
	struct world w = { .c = c, .sets_per_writer = sets, .seed = seed };
	pthread_t rd, wr[2];
	int rc = 0;

	atomic_init(&w.stop, 0);
	if (pthread_create(&rd, NULL, reader_main, &w) != 0)
		return -1;
	for (int i = 0; i < 2; i++)
		if (pthread_create(&wr[i], NULL, writer_main, &w) != 0)
			rc = -1;
	for (int i = 0; i < 2 && rc == 0; i++)
		pthread_join(wr[i], NULL);
	atomic_store(&w.stop, 1);
	pthread_join(rd, NULL);
	return rc;
}

/* Set @key to a fresh value through the cell and read it back. */
static int publish_and_read(struct cowmap_cell *c, const char *key)
{
	struct fval *v = malloc(sizeof(*v));
	void *got = NULL;
	int rc;

	if (v == NULL)
		return -1;
	v->magic = VAL_LIVE;
	v->key = NKEYS;	/* outside the readers' keys */
	if (cowmap_cell_set(c, key, strlen(key), v) != 0) {
		free(v);
		return -1;
	}
	atomic_fetch_add(&values_stored, 1);
	urcu_memb_read_lock();
	rc = cowmap_get(cowmap_cell_load(c), key, strlen(key), &got);
	urcu_memb_read_unlock();
	return rc == 1 && got == v ? 0 : -1;
}

static int has_key(struct cowmap_cell *c, const char *key)
{
	int rc;

	urcu_memb_read_lock();
	rc = cowmap_get(cowmap_cell_load(c), key, strlen(key), NULL);
	urcu_memb_read_unlock();
	return rc;
}

/* Check the snapshot taken before the fork: every value live. */
static int snapshot_intact(const struct cowmap *snap, size_t size)
{
	struct cowmap_iter it;
	const void *key;
	size_t len, n = 0;
	void *v;

	cowmap_iter_init(&it, snap);
	while (cowmap_iter_next(&it, &key, &len, &v)) {
		const struct fval *f = v;

		if (f->magic != VAL_LIVE)
			return -1;
		n++;
	}
	return n == size ? 0 : -1;
}

/*
 * What each process does after the fork; returns NULL or what failed.
 * @mine is the key only this process publishes, @theirs the other's.
 */
static const char *after_fork(struct cowmap_cell *c, struct cowmap *snap,
			      size_t snap_size, const char *mine,
			      const char *theirs, unsigned seed)
{
	struct cowmap_cell_stats st;

	if (snapshot_intact(snap, snap_size) != 0)
		return "the snapshot taken before fork() is damaged";
	if (run_threads(c, 1500, seed) != 0)
		return "could not start threads";
	if (publish_and_read(c, mine) != 0)
		return "publishing after fork() failed";
	if (has_key(c, theirs) != 0)
		return "a version published by the other process is visible";
	if (snapshot_intact(snap, snap_size) != 0)
		return "the snapshot was damaged by later publishes";
	cowmap_release(snap);

	if (cowmap_cell_barrier(c) != 0)
		return "cell_barrier failed";
	if (cowmap_cell_stats(c, &st) != 0)
		return "cell_stats failed";
	if (st.pending_versions != 0 || st.pending_bytes != 0 ||
	    st.pending_nodes != 0)
		return "retired versions still pending after cowmap_cell_barrier()";
	cowmap_cell_free(c);
	if (atomic_load(&problems) != 0)
		return problem_text;
	if (atomic_load(&values_freed) != atomic_load(&values_stored))
		return "not every stored value was freed exactly once";
	return NULL;
}

START_TEST(parent_and_child_keep_using_a_cell_after_fork)
{
	struct cowmap_options o = { .seed = 99, .value_free = fval_free };
	struct cowmap_cell *c;
	struct cowmap *snap;
	struct cowmap_cell_stats st;
	size_t snap_size;
	const char *err;
	pid_t pid;
	int status;

	urcu_memb_register_thread();
	atomic_store(&values_stored, 0);
	atomic_store(&values_freed, 0);
	atomic_store(&problems, 0);

	c = cowmap_cell_new(cowmap_new(&o), NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(run_threads(c, 3000, 1), 0);
	ck_assert_msg(atomic_load(&problems) == 0, "before fork: %s",
		      problem_text);

	/* Fork with a snapshot held and retired versions pending. */
	snap = cowmap_cell_snapshot(c);
	ck_assert_ptr_nonnull(snap);
	snap_size = cowmap_size(snap);
	ck_assert_int_eq(publish_and_read(c, "just-before-fork-1"), 0);
	ck_assert_int_eq(publish_and_read(c, "just-before-fork-2"), 0);
	ck_assert_int_eq(cowmap_cell_stats(c, &st), 0);
	/* (pending_versions may already be 0 if the grace periods ended.) */

	fflush(NULL);
	urcu_memb_call_rcu_before_fork();
	pid = fork();
	if (pid == 0) {
		urcu_memb_call_rcu_after_fork_child();
		alarm(60);	/* a hang becomes a failure, not a stuck run */
		err = after_fork(c, snap, snap_size, "child", "parent", 2);
		if (err != NULL) {
			fprintf(stderr, "child: %s\n", err);
			exit(1);
		}
		urcu_memb_unregister_thread();
		exit(0);
	}
	urcu_memb_call_rcu_after_fork_parent();
	ck_assert_msg(pid > 0, "fork failed: %s", strerror(errno));

	err = after_fork(c, snap, snap_size, "parent", "child", 3);
	ck_assert_msg(err == NULL, "parent: %s", err);

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status), "the child died (signal %d)",
		      WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	ck_assert_msg(WEXITSTATUS(status) == 0,
		      "the child failed (exit status %d; see its stderr)",
		      WEXITSTATUS(status));
	urcu_memb_unregister_thread();
}
END_TEST

/* Two forks in a row, the second from a child: the call_rcu thread the
 * child re-created must itself survive a fork. */
START_TEST(a_child_can_fork_again)
{
	struct cowmap_options o = { .seed = 5, .value_free = fval_free };
	struct cowmap_cell *c;
	pid_t pid;
	int status;

	urcu_memb_register_thread();
	atomic_store(&values_stored, 0);
	atomic_store(&values_freed, 0);
	atomic_store(&problems, 0);
	c = cowmap_cell_new(cowmap_new(&o), NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(publish_and_read(c, "gen0"), 0);

	fflush(NULL);
	urcu_memb_call_rcu_before_fork();
	pid = fork();
	if (pid == 0) {
		pid_t grandchild;
		int st2;

		urcu_memb_call_rcu_after_fork_child();
		alarm(60);
		if (publish_and_read(c, "gen1") != 0)
			exit(2);
		fflush(NULL);
		urcu_memb_call_rcu_before_fork();
		grandchild = fork();
		if (grandchild == 0) {
			urcu_memb_call_rcu_after_fork_child();
			if (publish_and_read(c, "gen2") != 0 ||
			    run_threads(c, 500, 7) != 0)
				exit(3);
			cowmap_cell_free(c);
			exit(atomic_load(&values_freed) ==
					     atomic_load(&values_stored) &&
				     atomic_load(&problems) == 0
			     ? 0
			     : 4);
		}
		urcu_memb_call_rcu_after_fork_parent();
		if (grandchild < 0 || waitpid(grandchild, &st2, 0) != grandchild ||
		    !WIFEXITED(st2) || WEXITSTATUS(st2) != 0)
			exit(5);
		if (has_key(c, "gen2") != 0)
			exit(6);
		cowmap_cell_free(c);
		exit(atomic_load(&values_freed) == atomic_load(&values_stored)
			     ? 0
			     : 7);
	}
	urcu_memb_call_rcu_after_fork_parent();
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "child: %s %d",
		      WIFEXITED(status) ? "exit status" : "signal",
		      WIFEXITED(status) ? WEXITSTATUS(status)
					: WTERMSIG(status));
	ck_assert_int_eq(has_key(c, "gen1"), 0);
	cowmap_cell_free(c);
	ck_assert_uint_eq(atomic_load(&values_freed),
			  atomic_load(&values_stored));
	urcu_memb_unregister_thread();
}
END_TEST

/*
 * liburcu's fork calls from pthread_atfork() handlers, registered by the
 * program (after the library was loaded), while the call_rcu thread is
 * busy freeing retired versions.  The library's own prepare handler takes
 * its node allocator's locks; it must run after the program's, which
 * pauses the call_rcu thread first, or fork() waits for a thread that
 * waits for a lock the prepare handler holds (Check's timeout then fails
 * the test).  A slow value_free keeps the call_rcu thread inside its
 * callbacks, freeing leaves and nodes, nearly all the time.
 */
static void slow_value_free(void *value, void *ctx)
{
	(void)value;
	(void)ctx;
	usleep(200);
}

/* Static (and volatile, so the store is kept), so that a leak checker in
 * a child, which exits without freeing what it inherited, finds the cell. */
static struct cowmap_cell *volatile atfork_cell;

START_TEST(fork_from_atfork_handlers_while_callbacks_free)
{
	struct cowmap_options o = { .seed = 9, .value_free = slow_value_free };
	struct cowmap_cell *c;

	ck_assert_int_eq(pthread_atfork(urcu_memb_call_rcu_before_fork,
					urcu_memb_call_rcu_after_fork_parent,
					urcu_memb_call_rcu_after_fork_child),
			 0);
	urcu_memb_register_thread();
	c = atfork_cell = cowmap_cell_new(cowmap_new(&o), NULL);
	ck_assert_ptr_nonnull(c);
	for (unsigned round = 0; round < 40; round++) {
		char key[16];
		size_t len;
		pid_t pid;
		int status;

		/* Retired versions for the call_rcu thread to free. */
		for (unsigned i = 0; i < 300; i++) {
			key_of(i % 1000, key, &len);
			ck_assert_int_eq(cowmap_cell_set(c, key, len,
							 (void *)(uintptr_t)(
								 8 * (i + 1))),
					 0);
		}
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			const struct cowmap_options plain = { .seed = 9 };
			struct cowmap *m = cowmap_new(&plain);

			alarm(30);
			for (unsigned i = 0; m != NULL && i < 500; i++) {
				struct cowmap *next;

				key_of(i, key, &len);
				next = cowmap_set(m, key, len, (void *)8);
				cowmap_release(m);
				m = next;
			}
			int ok = m != NULL && cowmap_size(m) == 500;

			cowmap_release(m);
			_exit(ok ? 0 : 1);
		}
		ck_assert_int_gt(pid, 0);
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "child of round %u: %s %d", round,
			      WIFEXITED(status) ? "exit status" : "signal",
			      WIFEXITED(status) ? WEXITSTATUS(status)
						: WTERMSIG(status));
	}
	cowmap_cell_free(c);
	atfork_cell = NULL;
	urcu_memb_unregister_thread();
}
END_TEST

Suite *fork_suite(void)
{
	Suite *s = suite_create("fork");
	TCase *tc = tcase_create("urcu-memb");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, parent_and_child_keep_using_a_cell_after_fork);
	tcase_add_test(tc, a_child_can_fork_again);
	tcase_add_test(tc, fork_from_atfork_handlers_while_callbacks_free);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(fork_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
