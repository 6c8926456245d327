/*
 * thingsync-collectord: what both storage backends share (see db.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"

#define ITEMS_DDL                                                                                            \
	"CREATE TABLE IF NOT EXISTS items ("                                                                 \
	" source TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL,"              \
	" item TEXT NOT NULL, received_us BIGINT NOT NULL, PRIMARY KEY (source, stream, seq))"

/* The measurements of schemas 2 to 4, keyed by their stream's two names: what the migrations from
 * them work on (db_sqlite.c's from schema 1 makes it again), before schema 5's rebuild. */
const char db_measurements_4_sql[] =
    "CREATE TABLE IF NOT EXISTS measurements ("
    " source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, thing TEXT NOT NULL,"
    " vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL, owner_boot BIGINT NOT NULL,"
    " version BIGINT NOT NULL, received_us BIGINT NOT NULL, owner TEXT NOT NULL DEFAULT '',"
    " via TEXT NOT NULL DEFAULT 'live', PRIMARY KEY (source, stream, seq))";

/*
 * Plain SQL both SQLite and PostgreSQL accept: the tables of DB_SCHEMA_VERSION
 * (db_index_sql follows them). Schema 5 keys a measurement by its stream's
 * id (streams.id) and its sequence, two integers, where schemas 2 to 4 keyed
 * it by (source, stream, seq), two text columns first: the primary key was
 * 20.2k of a drained row's 48k instructions in PostgreSQL, its entries 64
 * bytes and more, inserted between other streams' (BENCHMARKS.md, sessions
 * 11 and 12). The view `measurements` (db_view_sqlite_sql, db_view_pg_sql)
 * shows them as before, with the stream's source and name.
 */
const char *const db_schema_sql[] = {
    "CREATE TABLE IF NOT EXISTS measurement_rows ("
    " sid BIGINT NOT NULL, seq BIGINT NOT NULL, thing TEXT NOT NULL,"
    " vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL, owner_boot BIGINT NOT NULL,"
    " version BIGINT NOT NULL, received_us BIGINT NOT NULL, owner TEXT NOT NULL DEFAULT '',"
    " via TEXT NOT NULL DEFAULT 'live', PRIMARY KEY (sid, seq))",
    "CREATE TABLE IF NOT EXISTS rejected ("
    " source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, field TEXT NOT NULL,"
    " error TEXT NOT NULL, item TEXT NOT NULL, received_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream, seq))",
    "CREATE TABLE IF NOT EXISTS sources ("
    " source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " boot BIGINT NOT NULL, stream TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS streams ("
    " source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " first_us BIGINT NOT NULL, last_us BIGINT NOT NULL, id BIGINT NOT NULL, PRIMARY KEY (source, stream))",
    "CREATE TABLE IF NOT EXISTS alarms ("
    " id BIGINT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL,"
    " raised_us BIGINT NOT NULL, cleared_us BIGINT NOT NULL, count BIGINT NOT NULL)",
    ITEMS_DDL,
    "CREATE TABLE IF NOT EXISTS recovery_gaps ("
    " owner TEXT NOT NULL, from_us BIGINT NOT NULL, to_us BIGINT NOT NULL, via TEXT NOT NULL,"
    " received_us BIGINT NOT NULL, source TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream, seq))",
    "CREATE TABLE IF NOT EXISTS cumuls ("
    " owner TEXT NOT NULL, thing TEXT NOT NULL, day TEXT NOT NULL, cumul TEXT NOT NULL, via TEXT NOT NULL,"
    " received_us BIGINT NOT NULL, source TEXT NOT NULL, stream TEXT NOT NULL, seq BIGINT NOT NULL,"
    " PRIMARY KEY (owner, thing, day))",
    "CREATE TABLE IF NOT EXISTS pulls ("
    " id BIGINT PRIMARY KEY, from_s BIGINT NOT NULL, to_s BIGINT NOT NULL, reason TEXT NOT NULL UNIQUE,"
    " state TEXT NOT NULL, attempts BIGINT NOT NULL, requested_us BIGINT NOT NULL,"
    " updated_us BIGINT NOT NULL, recovery_id TEXT NOT NULL, error TEXT NOT NULL)",
};
const size_t db_schema_count = sizeof(db_schema_sql) / sizeof(db_schema_sql[0]);

/* The indexes, after the tables (and after PostgreSQL's db_pg_columns_sql: its collation changes
 * would build them again). */
