/*
 * cowmap.h - immutable, persistent hash maps published through RCU.
 *
 * This header is the manual.  Read it top to bottom once; every call says
 * who owns what it takes and returns, what it does on failure, and which
 * threads may call it.
 *
 * Two layers:
 *
 *   Versions (struct cowmap) are immutable maps from byte-string keys to
 *   void * values.  An update never changes a version: cowmap_set() and
 *   friends return a *new* version that shares every untouched node with
 *   the old one.  Any number of threads may read any version at once.
 *   Versions are reference counted (cowmap_retain / cowmap_release).
 *
 *   Cells (struct cowmap_cell) hold "the current version" for threads that
 *   share a table.  Readers load it inside an RCU read-side critical
 *   section with no lock, no allocation and no store to shared memory;
 *   writers are serialised by the cell and publish a new version with one
 *   pointer store.  Memory the old version alone reached is freed after an
 *   RCU grace period.
 *
 * Conventions:
 *   - Functions returning a version return a NEW REFERENCE, or NULL with
 *     errno set (ENOMEM, EINVAL, ENOSPC; cowmap_new() also the errors of
 *     getrandom()).  On failure every existing version is unchanged and
 *     nothing is leaked.
 *   - Functions returning int return 0 (or a count) on success and a
 *     negative errno value on failure.
 *   - Keys are copied into the map; values are opaque pointers.  When
 *     options.value_free is set the map owns the values stored in it (see
 *     struct cowmap_options).
 *
 * RCU (liburcu) rules that concern cowmap are stated next to the cell calls
 * below and summarised in README.md.  Include the liburcu flavor header your
 * threads read with (for example <urcu/urcu-memb.h>) and <cowmap.h>, in
 * either order.
 */
#ifndef COWMAP_H
#define COWMAP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define COWMAP_VERSION_MAJOR 0
#define COWMAP_VERSION_MINOR 3
#define COWMAP_VERSION_PATCH 0
/* One number that compares in release order: 0x00MMmmpp. */
#define COWMAP_VERSION_NUMBER                                                \
	((COWMAP_VERSION_MAJOR << 16) | (COWMAP_VERSION_MINOR << 8) |        \
	 COWMAP_VERSION_PATCH)

/*
 * The library is built with hidden visibility; only what is marked here is
 * exported from the shared object.
 */
#if defined(__GNUC__) && __GNUC__ >= 4
#define COWMAP_API __attribute__((visibility("default")))
#else
#define COWMAP_API
#endif

/*
 * Declared, never defined here: including <urcu/flavor.h> before a flavor
 * header breaks liburcu 0.13's name mapping for the user (see README).
 */
struct rcu_flavor_struct;

struct cowmap;
struct cowmap_txn;
struct cowmap_cell;

/**
 * struct cowmap_options - how a map family behaves.
 * @seed:        hash seed.  0 = a random seed from getrandom(), so keys
 *               chosen by an outsider cannot be made to collide.  Every
 *               version derived from a map shares its seed.
 * @hash:        NULL = the built-in keyed hash.  An override must be a pure
 *               function of (key, len, seed); it may be called from any
 *               thread, also inside RCU read-side critical sections.
 * @value_free:  NULL = the map never frees values.  Otherwise the map owns
 *               every value passed to a successful set, and calls
 *               value_free(value, ctx) exactly once per successful set,
 *               when no version holds that entry any more and (for
 *               versions published in a cell) no reader can still see it.
 *               Storing the very pointer a key already maps to is a no-op
 *               and transfers nothing; storing one pointer under two keys
 *               is two sets, so it is freed twice (give each key its own).
 *               Inside a transaction, repeated sets of one key follow
 *               cowmap_txn_set_many()'s rule instead.
 *               It may run in any thread: the one that releases the
 *               last version holding the value, one whose transaction
 *               call replaces or drops a value only the draft holds
 *               (merge, commit, abort), liburcu's call_rcu thread, a
 *               thread writing to a cell (cowmap_cell_set()
 *               and the other publishing calls free what earlier
 *               publishes retired, after releasing the cell's writer
 *               lock), or one in cowmap_cell_barrier() or
 *               cowmap_cell_free().  It must not call into cowmap.
 * @ctx:         passed to hash and value_free.
 * @max_entries: 0 = unlimited.  An update that would make a version hold
 *               more entries fails with ENOSPC and changes nothing.
 *
 * A zero-initialised struct (or a NULL pointer) gives the defaults.
 */
struct cowmap_options {
	uint64_t seed;
	uint64_t (*hash)(const void *key, size_t len, uint64_t seed, void *ctx);
	void (*value_free)(void *value, void *ctx);
	void *ctx;
	size_t max_entries;
};

/* ------------------------------------------------------------------ */
/* Versions                                                            */
/* ------------------------------------------------------------------ */

/**
 * cowmap_new - create an empty map.
 * @opts: options, copied; NULL for the defaults.
 *
 * Returns a new reference, or NULL with errno ENOMEM, or, when @opts
 * leaves seed 0 and no random seed can be read, getrandom()'s errno
 * (ENOSYS on a kernel without it) or EIO (a short read).  Any thread.
 */
COWMAP_API
struct cowmap *cowmap_new(const struct cowmap_options *opts);

/**
 * cowmap_empty_like - an empty version of @m's family.
 *
 * The same seed, hash, value_free, context and max_entries as @m: the one
 * call for a table rebuilt from scratch (a configuration reload) that is
 * then published in @m's cell, which refuses versions of another family
 * (cowmap_cell_publish()), and compared with @m's versions by
 * cowmap_diff() node by node (a new cowmap_new() picks a new random
 * seed, and a diff across seeds looks every key up in the other).
 * @m is borrowed; any thread holding a reference to it (or inside the
 * read-side critical section that loaded it) may call this.
 *
 * For a prefix table it is an empty prefix table of the same width,
 * value_free, context and max_entries (cowmap_prefix_new() with the same
 * arguments makes the same family: prefix tables have no seed).
 * Returns a new reference, or NULL with errno EINVAL (NULL @m) or ENOMEM.
 */
