/*
 * server.h - a line-protocol TCP server that serves its configuration.
 *
 * The server listens on 127.0.0.1 only.  Each line a client sends is one
 * request, answered by one or more lines:
 *
 *   GET key            VALUE <value>            or  NOT_FOUND
 *   MGET k1 k2 ...     VALUES <generation> <n>  then one line per key:
 *                      VALUE <value> or NOT_FOUND, all read from the
 *                      same version as the generation (at most 32 keys)
 *   VERSION            VERSION <generation>
 *   RELOAD             RELOADED <generation>    or  ERR <file>:<line>: <why>
 *
 * With a configuration from etcd (--etcd) the generation is the etcd
 * revision of the version that answered, and RELOAD answers ERR: the
 * mirror publishes every revision as it comes.
 *   QUIT               (closes the connection)
 *
 * Anything else is answered with "ERR ...".  SIGHUP reloads the
 * configuration file like RELOAD; SIGINT and SIGTERM stop the server.
 *
 * Threads: a few workers, each with its own epoll set, serve connections;
 * a control thread waits for signals (signalfd: no signal handler runs).
 * Every worker reads the current configuration through the cell for every
 * request, with no lock: requests never wait for a reload, and a reload
 * never waits for requests.
 */
#ifndef CONFIG_RELOAD_SERVER_H
#define CONFIG_RELOAD_SERVER_H

#include <cowmap.h>

#include <stdint.h>
#include <stdio.h>

/*
 * How the server reads a configuration that is not its file's (etcd):
 * the key's value in @v as a C string (NULL when absent), and the
 * version's number.  Both are called inside a read-side critical section
 * and must neither allocate nor block.
 */
struct config_view {
	const char *(*get)(const struct cowmap *v, const char *key, void *ctx);
	uint64_t (*version)(const struct cowmap *v, void *ctx);
	void *ctx;
};

struct server_options {
	const char *config_path;
	uint16_t port;		/* 0 = any free port (see server_port()) */
	unsigned workers;	/* 0 = 4 */
	FILE *change_log;	/* each reload's changes; NULL = not logged */
	/*
	 * Instead of config_path: serve @cell, which another component keeps
	 * current (the etcd mirror), read through @view.  The server does
	 * not free it, and RELOAD and SIGHUP have nothing to reload.
	 */
	struct cowmap_cell *cell;
	const struct config_view *view;
	const char *source;	/* names the configuration's origin in logs */
};

struct server;

/*
 * server_block_signals - block SIGHUP, SIGINT and SIGTERM in the calling
 * thread, so that they reach the server's signalfd instead of killing the
 * process.  Call it in main() before creating any thread: threads inherit
 * the mask.  Returns 0 or -1 (errno set).
 */
int server_block_signals(void);

/*
 * server_start - load the configuration (generation 1), listen, and start
 * the threads.  Returns NULL on failure, after printing why on stderr
 * (a malformed file is reported with its file name and line number).  The
 * calling thread must be registered with urcu-memb.
 */
struct server *server_start(const struct server_options *opts);

/* server_port - the port the server listens on. */
uint16_t server_port(const struct server *s);

/*
 * server_wait - block until a stop was asked for (SIGINT, SIGTERM or
 * server_stop()), then join every server thread.  The connections are
 * closed when it returns.
 */
void server_wait(struct server *s);

/* server_stop - ask the server to stop; server_wait() does the rest. */
void server_stop(struct server *s);

/* What the server did so far. */
struct server_stats {
	uint64_t requests;		/* requests answered, all workers */
	uint64_t loads;			/* configurations published (start-up included) */
	uint64_t rejected;		/* reloads refused (malformed file) */
	uint64_t added, removed, changed; /* settings, over all loads */
};

/* server_stats - fill @out; safe from any thread at any time. */
void server_stats(const struct server *s, struct server_stats *out);

/* server_cell - the cell holding the configuration (for statistics). */
struct cowmap_cell *server_cell(struct server *s);

/*
 * server_free - free the server and its configuration (waits for the
 * deferred frees).  Call after server_wait().  NULL is ignored.
 */
void server_free(struct server *s);

#endif /* CONFIG_RELOAD_SERVER_H */
