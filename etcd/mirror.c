/*
 * mirror.c - the etcd mirror: one thread that reads a prefix, watches it,
 * and publishes one cowmap version per etcd revision.
 *
 * The thread runs a small loop of two states:
 *
 *   read    POST /v3/kv/range, paged, every page at the first page's
 *           revision R.  The keys read are written into a transaction on
 *           top of the current version (a key whose mod_revision did not
 *           change keeps its value, so the versions share it and
 *           cowmap_diff() reports only real changes), keys that are gone
 *           are deleted, the stamp says R, and the whole is published as
 *           one version.  Used at start, after a compaction and after a
 *           refusal.
 *
 *   watch   POST /v3/watch from the applied revision + 1.  The answer is
 *           a stream of JSON messages, one per line.  etcd never splits
 *           the events of one revision over two messages (its watch
 *           batches stop at a revision boundary, and fragmenting is off
 *           unless asked for), so the events of a message are grouped by
 *           mod_revision and each group becomes one transaction and one
 *           published version.  A group at or below the applied revision
 *           (replayed after a reconnect) is skipped: nothing is applied
 *           twice, and since the watch resumes at applied + 1 nothing is
 *           missed either.
 *
 * Failures move between the states: a transport failure resumes the watch
 * on the next endpoint; a compacted start revision, or data the mirror
 * refuses (too large, malformed), goes back to read.  Refused data leaves
 * the published version alone: the transaction that met it is aborted.
 *
 * RCU: the thread registers with the cell's flavor and stays offline
 * except while it publishes (urcu-qsbr readers never wait for it while it
 * blocks on the network).
 */
#include <urcu/urcu-memb.h>	/* urcu_memb_flavor, struct rcu_flavor_struct */

#include <cowmap-etcd.h>

#include "gateway.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_START_TIMEOUT_MS 5000
#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_PROBE_INTERVAL_MS 1000
#define DEFAULT_RETRY_MAX_MS 2000
#define RETRY_MIN_MS 50
#define DEFAULT_MAX_VALUE (1u << 20)
#define DEFAULT_MAX_RESPONSE ((size_t)64 << 20)
#define DEFAULT_RANGE_PAGE 1000

/* The stamp: the value stored under the empty key of every version. */
struct stamp {
	int64_t revision;
	unsigned flags;
};

/* How a watch ended. */
enum watch_outcome {
	W_RUNNING,
	W_STOP,		/* cowmap_etcd_stop() */
	W_DISCONNECTED,	/* transport failure: resume on the next endpoint */
	W_COMPACTED,	/* the start revision is gone: read again */
	W_REFUSED,	/* data refused: read again, after a back-off */
};

struct cowmap_etcd {
	/* Settings, fixed after start. */
	struct cowmap_etcd_options o;
	char **endpoints;
	unsigned nendpoints;
	char *prefix;
	size_t prefix_len;
	char *key_b64, *end_b64;	/* the range, as requests spell it */
	const struct rcu_flavor_struct *flavor;
	struct cowmap_cell *cell;

	pthread_t thread;
	bool thread_started;
	atomic_bool stop;
	struct gw gw;

	/* The mirror thread's own state. */
	struct cowmap *cur;	/* a reference to the published version */
	int64_t applied;	/* its revision */
	unsigned ep;		/* endpoint in use */
	unsigned failures;	/* failed attempts since the last success */
	unsigned backoff_ms;
	CURL *watch;
	struct gw_buf line;	/* the watch stream's unfinished message */
	enum watch_outcome outcome;
	char why[GW_ERROR_MAX];	/* the outcome's message */
	int64_t last_activity_ms;
	bool unreachable_told;

	/* Shared with other threads, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct cowmap_etcd_stats st;
	int64_t contact_ms;
	int start_state;	/* 0 pending, 1 first read published, <0 -errno */
	int start_failure;	/* the last failure of the first read, -errno */
	bool stopped;
};

/* ------------------------------------------------------------------ */
/* Messages and statistics                                             */
/* ------------------------------------------------------------------ */

