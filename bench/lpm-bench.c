/*
 * lpm-bench - cowmap's prefix tables against DPDK's rte_lpm and rte_lpm6,
 * in one run, on the same routes and the same addresses (issue #16).
 *
 *   lpm-bench [--geoip-dir DIR] [--synthetic N] [--family 4|6]
 *             [--addresses N] [--batch N] [--reps N] [--seconds S] [--quick]
 *
 * Routes: the IPv4 prefixes of GeoIP.dat and the native IPv6 prefixes of
 * GeoIPv6.dat (Debian's geoip-database; DIR defaults to /usr/share/GeoIP),
 * each with covering aggregates added (examples/routing-table/rib.c) so
 * that they nest as in a real RIB.  Without the files, or with
 * --synthetic N, synthetic tables of N routes are used instead.
 *
 * Addresses: IPv4 uniformly random; IPv6 random hosts of random routes
 * (uniform 128-bit addresses would nearly all miss in the first byte).
 *
 * Each side (lpm-cowmap.c, lpm-dpdk.c) builds its table, answers every
 * address outside the timing, then is timed; the driver checks that both
 * gave the same answer for every address, one at a time and in batches,
 * and prints the figures with their ratios against the targets.
 */
#include "lpm.h"
#include "geoip.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double lpm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double lpm_cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double lpm_rss_mib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, resident = 0;

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &size, &resident) != 2)
		resident = 0;
	fclose(f);
	return (double)resident * (double)sysconf(_SC_PAGESIZE) /
	       (1024.0 * 1024.0);
}

static int by_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

double lpm_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), by_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void cpu_model(char *buf, size_t size)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];

	snprintf(buf, size, "unknown CPU");
	while (f && fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':');

		if (strncmp(line, "model name", 10) == 0 && colon) {
			snprintf(buf, size, "%s", colon + 2);
			buf[strcspn(buf, "\n")] = '\0';
			break;
		}
	}
	if (f)
		fclose(f);
}

/* The 1-minute load average: how busy the shared machine was. */
static const char *load_average(void)
{
	static char text[32] = "unknown";
	FILE *f = fopen("/proc/loadavg", "r");

	if (f) {
		if (fscanf(f, "%31s", text) != 1)
			strcpy(text, "unknown");
		fclose(f);
	}
	return text;
}

/* --- Workloads ------------------------------------------------------- */

static char source_text[2][256];

static int make_set(struct lpm_set *s, unsigned width, const char *geoip_dir,
		    size_t synthetic, size_t naddrs)
{
	char path[4096];
	char *text = source_text[width == 128];
	long leaves = 0, aggregates;

	rib_init(&s->rib, width);
	s->name = width == 32 ? "IPv4" : "IPv6";
	s->bytes = width / 8;
	if (synthetic == 0) {
		snprintf(path, sizeof(path), "%s/%s", geoip_dir,
			 geoip_file_name(width));
		leaves = geoip_load(&s->rib, path);
		if (leaves < 0) {
			printf("%s: %s: %s; using a synthetic table instead "
			       "(install geoip-database for the real one)\n",
			       s->name, path, strerror((int)-leaves));
			rib_free(&s->rib);
			synthetic = width == 32 ? 350000 : 100000;
		}
	}
	if (synthetic) {
		if (rib_generate(&s->rib, synthetic, width) < 0)
			return -ENOMEM;
		leaves = (long)s->rib.n;
	}
	aggregates = rib_add_aggregates(&s->rib);
	if (aggregates < 0)
		return -ENOMEM;
	snprintf(text, sizeof(source_text[0]),
		 "%zu routes: %ld %s prefixes + %ld covering aggregates",
		 s->rib.n, leaves,
		 synthetic ? "synthetic" : geoip_file_name(width), aggregates);
	s->source = text;

	s->naddrs = naddrs;
	s->addrs = malloc(naddrs * s->bytes);
	if (s->addrs == NULL)
		return -ENOMEM;
	rib_random_addresses(&s->rib, s->addrs, naddrs, width == 128,
			     0x1babe + width);
	return 0;
}

/* --- The report ------------------------------------------------------ */

static unsigned passed, missed;

static void bound(const char *what, double ratio, double limit)
{
	int ok = ratio >= 0 && ratio <= limit;

	printf("  %-46s %7.3fx  (target <= %.2fx)  %s\n", what, ratio, limit,
	       ok ? "PASS" : "MISS");
	if (ok)
		passed++;
	else
		missed++;
}

static void row(const char *what, double ours, double theirs,
		const char *unit)
{
	printf("  %-34s %10.3f %10.3f  %s", what, ours, theirs, unit);
	if (ours > 0 && theirs > 0)
		printf("  (%.2fx)", ours / theirs);
	putchar('\n');
}

