/*
 * etcd_cluster.c - start, kill and restart etcd members; write and read
 * them through the HTTP gateway.  See etcd_cluster.h.
 */
#include "etcd_cluster.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* base64 (the gateway's bytes fields)                                 */
/* ------------------------------------------------------------------ */

static const char b64[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *encode(const void *in, size_t len)
{
	const unsigned char *p = in;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	for (size_t i = 0; out && i < len; i += 3) {
		unsigned v = (unsigned)p[i] << 16 |
			     (i + 1 < len ? (unsigned)p[i + 1] << 8 : 0) |
			     (i + 2 < len ? p[i + 2] : 0);

		*o++ = b64[v >> 18 & 63];
		*o++ = b64[v >> 12 & 63];
		*o++ = i + 1 < len ? b64[v >> 6 & 63] : '=';
		*o++ = i + 2 < len ? b64[v & 63] : '=';
	}
	if (out)
		*o = '\0';
	return out;
}

static unsigned char *decode(const char *in, size_t *len)
{
	size_t n = strlen(in), o = 0;
	unsigned char *out = malloc(n / 4 * 3 + 4);
	unsigned acc = 0;
	int bits = 0;

	for (size_t i = 0; out && i < n && in[i] != '='; i++) {
		const char *d = strchr(b64, in[i]);

		if (d == NULL || *d == '\0') {
			free(out);
			return NULL;
		}
		acc = acc << 6 | (unsigned)(d - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	if (out)
		out[o] = '\0';
	*len = o;
	return out;
}

/* ------------------------------------------------------------------ */
/* HTTP                                                                */
/* ------------------------------------------------------------------ */

struct answer {
	char *data;
	size_t len;
};

static size_t collect(char *data, size_t size, size_t n, void *arg)
{
	struct answer *a = arg;
	char *grown = realloc(a->data, a->len + size * n + 1);

	if (grown == NULL)
		return 0;
	memcpy(grown + a->len, data, size * n);
	a->data = grown;
	a->len += size * n;
	a->data[a->len] = '\0';
	return size * n;
}

/* One kept-alive connection a thread, cleaned up when the thread exits. */
static pthread_key_t easy_key;
static pthread_once_t easy_once = PTHREAD_ONCE_INIT;

static void easy_free(void *easy)
{
	curl_easy_cleanup(easy);
}

static void easy_key_init(void)
{
	pthread_key_create(&easy_key, easy_free);
}

json_t *etcd_post(const char *endpoint, const char *path, json_t *body,
		  unsigned timeout_ms)
{
	CURL *easy;
	char *text = json_dumps(body, JSON_COMPACT);
	char url[256];
	struct answer a = { 0 };
	struct curl_slist *h = curl_slist_append(NULL,
						 "Content-Type: application/json");
	json_t *doc = NULL;
	long status = 0;

	json_decref(body);
	pthread_once(&easy_once, easy_key_init);
	easy = pthread_getspecific(easy_key);
	if (easy == NULL) {
		easy = curl_easy_init();
		pthread_setspecific(easy_key, easy);
	}
	snprintf(url, sizeof(url), "%s%s", endpoint, path);
	curl_easy_reset(easy);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_POSTFIELDS, text);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &a);
	if (text && curl_easy_perform(easy) == CURLE_OK &&
	    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) ==
		    CURLE_OK && status == 200)
		doc = json_loads(a.data ? a.data : "", 0, NULL);
	curl_slist_free_all(h);
	free(text);
	free(a.data);
	return doc;
}

static int64_t header_revision(json_t *doc)
{
	json_t *r = json_object_get(json_object_get(doc, "header"), "revision");

	if (json_is_string(r))
		return strtoll(json_string_value(r), NULL, 10);
	return json_is_integer(r) ? json_integer_value(r) : -1;
}

