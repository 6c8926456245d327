/*
 * thingsync-collectord: the PostgreSQL backend (see db.h), over libpq.
 * A batch is one transaction: the source's row locked (its stream checked),
 * the stream's row made or updated (its id), the measurements COPYed (see
 * store_measurements(): compared with what is stored only when a key refuses
 * one), the refused items inserted; COMMIT returns once PostgreSQL has it durable
 * (synchronous_commit, the server's default). A lost connection marks the
 * backend down; reconnect() opens a new one.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db.h"

struct db_pg {
	struct db base;
	const struct logger *log;
	const struct db_owner *owners;
	size_t n_owners;
	char *conninfo;
	PGconn *conn;
	bool logged_down; /* say "cannot connect" once per outage, not once per try */
};

#define PG(db) ((struct db_pg *)(db))

/* Rows per INSERT statement: 12 parameters each, well under libpq's 65535. */
#define PG_ROWS_PER_INSERT 500

/* libpq's messages span lines; the log wants one line per event. (Per
 * thread: collectord's storeq stores on a connection of its own.) */
static const char *one_line(const char *msg)
{
	static _Thread_local char line[512];
	size_t n = 0;

	for (const char *p = msg ? msg : ""; *p && n < sizeof(line) - 1; p++) {
		char ch = *p == '\n' || *p == '\t' ? ' ' : *p;
		if (ch == ' ' && (n == 0 || line[n - 1] == ' '))
			continue;
		line[n++] = ch;
	}
	while (n > 0 && line[n - 1] == ' ')
		n--;
	line[n] = '\0';
	return line;
}

static void drop(struct db_pg *d)
{
	if (d->conn)
		PQfinish(d->conn);
	d->conn = NULL;
}

/* A failed command on a connection that is gone means "down"; otherwise it is our error. */
static int fail(struct db_pg *d, const char *what, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	bool down = !d->conn || PQstatus(d->conn) != CONNECTION_OK;

	log_error(d->log, "postgres: %s: %s", what,
	          d->conn ? one_line(PQerrorMessage(d->conn)) : "no connection");
	/*
	 * Class 08 (connection), 53 (insufficient resources: disk full, out of
	 * memory), 57 (operator intervention: shutting down), 25006 (read-only
	 * transaction): the database cannot take writes now.
	 */
	if (state && (!strncmp(state, "08", 2) || !strncmp(state, "53", 2) || !strncmp(state, "57", 2) ||
	              !strcmp(state, "25006")))
		down = true;
	if (res)
		PQclear(res);
	if (down) {
		drop(d);
		return DB_EDOWN;
	}
	return -EIO;
}

