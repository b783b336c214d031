/*
 * server.c - the configuration server: workers, protocol, reloads.
 *
 * Every worker owns a listening socket (SO_REUSEPORT: the kernel spreads
 * new connections over the workers), an epoll set and its connections, so
 * workers share nothing but the configuration cell.  A request loads the
 * current version inside an RCU read-side critical section, copies what it
 * needs into the connection's output buffer, and unlocks: the answer is
 * written to the socket after the unlock, so a slow client never holds up
 * a grace period.
 *
 * Reloads (RELOAD from a client, or SIGHUP) go through config_reload(),
 * which publishes the new version with one pointer swap.  Requests in
 * flight finish on the version they loaded; the next request sees the new
 * one.
 */
#include <urcu/urcu-memb.h>	/* the flavor every server thread reads with */
#include <cowmap.h>

#include "server.h"

#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define REQUEST_MAX 4096	/* longest request line */
#define MGET_MAX 32		/* keys in one MGET */
#define DEFAULT_WORKERS 4

struct conn {
	struct conn *prev, *next;	/* the worker's connections */
	int fd;
	bool writing;	/* waiting for EPOLLOUT, not reading meanwhile */
	bool closing;	/* close once the output is flushed */
	size_t in_len;
	char in[REQUEST_MAX];
	char *out;
	size_t out_len, out_sent, out_cap;
};

struct worker {
	struct server *srv;
	pthread_t thread;
	bool started;
	int listen_fd, epoll_fd;
	struct conn *conns;
	atomic_uint_least64_t requests;
};

struct server {
	char *config_path;
	const struct config_view *view;	/* NULL: the file's versions */
	bool own_cell;
	FILE *change_log;
	struct cowmap_cell *cell;
	uint16_t port;
	int stop_fd;	/* eventfd: readable once a stop was asked for */
	int signal_fd;
	pthread_t control;
	bool control_started;
	unsigned nworkers;
	struct worker *workers;
	atomic_uint_least64_t loads, rejected, added, removed, changed;
};

/* epoll tags for the two file descriptors that are not connections. */
static char listen_tag, stop_tag;

static const int handled_signals[] = { SIGHUP, SIGINT, SIGTERM };

static void handled_set(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < sizeof(handled_signals) / sizeof(int); i++)
		sigaddset(set, handled_signals[i]);
}

