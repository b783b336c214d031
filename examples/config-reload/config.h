/*
 * config.h - a key = value configuration file held in cowmap versions.
 *
 * The running configuration is one immutable cowmap version published in
 * a cell.  Every value is a malloc'd NUL-terminated string owned by the map
 * (options.value_free frees it once no version and no reader can reach it).
 * Besides the settings of the file, each version holds its own generation
 * under CONFIG_GENERATION_KEY, so a reader that loads one version reads the
 * generation and the settings of the same configuration.
 *
 * File format:
 *
 *     # a comment: '#' as the first non-blank character of a line
 *     listen.backlog = 128
 *     greeting       = hello, world     # not a comment: values may hold '#'
 *
 * Whitespace around keys and values is trimmed; blank lines are ignored.
 * Keys are made of letters, digits and "._-:/" and must not start with
 * "__" (reserved for entries the program adds, like the generation).  A
 * key may appear once per file.  Values may be empty.
 */
#ifndef CONFIG_RELOAD_CONFIG_H
#define CONFIG_RELOAD_CONFIG_H

#include <cowmap.h>

#include <stdint.h>
#include <stdio.h>

/* The entry of every version that says which generation it is. */
#define CONFIG_GENERATION_KEY "__generation"

/* Room for "file:line: what went wrong". */
#define CONFIG_ERROR_MAX 512

/* What a successful reload did. */
struct config_reload_result {
	uint64_t generation;		/* the generation now published */
	size_t added, removed, changed;	/* settings, the generation aside */
};

/*
 * config_empty - generation 0: an empty version whose options make the map
 * own its values (they are freed with free()).  Every later generation is
 * derived from it, so all of them share its hash seed and cowmap_diff()
 * compares them by structure.  Returns a new reference, or NULL with errno.
 */
struct cowmap *config_empty(void);

/*
 * config_generation - the generation stored in @cfg (0 when it has none).
 * @cfg must stay alive meanwhile: a reference, or the read-side critical
 * section it was loaded in.
 */
uint64_t config_generation(const struct cowmap *cfg);

/*
 * config_check_file - parse @path and discard the result.
 * Returns 0 if the file is valid, -1 with "file:line: reason" (or
 * "file: reason") in @err otherwise.
 */
int config_check_file(const char *path, char err[CONFIG_ERROR_MAX]);

/*
 * config_reload - parse @path and publish it in @cell as the next
 * generation.
 *
 * The new version is built with a transaction on top of the current one:
 * settings whose value did not change keep their value (and the subtrees
 * around them stay shared), so cowmap_diff() reports exactly the settings
 * that changed.  Each of them is written to @log (NULL: only counted).
 *
 * On success returns 0 and fills @res.  On a malformed file, or when memory
 * runs out, returns -1 with the reason in @err, and the cell keeps the
 * configuration it had: nothing is published.  May be called from several
 * threads at once (the cell's update is atomic); the calling thread must
 * be registered with urcu-memb and must not be inside a read-side section.
 */
int config_reload(struct cowmap_cell *cell, const char *path, FILE *log,
		  struct config_reload_result *res,
		  char err[CONFIG_ERROR_MAX]);

#endif /* CONFIG_RELOAD_CONFIG_H */
