/*
 * thingsync-collectord: alarms (see alarms.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "curlev.h"
#include "alarms.h"

static const char *const kind_names[ALARM_KINDS] = {
    [ALARM_SOURCE_SILENT] = "source_silent",
    [ALARM_INVALID_PUSH] = "invalid_push",
    [ALARM_DB_UNAVAILABLE] = "database_unavailable",
    [ALARM_INTERNAL_ERROR] = "internal_error",
    [ALARM_STREAM_CHANGED] = "stream_changed",
    [ALARM_STREAM_BACKWARDS] = "stream_backwards",
    [ALARM_RECOVERY_WINDOW_LOST] = "recovery_window_lost",
    [ALARM_CUMUL_CONFLICT] = "cumul_conflict",
    [ALARM_PULL_FAILED] = "pull_failed",
};

const char *alarm_kind_name(enum alarm_kind kind)
{
	return (unsigned)kind < ALARM_KINDS ? kind_names[kind] : "unknown";
}

static enum alarm_kind kind_from_name(const char *name)
{
	for (int k = 0; k < ALARM_KINDS; k++)
		if (strcmp(kind_names[k], name) == 0)
			return (enum alarm_kind)k;
	return ALARM_KINDS;
}

void alarms__init(struct alarms *a, const struct logger *log, struct db *db)
{
	memset(a, 0, sizeof(*a));
	a->log = log;
	a->db = db;
}

static json_t *alarm_json(const struct alarm *al)
{
	return json_pack("{s:I,s:s,s:s,s:s,s:I,s:I,s:I,s:b}", "id", (json_int_t)al->id, "kind",
	                 alarm_kind_name(al->kind), "subject", al->subject, "message", al->message, "raised",
	                 (json_int_t)al->raised_us, "cleared", (json_int_t)al->cleared_us, "count",
	                 (json_int_t)al->count, "active", al->cleared_us == 0);
}

static void webhook_done(void *ud, int status, const char *error, const char *body, size_t len)
{
	struct alarms *a = ud;

	if (error || status < 200 || status > 299) {
		a->webhook_failed++;
		log_warn(a->log, "alarm webhook %s failed: %s (HTTP %d)", a->webhook,
		         error ? error : "refused", status);
	}
}

static void notify(struct alarms *a, const char *event, const struct alarm *al)
{
	json_t *j;
	char *body;
	static const char *const headers[] = {"Content-Type: application/json", NULL};

	if (!a->http || !a->webhook)
		return;
	/* A limit on what a slow webhook can make us hold. */
	if (curlev__running(a->http) >= 64) {
		a->webhook_failed++;
		log_warn(a->log, "alarm webhook: 64 posts pending, %s of alarm %lld not posted", event,
		         (long long)al->id);
		return;
	}
	j = json_pack("{s:s,s:o}", "event", event, "alarm", alarm_json(al));
	body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!body || curlev__post(a->http, a->webhook, headers, body, strlen(body), 10000, a->cacert,
	                          webhook_done, a) < 0)
		a->webhook_failed++;
	free(body);
}

static void persist(struct alarms *a, struct alarm *al)
{
	struct db_alarm d = {
	    al->id,   alarm_kind_name(al->kind), al->subject, al->message, al->raised_us, al->cleared_us,
	    al->count};

	if (!a->db || !a->db->ops->up(a->db)) {
		al->dirty = true;
		return;
	}
	al->dirty = a->db->ops->alarm_put(a->db, &d) < 0;
}

static struct alarm *find(struct alarms *a, enum alarm_kind kind, const char *subject)
{
	for (size_t i = 0; i < a->nactive; i++)
		if (a->active[i].kind == kind && strcmp(a->active[i].subject, subject) == 0)
			return &a->active[i];
	return NULL;
}

static int64_t next_id(struct alarms *a)
{
	/* Ids from the clock, so a restarted collector never reuses one. */
	int64_t id = (int64_t)util__realtime_us();
	if (id <= a->last_id)
		id = a->last_id + 1;
	a->last_id = id;
	return id;
}

