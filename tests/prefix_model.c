/*
 * prefix_model.c - the prefix tests' reference model (prefix_model.h).
 */
#include "prefix_model.h"

#include <stdlib.h>
#include <string.h>

void pm_init(struct pm_model *m, unsigned width)
{
	memset(m, 0, sizeof(*m));
	m->width = width;
}

void pm_fini(struct pm_model *m)
{
	free(m->e);
	memset(m, 0, sizeof(*m));
}

void pm_copy(struct pm_model *to, const struct pm_model *from)
{
	*to = *from;
	to->e = malloc((from->cap ? from->cap : 1) * sizeof(*to->e));
	if (to->e == NULL)
		abort();
	if (from->n > 0)
		memcpy(to->e, from->e, from->n * sizeof(*to->e));
}

pm_addr pm_mask(pm_addr a, unsigned len)
{
	return len == 0 ? 0 : a & (~(pm_addr)0 << (128 - len));
}

pm_addr pm_load(const void *bytes, unsigned width)
{
	const unsigned char *b = bytes;
	pm_addr a = 0;

	for (unsigned i = 0; i < (width + 7) / 8; i++)
		a |= (pm_addr)b[i] << (120 - 8 * i);
	return pm_mask(a, width);
}

void pm_store(void *bytes, pm_addr a, unsigned width)
{
	unsigned char *b = bytes;

	for (unsigned i = 0; i < (width + 7) / 8; i++)
		b[i] = (unsigned char)(a >> (120 - 8 * i));
}

struct pm_entry *pm_find(const struct pm_model *m, pm_addr a, unsigned len)
{
	a = pm_mask(a, len);
	for (size_t i = 0; i < m->n; i++)
		if (m->e[i].len == len && m->e[i].addr == a)
			return &m->e[i];
	return NULL;
}

bool pm_set(struct pm_model *m, pm_addr a, unsigned len, void *value,
	    void **old)
{
	struct pm_entry *e = pm_find(m, a, len);

	if (e != NULL) {
		if (old != NULL)
			*old = e->value;
		e->value = value;
		return true;
	}
	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 64;
		m->e = realloc(m->e, m->cap * sizeof(*m->e));
		if (m->e == NULL)
			abort();
	}
	m->e[m->n++] = (struct pm_entry){ pm_mask(a, len), len, value };
	return false;
}

bool pm_del(struct pm_model *m, pm_addr a, unsigned len, void **old)
{
	struct pm_entry *e = pm_find(m, a, len);

	if (e == NULL)
		return false;
	if (old != NULL)
		*old = e->value;
	*e = m->e[--m->n];
	return true;
}

const struct pm_entry *pm_lookup(const struct pm_model *m, pm_addr a)
{
	const struct pm_entry *best = NULL;

	for (size_t i = 0; i < m->n; i++)
		if (pm_mask(a, m->e[i].len) == m->e[i].addr &&
		    (best == NULL || m->e[i].len > best->len))
			best = &m->e[i];
	return best;
}