COWMAP_API
struct cowmap *cowmap_empty_like(const struct cowmap *m);

/**
 * cowmap_retain - take another reference to the same version.
 * Returns @m.  Safe from any thread holding a reference (or inside the RCU
 * read-side critical section that loaded @m; see cowmap_cell_snapshot()).
 * NULL returns NULL with errno EINVAL.  A version holds at most 2^28
 * (268,435,456) references at once: past that, NULL with errno ENOSPC and
 * nothing taken (the count shares its word with flags it must not run
 * into).  Usually one atomic increment; the
 * first retain of a version a cell has just replaced by a single-key
 * write also takes back the references the nodes on that key's path lent
 * to the new version, some dozens of increments per node (and a retain
 * that meets another one doing so waits until it is done).
 */
COWMAP_API
struct cowmap *cowmap_retain(const struct cowmap *m);

/**
 * cowmap_release - drop a reference; NULL is ignored.
 * The last reference frees the nodes no other version shares and calls
 * value_free for values no other version holds.  Any thread may release.
 * Never release a version borrowed from cowmap_cell_load().
 */
COWMAP_API
void cowmap_release(struct cowmap *m);

/** cowmap_size - number of entries; 0 for NULL. */
COWMAP_API
size_t cowmap_size(const struct cowmap *m);

/**
 * cowmap_get - look up one key.
 * @value: receives the value when found (may be NULL).
 *
 * Returns 1 if found, 0 if absent, -EINVAL for a NULL map, a NULL key with
 * non-zero length, or a key longer than UINT32_MAX bytes.  Allocates
 * nothing, locks nothing, writes nothing shared: safe inside RCU read-side
 * critical sections and from any number of threads.
 */
COWMAP_API
int cowmap_get(const struct cowmap *m, const void *key, size_t len,
	       void **value);

/**
 * cowmap_get_many - look up @n keys at once.
 * @values: values[i] receives key i's value, or NULL when absent (or when
 *          the key is invalid).
 *
 * Walks the lookups level by level with prefetching so a batch pays memory
 * latency roughly once per level rather than once per key.  Returns the
 * number of keys found (0 with errno EINVAL for a NULL map, or NULL arrays
 * with @n > 0; @n == 0 with NULL arrays is an empty batch).
 * Same thread-safety as cowmap_get().
 */
COWMAP_API
size_t cowmap_get_many(const struct cowmap *m, size_t n,
		       const void *const keys[], const size_t lens[],
		       void *values[]);

/**
 * cowmap_set - a new version in which @key maps to @value.
 *
 * Returns a new reference.  If @key already maps to exactly @value the
 * result is @m itself (retained): nothing changes and no value is
 * transferred.  On failure returns NULL with errno ENOMEM, ENOSPC
 * (max_entries, or @m already holds as many references as
 * cowmap_retain() allows) or EINVAL, and @value still belongs to the
 * caller.
 */
COWMAP_API
struct cowmap *cowmap_set(const struct cowmap *m, const void *key,
			  size_t len, void *value);

/**
 * cowmap_del - a new version without @key.
 * Returns a new reference (@m itself, retained, when @key is absent), or
 * NULL with errno ENOMEM, EINVAL or ENOSPC (as cowmap_retain()).
 */
COWMAP_API
struct cowmap *cowmap_del(const struct cowmap *m, const void *key,
			  size_t len);

/* ------------------------------------------------------------------ */
/* Transactions: batch edits                                           */
/* ------------------------------------------------------------------ */

/**
 * cowmap_txn_begin - start a private draft based on @base.
 *
 * The draft edits the nodes it has copied in place, so a batch of k edits
 * costs about one path copy per touched path, not one per edit.  @base is
 * retained by the draft and never changes.  A transaction belongs to one
 * thread at a time.  Returns NULL with errno ENOMEM, EINVAL or ENOSPC
 * (@base holds as many references as cowmap_retain() allows).
 */
COWMAP_API
struct cowmap_txn *cowmap_txn_begin(const struct cowmap *base);

/**
 * cowmap_txn_set - set @key to @value in the draft.
 *
 * The key is copied and the set gathered; gathered sets are merged into
 * the draft in one pass, as by cowmap_txn_set_many(), when the draft is
 * next read or edited otherwise (cowmap_txn_get, _del, _size, _set_many)
 * or committed.  So a loop of sets loads a table as fast as one batch,
 * and every read sees every earlier set.  A value replaced inside the
 * draft that no version holds is passed to value_free when the sets are
 * merged, by cowmap_txn_set_many()'s rule (each distinct value a key's
 * earlier sets stored, once, unless the key ends with it).
 *
 * Gathering costs memory of its own: room in the gathered array (40
 * bytes a set, grown by doubling) and, for a key too long to be stored
 * inline, a copy of it.  So this call can fail with -ENOMEM even when the
 * set would change nothing (the key already maps to @value); a set is
 * compared with the draft only when it is merged.  Near max_entries, and
 * after 2^32 - 1 gathered sets, the gathered sets are merged first, and
 * that merge can fail with -ENOMEM too (they then stay gathered).
 *
 * Returns 0, or -ENOMEM, -ENOSPC (the draft already holds max_entries
 * keys and @key is not one of them), -EINVAL (NULL or finished
 * transaction, a prefix-table draft, a NULL key with non-zero @len or a
 * key longer than UINT32_MAX bytes).  On failure the draft is as it was
 * and @value still belongs to the caller; on success it belongs to the
 * map (with value_free), even if a later merge or commit fails.
 */
COWMAP_API
int cowmap_txn_set(struct cowmap_txn *t, const void *key, size_t len,
		   void *value);

