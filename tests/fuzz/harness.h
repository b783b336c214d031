/*
 * harness.h - what the fuzz harnesses (fuzz_ops.c for maps, fuzz_prefix.c
 * for prefix tables) share: the input being decoded, the operation that
 * runs, the report that ends a run when a check fails, and the allocation
 * failure armed for the next operation.
 */
#ifndef COWMAP_FUZZ_HARNESS_H
#define COWMAP_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fz_run {
	const char *harness;	/* names the reports */
	const uint8_t *in;
	size_t len, pos;
	unsigned op_no;
	const char *op_name;	/* NULL while setting up */
	long armed;		/* k: the next operation's allocation #k+1
				 * fails; -1 for none */
	bool trace;		/* FUZZ_OPS_TRACE is set */
};

/* The run in progress (reset by fz_start() for every input). */
extern struct fz_run fz;

/* Start decoding @data for @harness: no operation yet, nothing armed. */
void fz_start(const char *harness, const uint8_t *data, size_t size);

/* The next input byte; 0 past the end. */
uint8_t fz_rd(void);
bool fz_input_left(void);

/*
 * Print what went wrong, with the operation and @line, and abort():
 * libFuzzer, or the replay program under make check, reports the crash.
 */
__attribute__((noreturn, format(printf, 2, 3))) void
fz_fail(int line, const char *fmt, ...);

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		if (!(cond))                                                 \
			fz_fail(__LINE__, __VA_ARGS__);                      \
	} while (0)

/* One line on stderr about the current operation, if tracing. */
__attribute__((format(printf, 1, 2))) void fz_trace(const char *fmt, ...);

/* Make the armed allocation fail from here on (cm_test_fail_after), or
 * stop failing allocations. */
void fz_arm(void);
void fz_disarm(void);

#endif
