/*
 * replay.c - run the fuzz harness on stored inputs, without libFuzzer.
 *
 * `make check` builds this with the ordinary compiler and links it with
 * tests/fuzz/fuzz_ops.c and the library, so the seed corpus and every
 * regression input are replayed on each run, with or without clang.
 *
 *   replay [FILE | DIR]...
 *
 * With no arguments it replays $top_srcdir/tests/fuzz/corpus and
 * $top_srcdir/tests/fuzz/regressions (top_srcdir defaults to "."), which
 * is how the test harness runs it.  Directories are read one level deep;
 * names starting with "." or "README" are skipped.  A failing input
 * aborts the program (the harness checks with abort()), so the last
 * "replay: FILE" line printed names the culprit.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The inputs replayed by default, under $top_srcdir/tests/fuzz: the map
 * harness's, or another harness's when built with these defined. */
#ifndef REPLAY_CORPUS
#define REPLAY_CORPUS "corpus"
#endif
#ifndef REPLAY_REGRESSIONS
#define REPLAY_REGRESSIONS "regressions"
#endif

static unsigned replayed;

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0;

	if (f == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			unsigned char *p;

			cap = cap ? 2 * cap : 4096;
			p = realloc(buf, cap);
			if (p == NULL) {
				fclose(f);
				free(buf);
				fprintf(stderr, "replay: out of memory\n");
				return -1;
			}
			buf = p;
		}
		size_t got = fread(buf + len, 1, cap - len, f);

		len += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		fprintf(stderr, "replay: %s: read error\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	printf("replay: %s (%zu bytes)\n", path, len);
	fflush(stdout);
	/* A fresh copy of exactly the input's size, so that ASan catches a
	 * harness that reads past the end. */
	unsigned char *exact = malloc(len ? len : 1);

	if (exact == NULL) {
		free(buf);
		return -1;
	}
	if (len)
		memcpy(exact, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	replayed++;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_path(const char *path, int missing_ok)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		if (missing_ok && errno == ENOENT)
			return 0;
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path);

	DIR *d = opendir(path);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;

	if (d == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.' || strncmp(e->d_name, "README", 6) == 0)
			continue;
		if (n == cap) {
			char **p;

			cap = cap ? 2 * cap : 64;
			p = realloc(names, cap * sizeof(*p));
			if (p == NULL) {
				rc = -1;
				break;
			}
			names = p;
		}
		size_t len = strlen(path) + strlen(e->d_name) + 2;

		names[n] = malloc(len);
		if (names[n] == NULL) {
			rc = -1;
			break;
		}
		snprintf(names[n], len, "%s/%s", path, e->d_name);
		n++;
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);	/* stable order */
	for (size_t i = 0; i < n; i++) {
		if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode))
			rc = replay_file(names[i]);
		free(names[i]);
	}
	free(names);
	return rc;
}

int main(int argc, char **argv)
{
	int rc = 0;

	if (argc > 1) {
		for (int i = 1; i < argc && rc == 0; i++)
			rc = replay_path(argv[i], 0);
	} else {
		const char *top = getenv("top_srcdir");
		char path[4096];

		if (top == NULL || *top == '\0')
			top = ".";
		snprintf(path, sizeof(path), "%s/tests/fuzz/" REPLAY_CORPUS,
			 top);
		rc = replay_path(path, 0);
		if (rc == 0) {
			snprintf(path, sizeof(path),
				 "%s/tests/fuzz/" REPLAY_REGRESSIONS, top);
			rc = replay_path(path, 1);
		}
	}
	if (rc != 0)
		return 1;
	if (replayed == 0) {
		fprintf(stderr, "replay: no input found\n");
		return 1;
	}
	printf("%u passed, 0 failed\n", replayed);
	return 0;
}