/**
 * cowmap_txn_set_many - set @n keys in the draft at once.
 * @keys, @lens: the keys, as for cowmap_txn_set().
 * @values:      values[i] is stored under keys[i].
 *
 * The same as calling cowmap_txn_set() for each pair in order - the last
 * pair for a key wins, and a value it replaces is passed to value_free -
 * except that it is all or nothing, and that a large batch costs far
 * less: the pairs are sorted by their place in the trie and every node
 * they reach is built once, at its final size, rather than once for each
 * key that lands in it.  Loading a whole table is the case it is for; a
 * few keys gain nothing over cowmap_txn_set().  It needs 40 bytes per
 * pair of temporary memory, freed before it returns (split a batch that
 * should use less).
 *
 * With value_free, each distinct value that a key's earlier pairs stored
 * is passed to it once, unless the key ends with that value.  (Pair by
 * pair, a pointer stored, replaced and stored again would be freed and
 * then kept: a use after free.)
 *
 * Returns 0, or -ENOMEM, -ENOSPC (the draft would hold more than
 * max_entries), -EINVAL (NULL arrays with @n > 0, an invalid key, more
 * than UINT32_MAX pairs, or a finished transaction).  The limit is
 * checked on the merged result, so a batch over it answers -ENOMEM if
 * memory runs out first.  On failure the draft is as it was and every
 * value still belongs to the caller.
 */
COWMAP_API
int cowmap_txn_set_many(struct cowmap_txn *t, size_t n,
			const void *const keys[], const size_t lens[],
			void *const values[]);

/**
 * cowmap_txn_del - remove @key from the draft.
 * Returns 1 if removed, 0 if absent, or -ENOMEM / -EINVAL as above.
 */
COWMAP_API
int cowmap_txn_del(struct cowmap_txn *t, const void *key, size_t len);

/**
 * cowmap_txn_get - look up @key in the draft; as cowmap_get().
 * It merges the sets gathered since the last read (cowmap_txn_set()), so
 * like every call on a draft it belongs to the draft's one thread, @t
 * being const notwithstanding.  If that merge runs out of memory the
 * answer is still right (the sets stay gathered).
 */
COWMAP_API
int cowmap_txn_get(const struct cowmap_txn *t, const void *key, size_t len,
		   void **value);

/** cowmap_txn_size - entries in the draft; 0 for an invalid transaction.
 * Merges gathered sets, as cowmap_txn_get() does. */
COWMAP_API
size_t cowmap_txn_size(const struct cowmap_txn *t);

/**
 * cowmap_txn_commit - turn the draft into a version.
 *
 * Consumes @t and returns a new reference (the base itself, retained, if
 * nothing changed).  Commit publishes nothing: hand the result to
 * cowmap_cell_publish() to share it.  Returns NULL with errno EINVAL for
 * a NULL or finished transaction, and with ENOMEM when sets gathered
 * since the draft was last read cannot be merged: @t is then discarded
 * as by cowmap_txn_abort() and the base is untouched.  The values of
 * those sets became the map's when cowmap_txn_set() returned 0, so with
 * value_free the failed commit passes them to it (each distinct value
 * once, as abort does); they are not handed back.  Commit allocates only for
 * that merge: with no sets gathered (none since a read, delete or
 * set_many merged them, and never for a prefix-table draft) it cannot
 * run out of memory.  Either way @t must not be used again.
 */
COWMAP_API
struct cowmap *cowmap_txn_commit(struct cowmap_txn *t);

/**
 * cowmap_txn_abort - discard the draft; NULL is ignored.
 * Values set in the draft are passed to value_free (they were given to the
 * map); the base is untouched.
 *
 * A transaction that was committed or aborted must not be used again.
 * The library recognises such a handle for a while afterwards and answers
 * EINVAL; configure --enable-debug makes that reliable.
 */
COWMAP_API
void cowmap_txn_abort(struct cowmap_txn *t);

/* ------------------------------------------------------------------ */
/* Iteration                                                           */
/* ------------------------------------------------------------------ */

/*
 * An iterator lives on the caller's stack and allocates nothing.  It walks
 * one version, so it is consistent by construction: every entry exactly
 * once, in hash order, whatever other threads publish meanwhile.  The
 * version must stay alive while iterating (a reference, or the RCU
 * read-side critical section it was loaded in).  Fields are private.
 */
/* 23 levels: a 128-bit prefix table is 22 nodes deep (lib/prefix.h). */
#define COWMAP_ITER_DEPTH 23
struct cowmap_iter {
	const void *priv_map;
	const void *priv_node[COWMAP_ITER_DEPTH];
	uint32_t priv_pos[COWMAP_ITER_DEPTH];
	int priv_depth;
};

/** cowmap_iter_init - position @it before the first entry of @m. */
COWMAP_API
void cowmap_iter_init(struct cowmap_iter *it, const struct cowmap *m);

/**
 * cowmap_iter_next - step to the next entry.
 * Returns 1 and fills the non-NULL out-parameters, or 0 at the end.  The
 * key pointer stays valid as long as the version does.
 */
COWMAP_API
int cowmap_iter_next(struct cowmap_iter *it, const void **key, size_t *len,
		     void **value);

/* ------------------------------------------------------------------ */
/* Comparing versions                                                  */
/* ------------------------------------------------------------------ */

enum cowmap_change { COWMAP_ADDED, COWMAP_REMOVED, COWMAP_CHANGED };

/**
 * cowmap_equal - do @a and @b hold the same keys with equal values?
 * @value_eq: returns non-zero when two values are equal; NULL compares
 *            the pointers.  It is called only for values whose pointers
 *            differ: a pointer is taken to equal itself.
 *
 * Subtrees the two versions share are skipped by pointer, so comparing a
 * version with one derived from it costs about the size of the change.
 * Versions with different seeds or hash functions are compared entry by
 * entry.  Returns 1 or 0, or -EINVAL for a NULL version.
 */
