/*
 * thingsync-collectord: the SQLite backend (see db.h). One file, WAL mode
 * with synchronous=FULL: a COMMIT returns once the batch is on disk, which is
 * what lets the collector answer 200 after it.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "db.h"

struct db_sqlite {
	struct db base;
	const struct logger *log;
	char *path;
	sqlite3 *h;
	sqlite3_stmt *ins_m, *ins_r, *upd_src, *put_alarm;
};

#define SQ(db) ((struct db_sqlite *)(db))

static const char sql_ins_m[] =
    "INSERT OR IGNORE INTO measurements (source, seq, thing, vtype, value, time_us, owner_boot, version,"
    " received_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char sql_ins_r[] =
    "INSERT OR IGNORE INTO rejected (source, seq, field, error, item, received_us)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char sql_upd_src[] =
    "INSERT INTO sources (source, last_seen_us, last_seq, boot) VALUES (?1, ?2, ?3, ?4)"
    " ON CONFLICT (source) DO UPDATE SET last_seen_us = excluded.last_seen_us,"
    " last_seq = max(sources.last_seq, excluded.last_seq), boot = excluded.boot";
static const char sql_put_alarm[] =
    "INSERT INTO alarms (id, kind, subject, message, raised_us, cleared_us, count)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO UPDATE SET message = excluded.message,"
    " cleared_us = excluded.cleared_us, count = excluded.count";

static void finalize_all(struct db_sqlite *d)
{
	sqlite3_finalize(d->ins_m);
	sqlite3_finalize(d->ins_r);
	sqlite3_finalize(d->upd_src);
	sqlite3_finalize(d->put_alarm);
	d->ins_m = d->ins_r = d->upd_src = d->put_alarm = NULL;
	if (d->h)
		sqlite3_close_v2(d->h);
	d->h = NULL;
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

static int sq_reconnect(struct db *db)
{
	struct db_sqlite *d = SQ(db);
	int rc;

	if (d->h) {
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
	sqlite3_busy_timeout(d->h, 2000);
	if ((rc = exec(d, "PRAGMA journal_mode=WAL")) != SQLITE_OK ||
	    (rc = exec(d, "PRAGMA synchronous=FULL")) != SQLITE_OK)
		goto bad;
	for (size_t i = 0; i < db_schema_count; i++)
		if ((rc = exec(d, db_schema_sql[i])) != SQLITE_OK)
			goto bad;
	if ((rc = sqlite3_prepare_v2(d->h, sql_ins_m, -1, &d->ins_m, NULL)) != SQLITE_OK ||
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

static int sq_open(const char *conninfo, const struct logger *log, struct db **ret)
{
	struct db_sqlite *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	d->base.ops = &db_sqlite_ops;
	d->log = log;
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

static int sq_store(struct db *db, const struct db_batch *b, bool fail_before_commit, size_t *inserted)
{
	struct db_sqlite *d = SQ(db);
	const char *what = "BEGIN";
	size_t ins = 0;
	int rc;

	if (!d->h && sq_reconnect(db) < 0)
		return DB_EDOWN;
	rc = sqlite3_exec(d->h, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return fail(d, what, rc);
	what = "insert measurement";
	for (size_t i = 0; i < b->n; i++) {
		const struct db_measurement *m = &b->m[i];
		sqlite3_bind_text(d->ins_m, 1, b->source, -1, SQLITE_STATIC);
		sqlite3_bind_int64(d->ins_m, 2, m->seq);
		sqlite3_bind_text(d->ins_m, 3, m->thing, -1, SQLITE_STATIC);
		sqlite3_bind_text(d->ins_m, 4, m->vtype, -1, SQLITE_STATIC);
		sqlite3_bind_text(d->ins_m, 5, m->value, -1, SQLITE_STATIC);
		sqlite3_bind_int64(d->ins_m, 6, m->time_us);
		sqlite3_bind_int64(d->ins_m, 7, m->owner_boot);
		sqlite3_bind_int64(d->ins_m, 8, m->version);
		sqlite3_bind_int64(d->ins_m, 9, b->received_us);
		rc = step_done(d->ins_m);
		if (rc != SQLITE_OK)
			goto rollback;
		ins += (size_t)sqlite3_changes(d->h);
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
		rc = step_done(d->ins_r);
		if (rc != SQLITE_OK)
			goto rollback;
	}
	what = "update source";
	sqlite3_bind_text(d->upd_src, 1, b->source, -1, SQLITE_STATIC);
	sqlite3_bind_int64(d->upd_src, 2, b->received_us);
	sqlite3_bind_int64(d->upd_src, 3, b->max_seq);
	sqlite3_bind_int64(d->upd_src, 4, b->boot);
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
	*inserted = ins;
	return 0;
rollback : {
	int r = fail(d, what, rc);
	if (d->h)
		sqlite3_exec(d->h, "ROLLBACK", NULL, NULL, NULL);
	return r;
}
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
	    d->h, "SELECT source, last_seen_us, last_seq, boot FROM sources ORDER BY source", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    d->h,
		    "SELECT (SELECT COUNT(*) FROM measurements WHERE source = ?1),"
		    " (SELECT COUNT(*) FROM rejected WHERE source = ?1),"
		    " (SELECT MIN(seq) FROM (SELECT seq FROM measurements WHERE source = ?1"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = ?1)),"
		    " (SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = ?1"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = ?1))",
		    -1, &cnt, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(
		    d->h,
		    "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
		    " FROM (SELECT seq FROM measurements WHERE source = ?1"
		    " UNION ALL SELECT seq FROM rejected WHERE source = ?1))"
		    " WHERE nxt > seq + 1 ORDER BY seq LIMIT ?2",
		    -1, &gaps, NULL);
	if (rc != SQLITE_OK)
		goto leave;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *src = (const char *)sqlite3_column_text(st, 0);
		int64_t stored, rejected, min_seq, max_seq;
		json_t *g = json_array();
		json_t *o;

		sqlite3_bind_text(cnt, 1, src, -1, SQLITE_TRANSIENT);
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
		while ((rc = sqlite3_step(gaps)) == SQLITE_ROW && json_array_size(g) < max_gaps)
			json_array_append_new(g, json_pack("[I,I]", (json_int_t)sqlite3_column_int64(gaps, 0),
			                                   (json_int_t)sqlite3_column_int64(gaps, 1)));
		sqlite3_reset(gaps);
		o = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "source", src, "last_seen_us",
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
	snprintf(sql, sizeof(sql),
	         "SELECT source, seq, thing, vtype, value, time_us, owner_boot, version, received_us"
	         " FROM measurements WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR thing = ?2)"
	         " AND time_us >= ?3 AND time_us <= ?4 AND seq > ?5 ORDER BY source, seq LIMIT ?6");
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
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		json_t *o =
		    json_pack("{s:s,s:I,s:s,s:s,s:o,s:I,s:I,s:I,s:I}", "source", sqlite3_column_text(st, 0),
		              "seq", (json_int_t)sqlite3_column_int64(st, 1), "thing",
		              sqlite3_column_text(st, 2), "type", sqlite3_column_text(st, 3), "value",
		              column_json(st, 4), "time", (json_int_t)sqlite3_column_int64(st, 5),
		              "owner_boot", (json_int_t)sqlite3_column_int64(st, 6), "version",
		              (json_int_t)sqlite3_column_int64(st, 7), "received",
		              (json_int_t)sqlite3_column_int64(st, 8));
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
    .open = sq_open,
    .close = sq_close,
    .reconnect = sq_reconnect,
    .up = sq_up,
    .store = sq_store,
    .sources = sq_sources,
    .measurements = sq_measurements,
    .rejected = sq_rejected,
    .alarm_put = sq_alarm_put,
    .alarms_active = sq_alarms_active,
};
