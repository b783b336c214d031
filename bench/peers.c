/*
 * peers.c - the tables under test, each behind the same small adapter
 * (struct impl in bench.h), used the way that table's own documentation
 * says to use it for a shared, read-mostly map:
 *
 *   cowmap        built by one transaction, published in a cell; readers
 *                 rcu_read_lock(), cowmap_cell_load(), cowmap_get();
 *                 writers cowmap_cell_set().
 *   cds_lfht      urcu-memb flavor, grown by the builder to at most one
 *                 entry per bucket (see lf_build); lookups inside
 *                 rcu_read_lock(); writers add_replace and free the
 *                 replaced node after a grace period.
 *   ck_hs         CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT over malloc; one
 *                 writer at a time (a mutex); replaced objects and
 *                 deferred table frees go through the same urcu-memb
 *                 grace periods, so readers hold rcu_read_lock() too.
 *   ghash_rwlock  GHashTable used as a set of objects (key == value, so it
 *                 keeps no separate value array), pthread_rwlock_t around
 *                 every operation.
 *   copy_swap     see cs_publish().
 *
 * Each stores one heap object per entry holding a copy of the key bytes
 * and the value, the same as cowmap's boxed entries, and hashes with
 * SipHash-1-3 under BENCH_SEED.  Builds take no lock: a table is built
 * privately before it is shared, so each peer's insert is measured at its
 * cheapest.
 *
 * "rcu_read_lock()" above means urcu_memb_read_lock(): the urcu-memb names
 * are spelled out because liburcu 0.13 maps the short ones only through
 * <urcu.h>.  They are liburcu's exported functions (no _LGPL_SOURCE), the
 * same call for cowmap, cds_lfht and ck_hs.
 */
#include <urcu/urcu-memb.h>	/* before rculfhash.h and cowmap.h */
#include <urcu/rculfhash.h>
#include <cowmap.h>

#include <ck_hs.h>
#include <glib.h>

#include "bench.h"
#include "hash.h"	/* cm_hash_keyed(): the library's SipHash-1-3 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void die(const char *what)
{
	fprintf(stderr, "cowmap-bench: %s\n", what);
	exit(EXIT_FAILURE);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		die("out of memory");
	return p;
}

struct kv *kv_copy(const struct kv *q, void *value)
{
	struct kv *o = xmalloc(kv_size(q->len));

	o->value = value;
	o->len = q->len;
	memcpy(o->key, q->key, q->len);
	return o;
}

/* The SipHash key cowmap derives from BENCH_SEED, derived once here too
 * (before main(), so reader threads only read it). */
static struct cm_sipkey bench_sipkey;

__attribute__((constructor)) static void bench_sipkey_init(void)
{
	bench_sipkey = cm_sipkey_from_seed(BENCH_SEED);
}

uint64_t bench_hash(const struct kv *q)
{
	return cm_hash_keyed(&bench_sipkey, q->key, q->len);
}

static inline bool kv_equal(const struct kv *a, const struct kv *b)
{
	return a->len == b->len && memcmp(a->key, b->key, a->len) == 0;
}

static size_t pow2_at_least(size_t x)
{
	size_t p = 1;

	while (p < x)
		p <<= 1;
	return p;
}

/* ---- deferred freeing ---- */

#define RETIRE_BATCH 1024

struct retire_batch {
	struct rcu_head head;
	size_t n;
	void *p[RETIRE_BATCH];
};

static void retire_batch_free(struct rcu_head *head)
{
	struct retire_batch *b = caa_container_of(head, struct retire_batch,
						  head);

	for (size_t i = 0; i < b->n; i++)
		free(b->p[i]);
	free(b);
}

void retire_push(struct retire *r, void *p)
{
	if (r->batch == NULL) {
		r->batch = xmalloc(sizeof(*r->batch));
		r->batch->n = 0;
	}
	r->batch->p[r->batch->n++] = p;
	if (r->batch->n == RETIRE_BATCH)
		retire_flush(r);
}

