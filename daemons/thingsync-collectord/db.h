/*
 * thingsync-collectord: storage, one interface over SQLite (embedded, the
 * default) and PostgreSQL (libpq, when built with -Dpostgres).
 *
 * Tables (the same in both; schema version DB_SCHEMA_VERSION):
 *   measurements (source, stream, seq) primary key; thing, vtype, value (JSON
 *                text), time_us, owner_boot, version, received_us
 *   rejected     (source, stream, seq) primary key; field, error, item (the
 *                JSON as received), received_us: measurements refused by
 *                validation, kept (quarantined) so that nothing a source
 *                sent is lost
 *   sources      source primary key; last_seen_us, last_seq (of its current
 *                stream), boot, stream: its current stream ('' none yet)
 *   streams      (source, stream) primary key; first_seq, last_seq,
 *                first_us, last_us, id (unique): every stream a source ever pushed
 *   alarms       id primary key; kind, subject, message, raised_us,
 *                cleared_us (0 while active), count
 *   items        (source, stream, seq) primary key; kind, item, received_us:
 *                every pushed item that is not a row of measurements or
 *                rejected under its sequence: a recovery_gap, a cumul, or a
 *                'copy' (a change stored before under another sequence,
 *                e.g. the live copy of a recovered one). With them a
 *                stream's sequences stay whole (gaps, missing).
 *   recovery_gaps  owner, from_us, to_us (unique together), via, received_us, source, stream,
 *                seq: windows an owner's history no longer held
 *   cumuls       (owner, thing, day) primary key; cumul (JSON text), via,
 *                received_us, source, stream, seq: closed days of cumuls
 *   pulls        id primary key; from_s, to_s, reason (unique), state
 *                (pending, accepted, failed), attempts, requested_us,
 *                updated_us, recovery_id, error: windows asked of recoveryd
 *   thingsync_schema  version: DB_SCHEMA_VERSION
 * A stream is a pushd journal's identity (32 hex digits); rows stored before
 * streams existed (schema 1) have stream ''. Schema 1 databases are migrated
 * in place, in one transaction, when the collector first connects.
 *
 * Schema 3 adds measurements.owner (the thing's owner in site.conf) and
 * .via (live, recovery, import): a change is identified by (owner, thing,
 * owner_boot, version), unique where owner_boot > 0, so whatever path
 * brings it (live push, recovery, an import with those fields) it is stored
 * once, with the path it came by first; the others are 'copy' items.
 * Schema 4 keys that unique index (measurements_change) by (owner_boot,
 * version, owner, thing), the same columns in a cheaper order to insert.
 * Schema 5 stores the measurements in measurement_rows keyed by (sid, seq),
 * sid a stream's streams.id (unique, never reused); `measurements` is a view
 * joining them with streams, with the columns above, for reads.
 *
 * Inserts are idempotent on (source, stream, seq): a batch sent twice is
 * stored once. A sequence already stored with other content (thing, value,
 * time) is the stream going backwards: the batch is refused, not ignored.
 * A batch of a stream that is not the source's current one is refused; a
 * source without one (new, or from before streams) adopts the first it pushes.
 *
 * Every call is synchronous (the collector is one event loop, and with a
 * backend that has store_apart its pushes' store() runs on a handle of its
 * own in storeq's thread; a slow database makes it answer slower, it never
 * answers before the commit). A handle is used by one thread at a time. Errors:
 *   DB_EDOWN   the database is unreachable or refuses to write (connection
 *              lost, disk full, read-only, ...): answered 503, alarm raised,
 *              and the collector reconnects by itself
 *   other      a negative errno (-EINVAL for a bad query, -ENOMEM)
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_DB_H
#define TSYNC_COLLECTOR_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/util.h"

#define DB_EDOWN (-ENOTCONN)
#define DB_SCHEMA_VERSION 5
#define DB_STREAM_MAX 32

struct db;

/* A thing's owner in site.conf (schema 3 fills the owner of older rows). */
struct db_owner {
	const char *thing, *owner;
};

