/*
 * lpm.h - the longest-prefix-match bench (bench/lpm-bench): what the
 * driver (lpm-bench.c) hands to each side -- cowmap (lpm-cowmap.c) and
 * DPDK's rte_lpm / rte_lpm6 (lpm-dpdk.c) -- and what each side measures.
 */
#ifndef LPM_H
#define LPM_H

#include "rib.h"

#include <stddef.h>
#include <stdint.h>

/* One family's workload: the same routes and addresses for every side. */
struct lpm_set {
	const char *name;	/* "IPv4", "IPv6" */
	const char *source;	/* where the routes came from, for the report */
	struct rib rib;		/* sorted, unique; hop < 2^20 */
	unsigned bytes;		/* 4 or 16 */
	size_t naddrs;
	uint8_t *addrs;		/* naddrs packed addresses, network order */
	unsigned batch;		/* addresses per bulk look-up */
	int reps;		/* timed passes over addrs; the median is kept */
	double seconds;		/* length of the reader/writer run */
};

/*
 * What one side measured.  A figure a side cannot produce stays negative.
 * answers[i] is the next hop found for address i (the rib's hop), or
 * UINT32_MAX when no route covers it; the driver compares the sides.
 */
struct lpm_figures {
	double lookup_ns;	/* one look-up at a time, per address */
	double bulk_ns;		/* batched, per address */
	double rss_mib;		/* RSS growth while building the table */
	double alloc_mib;	/* what the structure says it holds */
	double add_us;		/* per route, added one at a time from empty */
	double load_us;		/* per route, whole table in one transaction */
	double publish_p50_us, publish_p99_us;	/* one route through a cell */
	double reader_mops;	/* reader alone, M addresses/s (batched) */
	double reader_writer_mops;	/* same reader, writer flat out */
	double writer_kops;	/* publishes/s during that run */
	uint64_t reader_errors;	/* wrong answers under the writer */
	uint32_t *answers;	/* naddrs entries, allocated by the side */
	uint32_t *answers_bulk;	/* the same from the batched look-ups */
};

/* Hop id for "no route" in answers[]. */
#define LPM_NO_ROUTE UINT32_MAX

double lpm_now(void);			/* CLOCK_MONOTONIC, seconds */
double lpm_rss_mib(void);		/* resident set, from /proc/self/statm */
double lpm_median(double *v, int n);	/* sorts v */

/* cowmap: build, look up, publish, reader under a writer. 0 or -errno. */
int lpm_cowmap_run(const struct lpm_set *s, struct lpm_figures *f);

/*
 * DPDK: rte_lpm (bytes 4) or rte_lpm6 (bytes 16), measured in a child
 * process with an EAL of its own (no huge pages, one lcore); its figures
 * and answers come back in @f.  0, or -1 after saying why.
 */
int lpm_dpdk_run(const struct lpm_set *s, struct lpm_figures *f,
		 const char *argv0);

#endif /* LPM_H */