COWMAP_API
int cowmap_equal(const struct cowmap *a, const struct cowmap *b,
		 int (*value_eq)(const void *x, const void *y, void *ctx),
		 void *ctx);

/**
 * cowmap_diff - call @fn once per key that differs between @from and @to.
 *
 * old_value is NULL for COWMAP_ADDED, new_value NULL for COWMAP_REMOVED;
 * CHANGED means the value pointers differ.  Shared subtrees are skipped.
 * The keys come in no particular order.
 * Stops as soon as @fn returns non-zero and returns that value; returns 0
 * when all differences were reported, -EINVAL for NULL arguments.  Never
 * allocates.  Versions with different seeds or hash functions are compared
 * key by key (O(size)).
 */
COWMAP_API
int cowmap_diff(const struct cowmap *from, const struct cowmap *to,
		int (*fn)(enum cowmap_change what, const void *key,
			  size_t len, void *old_value, void *new_value,
			  void *ctx),
		void *ctx);

/* ------------------------------------------------------------------ */
/* Accounting                                                          */
/* ------------------------------------------------------------------ */

/**
 * struct cowmap_stats - what one version costs.
 * @entries:   number of entries.
 * @nodes:     trie nodes reachable from the version.
 * @bytes:     heap bytes reachable from it (nodes, out-of-line keys, the
 *             version header), counting memory shared with other versions.
 * @max_depth: deepest level of the trie (0 = only the root).
 */
struct cowmap_stats {
	size_t entries, nodes, bytes, max_depth;
};

/**
 * cowmap_stats - fill @out for @m by walking it (O(size)).
 * Returns 0 or -EINVAL.  Safe from any thread.
 */
COWMAP_API
int cowmap_stats(const struct cowmap *m, struct cowmap_stats *out);

/* ------------------------------------------------------------------ */
/* Cells: publishing versions through RCU                              */
/* ------------------------------------------------------------------ */

/*
 * Threads and liburcu (see README "Using cowmap with liburcu"):
 *
 *  - Every thread that reads a cell registers with the cell's flavor
 *    (rcu_register_thread() of that flavor) before its first read-side
 *    critical section and unregisters before it exits.  urcu-bp needs no
 *    registration.
 *  - Threads that write a cell (publish, cas, update, set, del,
 *    prefix_set, prefix_del, barrier, free) must be registered too, and
 *    with urcu-qsbr online: liburcu's call_rcu() and rcu_barrier() require
 *    it, and cowmap_cell_set/del read the cell in a read-side section.
 *  - call_rcu callbacks must not write cells (nor free them, nor call
 *    cowmap_cell_barrier()): they run on liburcu's call_rcu thread,
 *    which also runs the cells' own grace-period callbacks.
 *  - A writing call may wait for a grace period: when the cell is over
 *    its pending limit (see struct cowmap_cell_stats).  Outside a
 *    read-side critical section that is all it means.  Inside one it
 *    does not wait (it would wait for itself) and the limit does not
 *    hold for that call.  Under urcu-qsbr the wait takes the thread
 *    offline, which is a quiescent state: a QSBR writer must not keep a
 *    version borrowed from cowmap_cell_load() across a writing call
 *    (take a snapshot instead).
 *  - QSBR: reader threads announce quiescent states
 *    (urcu_qsbr_quiescent_state()) or go offline when idle.  A thread that
 *    stops announcing them stops every grace period: retired versions then
 *    pile up in cowmap_cell_stats().pending_bytes.
 *  - fork(): if the child keeps using cells, call the flavor's
 *    call_rcu_before_fork() before fork(), then call_rcu_after_fork_parent()
 *    in the parent and call_rcu_after_fork_child() in the child (with
 *    <urcu/urcu-memb.h> these are urcu_memb_call_rcu_before_fork() and so
 *    on).  Fork with no cell write and no grace period in progress: a
 *    write another thread has queued (cowmap_cell_set() combines them)
 *    would be copied into the child and applied there too, a writer
 *    lock held at fork() stays held in the child, and a writer waiting
 *    for the pending limit leaves the child's copy of the cell's wait
 *    with a waiter that does not exist there.  Only the forking
 *    thread exists in the child, so other threads of the parent must not
 *    be registered readers the child waits for (see tests/check_fork.c).
 *    The library's own fork handlers (its node allocator's locks) are
 *    registered when it is loaded, so a pthread_atfork() handler of the
 *    program that calls call_rcu_before_fork() runs before them, as it
 *    must: the call_rcu thread may be freeing nodes.  A program that
 *    registers such a handler before the library is loaded (dlopen()
 *    later) must call call_rcu_before_fork() itself instead.
 *  - Before unloading the library or exiting with deferred frees pending,
 *    cowmap_cell_free() every cell (it waits for them, as
 *    cowmap_cell_barrier() does).
 */

/**
 * struct cowmap_cell_stats - what a cell has published and what waits.
 * @published:     versions published since the cell was created (the
 *                 initial one aside; calls that changed nothing publish
 *                 nothing, and cowmap_cell_set/del calls combined into
 *                 one publish count once).
 * @pending_bytes: bytes that retired versions alone held, not freed yet
 *                 (estimated when retired).
 * @pending_nodes: nodes in the same state.
 * @pending_versions: retired versions not freed yet: gathering for the
 *                 next batch, in their batch's grace period, or past it
 *                 and waiting for the writers' next calls, each of which
 *                 frees a few of them (what the writers leave for a whole
 *                 grace period, liburcu's call_rcu thread frees; when
 *                 writes stop, the last batch's callback frees them all;
 *                 cowmap_cell_barrier() waits for that).
 *
 * pending_bytes counts the library's memory (nodes, boxed keys, version
 * headers), not the values: a retired version's replaced values wait
 * with it, and value_free runs when it is freed.  With large values,
 * pending_versions times the value size is what they add.
 *
 * The bound.  pending_bytes stays below the cell's pending limit
 * (COWMAP_CELL_PENDING_LIMIT, or cowmap_cell_set_pending_limit()) plus
 * what each writing thread retires in one call, whatever the number of
 * writer threads: a writer that finds the cell over its limit waits for
 * the next grace period to end and frees what it can before it returns.
 * Only a grace period that lasts longer than a second can hold memory
 * back past the bound: a reader that stays in its critical section, a
 * urcu-qsbr thread that announces no quiescent state, a writer writing
 * from inside a read-side section.  Writers do not stop behind it (after
 * one wait of a second, none waits again until a grace period ends):
 * pending_bytes grows, and shows it, until that grace period ends, and
 * drains within a few grace periods after.
 */
