/*
 * version.c - what a version holds: an entry per etcd key (a struct
 * cowmap_etcd_value decoded from the gateway's key-value), the stamp
 * under the empty key, and publishing a version in the mirror's cell.
 */
#include "mirror.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* options.value_free of every version: values and stamps are single
 * malloc'd blocks. */
void mirror_free_value(void *value, void *ctx)
{
	(void)ctx;
	free(value);
}

int mirror_set_stamp(struct cowmap_txn *t, int64_t revision, unsigned flags)
{
	struct stamp *s = malloc(sizeof(*s));
	int rc;

	if (s == NULL)
		return -ENOMEM;
	*s = (struct stamp){ .revision = revision, .flags = flags };
	rc = cowmap_txn_set(t, "", 0, s);
	if (rc < 0)
		free(s);
	return rc;
}

/*
 * Publish @next (a new reference, consumed) as the version of @revision,
 * which applied @events watch events (0: a whole read).  Calls on_publish
 * with the previous version and the new one.  @next may be NULL, what a
 * commit that ran out of memory returns: its errno is returned, and the
 * published version stays.
 */
int mirror_publish(struct cowmap_etcd *m, struct cowmap *next,
		   int64_t revision, unsigned flags, size_t events)
{
	struct cowmap *prev = m->cur;
	int rc;

	if (next == NULL)
		return errno != 0 ? -errno : -ENOMEM;
	if (cowmap_retain(next) == NULL) {
		rc = -errno;
		cowmap_release(next);
		return rc;
	}
	m->flavor->thread_online();
	rc = cowmap_cell_publish(m->cell, next);	/* steals one reference */
	if (rc < 0) {
		m->flavor->thread_offline();
		cowmap_release(next);
		return rc;
	}
	m->cur = next;
	m->applied = revision;
	if (m->o.on_publish) {
		struct cowmap_etcd_version_info info = {
			.revision = revision, .flags = flags,
			.keys = cowmap_size(next) - 1,
		};

		m->o.on_publish(prev, next, &info, m->o.ctx);
	}
	cowmap_release(prev);
	m->flavor->thread_offline();

	pthread_mutex_lock(&m->lock);
	m->st.applied_revision = revision;
	m->st.versions++;
	if (events > 0) {
		m->st.revisions++;
		m->st.events += events;
	}
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
	return 0;
}

static bool under_prefix(const struct cowmap_etcd *m, const unsigned char *key,
			 size_t len)
{
	return len >= m->prefix_len && memcmp(key, m->prefix, m->prefix_len) == 0;
}

/*
 * Decode one mvccpb.KeyValue.  On success *key (free() it) and, unless
 * @key_only, *value (a new struct cowmap_etcd_value) are set.  Returns 0,
 * or -EPROTO / -EFBIG / -ENOMEM with the reason in m->why.
 */
int mirror_decode_kv(struct cowmap_etcd *m, json_t *kv, bool key_only,
		     unsigned char **key, size_t *klen,
		     struct cowmap_etcd_value **value)
{
	char shown[80];
	unsigned char *data;
	size_t len;
	int64_t mod, create, version, lease;
	int rc;

	*key = NULL;
	*value = NULL;
	if (!json_is_object(kv)) {
		snprintf(m->why, sizeof(m->why), "malformed key-value: not an object");
		return -EPROTO;
	}
	rc = gw_bytes(kv, "key", m->o.max_response_bytes, key, klen);
	if (rc == -ENOMEM)
		goto oom;
	if (rc < 0 || *klen == 0) {
		snprintf(m->why, sizeof(m->why), "malformed key-value: %s key",
			 rc < 0 ? "undecodable" : "empty");
		goto fail;
	}
	if (!under_prefix(m, *key, *klen)) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\" is outside the prefix",
			 mirror_show_key(*key, *klen, shown));
		goto fail;
	}
	if (!gw_int64(kv, "mod_revision", &mod) ||
	    !gw_int64(kv, "create_revision", &create) ||
	    !gw_int64(kv, "version", &version) ||
	    !gw_int64(kv, "lease", &lease) || mod <= 0) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\": malformed or missing revision fields",
			 mirror_show_key(*key, *klen, shown));
		goto fail;
	}
	if (key_only)
		return 0;

	rc = gw_bytes(kv, "value", m->o.max_value_bytes, &data, &len);
	if (rc == -ENOMEM)
		goto oom;
	if (rc == -EFBIG) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\" at revision %" PRId64 ": value of %zu bytes"
			 " is larger than max_value_bytes (%zu)",
			 mirror_show_key(*key, *klen, shown), mod, len,
			 m->o.max_value_bytes);
		free(*key);
		*key = NULL;
		return -EFBIG;
	}
	if (rc < 0) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\" at revision %" PRId64 ": value is not base64",
			 mirror_show_key(*key, *klen, shown), mod);
		goto fail;
	}

	struct cowmap_etcd_value *v = malloc(sizeof(*v) + len + 1);

	if (v == NULL) {
		free(data);
		goto oom;
	}
	*v = (struct cowmap_etcd_value){ .mod_revision = mod,
					 .create_revision = create,
					 .version = version, .lease = lease,
					 .len = len };
	memcpy(v->data, data, len + 1);
	free(data);
	*value = v;
	return 0;

oom:
	free(*key);
	*key = NULL;
	snprintf(m->why, sizeof(m->why), "out of memory");
	return -ENOMEM;
fail:
	free(*key);
	*key = NULL;
	return -EPROTO;
}

bool mirror_same_value(const struct cowmap_etcd_value *a,
		       const struct cowmap_etcd_value *b)
{
	return a->mod_revision == b->mod_revision && a->len == b->len &&
	       memcmp(a->data, b->data, a->len) == 0;
}

/* ------------------------------------------------------------------ */
/* Reading versions                                                    */
/* ------------------------------------------------------------------ */

int cowmap_etcd_version_info(const struct cowmap *v,
			     struct cowmap_etcd_version_info *out)
{
	void *value;
	int rc;

	if (v == NULL || out == NULL)
		return -EINVAL;
	rc = cowmap_get(v, "", 0, &value);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return -ENOENT;

	const struct stamp *s = value;

	*out = (struct cowmap_etcd_version_info){
		.revision = s->revision, .flags = s->flags,
		.keys = cowmap_size(v) - 1,
	};
	return 0;
}

int64_t cowmap_etcd_revision(const struct cowmap *v)
{
	void *value;

	if (v == NULL || cowmap_get(v, "", 0, &value) != 1)
		return 0;
	return ((const struct stamp *)value)->revision;
}

const struct cowmap_etcd_value *cowmap_etcd_get(const struct cowmap *v,
						const void *key, size_t len)
{
	void *value;

	if (v == NULL || len == 0 || cowmap_get(v, key, len, &value) != 1)
		return NULL;
	return value;
}
