/*
 * watch.c - the watch stream: messages split by line, the events of each
 * revision applied as one version, and the probe of a silent watch.
 */
#include "mirror.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		rc = mirror_decode_kv(m, json_object_get(ev, "kv"), del, &key, &klen,
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
		rc = mirror_set_stamp(t, rev, 0);
	if (rc < 0) {
		cowmap_txn_abort(t);	/* the published version stays */
		return rc;
	}
	rc = mirror_publish(m, cowmap_txn_commit(t), rev, 0, to - from);
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
	mirror_contact(m, json_object_get(res, "header"));

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
		mirror_tell(m, COWMAP_ETCD_CONNECTED, m->applied,
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
enum watch_outcome mirror_watch(struct cowmap_etcd *m)
{
	char *url = mirror_url(m, "/v3/watch");
	char *probe_url = mirror_url(m, "/v3/kv/range");
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
					mirror_contact(m, json_object_get(doc, "header"));
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