void retire_flush(struct retire *r)
{
	if (r->batch == NULL)
		return;
	urcu_memb_call_rcu(&r->batch->head, retire_batch_free);
	r->batch = NULL;
}

/* ------------------------------------------------------------------ */
/* cowmap                                                              */
/* ------------------------------------------------------------------ */

struct cm_table {
	struct cowmap_cell *cell;
};

struct cowmap_cell *bench_cowmap_cell(void *t)
{
	return ((struct cm_table *)t)->cell;
}

/* A table as users load one: the pairs in arrays, one batch. */
static struct cowmap_txn *cm_load_batch(struct cowmap_txn *t,
					struct kv *const *keys, size_t n)
{
	const void **kp = xmalloc(n * sizeof(*kp));
	size_t *lens = xmalloc(n * sizeof(*lens));
	void **values = xmalloc(n * sizeof(*values));

	for (size_t i = 0; i < n; i++) {
		kp[i] = keys[i]->key;
		lens[i] = keys[i]->len;
		values[i] = keys[i]->value;
	}
	if (cowmap_txn_set_many(t, n, kp, lens, values) < 0)
		die("cowmap_txn_set_many failed");
	free(kp);
	free(lens);
	free(values);
	return t;
}

static struct cowmap_txn *cm_load_singly(struct cowmap_txn *t,
					 struct kv *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (cowmap_txn_set(t, keys[i]->key, keys[i]->len,
				   keys[i]->value) < 0)
			die("cowmap_txn_set failed");
	return t;
}

static void *cm_build_with(struct kv *const *keys, size_t n,
			   struct cowmap_txn *(*load)(struct cowmap_txn *,
						      struct kv *const *,
						      size_t))
{
	struct cowmap_options o = { .seed = BENCH_SEED };
	struct cowmap *empty = cowmap_new(&o);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;

	cowmap_release(empty);	/* the draft holds its own reference */
	if (t == NULL)
		die("cowmap_txn_begin failed");

	struct cowmap *m = cowmap_txn_commit(load(t, keys, n));
	struct cm_table *ct = xmalloc(sizeof(*ct));

	if (m == NULL || cowmap_size(m) != n)
		die("cowmap build lost entries");
	ct->cell = cowmap_cell_new(m, NULL);
	if (ct->cell == NULL)
		die("cowmap_cell_new failed");
	return ct;
}

static void *cm_build(struct kv *const *keys, size_t n)
{
	return cm_build_with(keys, n, cm_load_batch);
}

void *bench_cowmap_build_singly(struct kv *const *keys, size_t n)
{
	return cm_build_with(keys, n, cm_load_singly);
}

static void cm_destroy(void *t)
{
	struct cm_table *ct = t;

	cowmap_cell_free(ct->cell);
	free(ct);
}

static uintptr_t cm_read(void *t, struct kv *const *order, size_t n,
			 size_t pos, size_t count, uint64_t *hits)
{
	struct cowmap_cell *cell = ((struct cm_table *)t)->cell;
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];
		void *v = NULL;

		if (++pos == n)
			pos = 0;
		urcu_memb_read_lock();
		int r = cowmap_get(cowmap_cell_load(cell), q->key, q->len, &v);
		urcu_memb_read_unlock();
		if (r == 1) {
			h++;
			acc += (uintptr_t)v;
		}
	}
	*hits += h;
	return acc;
}

static void cm_write(void *t, const struct kv *q, void *value,
		     struct retire *r)
{
	(void)r;	/* the cell retires what it replaces */
	if (cowmap_cell_set(((struct cm_table *)t)->cell, q->key, q->len,
			    value) < 0)
		die("cowmap_cell_set failed");
}

/* A cell retires in batches, which rcu_barrier() alone does not wait
 * for (cowmap_cell_barrier() in include/cowmap.h). */
