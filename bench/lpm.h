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
	double reader_mops;	/* reader alone, M addresses per on-CPU s */
	double reader_writer_mops;	/* same reader, writer flat out */
	double writer_kops;	/* publishes per wall-clock s in that run */
	uint64_t reader_errors;	/* wrong answers under the writer */
	uint32_t *answers;	/* naddrs entries, allocated by the side */
	uint32_t *answers_bulk;	/* the same from the batched look-ups */
};

/* Hop id for "no route" in answers[]. */
#define LPM_NO_ROUTE UINT32_MAX

double lpm_now(void);			/* CLOCK_MONOTONIC, seconds */
/*
 * On-CPU time of the calling thread, seconds.  The look-up passes, the
 * loads and the adds are timed with it, on both sides: on a shared machine
 * the time a thread spends descheduled is not the structure's cost.
 */
double lpm_cpu_now(void);
double lpm_rss_mib(void);		/* resident set, from /proc/self/statm */
double lpm_median(double *v, int n);	/* sorts v */

/*
 * The look-up passes of the side under test, handed to lpm_dpdk_run(),
 * which times them in turn with its own (in its child process: the
 * version is inherited, and reading it writes nothing).  Each returns ns
 * per address for one pass over s->addrs.
 */
struct lpm_pass {
	double (*single)(const struct lpm_set *s, void *ctx);
	double (*bulk)(const struct lpm_set *s, void *ctx);
	void *ctx;
	double single_ns, bulk_ns;	/* medians, filled in */
};

/*
 * cowmap, in two parts around lpm_dpdk_run().  lpm_cowmap_build() loads
 * the table by transaction (memory, load time), adds it route by route
 * (add time), records the answers, and returns the table (a new
 * reference) with @pass set up to time its look-ups; NULL with errno on
 * failure.  lpm_cowmap_cell() takes the table into a cell and measures
 * single-route publishes and a reader with and without a writer.
 * 0 or -errno.
 */
struct cowmap;
struct cowmap *lpm_cowmap_build(const struct lpm_set *s, struct lpm_figures *f,
				struct lpm_pass *pass);
int lpm_cowmap_cell(const struct lpm_set *s, struct cowmap *t,
		    struct lpm_figures *f);

/*
 * DPDK: rte_lpm (bytes 4) or rte_lpm6 (bytes 16), measured in a child
 * process with an EAL of its own (no huge pages, one lcore); its figures
 * and answers come back in @f, and @pass's medians, timed in turns with
 * DPDK's, in @pass.  0, or a negative errno after saying why.
 */
int lpm_dpdk_run(const struct lpm_set *s, struct lpm_figures *f,
		 struct lpm_pass *pass, const char *argv0);

#endif /* LPM_H */
