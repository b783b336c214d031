/*
 * peers_cxx.cc - the peers that are C++ libraries (issue #18): what a
 * team picks today when reads are what matter.
 *
 *   boost_flat  Boost's unordered_flat_map (open addressing, SIMD
 *               metadata groups), published whole behind an atomic
 *               pointer: each change copies the table, changes the copy
 *               and swaps the pointer ("copy and swap"); readers load the
 *               pointer inside rcu_read_lock and the old table is freed
 *               after a grace period.
 *   libcuckoo   libcuckoo's cuckoohash_map, a concurrent table whose
 *               readers and writers take striped spinlocks.
 *
 * Both store what every table stores (bench.h): a private copy of the key
 * bytes (struct kv, which also holds the value) and hash with the bench's
 * SipHash-1-3.  Each exports a struct impl with C linkage.
 */
#include <urcu/urcu-memb.h>

extern "C" {
#include "bench.h"
}

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <boost/unordered/unordered_flat_map.hpp>
#include <libcuckoo/cuckoohash_map.hh>

namespace {

/* Keys are pointers to struct kv; hashing and equality look at the bytes,
 * so a query kv finds the stored copy. */
struct kv_hash {
	size_t operator()(const struct kv *k) const
	{
		return (size_t)bench_hash(k);
	}
};

struct kv_eq {
	bool operator()(const struct kv *a, const struct kv *b) const
	{
		return a->len == b->len && std::memcmp(a->key, b->key, a->len) == 0;
	}
};

[[noreturn]] void die(const char *what)
{
	std::fprintf(stderr, "cowmap-bench: %s\n", what);
	std::exit(EXIT_FAILURE);
}

/* ---- boost_flat: copy and swap ---- */

/* The value lives in the kv object, as in the C peers' tables; the map
 * holds the one pointer. */
using flat_map = boost::unordered_flat_map<const struct kv *, struct kv *,
					   kv_hash, kv_eq>;

struct flat_table {
	std::atomic<flat_map *> cur;
	std::mutex writer;
};

void *flat_build(struct kv *const *keys, size_t n)
{
	auto *t = new flat_table;
	auto *m = new flat_map;

	m->reserve(n);
	for (size_t i = 0; i < n; i++) {
		struct kv *o = kv_copy(keys[i], keys[i]->value);

		m->emplace(o, o);
	}
	if (m->size() != n)
		die("boost_flat build lost entries");
	t->cur.store(m, std::memory_order_relaxed);
	return t;
}

void flat_destroy(void *p)
{
	auto *t = static_cast<flat_table *>(p);
	flat_map *m = t->cur.load();

	for (auto &e : *m)
		std::free(e.second);
	delete m;
	delete t;
}

uintptr_t flat_read(void *p, struct kv *const *order, size_t n, size_t pos,
		    size_t count, uint64_t *hits)
{
	auto *t = static_cast<flat_table *>(p);
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];

		if (++pos == n)
			pos = 0;
		urcu_memb_read_lock();
		const flat_map *m = t->cur.load(std::memory_order_acquire);
		auto it = m->find(q);
		if (it != m->end()) {
			h++;
			acc += (uintptr_t)it->second->value;
		}
		urcu_memb_read_unlock();
	}
	*hits += h;
	return acc;
}

/* One change: copy the whole table, change the copy, swap; the old table
 * goes after a grace period (the old object with it). */
struct flat_retired {
	struct rcu_head head;
	flat_map *map;
	struct kv *prev;
};

void flat_retired_free(struct rcu_head *head)
{
	auto *r = caa_container_of(head, struct flat_retired, head);

	delete r->map;
	std::free(r->prev);
	delete r;
}

void flat_write(void *p, const struct kv *q, void *value, struct retire *)
{
	auto *t = static_cast<flat_table *>(p);
	struct kv *o = kv_copy(q, value);
	auto *r = new flat_retired;

	{
		std::lock_guard<std::mutex> g(t->writer);
		flat_map *old = t->cur.load(std::memory_order_relaxed);
		auto *m = new flat_map(*old);
		auto it = m->find(q);

		r->prev = nullptr;
		if (it != m->end()) {
			r->prev = it->second;
			m->erase(it);
		}
		m->emplace(o, o);
		t->cur.store(m, std::memory_order_release);
		r->map = old;
	}
	urcu_memb_call_rcu(&r->head, flat_retired_free);
}

} // namespace

/* One publish as flat_write() makes it, timed from the copy to the swap
 * (the grace period and the free excluded), for the publish latency. */
extern "C" uint64_t bench_flat_publish(void *p, const struct kv *q,
				       void *value)
{
	auto *t = static_cast<flat_table *>(p);
	struct kv *o = kv_copy(q, value), *prev = nullptr;
	flat_map *old;
	uint64_t t0, t1;

	{
		std::lock_guard<std::mutex> g(t->writer);
		t0 = now_ns();
		old = t->cur.load(std::memory_order_relaxed);
		auto *m = new flat_map(*old);
		auto it = m->find(q);

		if (it != m->end()) {
			prev = it->second;
			m->erase(it);
		}
		m->emplace(o, o);
		t->cur.store(m, std::memory_order_release);
		t1 = now_ns();
	}
	urcu_memb_synchronize_rcu();
	delete old;
	std::free(prev);
	return t1 - t0;
}

namespace {

void flat_settle(void *)
{
	urcu_memb_barrier();
}

/* ---- libcuckoo ---- */

/* Key: the table's copy of the key bytes, kept for the entry's life;
 * mapped: the value itself, which a change overwrites in place (under
 * the bucket's lock, as libcuckoo's users do). */
using cuckoo_map = libcuckoo::cuckoohash_map<const struct kv *, void *,
					     kv_hash, kv_eq>;

void *cuckoo_build(struct kv *const *keys, size_t n)
{
	auto *m = new cuckoo_map(n);

	for (size_t i = 0; i < n; i++) {
		struct kv *o = kv_copy(keys[i], keys[i]->value);

		if (!m->insert(o, keys[i]->value))
			die("libcuckoo: duplicate key");
	}
	return m;
}

void cuckoo_destroy(void *p)
{
	auto *m = static_cast<cuckoo_map *>(p);

	{
		auto lt = m->lock_table();

		for (auto &e : lt)
			std::free(const_cast<struct kv *>(e.first));
	}
	delete m;
}

uintptr_t cuckoo_read(void *p, struct kv *const *order, size_t n, size_t pos,
		      size_t count, uint64_t *hits)
{
	auto *m = static_cast<cuckoo_map *>(p);
	uintptr_t acc = 0;
	uint64_t h = 0;

	for (size_t k = 0; k < count; k++) {
		const struct kv *q = order[pos];

		if (++pos == n)
			pos = 0;
		m->find_fn(q, [&](void *const &v) {
			h++;
			acc += (uintptr_t)v;
		});
	}
	*hits += h;
	return acc;
}

void cuckoo_write(void *p, const struct kv *q, void *value, struct retire *)
{
	auto *m = static_cast<cuckoo_map *>(p);

	if (!m->update(q, value))
		die("libcuckoo: update of an absent key");
}

} // namespace

extern "C" {

const struct impl impl_boost_flat = {
	"boost_flat", true, flat_build, flat_destroy, flat_read, flat_write,
	flat_settle,
};

const struct impl impl_cuckoo = {
	"libcuckoo", true, cuckoo_build, cuckoo_destroy, cuckoo_read,
	cuckoo_write, flat_settle,
};
}