struct cowmap_cell_stats {
	uint64_t published;
	size_t pending_bytes, pending_nodes;
	size_t pending_versions;
};

/* The default pending limit of a cell, in bytes (see above). */
#define COWMAP_CELL_PENDING_LIMIT ((size_t)32 << 20)

/**
 * cowmap_cell_new - a cell whose current version is @initial.
 * @initial: stolen (also on failure); NULL publishes an empty map with
 *           default options.  Check what cowmap_new(&opts) returned before
 *           passing it here: a failed cowmap_new() would otherwise give
 *           the cell default options, without your value_free or limit.
 * @flavor:  the liburcu flavor its readers use, e.g. &urcu_qsbr_flavor;
 *           NULL means urcu-memb.
 * Returns NULL with errno ENOMEM (or, for a NULL @initial, the errors of
 * cowmap_new(NULL)).  Debug builds (configure --enable-debug) also refuse
 * an @initial that was already released: NULL with errno EINVAL, and a
 * report on stderr.  Any thread; it needs no registration.
 */
COWMAP_API
struct cowmap_cell *cowmap_cell_new(struct cowmap *initial,
				    const struct rcu_flavor_struct *flavor);

/**
 * cowmap_cell_free - destroy a cell; NULL is ignored.
 *
 * Drops the current version and waits, as cowmap_cell_barrier() does,
 * until every version the cell retired is freed, so nothing is pending
 * when it returns.  No reader may use the cell any more, and no other
 * thread may write to it.  Must not be called inside a read-side critical
 * section or from a call_rcu callback.  Called inside a read-side
 * critical section, where it would wait for itself, it frees nothing and
 * returns with errno set to EDEADLK, leaving the cell usable (debug
 * builds also report it on stderr): a caller that may be in such a
 * section sets errno to 0 first and checks it after.  Under urcu-qsbr a
 * section cannot be told from being online.
 *
 * A freed cell must not be passed to any cowmap_cell_* call again.  Debug
 * builds keep freed cells poisoned for a while and answer such a call
 * with EINVAL (NULL for load and snapshot) and a report on stderr.
 */
COWMAP_API
void cowmap_cell_free(struct cowmap_cell *c);

/**
 * cowmap_cell_barrier - wait until what the cell retired so far is freed.
 *
 * Returns once every version that the cell replaced before the call is
 * freed: its nodes given back, and value_free called for each value that
 * no remaining version holds.  A plain rcu_barrier() is not enough for
 * that: retired versions wait for their grace period in batches, one
 * call_rcu() per cell at a time, and the callback of one batch queues the
 * next.  Other threads may go on writing meanwhile; what they retire may
 * still be pending when this returns.  It usually waits for two grace
 * periods and as many loops of liburcu's call_rcu thread (some tens of
 * milliseconds).
 * Call from a thread registered with the flavor and, with urcu-qsbr,
 * online (it may queue a batch with call_rcu(); it goes offline while it
 * waits, as rcu_barrier() does), never inside a read-side critical
 * section or from a call_rcu callback.
 * Returns 0, -EINVAL for a NULL cell, or -EDEADLK, at once and having
 * done nothing, when called inside a read-side critical section (which
 * would wait for itself).  Under urcu-qsbr a section cannot be told from
 * being online, so there the call is the caller's to place right.
 */
COWMAP_API
int cowmap_cell_barrier(struct cowmap_cell *c);

/**
 * cowmap_cell_load - the current version, borrowed.
 *
 * Call inside rcu_read_lock() of the cell's flavor; the result stays valid
 * until the matching rcu_read_unlock() and must not be released.  Costs one
 * acquire load: no lock, no allocation, no shared store.  NULL for a NULL
 * cell.
 *
 * The thread must be registered with the cell's flavor
 * (rcu_register_thread() of that flavor; urcu-bp registers by itself).
 * An unregistered thread's rcu_read_lock() looks like it works, but no
 * grace period waits for it, so the version can be freed while it reads:
 * silent corruption in release builds.  Debug builds (configure
 * --enable-debug) report such a read on stderr, naming the call.
 */
COWMAP_API
const struct cowmap *cowmap_cell_load(struct cowmap_cell *c);

/**
 * cowmap_cell_snapshot - the current version as a new reference.
 * Usable anywhere, in any thread, after any number of later publishes,
 * until released.  The calling thread must be registered with the flavor
 * (it enters a read-side critical section itself; nesting is fine) and,
 * with urcu-qsbr, online.
 * Returns NULL with errno EINVAL for a NULL cell, or ENOSPC when the
 * current version holds as many references as cowmap_retain() allows.
 */
COWMAP_API
struct cowmap *cowmap_cell_snapshot(struct cowmap_cell *c);

/**
 * cowmap_cell_publish - make @next the current version.
 * @next: stolen in every case, also on failure.  It must be of the cell's
 *        family: the same value_free, context, hash function and
 *        max_entries as the cell's first version (every version derived
 *        from it, and cowmap_empty_like() of it, are).  The seed may
 *        differ, but then cowmap_diff() against the versions before
 *        walks both whole: build a reloaded table on cowmap_empty_like().
 * Returns 0, -EINVAL (NULL argument, or a version of another family: its
 * values would be freed by the wrong function, or never), or -ENOMEM
 * (the current version is kept).  The old version is released after a
 * grace period.  Like every writing call, after publishing and before
 * returning it may wait for a grace period when the cell is over its
 * pending limit (struct cowmap_cell_stats): readers see @next already.
 */
