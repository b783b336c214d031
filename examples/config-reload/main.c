/*
 * config-reload - a TCP server whose configuration is reloaded while it
 * serves requests, without locks and without a request ever seeing half a
 * configuration.
 *
 *   config-reload [--port N] [--workers N] CONFIG
 *       Serve CONFIG (key = value lines) on 127.0.0.1:N (0, the default,
 *       picks a free port and prints it).  `kill -HUP` or a RELOAD request
 *       reloads the file; a malformed file is refused with its file name
 *       and line number, and the running configuration stays.  Ctrl-C stops.
 *
 *           $ ./config-reload --port 7070 example.conf &
 *           $ printf 'GET listen.backlog\nVERSION\n' | nc -q1 127.0.0.1 7070
 *
 *   config-reload [--port N] [--workers N] --etcd ENDPOINTS [--prefix P]
 *       Serve the keys under prefix P of an etcd cluster (ENDPOINTS:
 *       comma-separated member URLs) instead of a file: a configuration key
 *       is the etcd key without P, every etcd revision is published as one
 *       version (its changes logged), VERSION answers the etcd revision of
 *       the version that served the request, and MGET reads every key from
 *       one version, with that revision in its VALUES line.  Only built
 *       with the etcd mirror (configure found libcurl and jansson).
 *
 *           $ etcdctl put /app/greeting hello
 *           $ ./config-reload --etcd 127.0.0.1:2379 --prefix /app/ &
 *           $ printf 'GET greeting\nVERSION\n' | nc -q1 127.0.0.1 <port>
 *
 *   config-reload --check CONFIG
 *       Only parse CONFIG; report the first error.  Exit status 0 if valid.
 *
 *   config-reload --demo [--seconds S] [--reloads N] [--clients N]
 *       Start the server on a free port and reload it at least 100 times
 *       while client threads check that every answer comes from one whole
 *       configuration.  Exit status 0 only if no check failed.
 *
 *   config-reload --selftest
 *       Parser and reload tests (used by `make check`).
 *
 * The files of this example:
 *   config.c   the parser, and reloads: build with a transaction, publish
 *              with cowmap_cell_update(), report with cowmap_diff()
 *   server.c   the epoll workers that read the configuration per request
 *   demo.c     --demo;  selftest.c  --selftest
 *   etcd_source.c  --etcd: the configuration from an etcd prefix
 */
#include <urcu/urcu-memb.h>	/* the liburcu flavor of every thread here */
#include <cowmap.h>

#include "config.h"
#include "modes.h"
#include "server.h"
#ifdef CONFIG_RELOAD_ETCD
#include "etcd_source.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *out)
{
	fprintf(out,
		"usage: config-reload [--port N] [--workers N] CONFIG\n"
		"       config-reload [--port N] [--workers N] --etcd ENDPOINTS [--prefix P]\n"
		"       config-reload --check CONFIG\n"
		"       config-reload --demo [--seconds S] [--reloads N] [--clients N]\n"
		"       config-reload --selftest\n");
}

/* The argument after option argv[*i]; exits when there is none. */
static const char *option_value(int argc, char **argv, int *i)
{
	if (*i + 1 >= argc) {
		fprintf(stderr, "config-reload: %s needs a value\n", argv[*i]);
		exit(2);
	}
	return argv[++*i];
}

/* Parse a whole decimal number in [min, max]; exits on a bad one. */
static unsigned long number(const char *opt, const char *text,
			    unsigned long min, unsigned long max)
{
	char *end;
	unsigned long n;

	errno = 0;
	n = strtoul(text, &end, 10);
	if (errno || end == text || *end || n < min || n > max) {
		fprintf(stderr, "config-reload: %s: expected a number in "
				"%lu..%lu, got \"%s\"\n", opt, min, max, text);
		exit(2);
	}
	return n;
}

static double seconds_arg(const char *text)
{
	char *end;
	double s = strtod(text, &end);

	if (end == text || *end || !(s > 0 && s <= 3600)) {
		fprintf(stderr, "config-reload: --seconds: expected 0 < S <= 3600,"
				" got \"%s\"\n", text);
		exit(2);
	}
	return s;
}

static int serve(const char *path, unsigned port, unsigned workers)
{
	struct server_options opts = {
		.config_path = path,
		.port = (uint16_t)port,
		.workers = workers,
		.change_log = stdout,	/* each reload lists what changed */
	};
	struct server *s = server_start(&opts);

	if (s == NULL)
		return EXIT_FAILURE;
	printf("config-reload: listening on 127.0.0.1:%u "
	       "(kill -HUP %ld or RELOAD reloads %s)\n",
	       (unsigned)server_port(s), (long)getpid(), path);
	server_wait(s);		/* until SIGINT or SIGTERM */

	struct server_stats st;

	server_stats(s, &st);
	printf("config-reload: %" PRIu64 " requests served, %" PRIu64
	       " configurations loaded, %" PRIu64 " rejected\n",
	       st.requests, st.loads, st.rejected);
	server_free(s);
	return EXIT_SUCCESS;
}

