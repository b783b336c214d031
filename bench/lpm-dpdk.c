/*
 * lpm-dpdk.c - the peer of the LPM bench: DPDK's rte_lpm (IPv4) and
 * rte_lpm6 (IPv6), measured on the workload cowmap gets.
 *
 * Each table is measured in a child process of its own, with its own EAL
 * (see child()), which runs without huge pages, PCI or telemetry, in
 * 1 GiB of ordinary memory on lcore 0, with a file prefix of its own so
 * that runs side by side do not meet.  Its memory is one anonymous mapping made at start;
 * what a table costs is what its creation and its routes touch of it, so
 * the figure reported is the RSS growth over create + adds (rte_zmalloc
 * does not clear memory the kernel handed over zeroed), beside what the
 * configuration allocates.
 *
 * rte_lpm needs its limits up front: max_rules is the number of routes
 * and number_tbl8s the number of 256-entry groups the routes longer than
 * 24 bits need -- one per distinct /24 (IPv4), one per distinct
 * (24 + 8k)-bit prefix below a longer route (IPv6) -- counted from the
 * routes, plus a margin.
 */
#include "lpm.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lpm.h>
#include <rte_lpm6.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BATCH 256

static char runtime_dir[4096];

static int dpdk_init(const char *argv0)
{
	char prefix[64], *argv[16];
	int argc = 0;
	cpu_set_t before;

	snprintf(prefix, sizeof(prefix), "--file-prefix=cowmap-lpm-%ld",
		 (long)getpid());
	argv[argc++] = (char *)argv0;
	argv[argc++] = (char *)"--no-huge";
	argv[argc++] = (char *)"--no-pci";
	argv[argc++] = (char *)"--no-telemetry";
	argv[argc++] = (char *)"-m";
	argv[argc++] = (char *)"1024";
	argv[argc++] = (char *)"-l";
	argv[argc++] = (char *)"0";
	/*
	 * No --in-memory: with --no-huge the EAL runs in legacy memory mode,
	 * which refuses it.  The run-time files it writes under the file
	 * prefix are removed by dpdk_cleanup().
	 */
	argv[argc++] = prefix;
	argv[argc++] = (char *)"--log-level=error";
	argv[argc] = NULL;

	/*
	 * The EAL pins the calling thread to lcore 0's CPU.  Put the
	 * affinity back, so that the threads made afterwards (cowmap's
	 * reader and writer) run where the scheduler likes: the look-up
	 * loops themselves do not care which lcore they are on.
	 */
	sched_getaffinity(0, sizeof(before), &before);
	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "lpm-bench: rte_eal_init: %s\n",
			rte_strerror(rte_errno));
		return -1;
	}
	sched_setaffinity(0, sizeof(before), &before);
	snprintf(runtime_dir, sizeof(runtime_dir), "%s",
		 rte_eal_get_runtime_dir());
	return 0;
}

