/*
 * The collector's SQLite writer hand-off (db_sqlite.c, let_waiter_in): a
 * connection of the process that waited for the write lock goes before the
 * storing worker's next transaction, and the worker gives up on it after
 * SQ_HANDOFF_MS when it does not come. These are the cases where it does not
 * come; each asserts the outcome (the worker got through, every row of its
 * batch is stored once, the other connection still works), never a time:
 *
 *  - the waiter's busy wait ends without a commit (a FULL checkpoint that
 *    waited for a writer: no commit or rollback hook), so it stays the
 *    waiter: the worker gives up on it, stores, and it is waited for no more;
 *  - the waiter got the lock and holds it in a transaction it does not end:
 *    the worker gives up on it and then waits for the lock as any writer,
 *    and stores once the transaction ends.
 *
 * The lock is first held by a plain SQLite connection of the test, which
 * ends its transaction as soon as the collector's connection is seen
 * waiting (db_sqlite__waiting); SQLite's own busy limit (SQ_BUSY_MS) is a
 * give-up that a starved test can reach, then the setup is made again (a
 * store that met it is sent again, as pushd would).
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"

#define ROWS     120   /* more than SQ_ROWS: the multi-row insert and the single */
#define GIVE_UP  60000 /* ms: a wait that takes this long is a hang (a deadlock) */
#define ATTEMPTS 5     /* setups tried when SQLite's busy limit came first */

struct fixture {
	char dir[64], path[96];
	struct db *loop, *worker; /* the collector's two connections */
	sqlite3 *other;           /* the test's, that holds the lock first */
	int64_t next_seq;
};

static void nap_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/tsync-handoff-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/collector.db", f->dir);
	assert_int_equal(db_sqlite_ops.open(f->path, NULL, 0, NULL, &f->loop), 0);
	assert_true(db_sqlite_ops.up(f->loop));
	assert_int_equal(db_sqlite_ops.open(f->path, NULL, 0, NULL, &f->worker), 0);
	assert_true(db_sqlite_ops.up(f->worker));
	assert_int_equal(sqlite3_open(f->path, &f->other), SQLITE_OK);
	assert_int_equal(sqlite3_exec(f->other, "CREATE TABLE scratch (x INTEGER)", NULL, NULL, NULL),
	                 SQLITE_OK);
	f->next_seq = 1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	const char *const ends[] = {"", "-wal", "-shm"};
	char p[128];

	db_sqlite_ops.close(f->loop);
	db_sqlite_ops.close(f->worker);
	sqlite3_close(f->other);
	for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", f->path, ends[i]);
		unlink(p);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

/* A handle that met a limit (fail() closed it) is opened again. */
static void up_again(struct db *db)
{
	if (!db_sqlite_ops.up(db))
		assert_int_equal(db_sqlite_ops.reconnect(db), 0);
}

/* --- a statement of the loop's connection, run in a thread ------------------------------ */

struct call {
	struct fixture *f;
	struct db *db;
	const char *sql; /* exec(sql), or store() of the next batch when NULL */
	pthread_t th;
	atomic_bool done;
	int rc;
	struct db_store_result res;
};

static void *call_run(void *arg)
{
	struct call *c = arg;

	if (c->sql) {
		c->rc = db_sqlite_ops.exec(c->db, c->sql, NULL, 0, NULL, NULL, NULL);
	} else {
		static struct db_measurement m[ROWS];
		static char values[ROWS][24];
		struct db_batch b = {
		    .source = "PI-Push",
		    .stream = "0123456789abcdef0123456789abcdef",
		    .boot = 1,
		    .received_us = 1,
		    .m = m,
		    .n = ROWS,
		    .min_seq = c->f->next_seq,
		    .max_seq = c->f->next_seq + ROWS - 1,
		};
		for (int i = 0; i < ROWS; i++) {
			snprintf(values[i], sizeof(values[i]), "%d", (int)c->f->next_seq + i);
			m[i] = (struct db_measurement){
			    .seq = c->f->next_seq + i,
			    .owner = "PI-IO",
			    .via = "live",
			    .thing = "meter",
			    .vtype = "int",
			    .value = values[i],
			    .time_us = 1000 * (c->f->next_seq + i),
			    .owner_boot = 1,
			    .version = c->f->next_seq + i,
			};
		}
		c->rc = db_sqlite_ops.store(c->db, &b, false, &c->res);
	}
	atomic_store(&c->done, true);
	return NULL;
}

static void call_start(struct call *c, struct fixture *f, struct db *db, const char *sql)
{
	memset(c, 0, sizeof(*c));
	c->f = f;
	c->db = db;
	c->sql = sql;
	assert_int_equal(pthread_create(&c->th, NULL, call_run, c), 0);
}

/* Waits until the call returned, or fails: a call that never returns is
 * the deadlock the hand-off's bound is there to prevent. */
static int call_end(struct call *c)
{
	int64_t end = now_ms() + GIVE_UP;

	while (!atomic_load(&c->done) && now_ms() < end)
		nap_ms(1);
	if (!atomic_load(&c->done))
		fail_msg("%s still runs after %d ms: a deadlock", c->sql ? c->sql : "store", GIVE_UP);
	assert_int_equal(pthread_join(c->th, NULL), 0);
	return c->rc;
}

