/*
 * prefix_cell.c - cowmap_cell_prefix_set() and cowmap_cell_prefix_del():
 * one route changed in a cell's current version and published.
 *
 * Each is a cowmap_cell_update() of the persistent update, so it inherits
 * the cell's writer lock, its retirement and its RCU rules unchanged; the
 * cell needs to know about prefix tables only where it counts what a
 * retired version alone holds (cm_prefix_sole_owned()).  Route changes
 * are not combined as cowmap_cell_set() combines keys: a routing daemon
 * sends its changes from one thread, and a burst of them is what
 * transactions are for.
 */
#include "prefix_edit.h"

#include <errno.h>

struct route_change {
	const void *addr;
	unsigned len;
	void *value;
	bool is_del;
	bool removed;
};

static struct cowmap *apply(const struct cowmap *cur, void *arg)
{
	struct route_change *rc = arg;

	if (!rc->is_del)
		return cowmap_prefix_set(cur, rc->addr, rc->len, rc->value);

	struct cowmap *next = cowmap_prefix_del(cur, rc->addr, rc->len);

	rc->removed = next != NULL && next != cur;
	return next;
}

int cowmap_cell_prefix_set(struct cowmap_cell *c, const void *addr,
			   unsigned len, void *value)
{
	struct route_change rc = { .addr = addr, .len = len, .value = value };

	return cowmap_cell_update(c, apply, &rc);
}

int cowmap_cell_prefix_del(struct cowmap_cell *c, const void *addr,
			   unsigned len)
{
	struct route_change rc = { .addr = addr, .len = len, .is_del = true };
	int err = cowmap_cell_update(c, apply, &rc);

	return err < 0 ? err : rc.removed;
}