/* Tell the application (and record the last error for failures). */
__attribute__((format(printf, 4, 5)))
static void tell(struct cowmap_etcd *m, enum cowmap_etcd_event what,
		 int64_t revision, const char *fmt, ...)
{
	char msg[COWMAP_ETCD_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (what == COWMAP_ETCD_DISCONNECTED || what == COWMAP_ETCD_REFUSED ||
	    what == COWMAP_ETCD_UNREACHABLE) {
		pthread_mutex_lock(&m->lock);
		snprintf(m->st.last_error, sizeof(m->st.last_error), "%s", msg);
		pthread_mutex_unlock(&m->lock);
	}
	if (m->o.on_event)
		m->o.on_event(what, revision, msg, m->o.ctx);
	else
		fprintf(stderr, "cowmap-etcd: %s\n", msg);
}

/* etcd answered: note the store revision it reported. */
static void contact(struct cowmap_etcd *m, json_t *header)
{
	int64_t rev = 0;

	gw_int64(header, "revision", &rev);
	pthread_mutex_lock(&m->lock);
	if (rev > m->st.store_revision)
		m->st.store_revision = rev;
	m->contact_ms = gw_now_ms();
	pthread_mutex_unlock(&m->lock);
}

/* A key for a message: printable, cut short. */
static const char *show_key(const unsigned char *key, size_t len,
			    char out[80])
{
	size_t o = 0;

	for (size_t i = 0; i < len && o < 70; i++)
		o += (size_t)snprintf(out + o, 80 - o,
				      isprint(key[i]) ? "%c" : "\\x%02x",
				      key[i]);
	if (o >= 70)
		snprintf(out + o, 80 - o, "...");
	return out;
}

/* ------------------------------------------------------------------ */
/* Versions                                                            */
/* ------------------------------------------------------------------ */

static void free_value(void *value, void *ctx)
{
	(void)ctx;
	free(value);
}

static int set_stamp(struct cowmap_txn *t, int64_t revision, unsigned flags)
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
 * with the previous version and the new one.
 */
static int publish(struct cowmap_etcd *m, struct cowmap *next,
		   int64_t revision, unsigned flags, size_t events)
{
	struct cowmap *prev = m->cur;
	int rc;

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
static int decode_kv(struct cowmap_etcd *m, json_t *kv, bool key_only,
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
			 show_key(*key, *klen, shown));
		goto fail;
	}
	if (!gw_int64(kv, "mod_revision", &mod) ||
	    !gw_int64(kv, "create_revision", &create) ||
	    !gw_int64(kv, "version", &version) ||
	    !gw_int64(kv, "lease", &lease) || mod <= 0) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\": malformed or missing revision fields",
			 show_key(*key, *klen, shown));
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
			 show_key(*key, *klen, shown), mod, len,
			 m->o.max_value_bytes);
		free(*key);
		*key = NULL;
		return -EFBIG;
	}
	if (rc < 0) {
		snprintf(m->why, sizeof(m->why),
			 "key \"%s\" at revision %" PRId64 ": value is not base64",
			 show_key(*key, *klen, shown), mod);
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

static bool same_value(const struct cowmap_etcd_value *a,
		       const struct cowmap_etcd_value *b)
{
	return a->mod_revision == b->mod_revision && a->len == b->len &&
	       memcmp(a->data, b->data, a->len) == 0;
}

/* ------------------------------------------------------------------ */
/* Reading the range                                                   */
/* ------------------------------------------------------------------ */

static char *url_of(const struct cowmap_etcd *m, const char *path)
{
	char *url;

	if (asprintf(&url, "%s%s", m->endpoints[m->ep], path) < 0)
		return NULL;
	return url;
}

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
	char *url = url_of(m, "/v3/kv/range");
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
		contact(m, json_object_get(doc, "header"));

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
			rc = decode_kv(m, kv, false, &key, &klen, &val);
			if (rc < 0)
				break;
			if (cowmap_txn_get(t, key, klen, &old) == 1 &&
			    same_value(old, val)) {
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
static int read_range(struct cowmap_etcd *m, unsigned flags,
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
				rc = set_stamp(t, rev, flags);
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
		rc = publish(m, cowmap_txn_commit(t), rev, flags, 0);
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
		tell(m, COWMAP_ETCD_RESYNCED, rev,
		     "%s; read the whole range again and published it at "
		     "revision %" PRId64, reason, rev);
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Watching                                                            */
/* ------------------------------------------------------------------ */

/* Apply events [from, to) of one revision as one version. */
static int apply_revision(struct cowmap_etcd *m, json_t *events, size_t from,
			  size_t to, int64_t rev)
{
	struct cowmap_txn *t = cowmap_txn_begin(m->cur);
	int rc = 0;

	if (t == NULL) {
		snprintf(m->why, sizeof(m->why), "out of memory");
		return -ENOMEM;
	}
	for (size_t i = from; i < to && rc >= 0; i++) {
		json_t *ev = json_array_get(events, i);
		json_t *type = json_object_get(ev, "type");
		bool del = json_is_string(type) &&
			   strcmp(json_string_value(type), "DELETE") == 0;
		unsigned char *key;
		size_t klen;
		struct cowmap_etcd_value *val;

		if (type != NULL && !del &&
		    !(json_is_string(type) &&
		      strcmp(json_string_value(type), "PUT") == 0)) {
			snprintf(m->why, sizeof(m->why),
				 "revision %" PRId64 ": unknown event type", rev);
			rc = -EPROTO;
			break;
		}
		rc = decode_kv(m, json_object_get(ev, "kv"), del, &key, &klen,
			       &val);
		if (rc < 0)
			break;
		if (del) {
			rc = cowmap_txn_del(t, key, klen);
		} else {
			rc = cowmap_txn_set(t, key, klen, val);
			if (rc < 0)
				free(val);
		}
		if (rc < 0)
			snprintf(m->why, sizeof(m->why), "revision %" PRId64 ": %s",
				 rev, strerror(-rc));
		free(key);
	}
	if (rc >= 0)
		rc = set_stamp(t, rev, 0);
	if (rc < 0) {
		cowmap_txn_abort(t);	/* the published version stays */
		return rc;
	}
	rc = publish(m, cowmap_txn_commit(t), rev, 0, to - from);
	if (rc < 0)
		snprintf(m->why, sizeof(m->why), "cannot publish: %s",
			 strerror(-rc));
	return rc;
}

static int64_t event_revision(json_t *ev)
{
	int64_t rev = 0;

	if (!gw_int64(json_object_get(ev, "kv"), "mod_revision", &rev))
		return -1;
	return rev;
}

/* One message of the watch stream. */
static enum watch_outcome watch_message(struct cowmap_etcd *m,
					const char *text, size_t len)
{
	json_error_t jerr;
	json_t *doc = json_loadb(text, len, 0, &jerr);
	enum watch_outcome out = W_RUNNING;

	if (!json_is_object(doc)) {
		snprintf(m->why, sizeof(m->why),
			 "malformed watch message (%s) after revision %" PRId64,
			 doc ? "not an object" : jerr.text, m->applied);
		json_decref(doc);
		return W_REFUSED;
	}

	json_t *res = json_object_get(doc, "result");

	if (json_object_get(doc, "error") != NULL || !json_is_object(res)) {
		if (json_object_get(doc, "error") != NULL) {
			char why[GW_ERROR_MAX];

			gw_describe_error(200, doc, why);
			snprintf(m->why, sizeof(m->why), "%.60s: watch failed: %.170s",
				 m->endpoints[m->ep], why);
			out = W_DISCONNECTED;
		} else {
			snprintf(m->why, sizeof(m->why),
				 "malformed watch message (no result) after "
				 "revision %" PRId64, m->applied);
			out = W_REFUSED;
		}
		json_decref(doc);
		return out;
	}
	contact(m, json_object_get(res, "header"));

	int64_t compact = 0;

	gw_int64(res, "compact_revision", &compact);
	if (json_is_true(json_object_get(res, "canceled"))) {
		json_t *reason = json_object_get(res, "cancel_reason");

		if (compact > 0) {
			snprintf(m->why, sizeof(m->why),
				 "the watch from revision %" PRId64
				 " was refused: etcd compacted its history up "
				 "to revision %" PRId64,
				 m->applied + 1, compact);
			out = W_COMPACTED;
		} else {
			snprintf(m->why, sizeof(m->why),
				 "%s: watch canceled: %s", m->endpoints[m->ep],
				 json_is_string(reason) ? json_string_value(reason)
							: "no reason given");
			out = W_DISCONNECTED;
		}
		json_decref(doc);
		return out;
	}
	if (json_is_true(json_object_get(res, "created"))) {
		pthread_mutex_lock(&m->lock);
		m->st.connected = 1;
		m->st.endpoint = m->ep;
		pthread_mutex_unlock(&m->lock);
		m->failures = 0;
		m->backoff_ms = RETRY_MIN_MS;
		tell(m, COWMAP_ETCD_CONNECTED, m->applied,
		     "watching %s from revision %" PRId64,
		     m->endpoints[m->ep], m->applied + 1);
	}

	json_t *events = json_object_get(res, "events");
	size_t n = json_is_array(events) ? json_array_size(events) : 0;

	if (events != NULL && !json_is_array(events)) {
		snprintf(m->why, sizeof(m->why),
			 "malformed watch message (events) after revision %" PRId64,
			 m->applied);
		out = W_REFUSED;
	}
	for (size_t i = 0; i < n && out == W_RUNNING;) {
		int64_t rev = event_revision(json_array_get(events, i));
		size_t j = i + 1;

		while (j < n && event_revision(json_array_get(events, j)) == rev)
			j++;
		if (rev <= 0 || (j < n && event_revision(json_array_get(events, j)) < rev)) {
			snprintf(m->why, sizeof(m->why),
				 "malformed watch message: event revisions out "
				 "of order after revision %" PRId64, m->applied);
			out = W_REFUSED;
			break;
		}
		if (rev > m->applied) {
			int rc = apply_revision(m, events, i, j, rev);

			if (rc < 0)
				out = W_REFUSED;
		}
		i = j;
	}
	json_decref(doc);
	return out;
}

/* libcurl write callback of the watch: split the stream into messages. */
static size_t watch_data(char *data, size_t size, size_t n, void *arg)
{
	struct cowmap_etcd *m = arg;
	size_t len = size * n;

	m->last_activity_ms = gw_now_ms();
	if (!gw_buf_append(&m->line, data, len)) {
		snprintf(m->why, sizeof(m->why), m->line.overflow
			 ? "a watch message is larger than max_response_bytes"
			 : "out of memory");
		m->outcome = W_REFUSED;
		return 0;
	}

	char *start = m->line.data, *end = start + m->line.len, *nl;

	while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
		if (nl > start) {
			enum watch_outcome o =
				watch_message(m, start, (size_t)(nl - start));

			if (o != W_RUNNING) {
				m->outcome = o;
				return 0;	/* aborts the transfer */
			}
		}
		start = nl + 1;
	}
	m->line.len = (size_t)(end - start);
	memmove(m->line.data, start, m->line.len);
	return len;
}

/* A probe's answer: collected, capped small. */
static size_t probe_data(char *data, size_t size, size_t n, void *arg)
{
	return gw_buf_append(arg, data, size * n) ? size * n : 0;
}

/*
 * Watch from m->applied + 1 on the current endpoint until something ends
 * it; returns how it ended, with the message in m->why.
 */
static enum watch_outcome watch(struct cowmap_etcd *m)
{
	char *url = url_of(m, "/v3/watch");
	char *probe_url = url_of(m, "/v3/kv/range");
	json_t *req = json_pack("{s:{s:s, s:s, s:I}}", "create_request",
				"key", m->key_b64, "range_end", m->end_b64,
				"start_revision", (json_int_t)(m->applied + 1));
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_t *preq = json_pack("{s:s, s:s, s:b, s:i}", "key", m->key_b64,
				 "range_end", m->end_b64, "count_only", 1,
				 "limit", 1);
	char *probe_body = preq ? json_dumps(preq, JSON_COMPACT) : NULL;
	struct gw_buf probe_answer = { .max = 1 << 16 };
	bool probing = false;

	json_decref(req);
	json_decref(preq);
	m->outcome = W_RUNNING;
	m->line.len = 0;
	m->line.max = m->o.max_response_bytes;
	if (url == NULL || probe_url == NULL || body == NULL ||
	    probe_body == NULL || (m->watch == NULL &&
				   (m->watch = curl_easy_init()) == NULL)) {
		snprintf(m->why, sizeof(m->why), "out of memory");
		m->outcome = W_DISCONNECTED;
		goto out;
	}
	gw_setup(&m->gw, m->watch, url, body);
	curl_easy_setopt(m->watch, CURLOPT_WRITEFUNCTION, watch_data);
	curl_easy_setopt(m->watch, CURLOPT_WRITEDATA, m);
	if (curl_multi_add_handle(m->gw.multi, m->watch) != CURLM_OK) {
		snprintf(m->why, sizeof(m->why), "cannot start the watch");
		m->outcome = W_DISCONNECTED;
		goto out;
	}
	m->last_activity_ms = gw_now_ms();

	while (m->outcome == W_RUNNING) {
		int running, queued;
		CURLMsg *msg;

		if (atomic_load(&m->stop)) {
			m->outcome = W_STOP;
			break;
		}
		curl_multi_perform(m->gw.multi, &running);
		while ((msg = curl_multi_info_read(m->gw.multi, &queued))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			CURLcode res = msg->data.result;

			if (msg->easy_handle == m->watch &&
			    m->outcome == W_RUNNING) {
				long status = 0;

				curl_easy_getinfo(m->watch,
						  CURLINFO_RESPONSE_CODE, &status);
				if (res == CURLE_PARTIAL_FILE ||
				    res == CURLE_RECV_ERROR)
					snprintf(m->why, sizeof(m->why),
						 "%s: the connection was lost "
						 "mid-stream", url);
				else if (res != CURLE_OK)
					snprintf(m->why, sizeof(m->why),
						 "%s: watch: %s", url,
						 curl_easy_strerror(res));
				else
					snprintf(m->why, sizeof(m->why),
						 "%s: the member ended the watch "
						 "(HTTP %ld)", url, status);
				m->outcome = W_DISCONNECTED;
			} else if (msg->easy_handle == m->gw.req) {
				long status = 0;
				json_t *doc = NULL;

				curl_easy_getinfo(m->gw.req,
						  CURLINFO_RESPONSE_CODE, &status);
				if (res == CURLE_OK && status == 200)
					doc = json_loadb(probe_answer.data,
							 probe_answer.len, 0, NULL);
				curl_multi_remove_handle(m->gw.multi, m->gw.req);
				probing = false;
				if (json_is_object(doc)) {
					contact(m, json_object_get(doc, "header"));
					m->last_activity_ms = gw_now_ms();
				} else if (m->outcome == W_RUNNING) {
					char what[64];

					if (res != CURLE_OK)
						snprintf(what, sizeof(what), "%s",
							 curl_easy_strerror(res));
					else
						snprintf(what, sizeof(what),
							 "HTTP %ld", status);
					snprintf(m->why, sizeof(m->why),
						 "%s: the watch is silent and a "
						 "read failed: %s", probe_url,
						 what);
					m->outcome = W_DISCONNECTED;
				}
				json_decref(doc);
				probe_answer.len = 0;
			}
		}
		if (m->outcome != W_RUNNING)
			break;

		int64_t now = gw_now_ms();
		int64_t idle = now - m->last_activity_ms;
		long wait = 1000;

		if (!probing && idle >= m->o.probe_interval_ms) {
			/* Linearizable: a member without quorum fails it. */
			gw_setup(&m->gw, m->gw.req, probe_url, probe_body);
			curl_easy_setopt(m->gw.req, CURLOPT_TIMEOUT_MS,
					 (long)m->o.request_timeout_ms);
			curl_easy_setopt(m->gw.req, CURLOPT_WRITEFUNCTION,
					 probe_data);
			curl_easy_setopt(m->gw.req, CURLOPT_WRITEDATA,
					 &probe_answer);
			if (curl_multi_add_handle(m->gw.multi, m->gw.req) ==
			    CURLM_OK)
				probing = true;
			continue;
		}
		if (!probing && m->o.probe_interval_ms - idle < wait)
			wait = (long)(m->o.probe_interval_ms - idle);
		curl_multi_poll(m->gw.multi, NULL, 0, (int)(wait > 0 ? wait : 1),
				NULL);
	}
	curl_multi_remove_handle(m->gw.multi, m->watch);
	if (probing)
		curl_multi_remove_handle(m->gw.multi, m->gw.req);
	pthread_mutex_lock(&m->lock);
	m->st.connected = 0;
	pthread_mutex_unlock(&m->lock);
out:
	gw_buf_free(&probe_answer);
	free(url);
	free(probe_url);
	free(body);
	free(probe_body);
	return m->outcome;
}

/* ------------------------------------------------------------------ */
/* The thread                                                          */
/* ------------------------------------------------------------------ */

/* After a failure: the next endpoint, and a wait after a whole round. */
static bool next_endpoint(struct cowmap_etcd *m)
{
	m->ep = (m->ep + 1) % m->nendpoints;
	if (++m->failures < m->nendpoints)
		return !atomic_load(&m->stop);
	m->failures = 0;

	unsigned ms = m->backoff_ms;

	m->backoff_ms = m->backoff_ms * 2 > m->o.retry_max_ms
				? m->o.retry_max_ms : m->backoff_ms * 2;
	return gw_sleep(&m->gw, ms);
}

/* A refusal: the same data is refused by every member; just wait. */
static bool refused_wait(struct cowmap_etcd *m)
{
	unsigned ms = m->backoff_ms;

	m->backoff_ms = m->backoff_ms * 2 > m->o.retry_max_ms
				? m->o.retry_max_ms : m->backoff_ms * 2;
	return gw_sleep(&m->gw, ms);
}

static void set_start_state(struct cowmap_etcd *m, int state)
{
	pthread_mutex_lock(&m->lock);
	if (m->start_state == 0)
		m->start_state = state;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

static void count_refusal(struct cowmap_etcd *m)
{
	pthread_mutex_lock(&m->lock);
	m->st.refused++;
	pthread_mutex_unlock(&m->lock);
}

static void *mirror_main(void *arg)
{
	struct cowmap_etcd *m = arg;
	int64_t start_deadline = gw_now_ms() + m->o.start_timeout_ms;
	bool initial = true, need_read = true;
	char reason[GW_ERROR_MAX] = "";

	m->flavor->register_thread();
	m->flavor->thread_offline();
	m->backoff_ms = RETRY_MIN_MS;

	while (!atomic_load(&m->stop)) {
		if (need_read) {
			unsigned flags = initial ? COWMAP_ETCD_VERSION_INITIAL
						 : COWMAP_ETCD_VERSION_RESYNC;
			int rc = read_range(m, flags, initial ? NULL : reason);

			if (rc == 0) {
				need_read = false;
				if (initial)
					set_start_state(m, 1);
				initial = false;
				continue;
			}
			if (rc == -EINTR)
				break;
			if (rc == -EPROTO || rc == -EFBIG) {
				count_refusal(m);
				tell(m, COWMAP_ETCD_REFUSED, m->applied,
				     "refused: %s (keeping revision %" PRId64 ")",
				     m->why, m->applied);
				if (initial && !(m->o.flags & COWMAP_ETCD_START_EMPTY))
					set_start_state(m, -EPROTO);
				if (!refused_wait(m))
					break;
			} else {
				if (initial) {
					pthread_mutex_lock(&m->lock);
					m->start_failure = rc;
					pthread_mutex_unlock(&m->lock);
				}
				tell(m, COWMAP_ETCD_DISCONNECTED, m->applied,
				     "%s", m->why);
				if (initial && !m->unreachable_told &&
				    gw_now_ms() >= start_deadline &&
				    (m->o.flags & COWMAP_ETCD_START_EMPTY)) {
					m->unreachable_told = true;
					tell(m, COWMAP_ETCD_UNREACHABLE, 0,
					     "no endpoint answered within %u ms; "
					     "serving an empty version until one "
					     "does", m->o.start_timeout_ms);
				}
				if (!next_endpoint(m))
					break;
			}
			continue;
		}

		enum watch_outcome out = watch(m);

		switch (out) {
		case W_STOP:
		case W_RUNNING:
			break;
		case W_DISCONNECTED:
			pthread_mutex_lock(&m->lock);
			m->st.reconnects++;
			pthread_mutex_unlock(&m->lock);
			tell(m, COWMAP_ETCD_DISCONNECTED, m->applied,
			     "%s; resuming from revision %" PRId64
			     " on the next endpoint", m->why, m->applied + 1);
			next_endpoint(m);
			break;
		case W_COMPACTED:
			snprintf(reason, sizeof(reason), "%s", m->why);
			need_read = true;
			break;
		case W_REFUSED:
			count_refusal(m);
			tell(m, COWMAP_ETCD_REFUSED, m->applied,
			     "refused: %s (keeping revision %" PRId64 ")",
			     m->why, m->applied);
			snprintf(reason, sizeof(reason),
				 "after data refused at revision %" PRId64,
				 m->applied);
			need_read = true;
			refused_wait(m);
			break;
		}
	}
	set_start_state(m, -EINTR);
	m->flavor->thread_online();
	m->flavor->unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Start, stop, questions                                              */
/* ------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void init_curl(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void free_settings(struct cowmap_etcd *m)
{
	for (unsigned i = 0; i < m->nendpoints; i++)
		free(m->endpoints[i]);
	free(m->endpoints);
	free(m->prefix);
	free(m->key_b64);
	free(m->end_b64);
}

/* Split the endpoint list into base URLs without a trailing slash. */
static int parse_endpoints(struct cowmap_etcd *m, const char *list,
			   char err[COWMAP_ETCD_ERROR_MAX])
{
	const char *p = list;

	while (*p) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len > 0 && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		while (len > 0 && (isspace((unsigned char)p[len - 1]) ||
				   p[len - 1] == '/'))
			len--;
		if (len > 0) {
			char **grown = realloc(m->endpoints,
					       (m->nendpoints + 1) * sizeof(char *));
			char *url = NULL;
			bool scheme = memmem(p, len, "://", 3) != NULL;

			if (grown == NULL ||
			    asprintf(&url, "%s%.*s", scheme ? "" : "http://",
				     (int)len, p) < 0) {
				if (grown)
					m->endpoints = grown;
				snprintf(err, COWMAP_ETCD_ERROR_MAX, "out of memory");
				return -ENOMEM;
			}
			m->endpoints = grown;
			m->endpoints[m->nendpoints++] = url;
		}
		p += end ? (size_t)(end - p) + 1 : strlen(p);
	}
	if (m->nendpoints == 0) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "no endpoint given");
		return -EINVAL;
	}
	return 0;
}

/* The range of the prefix, base64-encoded: [prefix, prefix + 1). */
static int make_range(struct cowmap_etcd *m)
{
	size_t len = m->prefix_len;
	unsigned char *end = malloc(len + 1);

	if (end == NULL)
		return -ENOMEM;
	memcpy(end, m->prefix, len);
	while (len > 0 && end[len - 1] == 0xff)
		len--;
	if (len == 0) {
		/* "" or all 0xff: every key from the start key on ("\0"). */
		end[0] = 0;
		len = 1;
	} else {
		end[len - 1]++;
	}
	m->end_b64 = gw_base64(end, len);
	m->key_b64 = m->prefix_len ? gw_base64(m->prefix, m->prefix_len)
				   : gw_base64("", 1);
	free(end);
	return m->end_b64 && m->key_b64 ? 0 : -ENOMEM;
}

static void fill_defaults(struct cowmap_etcd_options *o)
{
	if (!o->start_timeout_ms)
		o->start_timeout_ms = DEFAULT_START_TIMEOUT_MS;
	if (!o->request_timeout_ms)
		o->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
	if (!o->probe_interval_ms)
		o->probe_interval_ms = DEFAULT_PROBE_INTERVAL_MS;
	if (!o->retry_max_ms)
		o->retry_max_ms = DEFAULT_RETRY_MAX_MS;
	if (o->retry_max_ms < RETRY_MIN_MS)
		o->retry_max_ms = RETRY_MIN_MS;
	if (!o->max_value_bytes)
		o->max_value_bytes = DEFAULT_MAX_VALUE;
	if (!o->max_response_bytes)
		o->max_response_bytes = DEFAULT_MAX_RESPONSE;
	if (!o->range_page)
		o->range_page = DEFAULT_RANGE_PAGE;
}

struct cowmap_etcd *cowmap_etcd_start(const struct cowmap_etcd_options *opts,
				      char err[COWMAP_ETCD_ERROR_MAX])
{
	char scratch[COWMAP_ETCD_ERROR_MAX];
	struct cowmap_etcd *m;
	int rc;

	if (err == NULL)
		err = scratch;
	err[0] = '\0';
	if (opts == NULL || opts->endpoints == NULL) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "no endpoints given");
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&curl_once, init_curl);
	if (curl_init_result != CURLE_OK) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "libcurl: %s",
			 curl_easy_strerror(curl_init_result));
		errno = ENOMEM;
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "out of memory");
		errno = ENOMEM;
		return NULL;
	}
	m->o = *opts;
	m->o.endpoints = NULL;
	m->o.prefix = NULL;
	fill_defaults(&m->o);
	m->flavor = opts->flavor ? opts->flavor : &urcu_memb_flavor;
	atomic_init(&m->stop, false);
	m->prefix = strdup(opts->prefix ? opts->prefix : "");
	rc = m->prefix ? parse_endpoints(m, opts->endpoints, err) : -ENOMEM;
	if (rc == 0) {
		m->prefix_len = strlen(m->prefix);
		rc = make_range(m);
	}
	if (rc < 0) {
		if (!err[0])
			snprintf(err, COWMAP_ETCD_ERROR_MAX, "out of memory");
		goto fail_settings;
	}

	/* The placeholder: an empty version that says "not read yet".
	 * Every later version derives from it, so they share its seed and
	 * cowmap_diff() compares them by structure. */
	const struct cowmap_options mo = { .value_free = free_value };
	struct cowmap *empty = cowmap_new(&mo);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;

	cowmap_release(empty);
	rc = t ? set_stamp(t, 0, COWMAP_ETCD_VERSION_UNREACHABLE) : -ENOMEM;
	m->cur = rc == 0 ? cowmap_txn_commit(t) : NULL;
	if (rc < 0)
		cowmap_txn_abort(t);
	if (m->cur == NULL || cowmap_retain(m->cur) == NULL ||
	    (m->cell = cowmap_cell_new(m->cur, m->flavor)) == NULL) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "out of memory");
		rc = -ENOMEM;
		goto fail_versions;
	}

	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->cond, &ca);
	pthread_condattr_destroy(&ca);

	rc = gw_init(&m->gw, &m->stop, m->o.request_timeout_ms,
		     m->o.max_response_bytes);
	if (rc == 0) {
		rc = -pthread_create(&m->thread, NULL, mirror_main, m);
		m->thread_started = rc == 0;
		if (rc == 0)	/* for top -H and debuggers; may fail, harmless */
			pthread_setname_np(m->thread, "cowmap-etcd");
	}
	if (rc < 0) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX, "cannot start: %s",
			 strerror(-rc));
		goto fail_thread;
	}

	/* Wait for the first read, a definite refusal, or the deadline. */
	struct timespec until;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += m->o.start_timeout_ms / 1000;
	until.tv_nsec += (long)(m->o.start_timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&m->lock);
	while (m->start_state == 0 &&
	       pthread_cond_timedwait(&m->cond, &m->lock, &until) != ETIMEDOUT)
		;
	int state = m->start_state, failure = m->start_failure;

	snprintf(err, COWMAP_ETCD_ERROR_MAX, "%s", m->st.last_error);
	pthread_mutex_unlock(&m->lock);

	if (state == 1)
		return m;
	if (state == 0 && (m->o.flags & COWMAP_ETCD_START_EMPTY))
		return m;	/* the placeholder is published */

	/* No start: the reason, prefixed so the caller sees what failed. */
	char why[COWMAP_ETCD_ERROR_MAX];

	snprintf(why, sizeof(why), "%s", err[0] ? err : "no answer");
	if (state == 0) {
		snprintf(err, COWMAP_ETCD_ERROR_MAX,
			 "etcd unreachable: no endpoint answered within %u ms "
			 "(last error: %.180s)", m->o.start_timeout_ms, why);
		rc = failure == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED;
	} else {
		rc = state;
	}
	cowmap_etcd_stop(m);
