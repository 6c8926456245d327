/*
 * thingsync-collectord: the PostgreSQL backend (see db.h), over libpq.
 * A batch is one transaction with one multi-row INSERT ... ON CONFLICT DO
 * NOTHING per table; COMMIT returns once PostgreSQL has it durable
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
	char *conninfo;
	PGconn *conn;
	bool logged_down; /* say "cannot connect" once per outage, not once per try */
};

#define PG(db) ((struct db_pg *)(db))

/* Rows per INSERT statement: 9 parameters each, well under libpq's 65535. */
#define PG_ROWS_PER_INSERT 500

/* libpq's messages span lines; the log wants one line per event. */
static const char *one_line(const char *msg)
{
	static char line[512];
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
	for (size_t i = 0; i < db_schema_count; i++) {
		r = command(d, db_schema_sql[i]);
		if (r < 0) {
			drop(d);
			return DB_EDOWN;
		}
	}
	log_info(d->log, "postgres: connected to %s:%s/%s", PQhost(d->conn), PQport(d->conn), PQdb(d->conn));
	d->logged_down = false;
	return 0;
}

static int pg_open(const char *conninfo, const struct logger *log, struct db **ret)
{
	struct db_pg *d = calloc(1, sizeof(*d));
	size_t n;

	if (!d)
		return -ENOMEM;
	d->base.ops = &db_pg_ops;
	d->log = log;
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

static int pg_store(struct db *db, const struct db_batch *b, bool fail_before_commit, size_t *inserted)
{
	struct db_pg *d = PG(db);
	struct params p = {0};
	struct buf sql = {0};
	size_t ins = 0;
	int r;

	if (!pg_up(db) && pg_reconnect(db) < 0)
		return DB_EDOWN;
	r = command(d, "BEGIN");
	if (r < 0)
		return r;
	r = params_reserve(&p, PG_ROWS_PER_INSERT * 9);
	for (size_t off = 0; r == 0 && off < b->n; off += PG_ROWS_PER_INSERT) {
		size_t rows = b->n - off < PG_ROWS_PER_INSERT ? b->n - off : PG_ROWS_PER_INSERT;
		p.n = 0;
		buf__reset(&sql);
		r = build_insert(
		    &sql,
		    "INSERT INTO measurements (source, seq, thing, vtype, value, time_us, owner_boot,"
		    " version, received_us) VALUES ",
		    " ON CONFLICT (source, seq) DO NOTHING", rows, 9);
		if (r < 0)
			break;
		for (size_t i = off; i < off + rows; i++) {
			const struct db_measurement *m = &b->m[i];
			param_str(&p, b->source);
			param_i64(&p, m->seq);
			param_str(&p, m->thing);
			param_str(&p, m->vtype);
			param_str(&p, m->value);
			param_i64(&p, m->time_us);
			param_i64(&p, m->owner_boot);
			param_i64(&p, m->version);
			param_i64(&p, b->received_us);
		}
		r = exec_params(d, "insert measurements", sql.data, &p, &ins);
	}
	for (size_t off = 0; r == 0 && off < b->nrej; off += PG_ROWS_PER_INSERT) {
		size_t rows = b->nrej - off < PG_ROWS_PER_INSERT ? b->nrej - off : PG_ROWS_PER_INSERT;
		p.n = 0;
		buf__reset(&sql);
		r = build_insert(
		    &sql, "INSERT INTO rejected (source, seq, field, error, item, received_us) VALUES ",
		    " ON CONFLICT (source, seq) DO NOTHING", rows, 6);
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
		}
		r = exec_params(d, "insert rejected", sql.data, &p, NULL);
	}
	if (r == 0) {
		p.n = 0;
		param_str(&p, b->source);
		param_i64(&p, b->received_us);
		param_i64(&p, b->max_seq);
		param_i64(&p, b->boot);
		r = exec_params(
		    d, "update source",
		    "INSERT INTO sources (source, last_seen_us, last_seq, boot) VALUES ($1, $2, $3, $4)"
		    " ON CONFLICT (source) DO UPDATE SET last_seen_us = excluded.last_seen_us,"
		    " last_seq = GREATEST(sources.last_seq, excluded.last_seq), boot = excluded.boot",
		    &p, NULL);
	}
	free(p.v);
	free(p.num);
	buf__free(&sql);
	if (r == 0 && fail_before_commit) {
		command(d, "ROLLBACK");
		return -EIO;
	}
	if (r == 0)
		r = command(d, "COMMIT");
	if (r < 0) {
		if (d->conn)
			PQclear(PQexec(d->conn, "ROLLBACK"));
		return r;
	}
	*inserted = ins;
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

static int64_t geti(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
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
	src = query(d, "SELECT source, last_seen_us, last_seq, boot FROM sources ORDER BY source", 0, NULL);
	if (!src)
		return DB_EDOWN;
	arr = json_array();
	snprintf(lim, sizeof(lim), "%zu", max_gaps);
	for (int i = 0; arr && i < PQntuples(src); i++) {
		const char *v[2] = {PQgetvalue(src, i, 0), lim};
		int64_t stored, rejected, min_seq, max_seq;
		json_t *g = json_array();

		cnt = query(d,
		            "SELECT (SELECT COUNT(*) FROM measurements WHERE source = $1),"
		            " (SELECT COUNT(*) FROM rejected WHERE source = $1),"
		            " (SELECT MIN(seq) FROM (SELECT seq FROM measurements WHERE source = $1"
		            "  UNION ALL SELECT seq FROM rejected WHERE source = $1) s),"
		            " (SELECT MAX(seq) FROM (SELECT seq FROM measurements WHERE source = $1"
		            "  UNION ALL SELECT seq FROM rejected WHERE source = $1) s)",
		            1, v);
		gaps =
		    cnt ? query(
		              d,
		              "SELECT seq + 1, nxt - 1 FROM (SELECT seq, LEAD(seq) OVER (ORDER BY seq) AS nxt"
		              " FROM (SELECT seq FROM measurements WHERE source = $1"
		              " UNION ALL SELECT seq FROM rejected WHERE source = $1) s) t"
		              " WHERE nxt > seq + 1 ORDER BY seq LIMIT $2",
		              2, v)
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
		    arr, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:o}", "source", v[0], "last_seen_us",
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
	const char *v[6];
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
	res = query(
	    d,
	    "SELECT source, seq, thing, vtype, value, time_us, owner_boot, version, received_us"
	    " FROM measurements WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR thing = $2)"
	    " AND time_us >= $3 AND time_us <= $4 AND seq > $5 ORDER BY source, seq LIMIT $6",
	    6, v);
	if (!res)
		return pg_up(db) ? -EIO : DB_EDOWN;
	arr = json_array();
	for (int i = 0; arr && i < PQntuples(res); i++)
		json_array_append_new(
		    arr, json_pack("{s:s,s:I,s:s,s:s,s:o,s:I,s:I,s:I,s:I}", "source", PQgetvalue(res, i, 0),
		                   "seq", (json_int_t)geti(res, i, 1), "thing", PQgetvalue(res, i, 2), "type",
		                   PQgetvalue(res, i, 3), "value", getj(res, i, 4), "time",
		                   (json_int_t)geti(res, i, 5), "owner_boot", (json_int_t)geti(res, i, 6),
		                   "version", (json_int_t)geti(res, i, 7), "received",
		                   (json_int_t)geti(res, i, 8)));
	PQclear(res);
	if (!arr)
		return -ENOMEM;
	*out = arr;
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
    .open = pg_open,
    .close = pg_close,
    .reconnect = pg_reconnect,
    .up = pg_up,
    .store = pg_store,
    .sources = pg_sources,
    .measurements = pg_measurements,
    .rejected = pg_rejected,
    .alarm_put = pg_alarm_put,
    .alarms_active = pg_alarms_active,
};
