/*
 * workloads.c - the key sets: random 8-byte keys and dictionary words.
 *
 * Keys are struct kv records packed in two arenas: one in insertion order
 * (what the tables are built from) and one holding the same keys again in
 * a random lookup order.  Reading the lookup arena front to back keeps the
 * query keys streaming through the hardware prefetcher, so a lookup's
 * measured cost is the table's, not the harness's.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t round8(size_t x)
{
	return (x + 7) & ~(size_t)7;
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL) {
		fprintf(stderr, "cowmap-bench: out of memory (%zu bytes)\n", n);
		exit(EXIT_FAILURE);
	}
	return p;
}

/* Fisher-Yates. */
static void shuffle(size_t *idx, size_t n, uint64_t *rng)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(bench_rand(rng) % i);
		size_t t = idx[i - 1];

		idx[i - 1] = idx[j];
		idx[j] = t;
	}
}

/*
 * Lay out @n keys given as (bytes, len) pairs: keys[] in the given order,
 * order[] as a random permutation, each in its own arena.
 */
static struct workload *layout(const char *name, const char *desc, size_t n,
			       const unsigned char *const *bytes,
			       const uint32_t *lens, uint64_t seed)
{
	struct workload *w = xmalloc(sizeof(*w));
	size_t total = 0;
	uint64_t rng = seed ^ 0xabcdef;

	memset(w, 0, sizeof(*w));
	snprintf(w->name, sizeof(w->name), "%s", name);
	snprintf(w->desc, sizeof(w->desc), "%s", desc);
	w->n = n;
	for (size_t i = 0; i < n; i++)
		total += round8(kv_size(lens[i]));
	w->arena_keys = xmalloc(total);
	w->arena_order = xmalloc(total);
	w->keys = xmalloc(n * sizeof(*w->keys));
	w->order = xmalloc(n * sizeof(*w->order));
	w->kptr = xmalloc(n * sizeof(*w->kptr));
	w->klen = xmalloc(n * sizeof(*w->klen));

	unsigned char *p = w->arena_keys;

	for (size_t i = 0; i < n; i++) {
		struct kv *k = (struct kv *)(void *)p;

		/* Distinct, non-NULL, 16-aligned-looking values. */
		k->value = (void *)(uintptr_t)((i + 1) << 4);
		k->len = lens[i];
		memcpy(k->key, bytes[i], lens[i]);
		w->keys[i] = k;
		p += round8(kv_size(lens[i]));
	}

	size_t *perm = xmalloc(n * sizeof(*perm));

	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	shuffle(perm, n, &rng);
	p = w->arena_order;
	for (size_t i = 0; i < n; i++) {
		const struct kv *src = w->keys[perm[i]];
		struct kv *k = (struct kv *)(void *)p;

		memcpy(k, src, kv_size(src->len));
		w->order[i] = k;
		w->kptr[i] = k->key;
		w->klen[i] = k->len;
		p += round8(kv_size(src->len));
	}
	free(perm);
	return w;
}

/*
 * n distinct random 8-byte keys: the splitmix64 finaliser is a bijection
 * of 64-bit words, so distinct counters give distinct keys.
 */
struct workload *workload_random(const char *name, size_t n, uint64_t seed)
{
	unsigned char *raw = xmalloc(n * 8);
	const unsigned char **bytes = xmalloc(n * sizeof(*bytes));
	uint32_t *lens = xmalloc(n * sizeof(*lens));
	uint64_t base = seed * 0x9e3779b97f4a7c15ULL;
	char desc[64];

	for (size_t i = 0; i < n; i++) {
		uint64_t s = base + i - 0x9e3779b97f4a7c15ULL;
		uint64_t k = bench_rand(&s);	/* mix(base + i) */

		memcpy(raw + 8 * i, &k, 8);
		bytes[i] = raw + 8 * i;
		lens[i] = 8;
	}
	snprintf(desc, sizeof(desc), "%zu random 8-byte keys", n);

	struct workload *w = layout(name, desc, n, bytes, lens, seed);

	w->words_path = NULL;
	w->limit = n;
	w->seed = seed;
	free(raw);
	free(bytes);
	free(lens);
	return w;
}

struct word {
	const unsigned char *p;
	uint32_t len;
};

static int word_cmp(const void *a, const void *b)
{
	const struct word *x = a, *y = b;
	uint32_t m = x->len < y->len ? x->len : y->len;
	int c = memcmp(x->p, y->p, m);

	if (c != 0)
		return c;
	return (x->len > y->len) - (x->len < y->len);
}

struct workload *workload_words(const char *name, const char *path,
				size_t limit, uint64_t seed)
{
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		perror(path);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	if (size <= 0) {
		fclose(f);
		fprintf(stderr, "cowmap-bench: %s is empty\n", path);
		return NULL;
	}

	unsigned char *text = xmalloc((size_t)size + 1);

	if (fread(text, 1, (size_t)size, f) != (size_t)size) {
		fclose(f);
		free(text);
		perror(path);
		return NULL;
	}
	fclose(f);
	text[size] = '\n';

	size_t cap = 1024, n = 0;
	struct word *v = xmalloc(cap * sizeof(*v));
	unsigned char *s = text, *end = text + size;

	while (s < end) {
		unsigned char *nl = memchr(s, '\n', (size_t)(end + 1 - s));
		size_t len = (size_t)(nl - s);

		if (len > 0 && s[len - 1] == '\r')
			len--;
		if (len > 0) {
			if (n == cap) {
				cap *= 2;
				v = realloc(v, cap * sizeof(*v));
				if (v == NULL) {
					fprintf(stderr, "cowmap-bench: out of memory\n");
					exit(EXIT_FAILURE);
				}
			}
			v[n++] = (struct word){ s, (uint32_t)len };
		}
		s = nl + 1;
	}

	/* Deduplicate, then shuffle so a --quick subset is a fair sample. */
	qsort(v, n, sizeof(*v), word_cmp);
	size_t u = 0;

	for (size_t i = 0; i < n; i++)
		if (u == 0 || word_cmp(&v[u - 1], &v[i]) != 0)
			v[u++] = v[i];
	n = u;

	size_t *perm = xmalloc(n * sizeof(*perm));
	uint64_t rng = seed;

	for (size_t i = 0; i < n; i++)
		perm[i] = i;
	shuffle(perm, n, &rng);
	if (limit != 0 && limit < n)
		n = limit;

	const unsigned char **bytes = xmalloc(n * sizeof(*bytes));
	uint32_t *lens = xmalloc(n * sizeof(*lens));
	size_t total = 0;

	for (size_t i = 0; i < n; i++) {
		bytes[i] = v[perm[i]].p;
		lens[i] = v[perm[i]].len;
		total += lens[i];
	}

	char desc[64];

	snprintf(desc, sizeof(desc), "%zu words, mean %.1f bytes", n,
		 n ? (double)total / (double)n : 0.0);

	struct workload *w = layout(name, desc, n, bytes, lens, seed);

	w->words_path = path;
	w->limit = limit;
	w->seed = seed;
	free(bytes);
	free(lens);
	free(perm);
	free(v);
	free(text);
	return w;
}

void workload_free(struct workload *w)
{
	if (w == NULL)
		return;
	free(w->arena_keys);
	free(w->arena_order);
	free(w->keys);
	free(w->order);
	free(w->kptr);
	free(w->klen);
	free(w);
}