int server_block_signals(void)
{
	sigset_t set;
	int rc;

	handled_set(&set);
	rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* Reading the configuration                                           */
/* ------------------------------------------------------------------ */

static uint64_t current_generation(struct server *s)
{
	uint64_t gen;

	urcu_memb_read_lock();
	gen = config_generation(cowmap_cell_load(s->cell));
	urcu_memb_read_unlock();
	return gen;
}

static void count_load(struct server *s,
		       const struct config_reload_result *res)
{
	atomic_fetch_add(&s->loads, 1);
	atomic_fetch_add(&s->added, res->added);
	atomic_fetch_add(&s->removed, res->removed);
	atomic_fetch_add(&s->changed, res->changed);
}

/*
 * Reload the configuration file; @why names the trigger in the log.
 * Writes the protocol answer into @answer.  Called by workers (RELOAD) and
 * by the control thread (SIGHUP), never inside a read-side section.
 */
static void server_reload(struct server *s, const char *why, char *answer,
			  size_t size)
{
	struct config_reload_result res;
	char err[CONFIG_ERROR_MAX];

	if (s->view != NULL) {
		fprintf(stderr, "config-reload: %s ignored: the configuration "
				"comes from %s, published on every change\n",
			why, s->config_path);
		snprintf(answer, size, "ERR nothing to reload: the configuration "
			 "comes from %s\n", s->config_path);
		return;
	}
	if (config_reload(s->cell, s->config_path, s->change_log, &res,
			  err) < 0) {
		uint64_t kept = current_generation(s);

		atomic_fetch_add(&s->rejected, 1);
		fprintf(stderr,
			"config-reload: %s rejected: %s (keeping generation %" PRIu64 ")\n",
			why, err, kept);
		snprintf(answer, size, "ERR %s\n", err);
		return;
	}
	count_load(s, &res);
	snprintf(answer, size, "RELOADED %" PRIu64 "\n", res.generation);
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

/* Append to the output buffer; false when memory runs out. */
static bool out_append(struct conn *c, const char *text, size_t len)
{
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 256;

		while (cap < c->out_len + len)
			cap *= 2;

		char *grown = realloc(c->out, cap);

		if (grown == NULL)
			return false;
		c->out = grown;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, len);
	c->out_len += len;
	return true;
}

static bool out_puts(struct conn *c, const char *text)
{
	return out_append(c, text, strlen(text));
}

/* "<word> <value>\n": values may be long, so no fixed-size formatting. */
static bool out_line(struct conn *c, const char *word, const char *value)
{
	return out_puts(c, word) && out_append(c, " ", 1) &&
	       out_puts(c, value) && out_append(c, "\n", 1);
}

/*
 * The request handlers.  Each one loads the current version once and
 * answers from it alone, so one answer never mixes two configurations.
 * Everything taken from the version is copied into the output buffer
 * before urcu_memb_read_unlock(): after it, a reload may free the strings.
 */
static bool answer_get(struct server *s, struct conn *c, const char *key)
{
	void *value;
	bool ok;

	urcu_memb_read_lock();
	const struct cowmap *cfg = cowmap_cell_load(s->cell);

	if (s->view)
		value = (void *)s->view->get(cfg, key, s->view->ctx);
	else if (cowmap_get(cfg, key, strlen(key), &value) != 1)
		value = NULL;
	if (value)
		ok = out_line(c, "VALUE", value);
	else
		ok = out_puts(c, "NOT_FOUND\n");
	urcu_memb_read_unlock();
	return ok;
}

static bool answer_mget(struct server *s, struct conn *c, int nkeys,
			char *const names[])
{
	/* Slot 0 is the generation: read in the same batch as the keys. */
	const void *keys[MGET_MAX + 1];
	size_t lens[MGET_MAX + 1];
	void *values[MGET_MAX + 1];
	char header[64];
	bool ok;

	keys[0] = CONFIG_GENERATION_KEY;
	lens[0] = strlen(CONFIG_GENERATION_KEY);
	for (int i = 0; i < nkeys; i++) {
		keys[i + 1] = names[i];
		lens[i + 1] = strlen(names[i]);
	}

	urcu_memb_read_lock();
	const struct cowmap *cfg = cowmap_cell_load(s->cell);

	if (s->view) {
		/* The revision and every key from this one version. */
		snprintf(header, sizeof(header), "VALUES %" PRIu64 " %d\n",
			 s->view->version(cfg, s->view->ctx), nkeys);
		for (int i = 0; i < nkeys; i++)
			values[i + 1] = (void *)s->view->get(cfg, names[i],
							     s->view->ctx);
	} else {
		cowmap_get_many(cfg, (size_t)nkeys + 1, keys, lens, values);
		snprintf(header, sizeof(header), "VALUES %s %d\n",
			 values[0] ? (const char *)values[0] : "0", nkeys);
	}
	ok = out_puts(c, header);
	for (int i = 1; ok && i <= nkeys; i++)
		ok = values[i] ? out_line(c, "VALUE", values[i])
			       : out_puts(c, "NOT_FOUND\n");
	urcu_memb_read_unlock();
	return ok;
}

static bool answer_version(struct server *s, struct conn *c)
{
	void *value;
	bool ok;

	urcu_memb_read_lock();
	const struct cowmap *cfg = cowmap_cell_load(s->cell);

	if (s->view) {
		char number[32];

		snprintf(number, sizeof(number), "%" PRIu64,
			 s->view->version(cfg, s->view->ctx));
		ok = out_line(c, "VERSION", number);
	} else if (cowmap_get(cfg, CONFIG_GENERATION_KEY,
			      strlen(CONFIG_GENERATION_KEY), &value) == 1)
		ok = out_line(c, "VERSION", value);
	else
		ok = out_puts(c, "VERSION 0\n");
	urcu_memb_read_unlock();
	return ok;
}

/* Split @line into at most @max words; returns the count, or -1. */
static int split_words(char *line, char *words[], int max)
{
	int n = 0;

	for (char *save = NULL, *w = strtok_r(line, " \t", &save); w;
	     w = strtok_r(NULL, " \t", &save)) {
		if (n == max)
			return -1;
		words[n++] = w;
	}
	return n;
}

/* Answer one request line.  Returns false when memory ran out. */
static bool handle_request(struct worker *w, struct conn *c, char *line)
{
	struct server *s = w->srv;
	char *words[MGET_MAX + 2];
	int n = split_words(line, words, MGET_MAX + 1);

	atomic_fetch_add_explicit(&w->requests, 1, memory_order_relaxed);
	if (n < 0)
		return out_puts(c, "ERR too many words\n");
	if (n == 0)
		return out_puts(c, "ERR empty request\n");

	const char *cmd = words[0];

	if (strcasecmp(cmd, "GET") == 0 && n == 2)
		return answer_get(s, c, words[1]);
	if (strcasecmp(cmd, "MGET") == 0 && n >= 2)
		return answer_mget(s, c, n - 1, words + 1);
	if (strcasecmp(cmd, "VERSION") == 0 && n == 1)
		return answer_version(s, c);
	if (strcasecmp(cmd, "RELOAD") == 0 && n == 1) {
		char answer[CONFIG_ERROR_MAX + 16];

		server_reload(s, "RELOAD", answer, sizeof(answer));
		return out_puts(c, answer);
	}
	if (strcasecmp(cmd, "QUIT") == 0 && n == 1) {
		c->closing = true;
		return true;
	}
	return out_puts(c, "ERR unknown request (GET key | MGET key... | "
			   "VERSION | RELOAD | QUIT)\n");
}

static void conn_close(struct worker *w, struct conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);	/* also removes it from the epoll set */
	free(c->out);
	free(c);
}

