/*
 * thingsync-collectord: the SQLite backend (see db.h). One file, WAL mode
 * with synchronous=FULL: a COMMIT returns once the batch is on disk, which is
 * what lets the collector answer 200 after it.
 *
 * The pushes are stored on a connection of their own in storeq's worker
 * (store_apart), so the loop reads, hashes and checks the next POST while
 * a batch is inserted and its commit waits for the disk. The loop's own
 * writes (alarms, pulls, an accepted stream) then wait for the worker's
 * transaction: SQLite's lock is not fair, so a connection kept waiting says
 * so (`sq_waiter`), and the worker lets it in before its next transaction:
 * it waits until that connection has committed or rolled back (its hooks),
 * given up, or closed.
 *
 * The stream's batches touch each thing's end of two indexes ((thing,
 * time_us) and the identity): a few hundred pages a commit, whatever the
 * batch's size. With SQLite's default cache (2 MB) and checkpoint (every
 * 1000 WAL pages) they were read back and written again every few commits:
 * about 1.5 pwrite and 0.7 pread a row in batches of 1000. A larger cache
 * and a checkpoint every 8192 pages take that to about 1 and 0.1.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "db.h"

struct db_sqlite {
	struct db base;
	const struct logger *log;
	const struct db_owner *owners;
	size_t n_owners;
	char *path;
	sqlite3 *h;
	sqlite3_stmt *ins_m, *ins_mn, *ins_r, *upd_src, *put_alarm;
	sqlite3_stmt *get_src, *old_m, *old_r, *last_seq;
};

#define SQ(db) ((struct db_sqlite *)(db))

/* Page cache of a connection (16 MiB) and WAL pages between checkpoints (32 MiB of 4 KiB pages). */
#define SQ_PRAGMA_CACHE "PRAGMA cache_size=-16384"
#define SQ_PRAGMA_CHECKPOINT "PRAGMA wal_autocheckpoint=8192"
/* How long a connection waits for another's write lock before the database counts as down. */
#define SQ_BUSY_MS 2000

/* The connection (of this process) that waits for the write lock, or NULL;
 * cleared (under sq_mu, with sq_cv broadcast) when it is done waiting. */
static _Atomic(const struct db_sqlite *) sq_waiter;
static pthread_mutex_t sq_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sq_cv = PTHREAD_COND_INITIALIZER;
/* How long the worker waits for a waiter that does not come (a busy wait
 * of a read, which ends without a commit): a give-up, not a pace. */
#define SQ_HANDOFF_MS 100
/* When a batch was last committed (util__now_us()), by any connection of this process. */
static _Atomic uint64_t sq_committed_us;

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Connection d no longer waits for the lock (it got it and its transaction
 * ended, it gave up, or it closes): the worker may go on. */
static void waiter_done(const struct db_sqlite *d)
{
	const struct db_sqlite *w = d;

	if (atomic_load(&sq_waiter) != d)
		return;
	pthread_mutex_lock(&sq_mu);
	if (atomic_compare_exchange_strong(&sq_waiter, &w, NULL))
		pthread_cond_broadcast(&sq_cv);
	pthread_mutex_unlock(&sq_mu);
}

static int commit_cb(void *ud)
{
	waiter_done(ud);
	return 0; /* the commit goes on */
}

static void rollback_cb(void *ud)
{
	waiter_done(ud);
}

/* SQLite's busy handler: polls every millisecond, for at most SQ_BUSY_MS, and says it waits. */
static int busy_cb(void *ud, int count)
{
	if (count >= SQ_BUSY_MS) {
		waiter_done(ud);
		return 0;
	}
	atomic_store(&sq_waiter, (const struct db_sqlite *)ud);
	sleep_ms(1);
	return 1;
}

/* Before a write transaction: another connection waits for the lock, so it
 * goes first; this one waits until its transaction has ended. */
static void let_waiter_in(const struct db_sqlite *d)
{
	const struct db_sqlite *w = atomic_load(&sq_waiter);
	struct timespec until;

	if (!w || w == d)
		return;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += SQ_HANDOFF_MS * 1000000L;
	until.tv_sec += until.tv_nsec / 1000000000L;
	until.tv_nsec %= 1000000000L;
	pthread_mutex_lock(&sq_mu);
	while ((w = atomic_load(&sq_waiter)) && w != d) {
		if (pthread_cond_timedwait(&sq_cv, &sq_mu, &until) == ETIMEDOUT) {
			/* It did not come: not waited for again. */
			atomic_compare_exchange_strong(&sq_waiter, &w, NULL);
			break;
		}
	}
	pthread_mutex_unlock(&sq_mu);
}

/* Whether connection db is the one the worker lets in before its next
 * transaction (for test_sqlite_handoff: it sees a waiter come and go). */
bool db_sqlite__waiting(const struct db *db)
{
	return atomic_load(&sq_waiter) == SQ(db);
}

static const char sql_ins_m[] =
    "INSERT OR IGNORE INTO measurement_rows (sid, seq, thing, vtype, value, time_us, owner_boot, version,"
    " received_us, owner, via) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/* Parameters of a row of sql_ins_m. */
#define SQ_COLS 11
/* Rows per multi-row INSERT of measurements (ins_mn): one statement step for
 * many rows, where per row the statement's overhead showed. */
#define SQ_ROWS 50
static const char sql_ins_r[] =
    "INSERT OR IGNORE INTO rejected (source, seq, field, error, item, received_us, stream)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
static const char sql_upd_src[] =
    "INSERT INTO sources (source, last_seen_us, last_seq, boot, stream) VALUES (?1, ?2, ?3, ?4, ?5)"
    " ON CONFLICT (source) DO UPDATE SET last_seen_us = excluded.last_seen_us,"
    " last_seq = CASE WHEN sources.stream = excluded.stream THEN max(sources.last_seq, excluded.last_seq)"
    " ELSE excluded.last_seq END, boot = excluded.boot, stream = excluded.stream";
