/*
 * selftest.c - config-reload --selftest: the parser and the reload path,
 * without sockets.
 *
 * Valid files are loaded into a cell and their settings checked; then
 * malformed files must be refused with "file:line: reason" while the cell
 * keeps publishing the very same version as before.
 */
#include <urcu/urcu-memb.h>
#include <cowmap.h>

#include "config.h"
#include "modes.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned checks, failures;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		checks++;                                                    \
		if (!(cond)) {                                               \
			failures++;                                          \
			fprintf(stderr, "selftest: %s:%d: ", __FILE__,      \
				__LINE__);                                   \
			fprintf(stderr, __VA_ARGS__);                        \
			fputc('\n', stderr);                                 \
		}                                                            \
	} while (0)

static char dir[256], path[300];

/* Replace the test file by @len bytes of @text. */
static bool write_file(const char *text, size_t len)
{
	FILE *f = fopen(path, "w");

	if (f == NULL)
		return false;
	bool ok = fwrite(text, 1, len, f) == len;

	return fclose(f) == 0 && ok;
}

/* The current value of @key as a new string (NULL when absent). */
static char *current_value(struct cowmap_cell *cell, const char *key)
{
	void *value;
	char *copy = NULL;

	urcu_memb_read_lock();
	if (cowmap_get(cowmap_cell_load(cell), key, strlen(key), &value) == 1)
		copy = strdup(value);
	urcu_memb_read_unlock();
	return copy;
}

static void check_value(struct cowmap_cell *cell, const char *key,
			const char *expected)
{
	char *got = current_value(cell, key);

	if (expected == NULL)
		CHECK(got == NULL, "%s: expected absent, got \"%s\"", key, got);
	else
		CHECK(got && strcmp(got, expected) == 0,
		      "%s: expected \"%s\", got \"%s\"", key, expected,
		      got ? got : "(absent)");
	free(got);
}

static uint64_t generation(struct cowmap_cell *cell)
{
	struct cowmap *snap = cowmap_cell_snapshot(cell);
	uint64_t gen = config_generation(snap);

	cowmap_release(snap);
	return gen;
}

struct bad_file {
	const char *text;
	size_t len;		/* 0: strlen(text) */
	unsigned line;		/* expected in the message; 0: none */
	const char *reason;	/* expected in the message */
};

static const struct bad_file bad_files[] = {
	{ "a = 1\nno equals sign here\n", 0, 2, "expected \"key = value\"" },
	{ "a = 1\n   = 2\n", 0, 2, "empty key" },
	{ "# ok\n\nlog level = debug\n", 0, 3, "invalid character ' '" },
	{ "a = 1\nb = 2\n\n# again:\na = 3\n", 0, 5,
	  "duplicate key \"a\" (first set on line 1)" },
	{ "__generation = 99\n", 0, 1, "reserved" },
	{ "a = 1\nb = x\0y\n", 14, 2, "NUL byte" },
	{ "a = 1\nbad;key = 2\n", 0, 2, "invalid character ';'" },
};

