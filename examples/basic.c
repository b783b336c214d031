/*
 * basic.c - a tour of cowmap.
 *
 * Versions are immutable maps: every update returns a new version and the
 * old one stays exactly as it was.  A transaction batches edits into one
 * new version.  A cell holds "the current version" for threads that share
 * a table; readers use it inside an RCU read-side critical section
 * (liburcu, urcu-memb flavor here).
 *
 * Build against an installed cowmap:
 *
 *   cc -std=c11 -o basic basic.c \
 *      $(pkg-config --cflags --libs cowmap liburcu-memb)
 *
 * Every step checks its result; the program exits non-zero on the first
 * surprise.
 */
#include <urcu/urcu-memb.h>	/* the flavor our threads read with */
#include <cowmap.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPECT(cond)                                                         \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "basic: %s:%d: expected %s\n",       \
				__FILE__, __LINE__, #cond);                  \
			exit(EXIT_FAILURE);                                  \
		}                                                            \
	} while (0)

/* Values are plain pointers; the map never frees these static strings. */
static char red[] = "red";
static char yellow[] = "yellow";
static char green[] = "green";
static char purple[] = "purple";

/* The value stored under @key, or NULL when the key is absent. */
static const char *lookup(const struct cowmap *m, const char *key)
{
	void *value = NULL;
	int rc = cowmap_get(m, key, strlen(key), &value);

	EXPECT(rc == 0 || rc == 1);
	return rc == 1 ? value : NULL;
}

/* The usual pattern: replace *m by a new version and drop the old one. */
static void put(struct cowmap **m, const char *key, char *value)
{
	struct cowmap *next = cowmap_set(*m, key, strlen(key), value);

	EXPECT(next != NULL);	/* on failure *m would still be intact */
	cowmap_release(*m);
	*m = next;
}

static int print_change(enum cowmap_change what, const void *key, size_t len,
			void *old_value, void *new_value, void *ctx)
{
	int *changes = ctx;

	switch (what) {
	case COWMAP_ADDED:
		printf("  + %.*s = %s\n", (int)len, (const char *)key,
		       (char *)new_value);
		break;
	case COWMAP_REMOVED:
		printf("  - %.*s (was %s)\n", (int)len, (const char *)key,
		       (char *)old_value);
		break;
	case COWMAP_CHANGED:
		printf("  ~ %.*s: %s -> %s\n", (int)len, (const char *)key,
		       (char *)old_value, (char *)new_value);
		break;
	}
	(*changes)++;
	return 0;	/* non-zero would stop the diff early */
}

