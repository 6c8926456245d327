/*
 * daemons/common: a daemon's state directory at start-up (issue 12).
 *
 * A daemon must never start silently from empty when its state directory
 * held state before: an owner would hand out boots and versions its users
 * have already seen, and pushd would start a stream the collector refuses.
 * LMDB cannot tell "never made" from "lost" (it makes a missing data.mdb),
 * so the daemon leaves a marker, STATEDIR_MARKER, next to its environments
 * once they were first made and committed. An environment missing from a
 * marked directory is a loss to recover with thingsync-dr, not a first start.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_DAEMON_STATEDIR_H
#define TSYNC_DAEMON_STATEDIR_H

#include <stdbool.h>
#include <stddef.h>

#define STATEDIR_MARKER "thingsync-state"
/* The exit status of a daemon that refuses its state (thingsd(8), thingsync-pushd(8)). */
#define STATEDIR_EXIT_UNUSABLE 4

/* Whether DIR/STATEDIR_MARKER exists. */
bool statedir__marked(const char *dir);

/*
 * Writes DIR/STATEDIR_MARKER if it is not there, durably (a temporary file,
 * fsync, rename, fsync of the directory), naming `controller` and the
 * environments it marks. Call it once every environment is open and has
 * committed. 0 or -errno.
 */
int statedir__mark(const char *dir, const char *controller, const char *envs);

/*
 * In a marked `dir`, whether the LMDB environment `env_dir` (DIR itself, or
 * a folder inside it) is there: a data.mdb of at least one page. 0 (there,
 * or `dir` is not marked: a first start), or -ENOENT with `why` saying what
 * is missing.
 */
int statedir__check_env(const char *dir, const char *env_dir, char *why, size_t whylen);

/*
 * The commands to run, as one line: "run: thingsync-dr check -c CONF -n NAME
 * -s DIR, then thingsync-dr recover ... --collector URL (thingsync-dr(8));
 * or delete DIR/thingsync-state to start from empty on purpose".
 */
void statedir__hint(char *buf, size_t len, const char *conf, const char *controller, const char *dir);

#endif
