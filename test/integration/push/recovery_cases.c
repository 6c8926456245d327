/*
 * The push side of issues 13 and 14, included by test_push.c (whose helpers
 * and environment it uses; kept apart for size): the collector's dedup by
 * (owner, thing, owner boot, version), recovery gaps and their alarm, the
 * cumuls table, the migration to schema 3, pushd's intake of recovery_data
 * and cumul_data over the mesh (killed with -9 while chunks arrive), and
 * the collector's pull from recoveryd.
 * SPDX-License-Identifier: MIT
 */

/* A stream id of the tests' own batches (not a pushd's). */
#define TEST_STREAM "0123456789abcdef0123456789abcdef"

/* POSTs {"source":"PUSH","stream":TEST_STREAM,"measurements":[ITEMS]}; the status, the answer in *out. */
static long push_items(struct env *e, const char *items, json_t **out)
{
	char *body = NULL;
	long status;

	assert_true(asprintf(&body,
	                     "{\"source\":\"PUSH\",\"stream\":\"%s\",\"boot\":1,\"measurements\":[%s]}",
	                     TEST_STREAM, items) > 0);
	status = signed_http(e, "POST", "/v1/push", body, out);
	free(body);
	return status;
}

/* The one alarm of `kind` for `subject`, active, or NULL. */
static json_t *active_alarm(struct env *e, const char *kind, const char *subject)
{
	json_t *j = col_get(e, "/v1/alarms"), *a, *found = NULL;
	size_t i;

	json_array_foreach(json_object_get(j, "active"), i, a)
	{
		if (!strcmp(json_string_value(json_object_get(a, "kind")), kind) &&
		    !strcmp(json_string_value(json_object_get(a, "subject")), subject))
			found = json_incref(a);
	}
	json_decref(j);
	return found;
}

static size_t count_of(struct env *e, const char *path, const char *member)
{
	json_t *j = col_get(e, path);
	size_t n;

	assert_non_null(j);
	n = json_array_size(json_object_get(j, member));
	json_decref(j);
	return n;
}

/*
 * One batch with a live change, its recovered copy, a recovered change,
 * a recovery gap, a cumul three times (new, the same in another key order,
 * other content) and two bad items; then the batch again, and a live copy
 * of the recovered change. Every change is stored once with the path it
 * came by first, the stream has no hole, the gap raises its alarm once,
 * the cumul keeps its first content and raises cumul_conflict.
 */