static void cm_settle(void *t)
{
	cowmap_cell_barrier(((struct cm_table *)t)->cell);
}

/* The peers retire through call_rcu() one object at a time. */
static void peer_settle(void *t)
{
	(void)t;
	urcu_memb_barrier();
}

const struct impl impl_cowmap = {
	.name = "cowmap",
	.is_peer = false,
	.build = cm_build,
	.destroy = cm_destroy,
	.read_loop = cm_read,
	.write_one = cm_write,
	.settle = cm_settle,
};

/* ------------------------------------------------------------------ */
/* cds_lfht                                                            */
/* ------------------------------------------------------------------ */

struct lf_node {
	struct cds_lfht_node node;
	void *value;
	uint32_t len;
	unsigned char key[];
};

struct lf_table {
	struct cds_lfht *ht;
};

static int lf_match(struct cds_lfht_node *node, const void *key)
{
	const struct lf_node *x = caa_container_of(node, struct lf_node, node);
	const struct kv *q = key;

	return x->len == q->len && memcmp(x->key, q->key, q->len) == 0;
}

static struct lf_node *lf_node_new(const struct kv *q, void *value)
{
	struct lf_node *x = xmalloc(sizeof(*x) + q->len);

	cds_lfht_node_init(&x->node);
	x->value = value;
	x->len = q->len;
	memcpy(x->key, q->key, q->len);
	return x;
}

/*
 * Bulk load.  cds_lfht's automatic resize (CDS_LFHT_AUTO_RESIZE) grows the
 * table lazily from a helper thread, and only when chains reach length 8
 * or at power-of-two counts: a single thread inserting flat out outruns
 * it by far (23 us/entry measured at 1M keys starting from 1,024 buckets,
 * chains of hundreds).  So the build grows the table itself, doubling it
 * whenever the count reaches the bucket count, which keeps the load at
 * most 1 and is the fastest way to fill a cds_lfht from one thread.
 */
static void *lf_build(struct kv *const *keys, size_t n)
{
	struct lf_table *lt = xmalloc(sizeof(*lt));
	unsigned long buckets = 1024;

	/* max_nr_buckets 0: the "order" bucket allocator, i.e. calloc, so
	 * the heap accounting sees the buckets as it sees everyone's. */
	lt->ht = cds_lfht_new_flavor(buckets, buckets, 0, 0, &urcu_memb_flavor,
				     NULL);
	if (lt->ht == NULL)
		die("cds_lfht_new failed");
	for (size_t i = 0; i < n; i++) {
		if (i == buckets) {
			buckets *= 2;
			cds_lfht_resize(lt->ht, buckets);
		}

		struct lf_node *x = lf_node_new(keys[i], keys[i]->value);
		unsigned long h = (unsigned long)bench_hash(keys[i]);

		urcu_memb_read_lock();
		struct cds_lfht_node *got =
			cds_lfht_add_unique(lt->ht, h, lf_match, keys[i], &x->node);
		urcu_memb_read_unlock();
		if (got != &x->node)
			die("cds_lfht: duplicate key");
	}
	return lt;
}

static void lf_destroy(void *t)
{
	struct lf_table *lt = t;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	size_t cap = 1024, n = 0;
	void **all = xmalloc(cap * sizeof(*all));

	urcu_memb_read_lock();
	cds_lfht_for_each(lt->ht, &it, node) {
		if (cds_lfht_del(lt->ht, node) == 0) {
			if (n == cap) {
				cap *= 2;
				all = realloc(all, cap * sizeof(*all));
				if (all == NULL)
					die("out of memory");
			}
			all[n++] = caa_container_of(node, struct lf_node, node);
		}
	}
	urcu_memb_read_unlock();
	urcu_memb_synchronize_rcu();
	for (size_t i = 0; i < n; i++)
		free(all[i]);
	free(all);
	if (cds_lfht_destroy(lt->ht, NULL) != 0)
		die("cds_lfht_destroy failed");
	free(lt);
}