const char *const db_index_sql[] = {
    "CREATE UNIQUE INDEX IF NOT EXISTS streams_id ON streams (id)",
    "CREATE INDEX IF NOT EXISTS measurements_thing_time ON measurement_rows (thing, time_us)",
    /* A window lost is kept once, however many recoveries report it. */
    "CREATE UNIQUE INDEX IF NOT EXISTS recovery_gaps_window ON recovery_gaps (owner, from_us, to_us)",
    /*
     * A change is stored once, whatever path brought it (db.h). Keyed by the
     * owner's boot and version first (schema 4): an owner numbers its changes
     * of all its things with one counter, so its new entries go to one place
     * of the index, compared as integers. Schema 3's measurements_identity,
     * (owner, thing, owner_boot, version), took a live stream's rows at one
     * place per thing, with two text columns to compare first: a third of
     * PostgreSQL's CPU per live row (BENCHMARKS.md, session 11).
     */
    "CREATE UNIQUE INDEX IF NOT EXISTS measurements_change ON measurement_rows (owner_boot, version, owner, "
    "thing) WHERE owner_boot > 0",
};
const size_t db_index_count = sizeof(db_index_sql) / sizeof(db_index_sql[0]);

/* The measurements as schemas 2 to 4 had them, for the collector's reads and anyone's SQL. */
#define VIEW_SELECT                                                                                          \
	" measurements AS SELECT s.source AS source, s.stream AS stream, m.seq AS seq, m.thing AS thing,"   \
	" m.vtype AS vtype, m.value AS value, m.time_us AS time_us, m.owner_boot AS owner_boot,"            \
	" m.version AS version, m.received_us AS received_us, m.owner AS owner, m.via AS via"              \
	" FROM measurement_rows m JOIN streams s ON s.id = m.sid"
const char db_view_sqlite_sql[] = "CREATE VIEW IF NOT EXISTS" VIEW_SELECT;
const char db_view_pg_sql[] = "CREATE OR REPLACE VIEW" VIEW_SELECT;

/*
 * PostgreSQL's part of the schema, on a new database or one of an older
 * schema, after db_schema_sql and before db_index_sql. The text columns of
 * the keys compare bytewise (collation "C", as SQLite compares them)
 * whatever the database's collation: even C.UTF-8 is not C's memcmp() to
 * PostgreSQL 15. A stream's id comes from a sequence (collectors that share
 * the database number their new streams at once).
 */
const char *const db_pg_columns_sql[] = {
    "ALTER TABLE measurement_rows ALTER COLUMN thing TYPE TEXT COLLATE \"C\","
    " ALTER COLUMN owner TYPE TEXT COLLATE \"C\"",
    "ALTER TABLE streams ALTER COLUMN source TYPE TEXT COLLATE \"C\","
    " ALTER COLUMN stream TYPE TEXT COLLATE \"C\"",
    "CREATE SEQUENCE IF NOT EXISTS streams_id_seq OWNED BY streams.id",
    "SELECT setval('streams_id_seq', COALESCE((SELECT MAX(id) FROM streams), 0) + 1, false)",
    "ALTER TABLE streams ALTER COLUMN id SET DEFAULT nextval('streams_id_seq'),"
    " ALTER COLUMN id SET NOT NULL",
};
const size_t db_pg_columns_count = sizeof(db_pg_columns_sql) / sizeof(db_pg_columns_sql[0]);

/* PostgreSQL's, after db_index_sql: the (thing, time) index's keys are all distinct (a thing's
 * times): deduplication finds nothing to merge, but tries before every split of a leaf. */
const char *const db_pg_index_sql[] = {
    "ALTER INDEX measurements_thing_time SET (deduplicate_items = off)",
};
const size_t db_pg_index_count = sizeof(db_pg_index_sql) / sizeof(db_pg_index_sql[0]);

/*
 * Schema 2, 3 or 4 to 5, before db_schema_sql: every (source, stream) of
 * the measurements gets a row of streams (there is one for each since
 * schema 2; the INSERT is for a database changed by hand), every stream an
 * id, and the old table a name of its own; after db_schema_sql,
 * MIGRATE_4_COPY copies its rows under their stream's id and drops it
 * (its indexes with it: db_index_sql then builds each once, on the new table).
 */