static void dpdk_cleanup(void)
{
	DIR *d;
	struct dirent *e;

	rte_eal_cleanup();
	/* The config and fbarray files a primary process leaves behind. */
	if (runtime_dir[0] == '\0' || (d = opendir(runtime_dir)) == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char path[8192];

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", runtime_dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(runtime_dir);
}

/* Groups of 256 entries the routes need below their first 24 bits. */
static uint32_t tbl8_groups(const struct rib *r)
{
	uint32_t groups = 0;

	/*
	 * The rib is sorted, so the routes under one (24 + 8k)-bit prefix
	 * are adjacent: count the changes of that prefix among the routes
	 * longer than it, level by level.
	 */
	for (unsigned level = 24; level < r->width; level += 8) {
		const uint8_t *last = NULL;

		for (size_t i = 0; i < r->n; i++) {
			const struct rib_route *e = &r->route[i];

			if (e->len <= level)
				continue;
			if (last == NULL || memcmp(last, e->addr, level / 8) != 0)
				groups++;
			last = e->addr;
		}
	}
	return groups;
}

static uint32_t host_order(const uint8_t *a)
{
	return (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 |
	       (uint32_t)a[2] << 8 | a[3];
}

/* --- Timed passes over the addresses -------------------------------- */

static volatile uint64_t sink;	/* keeps the answers of timed loops alive */

struct v4 {
	struct rte_lpm *lpm;
	const uint32_t *ips;	/* host byte order, as rte_lpm takes them */
};

static double v4_single(const struct lpm_set *s, void *arg)
{
	const struct v4 *p = arg;
	uint64_t sum = 0;
	double t = lpm_cpu_now();

	for (size_t i = 0; i < s->naddrs; i++) {
		uint32_t nh;

		if (rte_lpm_lookup(p->lpm, p->ips[i], &nh) == 0)
			sum += nh;
	}
	t = lpm_cpu_now() - t;
	sink += sum;
	return t / (double)s->naddrs * 1e9;
}

static double v4_bulk(const struct lpm_set *s, void *arg)
{
	const struct v4 *p = arg;
	size_t n = s->naddrs - s->naddrs % s->batch;
	uint64_t sum = 0;
	double t = lpm_cpu_now();

	for (size_t i = 0; i < n; i += s->batch) {
		uint32_t nh[MAX_BATCH];

		rte_lpm_lookup_bulk(p->lpm, p->ips + i, nh, s->batch);
		for (unsigned j = 0; j < s->batch; j++)
			sum += nh[j];
	}
	t = lpm_cpu_now() - t;
	sink += sum;
	return t / (double)n * 1e9;
}

static double v6_single(const struct lpm_set *s, void *arg)
{
	struct rte_lpm6 *lpm = arg;
	uint64_t sum = 0;
	double t = lpm_cpu_now();

	for (size_t i = 0; i < s->naddrs; i++) {
		uint32_t nh;

		if (rte_lpm6_lookup(lpm, s->addrs + 16 * i, &nh) == 0)
			sum += nh;
	}
	t = lpm_cpu_now() - t;
	sink += sum;
	return t / (double)s->naddrs * 1e9;
}

static double v6_bulk(const struct lpm_set *s, void *arg)
{
	struct rte_lpm6 *lpm = arg;
	size_t n = s->naddrs - s->naddrs % s->batch;
	uint64_t sum = 0;
	double t = lpm_cpu_now();

	for (size_t i = 0; i < n; i += s->batch) {
		int32_t nh[MAX_BATCH];

		rte_lpm6_lookup_bulk_func(lpm, (uint8_t(*)[16])(s->addrs + 16 * i),
					  nh, s->batch);
		for (unsigned j = 0; j < s->batch; j++)
			sum += (uint32_t)nh[j];
	}
	t = lpm_cpu_now() - t;
	sink += sum;
	return t / (double)n * 1e9;
}

/*
 * The passes of both sides, taken in turns (ours single, theirs single,
 * ours batched, theirs batched), so that on a shared machine a busy
 * moment weighs on both; the median of each is kept.
 */
static void timed_passes(const struct lpm_set *s, struct lpm_figures *f,
			 struct lpm_pass *ours,
			 double (*single)(const struct lpm_set *, void *),
			 double (*bulk)(const struct lpm_set *, void *),
			 void *peer)
{
	double os[64], ts[64], ob[64], tb[64];

	for (int rep = 0; rep < s->reps; rep++) {
		os[rep] = ours->single(s, ours->ctx);
		ts[rep] = single(s, peer);
		ob[rep] = ours->bulk(s, ours->ctx);
		tb[rep] = bulk(s, peer);
	}
	ours->single_ns = lpm_median(os, s->reps);
	ours->bulk_ns = lpm_median(ob, s->reps);
	f->lookup_ns = lpm_median(ts, s->reps);
	f->bulk_ns = lpm_median(tb, s->reps);
}

/* --- A reader on its own thread, for its rate (nothing writes). ------ */

struct reader {
	const struct lpm_set *s;
	struct rte_lpm *lpm;
	struct rte_lpm6 *lpm6;
	const uint32_t *ips;
	atomic_bool *stop;
	uint64_t done;
	uint64_t sum;
	double cpu;		/* the thread's on-CPU seconds */
};

static void *reader_main(void *arg)
{
	struct reader *rd = arg;
	const struct lpm_set *s = rd->s;
	const unsigned b = s->batch;
	uint32_t nh[MAX_BATCH];
	int32_t nh6[MAX_BATCH];
	size_t pos = 0;
	double cpu0 = lpm_cpu_now();

	while (!atomic_load_explicit(rd->stop, memory_order_relaxed)) {
		if (pos + b > s->naddrs)
			pos = 0;
		if (rd->lpm) {
			rte_lpm_lookup_bulk(rd->lpm, rd->ips + pos, nh, b);
			for (unsigned j = 0; j < b; j++)
				rd->sum += nh[j];
		} else {
			rte_lpm6_lookup_bulk_func(rd->lpm6,
				(uint8_t(*)[16])(s->addrs + pos * 16), nh6, b);
			for (unsigned j = 0; j < b; j++)
				rd->sum += (uint32_t)nh6[j];
		}
		pos += b;
		rd->done += b;
	}
	rd->cpu = lpm_cpu_now() - cpu0;
	return NULL;
}

static double reader_rate(const struct lpm_set *s, struct rte_lpm *lpm,
			  struct rte_lpm6 *lpm6, const uint32_t *ips)
{
	atomic_bool stop = false;
	struct reader rd = { .s = s, .lpm = lpm, .lpm6 = lpm6, .ips = ips,
			     .stop = &stop };
	pthread_t t;
	double t0 = lpm_now();

	if (pthread_create(&t, NULL, reader_main, &rd) != 0)
		return -1;
	while (lpm_now() - t0 < s->seconds)
		usleep(10000);
	atomic_store(&stop, true);
	pthread_join(t, NULL);
	return rd.cpu > 0 ? (double)rd.done / rd.cpu / 1e6 : -1;
}

/* --- The measurements ------------------------------------------------ */

static int run_v4(const struct lpm_set *s, struct lpm_figures *f,
		  struct lpm_pass *pass)
{
	const struct rib *r = &s->rib;
	uint32_t groups = tbl8_groups(r);
	struct rte_lpm_config cfg = {
		.max_rules = (uint32_t)r->n + 16,
		.number_tbl8s = groups + groups / 8 + 64,
	};
	uint32_t *ips = malloc(s->naddrs * sizeof(*ips));

	if (ips == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < s->naddrs; i++)
		ips[i] = host_order(s->addrs + 4 * i);

	double rss0 = lpm_rss_mib(), t0 = lpm_cpu_now();
	struct rte_lpm *lpm = rte_lpm_create("cowmap_bench_v4", SOCKET_ID_ANY,
					     &cfg);

	if (lpm == NULL) {
		fprintf(stderr, "lpm-bench: rte_lpm_create: %s\n",
			rte_strerror(rte_errno));
		free(ips);
		return -ENOMEM;
	}
	for (size_t i = 0; i < r->n; i++) {
		int rc = rte_lpm_add(lpm, host_order(r->route[i].addr),
				     r->route[i].len, r->route[i].hop);

		if (rc < 0) {
			fprintf(stderr, "lpm-bench: rte_lpm_add: %s\n",
				strerror(-rc));
			rte_lpm_free(lpm);
			free(ips);
			return rc;
		}
	}
	f->add_us = (lpm_cpu_now() - t0) / (double)r->n * 1e6;
	f->rss_mib = lpm_rss_mib() - rss0;
	f->alloc_mib = ((double)(1u << 24) * 4 + (double)cfg.number_tbl8s * 256 * 4 +
			(double)cfg.max_rules * 8) / (1024.0 * 1024.0);

	/* Answers, outside the timing. */
	for (size_t i = 0; i < s->naddrs; i++) {
		uint32_t nh;

		f->answers[i] = rte_lpm_lookup(lpm, ips[i], &nh) == 0
					? nh : LPM_NO_ROUTE;
	}
	for (size_t i = 0; i + s->batch <= s->naddrs; i += s->batch) {
		uint32_t nh[MAX_BATCH];

		rte_lpm_lookup_bulk(lpm, ips + i, nh, s->batch);
		for (unsigned j = 0; j < s->batch; j++)
			f->answers_bulk[i + j] = nh[j] & RTE_LPM_LOOKUP_SUCCESS
				? nh[j] & 0x00ffffff : LPM_NO_ROUTE;
	}

	struct v4 peer = { lpm, ips };

	timed_passes(s, f, pass, v4_single, v4_bulk, &peer);
	f->reader_mops = reader_rate(s, lpm, NULL, ips);

	rte_lpm_free(lpm);
	free(ips);
	return 0;
}

static int run_v6(const struct lpm_set *s, struct lpm_figures *f,
		  struct lpm_pass *pass)
{
	const struct rib *r = &s->rib;
	uint32_t groups = tbl8_groups(r);
	struct rte_lpm6_config cfg = {
		.max_rules = (uint32_t)r->n + 16,
		.number_tbl8s = groups + groups / 8 + 64,
	};
	double rss0 = lpm_rss_mib(), t0 = lpm_cpu_now();
	struct rte_lpm6 *lpm = rte_lpm6_create("cowmap_bench_v6", SOCKET_ID_ANY,
					       &cfg);

	if (lpm == NULL) {
		fprintf(stderr, "lpm-bench: rte_lpm6_create: %s\n",
			rte_strerror(rte_errno));
		return -ENOMEM;
	}
	for (size_t i = 0; i < r->n; i++) {
		int rc = rte_lpm6_add(lpm, r->route[i].addr, r->route[i].len,
				      r->route[i].hop);

		if (rc < 0) {
			fprintf(stderr, "lpm-bench: rte_lpm6_add: %s\n",
				strerror(-rc));
			rte_lpm6_free(lpm);
			return rc;
		}
	}
	f->add_us = (lpm_cpu_now() - t0) / (double)r->n * 1e6;
	f->rss_mib = lpm_rss_mib() - rss0;
	/* tbl24, the groups and their headers; the rules hash is not counted. */
	f->alloc_mib = ((double)(1u << 24) * 4 +
			(double)cfg.number_tbl8s * (256 * 4 + 8)) /
		       (1024.0 * 1024.0);

	for (size_t i = 0; i < s->naddrs; i++) {
		uint32_t nh;

		f->answers[i] = rte_lpm6_lookup(lpm, s->addrs + 16 * i, &nh) == 0
					? nh : LPM_NO_ROUTE;
	}
	for (size_t i = 0; i + s->batch <= s->naddrs; i += s->batch) {
		int32_t nh[MAX_BATCH];

		rte_lpm6_lookup_bulk_func(lpm,
			(uint8_t(*)[16])(s->addrs + 16 * i), nh, s->batch);
		for (unsigned j = 0; j < s->batch; j++)
			f->answers_bulk[i + j] = nh[j] < 0 ? LPM_NO_ROUTE
							   : (uint32_t)nh[j];
	}

	timed_passes(s, f, pass, v6_single, v6_bulk, lpm);
	f->reader_mops = reader_rate(s, NULL, lpm, NULL);

	rte_lpm6_free(lpm);
	return 0;
}

/*
 * The child: one EAL for one table, so that the pages it touches are its
 * own (the EAL keeps freed memory in its pool, where the next table would
 * reuse it and show no RSS growth).  Writes its figures and answers into
 * @out, shared with the parent.
 */
static int child(const struct lpm_set *s, struct lpm_figures *out,
		 struct lpm_pass *pass, const char *argv0)
{
	int rc;

	if (dpdk_init(argv0) < 0)
		return -1;
	rc = s->bytes == 4 ? run_v4(s, out, pass) : run_v6(s, out, pass);
	dpdk_cleanup();
	return rc < 0 ? -1 : 0;
}

int lpm_dpdk_run(const struct lpm_set *s, struct lpm_figures *f,
		 struct lpm_pass *pass, const char *argv0)
{
	struct shared {
		struct lpm_figures f;
		struct lpm_pass pass;
		uint32_t answers[];	/* 2 * naddrs */
	} *sh;
	size_t answers = s->naddrs * sizeof(uint32_t);
	size_t size = sizeof(*sh) + 2 * answers;
	pid_t pid;
	int status;

	if (s->batch > MAX_BATCH || s->reps > 64)
		return -EINVAL;
	sh = mmap(NULL, size, PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return -errno;
	sh->f = *f;
	sh->f.answers = sh->answers;
	sh->f.answers_bulk = sh->answers + s->naddrs;
	sh->pass = *pass;

	fflush(NULL);	/* nothing buffered is written twice */
	pid = fork();
	if (pid < 0) {
		munmap(sh, size);
		return -errno;
	}
	if (pid == 0)
		_exit(child(s, &sh->f, &sh->pass, argv0) < 0 ? 1 : 0);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "lpm-bench: the DPDK side failed\n");
		munmap(sh, size);
		return -EIO;
	}

	uint32_t *a = f->answers, *b = f->answers_bulk;

	*f = sh->f;
	f->answers = a;
	f->answers_bulk = b;
	memcpy(a, sh->f.answers, answers);
	memcpy(b, sh->f.answers_bulk, answers);
	*pass = sh->pass;
	munmap(sh, size);
	return 0;
}