/* A valid measurement, as stored. Strings are borrowed for the call. */
struct db_measurement {
	int64_t seq;
	const char *owner; /* site.conf's owner of the thing */
	const char *via;   /* "live", "recovery", "import" */
	const char *thing;
	const char *vtype; /* "bool", "int", "float", "string" */
	const char *value; /* JSON text of the value */
	int64_t time_us;
	int64_t owner_boot;
	int64_t version;
};

/* A refused measurement, quarantined with the reason. */
struct db_rejected {
	int64_t seq;
	const char *field;
	const char *error;
	const char *item; /* the item's JSON text as received */
};

/* A pushed item other than a measurement (see the table items). */
enum db_item_kind { DB_ITEM_GAP = 0, DB_ITEM_CUMUL };
/* What store() did with an item (db_batch.item_result). */
enum db_item_result { DB_ITEM_NEW = 0, DB_ITEM_DUP, DB_ITEM_CONFLICT };
struct db_item {
	int64_t seq;
	enum db_item_kind kind;
	const char *item; /* its JSON text as received: a sequence sent again is compared by it */
	const char *owner;
	const char *via;
	int64_t from_us, to_us; /* gap */
	const char *thing;      /* cumul */
	const char *day;        /* cumul, YYYY-MM-DD */
	const char *cumul;      /* cumul: JSON text, keys sorted (compared as text) */
};

/* One batch of one source, written in one transaction. */
struct db_batch {
	const char *source;
	const char *stream; /* "" for a pushd from before streams */
	int64_t boot;
	int64_t received_us;
	const struct db_measurement *m;
	size_t n;
	const struct db_rejected *rej;
	size_t nrej;
	const struct db_item *items;
	size_t nitems;
	uint8_t *item_result; /* nitems of enum db_item_result, written by store() */
	int64_t min_seq; /* lowest seq of the batch (0: empty) */
	int64_t max_seq; /* highest seq of the batch (0: empty) */
};

/* What store() did with a batch. */
enum db_outcome {
	DB_STORED = 0,        /* committed: `inserted` new, the others duplicates */
	DB_STREAM_CHANGED,    /* nothing stored: the source's current stream is `current` */
	DB_STREAM_BACKWARDS,  /* nothing stored: `conflict_seq` is stored with other content */
};

struct db_store_result {
	enum db_outcome outcome;
	size_t inserted;
	size_t copies; /* of the duplicates: changes stored before under another sequence */
	size_t copies_new; /* of those, settled for the first time (not a batch sent again) */
	bool adopted;                      /* the source had no stream and took this one */
	char current[DB_STREAM_MAX + 1];   /* DB_STREAM_CHANGED: the source's stream */
	int64_t current_last_seq;          /* ... and its last sequence */
	int64_t conflict_seq;              /* DB_STREAM_BACKWARDS */
};

struct db_alarm {
	int64_t id;
	const char *kind;
	const char *subject;
	const char *message;
	int64_t raised_us;
	int64_t cleared_us;
	int64_t count;
};

struct db_query {
	const char *source; /* NULL: any */
	const char *stream; /* NULL: any (after_seq pages within one stream) */
	const char *thing;  /* NULL: any */
	int64_t from_us;    /* time range, INT64_MIN/INT64_MAX for none */
	int64_t to_us;
	int64_t after_seq; /* only seq > after_seq (with source: paging) */
	int limit;
};

/* A parameter of a shared statement ($1, $2, ... in both dialects): text (NULL: NULL) or an integer. */
struct db_param {
	const char *s;
	int64_t i;
	bool is_int;
};
/* One row of a result: `n` columns as text (NULL: NULL), borrowed for the call; non-zero stops. */
typedef int (*db_row_fn)(void *ud, int n, const char *const *col);

