/*
 * gateway.c - base64, JSON fields and HTTP requests for etcd's gateway.
 *
 * The gateway is grpc-gateway in front of etcd's gRPC API: requests are
 * JSON objects POSTed to /v3/<service>/<call>, bytes fields (keys, values)
 * travel as base64, int64 fields as decimal strings, and zero values
 * (false, 0, "", empty lists) are left out of answers altogether.  The
 * helpers here read fields with those rules so the mirror never has to
 * know them.
 *
 * Every request goes through a libcurl multi handle that the mirror thread
 * polls: cowmap_etcd_stop() wakes the poll, so a stop never waits for a
 * request timeout.
 */
#include "gateway.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool gw_buf_append(struct gw_buf *b, const void *data, size_t len)
{
	if (b->max && b->len + len > b->max) {
		b->overflow = true;
		return false;
	}
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + len + 1)
			cap *= 2;

		char *grown = realloc(b->data, cap);

		if (grown == NULL)
			return false;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
	return true;
}

void gw_buf_free(struct gw_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
	b->overflow = false;
}

/* ------------------------------------------------------------------ */
/* base64                                                              */
/* ------------------------------------------------------------------ */

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *gw_base64(const void *in, size_t len)
{
	const unsigned char *p = in;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	if (out == NULL)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;
		size_t n = len - i < 3 ? len - i : 3;

		if (n > 1)
			v |= (uint32_t)p[i + 1] << 8;
		if (n > 2)
			v |= p[i + 2];
		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = n > 1 ? b64_alphabet[v >> 6 & 63] : '=';
		*o++ = n > 2 ? b64_alphabet[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_digit(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')	/* '-' and '_': the URL alphabet */
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

ptrdiff_t gw_unbase64(const char *in, size_t len, unsigned char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;

	while (len > 0 && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int d = b64_digit((unsigned char)in[i]);

		if (d < 0)
			return -1;
		acc = acc << 6 | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return (ptrdiff_t)o;
}

/* ------------------------------------------------------------------ */
/* JSON fields                                                         */
/* ------------------------------------------------------------------ */

bool gw_int64(json_t *obj, const char *name, int64_t *out)
{
	json_t *v = json_object_get(obj, name);

	*out = 0;
	if (v == NULL)
		return true;
	if (json_is_integer(v)) {
		*out = (int64_t)json_integer_value(v);
		return true;
	}
	if (!json_is_string(v))
		return false;

	const char *s = json_string_value(v);
	char *end;

	errno = 0;
	long long n = strtoll(s, &end, 10);

	if (errno || end == s || *end)
		return false;
	*out = n;
	return true;
}

int gw_bytes(json_t *obj, const char *name, size_t max, unsigned char **out,
	     size_t *len)
{
	json_t *v = json_object_get(obj, name);
	const char *s = "";
	size_t slen = 0;

	*out = NULL;
	*len = 0;
	if (v != NULL) {
		if (!json_is_string(v))
			return -EPROTO;
		s = json_string_value(v);
		slen = json_string_length(v);
	}
	/* Checked before decoding: a huge value costs no allocation. */
	size_t digits = slen;

	while (digits > 0 && s[digits - 1] == '=')
		digits--;
	if (digits / 4 * 3 + (digits % 4 ? digits % 4 - 1 : 0) > max) {
		*len = digits / 4 * 3 + (digits % 4 ? digits % 4 - 1 : 0);
		return -EFBIG;
	}

	unsigned char *buf = malloc(gw_unbase64_max(slen) + 1);

	if (buf == NULL)
		return -ENOMEM;

	ptrdiff_t n = gw_unbase64(s, slen, buf);

	if (n < 0) {
		free(buf);
		return -EPROTO;
	}
	if ((size_t)n > max) {
		free(buf);
		*len = (size_t)n;
		return -EFBIG;
	}
	buf[n] = '\0';
	*out = buf;
	*len = (size_t)n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

int64_t gw_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int gw_init(struct gw *g, atomic_bool *stop, unsigned connect_timeout_ms,
	    size_t max_response)
{
	*g = (struct gw){ .stop = stop,
			  .connect_timeout_ms = connect_timeout_ms,
			  .max_response = max_response };
	g->multi = curl_multi_init();
	g->req = curl_easy_init();
	g->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (g->multi == NULL || g->req == NULL || g->headers == NULL) {
		gw_fini(g);
		return -ENOMEM;
	}
	return 0;
}

void gw_fini(struct gw *g)
{
	if (g->req)
		curl_easy_cleanup(g->req);
	if (g->multi)
		curl_multi_cleanup(g->multi);
	curl_slist_free_all(g->headers);
	g->req = NULL;
	g->multi = NULL;
	g->headers = NULL;
}

void gw_setup(struct gw *g, CURL *easy, const char *url, const char *body)
{
	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_POST, 1L);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, g->headers);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS,
			 (long)g->connect_timeout_ms);
#if LIBCURL_VERSION_NUM >= 0x075500	/* 7.85 */
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS,
			 (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	/* A member that dies without closing the connection (power, cable)
	 * is found by keepalive probes, the silent-watch probe aside. */
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 5L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 2L);
}

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct gw_buf *b = arg;

	if (!gw_buf_append(b, data, size * n))
		return 0;	/* aborts the transfer: CURLE_WRITE_ERROR */
	return size * n;
}

int gw_curl_errno(CURLcode rc)
{
	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return -ECONNREFUSED;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

void gw_describe_error(long status, json_t *body, char err[GW_ERROR_MAX])
{
	json_t *e = json_object_get(body, "error");
	json_t *msg = json_object_get(body, "message");

	/* The watch stream wraps errors: {"error": {"message": ...}}. */
	if (json_is_object(e))
		msg = json_object_get(e, "message");
	else if (!json_is_string(msg) && json_is_string(e))
		msg = e;
	if (json_is_string(msg))
		snprintf(err, GW_ERROR_MAX, "HTTP %ld: %s", status,
			 json_string_value(msg));
	else
		snprintf(err, GW_ERROR_MAX, "HTTP %ld", status);
}

/*
 * Run the transfer of @easy (already added to the multi handle) until it
 * completes or a stop is asked for.
 */
static CURLcode run_one(struct gw *g, CURL *easy)
{
	CURLcode result = CURLE_OK;
	bool done = false;

	while (!done) {
		int running, queued;
		CURLMsg *msg;

		if (atomic_load(g->stop)) {
			result = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
		if (curl_multi_perform(g->multi, &running) != CURLM_OK) {
			result = CURLE_FAILED_INIT;
			break;
		}
		while ((msg = curl_multi_info_read(g->multi, &queued))) {
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy) {
				result = msg->data.result;
				done = true;
			}
		}
		if (!done)
			curl_multi_poll(g->multi, NULL, 0, 1000, NULL);
	}
	return result;
}

int gw_post(struct gw *g, const char *url, const char *body,
	    unsigned timeout_ms, json_t **out, char err[GW_ERROR_MAX])
{
	struct gw_buf answer = { .max = g->max_response };
	long status = 0;
	int rc = 0;

	*out = NULL;
	gw_setup(g, g->req, url, body);
	curl_easy_setopt(g->req, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(g->req, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(g->req, CURLOPT_WRITEDATA, &answer);
	if (curl_multi_add_handle(g->multi, g->req) != CURLM_OK) {
		snprintf(err, GW_ERROR_MAX, "%s: cannot start a request", url);
		return -ENOMEM;
	}

	CURLcode res = run_one(g, g->req);

	curl_multi_remove_handle(g->multi, g->req);
	if (res == CURLE_ABORTED_BY_CALLBACK && atomic_load(g->stop)) {
		snprintf(err, GW_ERROR_MAX, "stopped");
		rc = -EINTR;
		goto out;
	}
	if (answer.overflow) {
		snprintf(err, GW_ERROR_MAX,
			 "%s: answer larger than max_response_bytes (%zu)",
			 url, g->max_response);
		rc = -EFBIG;
		goto out;
	}
	if (res != CURLE_OK) {
		snprintf(err, GW_ERROR_MAX, "%s: %s", url,
			 curl_easy_strerror(res));
		rc = gw_curl_errno(res);
		goto out;
	}
	curl_easy_getinfo(g->req, CURLINFO_RESPONSE_CODE, &status);

	json_error_t jerr;
	json_t *doc = json_loadb(answer.data ? answer.data : "", answer.len,
				 0, &jerr);

	if (status != 200) {
		char why[GW_ERROR_MAX];

		gw_describe_error(status, doc, why);
		snprintf(err, GW_ERROR_MAX, "%.60s: %.180s", url, why);
		json_decref(doc);
		/* 5xx: the member cannot serve (no leader, shutting down):
		 * another member may.  4xx and the like: a refusal. */
		rc = status >= 500 ? -EIO : -EPROTO;
		goto out;
	}
	if (!json_is_object(doc)) {
		snprintf(err, GW_ERROR_MAX, "%s: answer is not a JSON object: %s",
			 url, doc ? "wrong type" : jerr.text);
		json_decref(doc);
		rc = -EPROTO;
		goto out;
	}
	*out = doc;
out:
	gw_buf_free(&answer);
	return rc;
}

bool gw_sleep(struct gw *g, unsigned ms)
{
	int64_t until = gw_now_ms() + ms;

	for (int64_t now; !atomic_load(g->stop) && (now = gw_now_ms()) < until;)
		curl_multi_poll(g->multi, NULL, 0, (int)(until - now), NULL);
	return !atomic_load(g->stop);
}