int run_selftest(void)
{
	struct config_reload_result res;
	char err[CONFIG_ERROR_MAX], prefix[400];
	const char *tmp = getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/config-reload-test.XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		perror("selftest: mkdtemp");
		return EXIT_FAILURE;
	}
	snprintf(path, sizeof(path), "%s/test.conf", dir);

	struct cowmap *empty = config_empty();
	struct cowmap_cell *cell = empty ? cowmap_cell_new(empty, NULL) : NULL;

	if (cell == NULL) {
		perror("selftest: cowmap_cell_new");
		rmdir(dir);
		return EXIT_FAILURE;
	}

	/* --- A valid file: comments, blanks, trimming, '=' and '#' in values */
	static const char first[] =
		"# service settings\n"
		"\n"
		"   listen.port   =   8080   \n"
		"greeting = hello, world # not a comment\r\n"
		"url=http://example.org/?a=b\n"
		"empty =\n"
		"\t# indented comment\n"
		"workers = 4\n";

	CHECK(write_file(first, strlen(first)), "cannot write %s", path);
	CHECK(config_check_file(path, err) == 0, "check: %s", err);
	CHECK(config_reload(cell, path, NULL, &res, err) == 0, "reload: %s", err);
	CHECK(res.generation == 1 && res.added == 5 && res.removed == 0 &&
	      res.changed == 0, "first load: generation %" PRIu64
	      ", %zu/%zu/%zu", res.generation, res.added, res.removed,
	      res.changed);
	check_value(cell, "listen.port", "8080");
	check_value(cell, "greeting", "hello, world # not a comment");
	check_value(cell, "url", "http://example.org/?a=b");
	check_value(cell, "empty", "");
	check_value(cell, "workers", "4");
	check_value(cell, CONFIG_GENERATION_KEY, "1");

	/* --- A second file: one change, one addition, one removal ---------- */
	static const char second[] =
		"listen.port = 8080\n"
		"greeting = hello, world # not a comment\n"
		"url = http://example.org/?a=b\n"
		"workers = 8\n"
		"timeout.ms = 250\n";
	struct cowmap *before = cowmap_cell_snapshot(cell);

	CHECK(write_file(second, strlen(second)), "cannot write %s", path);
	CHECK(config_reload(cell, path, NULL, &res, err) == 0, "reload: %s", err);
	CHECK(res.generation == 2 && res.added == 1 && res.removed == 1 &&
	      res.changed == 1, "second load: generation %" PRIu64
	      ", %zu/%zu/%zu", res.generation, res.added, res.removed,
	      res.changed);
	check_value(cell, "workers", "8");
	check_value(cell, "timeout.ms", "250");
	check_value(cell, "empty", NULL);

	/* An unchanged setting keeps its very string: the versions share it. */
	struct cowmap *after = cowmap_cell_snapshot(cell);
	void *v1 = NULL, *v2 = NULL;

	cowmap_get(before, "greeting", 8, &v1);
	cowmap_get(after, "greeting", 8, &v2);
	CHECK(v1 != NULL && v1 == v2, "unchanged value was copied");
	cowmap_release(before);

	/* --- Malformed files: refused with file:line, nothing published ---- */
	for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		const struct bad_file *b = &bad_files[i];
		size_t len = b->len ? b->len : strlen(b->text);

		CHECK(write_file(b->text, len), "cannot write %s", path);
		snprintf(prefix, sizeof(prefix), "%s:%u: ", path, b->line);

		CHECK(config_check_file(path, err) < 0,
		      "bad file %zu accepted by --check", i);
		CHECK(strncmp(err, prefix, strlen(prefix)) == 0 &&
		      strstr(err, b->reason) != NULL,
		      "bad file %zu: message \"%s\", expected \"%s%s\"", i, err,
		      prefix, b->reason);

		CHECK(config_reload(cell, path, NULL, &res, err) < 0,
		      "bad file %zu was published", i);
		CHECK(strncmp(err, prefix, strlen(prefix)) == 0,
		      "bad file %zu: reload message \"%s\"", i, err);

		urcu_memb_read_lock();
		const struct cowmap *cur = cowmap_cell_load(cell);

		CHECK(cur == after, "bad file %zu replaced the version", i);
		urcu_memb_read_unlock();
	}

	/* A missing file names the file and the reason. */
	unlink(path);
	CHECK(config_reload(cell, path, NULL, &res, err) < 0,
	      "missing file was loaded");
	snprintf(prefix, sizeof(prefix), "%s: No such file", path);
	CHECK(strncmp(err, prefix, strlen(prefix)) == 0,
	      "missing file: message \"%s\"", err);

	/* The running configuration is the one of generation 2, whole. */
	CHECK(generation(cell) == 2, "generation moved to %" PRIu64,
	      generation(cell));
	check_value(cell, "workers", "8");
	check_value(cell, "timeout.ms", "250");
	cowmap_release(after);

	cowmap_cell_free(cell);	/* frees every string, after a barrier */
	rmdir(dir);

	if (failures) {
		fprintf(stderr, "config-reload selftest: %u of %u checks failed\n",
			failures, checks);
		return EXIT_FAILURE;
	}
	printf("config-reload selftest: %u checks passed\n", checks);
	return EXIT_SUCCESS;
}
