/*
 * thingsync-collectord: what both storage backends share (see db.h).
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>

#include "db.h"

/* Plain SQL both SQLite and PostgreSQL accept: the schema of DB_SCHEMA_VERSION. */
const char *const db_schema_sql[] = {
    "CREATE TABLE IF NOT EXISTS measurements ("
    " source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, thing TEXT NOT NULL,"
    " vtype TEXT NOT NULL, value TEXT NOT NULL, time_us BIGINT NOT NULL, owner_boot BIGINT NOT NULL,"
    " version BIGINT NOT NULL, received_us BIGINT NOT NULL, PRIMARY KEY (source, stream, seq))",
    "CREATE INDEX IF NOT EXISTS measurements_thing_time ON measurements (thing, time_us)",
    "CREATE TABLE IF NOT EXISTS rejected ("
    " source TEXT NOT NULL, stream TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, field TEXT NOT NULL,"
    " error TEXT NOT NULL, item TEXT NOT NULL, received_us BIGINT NOT NULL,"
    " PRIMARY KEY (source, stream, seq))",
    "CREATE TABLE IF NOT EXISTS sources ("
    " source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " boot BIGINT NOT NULL, stream TEXT NOT NULL DEFAULT '')",
    "CREATE TABLE IF NOT EXISTS streams ("
    " source TEXT NOT NULL, stream TEXT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " first_us BIGINT NOT NULL, last_us BIGINT NOT NULL, PRIMARY KEY (source, stream))",
    "CREATE TABLE IF NOT EXISTS alarms ("
    " id BIGINT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL,"
    " raised_us BIGINT NOT NULL, cleared_us BIGINT NOT NULL, count BIGINT NOT NULL)",
};
const size_t db_schema_count = sizeof(db_schema_sql) / sizeof(db_schema_sql[0]);

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