struct db_ops {
	const char *name;
	/* store() may run on a second handle of its own in a worker thread
	 * (storeq.h) while this one serves the loop: store() holds no state
	 * outside its handle, and the database takes a second writer (a server
	 * at once; SQLite in turns, see db_sqlite.c). */
	bool store_apart;
	/* Connects; a database that cannot be reached yet is not an error here:
	 * the handle is made and reports DB_EDOWN until reconnect() works.
	 * `owners` (borrowed, outlives the handle) is used by the migration to
	 * schema 3. */
	int (*open)(const char *conninfo, const struct db_owner *owners, size_t n_owners,
	            const struct logger *log, struct db **ret);
	/* Runs one statement of the shared SQL (db_common.c); fn gets each row;
	 * *changes (may be NULL) the rows changed. 0, DB_EDOWN or -EIO. */
	int (*exec)(struct db *db, const char *sql, const struct db_param *p, size_t np, db_row_fn fn,
	            void *ud, int64_t *changes);
	void (*close)(struct db *db);
	/* Makes sure the connection is up (reconnecting) and the schema exists. 0 or DB_EDOWN. */
	int (*reconnect)(struct db *db);
	bool (*up)(const struct db *db);
	/*
	 * Writes a batch in one transaction: checks the stream (see above),
	 * inserts the measurements and the refused items (a (source, stream,
	 * seq) already there with the same content is a duplicate) and updates
	 * the source and its stream. `res` says what was done; a refused
	 * stream rolls everything back and returns 0. With `fail_before_commit`
	 * (fault injection) everything is done but the commit, which is
	 * replaced by a rollback and -EIO: a handler that fails half-way.
	 */
	int (*store)(struct db *db, const struct db_batch *b, bool fail_before_commit, struct db_store_result *res);
	/* Makes `stream` the current stream of `source` (the operator accepted it). */
	int (*accept_stream)(struct db *db, const char *source, const char *stream, int64_t now_us);
	/*
	 * What thingsync-dr needs to rebuild a source's journal:
	 * {"source","stream" (current, "" none),"last_seq" (its highest stored or
	 * refused sequence), "streams":[{"stream","first_seq","last_seq",
	 * "first_us","last_us"}], "versions":[{"thing","owner_boot","version"}]
	 * (the newest of each thing stored from this source)}.
	 */
	int (*stream_info)(struct db *db, const char *source, json_t **out);
	/*
	 * What thingsync-dr needs to restore an owner's values: the measurement
	 * of `thing` with the greatest (owner boot, version), from any source,
	 * as {"thing","type","value","time","owner_boot","version"}; *out NULL
	 * when none came from the mesh (owner boot 0: a CSV file's).
	 */
	int (*latest)(struct db *db, const char *thing, json_t **out);
	/* Sources: [{"source","stream","last_seen_us","last_seq","boot","stored","rejected",
	 * "missing","gaps":[[a,b],...]}], counted within each source's current stream. */
	int (*sources)(struct db *db, size_t max_gaps, json_t **out);
	/* Measurements matching q, ordered by source, stream and seq, as a JSON array. */
	int (*measurements)(struct db *db, const struct db_query *q, json_t **out);
	/* Refused items of a source (or all), newest first, at most `limit`. */
	int (*rejected)(struct db *db, const char *source, int limit, json_t **out);
	int (*alarm_put)(struct db *db, const struct db_alarm *a);
	/* Active alarms (cleared_us = 0), for a restart: fn is called for each. */
	int (*alarms_active)(struct db *db, void (*fn)(void *ud, const struct db_alarm *a), void *ud);
};

extern const struct db_ops db_sqlite_ops;
/* Whether this SQLite handle waits for the write lock (the worker's hand-off, db_sqlite.c). */
bool db_sqlite__waiting(const struct db *db);
#ifdef HAVE_POSTGRES
extern const struct db_ops db_pg_ops;
#endif

/* The collector's handle: the backend's ops and its own state behind it. */
struct db {
	const struct db_ops *ops;
};

/* What both backends do through exec() (db_common.c). Inside store()'s
 * transaction, after the measurements and refused items: the copies and
 * the other items; res->inserted says how many measurements the backend
 * inserted (all of them: no copy to look for). 0, DB_EDOWN or -EIO; a
 * stream going backwards sets res->outcome. */