static uintptr_t lf_read(void *t, struct kv *const *order, size_t n,
			 size_t pos, size_t count, uint64_t *hits)
{
	struct cds_lfht *ht = ((struct lf_table *)t)->ht;
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];
		struct cds_lfht_iter it;

		if (++pos == n)
			pos = 0;
		unsigned long hv = (unsigned long)bench_hash(q);

		urcu_memb_read_lock();
		cds_lfht_lookup(ht, hv, lf_match, q, &it);
		struct cds_lfht_node *node = cds_lfht_iter_get_node(&it);
		if (node != NULL) {
			h++;
			acc += (uintptr_t)caa_container_of(node, struct lf_node,
							   node)->value;
		}
		urcu_memb_read_unlock();
	}
	*hits += h;
	return acc;
}

static void lf_write(void *t, const struct kv *q, void *value,
		     struct retire *r)
{
	struct cds_lfht *ht = ((struct lf_table *)t)->ht;
	struct lf_node *x = lf_node_new(q, value);
	unsigned long hv = (unsigned long)bench_hash(q);

	urcu_memb_read_lock();
	struct cds_lfht_node *old = cds_lfht_add_replace(ht, hv, lf_match, q,
							 &x->node);
	urcu_memb_read_unlock();
	if (old != NULL)
		retire_push(r, caa_container_of(old, struct lf_node, node));
}

const struct impl impl_lfht = {
	.name = "cds_lfht",
	.is_peer = true,
	.build = lf_build,
	.destroy = lf_destroy,
	.read_loop = lf_read,
	.write_one = lf_write,
	.settle = peer_settle,
};

/* ------------------------------------------------------------------ */
/* ck_hs                                                               */
/* ------------------------------------------------------------------ */

/*
 * ck_hs frees a replaced slot array with defer = true: readers may still
 * be probing it.  The header in front of every block lets that free wait
 * for an urcu-memb grace period (the same protection the readers hold).
 */
struct ckm_hdr {
	struct rcu_head head;
};

static void ckm_free_cb(struct rcu_head *head)
{
	free(caa_container_of(head, struct ckm_hdr, head));
}

static void *ckm_malloc(size_t r)
{
	struct ckm_hdr *h = malloc(sizeof(*h) + r);

	return h != NULL ? h + 1 : NULL;
}

static void ckm_free(void *p, size_t b, bool defer)
{
	struct ckm_hdr *h;

	(void)b;
	if (p == NULL)
		return;
	h = (struct ckm_hdr *)p - 1;
	if (defer)
		urcu_memb_call_rcu(&h->head, ckm_free_cb);
	else
		free(h);
}

static void *ckm_realloc(void *p, size_t old, size_t new, bool defer)
{
	void *q = ckm_malloc(new);

	if (q != NULL && p != NULL) {
		memcpy(q, p, old < new ? old : new);
		ckm_free(p, old, defer);
	}
	return q;
}

static struct ck_malloc ck_allocator = {
	.malloc = ckm_malloc,
	.realloc = ckm_realloc,
	.free = ckm_free,
};

struct ck_table {
	ck_hs_t hs;
	pthread_mutex_t writer;
};

static unsigned long ck_hf(const void *obj, unsigned long seed)
{
	(void)seed;
	return (unsigned long)bench_hash(obj);
}

static bool ck_cmp(const void *a, const void *b)
{
	return kv_equal(a, b);
}

static void *ck_build(struct kv *const *keys, size_t n)
{
	struct ck_table *ct = xmalloc(sizeof(*ct));

	pthread_mutex_init(&ct->writer, NULL);
	if (!ck_hs_init(&ct->hs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT, ck_hf,
			ck_cmp, &ck_allocator, 8, BENCH_SEED))
		die("ck_hs_init failed");
	for (size_t i = 0; i < n; i++) {
		struct kv *o = kv_copy(keys[i], keys[i]->value);

		if (!ck_hs_put(&ct->hs, (unsigned long)bench_hash(o), o))
			die("ck_hs_put failed");
	}
	return ct;
}

