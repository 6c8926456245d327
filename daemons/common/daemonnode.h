/*
 * daemons/common: the node of a role daemon (thingsync-pushd, -recoveryd,
 * -forensicd), set up the same way by each: its state directory made and
 * checked (statedir.h), a libevent base, the tsync_node in it with the
 * common options (daemonopt.h), and the refusal of a state directory that
 * lost what it held. The daemon adds its own environments and handlers.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_DAEMON_DAEMONNODE_H
#define TSYNC_DAEMON_DAEMONNODE_H

#include <stdbool.h>

#include <thingsync/thingsync.h>

#include "daemonopt.h"

struct event_base;
struct logger;

/*
 * Logs "state unusable: WHY; not starting: run: thingsync-dr ..." to `log`,
 * sets `*unusable` (the daemon then exits with STATEDIR_EXIT_UNUSABLE).
 * @return TSYNC_ESTORE, for `return daemonnode__refuse(...)`.
 */
int daemonnode__refuse(const struct daemonopt *d, const struct logger *log, const char *why, bool *unusable);

/*
 * Makes d->state_dir (mode 0700) if it is missing; checks the environments
 * DIR/node and DIR/ENV for each of `envs` (NULL-terminated, may be NULL)
 * against the state directory's marker; makes `*base` if it is NULL; starts
 * the node of d->controller in `site` on `*base`, its store in DIR/node,
 * logging through log->fn at d->log_level; and sets log->prefix to the
 * node's name. A missing environment or a node store that cannot be opened
 * is refused (daemonnode__refuse). `site` is borrowed for the node's life.
 * @return 0, TSYNC_ESTORE (refused), or a negative error (logged).
 */
int daemonnode__start(const struct daemonopt *d, const tsync_site *site, struct logger *log,
                      const char *const *envs, struct event_base **base, tsync_node **node,
                      bool *unusable);

/*
 * Once every environment is open and committed: the state directory's
 * marker (statedir__mark) naming `envs` ("node", "node, journal").
 * @return 0 or -errno (logged).
 */
int daemonnode__mark(const struct daemonopt *d, const struct logger *log, const char *name, const char *envs);

#endif