/* Until db is the waiter, or its call returned (it gave up: SQ_BUSY_MS). */
static bool seen_waiting(struct db *db, struct call *c)
{
	int64_t end = now_ms() + GIVE_UP;

	while (!db_sqlite__waiting(db) && !atomic_load(&c->done) && now_ms() < end)
		nap_ms(1);
	return db_sqlite__waiting(db);
}

static int first_int(void *ud, int n, const char *const *col)
{
	*(int64_t *)ud = n > 0 && col[0] ? strtoll(col[0], NULL, 10) : -1;
	return 0;
}

/* The integer a query (of one row) gives, on connection db. */
static int64_t count(struct db *db, const char *sql)
{
	int64_t n = -1;

	assert_int_equal(db_sqlite_ops.exec(db, sql, NULL, 0, first_int, &n, NULL), 0);
	return n;
}

/* The connection of the test takes the write lock (a row of its own). */
static void other_holds(struct fixture *f)
{
	assert_int_equal(
	    sqlite3_exec(f->other, "BEGIN IMMEDIATE; INSERT INTO scratch VALUES (1)", NULL, NULL, NULL),
	    SQLITE_OK);
}

static void other_ends(struct fixture *f)
{
	assert_int_equal(sqlite3_exec(f->other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
}

/* Stores the next batch on the worker (sent again if SQLite's busy limit
 * came first, as pushd would) and checks that every row went in once. */
static void worker_stores(struct fixture *f, struct call *w)
{
	for (int i = 0; call_end(w) == DB_EDOWN && i < ATTEMPTS; i++) {
		up_again(f->worker);
		call_start(w, f, f->worker, NULL);
	}
	assert_int_equal(w->rc, 0);
	assert_int_equal(w->res.outcome, DB_STORED);
	assert_int_equal(w->res.inserted, ROWS);
	f->next_seq += ROWS;
	/* Every batch so far, whole: sequences 1 to next_seq - 1. */
	assert_int_equal(count(f->loop, "SELECT COUNT(*) FROM measurements"), f->next_seq - 1);
}

/* The loop's connection runs `sql` while the test's holds the lock, so it
 * waits (busy) and is the waiter; the test's connection then commits, and
 * the statement ends with the loop's connection still the waiter. Made
 * again if SQLite's busy limit came first. */
static void make_waiter(struct fixture *f, const char *sql)
{
	struct call l;
	int attempt;

	for (attempt = 0; attempt < ATTEMPTS; attempt++) {
		other_holds(f);
		call_start(&l, f, f->loop, sql);
		if (!seen_waiting(f->loop, &l)) {
			other_ends(f);
			call_end(&l);
			up_again(f->loop);
			continue;
		}
		other_ends(f);
		if (call_end(&l) == 0 && db_sqlite__waiting(f->loop))
			break;
		up_again(f->loop); /* the busy limit came first: again */
	}
	printf("%s: the waiter in %d attempt(s)\n", sql, attempt + 1);
	assert_true(attempt < ATTEMPTS);
}

/* The loop's connection waited, and its wait ended without a commit: the
 * worker gives up on it and stores; it is the waiter no more. */
static void test_waiter_never_commits(void **state)
{
	struct fixture *f = *state;
	struct call w;

	/* A checkpoint that waits for the writer: a busy wait without a transaction. */
	make_waiter(f, "PRAGMA wal_checkpoint(FULL)");
	/* It is done, and still the waiter: nothing will clear it but the worker. */
	assert_true(db_sqlite__waiting(f->loop));

	call_start(&w, f, f->worker, NULL);
	worker_stores(f, &w);
	assert_false(db_sqlite__waiting(f->loop));
	/* Both connections go on: the loop writes, the worker stores again. */
	assert_int_equal(
	    db_sqlite_ops.alarm_put(
	        f->loop,
	        &(struct db_alarm){.id = 1, .kind = "test", .subject = "s", .message = "m", .raised_us = 1}),
	    0);
	call_start(&w, f, f->worker, NULL);
	worker_stores(f, &w);
}

/* The loop's connection waited, got the lock and holds it: the worker gives
 * up on it, waits for the lock itself, and stores when the loop commits. */
static void test_waiter_holds_the_lock(void **state)
{
	struct fixture *f = *state;
	struct call w;

	make_waiter(f, "BEGIN IMMEDIATE");
	/* The loop holds the write lock, in a transaction it does not end yet. */
	assert_int_equal(
	    db_sqlite_ops.exec(f->loop, "INSERT INTO scratch VALUES (2)", NULL, 0, NULL, NULL, NULL), 0);

	call_start(&w, f, f->worker, NULL);
	/* The worker gave up on the loop (or it would wait for it, not for the
	 * lock) and waits for the lock, in its own busy wait. */
	assert_true(seen_waiting(f->worker, &w) || atomic_load(&w.done));
	assert_false(db_sqlite__waiting(f->loop));
	assert_int_equal(db_sqlite_ops.exec(f->loop, "COMMIT", NULL, 0, NULL, NULL, NULL), 0);
	worker_stores(f, &w);
	assert_int_equal(count(f->loop, "SELECT COUNT(*) FROM scratch WHERE x = 2"), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_waiter_never_commits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_waiter_holds_the_lock, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