static size_t compare(const char *what, const uint32_t *a, const uint32_t *b,
		      size_t n, size_t *missing)
{
	size_t differ = 0;

	*missing = 0;
	for (size_t i = 0; i < n; i++) {
		differ += a[i] != b[i];
		*missing += a[i] == LPM_NO_ROUTE;
	}
	if (differ)
		printf("  ANSWERS DIFFER (%s): %zu of %zu addresses\n", what,
		       differ, n);
	return differ;
}

static int report(const struct lpm_set *s, const struct lpm_figures *c,
		  const struct lpm_figures *d, double lpm6_add_us)
{
	const char *peer = s->bytes == 4 ? "rte_lpm" : "rte_lpm6";
	size_t n = s->naddrs - s->naddrs % s->batch, none;
	size_t bad = compare("single", c->answers, d->answers, s->naddrs, &none) +
		     compare("bulk", c->answers_bulk, d->answers_bulk, n, &none) +
		     compare("cowmap single/bulk", c->answers, c->answers_bulk, n,
			     &none);

	printf("\n%s: %s; %zu addresses (%zu without a route)\n", s->name,
	       s->source, s->naddrs, none);
	printf("  %-34s %10s %10s\n", "", "cowmap", peer);
	row("single look-up (ns)", c->lookup_ns, d->lookup_ns, "");
	row("batched look-up (ns/address)", c->bulk_ns, d->bulk_ns, "");
	row("memory: RSS growth (MiB)", c->rss_mib, d->rss_mib, "");
	row("memory: structure's count (MiB)", c->alloc_mib, d->alloc_mib,
	    "cowmap_stats / configured");
	row("add one route to a version (us)", c->add_us, d->add_us,
	    "cowmap_prefix_set / add");
	printf("  %-34s %10.3f %10s  us/route, one transaction\n",
	       "load the whole table", c->load_us, "-");
	printf("  %-34s %5.2f/%-5.2f %9s  us, cowmap_cell_prefix_set\n",
	       "publish one route, p50/p99", c->publish_p50_us,
	       c->publish_p99_us, "-");
	printf("  %-34s %10.1f %10.1f  M addresses/CPU-s, batches of %u\n",
	       "reader alone (nothing writes)", c->reader_mops, d->reader_mops,
	       s->batch);
	printf("  %-34s %10.1f %10s  M addresses/CPU-s, %.1f k publishes/s; "
	       "%s must stop its writer\n", "reader while a writer publishes",
	       c->reader_writer_mops, "-", c->writer_kops, peer);
	printf("  wrong answers under the writer: %" PRIu64
	       "; answers that differ from %s: %zu\n", c->reader_errors, peer,
	       bad);

	printf(" targets (%s):\n", s->name);
	if (s->bytes == 4) {
		bound("single look-up / rte_lpm_lookup", c->lookup_ns / d->lookup_ns, 3.0);
		bound("batched / rte_lpm_lookup_bulk", c->bulk_ns / d->bulk_ns, 2.0);
		bound("memory (RSS) / rte_lpm's", c->rss_mib / d->rss_mib, 0.25);
	} else {
		bound("single look-up / rte_lpm6_lookup", c->lookup_ns / d->lookup_ns, 1.0);
		bound("batched / rte_lpm6_lookup_bulk_func", c->bulk_ns / d->bulk_ns, 0.7);
		bound("memory (RSS) / rte_lpm6's", c->rss_mib / d->rss_mib, 0.5);
	}
	printf("  %-46s %7.2f us (target <= 2 us)    %s\n",
	       "publish one route through a cell, p50", c->publish_p50_us,
	       c->publish_p50_us >= 0 && c->publish_p50_us <= 2.0 ? "PASS" : "MISS");
	if (c->publish_p50_us >= 0 && c->publish_p50_us <= 2.0)
		passed++;
	else
		missed++;
	if (lpm6_add_us > 0)
		bound("whole-table load per route / rte_lpm6_add", c->load_us / lpm6_add_us, 0.5);
	printf("  %-46s %7s   %s\n", "reader correct under a flat-out writer",
	       c->reader_errors == 0 && c->reader_writer_mops > 0 ? "yes" : "NO",
	       c->reader_errors == 0 && c->reader_writer_mops > 0 ? "PASS" : "MISS");
	if (c->reader_errors == 0 && c->reader_writer_mops > 0)
		passed++;
	else
		missed++;
	return bad == 0 ? 0 : -1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: lpm-bench [--geoip-dir DIR] [--synthetic N] [--family 4|6]\n"
		"                 [--addresses N] [--batch N] [--reps N] [--seconds S]\n"
		"                 [--quick]\n");
}