static const char sql_get_src[] = "SELECT stream FROM sources WHERE source = ?1";
static const char sql_old_m[] = "SELECT thing, value, time_us FROM measurement_rows WHERE sid = ?1 AND seq = ?2";
static const char sql_old_r[] = "SELECT item FROM rejected WHERE source = ?1 AND stream = ?2 AND seq = ?3";
static const char sql_last_seq[] =
    "SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = ?1 AND stream = ?2"
    " UNION ALL SELECT seq FROM rejected WHERE source = ?1 AND stream = ?2"
    " UNION ALL SELECT seq FROM items WHERE source = ?1 AND stream = ?2)";
static const char sql_put_alarm[] =
    "INSERT INTO alarms (id, kind, subject, message, raised_us, cleared_us, count)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO UPDATE SET message = excluded.message,"
    " cleared_us = excluded.cleared_us, count = excluded.count";

static void finalize_all(struct db_sqlite *d)
{
	sqlite3_finalize(d->ins_m);
	sqlite3_finalize(d->ins_mn);
	sqlite3_finalize(d->ins_r);
	sqlite3_finalize(d->upd_src);
	sqlite3_finalize(d->put_alarm);
	sqlite3_finalize(d->get_src);
	sqlite3_finalize(d->old_m);
	sqlite3_finalize(d->old_r);
	sqlite3_finalize(d->last_seq);
	d->ins_m = d->ins_mn = d->ins_r = d->upd_src = d->put_alarm = NULL;
	d->get_src = d->old_m = d->old_r = d->last_seq = NULL;
	waiter_done(d);
	if (d->h)
		sqlite3_close_v2(d->h);
	d->h = NULL;
}

/* ins_mn: sql_ins_m with SQ_ROWS rows of positional parameters. */
static int prepare_ins_many(struct db_sqlite *d)
{
	struct buf sql = {0};
	int r = buf__appendf(&sql, "%.*s", (int)(strstr(sql_ins_m, "VALUES") - sql_ins_m + 7), sql_ins_m);
	int rc;

	for (int i = 0; r == 0 && i < SQ_ROWS; i++)
		r = buf__appendf(&sql, "%s(?,?,?,?,?,?,?,?,?,?,?)", i ? "," : "");
	rc = r < 0 ? SQLITE_NOMEM : sqlite3_prepare_v2(d->h, sql.data, -1, &d->ins_mn, NULL);
	buf__free(&sql);
	return rc;
}

/*
 * Whether an SQLite error means "the database cannot take writes now" (the
 * disk, the file, a lock held too long) rather than a bug in our SQL.
 */
static bool is_down(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_PERM:
	case SQLITE_NOMEM:
		return true;
	default:
		return false;
	}
}

static int fail(struct db_sqlite *d, const char *what, int rc)
{
	log_error(d->log, "sqlite %s: %s: %s", d->path, what,
	          d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc));
	if (is_down(rc)) {
		/* Start over from a fresh connection at the next reconnect(). */
		finalize_all(d);
		return DB_EDOWN;
	}
	return -EIO;
}

static int exec(struct db_sqlite *d, const char *sql)
{
	char *err = NULL;
	int rc = sqlite3_exec(d->h, sql, NULL, NULL, &err);

	if (rc != SQLITE_OK) {
		log_error(d->log, "sqlite %s: %s: %s", d->path, sql, err ? err : sqlite3_errstr(rc));
		sqlite3_free(err);
	}
	return rc;
}

/* The one integer a query gives (`*found` false when it gives no row or NULL). */
static int query_i64(struct db_sqlite *d, const char *sql, int64_t *out, bool *found)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(d->h, sql, -1, &st, NULL);

	*found = false;
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		if (rc == SQLITE_ROW) {
			*found = sqlite3_column_type(st, 0) != SQLITE_NULL;
			*out = sqlite3_column_int64(st, 0);
			rc = SQLITE_OK;
		} else if (rc == SQLITE_DONE) {
			rc = SQLITE_OK;
		}
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		log_error(d->log, "sqlite %s: %s: %s", d->path, sql, sqlite3_errmsg(d->h));
	return rc;
}

/*
 * Schema 1 to 2. SQLite cannot change a primary key in place: the two keyed
 * tables are rebuilt (renamed, made again with stream in their key, copied
 * with stream '', dropped), inside the caller's transaction, so a crash
 * leaves schema 1 whole or schema 2 whole.
 */
static int migrate_1(struct db_sqlite *d)
{
	static const char *const steps[] = {
	    "DROP INDEX IF EXISTS measurements_thing_time",
	    "ALTER TABLE measurements RENAME TO measurements_v1",
	    "ALTER TABLE rejected RENAME TO rejected_v1",
	};
	static const char *const copy[] = {
	    "INSERT INTO measurements (source, stream, seq, thing, vtype, value, time_us, owner_boot, version,"
	    " received_us) SELECT source, '', seq, thing, vtype, value, time_us, owner_boot, version,"
	    " received_us FROM measurements_v1",
	    "INSERT INTO rejected (source, stream, seq, field, error, item, received_us)"
	    " SELECT source, '', seq, field, error, item, received_us FROM rejected_v1",
	    "DROP TABLE measurements_v1",
	    "DROP TABLE rejected_v1",
	};
	int64_t rows = 0;
	bool found;
	int rc;

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		if ((rc = exec(d, steps[i])) != SQLITE_OK)
			return rc;
	/* The new measurements (as schema 4 had them, rebuilt again by db__schema()) and rejected. */
	if ((rc = exec(d, db_measurements_4_sql)) != SQLITE_OK || (rc = exec(d, db_schema_sql[1])) != SQLITE_OK)
		return rc;
	for (size_t i = 0; i < sizeof(copy) / sizeof(copy[0]); i++)
		if ((rc = exec(d, copy[i])) != SQLITE_OK)
			return rc;
	for (size_t i = 0; i < db_migrate_1_common_count; i++)
		if ((rc = exec(d, db_migrate_1_common_sql[i])) != SQLITE_OK)
			return rc;
	if ((rc = query_i64(d, "SELECT COUNT(*) FROM measurements", &rows, &found)) != SQLITE_OK)
		return rc;
	log_warn(d->log, "sqlite %s: migrated from schema 1 to %d: %" PRId64 " measurement(s) kept as stream ''",
	         d->path, DB_SCHEMA_VERSION, rows);
	return SQLITE_OK;
}

