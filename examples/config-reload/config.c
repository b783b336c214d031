/*
 * config.c - parse key = value files and publish them as cowmap versions.
 *
 * A reload runs in four steps, and only the last one is visible to the
 * threads serving requests:
 *
 *   1. parse:   read the whole file; stop at the first malformed line and
 *               report "file:line: reason".  Nothing is touched yet.
 *   2. build:   a transaction on top of the current version sets what
 *               changed, deletes what disappeared and stamps the next
 *               generation.  Unchanged settings keep their value pointer,
 *               so the new version shares them with the old one.
 *   3. compare: cowmap_diff() lists the settings that changed; shared
 *               subtrees are skipped, so it costs about the change.
 *   4. publish: cowmap_cell_update() swaps the new version in atomically;
 *               readers see the old configuration or the new one, whole.
 *
 * Steps 2 to 4 run inside cowmap_cell_update(), under the cell's writer
 * lock, so two reloads at once (SIGHUP and RELOAD) cannot lose one's
 * changes; requests are not held up by that lock.
 *
 * The old version's memory (and the strings only it held) is freed by the
 * map after an RCU grace period, when no reader can still be using it.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* One "key = value" line of a file being loaded. */
struct setting {
	char *key;
	char *value;	/* malloc'd; NULL once a version took ownership */
	unsigned line;
};

/* A parsed file: its settings in file order, and an index of the keys. */
struct config_file {
	const char *path;
	struct setting *settings;
	size_t count, cap;
	/*
	 * key -> line number (stored in the value pointer).  A cowmap version
	 * is an ordinary map too: here it finds duplicate keys while parsing,
	 * and tells the build step which keys the file still has.
	 */
	struct cowmap *index;
};

/* options.value_free of the configuration: values are malloc'd strings. */
static void free_value(void *value, void *ctx)
{
	(void)ctx;
	free(value);
}

struct cowmap *config_empty(void)
{
	const struct cowmap_options opts = { .value_free = free_value };

	return cowmap_new(&opts);
}

uint64_t config_generation(const struct cowmap *cfg)
{
	void *value;

	if (cowmap_get(cfg, CONFIG_GENERATION_KEY,
		       strlen(CONFIG_GENERATION_KEY), &value) != 1)
		return 0;
	return strtoull(value, NULL, 10);
}

/* Keys starting with "__" belong to the program, never to the file. */
static bool is_reserved(const void *key, size_t len)
{
	return len >= 2 && memcmp(key, "__", 2) == 0;
}

static bool is_key_char(int c)
{
	return isalnum(c) || c == '_' || c == '.' || c == '-' || c == ':' ||
	       c == '/';
}

