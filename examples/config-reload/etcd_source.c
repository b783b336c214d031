/*
 * etcd_source.c - the configuration from an etcd prefix, through the
 * etcd mirror.
 *
 * The mirror does the hard part: one version per etcd revision, the
 * revision stored in the version, reconnection and failover.  What is
 * left for the program is the naming (a configuration key is the etcd
 * key without the prefix) and the change log, written from the mirror's
 * on_publish callback with cowmap_diff() between the previous version and
 * the new one, as a file reload does.
 */
#include <cowmap-etcd.h>

#include "etcd_source.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct etcd_source {
	struct cowmap_etcd *mirror;
	char *prefix;
	size_t prefix_len;
	FILE *log;
	struct config_view view;
	size_t added, removed, changed;	/* of the version being logged */
};

/* "prefix" + @key in @buf; false when it does not fit. */
static bool etcd_key(const struct etcd_source *src, const char *key,
		     char *buf, size_t size, size_t *len)
{
	size_t klen = strlen(key);

	if (src->prefix_len + klen + 1 > size)
		return false;
	memcpy(buf, src->prefix, src->prefix_len);
	memcpy(buf + src->prefix_len, key, klen + 1);
	*len = src->prefix_len + klen;
	return true;
}

/* The view: inside the server's read-side section; no allocation. */
static const char *view_get(const struct cowmap *v, const char *key, void *ctx)
{
	char buf[8192];
	size_t len;

	if (!etcd_key(ctx, key, buf, sizeof(buf), &len))
		return NULL;

	const struct cowmap_etcd_value *val = cowmap_etcd_get(v, buf, len);

	return val ? val->data : NULL;
}

static uint64_t view_version(const struct cowmap *v, void *ctx)
{
	(void)ctx;
	return (uint64_t)cowmap_etcd_revision(v);
}

static int log_change(enum cowmap_change what, const void *key, size_t len,
		      void *old_value, void *new_value, void *ctx)
{
	struct etcd_source *src = ctx;
	const struct cowmap_etcd_value *o = old_value, *n = new_value;
	int klen = (int)(len - src->prefix_len);
	const char *k = (const char *)key + src->prefix_len;

	if (len == 0)
		return 0;	/* the version's stamp */
	switch (what) {
	case COWMAP_ADDED:
		src->added++;
		fprintf(src->log, "config:   + %.*s = %.*s\n", klen, k,
			(int)n->len, n->data);
		break;
	case COWMAP_REMOVED:
		src->removed++;
		fprintf(src->log, "config:   - %.*s (was %.*s)\n", klen, k,
			(int)o->len, o->data);
		break;
	case COWMAP_CHANGED:
		/* A put of the same bytes is a new etcd revision of the
		 * key, not a configuration change. */
		if (o->len == n->len && memcmp(o->data, n->data, n->len) == 0)
			break;
		src->changed++;
		fprintf(src->log, "config:   ~ %.*s: %.*s -> %.*s\n", klen, k,
			(int)o->len, o->data, (int)n->len, n->data);
		break;
	}
	return 0;
}

static void on_publish(const struct cowmap *prev, const struct cowmap *next,
		       const struct cowmap_etcd_version_info *info, void *ctx)
{
	struct etcd_source *src = ctx;

	if (src->log == NULL)
		return;
	src->added = src->removed = src->changed = 0;
	fprintf(src->log, "config: revision %" PRId64 " from etcd%s\n",
		info->revision,
		info->flags & COWMAP_ETCD_VERSION_INITIAL ? " (first read)"
		: info->flags & COWMAP_ETCD_VERSION_RESYNC ? " (whole re-read)"
		: "");
	cowmap_diff(prev, next, log_change, src);
	fprintf(src->log, "config: %zu added, %zu removed, %zu changed\n",
		src->added, src->removed, src->changed);
	fflush(src->log);
}

static void on_event(enum cowmap_etcd_event what, int64_t revision,
		     const char *message, void *ctx)
{
	(void)what;
	(void)revision;
	(void)ctx;
	fprintf(stderr, "config-reload: etcd: %s\n", message);
}

struct etcd_source *etcd_source_start(const char *endpoints,
				      const char *prefix, FILE *log)
{
	struct etcd_source *src = calloc(1, sizeof(*src));
	char err[COWMAP_ETCD_ERROR_MAX];

	if (src == NULL || (src->prefix = strdup(prefix)) == NULL) {
		perror("config-reload");
		free(src);
		return NULL;
	}
	src->prefix_len = strlen(prefix);
	src->log = log;
	src->view = (struct config_view){ .get = view_get,
					  .version = view_version, .ctx = src };

	struct cowmap_etcd_options o = {
		.endpoints = endpoints, .prefix = prefix,
		.on_publish = on_publish, .on_event = on_event, .ctx = src,
	};

	src->mirror = cowmap_etcd_start(&o, err);
	if (src->mirror == NULL) {
		fprintf(stderr, "config-reload: etcd %s: %s\n", endpoints, err);
		free(src->prefix);
		free(src);
		return NULL;
	}
	return src;
}

struct cowmap_cell *etcd_source_cell(struct etcd_source *src)
{
	return cowmap_etcd_cell(src->mirror);
}

const struct config_view *etcd_source_view(struct etcd_source *src)
{
	return &src->view;
}

void etcd_source_summary(struct etcd_source *src, FILE *out)
{
	struct cowmap_etcd_stats st;

	cowmap_etcd_stats(src->mirror, &st);
	fprintf(out, "config-reload: %" PRIu64 " versions from etcd, last "
		"revision %" PRId64 ", %" PRIu64 " reconnects, %" PRIu64
		" whole re-reads, %" PRIu64 " refused\n", st.versions,
		st.applied_revision, st.reconnects, st.resyncs, st.refused);
}

void etcd_source_free(struct etcd_source *src)
{
	if (src == NULL)
		return;
	cowmap_etcd_free(src->mirror);
	free(src->prefix);
	free(src);
}
