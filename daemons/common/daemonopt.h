/*
 * daemons/common: the command line and start-up that the role daemons share.
 *
 * Every role daemon takes --site/-s, --controller/-c, --state-dir/-d,
 * --bind, --http, --log-level/-v and --help/-h with the same meaning. Its
 * parse_args keeps its own options in its own switch and hands every other
 * getopt result to daemonopt__handle() from the switch's default case; the
 * daemon's option string and table (DAEMONOPT_SHORT, DAEMONOPT_LONG_*) say
 * which of the common options it accepts, so a daemon without a state
 * directory simply leaves -d out.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_DAEMON_DAEMONOPT_H
#define TSYNC_DAEMON_DAEMONOPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/thingsync.h>

struct event;
struct event_base;
struct logger;

/* getopt values of the common long-only options: above a daemon's own (256...). */
enum { DAEMONOPT_BIND = 0x1000, DAEMONOPT_HTTP };

/* The common short options: -s, -c, -d, -v and -h. */
#define DAEMONOPT_SHORT "s:c:d:v:h"

/*
 * Entries of a daemon's `struct option` table, one macro per group; the
 * table ends with DAEMONOPT_LONG_END.
 */
// clang-format off
#define DAEMONOPT_LONG_SITE                                                    \
	{"site", required_argument, NULL, 's'},                                \
	{"controller", required_argument, NULL, 'c'}
#define DAEMONOPT_LONG_STATE {"state-dir", required_argument, NULL, 'd'}
#define DAEMONOPT_LONG_NET                                                     \
	{"bind", required_argument, NULL, DAEMONOPT_BIND},                     \
	{"http", required_argument, NULL, DAEMONOPT_HTTP}
#define DAEMONOPT_LONG_END                                                     \
	{"log-level", required_argument, NULL, 'v'},                           \
	{"help", no_argument, NULL, 'h'},                                      \
	{NULL, 0, NULL, 0}
// clang-format on

struct daemonopt {
	const char *name;  /* the program's name for messages, borrowed (static) */
	const char *usage; /* the --help text, borrowed (static) */
	/* Borrowed from argv. NULL when not given. */
	const char *site_path;
	const char *controller;
	const char *state_dir;
	const char *bind_host;
	const char *http_listen; /* NULL: the controller's tcp_port, if any */
	tsync_log_level log_level;
};

/*
 * Sets the defaults: no paths, log level info. `name` and `usage` are
 * borrowed for the life of `d` (string literals).
 */
void daemonopt__init(struct daemonopt *d, const char *name, const char *usage);

/*
 * One getopt_long result `c` that the daemon's own switch did not take, with
 * its `arg` (optarg). --help prints the usage on stdout and exits 0; an
 * unknown option prints the usage on stderr.
 * @return 0 (taken), or -EINVAL (a message is printed on stderr).
 */
int daemonopt__handle(struct daemonopt *d, int c, const char *arg);

/*
 * After the getopt loop: no operand is left (`optind == argc`) and the
 * required options were given, --site always and, when `node` (a daemon
 * that runs a node), --controller and --state-dir too.
 * @return 0, or -EINVAL with a message and the usage on stderr.
 */
int daemonopt__finish(const struct daemonopt *d, int optind, int argc, bool node);

/*
 * A decimal number in [min, max] in `s`, nothing else (no sign, no
 * spaces). Writes `*out` only on success.
 * @return 0, or -EINVAL (nothing printed).
 */
int daemonopt__uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/*
 * Prints "NAME: bad option value: ARG" on stderr.
 * @return -EINVAL, for `return daemonopt__bad(...)`.
 */
int daemonopt__bad(const struct daemonopt *d, const char *arg);

/*
 * Loads d->site_path into `*ret` (owned by the caller, tsync_site_free()).
 * On failure the file's errors go to stderr, one per line, or the reason to
 * `log`. @return 0 or tsync_site_load()'s error.
 */
int daemonopt__load_site(const struct daemonopt *d, const struct logger *log, tsync_site **ret);

/*
 * Where the daemon's HTTP server listens: --http ADDR:PORT, or else the
 * host (--bind instead when `use_bind`) and tcp_port of the controller
 * `name` in `site`. `name` and `site` are borrowed for the call.
 * @return 1 with `host` and `*port` written; 0: no --http and no tcp_port
 *         (no server); -EINVAL: --http is not ADDR:PORT (logged to `log`).
 */
int daemonopt__http_addr(const struct daemonopt *d, const tsync_site *site, const char *name, bool use_bind,
                         const struct logger *log, char *host, size_t hostlen, uint16_t *port);

/* SIGINT and SIGTERM as libevent events that log and leave the loop. */
struct daemonsig {
	struct event_base *base;  /* borrowed */
	const struct logger *log; /* borrowed */
	struct event *ev[2];
};

/*
 * Starts `s`: on SIGINT or SIGTERM, "signal N: stopping" is logged to `log`
 * and `base`'s loop exits. `base` and `log` are borrowed until
 * daemonopt__signals_free(). @return 0 or -ENOMEM.
 */
int daemonopt__signals_start(struct daemonsig *s, struct event_base *base, const struct logger *log);

/* Frees the events of `s`; a zeroed or half-started `s` is fine. */
void daemonopt__signals_free(struct daemonsig *s);

#endif
