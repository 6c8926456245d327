/*
 * thingsync-collectord: what both storage backends share (see db.h).
 * SPDX-License-Identifier: MIT
 */
#include "db.h"

/* Plain SQL both SQLite and PostgreSQL accept. */
const char *const db_schema_sql[] = {
    "CREATE TABLE IF NOT EXISTS measurements ("
    " source TEXT NOT NULL, seq BIGINT NOT NULL, thing TEXT NOT NULL, vtype TEXT NOT NULL,"
    " value TEXT NOT NULL, time_us BIGINT NOT NULL, owner_boot BIGINT NOT NULL,"
    " version BIGINT NOT NULL, received_us BIGINT NOT NULL, PRIMARY KEY (source, seq))",
    "CREATE INDEX IF NOT EXISTS measurements_thing_time ON measurements (thing, time_us)",
    "CREATE TABLE IF NOT EXISTS rejected ("
    " source TEXT NOT NULL, seq BIGINT NOT NULL, field TEXT NOT NULL, error TEXT NOT NULL,"
    " item TEXT NOT NULL, received_us BIGINT NOT NULL, PRIMARY KEY (source, seq))",
    "CREATE TABLE IF NOT EXISTS sources ("
    " source TEXT PRIMARY KEY, last_seen_us BIGINT NOT NULL, last_seq BIGINT NOT NULL,"
    " boot BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS alarms ("
    " id BIGINT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL, message TEXT NOT NULL,"
    " raised_us BIGINT NOT NULL, cleared_us BIGINT NOT NULL, count BIGINT NOT NULL)",
};
const size_t db_schema_count = sizeof(db_schema_sql) / sizeof(db_schema_sql[0]);