int db__store_items(struct db *db, const struct db_batch *b, const char *stream, struct db_store_result *res);
/* Schema 2 to 3, in the caller's transaction (`add_columns`: measurements has no owner and via yet). */
int db__migrate_2(struct db *db, const struct db_owner *owners, size_t n_owners, bool add_columns);
/* Reads: [{"owner","thing","day","cumul","via","received"}], days within [from, to] ("" none). */
int db__cumuls(struct db *db, const char *owner, const char *thing, const char *from, const char *to,
               int limit, json_t **out);
int db__recovery_gaps(struct db *db, const char *owner, int limit, json_t **out);
/* Pulls (windows asked of recoveryd). */
struct db_pull {
	int64_t id, from_s, to_s;
	const char *reason; /* unique: the same hole is pulled once */
	const char *state;  /* "pending", "accepted", "failed" */
	int64_t attempts, requested_us, updated_us;
	const char *recovery_id, *error;
};
/* Adds a pull (its reason not yet known): 1 added, 0 known already, or an error. */
int db__pull_add(struct db *db, const struct db_pull *p);
int db__pull_update(struct db *db, const struct db_pull *p);
/* Calls fn for the pulls, newest first (only pending ones with `pending`), at most `limit`. */
int db__pulls(struct db *db, bool pending, int limit, void (*fn)(void *ud, const struct db_pull *p),
              void *ud);
/* The measured time around a hole [a, b] of a source's stream: the newest
 * before a and the oldest after b (0 when none). */
int db__hole_times(struct db *db, const char *source, const char *stream, int64_t a, int64_t b,
                   int64_t *before_us, int64_t *after_us);

/* Shared SQL text, the same for both backends: the tables of DB_SCHEMA_VERSION, then its indexes. */
extern const char *const db_schema_sql[];
extern const size_t db_schema_count;
extern const char *const db_index_sql[];
extern const size_t db_index_count;
/* The view `measurements` over measurement_rows and streams, in each dialect. */
extern const char db_view_sqlite_sql[];
extern const char db_view_pg_sql[];
/* PostgreSQL only, on a new database or one of an older schema: after db_schema_sql (collations,
 * the streams' id sequence), and after db_index_sql (index options). */
extern const char *const db_pg_columns_sql[];
extern const size_t db_pg_columns_count;
extern const char *const db_pg_index_sql[];
extern const size_t db_pg_index_count;
/* The measurements table of schemas 2 to 4 (keyed by source, stream, seq). */
extern const char db_measurements_4_sql[];
/* A backend's own parts of the schema, for db__schema(). */
struct db_dialect {
	const char *const *columns; /* after the tables, before the indexes */
	size_t ncolumns;
	const char *const *indexes; /* after the indexes */
	size_t nindexes;
	const char *view; /* db_view_*_sql */
	bool collate_c;   /* PostgreSQL: names compared under COLLATE "C" in the migration */
};
/*
 * Makes the tables and indexes of DB_SCHEMA_VERSION in the caller's
 * transaction. `migrate_4`: the database holds schema 2, 3 or 4's
 * measurements (schema 1's migrated to that shape first), rebuilt keyed by
 * stream id. `made`: a new database or one of an older schema (the
 * dialect's parts and the view are made).
 */
int db__schema(struct db *db, bool migrate_4, bool made, const struct db_dialect *dl);
/* Inside store()'s transaction, before a batch's rows: the id of (b->source, stream), its row of
 * streams made or updated (first and last seq, last_us). `sequence`: PostgreSQL's streams_id_seq. */
int db__stream_id(struct db *db, const struct db_batch *b, const char *stream, bool sequence, int64_t *sid);
/* Schema 1 to 2, after the backend's own primary-key changes (see db_common.c). */
extern const char *const db_migrate_1_common_sql[];
extern const size_t db_migrate_1_common_count;
/* The message of a push refused for its stream, for the reply and the alarm. */
void db__stream_changed_message(char *buf, size_t size, const char *source, const char *stream,
                                const struct db_store_result *res);

#endif