#define MIGRATE_4(C)                                                                                         \
	{                                                                                                    \
	    "INSERT INTO streams (source, stream, first_seq, last_seq, first_us, last_us)"                   \
	    " SELECT m.source, m.stream, MIN(m.seq), MAX(m.seq), MIN(m.received_us), MAX(m.received_us)"     \
	    " FROM measurements m WHERE NOT EXISTS (SELECT 1 FROM streams s WHERE s.source = m.source" C     \
	    " AND s.stream = m.stream" C ") GROUP BY m.source, m.stream",                                    \
	    "ALTER TABLE streams ADD COLUMN id BIGINT",                                                      \
	    "UPDATE streams SET id = n.id FROM (SELECT source, stream, ROW_NUMBER() OVER (ORDER BY first_us," \
	    " source, stream) AS id FROM streams) n WHERE n.source = streams.source AND n.stream = streams.stream", \
	    "ALTER TABLE measurements RENAME TO measurements_4",                                             \
	}
#define MIGRATE_4_COPY(C)                                                                                    \
	{                                                                                                    \
	    "INSERT INTO measurement_rows (sid, seq, thing, vtype, value, time_us, owner_boot, version,"     \
	    " received_us, owner, via) SELECT s.id, m.seq, m.thing, m.vtype, m.value, m.time_us, m.owner_boot," \
	    " m.version, m.received_us, m.owner, m.via FROM measurements_4 m JOIN streams s"                 \
	    " ON s.source = m.source" C " AND s.stream = m.stream" C,                                        \
	    "DROP TABLE measurements_4",                                                                     \
	}
/* PostgreSQL compares the two tables' names bytewise: schema 4 made the measurements' collation
 * "C", schema 5 the streams', and text under two implicit collations cannot be compared. */
#define PG_C " COLLATE \"C\""
static const char *const migrate_4_sql[] = MIGRATE_4(""), *const migrate_4_pg_sql[] = MIGRATE_4(PG_C);
static const char *const migrate_4_copy_sql[] = MIGRATE_4_COPY(""),
                         *const migrate_4_copy_pg_sql[] = MIGRATE_4_COPY(PG_C);

/*
 * Schema 1 had measurements and rejected keyed on (source, seq) and no
 * streams. Once a backend has rebuilt those two tables with stream '' in
 * their key, this gives the sources their (unknown) stream and records the
 * old rows as the stream '' of each source.
 */
const char *const db_migrate_1_common_sql[] = {
    "ALTER TABLE sources ADD COLUMN stream TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE IF NOT EXISTS streams ("
    " source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " first_us BIGINT NOT NULL, last_us BIGINT NOT NULL, PRIMARY KEY (source, stream))",
    "INSERT INTO streams (source, stream, first_seq, last_seq, first_us, last_us)"
    " SELECT source, '', MIN(seq), MAX(seq), MIN(received_us), MAX(received_us) FROM"
    " (SELECT source, seq, received_us FROM measurements UNION ALL"
    "  SELECT source, seq, received_us FROM rejected) old GROUP BY source",
};
const size_t db_migrate_1_common_count = sizeof(db_migrate_1_common_sql) / sizeof(db_migrate_1_common_sql[0]);

void db__stream_changed_message(char *buf, size_t size, const char *source, const char *stream,
                                const struct db_store_result *res)
{
	snprintf(buf, size,
	         "%s pushes stream '%s' but the collector holds stream '%s' of it (through seq %" PRId64
	         "): its journal was made again. Nothing was stored; pushd keeps the data. Run "
	         "'thingsync-dr recover' on %s to continue stream '%s', or accept the new stream with "
	         "POST /v1/streams/accept {\"source\":\"%s\",\"stream\":\"%s\"}",
	         source, stream, res->current, res->current_last_seq, source, res->current, source, stream);
}

/* --- schema 2 to 3 ---------------------------------------------------------------- */

/* The text a 'copy' item is compared by when its sequence comes again: what
 * the backends compare a measurement by (thing, value, time). */
#define COPY_TEXT_SQL "m.thing || ' ' || m.value || ' ' || CAST(m.time_us AS TEXT)"

static int run(struct db *db, const char *sql, const struct db_param *p, size_t np, db_row_fn fn, void *ud,
               int64_t *changes)
{
	return db->ops->exec(db, sql, p, np, fn, ud, changes);
}

#define P_STR(x) ((struct db_param){.s = (x)})
#define P_INT(x) ((struct db_param){.i = (x), .is_int = true})

