/*
 * lib/store: the history of a controller's own things (see
 * <thingsync/history.h>), one named database of the store's environment,
 * written by the store's commits:
 *   "history"  THING NUL                   -> 1 | trimmed through(8) | trimmed(8)
 *              THING NUL T(8) OB(8) VER(8) -> 1 | type(1) | payload (as in "values")
 * T is the time in microseconds since the epoch, big-endian with its sign
 * bit flipped, so the entries of a thing sort by time and a window is one
 * range scan; OB and VER, big-endian, make the key unique. Trimming deletes
 * a thing's first keys, its oldest, and notes the newest time it removed in
 * the thing's first record, which sorts before its entries.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_HISTORY_H
#define TSYNC_STORE_HISTORY_H

#include <stdbool.h>
#include <stdint.h>

#include <thingsync/history.h>

#include "store/store.h"
#include "util/util.h"

struct history;

/*
 * Opens the history in the store `s`, borrowed until history__close(): the
 * history writes through the store's commits. `lim` NULL: no bound. Reads
 * the counters of what an earlier run kept. 0, -EINVAL, -ENOSPC (no hook
 * slot left), -ENOMEM or TSYNC_ESTORE.
 */
int history__open(struct store *s, const tsync_history_limits *lim, const struct logger *log,
                  struct history **ret);
/* Forgets what is staged (commit the store first to keep it) and detaches
 * from the store, which must still be open. Accepts NULL. */
void history__close(struct history *h);
void history__set_limits(struct history *h, const tsync_history_limits *lim);
/* Bounds of one thing: `off` records nothing of it; a 0 in `lim` (or lim
 * NULL) takes the controller's bound. 0 or -ENOMEM. */
int history__set_thing(struct history *h, const char *thing, bool off, const tsync_history_limits *lim);
/* The clock of the age bound (default: CLOCK_REALTIME), for tests. */
void history__set_clock(struct history *h, int64_t (*now_us)(void *ud), void *ud);

/*
 * Stages one change (thing and string copied), written by the store's next
 * commit. A change whose (boot, version) is not newer than the thing's last
 * is ignored (the same value persisted again). 0, -EINVAL, -ENAMETOOLONG or
 * -ENOMEM.
 */
int history__record(struct history *h, const char *thing, int64_t time_us, uint64_t boot, uint64_t version,
                    const tsync_value *v);

int history__query(struct history *h, const char *thing, int64_t from_us, int64_t to_us, tsync_history_fn fn,
                   void *ud, tsync_history_window *out);
void history__stats(const struct history *h, tsync_history_stats *st);

#endif /* TSYNC_STORE_HISTORY_H */
