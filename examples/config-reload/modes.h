/*
 * modes.h - the self-contained modes of config-reload besides serving.
 */
#ifndef CONFIG_RELOAD_MODES_H
#define CONFIG_RELOAD_MODES_H

struct demo_options {
	double seconds;		/* how long the clients send requests */
	unsigned reloads;	/* reloads spread over that time (>= 100) */
	unsigned clients;	/* client threads, one connection each */
	unsigned workers;	/* server worker threads */
};

/*
 * run_demo - start the server in-process on an ephemeral port, load it from
 * client threads while reloading it, check every answer.  Returns the exit
 * status.  The calling thread must have blocked the server's signals
 * (server_block_signals()) before any thread was created, and be
 * registered with urcu-memb.
 */
int run_demo(const struct demo_options *opts);

/*
 * run_selftest - the parser's accepted and rejected inputs, and reloads of
 * malformed files that must keep the running configuration.  Returns the
 * exit status.  The calling thread must be registered with urcu-memb.
 */
int run_selftest(void);

#endif /* CONFIG_RELOAD_MODES_H */
