/*
 * range.c - reading the whole range, paged at one revision, into one
 * version that shares every unchanged value with the current one.
 */
#include "mirror.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The JSON body of one range page: from @from (binary), at @rev. */
static char *range_body(const struct cowmap_etcd *m, const char *from_b64,
			int64_t rev)
{
	json_t *req = json_pack("{s:s, s:s}", "key", from_b64,
				"range_end", m->end_b64);

	if (req == NULL)
		return NULL;
	json_object_set_new(req, "limit", json_integer(m->o.range_page));
	if (rev > 0)
		json_object_set_new(req, "revision", json_integer(rev));
	char *body = json_dumps(req, JSON_COMPACT);

	json_decref(req);
	return body;
}

/*
 * One pass over the range: every page into @t, every key seen into
 * @seen.  Returns the revision read (> 0), or a negative errno with the
 * reason in m->why.
 */
static int64_t read_pages(struct cowmap_etcd *m, struct cowmap_txn *t,
			  struct cowmap_txn *seen)
{
	char *from = strdup(m->key_b64);
	char *url = mirror_url(m, "/v3/kv/range");
	int64_t rev = 0;
	int rc = 0;

	if (from == NULL || url == NULL) {
		rc = -ENOMEM;
		snprintf(m->why, sizeof(m->why), "out of memory");
		goto out;
	}
	for (;;) {
		char *body = range_body(m, from, rev);
		json_t *doc;

		if (body == NULL) {
			rc = -ENOMEM;
			snprintf(m->why, sizeof(m->why), "out of memory");
			goto out;
		}
		rc = gw_post(&m->gw, url, body, m->o.request_timeout_ms, &doc,
			     m->why);
		free(body);
		if (rc < 0)
			goto out;
		mirror_contact(m, json_object_get(doc, "header"));

		int64_t page_rev = 0;

		gw_int64(json_object_get(doc, "header"), "revision", &page_rev);
		if (page_rev <= 0) {
			snprintf(m->why, sizeof(m->why),
				 "%s: range answer without a revision", url);
			json_decref(doc);
			rc = -EPROTO;
			goto out;
		}
		if (rev == 0)
			rev = page_rev;

		json_t *kvs = json_object_get(doc, "kvs"), *kv;
		unsigned char *key = NULL, *last = NULL;
		size_t klen, last_len = 0, i;
		struct cowmap_etcd_value *val;

		if (kvs != NULL && !json_is_array(kvs)) {
			snprintf(m->why, sizeof(m->why),
				 "%s: malformed range answer (kvs)", url);
			rc = -EPROTO;
		}
		json_array_foreach(kvs, i, kv) {
			void *old;

			if (rc < 0)
				break;
			rc = mirror_decode_kv(m, kv, false, &key, &klen, &val);
			if (rc < 0)
				break;
			if (cowmap_txn_get(t, key, klen, &old) == 1 &&
			    mirror_same_value(old, val)) {
				free(val);	/* unchanged: keep the shared one */
			} else if ((rc = cowmap_txn_set(t, key, klen, val)) < 0) {
				free(val);
			}
			if (rc == 0)
				rc = cowmap_txn_set(seen, key, klen, (void *)1);
			if (rc < 0)
				snprintf(m->why, sizeof(m->why), "%s",
					 strerror(-rc));
			free(last);
			last = key;
			last_len = klen;
		}

		bool more = json_is_true(json_object_get(doc, "more"));

		json_decref(doc);
		if (rc < 0) {
			free(last);
			goto out;
		}
		if (!more || last == NULL) {
			free(last);
			break;
		}
		/* The next page starts just after the last key read. */
		unsigned char *next = realloc(last, last_len + 1);

		if (next == NULL) {
			free(last);
			rc = -ENOMEM;
			goto out;
		}
		next[last_len] = '\0';
		free(from);
		from = gw_base64(next, last_len + 1);
		free(next);
		if (from == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
out:
	free(from);
	free(url);
	return rc < 0 ? rc : rev;
}

/*
 * read_range - read the whole range and publish it as one version with
 * @flags.  @reason (may be NULL) is told with COWMAP_ETCD_RESYNCED.
 * Returns 0, or a negative errno with the reason in m->why: -EINTR
 * (stopped), -EPROTO / -EFBIG (refused data), others (transport).
 */
int mirror_read_range(struct cowmap_etcd *m, unsigned flags,
		      const char *reason)
{
	int64_t rev = -EAGAIN;

	/* A page can meet a compaction of the first page's revision: then
	 * the range is read again from the start, a few times. */
	for (int attempt = 0; attempt < 3 && rev == -EAGAIN; attempt++) {
		struct cowmap_txn *t = cowmap_txn_begin(m->cur);
		struct cowmap *empty = cowmap_new(NULL);
		struct cowmap_txn *seen = empty ? cowmap_txn_begin(empty) : NULL;

		cowmap_release(empty);
		if (t == NULL || seen == NULL) {
			cowmap_txn_abort(t);
			cowmap_txn_abort(seen);
			snprintf(m->why, sizeof(m->why), "out of memory");
			return -ENOMEM;
		}
		rev = read_pages(m, t, seen);
		if (rev == -EPROTO && strstr(m->why, "compacted"))
			rev = -EAGAIN;

		/* Keys of the current version that the range no longer has. */
		struct cowmap_iter it;
		const void *key;
		size_t len;
		int rc = 0;

		if (rev > 0) {
			cowmap_iter_init(&it, m->cur);
			while (rc >= 0 && cowmap_iter_next(&it, &key, &len, NULL))
				if (len > 0 && cowmap_txn_get(seen, key, len, NULL) != 1)
					rc = cowmap_txn_del(t, key, len);
			if (rc >= 0)
				rc = mirror_set_stamp(t, rev, flags);
			if (rc < 0) {
				snprintf(m->why, sizeof(m->why), "%s", strerror(-rc));
				rev = rc;
			}
		}
		cowmap_txn_abort(seen);
		if (rev <= 0) {
			cowmap_txn_abort(t);
			continue;
		}
		if (rev <= m->applied) {
			/* Nothing newer than what is published (a re-read after
			 * a refusal that the store has not moved past). */
			cowmap_txn_abort(t);
			return 0;
		}
		rc = mirror_publish(m, cowmap_txn_commit(t), rev, flags, 0);
		if (rc < 0) {
			snprintf(m->why, sizeof(m->why), "cannot publish: %s",
				 strerror(-rc));
			return rc;
		}
	}
	if (rev < 0)
		return (int)rev;
	if (reason != NULL) {
		pthread_mutex_lock(&m->lock);
		m->st.resyncs++;
		pthread_mutex_unlock(&m->lock);
		mirror_tell(m, COWMAP_ETCD_RESYNCED, rev,
		     "%s; read the whole range again and published it at "
		     "revision %" PRId64, reason, rev);
	}
	return 0;
}