COWMAP_API
int cowmap_cell_publish(struct cowmap_cell *c, struct cowmap *next);

/**
 * cowmap_cell_cas - publish @next only if @expected is still current.
 * @expected: compared by pointer; hold a reference to it (a snapshot) so it
 *            cannot be freed and reused meanwhile.  NULL never matches
 *            (-EAGAIN).
 * @next:     stolen in every case; of the cell's family, as for publish.
 * Returns 0, -EAGAIN if another version won, -EINVAL (NULL @c or @next,
 * another family: checked before @expected), or -ENOMEM (nothing
 * published).  Only a successful call may wait, as publish does.
 */
COWMAP_API
int cowmap_cell_cas(struct cowmap_cell *c, const struct cowmap *expected,
		    struct cowmap *next);

/**
 * cowmap_cell_update - publish fn(current) atomically.
 *
 * @fn runs with the cell's writer lock held and must return a new
 * reference of the cell's family, or NULL with errno set to abort
 * (returned as -errno; -EINVAL if errno is 0).  Returning cur means "no
 * change" and publishes nothing, whether @fn retained it
 * (cowmap_retain(cur), cowmap_set() of an unchanged value, an empty
 * transaction's commit) or not: the cell counts the references @fn's
 * thread takes and drops on cur and drops one if the count is up.  So
 * an @fn that returns cur unretained must not keep a reference to cur it
 * took (a retain, a snapshot, an open transaction on cur): the cell
 * would take that one for the returned one.
 * A version of another family is refused (-EINVAL) and released.
 * @fn must not write to the same cell, and should not write to others:
 * such a write may wait for a grace period (the pending limit) while
 * this cell's writers wait for @fn.
 *
 * Returns 0 (also when @fn returned cur: nothing is published), the
 * -errno of @fn's NULL, -EINVAL (NULL @c or @fn, or a version of another
 * family), or -ENOMEM (then @fn was not called).  Once @fn has run, the
 * call may wait for a grace period as publish does, whatever @fn
 * returned.
 */
COWMAP_API
int cowmap_cell_update(struct cowmap_cell *c,
		       struct cowmap *(*fn)(const struct cowmap *cur,
					    void *arg),
		       void *arg);

/**
 * cowmap_cell_set - set one key in the current version and publish.
 *
 * Concurrent calls on one cell are combined: whoever holds the writer lock
 * applies every queued change, in the order they came, and publishes
 * once, while the other callers wait for their answer without sleeping
 * for a while.  Each change succeeds or fails on its own.  A call that
 * changes nothing (same value) or that the limit refuses is answered
 * without allocating.  A call may also free versions that earlier
 * publishes retired (see value_free), and wait for a grace period as
 * publish does.
 * Returns 0, or -ENOMEM, -ENOSPC (max_entries) or -EINVAL (NULL cell, a
 * prefix table's cell, a key cowmap_get() would refuse), with @value
 * still the caller's on failure.
 */
COWMAP_API
int cowmap_cell_set(struct cowmap_cell *c, const void *key, size_t len,
		    void *value);

/**
 * cowmap_cell_del - remove one key from the current version and publish.
 * Returns 1 if removed, 0 if absent (nothing published), or -ENOMEM or
 * -EINVAL (as cowmap_cell_set()).  Combined like cowmap_cell_set(), with
 * its thread rules.
 */
COWMAP_API
int cowmap_cell_del(struct cowmap_cell *c, const void *key, size_t len);

/**
 * cowmap_cell_set_pending_limit - bound the bytes waiting for a grace
 * period.
 * @bytes: the new limit (see struct cowmap_cell_stats for what it
 *         bounds); SIZE_MAX lets writers run ahead of reclamation as far
 *         as grace periods allow.  The default is COWMAP_CELL_PENDING_LIMIT.
 * A smaller limit keeps memory tighter and makes writers wait for grace
 * periods sooner; 0 makes nearly every writing call wait for one.  Writing
 * calls read the limit as they finish, so a new one holds from the next
 * such call on; nothing waiting is freed by lowering it.  Returns 0, or
 * -EINVAL for a NULL cell.  Safe from any thread, registered or not.
 */
COWMAP_API
int cowmap_cell_set_pending_limit(struct cowmap_cell *c, size_t bytes);

/**
 * cowmap_cell_stats - fill @out; returns 0 or -EINVAL.
 * Cheap (a few relaxed loads) and safe from any thread.  The figures are
 * read one by one while callbacks may run, so together they are a
 * moment's estimate: pending_versions can already be 0 while a block of
 * the last retired version is being freed.
 */
COWMAP_API
int cowmap_cell_stats(struct cowmap_cell *c, struct cowmap_cell_stats *out);

/* ------------------------------------------------------------------ */
/* Prefix tables: longest-prefix match                                 */
/* ------------------------------------------------------------------ */