static void ck_destroy(void *t)
{
	struct ck_table *ct = t;
	ck_hs_iterator_t it = CK_HS_ITERATOR_INITIALIZER;
	void *obj;

	while (ck_hs_next(&ct->hs, &it, &obj))
		free(obj);
	ck_hs_destroy(&ct->hs);
	pthread_mutex_destroy(&ct->writer);
	free(ct);
}

static uintptr_t ck_read(void *t, struct kv *const *order, size_t n,
			 size_t pos, size_t count, uint64_t *hits)
{
	ck_hs_t *hs = &((struct ck_table *)t)->hs;
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];

		if (++pos == n)
			pos = 0;
		unsigned long hv = (unsigned long)bench_hash(q);

		urcu_memb_read_lock();
		const struct kv *o = ck_hs_get(hs, hv, q);
		if (o != NULL) {
			h++;
			acc += (uintptr_t)o->value;
		}
		urcu_memb_read_unlock();
	}
	*hits += h;
	return acc;
}

static void ck_write(void *t, const struct kv *q, void *value,
		     struct retire *r)
{
	struct ck_table *ct = t;
	struct kv *o = kv_copy(q, value);
	void *prev = NULL;
	unsigned long hv = (unsigned long)bench_hash(q);

	pthread_mutex_lock(&ct->writer);
	bool ok = ck_hs_set(&ct->hs, hv, o, &prev);
	pthread_mutex_unlock(&ct->writer);
	if (!ok)
		die("ck_hs_set failed");
	if (prev != NULL)
		retire_push(r, prev);
}

const struct impl impl_ckhs = {
	.name = "ck_hs",
	.is_peer = true,
	.build = ck_build,
	.destroy = ck_destroy,
	.read_loop = ck_read,
	.write_one = ck_write,
	.settle = peer_settle,
};

/* ------------------------------------------------------------------ */
/* GHashTable behind a pthread_rwlock_t                                */
/* ------------------------------------------------------------------ */

struct gh_table {
	GHashTable *ht;
	pthread_rwlock_t lock;
};

static guint gh_hash(gconstpointer k)
{
	return (guint)bench_hash(k);
}

static gboolean gh_equal(gconstpointer a, gconstpointer b)
{
	return kv_equal(a, b);
}

static void *gh_build(struct kv *const *keys, size_t n)
{
	struct gh_table *gt = xmalloc(sizeof(*gt));

	pthread_rwlock_init(&gt->lock, NULL);
	/* Keys own the objects; key == value keeps the table in set mode. */
	gt->ht = g_hash_table_new_full(gh_hash, gh_equal, free, NULL);
	for (size_t i = 0; i < n; i++)
		g_hash_table_add(gt->ht, kv_copy(keys[i], keys[i]->value));
	if (g_hash_table_size(gt->ht) != n)
		die("GHashTable build lost entries");
	return gt;
}

static void gh_destroy(void *t)
{
	struct gh_table *gt = t;

	g_hash_table_destroy(gt->ht);
	pthread_rwlock_destroy(&gt->lock);
	free(gt);
}

static uintptr_t gh_read(void *t, struct kv *const *order, size_t n,
			 size_t pos, size_t count, uint64_t *hits)
{
	struct gh_table *gt = t;
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];

		if (++pos == n)
			pos = 0;
		pthread_rwlock_rdlock(&gt->lock);
		const struct kv *o = g_hash_table_lookup(gt->ht, q);
		if (o != NULL) {
			h++;
			acc += (uintptr_t)o->value;
		}
		pthread_rwlock_unlock(&gt->lock);
	}
	*hits += h;
	return acc;
}

static void gh_write(void *t, const struct kv *q, void *value,
		     struct retire *r)
{
	struct gh_table *gt = t;
	struct kv *o = kv_copy(q, value);

