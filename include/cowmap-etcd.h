/*
 * cowmap-etcd.h - mirror a key prefix of an etcd cluster into a cowmap cell,
 * one published version per etcd revision.
 *
 * A mirror reads every key under a prefix of an etcd (v3 API) cluster and
 * publishes it in a cell of its own as one version.  It then watches the
 * prefix from the next revision on, and applies all the events of each
 * revision - every put and delete of one etcd transaction - in one cowmap
 * transaction, published as one version.  A reader therefore never sees
 * half of an etcd transaction, and every version carries the revision it
 * equals, read with the version itself:
 *
 *     urcu_memb_read_lock();
 *     const struct cowmap *v = cowmap_cell_load(cowmap_etcd_cell(m));
 *     int64_t rev = cowmap_etcd_revision(v);          // "serving rev"
 *     const struct cowmap_etcd_value *val =
 *             cowmap_etcd_get(v, "/app/color", 10);
 *     ... use rev and val->data before the unlock ...
 *     urcu_memb_read_unlock();
 *
 * What a version holds:
 *   - one entry per etcd key under the prefix.  The map key is the whole
 *     etcd key (prefix included); the value is a struct cowmap_etcd_value.
 *   - one more entry under the empty key (length 0), which etcd cannot
 *     store: the version's stamp (its revision and flags).  Read it with
 *     cowmap_etcd_revision() or cowmap_etcd_version_info().  The cowmap
 *     calls see it like any entry: cowmap_size() counts it, and an
 *     iteration meets it, so skip the entry whose key length is 0.
 *   Values are owned by the versions and freed by the map once no version
 *   and no reader can reach them; never free or change one.
 *
 * The mirror talks to etcd's HTTP/JSON gateway (POST /v3/kv/range and
 * /v3/watch), so any etcd from 3.4 on serves it with no gRPC library.
 * A background thread does all the work: the calls below only start it,
 * ask it questions and stop it.
 *
 * Failures (see README "Configuration from etcd"):
 *   - a dropped connection or a dead member: the watch is resumed from the
 *     last applied revision + 1 on the next endpoint of the list, so no
 *     revision is lost or applied twice;
 *   - the watch's start revision was compacted away: the range is read
 *     again and the whole new state is published as one version
 *     (COWMAP_ETCD_VERSION_RESYNC), and a COWMAP_ETCD_RESYNCED event says so;
 *   - a value over max_value_bytes or a malformed answer: the revision is
 *     refused as a whole (COWMAP_ETCD_REFUSED, with a message), the last
 *     good version stays published, and the mirror reads the whole range
 *     again (with back-off) until the store holds data it accepts;
 *   - no endpoint answers at start: cowmap_etcd_start() fails with a
 *     message, or with COWMAP_ETCD_START_EMPTY it publishes an empty
 *     version marked COWMAP_ETCD_VERSION_UNREACHABLE and keeps trying.
 *
 * Link with -lcowmap-etcd (pkg-config cowmap-etcd).
 */
#ifndef COWMAP_ETCD_H
#define COWMAP_ETCD_H

#include <stddef.h>
#include <stdint.h>

#include <cowmap.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Room for an error message, NUL included. */
#define COWMAP_ETCD_ERROR_MAX 256

struct cowmap_etcd;

/**
 * struct cowmap_etcd_value - one etcd key's value in a version.
 * @mod_revision:    the revision that last wrote the key.
 * @create_revision: the revision that created it.
 * @version:         etcd's per-key write counter.
 * @lease:           the lease it is attached to, 0 for none.
 * @len:             bytes of @data, the closing NUL aside.
 * @data:            the value's bytes, followed by a NUL so that text
 *                   values can be used as C strings.
 */
struct cowmap_etcd_value {
	int64_t mod_revision;
	int64_t create_revision;
	int64_t version;
	int64_t lease;
	size_t len;
	char data[];
};

/* Flags of a version (struct cowmap_etcd_version_info.flags). */
enum {
	/* The first version: the initial range read. */
	COWMAP_ETCD_VERSION_INITIAL = 1u << 0,
	/* Published from a whole re-read of the range (after a compaction,
	 * or after a refused revision), not from one revision's events:
	 * revisions between the previous version's and this one were never
	 * published one by one. */
	COWMAP_ETCD_VERSION_RESYNC = 1u << 1,
	/* An empty placeholder: etcd has not been read yet (start with
	 * COWMAP_ETCD_START_EMPTY while no endpoint answered).  Revision 0. */
	COWMAP_ETCD_VERSION_UNREACHABLE = 1u << 2,
};

/**
 * struct cowmap_etcd_version_info - the stamp of one version.
 * @revision: the etcd revision the version equals (0: a placeholder).
 * @flags:    COWMAP_ETCD_VERSION_* flags.
 * @keys:     etcd keys in the version (the stamp entry aside).
 */
struct cowmap_etcd_version_info {
	int64_t revision;
	unsigned flags;
	size_t keys;
};

