/*
 * prefix_diff.c - walking prefix tables: iteration, diff and equality.
 *
 * Prefixes are visited node by node, depth first: a node's own prefixes
 * in heap order (shorter first), then its children in slot order, so a
 * prefix always comes after those that cover it.  Diff walks two tries
 * in step and skips every subtree they share by pointer, so its cost
 * follows the difference; the canonical form (no empty nodes) makes equal
 * sets of prefixes equal shapes.
 */
#include "prefix_edit.h"

#include <errno.h>

/* The prefix at heap index @h of the node at @depth whose path is @path. */
static cm_addr prefix_addr(cm_addr path, unsigned depth, unsigned h,
			   unsigned *len)
{
	unsigned r = cm_heap_rlen(h), base = CM_PFX_STRIDE * depth;

	*len = base + r;
	if (r == 0)
		return path;
	return path | (cm_addr)(h - (1u << r)) << (128 - base - r);
}

static cm_addr child_path(cm_addr path, unsigned depth, unsigned s)
{
	return path | (cm_addr)s << (128 - CM_PFX_STRIDE * (depth + 1));
}

/* Iterator positions: 0..127 the next heap index to look at, then 128 + s
 * the next child slot. */
#define POS_CHILDREN 128u

static int next_bit_from(const uint64_t map[2], unsigned from)
{
	for (unsigned w = from >> 6; w < 2; w++) {
		uint64_t m = map[w];

		if (w == from >> 6)
			m &= ~UINT64_C(0) << (from & 63);
		if (m != 0)
			return (int)(64 * w + (unsigned)__builtin_ctzll(m));
	}
	return -1;
}

int cowmap_prefix_iter_next(struct cowmap_iter *it, void *addr, unsigned *len,
			    void **value)
{
	if (it == NULL || it->priv_depth < 0 || !cm_prefix_valid(it->priv_map))
		return 0;

	const struct cowmap *m = it->priv_map;

	while (it->priv_depth >= 0) {
		int d = it->priv_depth;
		const struct cm_pnode *n = it->priv_node[d];
		unsigned pos = it->priv_pos[d];

		if (pos < POS_CHILDREN) {
			int h = next_bit_from(n->pfxmap, pos);

			if (h >= 0) {
				cm_addr path = 0;
				unsigned l;

				it->priv_pos[d] = (unsigned)h + 1;
				for (int k = 0; k < d; k++)
					path = child_path(
						path, (unsigned)k,
						it->priv_pos[k] - POS_CHILDREN - 1);
				path = prefix_addr(path, (unsigned)d,
						   (unsigned)h, &l);
				if (addr != NULL)
					cm_addr_store(addr, path,
						      cm_pfx_width(m));
				if (len != NULL)
					*len = l;
				if (value != NULL)
					*value = cm_pn_values(n)[cm_pfx_index(
						n->pfxmap, (unsigned)h)];
				return 1;
			}
			pos = POS_CHILDREN;
		}

		unsigned s = pos - POS_CHILDREN;
		uint64_t rest = s < 64 ? n->childmap & (~UINT64_C(0) << s) : 0;

		if (rest == 0) {
			it->priv_depth = d - 1;
			continue;
		}
		s = (unsigned)__builtin_ctzll(rest);
		it->priv_pos[d] = POS_CHILDREN + s + 1;
		it->priv_node[d + 1] = cm_pn_child(n, s);
		it->priv_pos[d + 1] = 0;
		it->priv_depth = d + 1;
	}
	return 0;
}

typedef int (*change_fn)(enum cowmap_change what, const void *addr,
			 unsigned len, void *old_value, void *new_value,
			 void *ctx);

struct pdiff {
	unsigned width;
	change_fn fn;
	void *ctx;
	int (*value_eq)(const void *x, const void *y, void *ctx);
	void *eq_ctx;
};

static int report(const struct pdiff *p, enum cowmap_change what,
		  cm_addr path, unsigned depth, unsigned h, void *old_value,
		  void *new_value)
{
	unsigned char bytes[16];
	unsigned len;

	cm_addr_store(bytes, prefix_addr(path, depth, h, &len), p->width);
	return p->fn(what, bytes, len, old_value, new_value, p->ctx);
}