/* Read what arrived and answer every complete line.  False: close. */
static bool conn_read(struct worker *w, struct conn *c)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len,
			 0);

	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	if (n == 0) {
		c->closing = true;	/* answer what came, then close */
		return true;
	}
	c->in_len += (size_t)n;

	char *start = c->in, *end = c->in + c->in_len, *nl;

	while (!c->closing &&
	       (nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
		*nl = '\0';
		if (nl > start && nl[-1] == '\r')
			nl[-1] = '\0';
		if (!handle_request(w, c, start))
			return false;	/* out of memory: drop the client */
		start = nl + 1;
	}
	c->in_len = (size_t)(end - start);
	memmove(c->in, start, c->in_len);
	if (c->in_len == sizeof(c->in)) {
		c->closing = true;
		return out_puts(c, "ERR request line too long\n");
	}
	return true;
}

/*
 * Send what is buffered.  While output is pending the connection waits for
 * EPOLLOUT only: a client that does not read its answers is not read from.
 * False: close the connection now.
 */
static bool conn_flush(struct worker *w, struct conn *c)
{
	while (c->out_sent < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_sent,
				 c->out_len - c->out_sent, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return false;
		}
		c->out_sent += (size_t)n;
	}
	if (c->out_sent == c->out_len) {
		c->out_sent = c->out_len = 0;
		if (c->closing)
			return false;
	}

	bool writing = c->out_len > 0;

	if (writing != c->writing) {
		struct epoll_event ev = { .events = writing ? EPOLLOUT : EPOLLIN,
					  .data.ptr = c };

		if (epoll_ctl(w->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
			return false;
		c->writing = writing;
	}
	return true;
}

static void conn_event(struct worker *w, struct conn *c, uint32_t events)
{
	bool ok = !(events & EPOLLERR);

	if (ok && (events & (EPOLLIN | EPOLLHUP)) && !c->writing)
		ok = conn_read(w, c);
	if (ok)
		ok = conn_flush(w, c);
	if (!ok)
		conn_close(w, c);
}

static void accept_clients(struct worker *w)
{
	for (;;) {
		int fd = accept4(w->listen_fd, NULL, NULL,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR &&
			    errno != ECONNABORTED)
				perror("config-reload: accept");
			return;
		}

		/* Answers are written whole: send them without delay. */
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

		struct conn *c = calloc(1, sizeof(*c));
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };

		if (c == NULL ||
		    epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			perror("config-reload: new connection");
			free(c);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
	}
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event events[64];
	bool running = true;

	urcu_memb_register_thread();	/* before the first read-side section */
	while (running) {
		int n = epoll_wait(w->epoll_fd, events, 64, -1);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			perror("config-reload: epoll_wait");
			server_stop(w->srv);
			break;
		}
		for (int i = 0; i < n; i++) {
			void *tag = events[i].data.ptr;

			if (tag == &stop_tag)
				running = false;
			else if (tag == &listen_tag)
				accept_clients(w);
			else
				conn_event(w, tag, events[i].events);
		}
	}
	while (w->conns)
		conn_close(w, w->conns);
	urcu_memb_unregister_thread();
	return NULL;
}