/* Try each endpoint of @endpoints in turn with @build()'s body. */
static json_t *post_any(const char *endpoints, const char *path,
			json_t *(*build)(void *), void *arg)
{
	char list[512];

	snprintf(list, sizeof(list), "%s", endpoints);
	for (char *save = NULL, *ep = strtok_r(list, ",", &save); ep;
	     ep = strtok_r(NULL, ",", &save)) {
		json_t *doc = etcd_post(ep, path, build(arg), 3000);

		if (doc)
			return doc;
	}
	return NULL;
}

struct txn_arg {
	const struct etcd_op *ops;
	size_t n;
};

static json_t *txn_body(void *arg)
{
	struct txn_arg *t = arg;
	json_t *ops = json_array();

	for (size_t i = 0; i < t->n; i++) {
		const struct etcd_op *op = &t->ops[i];
		char *k = encode(op->key, strlen(op->key));

		if (op->del) {
			json_array_append_new(ops, json_pack("{s:{s:s}}",
				"request_delete_range", "key", k));
		} else {
			char *v = encode(op->value, op->len);

			json_array_append_new(ops, json_pack("{s:{s:s,s:s}}",
				"request_put", "key", k, "value", v));
			free(v);
		}
		free(k);
	}
	return json_pack("{s:o}", "success", ops);
}

int64_t etcd_txn(const char *endpoints, const struct etcd_op *ops, size_t n)
{
	struct txn_arg arg = { ops, n };
	json_t *doc = post_any(endpoints, "/v3/kv/txn", txn_body, &arg);
	int64_t rev = doc ? header_revision(doc) : -1;

	json_decref(doc);
	return rev;
}

int64_t etcd_put(const char *endpoints, const char *key, const char *value)
{
	struct etcd_op op = { .key = key, .value = value, .len = strlen(value) };

	return etcd_txn(endpoints, &op, 1);
}

int64_t etcd_del(const char *endpoints, const char *key)
{
	struct etcd_op op = { .del = true, .key = key };

	return etcd_txn(endpoints, &op, 1);
}

static json_t *compact_body(void *arg)
{
	return json_pack("{s:I,s:b}", "revision", *(json_int_t *)arg,
			 "physical", 1);
}

int etcd_compact(const char *endpoints, int64_t rev)
{
	json_int_t r = rev;
	json_t *doc = post_any(endpoints, "/v3/kv/compaction", compact_body, &r);

	json_decref(doc);
	return doc ? 0 : -1;
}

struct range_arg {
	const char *prefix;
};

static json_t *range_body(void *arg)
{
	const char *prefix = ((struct range_arg *)arg)->prefix;
	size_t len = strlen(prefix);
	char *end = strdup(prefix);

	end[len - 1]++;	/* prefixes in the tests end with a plain byte */

	char *k = encode(prefix, len), *e = encode(end, len);
	json_t *body = json_pack("{s:s,s:s}", "key", k, "range_end", e);

	free(k);
	free(e);
	free(end);
	return body;
}

int64_t etcd_range(const char *endpoints, const char *prefix,
		   struct etcd_kv **kvs, size_t *n)
{
	struct range_arg arg = { prefix };
	json_t *doc = post_any(endpoints, "/v3/kv/range", range_body, &arg);
	json_t *arr, *kv;
	size_t i;

	*kvs = NULL;
	*n = 0;
	if (doc == NULL)
		return -1;
	arr = json_object_get(doc, "kvs");
	*kvs = calloc(json_array_size(arr) + 1, sizeof(**kvs));
	json_array_foreach(arr, i, kv) {
		struct etcd_kv *o = &(*kvs)[i];
		json_t *v = json_object_get(kv, "value");
		json_t *mod = json_object_get(kv, "mod_revision");

		o->key = decode(json_string_value(json_object_get(kv, "key")),
				&o->klen);
		o->value = decode(v ? json_string_value(v) : "", &o->vlen);
		o->mod_revision = strtoll(json_string_value(mod), NULL, 10);
	}
	*n = json_array_size(arr);

	int64_t rev = header_revision(doc);

	json_decref(doc);
	return rev;
}

