/*
 * prefix_model.h - the reference the prefix-table tests compare against:
 * a plain array of prefixes, scanned whole for every longest match.
 * Too slow for anything but tests, and too simple to be wrong.
 */
#ifndef COWMAP_PREFIX_MODEL_H
#define COWMAP_PREFIX_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef unsigned __int128 pm_addr;

struct pm_entry {
	pm_addr addr;		/* masked to len bits */
	unsigned len;
	void *value;
};

struct pm_model {
	unsigned width;
	size_t n, cap;
	struct pm_entry *e;
};

void pm_init(struct pm_model *m, unsigned width);
void pm_fini(struct pm_model *m);
void pm_copy(struct pm_model *to, const struct pm_model *from);

/* Address bytes <-> left-aligned integers, masked to @width bits. */
pm_addr pm_load(const void *bytes, unsigned width);
void pm_store(void *bytes, pm_addr a, unsigned width);
pm_addr pm_mask(pm_addr a, unsigned len);

/* The entry for exactly @a/@len, or NULL. */
struct pm_entry *pm_find(const struct pm_model *m, pm_addr a, unsigned len);
/* Returns true and the old value if it replaced one. */
bool pm_set(struct pm_model *m, pm_addr a, unsigned len, void *value,
	    void **old);
bool pm_del(struct pm_model *m, pm_addr a, unsigned len, void **old);
/* The longest entry covering @a, or NULL. */
const struct pm_entry *pm_lookup(const struct pm_model *m, pm_addr a);

#endif