static void check_items(struct env *e)
{
	int64_t t = now_us() - 3600000000LL;
	char items[4096];
	json_t *j = NULL, *m, *a, *src;
	size_t i;

	snprintf(items, sizeof(items),
	         "{\"seq\":1,\"thing\":\"t0\",\"value\":5,\"time\":%" PRId64
	         ",\"owner_boot\":3,\"version\":1},"
	         "{\"seq\":2,\"thing\":\"t0\",\"value\":5,\"time\":%" PRId64
	         ",\"owner_boot\":3,\"version\":1,\"source\":\"recovery\"},"
	         "{\"seq\":3,\"thing\":\"t0\",\"value\":6,\"time\":%" PRId64
	         ",\"owner_boot\":3,\"version\":2,\"source\":\"recovery\"},"
	         "{\"seq\":4,\"kind\":\"recovery_gap\",\"owner\":\"OWNER\",\"from\":1764547200000000,"
	         "\"to\":1764550800000000},"
	         "{\"seq\":5,\"kind\":\"cumul\",\"owner\":\"OWNER\",\"thing\":\"t1\",\"day\":\"2026-12-01\","
	         "\"cumul\":{\"count\":3,\"min\":1}},"
	         "{\"seq\":6,\"kind\":\"cumul\",\"owner\":\"OWNER\",\"thing\":\"t1\",\"day\":\"2026-12-01\","
	         "\"cumul\":{\"min\":1,\"count\":3}},"
	         "{\"seq\":7,\"kind\":\"cumul\",\"owner\":\"OWNER\",\"thing\":\"t1\",\"day\":\"2026-12-01\","
	         "\"cumul\":{\"count\":4,\"min\":1}},"
	         "{\"seq\":8,\"kind\":\"cumul\",\"owner\":\"PUSH\",\"thing\":\"t1\",\"day\":\"2026-12-01\","
	         "\"cumul\":{}},"
	         "{\"seq\":9,\"kind\":\"recovery_gap\",\"owner\":\"OWNER\",\"from\":\"yesterday\",\"to\":1},"
	         "{\"seq\":10,\"thing\":\"t0\",\"value\":7,\"time\":%" PRId64
	         ",\"owner_boot\":3,\"version\":3,\"source\":\"tape\"}",
	         t, t, t + 1, t + 2);
	for (int round = 0; round < 2; round++) {
		/* The second round: the same batch again, nothing new. */
		assert_int_equal(push_items(e, items, &j), 422);
		assert_true(json_is_true(json_object_get(j, "settled")));
		assert_int_equal(jint(j, "through", NULL), 10);
		assert_int_equal(jint(j, "stored", NULL), round ? 0 : 2);
		assert_int_equal(jint(j, "copies", NULL), 1);
		assert_int_equal(json_array_size(json_object_get(j, "rejected")), 3);
		json_decref(j);
	}
	/* The recovered change again, live now: a copy; it keeps the path it came by first. */
	snprintf(items, sizeof(items),
	         "{\"seq\":11,\"thing\":\"t0\",\"value\":6,\"time\":%" PRId64
	         ",\"owner_boot\":3,\"version\":2}",
	         t + 5);
	assert_int_equal(push_items(e, items, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 0);
	assert_int_equal(jint(j, "copies", NULL), 1);
	json_decref(j);

	j = col_get(e, "/v1/measurements?thing=t0");
	assert_non_null(j);
	assert_int_equal(json_array_size(json_object_get(j, "measurements")), 2);
	json_array_foreach(json_object_get(j, "measurements"), i, m)
	{
		assert_string_equal(json_string_value(json_object_get(m, "owner")), "OWNER");
		assert_int_equal(jint(m, "version", NULL), (int64_t)i + 1);
		assert_string_equal(json_string_value(json_object_get(m, "via")),
		                    i == 0 ? "live" : "recovery");
	}
	json_decref(j);
	/* Every sequence is accounted for: no hole, nothing missing. */
	src = source_push(e);
	assert_non_null(src);
	assert_int_equal(jint(src, "missing", NULL), 0);
	assert_int_equal(json_array_size(json_object_get(src, "gaps")), 0);
	assert_int_equal(jint(src, "rejected", NULL), 3);
	json_decref(src);
	/* The gap: kept once, alarm naming owner and window, raised once. */
	j = col_get(e, "/v1/recovery_gaps?owner=OWNER");
	assert_int_equal(json_array_size(json_object_get(j, "gaps")), 1);
	assert_int_equal(jint(json_array_get(json_object_get(j, "gaps"), 0), "from", NULL), 1764547200000000);
	assert_int_equal(jint(json_array_get(json_object_get(j, "gaps"), 0), "to", NULL), 1764550800000000);
	json_decref(j);
	a = active_alarm(e, "recovery_window_lost", "OWNER");
	assert_non_null(a);
	assert_non_null(strstr(json_string_value(json_object_get(a, "message")), "2025-12-01T00:00:00Z"));
	assert_non_null(strstr(json_string_value(json_object_get(a, "message")), "2025-12-01T01:00:00Z"));
	assert_int_equal(jint(a, "count", NULL), 1);
	json_decref(a);
	/* The cumul: once, its first content; the other content raised cumul_conflict. */
	j = col_get(e, "/v1/cumuls?thing=t1&from=2026-12-01&to=2026-12-01");
	assert_int_equal(json_array_size(json_object_get(j, "cumuls")), 1);
	m = json_array_get(json_object_get(j, "cumuls"), 0);
	assert_int_equal(jint(json_object_get(m, "cumul"), "count", NULL), 3);
	assert_string_equal(json_string_value(json_object_get(m, "owner")), "OWNER");
	json_decref(j);
	assert_int_equal(count_of(e, "/v1/cumuls?from=2026-12-02", "cumuls"), 0);
	a = active_alarm(e, "cumul_conflict", "OWNER");
	assert_non_null(a);
	assert_non_null(strstr(json_string_value(json_object_get(a, "message")), "t1"));
	assert_int_equal(jint(a, "count", NULL), 1);
	json_decref(a);
	/* Refused items name their field. */
	j = col_get(e, "/v1/rejected?source=PUSH");
	json_array_foreach(json_object_get(j, "rejected"), i, m)
	{
		int64_t seq = jint(m, "seq", NULL);
		const char *field = json_string_value(json_object_get(m, "field"));
		assert_string_equal(field, seq == 8 ? "owner" : seq == 9 ? "from" : "source");
	}
	json_decref(j);
	/* A sequence of an item sent again with other content: the stream went backwards. */
	assert_int_equal(
	    push_items(e,
	               "{\"seq\":4,\"kind\":\"recovery_gap\",\"owner\":\"OWNER\",\"from\":1764547200000000,"
	               "\"to\":1764550800000001}",
	               &j),
	    409);
	json_decref(j);
	assert_int_equal(count_of(e, "/v1/recovery_gaps", "gaps"), 1);
}

static void test_collector_items(void **state)
{
	struct env *e = *state;

	start_collector(e, NULL);
	check_schema_5(e, false, false);
	check_items(e);
	/* A restart keeps it all, and migrates nothing. */
	harness_stop(&e->collector, SIGTERM);
	start_collector(e, NULL);
	assert_int_equal(count_of(e, "/v1/measurements?thing=t0", "measurements"), 2);
	assert_int_equal(count_of(e, "/v1/cumuls", "cumuls"), 1);
}

#ifdef HAVE_POSTGRES
static void test_collector_items_postgres(void **state)
{
	struct env *e = *state;

	pg_setup(e);
	start_collector(e, NULL);
	check_schema_5(e, true, false);
	check_items(e);
}
#endif

/* A schema 2 database: streams, no owner or via, the same change stored twice (see below). */
static const char *const schema_2_sql[] = {
    "CREATE TABLE measurements (source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT "
    "NOT NULL,"
    " thing TEXT NOT NULL, vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL,"
    " owner_boot BIGINT NOT NULL, version BIGINT NOT NULL, received_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream, seq))",
    "CREATE TABLE rejected (source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT "
    "NULL,"
    " field TEXT NOT NULL, error TEXT NOT NULL, item TEXT NOT NULL, received_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream, seq))",
    "CREATE TABLE sources (source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT "
    "NOT NULL,"
    " boot BIGINT NOT NULL, stream TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE streams (source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL,"
    " last_seq BIGINT NOT NULL, first_us BIGINT NOT NULL, last_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream))",
    "CREATE TABLE thingsync_schema (version BIGINT NOT NULL)",
    "INSERT INTO thingsync_schema VALUES (2)",
    "INSERT INTO measurements VALUES"
    " ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, 't0', 'int', '1', 1700000000000000, 3, 1, "
    "1700000000000000),"
    " ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 2, 't0', 'int', '2', 1700000000000001, 3, 2, "
    "1700000000000000),"
    " ('PUSH', '" TEST_STREAM "', 1, 't0', 'int', '2', 1700000000000005, 3, 2, 1700000000000009),"
    " ('PUSH', '" TEST_STREAM "', 2, 't1', 'int', '7', 1700000000000006, 3, 1, 1700000000000009)",
    "INSERT INTO sources VALUES ('PUSH', 1700000000000009, 2, 1, '" TEST_STREAM "')",
    "INSERT INTO streams VALUES ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, 2, 1700000000000000,"
    " 1700000000000000), ('PUSH', '" TEST_STREAM "', 1, 2, 1700000000000009, 1700000000000009)",
};

/*
 * A schema 2 database (streams, no owner or via) holding the same change
 * twice (two streams of PUSH: a journal made again that sent the mesh's
 * current value again): migrated to 3, the change is kept once (the first),
 * the other row becomes a copy so the stream has no hole, owners are filled
 * from site.conf, and a recovered copy of an old change is stored no more.
 */
static void test_migrate_2_sqlite(void **state)
{
	struct env *e = *state;
	char path[600];
	json_t *j = NULL, *src, *m;
	sqlite3 *db;
	size_t i;

	snprintf(path, sizeof(path), "%s/collector.db", e->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	for (i = 0; i < sizeof(schema_2_sql) / sizeof(schema_2_sql[0]); i++)
		assert_int_equal(sqlite3_exec(db, schema_2_sql[i], NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	start_collector(e, NULL);
	check_schema_5(e, false, true);
	j = col_get(e, "/v1/measurements?thing=t0");
	assert_int_equal(json_array_size(json_object_get(j, "measurements")), 2);
	json_array_foreach(json_object_get(j, "measurements"), i, m)
	{
		assert_string_equal(json_string_value(json_object_get(m, "owner")), "OWNER");
		assert_string_equal(json_string_value(json_object_get(m, "via")), "live");
		assert_string_equal(json_string_value(json_object_get(m, "stream")),
		                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	}
	json_decref(j);
	src = source_push(e);
	assert_int_equal(jint(src, "missing", NULL), 0);
	assert_int_equal(jint(src, "stored", NULL), 2);
	json_decref(src);
	/* An old change recovered again is a copy. */
	assert_int_equal(push_items(e,
	                            "{\"seq\":3,\"thing\":\"t0\",\"value\":1,\"time\":1700000000000000,"
	                            "\"owner_boot\":3,\"version\":1,\"source\":\"recovery\"}",
	                            &j),
	                 200);
	assert_int_equal(jint(j, "stored", NULL), 0);
	assert_int_equal(jint(j, "copies", NULL), 1);
	json_decref(j);
	/* Migrated once: a restart changes nothing. */
	harness_stop(&e->collector, SIGTERM);
	start_collector(e, NULL);
	assert_int_equal(count_of(e, "/v1/measurements?thing=t0", "measurements"), 2);
}

/*
 * A schema 3 database: the change index measurements_identity keyed by
 * (owner, thing, owner_boot, version), two live changes of OWNER stored.
 * Plain SQL both backends take.
 */
static const char *const schema_3_sql[] = {
    "CREATE TABLE measurements (source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL,"
    " thing TEXT NOT NULL, vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL,"
    " owner_boot BIGINT NOT NULL, version BIGINT NOT NULL, received_us BIGINT NOT NULL,"
    " owner TEXT NOT NULL DEFAULT '', via TEXT NOT NULL DEFAULT 'live', PRIMARY KEY (source, stream, seq))",
    "CREATE INDEX measurements_thing_time ON measurements (thing, time_us)",
    "CREATE UNIQUE INDEX measurements_identity ON measurements (owner, thing, owner_boot, version)"
    " WHERE owner_boot > 0",
    "CREATE TABLE sources (source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " boot BIGINT NOT NULL, stream TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE streams (source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL,"
    " last_seq BIGINT NOT NULL, first_us BIGINT NOT NULL, last_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream))",
    "CREATE TABLE thingsync_schema (version BIGINT NOT NULL)",
    "INSERT INTO thingsync_schema VALUES (3)",
    "INSERT INTO measurements VALUES"
    " ('PUSH', '" TEST_STREAM
    "', 1, 't0', 'int', '1', 1700000000000000, 3, 1, 1700000000000009, 'OWNER', 'live'),"
    " ('PUSH', '" TEST_STREAM
    "', 2, 't1', 'int', '2', 1700000000000001, 3, 2, 1700000000000009, 'OWNER', 'live')",
    "INSERT INTO sources VALUES ('PUSH', 1700000000000009, 2, 1, '" TEST_STREAM "')",
    "INSERT INTO streams VALUES ('PUSH', '" TEST_STREAM "', 1, 2, 1700000000000009, 1700000000000009)",
};

/* What a query of one text column (rows joined by ','), run by the test's own connection, returns. */
typedef void (*sql_text_fn)(struct env *e, const char *sql, char *out, size_t size);
/* Whether the database refuses a statement run by the test's own connection. */
typedef bool (*sql_refused_fn)(struct env *e, const char *sql);

/*
 * After the migration to schema 5 (from 3 through 4): the old change index
 * is gone, the new one refuses a change stored before; the rows are kept
 * under their stream's id, and read as before. One batch with a recovered
 * copy of each stored change around a new change stores the new one once
 * and makes the two copies; the batch again stores nothing; a restart
 * migrates nothing. The key (stream id, seq) stays unique: a row under a
 * stored one's key is refused even where the change index would not see it
 * (owner boot 0), and a second stream of the source gets an id of its own.
 */
static void check_migrated_3(struct env *e, sql_text_fn sql_text, sql_refused_fn sql_refused)
{
	const char *batch =
	    "{\"seq\":3,\"thing\":\"t0\",\"value\":1,\"time\":1700000000000000,\"owner_boot\":3,"
	    "\"version\":1,\"source\":\"recovery\"},"
	    "{\"seq\":4,\"thing\":\"t2\",\"value\":5,\"time\":1700000000000002,\"owner_boot\":3,"
	    "\"version\":3},"
	    "{\"seq\":5,\"thing\":\"t1\",\"value\":2,\"time\":1700000000000001,\"owner_boot\":3,"
	    "\"version\":2,\"source\":\"recovery\"}";
	char text[256];
	json_t *j = NULL, *src;

	sql_text(e, "SELECT version FROM thingsync_schema", text, sizeof(text));
	assert_string_equal(text, "5");
	/* The data kept: every column of both rows, under the stream's id. */
	sql_text(e,
	         "SELECT m.seq || ' ' || m.thing || ' ' || m.vtype || ' ' || m.value || ' ' || m.time_us || ' '"
	         " || m.owner_boot || ' ' || m.version || ' ' || m.received_us || ' ' || m.owner || ' ' || m.via"
	         " FROM measurement_rows m JOIN streams s ON s.id = m.sid WHERE s.source = 'PUSH'"
	         " AND s.stream = '" TEST_STREAM "' ORDER BY m.seq",
	         text, sizeof(text));
	assert_string_equal(text, "1 t0 int 1 1700000000000000 3 1 1700000000000009 OWNER live,"
	                          "2 t1 int 2 1700000000000001 3 2 1700000000000009 OWNER live");
	j = col_get(e, "/v1/measurements?source=PUSH");
	assert_string_equal(json_string_value(json_object_get(
	                        json_array_get(json_object_get(j, "measurements"), 1), "stream")),
	                    TEST_STREAM);
	assert_int_equal(jint(json_array_get(json_object_get(j, "measurements"), 1), "seq", NULL), 2);
	json_decref(j);
	assert_true(sql_refused(e, "INSERT INTO measurement_rows (sid, seq, thing, vtype, value, time_us,"
	                           " owner_boot, version, received_us, owner, via) SELECT sid, seq, 'x', vtype,"
	                           " value, time_us, 0, 0, received_us, owner, 'import' FROM measurement_rows"
	                           " WHERE seq = 1"));
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH", "measurements"), 2);
	assert_int_equal(push_items(e, batch, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 1);
	assert_int_equal(jint(j, "copies", NULL), 2);
	json_decref(j);
	assert_int_equal(push_items(e, batch, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 0);
	json_decref(j);
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH", "measurements"), 3);
	assert_int_equal(count_of(e, "/v1/measurements?thing=t0", "measurements"), 1);
	src = source_push(e);
	assert_int_equal(jint(src, "missing", NULL), 0);
	assert_int_equal(jint(src, "last_seq", NULL), 5);
	json_decref(src);
	harness_stop(&e->collector, SIGTERM);
	start_collector(e, NULL);
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH", "measurements"), 3);
	sql_text(e, "SELECT version FROM thingsync_schema", text, sizeof(text));
	assert_string_equal(text, "5");
	/* A new stream of the source (accepted by the operator): an id of its own, its seq 1 next to
	 * the first stream's seq 1. */
	assert_int_equal(signed_http(e, "POST", "/v1/streams/accept",
	                             "{\"source\":\"PUSH\",\"stream\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}", NULL),
	                 200);
	assert_int_equal(signed_http(e, "POST", "/v1/push",
	                             "{\"source\":\"PUSH\",\"stream\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
	                             "\"boot\":2,\"measurements\":[{\"seq\":1,\"thing\":\"t0\",\"value\":9,"
	                             "\"time\":1700000000000009,\"owner_boot\":4,\"version\":1}]}",
	                             &j),
	                 200);
	assert_int_equal(jint(j, "stored", NULL), 1);
	json_decref(j);
	sql_text(e, "SELECT COUNT(*) || ' ' || COUNT(DISTINCT id) FROM streams", text, sizeof(text));
	assert_string_equal(text, "2 2");
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH", "measurements"), 4);
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH&stream=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	                          "measurements"),
	                 1);
}

static int sqlite_row_text(void *ud, int n, char **col, char **names)
{
	char *out = ud;
	size_t len = strlen(out);

	snprintf(out + len, 256 - len, "%s%s", len ? "," : "", n > 0 && col[0] ? col[0] : "");
	return 0;
}

static void sqlite_text(struct env *e, const char *sql, char *out, size_t size)
{
	char path[600];
	sqlite3 *db;

	assert_true(size >= 256);
	out[0] = '\0';
	snprintf(path, sizeof(path), "%s/collector.db", e->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, sqlite_row_text, out, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static bool sqlite_refused(struct env *e, const char *sql)
{
	char path[600];
	sqlite3 *db;
	int rc;

	snprintf(path, sizeof(path), "%s/collector.db", e->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc != SQLITE_OK;
}

/* Schema 3 made schema 4 by hand, as a collector of session 11 did on SQLite. */
static const char *const schema_4_sqlite_sql[] = {
    "DROP INDEX measurements_identity",
    "CREATE UNIQUE INDEX measurements_change ON measurements (owner_boot, version, owner, thing)"
    " WHERE owner_boot > 0",
    "UPDATE thingsync_schema SET version = 4",
};

static void migrate_sqlite(struct env *e, bool from_4)
{
	char text[256];

	for (size_t i = 0; i < sizeof(schema_3_sql) / sizeof(schema_3_sql[0]); i++)
		sqlite_text(e, schema_3_sql[i], text, sizeof(text));
	for (size_t i = 0; from_4 && i < sizeof(schema_4_sqlite_sql) / sizeof(schema_4_sqlite_sql[0]); i++)
		sqlite_text(e, schema_4_sqlite_sql[i], text, sizeof(text));
	start_collector(e, NULL);
	check_schema_5(e, false, true);
	sqlite_text(e,
	            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'measurement_rows'"
	            " AND name NOT LIKE 'sqlite_%' ORDER BY name",
	            text, sizeof(text));
	assert_string_equal(text, "measurements_change,measurements_thing_time");
	sqlite_text(e, "SELECT name FROM sqlite_master WHERE name LIKE 'measurements%' AND type <> 'index'",
	            text, sizeof(text));
	assert_string_equal(text, "measurements");
	check_migrated_3(e, sqlite_text, sqlite_refused);
}

static void test_migrate_3_sqlite(void **state)
{
	migrate_sqlite(*state, false);
}

/* The same from schema 4 (its change index already measurements_change, on the old table). */
static void test_migrate_4_sqlite(void **state)
{
	migrate_sqlite(*state, true);
}

#ifdef HAVE_POSTGRES
/* psql as the cluster's user, its rows written to a file in the cluster's directory; its exit status. */
static int pg_run(struct env *e, const char *sql, char *out, size_t size)
{
	char psql[300], port[16], file[300];
	const char *argv[] = {
	    psql,   "-h", "127.0.0.1", "-p", port, "-U", "postgres", "-v", "ON_ERROR_STOP=1",
	    "-Atq", "-o", file,        "-c", sql,  NULL};
	FILE *f;
	size_t n = 0;
	int c;

	snprintf(psql, sizeof(psql), "%s/psql", pg_bin);
	if (access(psql, X_OK) < 0)
		snprintf(psql, sizeof(psql), "/usr/bin/psql");
	snprintf(port, sizeof(port), "%u", e->pg_port);
	snprintf(file, sizeof(file), "%s/out.txt", e->pgdir);
	unlink(file);
	if ((c = run_cmd(e, argv)) != 0)
		return c;
	f = fopen(file, "r");
	assert_non_null(f);
	while ((c = fgetc(f)) != EOF && n + 1 < size)
		out[n++] = c == '\n' ? ',' : (char)c;
	fclose(f);
	while (n > 0 && out[n - 1] == ',')
		n--;
	out[n] = '\0';
	return 0;
}

static void pg_text(struct env *e, const char *sql, char *out, size_t size)
{
	assert_int_equal(pg_run(e, sql, out, size), 0);
}

static bool pg_refused(struct env *e, const char *sql)
{
	char out[256];

	return pg_run(e, sql, out, sizeof(out)) != 0;
}

/* Schema 3 made schema 4 by hand, as a collector of session 11 did on PostgreSQL (its key and change
 * index under collation "C", which schema 5's streams then share). */
static const char *const schema_4_pg_sql[] = {
    "ALTER TABLE measurements ALTER COLUMN source TYPE TEXT COLLATE \"C\","
    " ALTER COLUMN stream TYPE TEXT COLLATE \"C\", ALTER COLUMN thing TYPE TEXT COLLATE \"C\","
    " ALTER COLUMN owner TYPE TEXT COLLATE \"C\"",
    "DROP INDEX measurements_identity",
    "CREATE UNIQUE INDEX measurements_change ON measurements (owner_boot, version, owner, thing)"
    " WHERE owner_boot > 0",
    "UPDATE thingsync_schema SET version = 4",
};

static void migrate_postgres(struct env *e, bool from_4)
{
	char text[256];

	pg_setup(e);
	for (size_t i = 0; i < sizeof(schema_3_sql) / sizeof(schema_3_sql[0]); i++)
		pg_text(e, schema_3_sql[i], text, sizeof(text));
	for (size_t i = 0; from_4 && i < sizeof(schema_4_pg_sql) / sizeof(schema_4_pg_sql[0]); i++)
		pg_text(e, schema_4_pg_sql[i], text, sizeof(text));
	start_collector(e, NULL);
	check_schema_5(e, true, true);
	pg_text(e, "SELECT indexname FROM pg_indexes WHERE tablename = 'measurement_rows' ORDER BY indexname",
	        text, sizeof(text));
	assert_string_equal(text, "measurement_rows_pkey,measurements_change,measurements_thing_time");
	pg_text(e, "SELECT indexdef FROM pg_indexes WHERE indexname = 'measurement_rows_pkey'", text,
	        sizeof(text));
	assert_non_null(strstr(text, "(sid, seq)"));
	pg_text(e, "SELECT reloptions::text FROM pg_class WHERE relname = 'measurements_thing_time'", text,
	        sizeof(text));
	assert_string_equal(text, "{deduplicate_items=off}");
	pg_text(e,
	        "SELECT string_agg(a.attrelid::regclass || '.' || a.attname || ' ' || c.collname, ','"
	        " ORDER BY a.attrelid::regclass::text, a.attnum) FROM pg_attribute a"
	        " JOIN pg_collation c ON c.oid = a.attcollation WHERE a.attrelid IN ('measurement_rows'::regclass,"
	        " 'streams'::regclass) AND a.attname IN ('source', 'stream', 'thing', 'owner')",
	        text, sizeof(text));
	assert_string_equal(text, "measurement_rows.thing C,measurement_rows.owner C,streams.source C,streams.stream C");
	check_migrated_3(e, pg_text, pg_refused);
}

static void test_migrate_3_postgres(void **state)
{
	migrate_postgres(*state, false);
}

/* The same from schema 4 as PostgreSQL had it (its names under collation "C"). */
static void test_migrate_4_postgres(void **state)
{
	migrate_postgres(*state, true);
}

/* Schema 2 on PostgreSQL (test_migrate_2_sqlite's database): the change kept once, schema 5's
 * index made. */
static void test_migrate_2_postgres(void **state)
{
	struct env *e = *state;
	char text[256];
	json_t *j, *m;
	size_t i;

	pg_setup(e);
	for (i = 0; i < sizeof(schema_2_sql) / sizeof(schema_2_sql[0]); i++)
		pg_text(e, schema_2_sql[i], text, sizeof(text));
	start_collector(e, NULL);
	check_schema_5(e, true, true);
	j = col_get(e, "/v1/measurements?thing=t0");
	assert_int_equal(json_array_size(json_object_get(j, "measurements")), 2);
	json_array_foreach(json_object_get(j, "measurements"), i, m)
	{
		assert_string_equal(json_string_value(json_object_get(m, "owner")), "OWNER");
		assert_string_equal(json_string_value(json_object_get(m, "stream")),
		                    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	}
	json_decref(j);
	pg_text(e, "SELECT version FROM thingsync_schema", text, sizeof(text));
	assert_string_equal(text, "5");
}
#endif

/*
 * Schema 5's change index (measurements_change) is made once, after the rows
 * are copied (db__schema()): on a new database and after a migration from
 * any older schema it is there, on measurement_rows, unique, on (owner_boot,
 * version, owner, thing) where owner_boot > 0. An index of that name left
 * on the old table (schema 4's) would have made the IF NOT EXISTS skip it.
 * After a migration the two tables it filled, measurement_rows and streams,
 * have the planner's statistics (its ANALYZE): SQLite's sqlite_stat1 rows,
 * PostgreSQL's pg_statistic rows, which only ANALYZE writes (autovacuum's
 * would not come for a few rows: its threshold is 50 changed).
 */
static void check_schema_5(struct env *e, bool pg, bool migrated)
{
	char text[256];

	if (!pg) {
		sqlite_text(e,
		            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'measurements_change'"
		            " AND tbl_name = 'measurement_rows'",
		            text, sizeof(text));
		assert_string_equal(text, "CREATE UNIQUE INDEX measurements_change ON measurement_rows (owner_boot,"
		                          " version, owner, thing) WHERE owner_boot > 0");
		if (!migrated)
			return;
		sqlite_text(e, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sqlite_stat1'", text, sizeof(text));
		assert_string_equal(text, "1");
		sqlite_text(e,
		            "SELECT group_concat(tbl) FROM (SELECT DISTINCT tbl FROM sqlite_stat1"
		            " WHERE tbl IN ('measurement_rows', 'streams') ORDER BY tbl)",
		            text, sizeof(text));
		assert_string_equal(text, "measurement_rows,streams");
		return;
	}
#ifdef HAVE_POSTGRES
	pg_text(e, "SELECT indexdef FROM pg_indexes WHERE indexname = 'measurements_change'", text, sizeof(text));
	assert_string_equal(text, "CREATE UNIQUE INDEX measurements_change ON public.measurement_rows USING btree"
	                          " (owner_boot, version, owner, thing) WHERE (owner_boot > 0)");
	if (!migrated)
		return;
	pg_text(e,
	        "SELECT string_agg(DISTINCT starelid::regclass::text, ',') FROM pg_statistic"
	        " WHERE starelid IN ('measurement_rows'::regclass, 'streams'::regclass)",
	        text, sizeof(text));
	assert_string_equal(text, "measurement_rows,streams");
#endif
}

#ifdef HAVE_POSTGRES
/* `n` measurements, seq from 1, value seq (row `odd`, when > 0, with another), as push_items() items. */
static char *batch_of(int n, int odd)
{
	char *s = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&s, &len);

	assert_non_null(f);
	for (int k = 1; k <= n; k++)
		fprintf(f,
		        "%s{\"seq\":%d,\"thing\":\"t%d\",\"value\":%d,\"time\":%" PRId64
		        ",\"owner_boot\":3,\"version\":%d}",
		        k > 1 ? "," : "", k, k % 10, k == odd ? -k : k, (int64_t)1700000000000000 + k, k);
	fclose(f);
	return s;
}

/*
 * A batch larger than the COPY's chunk of rows (250): every row stored once
 * with its own value; the batch again is a duplicate (the careful way,
 * which COPYs the same text again into push_in); the batch again with one
 * more row and a row past the first chunks changed is the stream going
 * backwards: refused, nothing of it stored.
 */
static void test_big_batch_postgres(void **state)
{
	struct env *e = *state;
	char *items = batch_of(601, 0), *again = batch_of(602, 0), *odd = batch_of(602, 550);
	json_t *j = NULL, *page, *m;
	size_t i;

	pg_setup(e);
	start_collector(e, NULL);
	assert_int_equal(push_items(e, items, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 601);
	json_decref(j);
	page = col_get(e, "/v1/measurements?source=PUSH&limit=1000");
	assert_int_equal(json_array_size(json_object_get(page, "measurements")), 601);
	json_array_foreach(json_object_get(page, "measurements"), i, m)
	{
		assert_int_equal(jint(m, "seq", NULL), (int64_t)i + 1);
		assert_int_equal(json_integer_value(json_object_get(m, "value")), (json_int_t)i + 1);
		assert_int_equal(jint(m, "version", NULL), (int64_t)i + 1);
	}
	json_decref(page);
	assert_int_equal(push_items(e, items, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 0);
	json_decref(j);
	assert_int_equal(push_items(e, odd, &j), 409);
	json_decref(j);
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH&limit=1000", "measurements"), 601);
	assert_int_equal(push_items(e, again, &j), 200);
	assert_int_equal(jint(j, "stored", NULL), 1);
	json_decref(j);
	assert_int_equal(count_of(e, "/v1/measurements?source=PUSH&limit=1000", "measurements"), 602);
	free(items);
	free(again);
	free(odd);
}
#endif

/* --- pushd's intake: recovery chunks from a real owner's history ------------------------ */

/* RECOV's recovery_data_request to OWNER and its answer. */
struct rreq {
	bool done;
	int status;
	int64_t chunks, entries;
	bool trimmed;
};

static void rreq_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct rreq *q = ud;
	json_t *j = result ? json_loads(result, 0, NULL) : NULL;

	if (q->done)
		fprintf(stderr, "recovery_data_request answered again: %d %s\n", status,
		        result ? result : "-");
	if (q->done)
		return;
	q->done = true;
	q->status = status;
	if (!j || !json_object_get(j, "entries"))
		fprintf(stderr, "recovery_data_request answered %d: %s\n", status,
		        result ? result : "(none)");
	q->chunks = jint(j, "chunks", NULL);
	q->entries = jint(j, "entries", NULL);
	q->trimmed = json_is_true(json_object_get(j, "trimmed"));
	json_decref(j);
}

/* OWNER again, with a state directory and its history on (bounded by `max_bytes`, 0: none). */
static void owner_with_history(struct env *e, uint64_t max_bytes)
{
	tsync_history_limits lim = {0, max_bytes};
	tsync_node_options o;
	char dir[600];

	tsync_node_free(e->owner);
	snprintf(dir, sizeof(dir), "%s/owner", e->dir);
	tsync_node_options_init(&o);
	o.site = e->site;
	o.controller = "OWNER";
	o.state_dir = dir;
	o.event_base = e->base;
	o.log = harness_log;
	o.log_level = getenv("THINGSYNC_TEST_LOG") ? TSYNC_LOG_INFO : TSYNC_LOG_ERROR;
	assert_int_equal(tsync_node_new(&o, &e->owner), 0);
	assert_int_equal(tsync_node_history_enable(e->owner, &lim), 0);
}

/* Sets r0..r{R_THINGS-1} to `n` new values, base + i (unique), and commits OWNER. */
static void set_r_values(struct env *e, int64_t base, int n)
{
	for (int i = 0; i < n; i++) {
		char name[16];
		tsync_value v = tsync_int(base + i);

		snprintf(name, sizeof(name), "r%d", i % R_THINGS);
		assert_int_equal(tsync_node_set(e->owner, name, &v), 0);
	}
	assert_int_equal(tsync_node_commit(e->owner), 0);
}

static void ask_recovery(struct env *e, struct rreq *q, int64_t from_s, int64_t to_s, const char *id)
{
	char body[256];

	memset(q, 0, sizeof(*q));
	snprintf(body, sizeof(body),
	         "{\"lost_connection_time\":%" PRId64 ",\"restored_connection_time\":%" PRId64
	         ",\"deliver_to\":\"PUSH\",\"request_id\":\"%s\"}",
	         from_s, to_s, id);
	assert_int_equal(tsync_node_request(e->recov, "OWNER", "recovery_data_request", body, rreq_done, q),
	                 0);
}

/* The request answered and every chunk delivered (OWNER has nothing unanswered). */
static bool pred_recovered(struct env *e, void *arg)
{
	struct rreq *q = arg;
	return q->done && tsync_node_unsettled(e->owner) == 0;
}

/* OWNER's messages that controller `peer` has acknowledged so far. */
static uint64_t owner_acked_by(struct env *e, const char *peer)
{
	tsync_peer_stats st;

	for (size_t p = 0; p < tsync_node_peer_count(e->owner); p++)
		if (tsync_node_peer_stats(e->owner, p, &st) == 0 && !strcmp(st.name, peer))
			return st.acked;
	fail_msg("OWNER has no peer %s", peer);
	return 0;
}

struct acked_more {
	struct rreq *q;
	uint64_t at_least; /* OWNER's messages acknowledged by PUSH */
};

/* PUSH has acknowledged that many of OWNER's messages, or the recovery is over. */
static bool pred_acked_more(struct env *e, void *arg)
{
	struct acked_more *m = arg;
	return owner_acked_by(e, "PUSH") >= m->at_least || pred_recovered(e, m->q);
}

/* wait_for() one turn of the loop at a time: what follows comes right
 * after the turn that made pred true. */
static bool run_turns_until(struct env *e, bool (*pred)(struct env *, void *), void *arg, int timeout_ms)
{
	int64_t end = now_us() / 1000 + timeout_ms;

	while (!pred(e, arg)) {
		if (now_us() / 1000 > end)
			return false;
		event_base_loop(e->base, EVLOOP_ONCE);
	}
	return true;
}

/* How often each value base..base+n-1 of `thing` is stored; the others are counted in *other. */
static void count_values(struct env *e, const char *thing, int64_t base, int64_t n, int *count,
                         int64_t *other)
{
	int64_t after = 0;

	for (;;) {
		char path[200];
		json_t *page, *m;
		size_t i, got;

		snprintf(path, sizeof(path), "/v1/measurements?thing=%s&after_seq=%" PRId64 "&limit=10000",
		         thing, after);
		page = col_get(e, path);
		assert_non_null(page);
		got = json_array_size(json_object_get(page, "measurements"));
		json_array_foreach(json_object_get(page, "measurements"), i, m)
		{
			int64_t v = jint(m, "value", NULL);
			if (v >= base && v < base + n)
				count[v - base]++;
			else
				(*other)++;
			after = jint(m, "seq", NULL);
		}
		json_decref(page);
		if (got < 10000)
			break;
	}
}

/* The collector's metric `name` (a counter without labels). */
static int64_t col_metric(struct env *e, const char *name)
{
	char url[256];
	struct curl_slist *h = NULL;
	CURL *c = curl_easy_init();
	FILE *mem;
	char *text = NULL, *p;
	size_t len = 0;
	int64_t v = -1;

	snprintf(url, sizeof(url), "%s/metrics", e->col_url);
	mem = open_memstream(&text, &len);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, mem);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
	assert_int_equal(curl_easy_perform(c), CURLE_OK);
	curl_easy_cleanup(c);
	curl_slist_free_all(h);
	fclose(mem);
	for (p = text; p && (p = strstr(p, name)); p += strlen(name))
		if ((p == text || p[-1] == '\n') && p[strlen(name)] == ' ')
			v = strtoll(p + strlen(name) + 1, NULL, 10);
	free(text);
	return v;
}

/* Every value stored exactly once; else the runs that are not, then a failure. */
static void check_once(const int *count, int64_t base, int n)
{
	int bad = 0;

	for (int i = 0; i < n; i++) {
		int j = i;
		if (count[i] == 1)
			continue;
		while (j + 1 < n && count[j + 1] == count[i])
			j++;
		fprintf(stderr, "values %" PRId64 "..%" PRId64 " stored %d times\n", base + i, base + j,
		        count[i]);
		bad += j - i + 1;
		i = j;
	}
	if (bad)
		fail_msg("%d of %d values not stored exactly once", bad, n);
}

/*
 * pushd killed -9 again and again while an owner's history arrives as
 * recovery chunks: every change is journaled exactly once (the collector
 * counts no copy: nothing reached it twice) and stored exactly once.
 */
static void test_recovery_intake_kill9(void **state)
{
	struct env *e = *state;
	const int n = 6000;
	const int64_t base = 5000000;
	unsigned seed = (unsigned)now_us();
	int *count = calloc((size_t)n, sizeof(int));
	int64_t from_s, to_s, other = 0, copies;
	uint64_t last_kill_acked = 0;
	int kills = 0;
	struct rreq q;
	json_t *src;

	fprintf(stderr, "recovery intake kill test, seed %u\n", seed);
	start_collector(e, NULL);
	owner_with_history(e, 0);
	start_pushd_ready(e);
	from_s = now_us() / 1000000 - 1;
	set_r_values(e, base, n);
	{
		tsync_value v = tsync_int(base + n);
		assert_int_equal(tsync_node_set(e->owner, "q0", &v), 0);
	}
	to_s = now_us() / 1000000 + 1;
	ask_recovery(e, &q, from_s, to_s, "kill9");
	/*
	 * Kills by progress, not by time (a quicker intake would end the
	 * recovery before a timed schedule's kills): each comes at once after
	 * PUSH has acknowledged one to five more of OWNER's messages since its
	 * start, the loop run one turn at a time: the six come within the
	 * first 50-70 acknowledgements (with those during each restart), of
	 * more than 600 chunks, so every one lands while chunks arrive.
	 */
	for (int round = 0; round < 6 && !pred_recovered(e, &q); round++) {
		struct timeval tv = {0, 0};
		struct acked_more more = {&q, owner_acked_by(e, "PUSH") + 1 + rand_r(&seed) % 5};

		assert_true(run_turns_until(e, pred_acked_more, &more, 60000));
		kills += !pred_recovered(e, &q);
		last_kill_acked = owner_acked_by(e, "PUSH");
		harness_stop(&e->pushd, SIGKILL);
		tv.tv_usec = (suseconds_t)(rand_r(&seed) % 100000);
		event_base_loopexit(e->base, &tv);
		event_base_dispatch(e->base);
		start_pushd_ready(e);
	}
	assert_true(wait_for(e, pred_recovered, &q, 120000));
	fprintf(stderr,
	        "pushd killed -9 %d times while %" PRId64
	        " chunks arrived (%llu of OWNER's messages acked by PUSH at the last kill)\n",
	        kills, q.chunks, (unsigned long long)last_kill_acked);
	assert_int_equal(kills, 6);
	if (q.status != 0 || q.entries != n + 1)
		fail_msg("recovery_data_request answered %d, %" PRId64 " entries", q.status, q.entries);
	assert_true(q.chunks > 100);
	assert_true(wait_for(e, pred_drained, NULL, 60000));
	{
		json_t *st = pushd_status(e);
		char *t = json_dumps(json_object_get(st, "intake"), JSON_COMPACT);
		fprintf(stderr, "pushd intake (last run): %s\n", t);
		free(t);
		json_decref(st);
	}
	for (int k = 0; k < R_THINGS; k++) {
		char name[16];
		snprintf(name, sizeof(name), "r%d", k);
		count_values(e, name, base, n, count, &other);
	}
	check_once(count, base, n);
	assert_int_equal(other, 0);
	/* Nothing was journaled twice: the only copies at the collector are
	 * the live deliveries of each thing's newest value (a chunk journaled
	 * twice would add a copy of each of its entries), and the stream has
	 * no hole. */
	copies = col_metric(e, "thingsync_collector_measurements_copies_total");
	assert_true(copies >= 0 && copies <= R_THINGS);
	src = source_push(e);
	assert_int_equal(jint(src, "stored", NULL), n + copies);
	assert_int_equal(jint(src, "missing", NULL), 0);
	json_decref(src);
	/* q0 is not a thing PUSH uses: its history is not journaled. */
	{
		int64_t o = 0;
		count_values(e, "q0", 0, 0, NULL, &o);
		assert_int_equal(o, 0);
	}
	free(count);
}

/*
 * Issue 13, scenario 4: the owner's history is bounded and has trimmed
 * part of the window: the chunks say so, pushd journals a recovery gap, the
 * collector keeps the window and raises recovery_window_lost naming owner
 * and window; what the history still held is stored.
 */
/* The window from from_s on, asked again: trimmed, and the alarm is active. */
static void lost_again(struct env *e, int64_t from_s, const char *id)
{
	struct rreq q;
	json_t *a;

	ask_recovery(e, &q, from_s, now_us() / 1000000 + 1, id);
	assert_true(wait_for(e, pred_recovered, &q, 60000));
	assert_true(q.trimmed);
	assert_true(wait_for(e, pred_drained, NULL, 60000));
	a = active_alarm(e, "recovery_window_lost", "OWNER");
	assert_non_null(a);
	json_decref(a);
}

static void test_recovery_gap_alarm(void **state)
{
	struct env *e = *state;
	const int n = 600;
	const int64_t base = 6000000;
	int *count = calloc((size_t)n, sizeof(int));
	int64_t from_s, other = 0, held = 0;
	tsync_history_window w;
	struct rreq q;
	json_t *j, *g, *a;
	char from[32];

	start_collector(e, NULL);
	owner_with_history(e, 8192);
	start_pushd_ready(e);
	from_s = now_us() / 1000000 - 1;
	set_r_values(e, base, n);
	assert_int_equal(
	    tsync_node_history_query(e->owner, NULL, from_s * 1000000, now_us() + 1000000, NULL, NULL, &w),
	    0);
	assert_true(w.trimmed);
	ask_recovery(e, &q, from_s, now_us() / 1000000 + 1, "gap");
	assert_true(wait_for(e, pred_recovered, &q, 60000));
	assert_true(q.trimmed);
	assert_true(wait_for(e, pred_drained, NULL, 60000));
	j = col_get(e, "/v1/recovery_gaps?owner=OWNER");
	assert_int_equal(json_array_size(json_object_get(j, "gaps")), 1);
	g = json_array_get(json_object_get(j, "gaps"), 0);
	assert_int_equal(jint(g, "from", NULL), w.trimmed_from_us);
	assert_int_equal(jint(g, "to", NULL), w.trimmed_to_us);
	assert_string_equal(json_string_value(json_object_get(g, "via")), "recovery");
	json_decref(j);
	a = active_alarm(e, "recovery_window_lost", "OWNER");
	assert_non_null(a);
	snprintf(from, sizeof(from), "%" PRId64 "..", w.trimmed_from_us);
	assert_non_null(strstr(json_string_value(json_object_get(a, "message")), from));
	json_decref(a);
	/* What the history held is stored, once; the trimmed values are not. */
	for (int k = 0; k < R_THINGS; k++) {
		char name[16];
		snprintf(name, sizeof(name), "r%d", k);
		count_values(e, name, base, n, count, &other);
	}
	for (int i = 0; i < n; i++) {
		assert_true(count[i] <= 1);
		held += count[i];
	}
	assert_int_equal(held, (int64_t)w.entries);
	assert_int_equal(held, q.entries);
	assert_true(held < n);
	free(count);

	/* The same window asked again is trimmed again: the alarm stays (the
	 * values are gone from the owner), and the gap is not counted twice. */
	lost_again(e, from_s, "gap2");
	/* An operator acknowledges it: signed only; the kinds that clear by
	 * themselves are refused; then it is cleared, and a later lost window
	 * raises it again. */
	{
		const char *ack = "{\"kind\":\"recovery_window_lost\",\"subject\":\"OWNER\"}";
		char url[512];
		json_t *out = NULL;
		long st;

		snprintf(url, sizeof(url), "%s/v1/alarms/ack", e->col_url);
		st = http("POST", url, ack, NULL, &out);
		assert_true(st == 401 || st == 403);
		json_decref(out);
		out = NULL;
		assert_int_equal(signed_http(e, "POST", "/v1/alarms/ack",
		                             "{\"kind\":\"source_silent\",\"subject\":\"PUSH\"}", &out),
		                 409);
		json_decref(out);
		out = NULL;
		assert_int_equal(signed_http(e, "POST", "/v1/alarms/ack", "{\"kind\":\"recovery_window_lost\"}", &out),
		                 400);
		assert_string_equal(json_string_value(json_object_get(out, "field")), "subject");
		json_decref(out);
		out = NULL;
		assert_int_equal(signed_http(e, "POST", "/v1/alarms/ack", ack, &out), 200);
		json_decref(out);
		out = NULL;
		assert_null(active_alarm(e, "recovery_window_lost", "OWNER"));
		assert_int_equal(signed_http(e, "POST", "/v1/alarms/ack", ack, &out), 404);
		json_decref(out);
		/* Cleared, in the history, as acknowledged. */
		j = col_get(e, "/v1/alarms");
		{
			size_t i;
			json_t *x;
			bool seen = false;
			json_array_foreach(json_object_get(j, "cleared"), i, x)
				seen |= !strcmp(json_string_value(json_object_get(x, "kind")), "recovery_window_lost");
			assert_true(seen);
		}
		json_decref(j);
	}
	set_r_values(e, base + n, n);
	lost_again(e, from_s, "gap3");
}

/* --- pull: the collector asks recoveryd for a window (contract 4) -------------------------- */

/* A stand-in for thingsync-recoveryd's POST /v1/recover, on RECOV's tcp_port: the
 * first `refuse` requests get 503, the next ones 202; bodies are kept. */
struct fake_recoveryd {
	struct httpd *http;
	tsync_site *site;
	int refuse, calls;
	json_t *bodies;
};

static void fake_cb(void *arg, struct evhttp_request *req, const char *path)
{
	struct fake_recoveryd *f = arg;
	const char *why = NULL;
	json_t *body = httpd__body_json(req, &why);

	f->calls++;
	json_array_append_new(f->bodies, body ? body : json_null());
	if (f->calls <= f->refuse) {
		httpd__reply_json(req, 503, json_pack("{s:s}", "error", "not now"));
		return;
	}
	httpd__reply_json(req, 202, json_pack("{s:s,s:[s]}", "id", "rec-1", "owners", "OWNER"));
}

static bool pred_fake_calls(struct env *e, void *arg)
{
	struct fake_recoveryd *f = arg;
	return f->calls >= f->refuse + 1;
}

/* The stand-in serves RECOV's tcp_port of the site in e->site_path. */
static void fake_start(struct env *e, struct fake_recoveryd *f, uint16_t port)
{
	static const struct httpd_route routes[] = {
	    {"/v1/recover", HTTPD_POST, 1024, false, true},
	    {NULL, 0, 0, false, false},
	};
	struct httpd_config cfg;

	assert_int_equal(tsync_site_load(e->site_path, &f->site, NULL), 0);
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = e->base;
	cfg.host = "127.0.0.1";
	cfg.port = port;
	cfg.routes = routes;
	cfg.handler = fake_cb;
	cfg.arg = f;
	cfg.site = f->site;
	cfg.name = "RECOV";
	assert_int_equal(httpd__new(&cfg, &f->http), 0);
}

static void fake_free(struct fake_recoveryd *f)
{
	httpd__free(f->http);
	tsync_site_free(f->site);
	json_decref(f->bodies);
}

/* The collector's pull `id`: its state (and attempts, recovery id) in the list. */
static json_t *pull_of(struct env *e, int64_t id)
{
	json_t *j = col_get(e, "/v1/pulls"), *p, *found = NULL;
	size_t i;

	json_array_foreach(json_object_get(j, "pulls"), i, p)
	{
		if (jint(p, "id", NULL) == id)
			found = json_incref(p);
	}
	json_decref(j);
	return found;
}

struct pull_q {
	int64_t id;
	const char *state;
};

static bool pred_pull_state(struct env *e, void *arg)
{
	struct pull_q *q = arg;
	json_t *p = pull_of(e, q->id);
	bool ok = p && !strcmp(json_string_value(json_object_get(p, "state")), q->state);

	json_decref(p);
	return ok;
}

/* Inserts `line` after the line following `section` (its host) in `text` (8 KiB). */
static void insert_after_host(char *text, const char *section, const char *line)
{
	char *at = strstr(text, section), *rest;

	assert_non_null(at);
	at = strchr(at + strlen(section), '\n') + 1;
	rest = strdup(at);
	strcpy(at, line);
	strcat(at, rest);
	free(rest);
}

/*
 * The daemons' site.conf from here on: RECOV (role recovery) with a
 * tcp_port, and with `owner_history` OWNER keeping a history (as the
 * in-process OWNER does after owner_with_history()).
 */
static void site_variant_lines(struct env *e, uint16_t recov_port, const char *owner_lines)
{
	char *text = calloc(1, 8192), *path, line[64];
	FILE *in = fopen(e->site_path, "r");

	assert_non_null(in);
	assert_true(fread(text, 1, 8000, in) > 0);
	fclose(in);
	snprintf(line, sizeof(line), "tcp_port = %u\n", recov_port);
	insert_after_host(text, "[controller RECOV]\n", line);
	if (owner_lines)
		insert_after_host(text, "[controller OWNER]\n", owner_lines);
	path = harness_write(e->dir, "site-daemons.conf", text);
	snprintf(e->site_path, sizeof(e->site_path), "%s", path);
	free(path);
	free(text);
}

static void site_variant(struct env *e, uint16_t recov_port, bool owner_history)
{
	site_variant_lines(e, recov_port, owner_history ? "history = yes\n" : NULL);
}

/*
 * The collector's pull against the contract, with a stand-in recoveryd:
 * POST /v1/pull is signed and checked; the window goes to RECOV's
 * /v1/recover signed for RECOV, retried with backoff until 202; GET
 * /v1/pulls shows it accepted with recoveryd's id. A gap in a source's
 * stream is pulled by itself, once, with the measured times around it.
 */
static void check_pull_contract(struct env *e)
{
	struct fake_recoveryd f = {.refuse = 2, .bodies = json_array()};
	const char *extra[] = {"--pull-scan", "1", "--pull-retry-min-ms", "50", "--pull-retry-max-ms",
	                       "200",         NULL};
	struct pull_q q = {0, "accepted"};
	char items[1024];
	uint16_t port = tcp_free_port();
	int64_t t = now_us() - 600000000LL;
	json_t *j = NULL, *p;

	/* The collector's site.conf gives RECOV (role recovery) a tcp_port. */
	site_variant(e, port, false);
	fake_start(e, &f, port);
	start_collector(e, extra);

	/* Refused unsigned, and with bad windows (naming the field). */
	{
		char url[256];
		struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
		snprintf(url, sizeof(url), "%s/v1/pull", e->col_url);
		assert_int_equal(http("POST", url, "{\"from\":1764547200,\"to\":1764550800}", h, NULL), 401);
		curl_slist_free_all(h);
	}
	assert_int_equal(signed_http(e, "POST", "/v1/pull", "{\"from\":1764550800,\"to\":1764547200}", &j),
	                 400);
	assert_string_equal(json_string_value(json_object_get(j, "field")), "to");
	json_decref(j);
	assert_int_equal(signed_http(e, "POST", "/v1/pull", "{\"to\":1764547200}", &j), 400);
	assert_string_equal(json_string_value(json_object_get(j, "field")), "from");
	json_decref(j);
	assert_int_equal(signed_http(e, "POST", "/v1/pull", "{\"from\":1764547200,\"to\":1764550800}", &j),
	                 202);
	q.id = jint(j, "id", NULL);
	assert_string_equal(json_string_value(json_object_get(j, "recovery")), "RECOV");
	json_decref(j);
	/* Two 503s, then 202: retried until taken. */
	assert_true(wait_for(e, pred_fake_calls, &f, 30000));
	assert_true(wait_for(e, pred_pull_state, &q, 30000));
	assert_int_equal(f.calls, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(jint(json_array_get(f.bodies, i), "from", NULL), 1764547200);
		assert_int_equal(jint(json_array_get(f.bodies, i), "to", NULL), 1764550800);
	}
	p = pull_of(e, q.id);
	assert_string_equal(json_string_value(json_object_get(p, "recovery_id")), "rec-1");
	assert_int_equal(jint(p, "attempts", NULL), 2);
	json_decref(p);

	/* A hole in the stream (sequences 3..7 missing): pulled by itself, once. */
	snprintf(
	    items, sizeof(items),
	    "{\"seq\":1,\"thing\":\"t0\",\"value\":1,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":1},"
	    "{\"seq\":2,\"thing\":\"t0\",\"value\":2,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":2},"
	    "{\"seq\":8,\"thing\":\"t0\",\"value\":8,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":8}",
	    t, t + 1000000, t + 30000000);
	assert_int_equal(push_items(e, items, &j), 200);
	json_decref(j);
	f.refuse = 3; /* = calls so far: the next one is taken */
	assert_true(wait_for(e, pred_fake_calls, &f, 30000));
	p = json_array_get(f.bodies, 3);
	assert_int_equal(jint(p, "from", NULL), (t + 1000000) / 1000000 - 1);
	assert_int_equal(jint(p, "to", NULL), (t + 30000000) / 1000000 + 2);
	/* Scans go on; the same gap is not pulled again. */
	{
		struct timeval tv = {2, 500000};
		event_base_loopexit(e->base, &tv);
		event_base_dispatch(e->base);
	}
	assert_int_equal(f.calls, 4);
	j = col_get(e, "/v1/pulls");
	assert_int_equal(json_array_size(json_object_get(j, "pulls")), 2);
	assert_int_equal(jint(j, "accepted", NULL), 2);
	json_decref(j);
	fake_free(&f);
}

static void test_pull_contract(void **state)
{
	check_pull_contract(*state);
}

/*
 * The head of a stream: the collector's database holds a stream from
 * sequence 500 on (it was reset while pushd went on). Sequences 1..499 are
 * pulled once, from as far back as the data stores' histories reach (the
 * owner's history_max_age, 2 h here) to just after the first one stored.
 */
static void test_pull_head_gap(void **state)
{
	struct env *e = *state;
	struct fake_recoveryd f = {.refuse = 0, .bodies = json_array()};
	const char *extra[] = {"--pull-scan", "1", NULL};
	char items[512];
	uint16_t port = tcp_free_port();
	int64_t t = now_us() - 600000000LL;
	json_t *j = NULL, *p;

	/* The owner keeps two hours of history. */
	site_variant_lines(e, port, "history = yes\nhistory_max_age = 2h\n");
	fake_start(e, &f, port);
	start_collector(e, extra);
	snprintf(
	    items, sizeof(items),
	    "{\"seq\":500,\"thing\":\"t0\",\"value\":1,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":500},"
	    "{\"seq\":501,\"thing\":\"t0\",\"value\":2,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":501}",
	    t, t + 1000000);
	assert_int_equal(push_items(e, items, &j), 200);
	json_decref(j);
	f.refuse = 0;
	assert_true(wait_for(e, pred_fake_calls, &f, 30000));
	p = json_array_get(f.bodies, 0);
	assert_int_equal(jint(p, "from", NULL), t / 1000000 - 2 * 3600 - 1);
	assert_int_equal(jint(p, "to", NULL), t / 1000000 + 2);
	/* Scans go on; the head is not pulled again. */
	{
		struct timeval tv = {2, 500000};
		event_base_loopexit(e->base, &tv);
		event_base_dispatch(e->base);
	}
	assert_int_equal(f.calls, 1);
	j = col_get(e, "/v1/pulls");
	assert_int_equal(json_array_size(json_object_get(j, "pulls")), 1);
	assert_non_null(strstr(json_string_value(json_object_get(json_array_get(json_object_get(j, "pulls"), 0),
	                                                         "reason")),
	                       "head gap PUSH"));
	json_decref(j);
	fake_free(&f);
}

#ifdef HAVE_POSTGRES
static void test_pull_contract_postgres(void **state)
{
	pg_setup(*state);
	check_pull_contract(*state);
}
#endif

/* --- cumul_data: forensicd's closed days through pushd (contract 2) ------------------------- */

struct req_done {
	bool done;
	int status;
	json_t *res;
};

static void req_done_cb(void *ud, tsync_node *node, int status, const char *result)
{
	struct req_done *d = ud;

	d->done = true;
	d->status = status;
	d->res = result ? json_loads(result, 0, NULL) : NULL;
}

static bool pred_req_done(struct env *e, void *arg)
{
	return ((struct req_done *)arg)->done;
}

/* RECOV (standing in for forensicd) sends a cumul_data to PUSH; the answer's "journaled". */
static int64_t send_cumuls(struct env *e, const char *cumuls)
{
	struct req_done d = {0};
	char body[1024];
	int64_t n;

	snprintf(body, sizeof(body), "{\"owner\":\"OWNER\",\"day\":\"2026-12-01\",\"cumuls\":%s}", cumuls);
	assert_int_equal(tsync_node_request(e->recov, "PUSH", "cumul_data", body, req_done_cb, &d), 0);
	assert_true(wait_for(e, pred_req_done, &d, 30000));
	assert_int_equal(d.status, 0);
	n = jint(d.res, "journaled", NULL);
	json_decref(d.res);
	return n;
}

/*
 * A closed day's cumuls through pushd: one item per thing of the owner
 * (another's thing refused), the same request content again journaled
 * once, other content for a stored day kept out with cumul_conflict.
 */
static void test_cumul_intake(void **state)
{
	struct env *e = *state;
	json_t *j, *c, *a;
	size_t i;

	start_collector(e, NULL);
	start_pushd_ready(e);
	assert_int_equal(
	    send_cumuls(e, "{\"t1\":{\"count\":3,\"min\":1},\"r0\":{\"count\":1},\"temp\":{\"mean\":20.5},"
	                   "\"nope\":{\"count\":9}}"),
	    3);
	/* The same day again (forensicd sent it again after a crash): nothing new. */
	assert_int_equal(
	    send_cumuls(e, "{\"t1\":{\"count\":3,\"min\":1},\"r0\":{\"count\":1},\"temp\":{\"mean\":20.5},"
	                   "\"nope\":{\"count\":9}}"),
	    0);
	/* Other content for t1's day: journaled, refused by the collector. */
	assert_int_equal(send_cumuls(e, "{\"t1\":{\"count\":4,\"min\":1}}"), 1);
	assert_true(wait_for(e, pred_drained, NULL, 30000));
	j = col_get(e, "/v1/cumuls?owner=OWNER&from=2026-12-01&to=2026-12-01");
	assert_int_equal(json_array_size(json_object_get(j, "cumuls")), 3);
	json_array_foreach(json_object_get(j, "cumuls"), i, c)
	{
		if (!strcmp(json_string_value(json_object_get(c, "thing")), "t1"))
			assert_int_equal(jint(json_object_get(c, "cumul"), "count", NULL), 3);
	}
	json_decref(j);
	a = active_alarm(e, "cumul_conflict", "OWNER");
	assert_non_null(a);
	json_decref(a);
	/* Every journal entry reached the collector, once: nothing missing, nothing twice. */
	j = source_push(e);
	assert_int_equal(jint(j, "stored", NULL), 4);
	assert_int_equal(jint(j, "missing", NULL), 0);
	json_decref(j);
}

/* --- issue 13, scenario 2: the collector down while pushd runs ------------------------------ */

static bool pred_value_reached(struct env *e, void *arg)
{
	return e->next_value >= *(int64_t *)arg;
}

/*
 * The internet is down (the collector stopped) while pushd runs and the
 * owner changes things faster than the mesh carries them: the journal
 * holds what pushd received; recovery of the outage adds the intermediate
 * changes, and nothing twice. Every change of the outage is stored exactly
 * once; the changes the journal had are copies at the collector.
 */
static void test_outage_journal_and_recovery(void **state)
{
	struct env *e = *state;
	int64_t v_stop, v_end, want, from_s, to_s, other = 0, n, live = 0;
	int *count;
	struct rreq q;

	start_collector(e, NULL);
	owner_with_history(e, 0);
	start_pushd_ready(e);
	e->producing = true;
	want = e->next_value + 500;
	assert_true(wait_for(e, pred_value_reached, &want, 30000));
	/* The internet goes: the collector stops; pushd journals on. */
	harness_stop(&e->collector, SIGTERM);
	from_s = now_us() / 1000000 - 1;
	v_stop = e->next_value;
	want = v_stop + 3000;
	assert_true(wait_for(e, pred_value_reached, &want, 60000));
	e->producing = false;
	v_end = e->next_value;
	assert_true(wait_for(e, pred_settled, NULL, 30000));
	start_collector(e, NULL);
	to_s = now_us() / 1000000 + 1;
	assert_true(wait_for(e, pred_drained, NULL, 60000));
	/* What the journal alone brought of the outage ("today"). */
	n = v_end - v_stop;
	count = calloc((size_t)n, sizeof(int));
	for (int k = 0; k < K_THINGS; k++) {
		char name[16];
		snprintf(name, sizeof(name), "t%d", k);
		count_values(e, name, v_stop, n, count, &other);
	}
	for (int64_t i = 0; i < n; i++)
		live += count[i];
	/* Recovery of the outage, to pushd. */
	ask_recovery(e, &q, from_s, to_s, "outage");
	assert_true(wait_for(e, pred_recovered, &q, 60000));
	assert_true(wait_for(e, pred_drained, NULL, 60000));
	memset(count, 0, (size_t)n * sizeof(int));
	other = 0;
	for (int k = 0; k < K_THINGS; k++) {
		char name[16];
		snprintf(name, sizeof(name), "t%d", k);
		count_values(e, name, v_stop, n, count, &other);
	}
	fprintf(stderr,
	        "outage: %" PRId64 " changes; the journal alone brought %" PRId64 ", with recovery %" PRId64
	        " (copies at the collector: %" PRId64 ")\n",
	        n, live, n, col_metric(e, "thingsync_collector_measurements_copies_total"));
	check_once(count, v_stop, (int)n);
	/* The recovered copies of what the journal had were recognised as such. */
	assert_true(col_metric(e, "thingsync_collector_measurements_copies_total") >= live - K_THINGS);
	free(count);
}

/* --- issue 13, scenario 5: the collector's database restored from an older copy, then a pull --- */

static const char *recoveryd_bin(void)
{
	const char *p = getenv("RECOVERYD");
	return p ? p : "thingsync-recoveryd";
}

static bool pred_recoveryd_up(struct env *e, void *arg)
{
	char url[128];
	json_t *j = NULL;
	long st;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u/v1/status", *(uint16_t *)arg);
	st = http("GET", url, NULL, NULL, &j);
	json_decref(j);
	return st == 200;
}

static void copy_file(const char *from, const char *to)
{
	FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
	char buf[65536];
	size_t n;

	assert_non_null(a);
	assert_non_null(b);
	while ((n = fread(buf, 1, sizeof(buf), a)) > 0)
		assert_int_equal(fwrite(buf, 1, n, b), n);
	fclose(a);
	assert_int_equal(fclose(b), 0);
}

/*
 * The collector's database is put back from a backup taken before part of
 * the stream; an operator's POST /v1/pull for the lost time goes (signed)
 * to the real thingsync-recoveryd, which asks OWNER's history, whose chunks
 * go to pushd and on to the collector: every change is stored exactly once
 * again, the ones the backup held as copies.
 */
static void test_restored_db_pull(void **state)
{
	struct env *e = *state;
	uint16_t rport = tcp_free_port();
	char db[600], backup[600], wal[640], rstate[600], listen[64], body[128];
	const char *argv[16];
	int64_t v_backup, v_end, want, from_s, other = 0;
	int *count;
	json_t *j = NULL;
	pid_t rec;

	/* RECOV is thingsync-recoveryd here, on the site the daemons read. */
	tsync_node_free(e->recov);
	e->recov = NULL;
	owner_with_history(e, 0);
	site_variant(e, rport, true);
	start_collector(e, (const char *[]){"--pull-scan", "0", "--pull-retry-min-ms", "100",
	                                    "--pull-retry-max-ms", "500", NULL});
	start_pushd_ready(e);
	snprintf(rstate, sizeof(rstate), "%s/recov", e->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", rport);
	argv[0] = recoveryd_bin();
	argv[1] = "--site";
	argv[2] = e->site_path;
	argv[3] = "--controller";
	argv[4] = "RECOV";
	argv[5] = "--state-dir";
	argv[6] = rstate;
	argv[7] = "--http";
	argv[8] = listen;
	argv[9] = NULL;
	rec = spawn(e, "recoveryd.log", (char *const *)argv);
	assert_true(wait_for(e, pred_recoveryd_up, &rport, 20000));

	/* Phase A, then a backup of the collector's database. */
	e->producing = true;
	want = e->next_value + 1000;
	assert_true(wait_for(e, pred_value_reached, &want, 30000));
	e->producing = false;
	assert_true(wait_for(e, pred_settled, NULL, 30000));
	assert_true(wait_for(e, pred_drained, NULL, 30000));
	harness_stop(&e->collector, SIGTERM);
	snprintf(db, sizeof(db), "%s/collector.db", e->dir);
	snprintf(backup, sizeof(backup), "%s/collector.db.backup", e->dir);
	copy_file(db, backup);
	v_backup = e->next_value;
	start_collector(e, (const char *[]){"--pull-scan", "0", "--pull-retry-min-ms", "100",
	                                    "--pull-retry-max-ms", "500", NULL});
	from_s = now_us() / 1000000 - 1;
	/* Phase B, stored, then lost: the database goes back to the backup. */
	e->producing = true;
	want = e->next_value + 2000;
	assert_true(wait_for(e, pred_value_reached, &want, 30000));
	e->producing = false;
	v_end = e->next_value;
	assert_true(wait_for(e, pred_settled, NULL, 30000));
	assert_true(wait_for(e, pred_drained, NULL, 30000));
	harness_stop(&e->collector, SIGTERM);
	copy_file(backup, db);
	snprintf(wal, sizeof(wal), "%s-wal", db);
	unlink(wal);
	snprintf(wal, sizeof(wal), "%s-shm", db);
	unlink(wal);
	start_collector(e, (const char *[]){"--pull-scan", "0", "--pull-retry-min-ms", "100",
	                                    "--pull-retry-max-ms", "500", NULL});
	count = calloc((size_t)(v_end - v_backup), sizeof(int));
	for (int k = 0; k < K_THINGS; k++) {
		char name[16];
		snprintf(name, sizeof(name), "t%d", k);
		count_values(e, name, v_backup, v_end - v_backup, count, &other);
	}
	for (int64_t i = 0; i < v_end - v_backup; i++)
		assert_int_equal(count[i], 0);
	/* The operator pulls the lost time. */
	snprintf(body, sizeof(body), "{\"from\":%" PRId64 ",\"to\":%" PRId64 "}", from_s,
	         now_us() / 1000000 + 1);
	assert_int_equal(signed_http(e, "POST", "/v1/pull", body, &j), 202);
	json_decref(j);
	{
		int64_t n = v_end - v_backup;
		int64_t done = 0, t0 = mono_ms();
		int64_t deadline = mono_ms() + 120000;
		/* Until every lost change is back (or the generous limit). */
		while (mono_ms() < deadline) {
			memset(count, 0, (size_t)n * sizeof(int));
			other = 0;
			for (int k = 0; k < K_THINGS; k++) {
				char name[16];
				snprintf(name, sizeof(name), "t%d", k);
				count_values(e, name, v_backup, n, count, &other);
			}
			done = 0;
			for (int64_t i = 0; i < n; i++)
				done += count[i] > 0;
			if (done == n)
				break;
			{
				struct timeval tv = {0, 200000};
				event_base_loopexit(e->base, &tv);
				event_base_dispatch(e->base);
			}
		}
		fprintf(stderr,
		        "restored database: %" PRId64 " changes lost, %" PRId64
		        " back after the pull, within %" PRId64
		        " ms of POST /v1/pull (polled every 200 ms)\n",
		        n, done, mono_ms() - t0);
		assert_true(wait_for(e, pred_drained, NULL, 30000));
		check_once(count, v_backup, (int)n);
	}
	j = col_get(e, "/v1/pulls");
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(json_object_get(j, "pulls"), 0), "state")),
	    "accepted");
	json_decref(j);
	/* The backup's changes are still there once each. */
	{
		int *old = calloc((size_t)v_backup, sizeof(int));
		int64_t o2 = 0, held = 0;
		for (int k = 0; k < K_THINGS; k++) {
			char name[16];
			snprintf(name, sizeof(name), "t%d", k);
			count_values(e, name, 0, v_backup, old, &o2);
		}
		for (int64_t i = 0; i < v_backup; i++) {
			assert_true(old[i] <= 1);
			held += old[i];
		}
		assert_true(held > 0);
		free(old);
	}
	free(count);
	{
		int status = harness_stop(&rec, SIGTERM);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
}

/* --- a CSV import that carries the owner's (boot, version) ------------------------------------ */

static bool pred_csv_done(struct env *e, void *arg)
{
	json_t *s = pushd_status(e);
	bool ok = s && json_is_true(json_object_get(json_object_get(s, "csv"), "done")) &&
	          jint(s, "journal", "entries") == 0;

	json_decref(s);
	return ok;
}

static bool pred_value_stored(struct env *e, void *arg)
{
	int64_t o = 0;
	int c = 0;

	count_values(e, "t0", *(int64_t *)arg, 1, &c, &o);
	return c > 0;
}

/*
 * A CSV file with the owner's (boot, version) of each line: a change the
 * collector has from the mesh is stored once (a copy), a new one is stored
 * marked import; a line with only one of the two is refused by pushd.
 */
static void test_csv_import_identity(void **state)
{
	struct env *e = *state;
	int64_t value = 4242, boot, version, o = 0;
	char path[600], csv_arg[620], text[512];
	const char *extra[] = {"--csv", csv_arg, NULL};
	json_t *j, *m, *s;
	tsync_value v = tsync_int(value);
	int c = 0;
	size_t i;

	start_collector(e, NULL);
	start_pushd_ready(e);
	assert_int_equal(tsync_node_set(e->owner, "t0", &v), 0);
	assert_true(wait_for(e, pred_value_stored, &value, 30000));
	j = col_get(e, "/v1/measurements?thing=t0");
	m = json_array_get(json_object_get(j, "measurements"),
	                   json_array_size(json_object_get(j, "measurements")) - 1);
	boot = jint(m, "owner_boot", NULL);
	version = jint(m, "version", NULL);
	json_decref(j);
	harness_stop(&e->pushd, SIGTERM);
	snprintf(text, sizeof(text),
	         "time,thing,value,owner_boot,version\n"
	         "%" PRId64 ",t0,%" PRId64 ",%" PRId64 ",%" PRId64 "\n"
	         "%" PRId64 ",t1,77,%" PRId64 ",999999\n"
	         "%" PRId64 ",t2,78,%" PRId64 "\n",
	         now_us() / 1000000 - 10, value, boot, version, now_us() / 1000000 - 9, boot,
	         now_us() / 1000000 - 8, boot);
	snprintf(path, sizeof(path), "%s/identity.csv", e->dir);
	{
		FILE *f = fopen(path, "w");
		assert_non_null(f);
		fputs(text, f);
		fclose(f);
	}
	snprintf(csv_arg, sizeof(csv_arg), "%s", path);
	start_pushd(e, extra);
	assert_true(wait_for(e, pred_pushd_up, NULL, 20000));
	assert_true(wait_for(e, pred_csv_done, NULL, 30000));
	s = pushd_status(e);
	assert_int_equal(jint(s, "csv", "imported"), 2);
	assert_int_equal(jint(s, "csv", "refused"), 1);
	json_decref(s);
	/* t0's change once, as it came first (live); t1's, new, as imported. */
	count_values(e, "t0", value, 1, &c, &o);
	assert_int_equal(c, 1);
	j = col_get(e, "/v1/measurements?thing=t1");
	assert_int_equal(json_array_size(json_object_get(j, "measurements")), 1);
	json_array_foreach(json_object_get(j, "measurements"), i, m)
	{
		assert_string_equal(json_string_value(json_object_get(m, "via")), "import");
		assert_int_equal(jint(m, "version", NULL), 999999);
	}
	json_decref(j);
	assert_int_equal(col_metric(e, "thingsync_collector_measurements_copies_total"), 1);
}