static unsigned long number(const char *opt, const char *text,
			    unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v = strtoul(text ? text : "", &end, 10);

	if (text == NULL || end == text || *end || v < min || v > max) {
		fprintf(stderr, "lpm-bench: %s: expected a number in [%lu, %lu]\n",
			opt, min, max);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	const char *geoip_dir = GEOIP_DEFAULT_DIR;
	size_t synthetic = 0, naddrs = 1000000;
	unsigned batch = 16, families = 3;
	int reps = 5;
	double seconds = 1.0;
	char cpu[256];

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--geoip-dir") == 0 && v) {
			geoip_dir = v;
			i++;
		} else if (strcmp(a, "--synthetic") == 0) {
			synthetic = number(a, v, 1000, 5000000);
			i++;
		} else if (strcmp(a, "--family") == 0) {
			families = number(a, v, 4, 6) == 4 ? 1 : 2;
			i++;
		} else if (strcmp(a, "--addresses") == 0) {
			naddrs = number(a, v, 1000, 100000000);
			i++;
		} else if (strcmp(a, "--batch") == 0) {
			batch = (unsigned)number(a, v, 1, 256);
			i++;
		} else if (strcmp(a, "--reps") == 0) {
			reps = (int)number(a, v, 1, 64);
			i++;
		} else if (strcmp(a, "--seconds") == 0 && v) {
			seconds = atof(v);
			i++;
		} else if (strcmp(a, "--quick") == 0) {
			naddrs = 200000;
			reps = 3;
			seconds = 0.3;
		} else if (strcmp(a, "--help") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}

	cpu_model(cpu, sizeof(cpu));
	printf("lpm-bench: cowmap prefix tables vs DPDK rte_lpm/rte_lpm6\n");
	printf("CPU: %s, %ld online; load average %s; %d timed passes "
	       "(median), batches of %u\n", cpu, sysconf(_SC_NPROCESSORS_ONLN),
	       load_average(), reps, batch);
	printf("Look-ups, loads, adds and reader rates in on-CPU time of the "
	       "thread; publishes in wall-clock time.\n");
	fflush(stdout);

	int status = 0;
	double lpm6_add_us = -1;
	struct lpm_set sets[2];
	struct lpm_figures figs[2][2];

	memset(sets, 0, sizeof(sets));
	memset(figs, 0, sizeof(figs));

	/* IPv6 first: its rte_lpm6_add figure is the yardstick of both loads. */
	for (int k = 1; k >= 0; k--) {
		struct lpm_set *s = &sets[k];

		if (!(families & (1u << k)))
			continue;
		if (make_set(s, k ? 128 : 32, geoip_dir, synthetic, naddrs) < 0) {
			fprintf(stderr, "lpm-bench: out of memory\n");
			status = 1;
			break;
		}
		s->batch = batch;
		s->reps = reps;
		s->seconds = seconds;
		for (int side = 0; side < 2; side++) {
			struct lpm_figures *f = &figs[k][side];

			f->answers = calloc(naddrs, sizeof(uint32_t));
			f->answers_bulk = calloc(naddrs, sizeof(uint32_t));
			if (!f->answers || !f->answers_bulk) {
				status = 1;
				break;
			}
		}
		if (status)
			break;
		/*
		 * cowmap's table is built first, in this process, so that its
		 * RSS growth is its own; DPDK's in a child that times both
		 * sides' look-ups in turns; then cowmap's cell figures.
		 */
		struct lpm_pass pass;
		struct cowmap *t = lpm_cowmap_build(s, &figs[k][0], &pass);

		if (t == NULL || lpm_dpdk_run(s, &figs[k][1], &pass, argv[0]) < 0) {
			status = 1;
			break;
		}
		figs[k][0].lookup_ns = pass.single_ns;
		figs[k][0].bulk_ns = pass.bulk_ns;
		if (lpm_cowmap_cell(s, t, &figs[k][0]) < 0) {	/* takes t */
			status = 1;
			break;
		}
		if (k == 1)
			lpm6_add_us = figs[1][1].add_us;
		if (report(s, &figs[k][0], &figs[k][1], lpm6_add_us) < 0)
			status = 1;
		fflush(stdout);
	}
	printf("\ntargets: %u passed, %u missed\n", passed, missed);
	for (int k = 0; k < 2; k++) {
		if (!(families & (1u << k)))
			continue;
		for (int side = 0; side < 2; side++) {
			free(figs[k][side].answers);
			free(figs[k][side].answers_bulk);
		}
		free(sets[k].addrs);
		rib_free(&sets[k].rib);
	}
	return status;
}