/*
 * A prefix table is a version (struct cowmap) of another kind: its keys
 * are prefixes of a bit string of fixed width, one width per table (32
 * for IPv4, 128 for IPv6; any width from 1 to 128), and besides exact
 * look-ups it answers the longest stored prefix that covers an address.
 *
 * Everything said above about versions holds for prefix tables too, and
 * these calls work on them unchanged: cowmap_retain(), cowmap_release(),
 * cowmap_size(), cowmap_stats(), cowmap_equal(), cowmap_txn_begin(),
 * cowmap_txn_commit(), cowmap_txn_abort(), cowmap_txn_size(),
 * cowmap_iter_init(), and every cell call (new, free, load, snapshot,
 * publish, cas, update, barrier, stats) with the same RCU rules: a reader
 * calls cowmap_prefix_lookup() on the version cowmap_cell_load() gave it
 * inside its read-side critical section, exactly as it would call
 * cowmap_get() on a map.  A cell holds versions of one family: a prefix
 * table of one width, or a hash map, never both.
 *
 * The hash-map calls that take a key (cowmap_get, cowmap_get_many,
 * cowmap_set, cowmap_del, cowmap_txn_set/set_many/del/get,
 * cowmap_cell_set/del, cowmap_iter_next, cowmap_diff) refuse a prefix
 * table: EINVAL (cowmap_get_many and cowmap_iter_next find nothing), and
 * the calls below refuse a hash map the same way.
 *
 * Addresses.  An address is (width + 7) / 8 bytes in network order: the
 * most significant bit of the first byte is bit 0 of the string.  A prefix
 * is an address and a length in bits, from 0 (the default route, which
 * covers every address) to the width (a host route).  Bits of the address
 * beyond the length are ignored: 10.1.2.3/8 and 10.0.0.0/8 name the same
 * prefix, and calls that return a prefix return it with those bits zero.
 * (For a width that is not a multiple of 8 the unused low bits of the
 * last byte are ignored likewise.)  A NULL address, or a length beyond the
 * width, is EINVAL and changes nothing.
 *
 * Values are void *, owned as for maps: with options.value_free the table
 * owns every value passed to a successful set and frees each exactly once,
 * when no version holds it and no reader can still see it.
 */

/** cowmap_route - one prefix and its value, for cowmap_txn_prefix_set_many(). */
struct cowmap_route {
	const void *addr;	/* (width + 7) / 8 bytes, network order */
	unsigned len;		/* prefix length in bits, 0..width */
	void *value;
};

/**
 * cowmap_prefix_new - an empty prefix table of @width bits.
 * @width: 1..128 (32 for IPv4, 128 for IPv6).
 * @opts:  as for cowmap_new(), copied; NULL for the defaults.  seed and
 *         hash are not used; value_free, ctx and max_entries (a limit on
 *         the number of prefixes) are.
 *
 * Returns a new reference, or NULL with errno EINVAL (a width of 0 or more
 * than 128) or ENOMEM.
 */
COWMAP_API
struct cowmap *cowmap_prefix_new(unsigned width,
				 const struct cowmap_options *opts);

/**
 * cowmap_prefix_width - the width of prefix table @m in bits; 0 for a hash
 * map or NULL.  Safe anywhere, as cowmap_size().
 */
COWMAP_API
unsigned cowmap_prefix_width(const struct cowmap *m);

/**
 * cowmap_prefix_set - a new version in which prefix @addr/@len maps to
 * @value.
 *
 * Returns a new reference; @t is unchanged.  If the prefix already maps to
 * exactly @value the result is @t itself (retained) and no value is
 * transferred.  On failure returns NULL with errno EINVAL (@t not a prefix
 * table, NULL @addr, @len beyond the width), ENOSPC (max_entries, or @t
 * holds as many references as cowmap_retain() allows) or ENOMEM, and
 * @value still belongs to the caller.  A value it replaces is passed to
 * value_free when the last version holding it goes.
 */
COWMAP_API
struct cowmap *cowmap_prefix_set(const struct cowmap *t, const void *addr,
				 unsigned len, void *value);

/**
 * cowmap_prefix_del - a new version without prefix @addr/@len.
 *
 * Only that exact prefix goes; shorter prefixes it covered answer
 * look-ups again, longer ones inside it stay.  Returns a new reference
 * (@t itself, retained, when the prefix is absent), or NULL with errno
 * EINVAL, ENOSPC (as cowmap_retain()) or ENOMEM.
 */
COWMAP_API
struct cowmap *cowmap_prefix_del(const struct cowmap *t, const void *addr,
				 unsigned len);

/**
 * cowmap_prefix_get - exact match: the value stored for prefix @addr/@len.
 * @value: receives it when found (may be NULL).
 *
 * Returns 1 if found, 0 if absent, -EINVAL for bad arguments.  Allocates
 * nothing, locks nothing, writes nothing shared: safe inside RCU
 * read-side critical sections and from any number of threads.
 */
COWMAP_API
int cowmap_prefix_get(const struct cowmap *t, const void *addr, unsigned len,
		      void **value);

/**
 * cowmap_prefix_lookup - longest-prefix match of address @addr.
 * @value: receives the value of the longest stored prefix covering @addr
 *         (may be NULL).
 * @len:   receives that prefix's length (may be NULL).
 *
 * Returns 1 if some prefix covers @addr, 0 if none does (with a default
 * route /0 stored, every address is covered), -EINVAL for a NULL table or
 * address or a hash map.  Reads (width + 7) / 8 bytes at @addr.  Same
 * thread-safety as cowmap_prefix_get(): this is the forwarding fast path.
 */
COWMAP_API
int cowmap_prefix_lookup(const struct cowmap *t, const void *addr,
			 void **value, unsigned *len);

/**
 * cowmap_prefix_lookup_many - longest-prefix match of @n addresses at once.
 * @addrs:  @n addresses packed one after another, (width + 7) / 8 bytes
 *          each (4 for IPv4, 16 for IPv6).
 * @values: values[i] receives address i's value, or NULL when no prefix
 *          covers it.
 * @lens:   lens[i] receives the matched length, 0 when none matched; may
 *          be NULL.  A default route (/0) also gives 0, and a stored NULL
 *          value looks like no match: to tell them apart, store non-NULL
 *          values or use the return value of cowmap_prefix_lookup().
 *
 * The look-ups advance together, a node per round with prefetching, so a
 * batch pays memory latency about once per level rather than once per
 * address, as cowmap_get_many() does.  Returns the number of addresses
 * matched; 0 with errno EINVAL for a NULL or hash-map table, or NULL
 * @addrs or @values with @n > 0.  Same thread-safety as
 * cowmap_prefix_lookup().
 */
COWMAP_API
size_t cowmap_prefix_lookup_many(const struct cowmap *t, size_t n,
				 const void *addrs, void *values[],
				 unsigned lens[]);