void alarms__raise(struct alarms *a, enum alarm_kind kind, const char *subject, const char *fmt, ...)
{
	struct alarm *al = find(a, kind, subject);
	va_list ap;

	a->raised_total[kind]++;
	if (al) {
		al->count++;
		va_start(ap, fmt);
		vsnprintf(al->message, sizeof(al->message), fmt, ap);
		va_end(ap);
		al->dirty = true;
		return;
	}
	if (a->nactive == ALARM_MAX_ACTIVE) {
		log_error(a->log, "alarm table full: %s %s not kept", alarm_kind_name(kind), subject);
		return;
	}
	al = &a->active[a->nactive++];
	memset(al, 0, sizeof(*al));
	al->id = next_id(a);
	al->kind = kind;
	snprintf(al->subject, sizeof(al->subject), "%s", subject);
	va_start(ap, fmt);
	vsnprintf(al->message, sizeof(al->message), fmt, ap);
	va_end(ap);
	al->raised_us = (int64_t)util__realtime_us();
	al->count = 1;
	log_error(a->log, "alarm raised: %s %s: %s (id %lld)", alarm_kind_name(kind),
	          *subject ? subject : "-", al->message, (long long)al->id);
	persist(a, al);
	notify(a, "raised", al);
}

void alarms__clear(struct alarms *a, enum alarm_kind kind, const char *subject, const char *why)
{
	struct alarm *al = find(a, kind, subject);
	struct alarm *h;

	if (!al)
		return;
	al->cleared_us = (int64_t)util__realtime_us();
	log_warn(a->log, "alarm cleared: %s %s: %s (id %lld, raised %lld time(s))", alarm_kind_name(kind),
	         *subject ? subject : "-", why, (long long)al->id, (long long)al->count);
	persist(a, al);
	notify(a, "cleared", al);
	/* Into the history ring; an entry it pushes out that the database
	 * never got is lost from the database, not from the log. */
	h = &a->history[a->hist_next];
	*h = *al;
	a->hist_next = (a->hist_next + 1) % ALARM_HISTORY;
	if (a->nhist < ALARM_HISTORY)
		a->nhist++;
	*al = a->active[--a->nactive];
}

enum alarm_kind alarms__ackable(const char *name)
{
	enum alarm_kind k = name ? kind_from_name(name) : ALARM_KINDS;

	return k == ALARM_RECOVERY_WINDOW_LOST || k == ALARM_CUMUL_CONFLICT ? k : ALARM_KINDS;
}

bool alarms__is_active(const struct alarms *a, enum alarm_kind kind, const char *subject)
{
	return find((struct alarms *)a, kind, subject) != NULL;
}

size_t alarms__count_active(const struct alarms *a, enum alarm_kind kind)
{
	size_t n = 0;

	for (size_t i = 0; i < a->nactive; i++)
		n += a->active[i].kind == kind;
	return n;
}

void alarms__flush(struct alarms *a)
{
	for (size_t i = 0; i < a->nactive; i++)
		if (a->active[i].dirty)
			persist(a, &a->active[i]);
	for (size_t i = 0; i < a->nhist; i++)
		if (a->history[i].dirty)
			persist(a, &a->history[i]);
}

static void load_one(void *ud, const struct db_alarm *d)
{
	struct alarms *a = ud;
	enum alarm_kind kind = kind_from_name(d->kind);
	struct alarm *al;

	if (kind != ALARM_KINDS && find(a, kind, d->subject)) {
		/* Raised again while the database was away: the new one stands for both. */
		struct db_alarm old = *d;
		old.cleared_us = (int64_t)util__realtime_us();
		a->db->ops->alarm_put(a->db, &old);
		return;
	}
	if (kind == ALARM_KINDS || a->nactive == ALARM_MAX_ACTIVE)
		return;
	al = &a->active[a->nactive++];
	memset(al, 0, sizeof(*al));
	al->id = d->id;
	al->kind = kind;
	snprintf(al->subject, sizeof(al->subject), "%s", d->subject);
	snprintf(al->message, sizeof(al->message), "%s", d->message);
	al->raised_us = d->raised_us;
	al->count = d->count;
	if (al->id > a->last_id)
		a->last_id = al->id;
}

void alarms__load(struct alarms *a)
{
	size_t before = a->nactive;

	if (a->loaded || !a->db || !a->db->ops->up(a->db) ||
	    a->db->ops->alarms_active(a->db, load_one, a) < 0)
		return;
	a->loaded = true;
	if (a->nactive > before)
		log_warn(a->log, "%zu alarm(s) still active from before the restart", a->nactive - before);
}

json_t *alarms__json(const struct alarms *a, bool history)
{
	json_t *act = json_array(), *old = json_array();

	for (size_t i = 0; act && i < a->nactive; i++)
		json_array_append_new(act, alarm_json(&a->active[i]));
	/* Newest first. */
	for (size_t i = 0; history && old && i < a->nhist; i++)
		json_array_append_new(
		    old, alarm_json(&a->history[(a->hist_next + ALARM_HISTORY - 1 - i) % ALARM_HISTORY]));
	return json_pack("{s:o,s:o}", "active", act ? act : json_array(), "cleared",
	                 old ? old : json_array());
}