int db__migrate_2(struct db *db, const struct db_owner *owners, size_t n_owners, bool add_columns)
{
	static const char *const columns[] = {
	    "ALTER TABLE measurements ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
	    "ALTER TABLE measurements ADD COLUMN via TEXT NOT NULL DEFAULT 'live'",
	};
	/* Older rows get their thing's owner; a change stored twice (two
	 * sources, a journal made again) keeps its first row, the others become
	 * copies, before the unique index is made. */
	static const char *const steps[] = {
	    "UPDATE measurements SET owner = COALESCE((SELECT o.owner FROM thingsync_owners o"
	    " WHERE o.thing = measurements.thing), '')",
	    ITEMS_DDL,
	    "CREATE INDEX IF NOT EXISTS measurements_identity_tmp ON measurements (owner, thing, owner_boot, "
	    "version)",
	    "INSERT INTO items (source, stream, seq, kind, item, received_us) SELECT m.source, m.stream, "
	    "m.seq,"
	    " 'copy', " COPY_TEXT_SQL ", m.received_us FROM measurements m WHERE m.owner_boot > 0 AND EXISTS"
	    " (SELECT 1 FROM measurements o WHERE o.owner = m.owner AND o.thing = m.thing"
	    " AND o.owner_boot = m.owner_boot AND o.version = m.version AND (o.received_us < m.received_us"
	    " OR (o.received_us = m.received_us AND (o.source < m.source OR (o.source = m.source"
	    " AND (o.stream < m.stream OR (o.stream = m.stream AND o.seq < m.seq)))))))",
	    "DELETE FROM measurements WHERE EXISTS (SELECT 1 FROM items i WHERE i.kind = 'copy'"
	    " AND i.source = measurements.source AND i.stream = measurements.stream AND i.seq = "
	    "measurements.seq)",
	    "DROP INDEX measurements_identity_tmp",
	    "DROP TABLE thingsync_owners",
	};
	int r = 0;

	for (size_t i = 0; r == 0 && add_columns && i < sizeof(columns) / sizeof(columns[0]); i++)
		r = run(db, columns[i], NULL, 0, NULL, NULL, NULL);
	if (r == 0)
		r = run(db,
		        "CREATE TEMP TABLE thingsync_owners (thing TEXT PRIMARY KEY, owner TEXT NOT NULL)",
		        NULL, 0, NULL, NULL, NULL);
	for (size_t i = 0; r == 0 && i < n_owners; i++) {
		struct db_param p[2] = {P_STR(owners[i].thing), P_STR(owners[i].owner)};
		r = run(db,
		        "INSERT INTO thingsync_owners (thing, owner) VALUES ($1, $2) ON CONFLICT DO NOTHING",
		        p, 2, NULL, NULL, NULL);
	}
	for (size_t i = 0; r == 0 && i < sizeof(steps) / sizeof(steps[0]); i++)
		r = run(db, steps[i], NULL, 0, NULL, NULL, NULL);
	return r;
}

/* --- schema 5 ------------------------------------------------------------------------ */

static int run_all(struct db *db, const char *const *sql, size_t n)
{
	int r = 0;

	for (size_t i = 0; r == 0 && i < n; i++)
		r = run(db, sql[i], NULL, 0, NULL, NULL, NULL);
	return r;
}

#define RUN_ALL(db, a) run_all((db), (a), sizeof(a) / sizeof((a)[0]))

/*
 * After a migration to schema 5, the planner's statistics of the two tables
 * it filled: measurement_rows is new and has none, and every row of streams
 * was rewritten (its id). PostgreSQL would plan from nothing until
 * autovacuum analyzes them, SQLite until someone runs ANALYZE (it never
 * does by itself). Plain SQL both take; inside the migration's transaction,
 * so it commits with it. An empty table gets no statistics (SQLite writes
 * no row for it), so a migrated database without rows is planned as a new
 * one.
 */
static const char *const analyze_sql[] = {"ANALYZE measurement_rows", "ANALYZE streams"};

int db__schema(struct db *db, bool migrate_4, bool made, const struct db_dialect *dl)
{
	int r = 0;

	if (migrate_4)
		r = dl->collate_c ? RUN_ALL(db, migrate_4_pg_sql) : RUN_ALL(db, migrate_4_sql);
	if (r == 0)
		r = run_all(db, db_schema_sql, db_schema_count);
	if (r == 0 && made)
		r = run_all(db, dl->columns, dl->ncolumns);
	if (r == 0 && migrate_4)
		r = dl->collate_c ? RUN_ALL(db, migrate_4_copy_pg_sql) : RUN_ALL(db, migrate_4_copy_sql);
	if (r == 0)
		r = run_all(db, db_index_sql, db_index_count);
	if (r == 0 && made)
		r = run_all(db, dl->indexes, dl->nindexes);
	if (r == 0 && made)
		r = run(db, dl->view, NULL, 0, NULL, NULL, NULL);
	if (r == 0 && migrate_4)
		r = RUN_ALL(db, analyze_sql);
	return r;
}