int main(void)
{
	/* --- Versions ------------------------------------------------- */

	struct cowmap *fruit = cowmap_new(NULL);	/* default options */
	EXPECT(fruit != NULL);
	put(&fruit, "apple", red);
	put(&fruit, "banana", yellow);
	put(&fruit, "cherry", red);
	EXPECT(cowmap_size(fruit) == 3);
	EXPECT(strcmp(lookup(fruit, "banana"), "yellow") == 0);

	/* Keep this version: later updates build new ones beside it. */
	struct cowmap *old = cowmap_retain(fruit);

	put(&fruit, "apple", green);
	struct cowmap *next = cowmap_del(fruit, "banana", strlen("banana"));
	EXPECT(next != NULL);
	cowmap_release(fruit);
	fruit = next;

	EXPECT(cowmap_size(fruit) == 2);
	EXPECT(strcmp(lookup(fruit, "apple"), "green") == 0);
	EXPECT(lookup(fruit, "banana") == NULL);

	/* The old version is untouched. */
	EXPECT(cowmap_size(old) == 3);
	EXPECT(strcmp(lookup(old, "apple"), "red") == 0);
	EXPECT(strcmp(lookup(old, "banana"), "yellow") == 0);
	printf("old version: apple -> %s, banana -> %s (%zu entries)\n",
	       lookup(old, "apple"), lookup(old, "banana"), cowmap_size(old));
	printf("new version: apple -> %s, banana %s (%zu entries)\n",
	       lookup(fruit, "apple"),
	       lookup(fruit, "banana") ? "present" : "absent",
	       cowmap_size(fruit));

	/* What changed between them; shared parts are skipped. */
	int changes = 0;
	printf("diff old -> new:\n");
	EXPECT(cowmap_diff(old, fruit, print_change, &changes) == 0);
	EXPECT(changes == 2);
	cowmap_release(old);

	/* --- A transaction: several edits, one new version -------------- */

	struct cowmap_txn *txn = cowmap_txn_begin(fruit);
	EXPECT(txn != NULL);
	EXPECT(cowmap_txn_set(txn, "fig", 3, purple) == 0);
	EXPECT(cowmap_txn_set(txn, "grape", 5, purple) == 0);
	EXPECT(cowmap_txn_del(txn, "cherry", 6) == 1);
	EXPECT(cowmap_txn_del(txn, "kiwi", 4) == 0);	/* absent */
	next = cowmap_txn_commit(txn);			/* consumes txn */
	EXPECT(next != NULL);
	EXPECT(cowmap_size(fruit) == 2);		/* base unchanged */
	cowmap_release(fruit);
	fruit = next;
	EXPECT(cowmap_size(fruit) == 3);

	/* --- Iteration: one version, every entry once ------------------- */

	struct cowmap_iter it;
	const void *key;
	size_t len;
	void *value;
	size_t seen = 0;

	printf("after the transaction:\n");
	cowmap_iter_init(&it, fruit);
	while (cowmap_iter_next(&it, &key, &len, &value)) {
		printf("  %.*s -> %s\n", (int)len, (const char *)key,
		       (char *)value);
		seen++;
	}
	EXPECT(seen == cowmap_size(fruit));

	/* --- A cell: the current version, shared through RCU ------------ */

	/* Every thread that reads or writes a cell is a registered RCU thread. */
	urcu_memb_register_thread();

	/* NULL initial = an empty map; NULL flavor would also mean urcu-memb. */
	struct cowmap_cell *cell = cowmap_cell_new(NULL, &urcu_memb_flavor);
	EXPECT(cell != NULL);

	/* Publish our version; the cell takes the reference we hand it. */
	EXPECT(cowmap_cell_publish(cell, cowmap_retain(fruit)) == 0);

	/* Readers: load and look up inside one read-side critical section.
	 * The loaded version is borrowed until urcu_memb_read_unlock(). */
	urcu_memb_read_lock();
	const struct cowmap *cur = cowmap_cell_load(cell);
	EXPECT(cur == fruit);
	const char *fig = lookup(cur, "fig");
	size_t cur_size = cowmap_size(cur);
	urcu_memb_read_unlock();
	EXPECT(fig != NULL && strcmp(fig, "purple") == 0);
	EXPECT(cur_size == 3);

	/* A snapshot is a reference of our own, valid outside any critical
	 * section and across later publishes. */
	struct cowmap *snap = cowmap_cell_snapshot(cell);
	EXPECT(snap != NULL);

	/* Writers: one-key updates publish a new version. */
	EXPECT(cowmap_cell_set(cell, "banana", 6, yellow) == 0);

	urcu_memb_read_lock();
	cur = cowmap_cell_load(cell);
	const char *banana = lookup(cur, "banana");
	cur_size = cowmap_size(cur);
	urcu_memb_read_unlock();
	EXPECT(banana == yellow);
	EXPECT(cur_size == 4);
	EXPECT(lookup(snap, "banana") == NULL);	/* the snapshot did not move */
	printf("cell: %zu entries now, snapshot still %zu\n", cur_size,
	       cowmap_size(snap));

	/* Accounting: what a version costs, what waits for a grace period. */
	struct cowmap_stats st;
	struct cowmap_cell_stats cst;
	EXPECT(cowmap_stats(snap, &st) == 0);
	EXPECT(st.entries == cowmap_size(snap));
	EXPECT(cowmap_cell_stats(cell, &cst) == 0);
	EXPECT(cst.published >= 2);
	printf("snapshot: %zu entries, %zu nodes, %zu bytes; "
	       "cell: %llu published, %zu bytes pending\n",
	       st.entries, st.nodes, st.bytes,
	       (unsigned long long)cst.published, cst.pending_bytes);

	cowmap_release(snap);
	cowmap_release(fruit);

	/* Frees the current version and waits for every deferred free. */
	cowmap_cell_free(cell);
	urcu_memb_unregister_thread();

	printf("basic: all checks passed\n");
	return EXIT_SUCCESS;
}