/* Makes the schema, or migrates an older one, in one transaction. */
static int ensure_schema(struct db_sqlite *d)
{
	static const struct db_dialect dialect = {.view = db_view_sqlite_sql};
	int64_t version = 0, old = 0;
	bool found = false, has_old = false;
	char sql[128];
	int rc;

	rc = exec(d, "BEGIN IMMEDIATE");
	if (rc != SQLITE_OK)
		return rc;
	rc = exec(d, "CREATE TABLE IF NOT EXISTS thingsync_schema (version BIGINT NOT NULL)");
	if (rc == SQLITE_OK)
		rc = query_i64(d, "SELECT MAX(version) FROM thingsync_schema", &version, &found);
	if (rc == SQLITE_OK && !found)
		rc = query_i64(d, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'measurements'",
		               &old, &has_old);
	if (rc != SQLITE_OK)
		goto leave;
	if (found && version > DB_SCHEMA_VERSION) {
		log_error(d->log, "sqlite %s: schema %" PRId64 " is newer than this collector's (%d)", d->path,
		          version, DB_SCHEMA_VERSION);
		rc = SQLITE_MISMATCH;
		goto leave;
	}
	if (!found && old > 0) {
		rc = migrate_1(d);
		if (rc != SQLITE_OK)
			goto leave;
	}
	if ((!found && old > 0) || (found && version == 2)) {
		/* Schema 1's tables were made again with the columns of 3 above. */
		if (db__migrate_2(&d->base, d->owners, d->n_owners, found) < 0) {
			rc = SQLITE_ERROR;
			goto leave;
		}
		log_warn(d->log, "sqlite %s: migrated to schema %d: owner and via of every measurement",
		         d->path, DB_SCHEMA_VERSION);
	}
	if (db__schema(&d->base, (found && version < 5) || (!found && old > 0), !found || version < 5,
	               &dialect) < 0) {
		rc = SQLITE_ERROR;
		goto leave;
	}
	if (found && version < 5)
		log_warn(d->log, "sqlite %s: migrated to schema %d: measurements keyed by stream id and seq",
		         d->path, DB_SCHEMA_VERSION);
	if (!found || version < DB_SCHEMA_VERSION) {
		snprintf(sql, sizeof(sql), "DELETE FROM thingsync_schema; INSERT INTO thingsync_schema VALUES (%d)",
		         DB_SCHEMA_VERSION);
		if ((rc = exec(d, sql)) != SQLITE_OK)
			goto leave;
	}
	rc = exec(d, "COMMIT");
leave:
	if (rc != SQLITE_OK)
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
	return rc;
}

static int sq_reconnect(struct db *db)
{
	struct db_sqlite *d = SQ(db);
	int rc;

	if (d->h) {
		/* A batch committed within the last second says it takes writes; the
		 * probe would only wait for the storing thread's transaction. */
		if (util__now_us() - atomic_load(&sq_committed_us) < 1000000)
			return 0;
		/* A probe that needs the write lock: "open" is not "takes writes". */
		rc = sqlite3_exec(d->h, "BEGIN IMMEDIATE; ROLLBACK", NULL, NULL, NULL);
		if (rc == SQLITE_OK)
			return 0;
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
		return fail(d, "probe", rc) == DB_EDOWN && sq_reconnect(db) == 0 ? 0 : DB_EDOWN;
	}
	/* SQLite opens its files with O_CLOEXEC. */
	rc = sqlite3_open_v2(d->path, &d->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                     NULL);
	if (rc != SQLITE_OK)
		goto bad;
	sqlite3_extended_result_codes(d->h, 1);
	sqlite3_busy_handler(d->h, busy_cb, d);
	sqlite3_commit_hook(d->h, commit_cb, d);
	sqlite3_rollback_hook(d->h, rollback_cb, d);
	if ((rc = exec(d, "PRAGMA journal_mode=WAL")) != SQLITE_OK ||
	    (rc = exec(d, "PRAGMA synchronous=FULL")) != SQLITE_OK ||
	    (rc = exec(d, SQ_PRAGMA_CACHE)) != SQLITE_OK ||
	    (rc = exec(d, SQ_PRAGMA_CHECKPOINT)) != SQLITE_OK)
		goto bad;
	if ((rc = ensure_schema(d)) != SQLITE_OK)
		goto bad;
	if ((rc = sqlite3_prepare_v2(d->h, sql_ins_m, -1, &d->ins_m, NULL)) != SQLITE_OK ||
	    (rc = prepare_ins_many(d)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_get_src, -1, &d->get_src, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_old_m, -1, &d->old_m, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_old_r, -1, &d->old_r, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_last_seq, -1, &d->last_seq, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_ins_r, -1, &d->ins_r, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_upd_src, -1, &d->upd_src, NULL)) != SQLITE_OK ||
	    (rc = sqlite3_prepare_v2(d->h, sql_put_alarm, -1, &d->put_alarm, NULL)) != SQLITE_OK)
		goto bad;
	log_info(d->log, "sqlite %s: open", d->path);
	return 0;
