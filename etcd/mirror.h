/*
 * mirror.h - the etcd mirror's state, and the calls its files share.
 * Private: never installed.
 *
 *   mirror.c   the thread's loop, start and stop, statistics, messages
 *   version.c  what a version holds: stamps, values, publishing
 *   range.c    reading the whole range into one version
 *   watch.c    the watch stream: one version per revision, the probe
 *
 * How it works.  One thread reads a prefix, watches it, and publishes one
 * cowmap version per etcd revision.  It runs a small loop of two states:
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
#ifndef COWMAP_ETCD_MIRROR_H
#define COWMAP_ETCD_MIRROR_H

#include <urcu/urcu-memb.h>	/* urcu_memb_flavor, struct rcu_flavor_struct */

#include <cowmap-etcd.h>

#include "gateway.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The first wait after a failed round; it doubles up to retry_max_ms. */
#define RETRY_MIN_MS 50

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


/* mirror.c */

/* Tell the application (and keep the last failure's message). */
__attribute__((format(printf, 4, 5)))
void mirror_tell(struct cowmap_etcd *m, enum cowmap_etcd_event what,
		 int64_t revision, const char *fmt, ...);
/* etcd answered with this header: note its store revision. */
void mirror_contact(struct cowmap_etcd *m, json_t *header);
/* @key, printable and cut short, in @out. */
const char *mirror_show_key(const unsigned char *key, size_t len,
			    char out[80]);
/* The URL of @path on the endpoint in use (malloc'd), or NULL. */
char *mirror_url(const struct cowmap_etcd *m, const char *path);

/* version.c */

void mirror_free_value(void *value, void *ctx);
int mirror_set_stamp(struct cowmap_txn *t, int64_t revision, unsigned flags);
int mirror_publish(struct cowmap_etcd *m, struct cowmap *next,
		   int64_t revision, unsigned flags, size_t events);
int mirror_decode_kv(struct cowmap_etcd *m, json_t *kv, bool key_only,
		     unsigned char **key, size_t *klen,
		     struct cowmap_etcd_value **value);
bool mirror_same_value(const struct cowmap_etcd_value *a,
		       const struct cowmap_etcd_value *b);

/* range.c */

int mirror_read_range(struct cowmap_etcd *m, unsigned flags,
		      const char *reason);

/* watch.c */

enum watch_outcome mirror_watch(struct cowmap_etcd *m);

#endif /* COWMAP_ETCD_MIRROR_H */