void etcd_kvs_free(struct etcd_kv *kvs, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kvs[i].key);
		free(kvs[i].value);
	}
	free(kvs);
}

/* ------------------------------------------------------------------ */
/* Members                                                             */
/* ------------------------------------------------------------------ */

const char *etcd_binary(void)
{
	static char found[512];
	const char *env = getenv("ETCD");
	const char *path = getenv("PATH");

	if (env && *env)
		return access(env, X_OK) == 0 ? env : NULL;
	if (path == NULL)
		path = "/usr/bin:/bin";

	char list[4096];

	snprintf(list, sizeof(list), "%s", path);
	for (char *save = NULL, *d = strtok_r(list, ":", &save); d;
	     d = strtok_r(NULL, ":", &save)) {
		snprintf(found, sizeof(found), "%s/etcd", d);
		if (access(found, X_OK) == 0)
			return found;
	}
	return NULL;
}

int etcd_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

	if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&a, &len) == 0)
		port = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static int remove_one(const char *path, const struct stat *st, int flag,
		      struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void etcd_rm_rf(const char *dir)
{
	nftw(dir, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int spawn(struct etcd_cluster *c, int i, bool fresh)
{
	struct etcd_member *m = &c->m[i];
	const char *bin = etcd_binary();
	char client[64], peer[64];
	pid_t parent = getpid();
	pid_t pid;

	if (bin == NULL)
		return -1;
	snprintf(client, sizeof(client), "http://127.0.0.1:%d", m->client_port);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", m->peer_port);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Dies with the test, whatever way the test ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);

		int fd = open(m->log, O_WRONLY | O_CREAT | O_APPEND, 0644);

		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			close(fd);
		}
		/* Short heartbeats: elections take a fraction of a second. */
		execl(bin, bin, "--name", m->name, "--data-dir", m->data,
		      "--listen-client-urls", client,
		      "--advertise-client-urls", client,
		      "--listen-peer-urls", peer,
		      "--initial-advertise-peer-urls", peer,
		      "--initial-cluster", c->initial,
		      "--initial-cluster-token", c->token,
		      "--initial-cluster-state", fresh ? "new" : "existing",
		      "--heartbeat-interval", "50", "--election-timeout", "500",
		      (char *)NULL);
		_exit(127);
	}
	m->pid = pid;
	return 0;
}

int etcd_member_wait_ready(struct etcd_cluster *c, int i, unsigned timeout_ms)
{
	struct timespec t0, now;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		json_t *doc = etcd_post(c->m[i].url, "/v3/kv/range",
					json_pack("{s:s}", "key", "AA=="), 1000);

		if (doc) {
			json_decref(doc);
			return 0;
		}
		if (c->m[i].pid > 0 && waitpid(c->m[i].pid, NULL, WNOHANG) > 0) {
			c->m[i].pid = 0;
			return -1;	/* it exited */
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - t0.tv_sec) * 1000 +
			    (now.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
			return -1;
		usleep(50 * 1000);
	}
}

static void dump_logs(struct etcd_cluster *c)
{
	for (int i = 0; i < c->n; i++) {
		FILE *f = fopen(c->m[i].log, "r");
		char line[512];

		if (f == NULL)
			continue;
		fprintf(stderr, "--- %s (last lines)\n", c->m[i].log);
		long n = 0;

		while (fgets(line, sizeof(line), f))
			n++;
		rewind(f);
		for (long k = 0; fgets(line, sizeof(line), f); k++)
			if (k >= n - 15)
				fputs(line, stderr);
		fclose(f);
	}
}

static int cluster_start_once(struct etcd_cluster *c, int n,
			      const char *parent)
{
	char base[512];

	memset(c, 0, sizeof(*c));
	if (n < 1 || n > ETCD_CLUSTER_MAX)
		return -1;
	if (parent == NULL) {
		parent = getenv("TMPDIR");
		if (parent == NULL || !*parent)
			parent = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	}
	snprintf(base, sizeof(base), "%s/cowmap-etcd.XXXXXX", parent);
	if (mkdtemp(base) == NULL) {
		fprintf(stderr, "etcd_cluster: mkdtemp %s: %s\n", base,
			strerror(errno));
		return -1;
	}
	snprintf(c->dir, sizeof(c->dir), "%s", base);
	snprintf(c->token, sizeof(c->token), "cowmap-test-%ld-%ld",
		 (long)getpid(), (long)time(NULL));
	c->n = n;

	/* All ports are picked before any member starts, so two members
	 * cannot be handed the same one. */
	for (int i = 0; i < n; i++) {
		struct etcd_member *m = &c->m[i];

		for (int tries = 0; tries < 20; tries++) {
			m->client_port = etcd_free_port();
			m->peer_port = etcd_free_port();
			bool clash = m->client_port == m->peer_port ||
				     m->client_port <= 0 || m->peer_port <= 0;

			for (int j = 0; j < i && !clash; j++)
				clash = m->client_port == c->m[j].client_port ||
					m->client_port == c->m[j].peer_port ||
					m->peer_port == c->m[j].client_port ||
					m->peer_port == c->m[j].peer_port;
			if (!clash)
				break;
		}
		snprintf(m->name, sizeof(m->name), "m%d", i);
		snprintf(m->url, sizeof(m->url), "http://127.0.0.1:%d",
			 m->client_port);
		snprintf(m->data, sizeof(m->data), "%s/%s.etcd", c->dir, m->name);
		snprintf(m->log, sizeof(m->log), "%s/%s.log", c->dir, m->name);

		size_t at = strlen(c->initial);

		snprintf(c->initial + at, sizeof(c->initial) - at,
			 "%s%s=http://127.0.0.1:%d", i ? "," : "", m->name,
			 m->peer_port);
		at = strlen(c->endpoints);
		snprintf(c->endpoints + at, sizeof(c->endpoints) - at, "%s%s",
			 i ? "," : "", m->url);
	}
	for (int i = 0; i < n; i++) {
		if (spawn(c, i, true) < 0) {
			fprintf(stderr, "etcd_cluster: cannot start %s\n",
				etcd_binary() ? etcd_binary() : "etcd");
			etcd_cluster_stop(c);
			return -1;
		}
	}
	for (int i = 0; i < n; i++) {
		if (etcd_member_wait_ready(c, i, 20000) < 0) {
			fprintf(stderr, "etcd_cluster: member %d did not become "
					"ready\n", i);
			dump_logs(c);
			etcd_cluster_stop(c);
			return -1;
		}
	}
	return 0;
}

int etcd_cluster_start(struct etcd_cluster *c, int n, const char *parent)
{
	/* A port found free can be taken by someone else before etcd binds
	 * it: then start again on other ports. */
	for (int attempt = 0; attempt < 3; attempt++)
		if (cluster_start_once(c, n, parent) == 0)
			return 0;
	return -1;
}

void etcd_member_signal(struct etcd_cluster *c, int i, int sig)
{
	struct etcd_member *m = &c->m[i];

	if (m->pid <= 0)
		return;
	kill(m->pid, sig);
	if (sig == SIGKILL || sig == SIGTERM) {
		waitpid(m->pid, NULL, 0);
		m->pid = 0;
	}
}

int etcd_member_restart(struct etcd_cluster *c, int i)
{
	if (c->m[i].pid > 0)
		etcd_member_signal(c, i, SIGKILL);
	return spawn(c, i, false);
}

void etcd_cluster_stop(struct etcd_cluster *c)
{
	for (int i = 0; i < c->n; i++) {
		if (c->m[i].pid > 0) {
			kill(c->m[i].pid, SIGCONT);	/* if stopped */
			etcd_member_signal(c, i, SIGKILL);
		}
	}
	if (c->dir[0])
		etcd_rm_rf(c->dir);
	c->dir[0] = '\0';
}
