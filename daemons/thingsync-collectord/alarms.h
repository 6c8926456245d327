/*
 * thingsync-collectord: alarms. An alarm is identified by its kind and its
 * subject (a source's name, or "" for the collector itself); raising an
 * active one again only counts. Each one is logged, kept in memory (active
 * ones, and the last ALARM_HISTORY cleared ones), written to the database
 * (later, when the database is what is down) and, with a webhook, posted.
 * Each alarm is cleared by the end of its cause (see collectord.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef TSYNC_COLLECTOR_ALARMS_H
#define TSYNC_COLLECTOR_ALARMS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "db.h"
#include "util/util.h"

struct curlev;

enum alarm_kind {
	ALARM_SOURCE_SILENT = 0,    /* a source pushed nothing for longer than its period */
	ALARM_INVALID_PUSH,         /* refused measurements, a malformed or unauthenticated push */
	ALARM_DB_UNAVAILABLE,       /* the database is unreachable or refuses writes */
	ALARM_INTERNAL_ERROR,       /* the collector failed handling a request */
	ALARM_STREAM_CHANGED,       /* a source pushes a stream that is not its current one */
	ALARM_STREAM_BACKWARDS,     /* a sequence came again with other content: the stream went back */
	ALARM_RECOVERY_WINDOW_LOST, /* an owner's history no longer held a window recovery asked for */
	ALARM_CUMUL_CONFLICT,       /* a closed day's cumul came again with other content */
	ALARM_PULL_FAILED,          /* recoveryd refused a pull (or is unreachable, retried) */
	ALARM_KINDS
};

#define ALARM_HISTORY    256
#define ALARM_MAX_ACTIVE 1024
#define ALARM_SUBJECT    64
#define ALARM_MESSAGE    256

struct alarm {
	int64_t id;
	enum alarm_kind kind;
	char subject[ALARM_SUBJECT];
	char message[ALARM_MESSAGE];
	int64_t raised_us;
	int64_t cleared_us; /* 0 while active */
	int64_t count;      /* times raised while active */
	bool dirty;         /* not yet written to the database */
};

struct alarms {
	const struct logger *log;
	struct db *db;
	struct curlev *http; /* NULL: no webhook */
	const char *webhook;
	const char *cacert;
	struct alarm active[ALARM_MAX_ACTIVE];
	size_t nactive;
	struct alarm history[ALARM_HISTORY]; /* ring of cleared alarms, newest at hist_next - 1 */
	size_t nhist, hist_next;
	int64_t last_id;
	uint64_t raised_total[ALARM_KINDS];
	uint64_t webhook_failed;
	bool loaded; /* the database's active alarms were read (it may be down at start) */
};

const char *alarm_kind_name(enum alarm_kind kind);

void alarms__init(struct alarms *a, const struct logger *log, struct db *db);
/* Loads the alarms still active in the database (after a restart), once, when it is up. */
void alarms__load(struct alarms *a);
void alarms__raise(struct alarms *a, enum alarm_kind kind, const char *subject, const char *fmt, ...)
    TSYNC_PRINTF(4, 5);
void alarms__clear(struct alarms *a, enum alarm_kind kind, const char *subject, const char *why);
bool alarms__is_active(const struct alarms *a, enum alarm_kind kind, const char *subject);
/* Kinds an operator acknowledges (their cause is an event, not a state that
 * ends: recovery_window_lost, cumul_conflict); ALARM_KINDS if `name` is none. */
enum alarm_kind alarms__ackable(const char *name);
size_t alarms__count_active(const struct alarms *a, enum alarm_kind kind);
/* Writes what the database missed; call when it is up. */
void alarms__flush(struct alarms *a);
/* {"active":[...],"cleared":[...]} (cleared only if `history`). */
json_t *alarms__json(const struct alarms *a, bool history);

#endif