/* Waits for signals; all the work happens here, not in a handler. */
static void *control_main(void *arg)
{
	struct server *s = arg;
	struct pollfd fds[2] = {
		{ .fd = s->signal_fd, .events = POLLIN },
		{ .fd = s->stop_fd, .events = POLLIN },
	};

	urcu_memb_register_thread();	/* reloads publish through the cell */
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("config-reload: poll");
			server_stop(s);
			break;
		}
		if (fds[1].revents)
			break;	/* stop asked for */
		if (!(fds[0].revents & POLLIN))
			continue;

		struct signalfd_siginfo si;

		if (read(s->signal_fd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo == SIGHUP) {
			char answer[CONFIG_ERROR_MAX + 16];

			server_reload(s, "SIGHUP", answer, sizeof(answer));
		} else {
			fprintf(stderr, "config-reload: %s, stopping\n",
				strsignal((int)si.ssi_signo));
			server_stop(s);
		}
	}
	urcu_memb_unregister_thread();
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Start and stop                                                      */
/* ------------------------------------------------------------------ */

/* A listening socket on 127.0.0.1:@port; several may share one port. */
static int listen_on(uint16_t port)
{
	struct sockaddr_in addr = {
		.sin_family = AF_INET,
		.sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(fd, SOMAXCONN) < 0) {
		int saved = errno;

		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

static uint16_t bound_port(int fd)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);

	if (getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
		return 0;
	return ntohs(addr.sin_port);
}

static int worker_init(struct server *s, struct worker *w)
{
	struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &listen_tag };
	struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &stop_tag };

	w->srv = s;
	atomic_init(&w->requests, 0);
	w->listen_fd = listen_on(s->port);
	if (w->listen_fd < 0)
		return -1;
	if (s->port == 0)
		s->port = bound_port(w->listen_fd);	/* the others join it */
	w->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epoll_fd < 0 ||
	    epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, w->listen_fd, &lev) < 0 ||
	    epoll_ctl(w->epoll_fd, EPOLL_CTL_ADD, s->stop_fd, &sev) < 0)
		return -1;
	return 0;
}

struct server *server_start(const struct server_options *opts)
{
	struct server *s = calloc(1, sizeof(*s));
	sigset_t blocked;
	char err[CONFIG_ERROR_MAX];
	struct config_reload_result res;
	int rc;

	if (s == NULL) {
		perror("config-reload");
		return NULL;
	}
	s->stop_fd = s->signal_fd = -1;
	atomic_init(&s->loads, 0);
	atomic_init(&s->rejected, 0);
	atomic_init(&s->added, 0);
	atomic_init(&s->removed, 0);
	atomic_init(&s->changed, 0);
	s->port = opts->port;
	s->change_log = opts->change_log;
	s->nworkers = opts->workers ? opts->workers : DEFAULT_WORKERS;

	if (opts->cell != NULL) {
		/* Kept current by someone else; the first version is there. */
		s->cell = opts->cell;
		s->view = opts->view;
		s->config_path = strdup(opts->source ? opts->source : "elsewhere");
		if (s->config_path == NULL) {
			perror("config-reload");
			goto fail;
		}
	} else {
		/* Generation 1, or no server: a bad file at start-up is fatal. */
		struct cowmap *empty = config_empty();

		s->own_cell = true;
		s->config_path = strdup(opts->config_path);
		s->cell = empty ? cowmap_cell_new(empty, &urcu_memb_flavor) : NULL;
		if (s->config_path == NULL || s->cell == NULL) {
			perror("config-reload");
			goto fail;
		}
		if (config_reload(s->cell, s->config_path, s->change_log, &res,
				  err) < 0) {
			fprintf(stderr, "config-reload: %s\n", err);
			goto fail;
		}
		count_load(s, &res);
	}