/* --- the items of a batch ----------------------------------------------------------- */

/* Rows of one integer column, collected. */
struct ints {
	int64_t *v;
	size_t n, cap;
	int err;
};

static int row_int(void *ud, int n, const char *const *col)
{
	struct ints *x = ud;

	if (x->n == x->cap) {
		size_t cap = x->cap ? x->cap * 2 : 64;
		int64_t *p = realloc(x->v, cap * sizeof(*p));
		if (!p) {
			x->err = -ENOMEM;
			return 1;
		}
		x->v = p;
		x->cap = cap;
	}
	x->v[x->n++] = col[0] ? strtoll(col[0], NULL, 10) : 0;
	return 0;
}

/* The one text value of a row, compared with `want`. */
struct same {
	const char *want;
	bool found, same;
};

static int row_same(void *ud, int n, const char *const *col)
{
	struct same *x = ud;

	x->found = true;
	x->same = col[0] && strcmp(col[0], x->want) == 0;
	return 1;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

/* The id a stream's rows are stored under (RETURNING: SQLite 3.35, PostgreSQL 8.2). */
#define STREAM_ID_SQL(id)                                                                                    \
	"INSERT INTO streams (id, source, stream, first_seq, last_seq, first_us, last_us)"                   \
	" VALUES (" id ", $1, $2, $3, $4, $5, $5) ON CONFLICT (source, stream) DO UPDATE SET"               \
	" first_seq = CASE WHEN streams.first_seq < excluded.first_seq THEN streams.first_seq"             \
	" ELSE excluded.first_seq END, last_seq = CASE WHEN streams.last_seq > excluded.last_seq"          \
	" THEN streams.last_seq ELSE excluded.last_seq END, last_us = excluded.last_us RETURNING id"

int db__stream_id(struct db *db, const struct db_batch *b, const char *stream, bool sequence, int64_t *sid)
{
	struct db_param p[5] = {P_STR(b->source), P_STR(stream), P_INT(b->min_seq), P_INT(b->max_seq),
	                        P_INT(b->received_us)};
	struct ints x = {0};
	int r = run(db,
	            sequence ? STREAM_ID_SQL("nextval('streams_id_seq')")
	                     : STREAM_ID_SQL("(SELECT COALESCE(MAX(id), 0) + 1 FROM streams)"),
	            p, 5, row_int, &x, NULL);

	if (r == 0)
		r = x.err ? x.err : x.n == 1 ? 0 : -EIO;
	*sid = x.n ? x.v[0] : 0;
	free(x.v);
	return r;
}

/*
 * Inserts a row unless its key is taken (*is_new); when taken, whether the
 * row under the key holds `want` (the first column of `select`, run with
 * the first `nsel` parameters).
 */
static int insert_or_compare(struct db *db, const char *insert, const struct db_param *p, size_t np,
                             const char *select, size_t nsel, const char *want, bool *is_new, bool *same)
{
	struct same sm = {want, false, false};
	int64_t changes = 0;
	int r = run(db, insert, p, np, NULL, NULL, &changes);

	*is_new = r == 0 && changes > 0;
	*same = false;
	if (r < 0 || *is_new)
		return r;
	r = run(db, select, p, nsel, row_same, &sm, NULL);
	*same = sm.same;
	return r;
}

/*
 * Records `seq` in items. *is_new false: the sequence was there with the same
 * text (a batch sent again); other text, or a row of measurements or rejected
 * under it: the stream went backwards (res->outcome).
 */
static int settle(struct db *db, const struct db_batch *b, const char *stream, int64_t seq, const char *kind,
                  const char *text, bool *is_new, struct db_store_result *res)
{
	struct db_param p[6] = {P_STR(b->source), P_STR(stream), P_INT(seq),
	                        P_STR(kind),      P_STR(text),   P_INT(b->received_us)};
	bool same;
	int r =
	    insert_or_compare(db,
	                      "INSERT INTO items (source, stream, seq, kind, item, received_us)"
	                      " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
	                      p, 6, "SELECT item FROM items WHERE source = $1 AND stream = $2 AND seq = $3",
	                      3, text, is_new, &same);

	if (r == 0 && !*is_new && !same) {
		res->outcome = DB_STREAM_BACKWARDS;
		res->conflict_seq = seq;
	}
	return r;
}

/* Measurements of the batch not stored under their own sequence: copies of a change stored before. */
static int store_copies(struct db *db, const struct db_batch *b, const char *stream,
                        struct db_store_result *res)
{
	struct db_param p[4] = {P_STR(b->source), P_STR(stream), P_INT(b->min_seq), P_INT(b->max_seq)};
	struct ints present = {0};
	char *text = NULL;
	int r;

	r = run(db,
	        "SELECT seq FROM measurements WHERE source = $1 AND stream = $2 AND seq >= $3 AND seq <= $4",
	        p, 4, row_int, &present, NULL);
	if (r == 0)
		r = present.err;
	if (r == 0 && present.n > 1)
		qsort(present.v, present.n, sizeof(*present.v), cmp_i64);
	for (size_t i = 0; r == 0 && res->outcome == DB_STORED && i < b->n; i++) {
		const struct db_measurement *m = &b->m[i];
		bool is_new;

		if (present.n && bsearch(&m->seq, present.v, present.n, sizeof(*present.v), cmp_i64))
			continue;
		free(text);
		if (asprintf(&text, "%s %s %" PRId64, m->thing, m->value, m->time_us) < 0) {
			text = NULL;
			r = -ENOMEM;
			break;
		}
		r = settle(db, b, stream, m->seq, "copy", text, &is_new, res);
		res->copies++;
		/* A batch sent again (pushd restarted before it moved its
		 * cursor) settles its copies again: the counter counts each once. */
		if (r == 0 && is_new)
			res->copies_new++;
	}
	free(text);
	free(present.v);
	return r;
}

/* A lost window: new, or one reported before (by another recovery of an overlapping window). */
static int store_gap(struct db *db, const struct db_batch *b, const char *stream, const struct db_item *it,
                     uint8_t *result)
{
	int64_t changes = 0;
	int r;
	struct db_param p[8] = {P_STR(it->owner),      P_INT(it->from_us), P_INT(it->to_us), P_STR(it->via),
	                        P_INT(b->received_us), P_STR(b->source),   P_STR(stream),    P_INT(it->seq)};

	r = run(db,
	        "INSERT INTO recovery_gaps (owner, from_us, to_us, via, received_us, source, stream, seq)"
	        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
	        p, 8, NULL, NULL, &changes);
	*result = changes > 0 ? DB_ITEM_NEW : DB_ITEM_DUP;
	return r;
}

/* A closed day: new, the same again (a duplicate), or other content (the first is kept). */
static int store_cumul(struct db *db, const struct db_batch *b, const char *stream, const struct db_item *it,
                       uint8_t *result)
{
	struct db_param p[9] = {P_STR(it->owner), P_STR(it->thing), P_STR(it->day),
	                        P_STR(it->cumul), P_STR(it->via),   P_INT(b->received_us),
	                        P_STR(b->source), P_STR(stream),    P_INT(it->seq)};
	bool is_new, same;
	int r = insert_or_compare(
	    db,
	    "INSERT INTO cumuls (owner, thing, day, cumul, via, received_us, source, stream, seq)"
	    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
	    p, 9, "SELECT cumul FROM cumuls WHERE owner = $1 AND thing = $2 AND day = $3", 3, it->cumul,
	    &is_new, &same);

	*result = is_new ? DB_ITEM_NEW : same ? DB_ITEM_DUP : DB_ITEM_CONFLICT;
	return r;
}

int db__store_items(struct db *db, const struct db_batch *b, const char *stream, struct db_store_result *res)
{
	struct db_param p[4] = {P_STR(b->source), P_STR(stream), P_INT(b->min_seq), P_INT(b->max_seq)};
	struct ints clash = {0};
	int r = 0;

	/* Every measurement inserted under its own sequence (a drain's batch): none is a copy. */
	if (b->n > 0 && res->inserted < b->n)
		r = store_copies(db, b, stream, res);
	for (size_t i = 0; r == 0 && res->outcome == DB_STORED && i < b->nitems; i++) {
		const struct db_item *it = &b->items[i];
		bool is_new;

		b->item_result[i] = DB_ITEM_DUP;
		r = settle(db, b, stream, it->seq, it->kind == DB_ITEM_GAP ? "recovery_gap" : "cumul",
		           it->item, &is_new, res);
		if (r < 0 || !is_new)
			continue;
		b->item_result[i] = DB_ITEM_NEW;
		if (it->kind == DB_ITEM_GAP)
			r = store_gap(db, b, stream, it, &b->item_result[i]);
		else
			r = store_cumul(db, b, stream, it, &b->item_result[i]);
	}
	/* A sequence both an item and a measurement or a refused one: the stream went backwards. */
	if (r == 0 && res->outcome == DB_STORED && b->n + b->nrej + b->nitems > 0)
		r = run(db,
		        "SELECT i.seq FROM items i WHERE i.source = $1 AND i.stream = $2 AND i.seq >= $3 AND "
		        "i.seq <= $4"
		        " AND (EXISTS (SELECT 1 FROM measurements m WHERE m.source = i.source AND m.stream = "
		        "i.stream"
		        " AND m.seq = i.seq) OR EXISTS (SELECT 1 FROM rejected x WHERE x.source = i.source"
		        " AND x.stream = i.stream AND x.seq = i.seq)) LIMIT 1",
		        p, 4, row_int, &clash, NULL);
	if (r == 0 && clash.n > 0) {
		res->outcome = DB_STREAM_BACKWARDS;
		res->conflict_seq = clash.v[0];
	}
	free(clash.v);
	return r ? r : clash.err;
}

/* --- reads ------------------------------------------------------------------------------ */

struct rows {
	json_t *arr;
	const char *const *names; /* column names; a name starting with '#' is an integer, '{' JSON */
	int err;
};

static int row_json(void *ud, int n, const char *const *col)
{
	struct rows *x = ud;
	json_t *o = json_object();

	for (int i = 0; o && i < n; i++) {
		const char *name = x->names[i];
		json_t *v;
		if (name[0] == '#')
			v = json_integer(col[i] ? (json_int_t)strtoll(col[i], NULL, 10) : 0);
		else if (name[0] == '{')
			v = col[i] ? json_loads(col[i], JSON_DECODE_ANY, NULL) : NULL;
		else
			v = col[i] ? json_string(col[i]) : json_null();
		if (json_object_set_new(o, name + (name[0] == '#' || name[0] == '{'), v ? v : json_null()) <
		    0) {
			json_decref(o);
			o = NULL;
		}
	}
	if (!o || json_array_append_new(x->arr, o) < 0) {
		x->err = -ENOMEM;
		return 1;
	}
	return 0;
}

static int select_json(struct db *db, const char *sql, const struct db_param *p, size_t np,
                       const char *const *names, json_t **out)
{
	struct rows x = {json_array(), names, 0};
	int r;

	if (!x.arr)
		return -ENOMEM;
	if (!db->ops->up(db) && db->ops->reconnect(db) < 0) {
		json_decref(x.arr);
		return DB_EDOWN;
	}
	r = run(db, sql, p, np, row_json, &x, NULL);
	if (r == 0)
		r = x.err;
	if (r < 0) {
		json_decref(x.arr);
		return r;
	}
	*out = x.arr;
	return 0;
}

int db__cumuls(struct db *db, const char *owner, const char *thing, const char *from, const char *to,
               int limit, json_t **out)
{
	static const char *const names[] = {"owner", "thing", "day", "{cumul", "via", "#received"};
	struct db_param p[5] = {P_STR(owner ? owner : ""), P_STR(thing ? thing : ""), P_STR(from ? from : ""),
	                        P_STR(to ? to : ""), P_INT(limit)};

	return select_json(
	    db,
	    "SELECT owner, thing, day, cumul, via, received_us FROM cumuls"
	    " WHERE (CAST($1 AS TEXT) = '' OR owner = $1) AND (CAST($2 AS TEXT) = '' OR thing = $2)"
	    " AND (CAST($3 AS TEXT) = '' OR day >= $3) AND (CAST($4 AS TEXT) = '' OR day <= $4)"
	    " ORDER BY day, owner, thing LIMIT $5",
	    p, 5, names, out);
}

int db__recovery_gaps(struct db *db, const char *owner, int limit, json_t **out)
{
	static const char *const names[] = {"owner", "#from", "#to", "via", "#received", "source", "#seq"};
	struct db_param p[2] = {P_STR(owner ? owner : ""), P_INT(limit)};

	return select_json(
	    db,
	    "SELECT owner, from_us, to_us, via, received_us, source, seq FROM recovery_gaps"
	    " WHERE (CAST($1 AS TEXT) = '' OR owner = $1) ORDER BY received_us DESC, seq DESC LIMIT $2",
	    p, 2, names, out);
}

/* --- pulls --------------------------------------------------------------------------------- */

int db__pull_add(struct db *db, const struct db_pull *x)
{
	struct db_param p[10] = {P_INT(x->id),
	                         P_INT(x->from_s),
	                         P_INT(x->to_s),
	                         P_STR(x->reason),
	                         P_STR(x->state),
	                         P_INT(x->attempts),
	                         P_INT(x->requested_us),
	                         P_INT(x->updated_us),
	                         P_STR(x->recovery_id ? x->recovery_id : ""),
	                         P_STR(x->error ? x->error : "")};
	int64_t changes = 0;
	int r;

	if (!db->ops->up(db) && db->ops->reconnect(db) < 0)
		return DB_EDOWN;
	r = run(db,
	        "INSERT INTO pulls (id, from_s, to_s, reason, state, attempts, requested_us, updated_us, "
	        "recovery_id,"
	        " error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
	        p, 10, NULL, NULL, &changes);
	return r < 0 ? r : changes > 0;
}

int db__pull_update(struct db *db, const struct db_pull *x)
{
	struct db_param p[6] = {P_INT(x->id),
	                        P_STR(x->state),
	                        P_INT(x->attempts),
	                        P_INT(x->updated_us),
	                        P_STR(x->recovery_id ? x->recovery_id : ""),
	                        P_STR(x->error ? x->error : "")};

	if (!db->ops->up(db) && db->ops->reconnect(db) < 0)
		return DB_EDOWN;
	return run(db,
	           "UPDATE pulls SET state = $2, attempts = $3, updated_us = $4, recovery_id = $5, error = $6"
	           " WHERE id = $1",
	           p, 6, NULL, NULL, NULL);
}

struct pull_rows {
	void (*fn)(void *ud, const struct db_pull *p);
	void *ud;
};

static int row_pull(void *ud, int n, const char *const *c)
{
	struct pull_rows *x = ud;
	struct db_pull p = {
	    .id = strtoll(c[0], NULL, 10),
	    .from_s = strtoll(c[1], NULL, 10),
	    .to_s = strtoll(c[2], NULL, 10),
	    .reason = c[3],
	    .state = c[4],
	    .attempts = strtoll(c[5], NULL, 10),
	    .requested_us = strtoll(c[6], NULL, 10),
	    .updated_us = strtoll(c[7], NULL, 10),
	    .recovery_id = c[8],
	    .error = c[9],
	};

	x->fn(x->ud, &p);
	return 0;
}

int db__pulls(struct db *db, bool pending, int limit, void (*fn)(void *ud, const struct db_pull *p), void *ud)
{
	struct db_param p[2] = {P_INT(pending), P_INT(limit)};
	struct pull_rows x = {fn, ud};

	if (!db->ops->up(db) && db->ops->reconnect(db) < 0)
		return DB_EDOWN;
	return run(
	    db,
	    "SELECT id, from_s, to_s, reason, state, attempts, requested_us, updated_us, recovery_id, error"
	    " FROM pulls WHERE (CAST($1 AS BIGINT) = 0 OR state = 'pending') ORDER BY id DESC LIMIT $2",
	    p, 2, row_pull, &x, NULL);
}

int db__hole_times(struct db *db, const char *source, const char *stream, int64_t a, int64_t b,
                   int64_t *before_us, int64_t *after_us)
{
	struct db_param p[3] = {P_STR(source), P_STR(stream), P_INT(a)};
	struct ints x = {0}, y = {0};
	int r;

	r = run(
	    db,
	    "SELECT time_us FROM measurements WHERE source = $1 AND stream = $2 AND seq < $3 AND via = 'live'"
	    " ORDER BY seq DESC LIMIT 1",
	    p, 3, row_int, &x, NULL);
	p[2] = P_INT(b);
	if (r == 0)
		r = run(db,
		        "SELECT time_us FROM measurements WHERE source = $1 AND stream = $2 AND seq > $3 AND "
		        "via = 'live'"
		        " ORDER BY seq LIMIT 1",
		        p, 3, row_int, &y, NULL);
	*before_us = x.n ? x.v[0] : 0;
	*after_us = y.n ? y.v[0] : 0;
	free(x.v);
	free(y.v);
	return r ? r : x.err ? x.err : y.err;
}
