/*
 * etcd_source.h - config-reload's configuration taken from an etcd prefix
 * (--etcd ENDPOINTS --prefix P) instead of a file.
 *
 * The etcd mirror (libcowmap-etcd) publishes one version per etcd
 * revision in its own cell; the server reads that cell through the view
 * below: a configuration key is the etcd key without the prefix, and the
 * version number is the etcd revision.  Every version's changes are
 * logged like a file reload's.
 */
#ifndef CONFIG_RELOAD_ETCD_SOURCE_H
#define CONFIG_RELOAD_ETCD_SOURCE_H

#include <cowmap.h>

#include <stdio.h>

#include "server.h"

struct etcd_source;

/*
 * etcd_source_start - mirror @prefix of the cluster at @endpoints (comma-
 * separated).  Waits for the first read; on failure prints why on stderr
 * and returns NULL.  Changes go to @log (NULL: not logged).  The calling
 * thread must be registered with urcu-memb.
 */
struct etcd_source *etcd_source_start(const char *endpoints,
				      const char *prefix, FILE *log);

/* The cell and how to read it, for struct server_options. */
struct cowmap_cell *etcd_source_cell(struct etcd_source *src);
const struct config_view *etcd_source_view(struct etcd_source *src);

/* One line: versions published, revision, reconnects, re-reads. */
void etcd_source_summary(struct etcd_source *src, FILE *out);

/* Stop mirroring and free the cell; after the server is freed. */
void etcd_source_free(struct etcd_source *src);

#endif /* CONFIG_RELOAD_ETCD_SOURCE_H */
