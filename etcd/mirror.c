/*
 * mirror.c - the mirror thread's loop (read, then watch, and what each
 * failure leads to), start and stop, statistics and messages.  How the
 * whole works is told in mirror.h.
 */
#include "mirror.h"

#include <ctype.h>
#include <stdarg.h>
#include <time.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_START_TIMEOUT_MS 5000
#define DEFAULT_REQUEST_TIMEOUT_MS 5000
#define DEFAULT_PROBE_INTERVAL_MS 1000
#define DEFAULT_RETRY_MAX_MS 2000
#define DEFAULT_MAX_VALUE (1u << 20)
#define DEFAULT_MAX_RESPONSE ((size_t)64 << 20)
#define DEFAULT_RANGE_PAGE 1000

/* ------------------------------------------------------------------ */
/* Messages and statistics                                             */
/* ------------------------------------------------------------------ */

/* Tell the application (and record the last error for failures). */
__attribute__((format(printf, 4, 5)))
void mirror_tell(struct cowmap_etcd *m, enum cowmap_etcd_event what,
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
void mirror_contact(struct cowmap_etcd *m, json_t *header)
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
const char *mirror_show_key(const unsigned char *key, size_t len,
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

char *mirror_url(const struct cowmap_etcd *m, const char *path)
{
	char *url;

	if (asprintf(&url, "%s%s", m->endpoints[m->ep], path) < 0)
		return NULL;
	return url;
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
			int rc = mirror_read_range(m, flags, initial ? NULL : reason);

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
				mirror_tell(m, COWMAP_ETCD_REFUSED, m->applied,
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
				mirror_tell(m, COWMAP_ETCD_DISCONNECTED, m->applied,
				     "%s", m->why);
				if (initial && !m->unreachable_told &&
				    gw_now_ms() >= start_deadline &&
				    (m->o.flags & COWMAP_ETCD_START_EMPTY)) {
					m->unreachable_told = true;
					mirror_tell(m, COWMAP_ETCD_UNREACHABLE, 0,
					     "no endpoint answered within %u ms; "
					     "serving an empty version until one "
					     "does", m->o.start_timeout_ms);
				}
				if (!next_endpoint(m))
					break;
			}
			continue;
		}

		enum watch_outcome out = mirror_watch(m);

		switch (out) {
		case W_STOP:
		case W_RUNNING:
			break;
		case W_DISCONNECTED:
			pthread_mutex_lock(&m->lock);
			m->st.reconnects++;
			pthread_mutex_unlock(&m->lock);
			mirror_tell(m, COWMAP_ETCD_DISCONNECTED, m->applied,
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
			mirror_tell(m, COWMAP_ETCD_REFUSED, m->applied,
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
	const struct cowmap_options mo = { .value_free = mirror_free_value };
	struct cowmap *empty = cowmap_new(&mo);
	struct cowmap_txn *t = empty ? cowmap_txn_begin(empty) : NULL;

	cowmap_release(empty);
	rc = t ? mirror_set_stamp(t, 0, COWMAP_ETCD_VERSION_UNREACHABLE) : -ENOMEM;
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