static int command(struct db_pg *d, const char *sql)
{
	PGresult *res = PQexec(d->conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		return fail(d, sql, res);
	PQclear(res);
	return 0;
}

static void notice_quiet(void *arg, const char *message)
{
	/* "relation already exists, skipping" and the like: not worth a log line. */
}

/* One value of a one-row query, or NULL (no row, NULL, error: see *r); PQclear the result. */
static PGresult *one(struct db_pg *d, const char *sql, int n, const char *const *v, int *r)
{
	PGresult *res = PQexecParams(d->conn, sql, n, NULL, v, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		*r = fail(d, sql, res);
		return NULL;
	}
	*r = 0;
	return res;
}

/*
 * Makes the schema, or migrates an older one (1, 2, 3), in one transaction. Collectors
 * that share the database and start together take turns (an advisory lock),
 * so one migrates and the others find it done.
 */
static int ensure_schema(struct db_pg *d)
{
	const struct db_dialect dialect = {db_pg_columns_sql, db_pg_columns_count, db_pg_index_sql,
	                                          db_pg_index_count, db_view_pg_sql, true};
	static const char *const migrate[] = {
	    "ALTER TABLE measurements ADD COLUMN stream TEXT NOT NULL DEFAULT ''",
	    "ALTER TABLE measurements DROP CONSTRAINT measurements_pkey",
	    "ALTER TABLE measurements ADD PRIMARY KEY (source, stream, seq)",
	    "ALTER TABLE rejected ADD COLUMN stream TEXT NOT NULL DEFAULT ''",
	    "ALTER TABLE rejected DROP CONSTRAINT rejected_pkey",
	    "ALTER TABLE rejected ADD PRIMARY KEY (source, stream, seq)",
	};
	PGresult *res;
	int64_t version = 0;
	bool found = false, has_old = false;
	char sql[128];
	int r;

	r = command(d, "BEGIN");
	if (r == 0)
		r = command(d, "SELECT pg_advisory_xact_lock(7419000012)");
	if (r == 0)
		r = command(d, "CREATE TABLE IF NOT EXISTS thingsync_schema (version BIGINT NOT NULL)");
	if (r < 0)
		goto leave;
	res = one(d, "SELECT MAX(version) FROM thingsync_schema", 0, NULL, &r);
	if (!res)
		goto leave;
	found = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
	version = found ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	if (found && version > DB_SCHEMA_VERSION) {
		log_error(d->log, "postgres: schema %" PRId64 " is newer than this collector's (%d)", version,
		          DB_SCHEMA_VERSION);
		r = -EPROTO;
		goto leave;
	}
	if (!found) {
		res = one(d, "SELECT to_regclass('measurements') IS NOT NULL", 0, NULL, &r);
		if (!res)
			goto leave;
		has_old = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
		PQclear(res);
	}
	if (has_old) {
		/* Schema 1: PostgreSQL changes the keys in place, in this transaction. */
		for (size_t i = 0; r == 0 && i < sizeof(migrate) / sizeof(migrate[0]); i++)
			r = command(d, migrate[i]);
		for (size_t i = 0; r == 0 && i < db_migrate_1_common_count; i++)
			r = command(d, db_migrate_1_common_sql[i]);
		if (r < 0)
			goto leave;
		log_warn(d->log, "postgres: migrated from schema 1: old measurements kept as stream ''");
	}
	if (has_old || (found && version == 2)) {
		r = db__migrate_2(&d->base, d->owners, d->n_owners, true);
		if (r < 0)
			goto leave;
		log_warn(d->log, "postgres: migrated to schema %d: owner and via of every measurement",
		         DB_SCHEMA_VERSION);
	}
	if (r == 0)
		r = db__schema(&d->base, (found && version < 5) || has_old, !found || version < 5, &dialect);
	if (r < 0)
		goto leave;
	if (found && version < 5)
		log_warn(d->log, "postgres: migrated to schema %d: measurements keyed by stream id and seq",
		         DB_SCHEMA_VERSION);
	if (r == 0 && (!found || version < DB_SCHEMA_VERSION)) {
		snprintf(sql, sizeof(sql), "DELETE FROM thingsync_schema; INSERT INTO thingsync_schema VALUES (%d)",
		         DB_SCHEMA_VERSION);
		r = command(d, sql);
	}
	if (r == 0)
		r = command(d, "COMMIT");
leave:
	if (r < 0 && d->conn)
		PQclear(PQexec(d->conn, "ROLLBACK"));
	return r;
}

static int pg_reconnect(struct db *db)
{
	struct db_pg *d = PG(db);
	int r;

	if (d->conn && PQstatus(d->conn) == CONNECTION_OK) {
		/* "CONNECTION_OK" only says the last command went well: ask the server. */
		PGresult *res = PQexec(d->conn, "SELECT 1");
		bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
		if (ok)
			return 0;
	}
	drop(d);
	d->conn = PQconnectdb(d->conninfo);
	if (!d->conn || PQstatus(d->conn) != CONNECTION_OK) {
		if (!d->logged_down)
			log_error(d->log, "postgres: cannot connect: %s",
			          d->conn ? one_line(PQerrorMessage(d->conn)) : "out of memory");
		d->logged_down = true;
		drop(d);
		return DB_EDOWN;
	}
	PQsetNoticeProcessor(d->conn, notice_quiet, NULL);
	r = ensure_schema(d);
	/* Where a batch's measurements are COPYed before they go in (pg_store): one per session, emptied at
	 * commit. */
	if (r == 0)
		r = command(
		    d,
		    "CREATE TEMP TABLE IF NOT EXISTS push_in (sid BIGINT, seq BIGINT,"
		    " thing TEXT, vtype TEXT, value TEXT, time_us BIGINT, owner_boot BIGINT, version BIGINT,"
		    " received_us BIGINT, owner TEXT, via TEXT) ON COMMIT DELETE ROWS");
	if (r < 0) {
		drop(d);
		return DB_EDOWN;
	}
	log_info(d->log, "postgres: connected to %s:%s/%s", PQhost(d->conn), PQport(d->conn), PQdb(d->conn));
	d->logged_down = false;
	return 0;
}

static int pg_open(const char *conninfo, const struct db_owner *owners, size_t n_owners,
                   const struct logger *log, struct db **ret)
{
	struct db_pg *d = calloc(1, sizeof(*d));
	size_t n;

	if (!d)
		return -ENOMEM;
	d->base.ops = &db_pg_ops;
	d->log = log;
	d->owners = owners;
	d->n_owners = n_owners;
	/* A bounded connect: the collector's loop waits for it. */
	n = strlen(conninfo) + 32;
	d->conninfo = malloc(n);
	if (!d->conninfo) {
		free(d);
		return -ENOMEM;
	}
	if (strstr(conninfo, "connect_timeout") || strstr(conninfo, "://"))
		snprintf(d->conninfo, n, "%s", conninfo);
	else
		snprintf(d->conninfo, n, "%s connect_timeout=3", conninfo);
	pg_reconnect(&d->base);
	*ret = &d->base;
	return 0;
}

static void pg_close(struct db *db)
{
	struct db_pg *d = PG(db);

	if (!d)
		return;
	drop(d);
	free(d->conninfo);
	free(d);
}

static bool pg_up(const struct db *db)
{
	const struct db_pg *d = PG(db);
	return d->conn && PQstatus(d->conn) == CONNECTION_OK;
}

/* Parameters of one multi-row statement, as text. */
struct params {
	const char **v;
	char (*num)[24]; /* storage for the numbers */
	size_t n, cap;
};

static int params_reserve(struct params *p, size_t cap)
{
	if (cap <= p->cap)
		return 0;
	const char **v = realloc(p->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->v = v;
	char(*num)[24] = realloc(p->num, cap * sizeof(*num));
	if (!num)
		return -ENOMEM;
	p->num = num;
	p->cap = cap;
	return 0;
}

static void param_str(struct params *p, const char *s)
{
	p->v[p->n++] = s;
}

static void param_i64(struct params *p, int64_t x)
{
	snprintf(p->num[p->n], sizeof(p->num[0]), "%" PRId64, x);
	p->v[p->n] = p->num[p->n];
	p->n++;
}

/* "INSERT ... VALUES ($1,...,$k),($k+1,...)" for rows of `cols` parameters. */
static int build_insert(struct buf *sql, const char *head, const char *tail, size_t rows, size_t cols)
{
	int r = buf__appendf(sql, "%s", head);
	size_t k = 1;

	for (size_t i = 0; r == 0 && i < rows; i++) {
		r = buf__appendf(sql, "%s(", i ? "," : "");
		for (size_t c = 0; r == 0 && c < cols; c++)
			r = buf__appendf(sql, "%s$%zu", c ? "," : "", k++);
		if (r == 0)
			r = buf__appendf(sql, ")");
	}
	if (r == 0)
		r = buf__appendf(sql, "%s", tail);
	return r;
}

static int exec_params(struct db_pg *d, const char *what, const char *sql, struct params *p, size_t *changed)
{
	PGresult *res = PQexecParams(d->conn, sql, (int)p->n, NULL, p->v, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		return fail(d, what, res);
	if (changed)
		*changed += (size_t)strtoull(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return 0;
}

/* A field of COPY's text format: backslash, tab, newline and carriage return escaped. */
static int copy_field(struct buf *t, const char *s, char sep)
{
	int r = 0;

	for (const char *p = s; r == 0 && *p; p++) {
		const char *esc = *p == '\\'   ? "\\\\"
		                  : *p == '\t' ? "\\t"
		                  : *p == '\n' ? "\\n"
		                  : *p == '\r' ? "\\r"
		                               : NULL;
		if (!esc) {
			size_t n = strcspn(p, "\\\t\n\r");
			r = buf__append(t, p, n);
			p += n - 1;
		} else {
			r = buf__append(t, esc, 2);
		}
	}
	return r == 0 ? buf__append(t, &sep, 1) : r;
}

/* An integer field (buf__appendf's two vsnprintf() were 90 % of a batch's COPY text). */
static int copy_int(struct buf *t, int64_t x, char sep)
{
	int r = buf__append_i64(t, x);

	return r == 0 ? buf__append(t, &sep, 1) : r;
}

/* Rows [from, to) of the batch's measurements appended to `t` in COPY's text format, in the column
 * order of COPY_COLUMNS. */
#define COPY_COLUMNS                                                                                         \
	"(sid, seq, thing, vtype, value, time_us, owner_boot, version, received_us, owner, via)"

static int copy_text(const struct db_batch *b, int64_t sid, size_t from, size_t to, struct buf *t)
{
	int r = 0;

	for (size_t i = from; r == 0 && i < to; i++) {
		const struct db_measurement *m = &b->m[i];
		if ((r = copy_int(t, sid, '\t')) == 0 && (r = copy_int(t, m->seq, '\t')) == 0 && (r = copy_field(t, m->thing, '\t')) == 0 &&
		    (r = copy_field(t, m->vtype, '\t')) == 0 && (r = copy_field(t, m->value, '\t')) == 0 &&
		    (r = copy_int(t, m->time_us, '\t')) == 0 && (r = copy_int(t, m->owner_boot, '\t')) == 0 &&
		    (r = copy_int(t, m->version, '\t')) == 0 &&
		    (r = copy_int(t, b->received_us, '\t')) == 0 && (r = copy_field(t, m->owner, '\t')) == 0)
			r = copy_field(t, m->via, '\n');
	}
	return r;
}

/* Rows of the COPY text written and sent at a time: the server parses and inserts them while the
 * next ones are written (written whole first, the server waited for all of them). */
#define PG_COPY_CHUNK 250

/*
 * Sends the COPY's rows: `t` as it is when `b` is NULL, else the text of
 * b's measurements, written into `t` (emptied first) and sent a chunk at a
 * time; `t` then holds all of it.
 */
static int copy_send(struct db_pg *d, const struct db_batch *b, int64_t sid, struct buf *t)
{
	size_t sent = 0;
	int r = 0;

	if (!b)
		return PQputCopyData(d->conn, t->data, (int)t->len) == 1 ? 0 : DB_EDOWN;
	buf__reset(t);
	for (size_t i = 0; r == 0 && i < b->n; i += PG_COPY_CHUNK) {
		r = copy_text(b, sid, i, b->n - i < PG_COPY_CHUNK ? b->n : i + PG_COPY_CHUNK, t);
		if (r == 0 && PQputCopyData(d->conn, t->data + sent, (int)(t->len - sent)) != 1)
			r = DB_EDOWN;
		sent = t->len;
	}
	return r;
}

/*
 * COPYs the rows (copy_send()) with the statement `sql`: the way in that
 * costs PostgreSQL least (no parameters to parse, no plan per row). 0, 1
 * when a unique key refused a row (with `dup_ok`; nothing of the COPY
 * stays), or a failure.
 */
static int copy_in(struct db_pg *d, const char *sql, const struct db_batch *b, int64_t sid, struct buf *t,
                   bool dup_ok)
{
	PGresult *res = PQexec(d->conn, sql);
	const char *state;
	int r;

	if (PQresultStatus(res) != PGRES_COPY_IN)
		return fail(d, "copy measurements", res);
	PQclear(res);
	r = copy_send(d, b, sid, t);
	if (r == DB_EDOWN ||
	    PQputCopyEnd(d->conn, r < 0 ? "the collector could not write the rows" : NULL) != 1)
		return fail(d, "copy measurements", NULL);
	res = PQgetResult(d->conn);
	state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (r < 0) {
		/* Our own failure (out of memory): the COPY was ended with an error. */
		PQclear(res);
		while ((res = PQgetResult(d->conn)) != NULL)
			PQclear(res);
		return r;
	}
	if (PQresultStatus(res) != PGRES_COMMAND_OK && !(dup_ok && state && !strcmp(state, "23505")))
		return fail(d, "copy measurements", res);
	dup_ok = PQresultStatus(res) != PGRES_COMMAND_OK;
	PQclear(res);
	while ((res = PQgetResult(d->conn)) != NULL)
		PQclear(res);
	return dup_ok ? 1 : 0;
}

/*
 * The batch's measurements, each stored once. First straight into the
 * table with COPY, under a savepoint: a drain's batches are new rows, and
 * that is all they cost. When a unique key refuses a row (a batch sent
 * again, a copy of a change stored before, or the stream going backwards),
 * back to the savepoint and the careful way: COPY into push_in, one INSERT
 * ... SELECT ON CONFLICT DO NOTHING, and the rows not inserted compared with
 * what is stored (*conflict: the first sequence stored with other content).
 */
static int store_measurements(struct db_pg *d, const struct db_batch *b, int64_t sid, struct buf *t,
                              size_t *ins, int64_t *conflict)
{
	struct params none = {0};
	PGresult *q;
	int r;

	/* The savepoint and the COPY in one round trip (a simple query stops at its COPY); the savepoint
	 * is not released: the rest of the transaction runs inside it, and COMMIT takes it all. */
	r = copy_in(d, "SAVEPOINT batch; COPY measurement_rows " COPY_COLUMNS " FROM STDIN", b, sid, t, true);
	if (r == 0) {
		*ins = b->n;
		return 0;
	}
	if (r < 0 || (r = command(d, "ROLLBACK TO SAVEPOINT batch")) < 0)
		return r;
	r = copy_in(d, "COPY push_in FROM STDIN", NULL, 0, t, false);
	if (r == 0)
		r = exec_params(
		    d, "insert measurements",
		    "INSERT INTO measurement_rows " COPY_COLUMNS " SELECT sid, seq, thing,"
		    " vtype, value, time_us, owner_boot, version, received_us, owner, via FROM push_in"
		    " ON CONFLICT DO NOTHING",
		    &none, ins);
	if (r < 0 || *ins == b->n)
		return r;
	q = one(d,
	        "SELECT m.seq FROM push_in v JOIN measurement_rows m ON m.sid = v.sid"
	        " AND m.seq = v.seq WHERE m.thing <> v.thing"
	        " OR m.value <> v.value OR m.time_us <> v.time_us ORDER BY m.seq LIMIT 1",
	        0, NULL, &r);
	if (q) {
		*conflict = PQntuples(q) == 1 ? strtoll(PQgetvalue(q, 0, 0), NULL, 10) : 0;
		PQclear(q);
	}
	return r;
}

static int64_t geti(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* The highest sequence of (source, stream), stored or refused; 0 when none. */
static int pg_stream_last(struct db_pg *d, const char *source, const char *stream, int64_t *out)
{
	const char *v[2] = {source, stream};
	int r;
	PGresult *res =
	    one(d,
	        "SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = $1 AND stream = $2"
	        " UNION ALL SELECT seq FROM rejected WHERE source = $1 AND stream = $2"
	        " UNION ALL SELECT seq FROM items WHERE source = $1 AND stream = $2) s",
	        2, v, &r);

	if (!res)
		return r;
	*out = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return 0;
}

/* Room for the locking query and a quoted source name (at most 63 plain characters). */
#define PG_LOCK_SQL_MAX 256

/* BEGIN, then as db_sqlite.c's check_stream(): which stream the batch goes to, or why it is refused. */
static int pg_check_stream(struct db_pg *d, const struct db_batch *b, struct db_store_result *res,
                           const char **stream)
{
	static const char *const join[] = {
	    "UPDATE rejected SET stream = $2 WHERE source = $1 AND stream = ''",
	    "UPDATE streams SET stream = $2 WHERE source = $1 AND stream = ''",
	};
	const char *v[2] = {b->source, b->stream};
	char cur[DB_STREAM_MAX + 1] = "";
	int64_t legacy_last = 0;
	PGresult *q;
	int r;

	/* The batch's transaction begins here, with the source's row locked (collectors sharing the
	 * database see one stream per source): one round trip, the name as a literal. */
	char *lit = PQescapeLiteral(d->conn, b->source, strlen(b->source));
	char sql[PG_LOCK_SQL_MAX];

	if (!lit)
		return fail(d, "lock source", NULL);
	snprintf(sql, sizeof(sql), "BEGIN; SELECT stream FROM sources WHERE source = %s FOR UPDATE", lit);
	PQfreemem(lit);
	q = PQexec(d->conn, sql);
	if (PQresultStatus(q) != PGRES_TUPLES_OK)
		return fail(d, "lock source", q);
	if (PQntuples(q) == 1)
		snprintf(cur, sizeof(cur), "%s", PQgetvalue(q, 0, 0));
	PQclear(q);
	*stream = b->stream;
	if (strcmp(cur, b->stream) == 0)
		return 0;
	if (*cur) {
		res->outcome = DB_STREAM_CHANGED;
		snprintf(res->current, sizeof(res->current), "%s", cur);
		return pg_stream_last(d, b->source, cur, &res->current_last_seq);
	}
	if (b->n + b->nrej == 0) {
		*stream = "";
		return 0;
	}
	res->adopted = true;
	r = pg_stream_last(d, b->source, "", &legacy_last);
	if (r < 0 || legacy_last == 0 || b->min_seq <= legacy_last)
		return r;
	for (size_t i = 0; r == 0 && i < sizeof(join) / sizeof(join[0]); i++) {
		struct params p = {(const char **)v, NULL, 2, 2};
		r = exec_params(d, "join old rows to the stream", join[i], &p, NULL);
	}
	return r;
}

/*
 * The first sequence of rows [off, off + rows) stored before with other
 * content, or 0. `measurements` picks the table (else rejected, compared by
 * their item).
 */
static int pg_conflict(struct db_pg *d, const struct db_batch *b, const char *stream, bool measurements,
                       size_t off, size_t rows, struct params *p, struct buf *sql, int64_t *seq)
{
	size_t k = 3;
	PGresult *res;
	int r;

	p->n = 0;
	buf__reset(sql);
	param_str(p, b->source);
	param_str(p, stream);
	r = buf__appendf(sql, "%s",
	                 measurements ? "SELECT m.seq FROM measurements m JOIN (VALUES "
	                              : "SELECT m.seq FROM rejected m JOIN (VALUES ");
	for (size_t i = off; r == 0 && i < off + rows; i++) {
		if (measurements) {
			const struct db_measurement *m = &b->m[i];
			r = buf__appendf(sql, "%s($%zu::bigint,$%zu::text,$%zu::text,$%zu::bigint)", i > off ? "," : "", k,
			                 k + 1, k + 2, k + 3);
			k += 4;
			param_i64(p, m->seq);
			param_str(p, m->thing);
			param_str(p, m->value);
			param_i64(p, m->time_us);
		} else {
			const struct db_rejected *x = &b->rej[i];
			r = buf__appendf(sql, "%s($%zu::bigint,$%zu::text)", i > off ? "," : "", k, k + 1);
			k += 2;
			param_i64(p, x->seq);
			param_str(p, x->item);
		}
	}
	if (r == 0)
		r = buf__appendf(sql, "%s",
		                 measurements
		                     ? ") AS v(seq, thing, value, time_us) ON m.seq = v.seq WHERE m.source = $1"
		                       " AND m.stream = $2 AND (m.thing <> v.thing OR m.value <> v.value"
		                       " OR m.time_us <> v.time_us) ORDER BY m.seq LIMIT 1"
		                     : ") AS v(seq, item) ON m.seq = v.seq WHERE m.source = $1 AND m.stream = $2"
		                       " AND m.item <> v.item ORDER BY m.seq LIMIT 1");
	if (r < 0)
		return r;
	res = one(d, sql->data, (int)p->n, p->v, &r);
	if (!res)
		return r;
	*seq = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	return 0;
}

/* The end of a stored batch's transaction as one simple query (names as literals): the source's
 * row and COMMIT when `commit` (the stream's row was updated before the rows: db__stream_id()). */
static int tail_sql(struct db_pg *d, const struct db_batch *b, const char *stream, bool commit, struct buf *sql)
{
	char *src = PQescapeLiteral(d->conn, b->source, strlen(b->source));
	char *str = src ? PQescapeLiteral(d->conn, stream, strlen(stream)) : NULL;
	int r;

	if (!src || !str) {
		PQfreemem(src);
		return fail(d, "update source", NULL);
	}
	buf__reset(sql);
	r = buf__appendf(sql,
	                 "INSERT INTO sources (source, last_seen_us, last_seq, boot, stream) VALUES (%s, %" PRId64
	                 ", %" PRId64 ", %" PRId64 ", %s) ON CONFLICT (source) DO UPDATE SET"
	                 " last_seen_us = excluded.last_seen_us,"
	                 " last_seq = CASE WHEN sources.stream = excluded.stream"
	                 " THEN GREATEST(sources.last_seq, excluded.last_seq) ELSE excluded.last_seq END,"
	                 " boot = excluded.boot, stream = excluded.stream;",
	                 src, b->received_us, b->max_seq, b->boot, str);
	if (r == 0 && commit)
		r = buf__appendf(sql, " COMMIT");
	PQfreemem(src);
	PQfreemem(str);
	return r;
}

static int pg_store(struct db *db, const struct db_batch *b, bool fail_before_commit, struct db_store_result *res)
{
	struct db_pg *d = PG(db);
	struct params p = {0};
	struct buf sql = {0};
	const char *stream = b->stream;
	int64_t conflict = 0, sid = 0;
	size_t ins = 0;
	int r;

	memset(res, 0, sizeof(*res));
	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	r = params_reserve(&p, PG_ROWS_PER_INSERT * 12);
	if (r == 0)
		r = pg_check_stream(d, b, res, &stream);
	if (r == 0 && res->outcome != DB_STORED)
		goto refused;
	/*
	 * Measurements go in first (COPY, see store_measurements()); only when
	 * some row was not inserted are they compared with what is stored. A
	 * conflict rolls everything back, as if checked before.
	 */
	if (r == 0 && b->n + b->nrej > 0)
		r = db__stream_id(db, b, stream, true, &sid);
	if (r == 0 && b->n > 0)
		r = store_measurements(d, b, sid, &sql, &ins, &conflict);
	for (size_t off = 0; r == 0 && conflict == 0 && off < b->nrej; off += PG_ROWS_PER_INSERT) {
		size_t rows = b->nrej - off < PG_ROWS_PER_INSERT ? b->nrej - off : PG_ROWS_PER_INSERT;
		r = pg_conflict(d, b, stream, false, off, rows, &p, &sql, &conflict);
	}
	if (r == 0 && conflict != 0) {
		res->outcome = DB_STREAM_BACKWARDS;
		res->conflict_seq = conflict;
		goto refused;
	}
	for (size_t off = 0; r == 0 && off < b->nrej; off += PG_ROWS_PER_INSERT) {
		size_t rows = b->nrej - off < PG_ROWS_PER_INSERT ? b->nrej - off : PG_ROWS_PER_INSERT;
		p.n = 0;
		buf__reset(&sql);
		r = build_insert(
		    &sql, "INSERT INTO rejected (source, seq, field, error, item, received_us, stream) VALUES ",
		    " ON CONFLICT (source, stream, seq) DO NOTHING", rows, 7);
		if (r < 0)
			break;
		for (size_t i = off; i < off + rows; i++) {
			const struct db_rejected *x = &b->rej[i];
			param_str(&p, b->source);
			param_i64(&p, x->seq);
			param_str(&p, x->field);
			param_str(&p, x->error);
			param_str(&p, x->item);
			param_i64(&p, b->received_us);
			param_str(&p, stream);
		}
		r = exec_params(d, "insert rejected", sql.data, &p, NULL);
	}
	if (r == 0) {
		res->inserted = ins;
		r = db__store_items(db, b, stream, res);
	}
	if (r == 0 && res->outcome != DB_STORED)
		goto refused;
	/* The source's row, then COMMIT: one simple query, one round trip (an
	 * error skips what follows it, COMMIT included, and is answered by the ROLLBACK below). */
	if (r == 0)
		r = tail_sql(d, b, stream, !fail_before_commit, &sql);
	if (r == 0)
		r = command(d, sql.data);
	free(p.v);
	free(p.num);
	buf__free(&sql);
	if (r == 0 && fail_before_commit) {
		command(d, "ROLLBACK");
		return -EIO;
	}
	if (r < 0) {
		if (d->conn)
			PQclear(PQexec(d->conn, "ROLLBACK"));
		return r;
	}
	res->inserted = ins;
	return 0;
refused:
	/* Nothing of a refused batch stays. */
	free(p.v);
	free(p.num);
	buf__free(&sql);
	res->adopted = false;
	if (command(d, "ROLLBACK") < 0)
		return DB_EDOWN;
	return 0;
}

static int pg_accept_stream(struct db *db, const char *source, const char *stream, int64_t now_us)
{
	struct db_pg *d = PG(db);
	struct params p = {0};
	int r;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	r = params_reserve(&p, 3);
	if (r == 0) {
		param_str(&p, source);
		param_str(&p, stream);
		param_i64(&p, now_us);
		r = exec_params(d, "accept stream",
		                "INSERT INTO sources (source, last_seen_us, last_seq, boot, stream) VALUES ($1, $3,"
		                " COALESCE((SELECT last_seq FROM streams WHERE source = $1 AND stream = $2), 0), 0, $2)"
		                " ON CONFLICT (source) DO UPDATE SET stream = excluded.stream,"
		                " last_seq = excluded.last_seq",
		                &p, NULL);
	}
	free(p.v);
	free(p.num);
	return r;
}

static int pg_stream_info(struct db *db, const char *source, json_t **out)
{
	struct db_pg *d = PG(db);
	const char *v[1] = {source};
	char cur[DB_STREAM_MAX + 1] = "";
	int64_t last = 0;
	PGresult *res;
	json_t *streams, *versions, *o;
	int r;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	res = one(d, "SELECT stream FROM sources WHERE source = $1", 1, v, &r);
	if (!res)
		return r;
	if (PQntuples(res) == 1)
		snprintf(cur, sizeof(cur), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	r = pg_stream_last(d, source, cur, &last);
	if (r < 0)
		return r;
	res = one(d,
	          "SELECT stream, first_seq, last_seq, first_us, last_us FROM streams WHERE source = $1"
	          " ORDER BY first_us, stream",
	          1, v, &r);
	if (!res)
		return r;
	streams = json_array();
	for (int i = 0; streams && i < PQntuples(res); i++)
		json_array_append_new(streams, json_pack("{s:s,s:I,s:I,s:I,s:I}", "stream", PQgetvalue(res, i, 0),
		                                         "first_seq", (json_int_t)geti(res, i, 1), "last_seq",
		                                         (json_int_t)geti(res, i, 2), "first_us",
		                                         (json_int_t)geti(res, i, 3), "last_us",
		                                         (json_int_t)geti(res, i, 4)));
	PQclear(res);
	res = one(d,
	          "SELECT DISTINCT ON (thing) thing, owner_boot, version FROM measurements WHERE source = $1"
	          " AND (owner_boot > 0 OR version > 0) ORDER BY thing, owner_boot DESC, version DESC",
	          1, v, &r);
	if (!res) {
		json_decref(streams);
		return r;
	}
	versions = json_array();
	for (int i = 0; versions && i < PQntuples(res); i++)
		json_array_append_new(versions, json_pack("{s:s,s:I,s:I}", "thing", PQgetvalue(res, i, 0), "owner_boot",
		                                          (json_int_t)geti(res, i, 1), "version",
		                                          (json_int_t)geti(res, i, 2)));
	PQclear(res);
	o = json_pack("{s:s,s:s,s:I,s:o*,s:o*}", "source", source, "stream", cur, "last_seq", (json_int_t)last,
	              "streams", streams, "versions", versions);
	if (!o || !streams || !versions) {
		json_decref(o);
		return -ENOMEM;
	}
	*out = o;
	return 0;
}

static PGresult *query(struct db_pg *d, const char *sql, int n, const char *const *v)
{
	PGresult *res = PQexecParams(d->conn, sql, n, NULL, v, NULL, NULL, 0);

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		fail(d, sql, res);
		return NULL;
	}
	return res;
}

static json_t *getj(PGresult *res, int row, int col)
{
	json_t *j = json_loads(PQgetvalue(res, row, col), JSON_DECODE_ANY, NULL);
	return j ? j : json_null();
}

static int pg_sources(struct db *db, size_t max_gaps, json_t **out)
{
	struct db_pg *d = PG(db);
	PGresult *src, *cnt = NULL, *gaps = NULL;
	json_t *arr;
	char lim[24];

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	src = query(d, "SELECT source, last_seen_us, last_seq, boot, stream FROM sources ORDER BY source", 0, NULL);
	if (!src)
		return DB_EDOWN;
	arr = json_array();
	snprintf(lim, sizeof(lim), "%zu", max_gaps);
	for (int i = 0; arr && i < PQntuples(src); i++) {
		const char *v[3] = {PQgetvalue(src, i, 0), lim, PQgetvalue(src, i, 4)};
		int64_t stored, rejected, min_seq, max_seq;
		json_t *g = json_array();

		cnt = query(
		    d,
		    "SELECT (SELECT COUNT(*) FROM measurements WHERE source = $1 AND stream = $3)"
		    " + (SELECT COUNT(*) FROM items WHERE source = $1 AND stream = $3),"
		    " (SELECT COUNT(*) FROM rejected WHERE source = $1 AND stream = $3),"
		    " (SELECT MIN(seq) FROM (SELECT seq FROM measurements WHERE source = $1 AND stream = $3"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = $1 AND stream = $3"
		    "  UNION ALL SELECT seq FROM items WHERE source = $1 AND stream = $3) s),"
		    " (SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = $1 AND stream = $3"
		    "  UNION ALL SELECT seq FROM rejected WHERE source = $1 AND stream = $3"
		    "  UNION ALL SELECT seq FROM items WHERE source = $1 AND stream = $3) s)"
		    " WHERE $2::bigint IS NOT NULL",
		    3, v);
		gaps =
		    cnt ? query(
		              d,
		              "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
		              " FROM (SELECT seq FROM measurements WHERE source = $1 AND stream = $3"
		              " UNION ALL SELECT seq FROM rejected WHERE source = $1 AND stream = $3"
		              " UNION ALL SELECT seq FROM items WHERE source = $1 AND stream = $3) s) t"
		              " WHERE nxt > seq + 1 ORDER BY seq LIMIT $2",
		              3, v)
		        : NULL;
		if (!cnt || !gaps) {
			json_decref(g);
			json_decref(arr);
			PQclear(cnt);
			PQclear(src);
			return pg_up(db) ? -EIO : DB_EDOWN;
		}
		stored = geti(cnt, 0, 0);
		rejected = geti(cnt, 0, 1);
		min_seq = geti(cnt, 0, 2);
		max_seq = geti(cnt, 0, 3);
		if (min_seq > 1)
			json_array_append_new(g,
			                      json_pack("[I,I]", (json_int_t)1, (json_int_t)(min_seq - 1)));
		for (int k = 0; k < PQntuples(gaps) && json_array_size(g) < max_gaps; k++)
			json_array_append_new(g, json_pack("[I,I]", (json_int_t)geti(gaps, k, 0),
			                                   (json_int_t)geti(gaps, k, 1)));
		json_array_append_new(
		    arr, json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "source", v[0], "stream", v[2],
		                   "last_seen_us",
		                   (json_int_t)geti(src, i, 1), "last_seq", (json_int_t)geti(src, i, 2),
		                   "boot", (json_int_t)geti(src, i, 3), "stored", (json_int_t)stored,
		                   "rejected", (json_int_t)rejected, "missing",
		                   (json_int_t)(max_seq - stored - rejected), "gaps", g));
		PQclear(cnt);
		PQclear(gaps);
	}
	PQclear(src);
	if (!arr)
		return -ENOMEM;
	*out = arr;
	return 0;
}

static int pg_measurements(struct db *db, const struct db_query *q, json_t **out)
{
	struct db_pg *d = PG(db);
	char from[24], to[24], after[24], lim[24];
	const char *v[7];
	PGresult *res;
	json_t *arr;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	snprintf(from, sizeof(from), "%" PRId64, q->from_us);
	snprintf(to, sizeof(to), "%" PRId64, q->to_us);
	snprintf(after, sizeof(after), "%" PRId64, q->after_seq);
	snprintf(lim, sizeof(lim), "%d", q->limit);
	v[0] = q->source;
	v[1] = q->thing;
	v[2] = from;
	v[3] = to;
	v[4] = after;
	v[5] = lim;
	v[6] = q->stream;
	res = query(
	    d,
	    "SELECT source, seq, thing, vtype, value, time_us, owner_boot, version, received_us, stream, "
	    "owner, via"
	    " FROM measurements WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR thing = $2)"
	    " AND ($7::text IS NULL OR stream = $7)"
	    " AND time_us >= $3 AND time_us <= $4 AND seq > $5 ORDER BY source, stream, seq LIMIT $6",
	    7, v);
	if (!res)
		return pg_up(db) ? -EIO : DB_EDOWN;
	arr = json_array();
	for (int i = 0; arr && i < PQntuples(res); i++)
		json_array_append_new(
		    arr, json_pack("{s:s,s:s,s:I,s:s,s:s,s:o,s:I,s:I,s:I,s:I}", "source", PQgetvalue(res, i, 0),
		                   "stream", PQgetvalue(res, i, 9),
		                   "seq", (json_int_t)geti(res, i, 1), "thing", PQgetvalue(res, i, 2), "type",
		                   PQgetvalue(res, i, 3), "value", getj(res, i, 4), "time",
		                   (json_int_t)geti(res, i, 5), "owner_boot", (json_int_t)geti(res, i, 6),
		                   "version", (json_int_t)geti(res, i, 7), "received",
		                   (json_int_t)geti(res, i, 8)));
	for (int i = 0; arr && i < PQntuples(res); i++) {
		json_object_set_new(json_array_get(arr, (size_t)i), "owner",
		                    json_string(PQgetvalue(res, i, 10)));
		json_object_set_new(json_array_get(arr, (size_t)i), "via",
		                    json_string(PQgetvalue(res, i, 11)));
	}
	PQclear(res);
	if (!arr)
		return -ENOMEM;
	*out = arr;
	return 0;
}

static int pg_latest(struct db *db, const char *thing, json_t **out)
{
	struct db_pg *d = PG(db);
	const char *v[1] = {thing};
	PGresult *res;

	*out = NULL;
	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	res = query(d,
	            "SELECT thing, vtype, value, time_us, owner_boot, version FROM measurements"
	            " WHERE thing = $1 AND owner_boot > 0 ORDER BY owner_boot DESC, version DESC LIMIT 1",
	            1, v);
	if (!res)
		return pg_up(db) ? -EIO : DB_EDOWN;
	if (PQntuples(res) == 1) {
		*out = json_pack("{s:s,s:s,s:o,s:I,s:I,s:I}", "thing", PQgetvalue(res, 0, 0), "type",
		                 PQgetvalue(res, 0, 1), "value", getj(res, 0, 2), "time",
		                 (json_int_t)geti(res, 0, 3), "owner_boot", (json_int_t)geti(res, 0, 4),
		                 "version", (json_int_t)geti(res, 0, 5));
		if (!*out) {
			PQclear(res);
			return -ENOMEM;
		}
	}
	PQclear(res);
	return 0;
}

static int pg_rejected(struct db *db, const char *source, int limit, json_t **out)
{
	struct db_pg *d = PG(db);
	char lim[24];
	const char *v[2] = {source, lim};
	PGresult *res;
	json_t *arr;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	snprintf(lim, sizeof(lim), "%d", limit);
	res = query(d,
	            "SELECT source, seq, field, error, item, received_us FROM rejected"
	            " WHERE ($1::text IS NULL OR source = $1) ORDER BY received_us DESC, seq DESC LIMIT $2",
	            2, v);
	if (!res)
		return pg_up(db) ? -EIO : DB_EDOWN;
	arr = json_array();
	for (int i = 0; arr && i < PQntuples(res); i++)
		json_array_append_new(arr,
		                      json_pack("{s:s,s:I,s:s,s:s,s:o,s:I}", "source", PQgetvalue(res, i, 0),
		                                "seq", (json_int_t)geti(res, i, 1), "field",
		                                PQgetvalue(res, i, 2), "error", PQgetvalue(res, i, 3), "item",
		                                getj(res, i, 4), "received", (json_int_t)geti(res, i, 5)));
	PQclear(res);
	if (!arr)
		return -ENOMEM;
	*out = arr;
	return 0;
}

static int pg_exec(struct db *db, const char *sql, const struct db_param *p, size_t np, db_row_fn fn,
                   void *ud, int64_t *changes)
{
	struct db_pg *d = PG(db);
	const char *v[16], *col[16];
	char num[16][24];
	PGresult *res;

	if (!d->conn)
		return DB_EDOWN;
	if (np > 16)
		return -EINVAL;
	for (size_t i = 0; i < np; i++) {
		v[i] = p[i].s;
		if (p[i].is_int) {
			snprintf(num[i], sizeof(num[i]), "%" PRId64, p[i].i);
			v[i] = num[i];
		}
	}
	res = PQexecParams(d->conn, sql, (int)np, NULL, v, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		return fail(d, sql, res);
	for (int r = 0; fn && r < PQntuples(res); r++) {
		int n = PQnfields(res) < 16 ? PQnfields(res) : 16;
		for (int c = 0; c < n; c++)
			col[c] = PQgetisnull(res, r, c) ? NULL : PQgetvalue(res, r, c);
		if (fn(ud, n, col) != 0)
			break;
	}
	if (changes)
		*changes = strtoll(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return 0;
}

static int pg_alarm_put(struct db *db, const struct db_alarm *a)
{
	struct db_pg *d = PG(db);
	struct params p = {0};
	int r;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	r = params_reserve(&p, 7);
	if (r == 0) {
		param_i64(&p, a->id);
		param_str(&p, a->kind);
		param_str(&p, a->subject);
		param_str(&p, a->message);
		param_i64(&p, a->raised_us);
		param_i64(&p, a->cleared_us);
		param_i64(&p, a->count);
		r = exec_params(
		    d, "alarm",
		    "INSERT INTO alarms (id, kind, subject, message, raised_us, cleared_us, count)"
		    " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET"
		    " message = excluded.message, cleared_us = excluded.cleared_us, count = excluded.count",
		    &p, NULL);
	}
	free(p.v);
	free(p.num);
	return r;
}

static int pg_alarms_active(struct db *db, void (*fn)(void *ud, const struct db_alarm *a), void *ud)
{
	struct db_pg *d = PG(db);
	PGresult *res;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	res = query(d,
	            "SELECT id, kind, subject, message, raised_us, cleared_us, count FROM alarms"
	            " WHERE cleared_us = 0 ORDER BY id",
	            0, NULL);
	if (!res)
		return pg_up(db) ? -EIO : DB_EDOWN;
	for (int i = 0; i < PQntuples(res); i++) {
		struct db_alarm a = {
		    .id = geti(res, i, 0),
		    .kind = PQgetvalue(res, i, 1),
		    .subject = PQgetvalue(res, i, 2),
		    .message = PQgetvalue(res, i, 3),
		    .raised_us = geti(res, i, 4),
		    .cleared_us = geti(res, i, 5),
		    .count = geti(res, i, 6),
		};
		fn(ud, &a);
	}
	PQclear(res);
	return 0;
}

const struct db_ops db_pg_ops = {
    .name = "postgres",
    .store_apart = true,
    .open = pg_open,
    .exec = pg_exec,
    .close = pg_close,
    .reconnect = pg_reconnect,
    .up = pg_up,
    .store = pg_store,
    .accept_stream = pg_accept_stream,
    .stream_info = pg_stream_info,
    .latest = pg_latest,
    .sources = pg_sources,
    .measurements = pg_measurements,
    .rejected = pg_rejected,
    .alarm_put = pg_alarm_put,
    .alarms_active = pg_alarms_active,
};
