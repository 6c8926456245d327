/*
 * lib/store: how another module of this folder writes its own named
 * databases in the store's transactions (group commit: one fsync covers the
 * node's state and, say, the history of its changes). Private to this
 * folder: it names LMDB's types.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_STORE_HOOK_H
#define TSYNC_STORE_HOOK_H

#include <stdbool.h>
#include <stdint.h>

#include <lmdb.h>

struct store;

struct store_hook {
	/* Whether the hook has something to write: makes the store dirty. */
	bool (*pending)(void *ud);
	/* Writes inside the commit's transaction; 0 or an LMDB code (the
	 * transaction is then aborted and write() called again at the next try,
	 * so it must keep its own state unchanged until committed()). `written`
	 * grows by the bytes written. */
	int (*write)(void *ud, MDB_txn *txn, uint64_t *written);
	/* The transaction that write() filled is durable. */
	void (*committed)(void *ud);
	/* A crash: forget what is pending (store__abandon). */
	void (*discard)(void *ud);
};

/*
 * Adds a hook (at most STORE_MAX_HOOKS); `h` and `ud` are borrowed until
 * store__remove_hook() or the store is closed. 0, -ENOSPC.
 */
int store__add_hook(struct store *s, const struct store_hook *h, void *ud);
void store__remove_hook(struct store *s, void *ud);

/* The store's LMDB environment, borrowed; begin transactions with
 * store__txn_begin() so a map grown by another process is adopted. */
MDB_env *store__env(struct store *s);
int store__txn_begin(struct store *s, unsigned flags, MDB_txn **txn);

#endif /* TSYNC_STORE_HOOK_H */
