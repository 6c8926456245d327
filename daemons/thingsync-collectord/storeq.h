/*
 * thingsync-collectord: batches stored apart from the event loop.
 *
 * With PostgreSQL a batch costs the server tens of milliseconds (its COPY,
 * the indexes, the commit's fsync) and the collector about as much CPU
 * before it (the body's hash, reading, checking). Stored on the loop, the
 * two add up per batch. Here one worker thread, with its own connection,
 * runs the backend's store() for the queued batches in the order they came,
 * while the loop reads and checks the next POST (as libuv's uv_queue_work:
 * the blocking work apart, the callback back on the loop). The answer is
 * still sent only after store() returned, i.e. after the COMMIT.
 *
 * The worker touches only its db handle and the job's batch; everything
 * else (alarms, counters, the reply) is done by `done` on the loop.
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_STOREQ_H
#define TSYNC_COLLECTOR_STOREQ_H

#include <stdbool.h>

#include "db.h"

struct event_base;
struct storeq;

/* Batches waiting at most (one being stored not counted): a bound on memory
 * held for pushes; more are answered "busy" (pushd sends them again). */
#define STOREQ_MAX 8

struct storeq_job {
	struct storeq_job *next;
	const struct db_batch *batch;  /* borrowed until `done` */
	bool fail_before_commit;       /* store()'s fault injection */
	int r;                         /* store()'s return; -ECANCELED: not stored (stopping) */
	struct db_store_result res;    /* store()'s result */
	void (*done)(struct storeq_job *job); /* on the loop, once per job */
};

/* A queue storing into `db` (owned from now on: closed by storeq__free). */
int storeq__new(struct event_base *base, struct db *db, struct storeq **ret);
/* Queues `job` (borrowed until its `done`): 0, or -EBUSY when STOREQ_MAX wait. */
int storeq__submit(struct storeq *q, struct storeq_job *job);
/* Waits for the batch being stored; every job not done yet gets its `done`
 * (those never stored with r = -ECANCELED). Then closes the db. */
void storeq__free(struct storeq *q);

#endif