fail_thread:
	if (m->watch)
		curl_easy_cleanup(m->watch);
	gw_buf_free(&m->line);
	gw_fini(&m->gw);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	cowmap_cell_free(m->cell);	/* the caller is registered */
	m->cell = NULL;
fail_versions:
	cowmap_release(m->cur);
fail_settings:
	free_settings(m);
	free(m);
	errno = -rc;
	return NULL;
}

struct cowmap_cell *cowmap_etcd_cell(struct cowmap_etcd *m)
{
	return m ? m->cell : NULL;
}

int cowmap_etcd_stats(struct cowmap_etcd *m, struct cowmap_etcd_stats *out)
{
	if (m == NULL || out == NULL)
		return -EINVAL;
	pthread_mutex_lock(&m->lock);
	*out = m->st;
	out->ms_since_contact = m->contact_ms ? gw_now_ms() - m->contact_ms : -1;
	pthread_mutex_unlock(&m->lock);
	return 0;
}

int cowmap_etcd_wait(struct cowmap_etcd *m, int64_t revision,
		     unsigned timeout_ms)
{
	struct timespec until;
	int rc = 0;

	if (m == NULL)
		return -EINVAL;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	pthread_mutex_lock(&m->lock);
	while (m->st.applied_revision < revision && rc == 0) {
		if (m->stopped)
			rc = -ESHUTDOWN;
		else if (pthread_cond_timedwait(&m->cond, &m->lock, &until) ==
			 ETIMEDOUT)
			rc = m->st.applied_revision >= revision ? 0 : -ETIMEDOUT;
	}
	pthread_mutex_unlock(&m->lock);
	return rc;
}

void cowmap_etcd_stop(struct cowmap_etcd *m)
{
	if (m == NULL || !m->thread_started)
		return;
	atomic_store(&m->stop, true);
	curl_multi_wakeup(m->gw.multi);
	pthread_join(m->thread, NULL);
	m->thread_started = false;
	pthread_mutex_lock(&m->lock);
	m->stopped = true;
	m->st.connected = 0;
	pthread_cond_broadcast(&m->cond);
	pthread_mutex_unlock(&m->lock);
}

void cowmap_etcd_free(struct cowmap_etcd *m)
{
	if (m == NULL)
		return;
	cowmap_etcd_stop(m);
	if (m->watch)
		curl_easy_cleanup(m->watch);
	gw_fini(&m->gw);
	gw_buf_free(&m->line);
	cowmap_release(m->cur);
	cowmap_cell_free(m->cell);
	pthread_cond_destroy(&m->cond);
	pthread_mutex_destroy(&m->lock);
	free_settings(m);
	free(m);
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
