/*
 * lib/cumul: the owner's cumulative statistics of its things, per day (seed
 * 002, "cum"). Pure bookkeeping over times the caller passes in (the node's
 * realtime clock, or a test's), so a day can be replayed exactly; days are
 * cut at local midnight of the site's `timezone`. Persisted through the
 * state store ("cumuls"), staged by cumul__flush() and committed with the
 * node's state. The JSON it answers is documented in thingsync-cumul(7).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_CUMUL_H
#define TSYNC_CUMUL_H

#include <stdbool.h>
#include <stdint.h>

#include <thingsync/common.h>

#include "site/site.h"
#include "store/store.h"
#include "util/util.h"

/* Distinct string values counted per thing and day; the rest is "other". */
#define CUMUL_MAX_STRINGS 16
/* Date labels are "YYYY-MM-DD". */
#define CUMUL_DATE_LEN 10

struct cumul;

/*
 * The cumuls of the things controller `me` owns. `site`, `store` (may be
 * NULL: kept in memory only) and `log` are borrowed and must outlive it.
 * Nothing is read until cumul__start(). 0, -EINVAL or -ENOMEM.
 */
int cumul__new(const struct tsync_site *site, uint32_t me, struct store *store, const struct logger *log,
               struct cumul **ret);
void cumul__free(struct cumul *c); /* accepts NULL */

/*
 * Loads what the store kept and continues: the day that was open goes on,
 * the time since the last checkpoint (the controller was off) counts as
 * unknown, and every day that ended meanwhile is closed. Every thing is then
 * unknown until cumul__value() says otherwise. 0, -ENOMEM or TSYNC_ESTORE.
 */
int cumul__start(struct cumul *c, int64_t now_us);

/* The owner's value of thing index `thing` is `v` from `now_us` on; NULL or
 * a NONE value: no value (a driver that cannot read it). Same value again:
 * not a change. Things this controller does not own are ignored. */
void cumul__value(struct cumul *c, uint32_t thing, const tsync_value *v, int64_t now_us);
/* A pulse of `ms` on an owned thing. */
void cumul__pulse(struct cumul *c, uint32_t thing, uint32_t ms, int64_t now_us);

/* Closes every day that ended by `now_us` (local midnight). Returns how many. */
int cumul__tick(struct cumul *c, int64_t now_us);
/* When the open day ends (local midnight), microseconds since the epoch. */
int64_t cumul__day_end(const struct cumul *c);
/* The open day's label. Borrowed, valid until the next call that closes a day. */
const char *cumul__today(const struct cumul *c);

/*
 * The seed's reset ({"type":"cum"}): closes the open day now, unless a
 * reset closed today's date already (the open day is then tomorrow's),
 * so resets repeated during one day close it once. With `day` (the
 * forensics role's {"type":"cum","day":DATE}), only the open day of that
 * date is closed: a reset that arrives after midnight closed DATE already
 * closes nothing. `*closed` receives the label of the day closed, or ""
 * when nothing was. 1 if closed, 0 if not.
 */
int cumul__reset(struct cumul *c, int64_t now_us, const char *day, char closed[CUMUL_DATE_LEN + 1]);

/*
 * A thing's cumul as JSON text (malloc()ed, into *json): of the open day up
 * to `now_us` (`day` NULL or today's label), or of a closed day by label.
 * 0; TSYNC_EUNKNOWN_THING; TSYNC_ENOT_USED (not owned here); TSYNC_EVALUE
 * (no such day kept); -ENOMEM.
 */
int cumul__get(struct cumul *c, const char *thing, const char *day, int64_t now_us, char **json);

/*
 * Handles a "cum" request (the whole message as JSON text): with "fld", the
 * thing's cumul (`"day"` optional), answered {"type":"cum","fld":..,"cum":..};
 * without, the reset, answered {"type":"cum","closed":DATE or null,"day":OPEN}.
 * 0, the codes of cumul__get(), TSYNC_ECMD_ARGS (malformed), -ENOMEM.
 */
int cumul__request(struct cumul *c, const char *req_json, int64_t now_us, char **result);

/* Stages into the store what changed since the last flush, and the
 * checkpoint `now_us` (the controller was alive then). 0 or a store error. */
int cumul__flush(struct cumul *c, int64_t now_us);
/* Whether anything changed since the last flush. */
bool cumul__dirty(const struct cumul *c);

/*
 * Local midnight that begins the day containing `t_us`, plus `days` days, in
 * zone `tz` (NULL: the process's TZ), and that day's label. 0 or -ENOMEM.
 */
int cumul__midnight(const char *tz, int64_t t_us, int days, int64_t *midnight_us,
                    char label[CUMUL_DATE_LEN + 1]);

#endif /* TSYNC_CUMUL_H */