	(void)r;	/* no reader outlives the lock: free at once */
	pthread_rwlock_wrlock(&gt->lock);
	g_hash_table_add(gt->ht, o);	/* replaces and frees the old object */
	pthread_rwlock_unlock(&gt->lock);
}

const struct impl impl_ghash = {
	.name = "ghash_rwlock",
	.is_peer = true,
	.build = gh_build,
	.destroy = gh_destroy,
	.read_loop = gh_read,
	.write_one = gh_write,
	.settle = peer_settle,
};

const struct impl *const bench_impls[BENCH_NIMPL] = {
	&impl_cowmap, &impl_lfht, &impl_ckhs, &impl_ghash, &impl_boost_flat,
	&impl_cuckoo,
};

/* ------------------------------------------------------------------ */
/* copy_swap: copy the whole table, then swap the pointer               */
/* ------------------------------------------------------------------ */

/*
 * The simplest RCU publication of a map: an immutable open-addressing
 * table (linear probing, load <= 1/2, slots point to shared immutable
 * objects), replaced as a whole on every update.  This is the strongest
 * form of the idea: the copy is one memcpy of the slot array and the
 * entry objects are shared, not duplicated.
 */
struct cs_map {
	size_t mask;
	struct kv *slot[];
};

struct cs_table {
	struct cs_map *_Atomic cur;
	pthread_mutex_t writer;
};

static size_t cs_find(const struct cs_map *m, const struct kv *q, uint64_t h)
{
	size_t i = (size_t)h & m->mask;

	while (m->slot[i] != NULL && !kv_equal(m->slot[i], q))
		i = (i + 1) & m->mask;
	return i;
}

static size_t cs_map_bytes(const struct cs_map *m)
{
	return sizeof(*m) + (m->mask + 1) * sizeof(m->slot[0]);
}

void *cs_build(struct kv *const *keys, size_t n)
{
	struct cs_table *ct = xmalloc(sizeof(*ct));
	size_t cap = pow2_at_least(2 * n < 16 ? 16 : 2 * n);
	struct cs_map *m = xmalloc(sizeof(*m) + cap * sizeof(m->slot[0]));

	m->mask = cap - 1;
	memset(m->slot, 0, cap * sizeof(m->slot[0]));
	for (size_t i = 0; i < n; i++) {
		size_t at = cs_find(m, keys[i], bench_hash(keys[i]));

		if (m->slot[at] != NULL)
			die("copy_swap: duplicate key");
		m->slot[at] = kv_copy(keys[i], keys[i]->value);
	}
	atomic_init(&ct->cur, m);
	pthread_mutex_init(&ct->writer, NULL);
	return ct;
}

uint64_t cs_publish(void *t, const struct kv *q, void *value)
{
	struct cs_table *ct = t;

	pthread_mutex_lock(&ct->writer);

	uint64_t t0 = now_ns();
	struct cs_map *old = atomic_load_explicit(&ct->cur, memory_order_relaxed);
	size_t bytes = cs_map_bytes(old);
	struct cs_map *m = xmalloc(bytes);

	memcpy(m, old, bytes);

	size_t at = cs_find(m, q, bench_hash(q));
	struct kv *prev = m->slot[at];

	m->slot[at] = kv_copy(q, value);
	atomic_store_explicit(&ct->cur, m, memory_order_release);

	uint64_t t1 = now_ns();

	pthread_mutex_unlock(&ct->writer);
	urcu_memb_synchronize_rcu();
	free(old);
	free(prev);
	return t1 - t0;
}

void cs_destroy(void *t)
{
	struct cs_table *ct = t;
	struct cs_map *m = atomic_load(&ct->cur);

	for (size_t i = 0; i <= m->mask; i++)
		free(m->slot[i]);
	free(m);
	pthread_mutex_destroy(&ct->writer);
	free(ct);
}