/**
 * cowmap_prefix_iter_next - step to the next prefix of the table that
 * cowmap_iter_init(@it, table) positioned @it on.
 * @addr:  receives the prefix, (width + 7) / 8 bytes with the bits beyond
 *         its length zero (may be NULL).
 * @len:   receives its length (may be NULL).
 * @value: receives its value (may be NULL).
 *
 * Returns 1, or 0 at the end (at once for a hash map).  Every prefix comes
 * exactly once, and after every stored prefix that covers it (so a table
 * refilled in this order never meets a prefix before its parents); the
 * order is otherwise unspecified.  Allocates nothing; the same rules as
 * cowmap_iter_next() (the version must stay alive while iterating).
 */
COWMAP_API
int cowmap_prefix_iter_next(struct cowmap_iter *it, void *addr, unsigned *len,
			    void **value);

/**
 * cowmap_prefix_diff - call @fn once per prefix that differs between two
 * prefix tables of the same width.
 *
 * As cowmap_diff(): old_value NULL for COWMAP_ADDED, new_value NULL for
 * COWMAP_REMOVED, COWMAP_CHANGED when the value pointers differ; @addr
 * (valid during the call only) has the bits beyond @len zero.  Subtrees
 * the versions share are skipped by pointer, so the cost follows the
 * difference.  Stops when @fn returns non-zero and returns that value;
 * returns 0 when all were reported, -EINVAL for NULL arguments, a hash
 * map, or different widths.  Never allocates.
 */
COWMAP_API
int cowmap_prefix_diff(const struct cowmap *from, const struct cowmap *to,
		       int (*fn)(enum cowmap_change what, const void *addr,
				 unsigned len, void *old_value,
				 void *new_value, void *ctx),
		       void *ctx);

/*
 * Transactions on prefix tables: cowmap_txn_begin() on a prefix table
 * gives a draft these calls edit (the hash-map txn calls refuse it);
 * cowmap_txn_commit(), cowmap_txn_abort() and cowmap_txn_size() work as
 * for maps.
 */

/**
 * cowmap_txn_prefix_set - set prefix @addr/@len to @value in the draft.
 * Returns 0, or -EINVAL (bad arguments, a hash-map draft or a finished
 * transaction), -ENOSPC (max_entries) or -ENOMEM.  On failure the draft
 * is as it was and @value still belongs to the caller.  A value replaced
 * inside the draft that no version holds is passed to value_free at once.
 */
COWMAP_API
int cowmap_txn_prefix_set(struct cowmap_txn *t, const void *addr,
			  unsigned len, void *value);

/**
 * cowmap_txn_prefix_del - remove prefix @addr/@len from the draft.
 * Returns 1 if removed, 0 if absent, or -EINVAL / -ENOMEM (the draft
 * unchanged).
 */
COWMAP_API
int cowmap_txn_prefix_del(struct cowmap_txn *t, const void *addr,
			  unsigned len);

/**
 * cowmap_txn_prefix_get - exact match in the draft; as cowmap_prefix_get().
 */
COWMAP_API
int cowmap_txn_prefix_get(const struct cowmap_txn *t, const void *addr,
			  unsigned len, void **value);

/**
 * cowmap_txn_prefix_set_many - set @n routes in the draft, all or nothing.
 * @routes: routes[i].value is stored under routes[i].addr/len.
 *
 * The same as cowmap_txn_prefix_set() for each route in order (the last
 * route for a prefix wins), except that it is all or nothing: on failure
 * the draft is as it was and every value still belongs to the caller.
 * With value_free, a value that a later route for the same prefix
 * replaced is passed to it once, unless the prefix ends with that very
 * pointer.  Loading a whole route list into an empty table is the case it
 * is for: nodes the batch creates are filled in place.
 * Returns 0, or -EINVAL (NULL @routes with @n > 0, any bad route - checked
 * before anything changes - or a finished or hash-map transaction),
 * -ENOSPC (the draft would hold more than max_entries) or -ENOMEM.
 */
COWMAP_API
int cowmap_txn_prefix_set_many(struct cowmap_txn *t, size_t n,
			       const struct cowmap_route routes[]);

/**
 * cowmap_cell_prefix_set - set one prefix in the cell's current version
 * and publish the result.
 *
 * A cowmap_cell_update() of cowmap_prefix_set(): writers are serialised by
 * the cell's writer lock and readers see the old version or the new one,
 * never a mix.  Unlike cowmap_cell_set(), concurrent calls are not
 * combined: each copies the path and publishes in turn (for many routes,
 * use a transaction and cowmap_cell_publish()).  The same thread rules as
 * cowmap_cell_update(), so never from inside an @fn of the same cell.
 * Returns 0 (also when the prefix already had @value: nothing is
 * published), or -EINVAL (NULL cell, the cell holds a hash map, NULL
 * @addr, @len beyond the width), -ENOSPC (max_entries, or the reference
 * limit of cowmap_retain()) or -ENOMEM, with @value still the caller's on
 * failure.
 */
COWMAP_API
int cowmap_cell_prefix_set(struct cowmap_cell *c, const void *addr,
			   unsigned len, void *value);

/**
 * cowmap_cell_prefix_del - remove one prefix from the cell's current
 * version and publish.  Only that exact prefix goes, as with
 * cowmap_prefix_del().  Returns 1 if removed, 0 if absent (nothing
 * published), or -EINVAL, -ENOSPC (reference limit) or -ENOMEM as
 * cowmap_cell_prefix_set(); the same thread rules.
 */
COWMAP_API
int cowmap_cell_prefix_del(struct cowmap_cell *c, const void *addr,
			   unsigned len);

/** cowmap_version - the library's COWMAP_VERSION_NUMBER at run time. */
COWMAP_API
uint32_t cowmap_version(void);

#ifdef __cplusplus
}
#endif

#endif /* COWMAP_H */
