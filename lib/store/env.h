/*
 * lib/store: the LMDB plumbing the state store (store.c) and the journal
 * (journal.c) share. Private to this folder: it names LMDB's types, which
 * store.h keeps away from the rest of the library.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_ENV_H
#define TSYNC_STORE_ENV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <lmdb.h>

#include "util/util.h"

/*
 * LMDB must not be opened twice on the same directory by one process: the
 * second close() would drop the first one's fcntl locks. Every open
 * environment, store or journal, claims its directory (device and inode) in
 * one process-wide table, so a second open fails with -EBUSY instead of
 * silently breaking the locks. Hash chains, not an array: thingsync-sim runs
 * hundreds of controllers, each with its own directory.
 */
struct env_claim {
	dev_t dev;
	ino_t ino;
	bool held;
	/* In one of the claims' hash chains: a claim and a release touch a
	 * few claims, not every environment of the process (a thousand in
	 * the simulator). */
	struct env_claim *next, **pprev;
};

/* Claims c->dev/c->ino. 0 or -EBUSY. */
int env__claim(struct env_claim *c);
/* Releases a claim; a claim not held is ignored. */
void env__release(struct env_claim *c);

/* An LMDB return code (positive errno or MDB_*) as ours: -ENOMEM or TSYNC_ESTORE. */
int env__error(int rc);

/* Little-endian u64, the byte order of every record we write. */
void env__put_le64(unsigned char *p, uint64_t x);
uint64_t env__get_le64(const unsigned char *p);
/*
 * A value's payload as every record stores it, after the record's own
 * header and type byte: nothing for none, one byte 0/1 for a bool, the
 * little-endian 64 bits of an int or a float, a string's bytes without NUL.
 * env__value_append() appends it to b (0, -ENOMEM, or -EINVAL for an
 * unknown type). env__value_read() reads n bytes of type `type`; a string
 * is copied into str to be NUL-terminated, and v->u.s points there until
 * str changes. 0, -EBADMSG for a payload we did not write, or -ENOMEM.
 */
int env__value_append(struct buf *b, const tsync_value *v);
int env__value_read(unsigned type, const unsigned char *p, size_t n, struct buf *str, tsync_value *v);

/* Big-endian, for keys: LMDB's byte order is then the numeric order. */
void env__put_be64(unsigned char *p, uint64_t x);
uint64_t env__get_be64(const unsigned char *p);

/*
 * Begins a transaction. Another process (thingsync-dr, say) may have grown
 * the map; LMDB then asks us to adopt the new size before going on, which
 * is allowed only when no other transaction of ours is active
 * (`may_resize`).
 */
int env__txn_begin(MDB_env *env, unsigned flags, bool may_resize, MDB_txn **txn);

/*
 * Opens the LMDB environment of directory `dir`, made with mode 0700 if
 * missing: claims the directory, sets `maxdbs` and `map_size`, opens it with
 * durable commits (the default sync mode: a commit returns once it is on
 * disk, which is what lets callers acknowledge after their commit) and
 * clears reader slots left by dead processes. Failures are logged as
 * "WHAT: DIR: ...". On failure *env is NULL and the claim released.
 * 0, -errno (mkdir, stat), -ENOTDIR, -EBUSY (already open), -ENOMEM,
 * TSYNC_ESTORE.
 */
int env__open(const char *what, const char *dir, unsigned maxdbs, size_t map_size, const struct logger *log,
              struct env_claim *claim, MDB_env **env);

/* Doubles the map after MDB_MAP_FULL (no transaction may be active) and
 * logs it as "WHAT: DIR: map full, grown to N bytes". 0 or an LMDB code. */
int env__grow(MDB_env *env, const struct logger *log, const char *what, const char *dir);

#endif /* TSYNC_STORE_ENV_H */
