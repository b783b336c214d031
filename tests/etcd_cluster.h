/*
 * etcd_cluster.h - real etcd members for the mirror's tests and bench, and
 * a small client of etcd's HTTP gateway to write and read them.
 *
 * Members run on loopback ports picked free by the kernel (bind to port 0)
 * with their data in a temporary directory.  Each member dies with the
 * thread that started it (PR_SET_PDEATHSIG), so a test that crashes or
 * fails leaves no etcd behind; etcd_cluster_stop() also removes the data.
 */
#ifndef COWMAP_ETCD_CLUSTER_H
#define COWMAP_ETCD_CLUSTER_H

#include <jansson.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define ETCD_CLUSTER_MAX 5

struct etcd_member {
	pid_t pid;		/* 0 while down */
	int client_port, peer_port;
	char name[16];
	char url[64];		/* http://127.0.0.1:<client_port> */
	char data[600];		/* its --data-dir */
	char log[600];		/* its stdout and stderr */
};

struct etcd_cluster {
	int n;
	char dir[512];		/* everything of this cluster lives here */
	char token[64];
	char initial[1024];	/* --initial-cluster */
	char endpoints[512];	/* the members' URLs, comma-separated */
	struct etcd_member m[ETCD_CLUSTER_MAX];
};

/*
 * etcd_binary - the etcd executable ($ETCD, else "etcd" on PATH), or NULL
 * when there is none.
 */
const char *etcd_binary(void);

/*
 * etcd_cluster_start - start @n members (1..ETCD_CLUSTER_MAX) in a new
 * directory under @parent (NULL: $TMPDIR, else /dev/shm or /tmp) and wait
 * until every member answers a linearizable read.  Returns 0, or -1 after
 * printing why (and the members' logs) on stderr, with nothing left
 * running.
 */
int etcd_cluster_start(struct etcd_cluster *c, int n, const char *parent);

/* Kill member @i with @sig (SIGKILL: dies; SIGSTOP: hangs) and, for a
 * deadly signal, reap it. */
void etcd_member_signal(struct etcd_cluster *c, int i, int sig);

/* Start member @i again on its data directory and ports; 0 or -1. */
int etcd_member_restart(struct etcd_cluster *c, int i);

/* Wait until member @i answers a linearizable read; 0 or -1. */
int etcd_member_wait_ready(struct etcd_cluster *c, int i, unsigned timeout_ms);

/* Kill every member and remove the directory. */
void etcd_cluster_stop(struct etcd_cluster *c);

/* A free loopback TCP port (nobody listens on it when this returns). */
int etcd_free_port(void);

/* ------------------------------------------------------------------ */
/* A client of the gateway (libcurl + jansson), for writers and checks */
/* ------------------------------------------------------------------ */

/*
 * etcd_post - POST @body (stolen) to @endpoint @path; returns the parsed
 * answer of a 200, or NULL.  @timeout_ms bounds the request.
 */
json_t *etcd_post(const char *endpoint, const char *path, json_t *body,
		  unsigned timeout_ms);

/* One operation of a transaction. */
struct etcd_op {
	bool del;
	const char *key;
	const void *value;	/* for a put */
	size_t len;
};

/*
 * etcd_txn - apply @ops as one etcd transaction (one revision) through
 * the first of the comma-separated @endpoints that answers.  Returns the
 * revision, or -1 when none did.
 */
int64_t etcd_txn(const char *endpoints, const struct etcd_op *ops, size_t n);

/* etcd_put / etcd_del - one key, as etcd_txn. */
int64_t etcd_put(const char *endpoints, const char *key, const char *value);
int64_t etcd_del(const char *endpoints, const char *key);

/* etcd_compact - compact history up to @rev (physically); 0 or -1. */
int etcd_compact(const char *endpoints, int64_t rev);

/* A decoded key-value of a range read. */
struct etcd_kv {
	unsigned char *key, *value;
	size_t klen, vlen;
	int64_t mod_revision;
};

/*
 * etcd_range - every key under @prefix (one request, no paging) through
 * the first endpoint that answers.  *kvs is a new array (etcd_kvs_free);
 * returns the store revision, or -1.
 */
int64_t etcd_range(const char *endpoints, const char *prefix,
		   struct etcd_kv **kvs, size_t *n);
void etcd_kvs_free(struct etcd_kv *kvs, size_t n);

/* Remove a directory tree; errors ignored. */
void etcd_rm_rf(const char *dir);

#endif /* COWMAP_ETCD_CLUSTER_H */
