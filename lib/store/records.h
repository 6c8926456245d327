/*
 * lib/store: records, text values under text keys in one named database of
 * a state store's environment, written by the store's commits (store/hook.h).
 * What a role daemon keeps beside its node's state: it commits with the
 * node's own records in one transaction, so that, say, "this day was sent"
 * and the request that sends it become durable together or not at all.
 * Keys sort bytewise; a key is 1 to 511 bytes.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_RECORDS_H
#define TSYNC_STORE_RECORDS_H

#include <stddef.h>

#include "store/store.h"
#include "util/util.h"

struct records;

/*
 * Opens (creating it if needed) the database `name` in the store `s`,
 * borrowed until records__close(). 0, -EINVAL, -ENOSPC (no hook slot
 * left), -ENOMEM or TSYNC_ESTORE.
 */
int records__open(struct store *s, const char *name, const struct logger *log, struct records **ret);
/* Forgets what is staged (commit the store first to keep it) and detaches
 * from the store, which must still be open. Accepts NULL. */
void records__close(struct records *r);

/*
 * Stages `value` under `key` (both copied; `value` NULL stages the key's
 * deletion), written by the store's next commit. A later stage of the same
 * key replaces it. 0, -EINVAL, -ENAMETOOLONG or -ENOMEM.
 */
int records__put(struct records *r, const char *key, const char *value);

/*
 * The value of `key` (malloc()ed, into *value): staged if it is, else
 * committed. 0, -ENOENT, -ENOMEM or TSYNC_ESTORE.
 */
int records__get(struct records *r, const char *key, char **value);

/*
 * Calls fn for every committed record with from <= key < to (`to` NULL: no
 * upper bound), in key order; key and value are borrowed for the call. fn
 * returns 0 to go on, anything else to stop. fn must not commit. 0, -ENOMEM
 * or TSYNC_ESTORE.
 */
typedef int (*records_fn)(void *ud, const char *key, const char *value);
int records__scan(struct records *r, const char *from, const char *to, records_fn fn, void *ud);

/* Records committed now (entries of the database), and staged changes. */
size_t records__count(struct records *r);
size_t records__staged(const struct records *r);

#endif /* TSYNC_STORE_RECORDS_H */