/* Everything under @n (NULL: nothing) as one kind of change. */
static int report_all(const struct pdiff *p, const struct cm_pnode *n,
		      cm_addr path, unsigned depth, bool added)
{
	if (n == NULL)
		return 0;
	for (int h = next_bit_from(n->pfxmap, 0); h >= 0;
	     h = next_bit_from(n->pfxmap, (unsigned)h + 1)) {
		void *v = cm_pn_values(n)[cm_pfx_index(n->pfxmap, (unsigned)h)];
		int rc = report(p, added ? COWMAP_ADDED : COWMAP_REMOVED, path,
				depth, (unsigned)h, added ? NULL : v,
				added ? v : NULL);

		if (rc != 0)
			return rc;
	}
	for (uint64_t m = n->childmap; m != 0; m &= m - 1) {
		unsigned s = (unsigned)__builtin_ctzll(m);
		int rc = report_all(p, cm_pn_child(n, s),
				    child_path(path, depth, s), depth + 1,
				    added);

		if (rc != 0)
			return rc;
	}
	return 0;
}

static bool values_equal(const struct pdiff *p, void *x, void *y)
{
	if (x == y)
		return true;
	return p->value_eq != NULL && p->value_eq(x, y, p->eq_ctx);
}

static int diff_nodes(const struct pdiff *p, const struct cm_pnode *a,
		      const struct cm_pnode *b, cm_addr path, unsigned depth)
{
	if (a == b)
		return 0;
	if (a == NULL || b == NULL)
		return report_all(p, a != NULL ? a : b, path, depth, a == NULL);

	const uint64_t *pa = a->pfxmap, *pb = b->pfxmap;
	uint64_t both[2] = { pa[0] | pb[0], pa[1] | pb[1] };

	for (int h = next_bit_from(both, 0); h >= 0;
	     h = next_bit_from(both, (unsigned)h + 1)) {
		bool ina = cm_pfx_has(pa, (unsigned)h),
		     inb = cm_pfx_has(pb, (unsigned)h);
		void *va = ina ? cm_pn_values(a)[cm_pfx_index(pa, (unsigned)h)]
			       : NULL;
		void *vb = inb ? cm_pn_values(b)[cm_pfx_index(pb, (unsigned)h)]
			       : NULL;
		int rc = 0;

		if (!inb)
			rc = report(p, COWMAP_REMOVED, path, depth, (unsigned)h,
				    va, NULL);
		else if (!ina)
			rc = report(p, COWMAP_ADDED, path, depth, (unsigned)h,
				    NULL, vb);
		else if (!values_equal(p, va, vb))
			rc = report(p, COWMAP_CHANGED, path, depth, (unsigned)h,
				    va, vb);
		if (rc != 0)
			return rc;
	}
	for (uint64_t m = a->childmap | b->childmap; m != 0; m &= m - 1) {
		unsigned s = (unsigned)__builtin_ctzll(m);
		const struct cm_pnode *ca = cm_pn_child(a, s),
				      *cb = cm_pn_child(b, s);

		if (ca == cb)
			continue;
		int rc = diff_nodes(p, ca, cb, child_path(path, depth, s),
				    depth + 1);

		if (rc != 0)
			return rc;
	}
	return 0;
}

int cowmap_prefix_diff(const struct cowmap *from, const struct cowmap *to,
		       change_fn fn, void *ctx)
{
	if (!cm_prefix_valid(from) || !cm_prefix_valid(to) || fn == NULL ||
	    cm_pfx_width(from) != cm_pfx_width(to))
		return -EINVAL;

	struct pdiff p = { .width = cm_pfx_width(from), .fn = fn, .ctx = ctx };

	return diff_nodes(&p, from->proot, to->proot, 0, 0);
}

static int stop_at_first(enum cowmap_change what, const void *addr,
			 unsigned len, void *old_value, void *new_value,
			 void *ctx)
{
	(void)what, (void)addr, (void)len, (void)old_value, (void)new_value;
	(void)ctx;
	return 1;
}

int cm_prefix_equal(const struct cowmap *a, const struct cowmap *b,
		    int (*value_eq)(const void *x, const void *y, void *ctx),
		    void *ctx)
{
	if (cm_pfx_width(a) != cm_pfx_width(b) || a->count != b->count)
		return 0;

	struct pdiff p = { .width = cm_pfx_width(a), .fn = stop_at_first,
			   .value_eq = value_eq, .eq_ctx = ctx };

	return diff_nodes(&p, a->proot, b->proot, 0, 0) == 0;
}