/* What the mirror tells the application through on_event. */
enum cowmap_etcd_event {
	COWMAP_ETCD_CONNECTED,		/* a watch runs on an endpoint */
	COWMAP_ETCD_DISCONNECTED,	/* an endpoint failed; moving on */
	COWMAP_ETCD_RESYNCED,		/* a whole re-read was published */
	COWMAP_ETCD_REFUSED,		/* data refused; last good version kept */
	COWMAP_ETCD_UNREACHABLE,	/* no endpoint answered the first read */
};

/* Options flags. */
enum {
	/* When no endpoint answers within start_timeout_ms, start anyway
	 * with an empty version marked COWMAP_ETCD_VERSION_UNREACHABLE
	 * instead of failing; the mirror keeps trying in the background. */
	COWMAP_ETCD_START_EMPTY = 1u << 0,
};

/**
 * struct cowmap_etcd_options - what to mirror and how.  Zero = default.
 * @endpoints:  comma-separated base URLs of the cluster's members, e.g.
 *              "http://10.0.0.1:2379,http://10.0.0.2:2379" ("http://" is
 *              added when no scheme is given).  Required.
 * @prefix:     the key prefix (a C string); "" (or NULL) mirrors every
 *              key.
 * @flavor:     the liburcu flavor the cell's readers use; NULL = urcu-memb.
 * @flags:      COWMAP_ETCD_START_EMPTY.
 * @start_timeout_ms:   how long cowmap_etcd_start() waits for the first
 *                      read (default 5000).
 * @request_timeout_ms: one range request, and the connection of a watch
 *                      (default 5000).
 * @probe_interval_ms:  a watch that has been silent this long is checked
 *                      with a small linearizable read on the same member;
 *                      if that fails the mirror moves to the next endpoint
 *                      (default 1000).  This catches a member that hangs,
 *                      or lost its quorum, without closing the connection.
 * @retry_max_ms:       back-off cap between failed rounds (default 2000;
 *                      the first wait is 50 ms, doubled each round).
 * @max_value_bytes:    a value larger than this is refused (default 1 MiB).
 * @max_response_bytes: one range answer or one watch message larger than
 *                      this is refused (default 64 MiB).
 * @range_page:         keys per range request while reading (default 1000;
 *                      every page is read at the first page's revision).
 * @on_publish: called in the mirror thread after each publish, with the
 *              previous version and the new one, both alive during the
 *              call (borrowed: retain to keep one).  The first call's
 *              previous version is the empty placeholder (revision 0), so
 *              cowmap_diff() reports every key as added (and the stamp,
 *              under the empty key, as changed).  The thread is
 *              registered with the flavor (online under urcu-qsbr) while
 *              it runs; the next revision waits for it.  May be NULL.
 *              Must not stop or free the mirror.
 * @on_event:   called in the mirror thread for the events above with the
 *              revision concerned (0 when none) and a message.  NULL
 *              writes the message to stderr.
 * @ctx:        passed to both callbacks.
 */
struct cowmap_etcd_options {
	const char *endpoints;
	const char *prefix;
	const struct rcu_flavor_struct *flavor;
	unsigned flags;
	unsigned start_timeout_ms;
	unsigned request_timeout_ms;
	unsigned probe_interval_ms;
	unsigned retry_max_ms;
	size_t max_value_bytes;
	size_t max_response_bytes;
	unsigned range_page;
	void (*on_publish)(const struct cowmap *prev, const struct cowmap *next,
			   const struct cowmap_etcd_version_info *info,
			   void *ctx);
	void (*on_event)(enum cowmap_etcd_event what, int64_t revision,
			 const char *message, void *ctx);
	void *ctx;
};

/**
 * struct cowmap_etcd_stats - what the mirror has done.
 * @applied_revision: the revision of the published version.
 * @store_revision:   the highest store revision etcd has reported (every
 *                    answer carries it).  It counts writes to every key,
 *                    not only the prefix's, so @store_revision -
 *                    @applied_revision is an upper bound of the lag.
 * @ms_since_contact: milliseconds since etcd last answered (a watch
 *                    message or a probe); large = the mirror may be stale;
 *                    -1 while etcd has never answered.
 * @versions:         versions published (the start-up placeholder aside).
 * @revisions:        revisions applied one by one from the watch.
 * @events:           puts and deletes applied from the watch.
 * @reconnects:       watches resumed on an endpoint after a failure.
 * @resyncs:          whole re-reads published after the first read.
 * @refused:          revisions or answers refused.
 * @connected:        1 while a watch is established.
 * @endpoint:         index in the endpoint list of the member in use.
 * @last_error:       the last failure's message ("" if none).
 */
struct cowmap_etcd_stats {
	int64_t applied_revision;
	int64_t store_revision;
	int64_t ms_since_contact;
	uint64_t versions, revisions, events;
	uint64_t reconnects, resyncs, refused;
	int connected;
	unsigned endpoint;
	char last_error[COWMAP_ETCD_ERROR_MAX];
};