bad:
	log_error(d->log, "sqlite %s: cannot open: %s", d->path,
	          d->h ? sqlite3_errmsg(d->h) : sqlite3_errstr(rc));
	finalize_all(d);
	return DB_EDOWN;
}

static int sq_open(const char *conninfo, const struct db_owner *owners, size_t n_owners,
                   const struct logger *log, struct db **ret)
{
	struct db_sqlite *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->base.ops = &db_sqlite_ops;
	d->log = log;
	d->owners = owners;
	d->n_owners = n_owners;
	d->path = util__strdup(conninfo);
	if (!d->path) {
		free(d);
		return -ENOMEM;
	}
	sq_reconnect(&d->base);
	*ret = &d->base;
	return 0;
}

static void sq_close(struct db *db)
{
	struct db_sqlite *d = SQ(db);

	if (!d)
		return;
	finalize_all(d);
	free(d->path);
	free(d);
}

static bool sq_up(const struct db *db)
{
	return SQ(db)->h != NULL;
}

static int step_done(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* The highest sequence of (source, stream), stored or refused; 0 when none. */
static int stream_last_seq(struct db_sqlite *d, const char *source, const char *stream, int64_t *out)
{
	int rc;

	sqlite3_bind_text(d->last_seq, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_text(d->last_seq, 2, stream, -1, SQLITE_STATIC);
	rc = sqlite3_step(d->last_seq);
	*out = rc == SQLITE_ROW ? sqlite3_column_int64(d->last_seq, 0) : 0;
	sqlite3_reset(d->last_seq);
	sqlite3_clear_bindings(d->last_seq);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/*
 * Which stream the batch goes to. A source with a stream takes only that
 * one. A source without one adopts the batch's stream with its first
 * measurement; if the source has rows from before streams (stream '') and
 * the batch continues after them, they are the same journal (given its id
 * when it was first opened by a pushd that has them): they join the stream.
 */
static int check_stream(struct db_sqlite *d, const struct db_batch *b, struct db_store_result *res,
                        const char **stream)
{
	const char *cur = "";
	char curbuf[DB_STREAM_MAX + 1] = "";
	int64_t legacy_last = 0;
	int rc;

	sqlite3_bind_text(d->get_src, 1, b->source, -1, SQLITE_STATIC);
	rc = sqlite3_step(d->get_src);
	if (rc == SQLITE_ROW) {
		snprintf(curbuf, sizeof(curbuf), "%s", (const char *)sqlite3_column_text(d->get_src, 0));
		cur = curbuf;
		rc = SQLITE_DONE;
	}
	sqlite3_reset(d->get_src);
	sqlite3_clear_bindings(d->get_src);
	if (rc != SQLITE_DONE)
		return rc;
	*stream = b->stream;
	if (strcmp(cur, b->stream) == 0)
		return SQLITE_OK;
	if (*cur) {
		res->outcome = DB_STREAM_CHANGED;
		snprintf(res->current, sizeof(res->current), "%s", cur);
		return stream_last_seq(d, b->source, cur, &res->current_last_seq);
	}
	if (b->n + b->nrej == 0) {
		/* A heartbeat adopts nothing: whether a stream continues the old
		 * rows is known from its first measurement. */
		*stream = "";
		return SQLITE_OK;
	}
	res->adopted = true;
	rc = stream_last_seq(d, b->source, "", &legacy_last);
	if (rc != SQLITE_OK || legacy_last == 0 || b->min_seq <= legacy_last)
		return rc;
	{
		static const char *const join[] = {
		    "UPDATE rejected SET stream = ?2 WHERE source = ?1 AND stream = ''",
		    "UPDATE streams SET stream = ?2 WHERE source = ?1 AND stream = ''",
		};
		for (size_t i = 0; i < sizeof(join) / sizeof(join[0]) && rc == SQLITE_OK; i++) {
			sqlite3_stmt *st = NULL;
			rc = sqlite3_prepare_v2(d->h, join[i], -1, &st, NULL);
			if (rc == SQLITE_OK) {
				sqlite3_bind_text(st, 1, b->source, -1, SQLITE_STATIC);
				sqlite3_bind_text(st, 2, b->stream, -1, SQLITE_STATIC);
				rc = step_done(st);
			}
			sqlite3_finalize(st);
		}
	}
	return rc;
}

/* A measurement already stored under its key: the same content (a duplicate) or
 * not; none under it (*same true): a copy of a change stored before, see db__store_items(). */
static int same_measurement(struct db_sqlite *d, int64_t sid, const struct db_measurement *m, bool *same)
{
	int rc;

	sqlite3_bind_int64(d->old_m, 1, sid);
	sqlite3_bind_int64(d->old_m, 2, m->seq);
	rc = sqlite3_step(d->old_m);
	*same = rc == SQLITE_DONE ||
	        (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(d->old_m, 0), m->thing) == 0 &&
	         strcmp((const char *)sqlite3_column_text(d->old_m, 1), m->value) == 0 &&
	         sqlite3_column_int64(d->old_m, 2) == m->time_us);
	sqlite3_reset(d->old_m);
	sqlite3_clear_bindings(d->old_m);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int same_rejected(struct db_sqlite *d, const char *source, const char *stream, const struct db_rejected *r,
                         bool *same)
{
	int rc;

	sqlite3_bind_text(d->old_r, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_text(d->old_r, 2, stream, -1, SQLITE_STATIC);
	sqlite3_bind_int64(d->old_r, 3, r->seq);
	rc = sqlite3_step(d->old_r);
	*same = rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(d->old_r, 0), r->item) == 0;
	sqlite3_reset(d->old_r);
	sqlite3_clear_bindings(d->old_r);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* One measurement's parameters, from `base` (0 for ins_m, SQ_COLS * row for ins_mn). */
static void bind_measurement(sqlite3_stmt *st, int base, const struct db_batch *b, int64_t sid,
                             const struct db_measurement *m)
{
	sqlite3_bind_int64(st, base + 1, sid);
	sqlite3_bind_int64(st, base + 2, m->seq);
	sqlite3_bind_text(st, base + 3, m->thing, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, base + 4, m->vtype, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, base + 5, m->value, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, base + 6, m->time_us);
	sqlite3_bind_int64(st, base + 7, m->owner_boot);
	sqlite3_bind_int64(st, base + 8, m->version);
	sqlite3_bind_int64(st, base + 9, b->received_us);
	sqlite3_bind_text(st, base + 10, m->owner, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, base + 11, m->via, -1, SQLITE_STATIC);
}

static int sq_store(struct db *db, const struct db_batch *b, bool fail_before_commit, struct db_store_result *res)
{
	struct db_sqlite *d = SQ(db);
	const char *what = "BEGIN";
	const char *stream = b->stream;
	int64_t sid = 0;
	size_t ins = 0;
	bool same;
	int rc;

	memset(res, 0, sizeof(*res));
	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	let_waiter_in(d);
	rc = sqlite3_exec(d->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return fail(d, what, rc);
	what = "stream";
	rc = check_stream(d, b, res, &stream);
	if (rc != SQLITE_OK)
		goto rollback;
	if (res->outcome != DB_STORED)
		goto refused;
	if (b->n + b->nrej > 0 && db__stream_id(db, b, stream, false, &sid) < 0) {
		if (!d->h)
			return DB_EDOWN; /* fail() closed it; the transaction is gone with it */
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	what = "insert measurement";
	for (size_t off = 0; off < b->n;) {
		size_t rows = b->n - off >= SQ_ROWS ? SQ_ROWS : 1;
		sqlite3_stmt *st = rows > 1 ? d->ins_mn : d->ins_m;
		size_t changes;

		for (size_t k = 0; k < rows; k++)
			bind_measurement(st, (int)(SQ_COLS * k), b, sid, &b->m[off + k]);
		rc = step_done(st);
		if (rc != SQLITE_OK)
			goto rollback;
		changes = (size_t)sqlite3_changes(d->h);
		ins += changes;
		/* Some row not inserted: a duplicate, a copy (db.h), or the stream going backwards. */
		for (size_t k = 0; changes < rows && k < rows; k++) {
			const struct db_measurement *m = &b->m[off + k];
			rc = same_measurement(d, sid, m, &same);
			if (rc != SQLITE_OK)
				goto rollback;
			if (!same) {
				res->outcome = DB_STREAM_BACKWARDS;
				res->conflict_seq = m->seq;
				goto refused;
			}
		}
		off += rows;
	}
	what = "insert rejected";
	for (size_t i = 0; i < b->nrej; i++) {
		const struct db_rejected *r = &b->rej[i];
		sqlite3_bind_text(d->ins_r, 1, b->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(d->ins_r, 2, r->seq);
		sqlite3_bind_text(d->ins_r, 3, r->field, -1, SQLITE_STATIC);
		sqlite3_bind_text(d->ins_r, 4, r->error, -1, SQLITE_STATIC);
		sqlite3_bind_text(d->ins_r, 5, r->item, -1, SQLITE_STATIC);
		sqlite3_bind_int64(d->ins_r, 6, b->received_us);
		sqlite3_bind_text(d->ins_r, 7, stream, -1, SQLITE_STATIC);
		rc = step_done(d->ins_r);
		if (rc != SQLITE_OK)
			goto rollback;
		if (sqlite3_changes(d->h) > 0)
			continue;
		rc = same_rejected(d, b->source, stream, r, &same);
		if (rc != SQLITE_OK)
			goto rollback;
		if (!same) {
			res->outcome = DB_STREAM_BACKWARDS;
			res->conflict_seq = r->seq;
			goto refused;
		}
	}
	what = "items";
	res->inserted = ins;
	if (db__store_items(db, b, stream, res) < 0) {
		if (!d->h)
			return DB_EDOWN; /* fail() closed it; the transaction is gone with it */
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	if (res->outcome != DB_STORED)
		goto refused;
	what = "update source";
	sqlite3_bind_text(d->upd_src, 1, b->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(d->upd_src, 2, b->received_us);
	sqlite3_bind_int64(d->upd_src, 3, b->max_seq);
	sqlite3_bind_int64(d->upd_src, 4, b->boot);
	sqlite3_bind_text(d->upd_src, 5, stream, -1, SQLITE_STATIC);
	rc = step_done(d->upd_src);
	if (rc != SQLITE_OK)
		goto rollback;
	if (fail_before_commit) {
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
		return -EIO;
	}
	what = "COMMIT";
	rc = sqlite3_exec(d->h, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		goto rollback;
	atomic_store(&sq_committed_us, util__now_us());
	res->inserted = ins;
	return 0;
refused:
	/* Nothing of a refused batch stays, not even its source's last_seen. */
	sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
	res->adopted = false;
	return 0;
rollback : {
	int r = fail(d, what, rc);
	if (d->h)
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
	return r;
}
}

static int sq_accept_stream(struct db *db, const char *source, const char *stream, int64_t now_us)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	int rc;

	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	rc = sqlite3_prepare_v2(
	    d->h,
	    "INSERT INTO sources (source, last_seen_us, last_seq, boot, stream) VALUES (?1, ?3,"
	    " COALESCE((SELECT last_seq FROM streams WHERE source = ?1 AND stream = ?2), 0), 0, ?2)"
	    " ON CONFLICT (source) DO UPDATE SET stream = excluded.stream, last_seq = excluded.last_seq",
	    -1, &st, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, stream, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, now_us);
		rc = step_done(st);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_OK ? 0 : fail(d, "accept stream", rc);
}

static int sq_stream_info(struct db *db, const char *source, json_t **out)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	json_t *streams = json_array(), *versions = json_array(), *o = NULL;
	char cur[DB_STREAM_MAX + 1] = "";
	int64_t last = 0;
	int rc;

	if (!streams || !versions) {
		rc = SQLITE_NOMEM;
		goto leave;
	}
	if (!d->h && sq_reconnect(db) < 0) {
		json_decref(streams);
		json_decref(versions);
		return DB_EDOWN;
	}
	sqlite3_bind_text(d->get_src, 1, source, -1, SQLITE_STATIC);
	rc = sqlite3_step(d->get_src);
	if (rc == SQLITE_ROW)
		snprintf(cur, sizeof(cur), "%s", (const char *)sqlite3_column_text(d->get_src, 0));
	sqlite3_reset(d->get_src);
	sqlite3_clear_bindings(d->get_src);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto leave;
	rc = stream_last_seq(d, source, cur, &last);
	if (rc != SQLITE_OK)
		goto leave;
	rc = sqlite3_prepare_v2(d->h,
	                        "SELECT stream, first_seq, last_seq, first_us, last_us FROM streams"
	                        " WHERE source = ?1 ORDER BY first_us, stream",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(streams,
		                      json_pack("{s:s,s:I,s:I,s:I,s:I}", "stream", sqlite3_column_text(st, 0),
		                                "first_seq", (json_int_t)sqlite3_column_int64(st, 1), "last_seq",
		                                (json_int_t)sqlite3_column_int64(st, 2), "first_us",
		                                (json_int_t)sqlite3_column_int64(st, 3), "last_us",
		                                (json_int_t)sqlite3_column_int64(st, 4)));
	sqlite3_finalize(st);
	st = NULL;
	if (rc != SQLITE_DONE)
		goto leave;
	/* The newest (owner boot, version) of each thing: the greatest boot, then its greatest version. */
	rc = sqlite3_prepare_v2(d->h,
	                        "SELECT thing, owner_boot, MAX(version) FROM measurements m WHERE source = ?1"
	                        " AND (owner_boot > 0 OR version > 0) AND owner_boot = (SELECT MAX(owner_boot)"
	                        " FROM measurements n WHERE n.source = ?1 AND n.thing = m.thing)"
	                        " GROUP BY thing, owner_boot ORDER BY thing",
	                        -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(versions, json_pack("{s:s,s:I,s:I}", "thing", sqlite3_column_text(st, 0),
		                                          "owner_boot", (json_int_t)sqlite3_column_int64(st, 1),
		                                          "version", (json_int_t)sqlite3_column_int64(st, 2)));
	if (rc != SQLITE_DONE)
		goto leave;
	rc = SQLITE_OK;
	o = json_pack("{s:s,s:s,s:I,s:O,s:O}", "source", source, "stream", cur, "last_seq", (json_int_t)last,
	              "streams", streams, "versions", versions);
	if (!o)
		rc = SQLITE_NOMEM;
leave:
	sqlite3_finalize(st);
	json_decref(streams);
	json_decref(versions);
	if (rc != SQLITE_OK)
		return fail(d, "stream info", rc);
	*out = o;
	return 0;
}

static json_t *column_json(sqlite3_stmt *st, int col)
{
	const char *text = (const char *)sqlite3_column_text(st, col);
	json_t *j = text ? json_loads(text, JSON_DECODE_ANY, NULL) : NULL;
	return j ? j : json_null();
}

static int sq_sources(struct db *db, size_t max_gaps, json_t **out)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL, *cnt = NULL, *gaps = NULL;
	json_t *arr = json_array();
	int rc;

	if (!arr)
		return -ENOMEM;
	if (!d->h && sq_reconnect(db) < 0) {
		json_decref(arr);
		return DB_EDOWN;
	}
	rc = sqlite3_prepare_v2(
	    d->h, "SELECT source, last_seen_us, last_seq, boot, stream FROM sources ORDER BY source", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    d->h,
		    "SELECT (SELECT COUNT(*) FROM measurements WHERE source = ?1 AND stream = ?2)"
		    " + (SELECT COUNT(*) FROM items WHERE source = ?1 AND stream = ?2),"
		    " (SELECT COUNT(*) FROM rejected WHERE source = ?1 AND stream = ?2),"
		    " (SELECT MIN(seq) FROM (SELECT seq FROM measurements WHERE source = ?1 AND stream = ?2"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = ?1 AND stream = ?2"
		    "  UNION ALL SELECT seq FROM items WHERE source = ?1 AND stream = ?2)),"
		    " (SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = ?1 AND stream = ?2"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = ?1 AND stream = ?2"
		    "  UNION ALL SELECT seq FROM items WHERE source = ?1 AND stream = ?2))",
		    -1, &cnt, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    d->h,
		    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
		    " FROM (SELECT seq FROM measurements WHERE source = ?1 AND stream = ?3"
		    " UNION ALL SELECT seq FROM rejected WHERE source = ?1 AND stream = ?3"
		    " UNION ALL SELECT seq FROM items WHERE source = ?1 AND stream = ?3))"
		    " WHERE nxt > seq + 1 ORDER BY seq LIMIT ?2",
		    -1, &gaps, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *src = (const char *)sqlite3_column_text(st, 0);
		const char *stream = (const char *)sqlite3_column_text(st, 4);
		int64_t stored, rejected, min_seq, max_seq;
		json_t *g = json_array();
		json_t *o;

		sqlite3_bind_text(cnt, 1, src, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(cnt, 2, stream, -1, SQLITE_TRANSIENT);
		if ((rc = sqlite3_step(cnt)) != SQLITE_ROW) {
			json_decref(g);
			goto leave;
		}
		stored = sqlite3_column_int64(cnt, 0);
		rejected = sqlite3_column_int64(cnt, 1);
		min_seq = sqlite3_column_int64(cnt, 2);
		max_seq = sqlite3_column_int64(cnt, 3);
		sqlite3_reset(cnt);
		/* A stream starts at 1: what is missing before the first seq received is a gap too. */
		if (min_seq > 1 && json_array_size(g) < max_gaps)
			json_array_append_new(g,
			                      json_pack("[I,I]", (json_int_t)1, (json_int_t)(min_seq - 1)));
		sqlite3_bind_text(gaps, 1, src, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(gaps, 2, (sqlite3_int64)max_gaps);
		sqlite3_bind_text(gaps, 3, stream, -1, SQLITE_TRANSIENT);
		while ((rc = sqlite3_step(gaps)) == SQLITE_ROW && json_array_size(g) < max_gaps)
			json_array_append_new(g, json_pack("[I,I]", (json_int_t)sqlite3_column_int64(gaps, 0),
			                                   (json_int_t)sqlite3_column_int64(gaps, 1)));
		sqlite3_reset(gaps);
		o = json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "source", src, "stream", stream,
		              "last_seen_us",
		              (json_int_t)sqlite3_column_int64(st, 1), "last_seq",
		              (json_int_t)sqlite3_column_int64(st, 2), "boot",
		              (json_int_t)sqlite3_column_int64(st, 3), "stored", (json_int_t)stored,
		              "rejected", (json_int_t)rejected, "missing",
		              (json_int_t)(max_seq - stored - rejected), "gaps", g);
		if (!o || json_array_append_new(arr, o) < 0) {
			rc = SQLITE_NOMEM;
			goto leave;
		}
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
leave:
	sqlite3_finalize(st);
	sqlite3_finalize(cnt);
	sqlite3_finalize(gaps);
	if (rc != SQLITE_OK) {
		json_decref(arr);
		return fail(d, "sources", rc);
	}
	*out = arr;
	return 0;
}

static int sq_latest(struct db *db, const char *thing, json_t **out)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	int rc;

	*out = NULL;
	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	rc = sqlite3_prepare_v2(
	    d->h,
	    "SELECT thing, vtype, value, time_us, owner_boot, version FROM measurements"
	    " WHERE thing = ?1 AND owner_boot > 0 ORDER BY owner_boot DESC, version DESC LIMIT 1",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	sqlite3_bind_text(st, 1, thing, -1, SQLITE_STATIC);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*out = json_pack("{s:s,s:s,s:o,s:I,s:I,s:I}", "thing", sqlite3_column_text(st, 0), "type",
		                 sqlite3_column_text(st, 1), "value", column_json(st, 2), "time",
		                 (json_int_t)sqlite3_column_int64(st, 3), "owner_boot",
		                 (json_int_t)sqlite3_column_int64(st, 4), "version",
		                 (json_int_t)sqlite3_column_int64(st, 5));
		rc = *out ? SQLITE_OK : SQLITE_NOMEM;
	} else if (rc == SQLITE_DONE) {
		rc = SQLITE_OK;
	}
leave:
	sqlite3_finalize(st);
	if (rc != SQLITE_OK)
		return fail(d, "latest", rc);
	return 0;
}

static int sq_measurements(struct db *db, const struct db_query *q, json_t **out)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	json_t *arr = json_array();
	char sql[512];
	int rc;

	if (!arr)
		return -ENOMEM;
	if (!d->h && sq_reconnect(db) < 0) {
		json_decref(arr);
		return DB_EDOWN;
	}
	snprintf(
	    sql, sizeof(sql),
	    "SELECT source, seq, thing, vtype, value, time_us, owner_boot, version, received_us, stream,"
	    " owner, via FROM measurements WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR thing = ?2)"
	    " AND (?7 IS NULL OR stream = ?7)"
	    " AND time_us >= ?3 AND time_us <= ?4 AND seq > ?5 ORDER BY source, stream, seq LIMIT ?6");
	rc = sqlite3_prepare_v2(d->h, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	if (q->source)
		sqlite3_bind_text(st, 1, q->source, -1, SQLITE_STATIC);
	if (q->thing)
		sqlite3_bind_text(st, 2, q->thing, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, q->from_us);
	sqlite3_bind_int64(st, 4, q->to_us);
	sqlite3_bind_int64(st, 5, q->after_seq);
	sqlite3_bind_int(st, 6, q->limit);
	if (q->stream)
		sqlite3_bind_text(st, 7, q->stream, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o =
		    json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:I,s:I,s:I,s:I}", "source", sqlite3_column_text(st, 0),
		              "stream", sqlite3_column_text(st, 9),
		              "seq", (json_int_t)sqlite3_column_int64(st, 1), "thing",
		              sqlite3_column_text(st, 2), "type", sqlite3_column_text(st, 3), "value",
		              column_json(st, 4), "time", (json_int_t)sqlite3_column_int64(st, 5),
		              "owner_boot", (json_int_t)sqlite3_column_int64(st, 6), "version",
		              (json_int_t)sqlite3_column_int64(st, 7), "received",
		              (json_int_t)sqlite3_column_int64(st, 8));
		json_object_set_new(o, "owner", json_string((const char *)sqlite3_column_text(st, 10)));
		json_object_set_new(o, "via", json_string((const char *)sqlite3_column_text(st, 11)));
		if (!o || json_array_append_new(arr, o) < 0) {
			rc = SQLITE_NOMEM;
			goto leave;
		}
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
leave:
	sqlite3_finalize(st);
	if (rc != SQLITE_OK) {
		json_decref(arr);
		return fail(d, "measurements", rc);
	}
	*out = arr;
	return 0;
}

static int sq_rejected(struct db *db, const char *source, int limit, json_t **out)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	json_t *arr = json_array();
	int rc;

	if (!arr)
		return -ENOMEM;
	if (!d->h && sq_reconnect(db) < 0) {
		json_decref(arr);
		return DB_EDOWN;
	}
	rc = sqlite3_prepare_v2(
	    d->h,
	    "SELECT source, seq, field, error, item, received_us FROM rejected"
	    " WHERE (?1 IS NULL OR source = ?1) ORDER BY received_us DESC, seq DESC LIMIT ?2",
	    -1, &st, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	if (source)
		sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
	sqlite3_bind_int(st, 2, limit);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o =
		    json_pack("{s:s,s:I,s:s,s:s,s:o,s:I}", "source", sqlite3_column_text(st, 0), "seq",
		              (json_int_t)sqlite3_column_int64(st, 1), "field", sqlite3_column_text(st, 2),
		              "error", sqlite3_column_text(st, 3), "item", column_json(st, 4), "received",
		              (json_int_t)sqlite3_column_int64(st, 5));
		if (!o || json_array_append_new(arr, o) < 0) {
			rc = SQLITE_NOMEM;
			goto leave;
		}
	}
	if (rc == SQLITE_DONE)
		rc = SQLITE_OK;
leave:
	sqlite3_finalize(st);
	if (rc != SQLITE_OK) {
		json_decref(arr);
		return fail(d, "rejected", rc);
	}
	*out = arr;
	return 0;
}

static int sq_exec(struct db *db, const char *sql, const struct db_param *p, size_t np, db_row_fn fn,
                   void *ud, int64_t *changes)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	const char *col[16];
	int rc;

	if (!d->h)
		return DB_EDOWN;
	rc = sqlite3_prepare_v2(d->h, sql, -1, &st, NULL);
	for (size_t i = 0; rc == SQLITE_OK && i < np; i++) {
		/* SQLite numbers "$N" by first appearance: bound by name. */
		char name[32];
		int k;
		snprintf(name, sizeof(name), "$%zu", i + 1);
		k = sqlite3_bind_parameter_index(st, name);
		if (k == 0)
			continue;
		if (p[i].is_int)
			rc = sqlite3_bind_int64(st, k, p[i].i);
		else if (p[i].s)
			rc = sqlite3_bind_text(st, k, p[i].s, -1, SQLITE_STATIC);
	}
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		int n = sqlite3_column_count(st);
		if (n > 16)
			n = 16;
		for (int i = 0; i < n; i++)
			col[i] = (const char *)sqlite3_column_text(st, i);
		rc = fn && fn(ud, n, col) != 0 ? SQLITE_DONE : SQLITE_OK;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE && rc != SQLITE_OK)
		return fail(d, sql, rc);
	if (changes)
		*changes = sqlite3_changes(d->h);
	return 0;
}

static int sq_alarm_put(struct db *db, const struct db_alarm *a)
{
	struct db_sqlite *d = SQ(db);
	int rc;

	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	sqlite3_bind_int64(d->put_alarm, 1, a->id);
	sqlite3_bind_text(d->put_alarm, 2, a->kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(d->put_alarm, 3, a->subject, -1, SQLITE_STATIC);
	sqlite3_bind_text(d->put_alarm, 4, a->message, -1, SQLITE_STATIC);
	sqlite3_bind_int64(d->put_alarm, 5, a->raised_us);
	sqlite3_bind_int64(d->put_alarm, 6, a->cleared_us);
	sqlite3_bind_int64(d->put_alarm, 7, a->count);
	rc = step_done(d->put_alarm);
	return rc == SQLITE_OK ? 0 : fail(d, "alarm", rc);
}

static int sq_alarms_active(struct db *db, void (*fn)(void *ud, const struct db_alarm *a), void *ud)
{
	struct db_sqlite *d = SQ(db);
	sqlite3_stmt *st = NULL;
	int rc;

	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	rc = sqlite3_prepare_v2(d->h,
	                        "SELECT id, kind, subject, message, raised_us, cleared_us, count FROM alarms"
	                        " WHERE cleared_us = 0 ORDER BY id",
	                        -1, &st, NULL);
	while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct db_alarm a = {
		    .id = sqlite3_column_int64(st, 0),
		    .kind = (const char *)sqlite3_column_text(st, 1),
		    .subject = (const char *)sqlite3_column_text(st, 2),
		    .message = (const char *)sqlite3_column_text(st, 3),
		    .raised_us = sqlite3_column_int64(st, 4),
		    .cleared_us = sqlite3_column_int64(st, 5),
		    .count = sqlite3_column_int64(st, 6),
		};
		fn(ud, &a);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE || rc == SQLITE_OK ? 0 : fail(d, "alarms", rc);
}

const struct db_ops db_sqlite_ops = {
    .name = "sqlite",
    .store_apart = true,
    .open = sq_open,
    .exec = sq_exec,
    .close = sq_close,
    .reconnect = sq_reconnect,
    .up = sq_up,
    .store = sq_store,
    .accept_stream = sq_accept_stream,
    .stream_info = sq_stream_info,
    .latest = sq_latest,
    .sources = sq_sources,
    .measurements = sq_measurements,
    .rejected = sq_rejected,
    .alarm_put = sq_alarm_put,
    .alarms_active = sq_alarms_active,
};