/* --etcd: the same server, its configuration kept by the etcd mirror. */
static int serve_etcd(const char *endpoints, const char *prefix,
		      unsigned port, unsigned workers)
{
#ifdef CONFIG_RELOAD_ETCD
	struct etcd_source *src = etcd_source_start(endpoints, prefix, stdout);

	if (src == NULL)
		return EXIT_FAILURE;

	struct server_options opts = {
		.port = (uint16_t)port,
		.workers = workers,
		.change_log = stdout,
		.cell = etcd_source_cell(src),
		.view = etcd_source_view(src),
		.source = endpoints,
	};
	struct server *s = server_start(&opts);

	if (s == NULL) {
		etcd_source_free(src);
		return EXIT_FAILURE;
	}
	printf("config-reload: listening on 127.0.0.1:%u "
	       "(configuration from etcd %s, prefix \"%s\")\n",
	       (unsigned)server_port(s), endpoints, prefix);
	server_wait(s);		/* until SIGINT or SIGTERM */

	struct server_stats st;

	server_stats(s, &st);
	printf("config-reload: %" PRIu64 " requests served\n", st.requests);
	etcd_source_summary(src, stdout);
	server_free(s);		/* before the cell it serves */
	etcd_source_free(src);
	return EXIT_SUCCESS;
#else
	(void)endpoints;
	(void)prefix;
	(void)port;
	(void)workers;
	fprintf(stderr, "config-reload: built without the etcd mirror "
			"(configure found no libcurl and jansson, or was "
			"given --without-etcd-mirror)\n");
	return EXIT_FAILURE;
#endif
}

int main(int argc, char **argv)
{
	enum { SERVE, CHECK, DEMO, SELFTEST } mode = SERVE;
	struct demo_options demo = { .seconds = 2, .reloads = 150,
				     .clients = 4, .workers = 4 };
	unsigned port = 0, workers = 4;
	const char *path = NULL, *etcd = NULL, *prefix = "";

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--check") == 0) {
			mode = CHECK;
			path = option_value(argc, argv, &i);
		} else if (strcmp(a, "--port") == 0) {
			port = (unsigned)number(a, option_value(argc, argv, &i),
						0, 65535);
		} else if (strcmp(a, "--workers") == 0) {
			workers = (unsigned)number(a, option_value(argc, argv, &i),
						   1, 64);
			demo.workers = workers;
		} else if (strcmp(a, "--seconds") == 0) {
			demo.seconds = seconds_arg(option_value(argc, argv, &i));
		} else if (strcmp(a, "--reloads") == 0) {
			demo.reloads = (unsigned)number(
				a, option_value(argc, argv, &i), 100, 1000000);
		} else if (strcmp(a, "--clients") == 0) {
			demo.clients = (unsigned)number(
				a, option_value(argc, argv, &i), 1, 64);
		} else if (strcmp(a, "--etcd") == 0) {
			etcd = option_value(argc, argv, &i);
		} else if (strcmp(a, "--prefix") == 0) {
			prefix = option_value(argc, argv, &i);
		} else if (strcmp(a, "--demo") == 0) {
			mode = DEMO;
		} else if (strcmp(a, "--selftest") == 0) {
			mode = SELFTEST;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return EXIT_SUCCESS;
		} else if (a[0] != '-' && path == NULL) {
			path = a;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (etcd != NULL && (mode != SERVE || path != NULL)) {
		fprintf(stderr, "config-reload: --etcd serves etcd's keys, "
				"not a file, and only in the serving mode\n");
		return 2;
	}
	if (((mode == SERVE && etcd == NULL) || mode == CHECK) && path == NULL) {
		usage(stderr);
		return 2;
	}

	if (mode == CHECK) {
		char err[CONFIG_ERROR_MAX];

		if (config_check_file(path, err) < 0) {
			fprintf(stderr, "config-reload: %s\n", err);
			return EXIT_FAILURE;
		}
		printf("config-reload: %s is valid\n", path);
		return EXIT_SUCCESS;
	}

	/*
	 * Before any thread exists (liburcu's call_rcu thread included):
	 * SIGHUP, SIGINT and SIGTERM are then taken only by the server's
	 * signalfd, never by a default action or a stray thread.
	 */
	if (server_block_signals() < 0) {
		perror("config-reload: pthread_sigmask");
		return EXIT_FAILURE;
	}
	/* This thread loads the configuration and publishes it. */
	urcu_memb_register_thread();

	/* Line-buffered, so a log reader sees each line as it happens. */
	setvbuf(stdout, NULL, _IOLBF, 0);

	int status;

	switch (mode) {
	case DEMO:
		status = run_demo(&demo);
		break;
	case SELFTEST:
		status = run_selftest();
		break;
	default:
		status = etcd ? serve_etcd(etcd, prefix, port, workers)
			      : serve(path, port, workers);
		break;
	}
	urcu_memb_unregister_thread();
	return status;
}
