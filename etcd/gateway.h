/*
 * gateway.h - what the mirror needs from etcd's HTTP/JSON gateway: base64
 * for keys and values, JSON fields as etcd encodes them, and HTTP requests
 * through libcurl that a stop request can interrupt.  Private.
 */
#ifndef COWMAP_ETCD_GATEWAY_H
#define COWMAP_ETCD_GATEWAY_H

#include <curl/curl.h>
#include <jansson.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GW_ERROR_MAX 256

/* ------------------------------------------------------------------ */
/* Encoding                                                            */
/* ------------------------------------------------------------------ */

/* A growable byte buffer; @max caps it (0 = no cap). */
struct gw_buf {
	char *data;
	size_t len, cap, max;
	bool overflow;		/* an append went past max: data dropped */
};

/* Append; false on ENOMEM or past max (then overflow is set). */
bool gw_buf_append(struct gw_buf *b, const void *data, size_t len);
void gw_buf_free(struct gw_buf *b);

/*
 * gw_base64 - @len bytes of @in as a new NUL-terminated base64 string
 * (standard alphabet, padded), or NULL when memory runs out.
 */
char *gw_base64(const void *in, size_t len);

/*
 * gw_unbase64 - decode @in (standard alphabet, padding optional) into
 * @out, which has room for at least gw_unbase64_max(strlen(in)) bytes.
 * Returns the decoded length, or -1 for a character or length that is
 * not base64.
 */
ptrdiff_t gw_unbase64(const char *in, size_t len, unsigned char *out);
static inline size_t gw_unbase64_max(size_t len)
{
	return len / 4 * 3 + 3;
}

/*
 * gw_int64 - an int64 field of a JSON object as the gateway encodes it:
 * a decimal string ("12"), a JSON integer, or absent (which means 0:
 * proto3 leaves zero values out).  Returns false for anything else.
 */
bool gw_int64(json_t *obj, const char *name, int64_t *out);

/*
 * gw_bytes - a base64 "bytes" field: absent means empty.  On success
 * *out is a new buffer of *len bytes plus a NUL (free() it); @max caps
 * the decoded length.  Returns 0, -EPROTO (not a string, not base64),
 * -EFBIG (over @max; *len then holds the length) or -ENOMEM.
 */
int gw_bytes(json_t *obj, const char *name, size_t max, unsigned char **out,
	     size_t *len);

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

/*
 * One connection's worth of state: a multi handle the mirror thread
 * waits on (a stop wakes it with curl_multi_wakeup()), and a reusable
 * easy handle for ordinary requests (kept-alive connections).
 */
struct gw {
	CURLM *multi;
	CURL *req;
	struct curl_slist *headers;
	atomic_bool *stop;
	unsigned connect_timeout_ms;
	size_t max_response;
};

int gw_init(struct gw *g, atomic_bool *stop, unsigned connect_timeout_ms,
	    size_t max_response);
void gw_fini(struct gw *g);

/* Prepare @easy for a JSON POST of @body to @url (the common options). */
void gw_setup(struct gw *g, CURL *easy, const char *url, const char *body);

/*
 * gw_post - POST @body to @url and parse the JSON answer into *out (a new
 * reference).  @timeout_ms bounds the whole request.  Returns 0, -EINTR
 * (stopped), -EPROTO (the answer is not JSON, or an error the gateway
 * reported: the message says which), -EFBIG (over max_response) or
 * -ECONNREFUSED / -ETIMEDOUT / -EIO for transport failures, with a
 * message in @err.
 */
int gw_post(struct gw *g, const char *url, const char *body,
	    unsigned timeout_ms, json_t **out, char err[GW_ERROR_MAX]);

/* Wait @ms, returning early (false) when a stop was asked for. */
bool gw_sleep(struct gw *g, unsigned ms);

/* Monotonic milliseconds. */
int64_t gw_now_ms(void);

/*
 * The error an HTTP answer carries: the gateway's {"error": ..,
 * "message": ..} body or the status.  Writes into @err.
 */
void gw_describe_error(long status, json_t *body, char err[GW_ERROR_MAX]);

/* Map a libcurl result to a negative errno. */
int gw_curl_errno(CURLcode rc);

#endif /* COWMAP_ETCD_GATEWAY_H */
