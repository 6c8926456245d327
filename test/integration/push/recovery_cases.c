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

	assert_true(asprintf(&body, "{\"source\":\"PUSH\",\"stream\":\"%s\",\"boot\":1,\"measurements\":[%s]}",
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
	         "{\"seq\":1,\"thing\":\"t0\",\"value\":5,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":1},"
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
	         "{\"seq\":11,\"thing\":\"t0\",\"value\":6,\"time\":%" PRId64 ",\"owner_boot\":3,\"version\":2}", t + 5);
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
		assert_string_equal(json_string_value(json_object_get(m, "via")), i == 0 ? "live" : "recovery");
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
	assert_int_equal(push_items(e,
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
	check_items(e);
	/* A restart keeps it all, and migrates nothing. */
	stop_proc(&e->collector, SIGTERM);
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
	check_items(e);
}
#endif

/*
 * A schema 2 database (streams, no owner or via) holding the same change
 * twice (two streams of PUSH: a journal made again that sent the mesh's
 * current value again): migrated to 3, the change is kept once (the first),
 * the other row becomes a copy so the stream has no hole, owners are filled
 * from site.conf, and a recovered copy of an old change is stored no more.
 */
static void test_migrate_2_sqlite(void **state)
{
	static const char *const v2[] = {
	    "CREATE TABLE measurements (source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL,"
	    " thing TEXT NOT NULL, vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL,"
	    " owner_boot BIGINT NOT NULL, version BIGINT NOT NULL, received_us BIGINT NOT NULL,"
	    " PRIMARY KEY (source, stream, seq))",
	    "CREATE TABLE rejected (source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL,"
	    " field TEXT NOT NULL, error TEXT NOT NULL, item TEXT NOT NULL, received_us BIGINT NOT NULL,"
	    " PRIMARY KEY (source, stream, seq))",
	    "CREATE TABLE sources (source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
	    " boot BIGINT NOT NULL, stream TEXT NOT NULL DEFAULT '')",
	    "CREATE TABLE streams (source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL,"
	    " last_seq BIGINT NOT NULL, first_us BIGINT NOT NULL, last_us BIGINT NOT NULL,"
	    " PRIMARY KEY (source, stream))",
	    "CREATE TABLE thingsync_schema (version BIGINT NOT NULL)",
	    "INSERT INTO thingsync_schema VALUES (2)",
	    "INSERT INTO measurements VALUES"
	    " ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, 't0', 'int', '1', 1700000000000000, 3, 1, 1700000000000000),"
	    " ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 2, 't0', 'int', '2', 1700000000000001, 3, 2, 1700000000000000),"
	    " ('PUSH', '" TEST_STREAM "', 1, 't0', 'int', '2', 1700000000000005, 3, 2, 1700000000000009),"
	    " ('PUSH', '" TEST_STREAM "', 2, 't1', 'int', '7', 1700000000000006, 3, 1, 1700000000000009)",
	    "INSERT INTO sources VALUES ('PUSH', 1700000000000009, 2, 1, '" TEST_STREAM "')",
	    "INSERT INTO streams VALUES ('PUSH', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 1, 2, 1700000000000000,"
	    " 1700000000000000), ('PUSH', '" TEST_STREAM "', 1, 2, 1700000000000009, 1700000000000009)",
	};
	struct env *e = *state;
	char path[600];
	json_t *j = NULL, *src, *m;
	sqlite3 *db;
	size_t i;

	snprintf(path, sizeof(path), "%s/collector.db", e->dir);
	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	for (i = 0; i < sizeof(v2) / sizeof(v2[0]); i++)
		assert_int_equal(sqlite3_exec(db, v2[i], NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	start_collector(e, NULL);
	j = col_get(e, "/v1/measurements?thing=t0");
	assert_int_equal(json_array_size(json_object_get(j, "measurements")), 2);
	json_array_foreach(json_object_get(j, "measurements"), i, m)
	{
		assert_string_equal(json_string_value(json_object_get(m, "owner")), "OWNER");
		assert_string_equal(json_string_value(json_object_get(m, "via")), "live");
		assert_string_equal(json_string_value(json_object_get(m, "stream")), "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
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
	stop_proc(&e->collector, SIGTERM);
	start_collector(e, NULL);
	assert_int_equal(count_of(e, "/v1/measurements?thing=t0", "measurements"), 2);
}
