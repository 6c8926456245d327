/*
 * lib/store: LMDB, the only place that knows it. One environment per process
 * directory, named databases inside it:
 *   "meta"   key/value: "boot" -> uint64 (the boot counter)
 *   "values" thing name -> (version, owner boot, type, value): the last value
 *            of every thing this controller owns, so it survives restarts.
 * Writes are staged in memory and committed together by store__commit()
 * (group commit: one fsync per batch, not per message).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_H
#define TSYNC_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <thingsync/common.h>

#include "util/util.h"

struct store;

/*
 * Opens (creating if needed) the store in directory `dir` (created with mode
 * 0700 if missing). `map_size` 0 means the default (64 MiB).
 * 0, -errno, or TSYNC_ESTORE (errors logged through `log`, which is borrowed
 * and must outlive the store). -ENOTDIR if `dir` is not a directory; -EBUSY if
 * this process already has a store open on that directory (LMDB allows one
 * environment per directory per process). `*ret` is written only on success.
 */
int store__open(const char *dir, size_t map_size, const struct logger *log, struct store **ret);
void store__close(struct store *s); /* commits what is staged; accepts NULL */

/*
 * Takes the next boot counter: max(stored + 1, floor), stored and committed
 * before it returns, so no two starts ever share a boot.
 */
int store__next_boot(struct store *s, uint64_t floor, uint64_t *boot);

/*
 * Stages the value of an owned thing (name and string copied). A later stage
 * of the same thing replaces the earlier one. Committed by store__commit().
 * 0, -EINVAL (empty name, bad type), -ENAMETOOLONG (over LMDB's key size,
 * 511 bytes) or -ENOMEM.
 */
int store__stage_value(struct store *s, const char *thing, uint64_t version, uint64_t boot,
                       const tsync_value *v);

/*
 * Commits everything staged in one transaction, fsync'ed before it returns:
 * the durability point, acknowledge only after it. 0, -ENOMEM or TSYNC_ESTORE
 * (then everything stays staged for a later try).
 */
int store__commit(struct store *s);

/* Whether anything is staged and not yet committed. */
bool store__dirty(const struct store *s);

/*
 * Calls fn for every stored (committed) value; the name and the value's string
 * are borrowed for the call. fn may stage values. 0, -ENOMEM or TSYNC_ESTORE.
 */
typedef void (*store_value_fn)(void *ud, const char *thing, uint64_t version, uint64_t boot,
                               const tsync_value *v);
int store__load_values(struct store *s, store_value_fn fn, void *ud);

#endif /* TSYNC_STORE_H */