	/* signalfd only sees signals that no thread would otherwise take. */
	handled_set(&blocked);
	s->signal_fd = signalfd(-1, &blocked, SFD_NONBLOCK | SFD_CLOEXEC);
	s->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->signal_fd < 0 || s->stop_fd < 0) {
		perror("config-reload: signalfd/eventfd");
		goto fail;
	}
	sigset_t current;

	pthread_sigmask(SIG_BLOCK, NULL, &current);
	if (!sigismember(&current, SIGHUP)) {
		fprintf(stderr, "config-reload: call server_block_signals() "
				"before starting threads\n");
		goto fail;
	}

	s->workers = calloc(s->nworkers, sizeof(*s->workers));
	if (s->workers == NULL) {
		perror("config-reload");
		goto fail;
	}
	for (unsigned i = 0; i < s->nworkers; i++)
		s->workers[i].listen_fd = s->workers[i].epoll_fd = -1;
	for (unsigned i = 0; i < s->nworkers; i++) {
		if (worker_init(s, &s->workers[i]) < 0) {
			fprintf(stderr, "config-reload: listen on 127.0.0.1:%u: %s\n",
				(unsigned)s->port, strerror(errno));
			goto fail;
		}
	}

	for (unsigned i = 0; i < s->nworkers; i++) {
		struct worker *w = &s->workers[i];

		rc = pthread_create(&w->thread, NULL, worker_main, w);
		if (rc != 0)
			goto fail_threads;
		w->started = true;
	}
	rc = pthread_create(&s->control, NULL, control_main, s);
	if (rc != 0)
		goto fail_threads;
	s->control_started = true;
	return s;

fail_threads:
	fprintf(stderr, "config-reload: pthread_create: %s\n", strerror(rc));
	server_stop(s);
	server_wait(s);
fail:
	server_free(s);
	return NULL;
}

uint16_t server_port(const struct server *s)
{
	return s->port;
}

void server_stop(struct server *s)
{
	uint64_t one = 1;

	/* An eventfd counter only saturates; a failed write cannot matter. */
	if (write(s->stop_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		perror("config-reload: stop");
}

void server_wait(struct server *s)
{
	if (s->control_started)
		pthread_join(s->control, NULL);
	s->control_started = false;
	for (unsigned i = 0; i < s->nworkers && s->workers; i++) {
		if (s->workers[i].started)
			pthread_join(s->workers[i].thread, NULL);
		s->workers[i].started = false;
	}
}

void server_stats(const struct server *s, struct server_stats *out)
{
	*out = (struct server_stats){
		.loads = atomic_load(&s->loads),
		.rejected = atomic_load(&s->rejected),
		.added = atomic_load(&s->added),
		.removed = atomic_load(&s->removed),
		.changed = atomic_load(&s->changed),
	};
	for (unsigned i = 0; i < s->nworkers; i++)
		out->requests += atomic_load_explicit(&s->workers[i].requests,
						      memory_order_relaxed);
}

struct cowmap_cell *server_cell(struct server *s)
{
	return s->cell;
}

void server_free(struct server *s)
{
	if (s == NULL)
		return;
	for (unsigned i = 0; i < s->nworkers && s->workers; i++) {
		if (s->workers[i].listen_fd >= 0)
			close(s->workers[i].listen_fd);
		if (s->workers[i].epoll_fd >= 0)
			close(s->workers[i].epoll_fd);
	}
	free(s->workers);
	if (s->signal_fd >= 0)
		close(s->signal_fd);
	if (s->stop_fd >= 0)
		close(s->stop_fd);
	/* Frees the last version and waits for the deferred frees. */
	if (s->own_cell)
		cowmap_cell_free(s->cell);
	free(s->config_path);
	free(s);
}