/* Format "path:line: reason" (line 0: "path: reason") into @err. */
__attribute__((format(printf, 4, 5)))
static int parse_error(char err[CONFIG_ERROR_MAX], const char *path,
		       unsigned line, const char *fmt, ...)
{
	va_list ap;
	int at = line > 0 ? snprintf(err, CONFIG_ERROR_MAX, "%s:%u: ", path, line)
			  : snprintf(err, CONFIG_ERROR_MAX, "%s: ", path);

	if (at >= 0 && at < CONFIG_ERROR_MAX) {	/* else: a truncated path */
		va_start(ap, fmt);
		vsnprintf(err + at, (size_t)(CONFIG_ERROR_MAX - at), fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void config_file_free(struct config_file *f)
{
	for (size_t i = 0; i < f->count; i++) {
		free(f->settings[i].key);
		free(f->settings[i].value);	/* NULL if a version owns it */
	}
	free(f->settings);
	cowmap_release(f->index);
	*f = (struct config_file){ 0 };
}

/* Trim the whitespace around [start, end) in place; returns the start. */
static char *trim(char *start, char *end)
{
	while (start < end && isspace((unsigned char)*start))
		start++;
	while (end > start && isspace((unsigned char)end[-1]))
		end--;
	*end = '\0';
	return start;
}

/*
 * Parse one line (without its newline) into @f; @index is the draft of
 * f->index.  Returns 0, or -1 with the reason in @err.
 */
static int parse_line(struct config_file *f, struct cowmap_txn *index,
		      char *line, size_t len, unsigned lineno,
		      char err[CONFIG_ERROR_MAX])
{
	if (strlen(line) != len)
		return parse_error(err, f->path, lineno, "NUL byte in line");

	char *text = trim(line, line + len);

	if (*text == '\0' || *text == '#')
		return 0;	/* blank line or comment */

	char *eq = strchr(text, '=');

	if (eq == NULL)
		return parse_error(err, f->path, lineno,
				   "expected \"key = value\", found \"%.40s\"",
				   text);

	char *value = trim(eq + 1, eq + 1 + strlen(eq + 1));
	char *key = trim(text, eq);
	size_t klen = strlen(key);

	if (klen == 0)
		return parse_error(err, f->path, lineno, "empty key");
	for (size_t i = 0; i < klen; i++)
		if (!is_key_char((unsigned char)key[i]))
			return parse_error(err, f->path, lineno,
					   "invalid character '%c' in key \"%.40s\"",
					   isprint((unsigned char)key[i]) ? key[i] : '?',
					   key);
	if (is_reserved(key, klen))
		return parse_error(err, f->path, lineno,
				   "key \"%.40s\": names starting with \"__\" are reserved",
				   key);

	void *first;

	if (cowmap_txn_get(index, key, klen, &first) == 1)
		return parse_error(err, f->path, lineno,
				   "duplicate key \"%.40s\" (first set on line %u)",
				   key, (unsigned)(uintptr_t)first);

	if (f->count == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 32;
		struct setting *grown = realloc(f->settings,
						cap * sizeof(*grown));

		if (grown == NULL)
			goto oom;
		f->settings = grown;
		f->cap = cap;
	}

	struct setting s = { .key = strdup(key), .value = strdup(value),
			     .line = lineno };

	if (s.key == NULL || s.value == NULL ||
	    cowmap_txn_set(index, key, klen, (void *)(uintptr_t)lineno) < 0) {
		free(s.key);
		free(s.value);
		goto oom;
	}
	f->settings[f->count++] = s;
	return 0;

oom:
	return parse_error(err, f->path, 0, "out of memory");
}

/*
 * Read the whole of @path into @f.  Returns 0, or -1 with "file:line:
 * reason" in @err and @f empty.
 */
static int config_parse(const char *path, struct config_file *f,
			char err[CONFIG_ERROR_MAX])
{
	*f = (struct config_file){ .path = path };

	FILE *in = fopen(path, "r");

	if (in == NULL)
		return parse_error(err, path, 0, "%s", strerror(errno));

	/* The index has no value_free: its values are line numbers. */
	struct cowmap *empty = cowmap_new(NULL);
	struct cowmap_txn *index = empty ? cowmap_txn_begin(empty) : NULL;
	char *line = NULL;
	size_t size = 0;
	unsigned lineno = 0;
	ssize_t len;
	int rc = 0;

	cowmap_release(empty);	/* the draft holds its own reference */
	if (index == NULL)
		rc = parse_error(err, path, 0, "out of memory");
	while (rc == 0 && (len = getline(&line, &size, in)) >= 0) {
		lineno++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		rc = parse_line(f, index, line, (size_t)len, lineno, err);
	}
	if (rc == 0 && ferror(in))
		rc = parse_error(err, path, 0, "read error: %s",
				 strerror(errno));
	free(line);
	fclose(in);

	if (rc == 0) {
		f->index = cowmap_txn_commit(index);	/* consumes index */
		if (f->index == NULL)
			rc = parse_error(err, path, 0, "out of memory");
	} else {
		cowmap_txn_abort(index);		/* NULL is fine */
	}
	if (rc != 0)
		config_file_free(f);
	return rc;
}

int config_check_file(const char *path, char err[CONFIG_ERROR_MAX])
{
	struct config_file f;

	if (config_parse(path, &f, err) < 0)
		return -1;
	config_file_free(&f);
	return 0;
}

/*
 * The version holding @f's settings as generation @generation, derived
 * from @current.  Values the new version takes are moved out of @f.
 * Returns a new reference, or NULL with errno set and @current untouched.
 */
static struct cowmap *config_build(const struct cowmap *current,
				   struct config_file *f, uint64_t generation)
{
	struct cowmap_txn *t = cowmap_txn_begin(current);
	const void *key;
	size_t len;
	int rc;

	if (t == NULL)
		return NULL;

	/* 1. The file's settings; unchanged ones keep the current string. */
	for (size_t i = 0; i < f->count; i++) {
		struct setting *s = &f->settings[i];
		void *old;

		len = strlen(s->key);
		if (cowmap_txn_get(t, s->key, len, &old) == 1 &&
		    strcmp(old, s->value) == 0)
			continue;
		rc = cowmap_txn_set(t, s->key, len, s->value);
		if (rc < 0)
			goto fail;
		s->value = NULL;	/* the map owns it now */
	}

	/* 2. Settings of the current version that the file no longer has. */
	struct cowmap_iter it;

	cowmap_iter_init(&it, current);
	while (cowmap_iter_next(&it, &key, &len, NULL)) {
		if (is_reserved(key, len) ||
		    cowmap_get(f->index, key, len, NULL) == 1)
			continue;
		rc = cowmap_txn_del(t, key, len);
		if (rc < 0)
			goto fail;
	}

	/* 3. The generation, read by clients together with the settings. */
	char *stamp = malloc(24);

	if (stamp == NULL) {
		rc = -ENOMEM;
		goto fail;
	}
	snprintf(stamp, 24, "%" PRIu64, generation);
	rc = cowmap_txn_set(t, CONFIG_GENERATION_KEY,
			    strlen(CONFIG_GENERATION_KEY), stamp);
	if (rc < 0) {
		free(stamp);
		goto fail;
	}
	return cowmap_txn_commit(t);

fail:
	/* Frees the values already moved into the draft (value_free). */
	cowmap_txn_abort(t);
	errno = -rc;
	return NULL;
}

struct diff_log {
	FILE *log;
	struct config_reload_result *res;
};

/* cowmap_diff() callback: count (and log) one changed setting. */
static int log_change(enum cowmap_change what, const void *key, size_t len,
		      void *old_value, void *new_value, void *ctx)
{
	struct diff_log *d = ctx;
	int klen = (int)len;
	const char *k = key;

	if (is_reserved(key, len))
		return 0;
	switch (what) {
	case COWMAP_ADDED:
		d->res->added++;
		if (d->log)
			fprintf(d->log, "config:   + %.*s = %s\n", klen, k,
				(char *)new_value);
		break;
	case COWMAP_REMOVED:
		d->res->removed++;
		if (d->log)
			fprintf(d->log, "config:   - %.*s (was %s)\n", klen, k,
				(char *)old_value);
		break;
	case COWMAP_CHANGED:
		d->res->changed++;
		if (d->log)
			fprintf(d->log, "config:   ~ %.*s: %s -> %s\n", klen, k,
				(char *)old_value, (char *)new_value);
		break;
	}
	return 0;
}

struct reload_job {
	struct config_file *file;
	const char *path;
	struct diff_log diff;
};

/*
 * cowmap_cell_update() calls this with the cell's writer lock held and
 * publishes what it returns.  Holding the lock only delays other reloads;
 * requests keep reading the current version meanwhile.
 */
static struct cowmap *reload_step(const struct cowmap *cur, void *arg)
{
	struct reload_job *job = arg;
	struct config_reload_result *res = job->diff.res;
	FILE *log = job->diff.log;
	struct cowmap *next = config_build(cur, job->file,
					   config_generation(cur) + 1);

	if (next == NULL)
		return NULL;	/* errno says why; nothing is published */

	/*
	 * Compare now, while @cur is still the current version: from here on
	 * nothing can fail, so what is logged is what gets published, and no
	 * reference to @cur is needed after the publish (one held past it
	 * would keep the old version's memory alive outside the cell's
	 * pending_bytes accounting).  The versions share all but the changed
	 * paths, so the diff costs about the size of the change.
	 */
	res->generation = config_generation(next);
	if (log)
		fprintf(log, "config: generation %" PRIu64 " from %s\n",
			res->generation, job->path);
	cowmap_diff(cur, next, log_change, &job->diff);
	if (log) {
		fprintf(log, "config: %zu added, %zu removed, %zu changed\n",
			res->added, res->removed, res->changed);
		fflush(log);
	}
	return next;
}

int config_reload(struct cowmap_cell *cell, const char *path, FILE *log,
		  struct config_reload_result *res,
		  char err[CONFIG_ERROR_MAX])
{
	struct config_file f;
	struct reload_job job = { .file = &f, .path = path,
				  .diff = { .log = log, .res = res } };

	*res = (struct config_reload_result){ 0 };
	if (config_parse(path, &f, err) < 0)
		return -1;

	int rc = cowmap_cell_update(cell, reload_step, &job);

	config_file_free(&f);	/* what the new version did not take */
	if (rc < 0) {
		*res = (struct config_reload_result){ 0 };
		return parse_error(err, path, 0, "cannot publish: %s",
				   strerror(-rc));
	}
	return 0;
}