/**
 * cowmap_etcd_start - read the prefix, publish it, and start mirroring.
 * @opts: copied (the strings too).
 * @err:  receives the reason on failure; may be NULL.
 *
 * Waits until the first read is published (at most start_timeout_ms), so
 * the cell answers with etcd's data as soon as this returns - except with
 * COWMAP_ETCD_START_EMPTY when etcd did not answer in time: then the cell
 * holds an empty version marked COWMAP_ETCD_VERSION_UNREACHABLE until the
 * first read succeeds.
 *
 * Returns the mirror (free it with cowmap_etcd_free()), or NULL with
 * errno set: EINVAL (NULL @opts or endpoints, or a list that names no
 * endpoint; a malformed URL is only found out when it fails to connect),
 * ENOMEM (also when libcurl cannot be initialised), ETIMEDOUT or
 * ECONNREFUSED (no endpoint answered; the message names the last error),
 * EPROTO (the first read was refused: see max_value_bytes), or
 * pthread_create()'s error (EAGAIN).  Call it from a thread registered
 * with the flavor (online with urcu-qsbr), outside any read-side critical
 * section: a failed start frees the cell it made, as cowmap_etcd_free()
 * does.
 */
COWMAP_API
struct cowmap_etcd *cowmap_etcd_start(const struct cowmap_etcd_options *opts,
				      char err[COWMAP_ETCD_ERROR_MAX]);

/**
 * cowmap_etcd_cell - the cell the mirror publishes in (borrowed); NULL
 * for a NULL mirror.  Read it with the flavor given in the options.  It
 * lives until cowmap_etcd_free(), also after cowmap_etcd_stop(); only the
 * mirror writes to it: never publish in it or free it yourself.
 */
COWMAP_API
struct cowmap_cell *cowmap_etcd_cell(struct cowmap_etcd *m);

/**
 * cowmap_etcd_stats - fill @out.  Returns 0, or -EINVAL for a NULL
 * argument.  Any thread, also after cowmap_etcd_stop(); not while another
 * thread frees @m.
 */
COWMAP_API
int cowmap_etcd_stats(struct cowmap_etcd *m, struct cowmap_etcd_stats *out);

/**
 * cowmap_etcd_wait - wait until a version of revision >= @revision is
 * published, at most @timeout_ms.
 *
 * For read-your-writes: a writer that got revision N from etcd waits for
 * N before reading the cell.  Returns 0 (at once if that revision is
 * already published, even after a stop), -ETIMEDOUT, -ESHUTDOWN (the
 * mirror is or was stopped before publishing it) or -EINVAL (NULL @m).
 * Any thread, registered or not, and several at once; a stop wakes them.
 * Not while another thread frees @m, and not from a callback (the mirror
 * thread cannot publish while it waits there).
 */
COWMAP_API
int cowmap_etcd_wait(struct cowmap_etcd *m, int64_t revision,
		     unsigned timeout_ms);

/**
 * cowmap_etcd_stop - stop mirroring; the cell keeps its last version.
 * Returns when the mirror thread has exited (a request in flight is
 * abandoned).  NULL is ignored.  Calling it again after it has returned
 * is harmless, but two threads must not call it (nor it and
 * cowmap_etcd_free()) at the same time: both would join the mirror
 * thread.  Not from a callback (on_publish, on_event), which runs in the
 * mirror thread and would wait for itself.
 */
COWMAP_API
void cowmap_etcd_stop(struct cowmap_etcd *m);

/**
 * cowmap_etcd_free - stop the mirror and free it and its cell; NULL is
 * ignored.  @m may have been stopped already.  Call it once, from one
 * thread, when no other thread is in (or will enter) any cowmap_etcd_*
 * call on @m and no reader uses the cell any more; a version a reader
 * took with cowmap_cell_snapshot() stays valid until released.  Call
 * from a thread registered with the flavor (online with urcu-qsbr),
 * outside any read-side critical section and outside the callbacks, as
 * cowmap_cell_free() requires.
 */
COWMAP_API
void cowmap_etcd_free(struct cowmap_etcd *m);

/* ------------------------------------------------------------------ */
/* Reading a version (any thread; the version must stay alive: a      */
/* reference, or the read-side critical section that loaded it)       */
/* ------------------------------------------------------------------ */

/**
 * cowmap_etcd_revision - the etcd revision @v equals; 0 for a placeholder
 * or NULL.  Allocates nothing, locks nothing.  The stamp is whatever @v
 * holds under the empty key: pass only versions of a mirror's cell (a map
 * of your own gives 0, or garbage if it has an entry under "").
 */
COWMAP_API
int64_t cowmap_etcd_revision(const struct cowmap *v);

/**
 * cowmap_etcd_version_info - fill @out with @v's stamp.
 * Returns 0, or -ENOENT when @v carries no stamp, -EINVAL for NULL.
 */
COWMAP_API
int cowmap_etcd_version_info(const struct cowmap *v,
			     struct cowmap_etcd_version_info *out);

/**
 * cowmap_etcd_get - the value of etcd key @key (prefix included) in @v,
 * or NULL when absent (or @len is 0).  Borrowed from @v.
 */
COWMAP_API
const struct cowmap_etcd_value *cowmap_etcd_get(const struct cowmap *v,
						const void *key, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* COWMAP_ETCD_H */
