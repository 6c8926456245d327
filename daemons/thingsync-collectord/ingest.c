/*
 * thingsync-collectord: POST /v1/push, the ingest of pushd's batches.
 *
 * 1. Authentication. The request is signed with the site key (httpd: checked
 *    on its head, with the time window and the replay cache, before the body
 *    is read). X-Thingsync-Source names a controller of site.conf with the
 *    push role. Else 401, and an invalid_push alarm.
 * 2. The envelope: JSON, "source" equal to the header, "stream" (the
 *    journal's id, 32 lowercase hex digits; absent from a pushd older than
 *    streams), "measurements" an array of at most --max-batch items, each
 *    with an integer "seq" >= 1. Else 400 (413 for too many), naming the
 *    field, alarm; nothing stored, nothing settled: pushd sends it again (a
 *    bug there must not lose data).
 * 2b. The stream (checked by the database, in the batch's transaction): a
 *    stream that is not the source's current one is refused with 409 and a
 *    stream_changed alarm, nothing stored, nothing settled, until the
 *    operator runs thingsync-dr recover or accepts it (POST
 *    /v1/streams/accept); a sequence stored before with other content is
 *    the stream going backwards: 409, stream_backwards alarm, nothing stored.
 *    The same content again is a duplicate, settled as today.
 * 3. Every item is checked against site.conf: "thing" a thing of the site,
 *    "value" of its type and within its limits or allowed values, "time"
 *    (microseconds since the epoch) after 2000 and at most a day ahead,
 *    "owner_boot" and "version" non-negative integers if present.
 *    The batch is SPLIT: valid items are stored, invalid ones are stored
 *    apart (table rejected, with field and reason), in the same transaction.
 *    The answer is then 422 naming each refused item's field, or 200 when
 *    none was refused; both say "settled": every item of the batch is
 *    durably accounted for, so pushd moves its cursor over the batch. A
 *    refused item is never silently dropped, and never blocks its valid
 *    neighbours (nor everything pushd journals after it).
 * 3b. An item may say how it came, "source": "recovery" or "import" (absent:
 *    live); the change is keyed on (owner, thing, owner_boot, version), the
 *    owner being the thing's in site.conf, and stored once whatever path
 *    brings it (db.h). Two other kinds of item ("kind"):
 *    {"seq","kind":"recovery_gap","owner","from","to"} (microseconds): an
 *    owner's history no longer held that window: kept in recovery_gaps, alarm
 *    recovery_window_lost naming owner and window;
 *    {"seq","kind":"cumul","owner","thing","day":"YYYY-MM-DD","cumul":{...}}:
 *    a closed day, kept in cumuls once per (owner, thing, day); other content
 *    for a stored day keeps the first and raises cumul_conflict. Both are
 *    checked against site.conf and refused into `rejected` like measurements.
 * 4. 200/422 are sent only after the COMMIT. A database that is down or
 *    refuses to write gives 503 and a database_unavailable alarm; a handler
 *    failure, 500 and an internal_error alarm. Neither stores anything, and
 *    pushd retries.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "collector.h"
#include "fastpush.h"
#include "storeq.h"

struct source *collector__source(struct collector *c, const char *name)
{
	for (size_t i = 0; name && i < c->n_sources; i++)
		if (strcmp(c->sources[i].name, name) == 0)
			return &c->sources[i];
	return NULL;
}

static bool valid_name(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++) {
		char ch = s[n];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
		      ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return n >= 1 && n <= COLLECTOR_NAME_MAX;
}

/* Answers a push that settles nothing: error text and the field it is about. */
static void refuse(struct collector *c, struct evhttp_request *req, int status, enum push_result result,
                   const char *field, const char *error)
{
	c->pushes[result]++;
	httpd__reply_json(req, status,
	                json_pack("{s:b,s:s,s:s}", "settled", 0, "field", field, "error", error));
}

/* One refused item. */
struct refusal {
	int64_t seq;
	const char *field;
	char error[160];
};

/* Refuses the item being checked: the field and the reason, into `r`. */
#define REFUSE(f, ...)                                                                                       \
	do {                                                                                                 \
		r->field = (f);                                                                              \
		snprintf(r->error, sizeof(r->error), __VA_ARGS__);                                           \
		return -EINVAL;                                                                              \
	} while (0)

/* How an item came: its "source" `s` (recovery, import), `def` when absent, NULL when bad. */
static const char *via_name(bool present, const char *s, const char *def)
{
	if (!present)
		return def;
	if (s && strcmp(s, "recovery") == 0)
		return "recovery";
	if (s && strcmp(s, "import") == 0)
		return "import";
	return NULL;
}

static const char *item_via(json_t *item, const char *def)
{
	json_t *j = json_object_get(item, "source");

	return via_name(j != NULL, json_string_value(j), def);
}

/*
 * A measurement's members as check_item() reads them: from jansson's tree
 * (view_of_json) or from the fast reader (view_of_fast), so both are
 * checked by the same code.
 */
struct item_view {
	bool has_via;
	const char *via;       /* with has_via: the string, NULL when not one */
	const char *thing;     /* NULL: missing or not a string */
	enum fast_value vkind; /* FAST_ABSENT: missing, or null, an object, an array */
	bool b;
	int64_t i;
	double f;
	const char *s;
	bool time_int; /* false: missing or not an integer */
	int64_t time;
	bool has_boot, boot_int, has_ver, ver_int;
	int64_t boot, ver;
};

static void view_of_json(json_t *item, struct item_view *iv)
{
	json_t *j = json_object_get(item, "source");

	memset(iv, 0, sizeof(*iv));
	iv->has_via = j != NULL;
	iv->via = json_string_value(j);
	iv->thing = json_string_value(json_object_get(item, "thing"));
	j = json_object_get(item, "value");
	if (json_is_boolean(j)) {
		iv->vkind = FAST_BOOL;
		iv->b = json_is_true(j);
	} else if (json_is_integer(j)) {
		iv->vkind = FAST_INT;
		iv->i = (int64_t)json_integer_value(j);
	} else if (json_is_real(j)) {
		iv->vkind = FAST_REAL;
		iv->f = json_real_value(j);
	} else if (json_is_string(j)) {
		iv->vkind = FAST_STRING;
		iv->s = json_string_value(j);
	}
	j = json_object_get(item, "time");
	iv->time_int = json_is_integer(j);
	iv->time = (int64_t)json_integer_value(j);
	j = json_object_get(item, "owner_boot");
	iv->has_boot = j != NULL;
	iv->boot_int = json_is_integer(j);
	iv->boot = (int64_t)json_integer_value(j);
	j = json_object_get(item, "version");
	iv->has_ver = j != NULL;
	iv->ver_int = json_is_integer(j);
	iv->ver = (int64_t)json_integer_value(j);
}

static void view_of_fast(const struct fast_item *it, struct item_view *iv)
{
	memset(iv, 0, sizeof(*iv));
	iv->has_via = it->via != NULL;
	iv->via = it->via;
	iv->thing = it->thing;
	iv->vkind = it->vkind;
	iv->b = it->b;
	iv->i = it->i;
	iv->f = it->f;
	iv->s = it->s;
	iv->time_int = it->has_time;
	iv->time = it->time;
	iv->has_boot = iv->boot_int = it->has_boot;
	iv->boot = it->boot;
	iv->has_ver = iv->ver_int = it->has_ver;
	iv->ver = it->ver;
}

/*
 * Checks one item. On success fills `m` (value text malloc()ed into *value_text).
 * On refusal fills `r` and returns -EINVAL.
 */
static int check_item(struct collector *c, const struct item_view *iv, int64_t now_us,
                      struct db_measurement *m, char **value_text, struct refusal *r)
{
	const char *thing = iv->thing;
	tsync_thing_info ti;
	tsync_value v;
	json_t *canon = NULL;
	char text[32] = ""; /* the value's JSON text, for a bool or an int (as jansson writes it) */
	int idx;

	memset(m, 0, sizeof(*m));
	m->seq = r->seq;
	m->via = via_name(iv->has_via, iv->via, "live");
	if (!m->via)
		REFUSE("source", "not \"recovery\" or \"import\"");
	if (!thing)
		REFUSE("thing", "missing or not a string");
	if (!valid_name(thing))
		REFUSE("thing", "not a thing name (1-63 of A-Z a-z 0-9 _ . -)");
	idx = tsync_site_thing_find(c->site, thing);
	if (idx < 0 || tsync_site_thing(c->site, (size_t)idx, &ti) < 0)
		REFUSE("thing", "'%s' is not a thing of site %s", thing, tsync_site_name(c->site));
	switch (ti.type) {
	case TSYNC_TYPE_BOOL:
		/* The seed's controllers send 1 and 0 for booleans. */
		if (iv->vkind == FAST_BOOL)
			v = tsync_bool(iv->b);
		else if (iv->vkind == FAST_INT && (iv->i == 0 || iv->i == 1))
			v = tsync_bool(iv->i == 1);
		else
			REFUSE("value", "%s is a bool: true, false, 1 or 0", thing);
		snprintf(text, sizeof(text), "%s", v.u.b ? "true" : "false");
		break;
	case TSYNC_TYPE_INT:
		if (iv->vkind != FAST_INT)
			REFUSE("value", "%s is an int: an integer is expected", thing);
		v = tsync_int(iv->i);
		snprintf(text, sizeof(text), "%" PRId64, (int64_t)v.u.i);
		break;
	case TSYNC_TYPE_FLOAT:
		if (iv->vkind != FAST_INT && iv->vkind != FAST_REAL)
			REFUSE("value", "%s is a float: a number is expected", thing);
		v = tsync_float(iv->vkind == FAST_INT ? (double)iv->i : iv->f);
		canon = json_real(v.u.f);
		break;
	case TSYNC_TYPE_STRING:
		if (iv->vkind != FAST_STRING)
			REFUSE("value", "%s is a string: a string is expected", thing);
		v = tsync_string(iv->s);
		canon = json_string(v.u.s);
		break;
	default:
		REFUSE("thing", "%s has no type", thing);
	}
	if (!canon && !text[0])
		REFUSE("value", "not representable");
	if (tsync_site_check_value(c->site, thing, &v) < 0) {
		json_decref(canon);
		if (ti.type == TSYNC_TYPE_STRING)
			REFUSE("value", "'%.40s' is too long or not an allowed value of %s", v.u.s, thing);
		if (ti.has_min || ti.has_max)
			REFUSE("value", "out of the limits of %s [%g, %g] or not allowed", thing,
			       ti.has_min ? ti.min : -INFINITY, ti.has_max ? ti.max : INFINITY);
		REFUSE("value", "not an allowed value of %s", thing);
	}
	if (!iv->time_int) {
		json_decref(canon);
		REFUSE("time", "missing or not an integer (microseconds since the epoch)");
	}
	m->time_us = iv->time;
	if (m->time_us < COLLECTOR_EPOCH_MIN_US || m->time_us > now_us + COLLECTOR_FUTURE_US) {
		json_decref(canon);
		REFUSE("time", "%" PRId64 " is before 2000 or more than a day ahead", m->time_us);
	}
	if (iv->has_boot && (!iv->boot_int || iv->boot < 0)) {
		json_decref(canon);
		REFUSE("owner_boot", "not a non-negative integer");
	}
	if (iv->has_ver && (!iv->ver_int || iv->ver < 0)) {
		json_decref(canon);
		REFUSE("version", "not a non-negative integer");
	}
	m->owner_boot = iv->has_boot ? iv->boot : 0;
	m->version = iv->has_ver ? iv->ver : 0;
	m->thing = thing;
	m->owner = ti.owner;
	m->vtype = tsync_type_name(ti.type);
	*value_text = canon ? json_dumps(canon, JSON_COMPACT | JSON_ENCODE_ANY) : strdup(text);
	json_decref(canon);
	if (!*value_text) {
		r->field = "value";
		snprintf(r->error, sizeof(r->error), "out of memory");
		return -ENOMEM;
	}
	m->value = *value_text;
	return 0;
}

/* A time in microseconds as ISO 8601 UTC, for a message. */
static void format_utc(char *buf, size_t size, int64_t us)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, size, "%" PRId64, us);
}

/* "YYYY-MM-DD", a date that exists. */
static bool valid_day(const char *d)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, m, dd;

	if (!d || strlen(d) != 10 || d[4] != '-' || d[7] != '-' || strspn(d, "0123456789-") != 10)
		return false;
	y = atoi(d);
	m = atoi(d + 5);
	dd = atoi(d + 8);
	if (y < 2000 || m < 1 || m > 12 || dd < 1 || dd > mdays[m - 1])
		return false;
	return !(m == 2 && dd == 29 && (y % 4 != 0 || (y % 100 == 0 && y % 400 != 0)));
}

/* The texts an item of another kind holds while its batch is stored. */
struct item_texts {
	char *item, *cumul;
};

/*
 * Checks a recovery_gap or cumul item against site.conf; fills `it` (texts
 * malloc()ed into *t). -EINVAL with `r` filled when refused, -ENOMEM.
 */
static int check_other(struct collector *c, json_t *item, const char *kind, int64_t now_us,
                       struct db_item *it, struct item_texts *t, struct refusal *r)
{
	const char *owner = json_string_value(json_object_get(item, "owner"));
	tsync_thing_info ti;
	int idx;

	memset(it, 0, sizeof(*it));
	it->seq = r->seq;
	if (!owner || !valid_name(owner) || tsync_site_controller_find(c->site, owner) < 0)
		REFUSE("owner", "missing or not a controller of site %s", tsync_site_name(c->site));
	it->owner = owner;
	if (strcmp(kind, "recovery_gap") == 0) {
		json_t *jf = json_object_get(item, "from"), *jt = json_object_get(item, "to");
		it->kind = DB_ITEM_GAP;
		it->via = item_via(item, "recovery");
		if (!it->via)
			REFUSE("source", "not \"recovery\" or \"import\"");
		if (!json_is_integer(jf) || json_integer_value(jf) < COLLECTOR_EPOCH_MIN_US)
			REFUSE("from", "missing or not a time (microseconds since the epoch, after 2000)");
		if (!json_is_integer(jt) || json_integer_value(jt) < json_integer_value(jf) ||
		    json_integer_value(jt) > now_us + COLLECTOR_FUTURE_US)
			REFUSE("to", "missing, before from, or more than a day ahead");
		it->from_us = (int64_t)json_integer_value(jf);
		it->to_us = (int64_t)json_integer_value(jt);
	} else if (strcmp(kind, "cumul") == 0) {
		const char *thing = json_string_value(json_object_get(item, "thing"));
		json_t *jc = json_object_get(item, "cumul");
		it->kind = DB_ITEM_CUMUL;
		it->via = item_via(item, "live");
		if (!it->via)
			REFUSE("source", "not \"recovery\" or \"import\"");
		if (!thing || !valid_name(thing) || (idx = tsync_site_thing_find(c->site, thing)) < 0 ||
		    tsync_site_thing(c->site, (size_t)idx, &ti) < 0)
			REFUSE("thing", "missing or not a thing of site %s", tsync_site_name(c->site));
		if (strcmp(ti.owner, owner) != 0)
			REFUSE("owner", "%s is owned by %s, not %s", thing, ti.owner, owner);
		it->thing = thing;
		it->day = json_string_value(json_object_get(item, "day"));
		if (!valid_day(it->day))
			REFUSE("day", "missing or not a date YYYY-MM-DD");
		if (!json_is_object(jc))
			REFUSE("cumul", "missing or not an object");
		t->cumul = json_dumps(jc, JSON_COMPACT | JSON_SORT_KEYS);
		if (!t->cumul)
			return -ENOMEM;
		if (strlen(t->cumul) > COLLECTOR_MAX_CUMUL)
			REFUSE("cumul", "longer than %d bytes", COLLECTOR_MAX_CUMUL);
		it->cumul = t->cumul;
	} else {
		REFUSE("kind", "not measurement, recovery_gap or cumul");
	}
	t->item = json_dumps(item, JSON_COMPACT | JSON_SORT_KEYS);
	if (!t->item)
		return -ENOMEM;
	it->item = t->item;
	return 0;
}

/* What the items of a stored batch raise: a lost window, a cumul that came again changed. */
static void item_alarms(struct collector *c, const struct db_batch *b)
{
	for (size_t i = 0; i < b->nitems; i++) {
		const struct db_item *it = &b->items[i];
		char from[32], to[32];

		if (it->kind == DB_ITEM_GAP && b->item_result[i] == DB_ITEM_NEW) {
			format_utc(from, sizeof(from), it->from_us);
			format_utc(to, sizeof(to), it->to_us);
			c->recovery_gaps_total++;
			alarms__raise(&c->alarms, ALARM_RECOVERY_WINDOW_LOST, it->owner,
			              "the history of %s no longer holds [%s, %s] (%" PRId64 "..%" PRId64
			              " us): its changes in that window are lost",
			              it->owner, from, to, it->from_us, it->to_us);
		} else if (it->kind == DB_ITEM_CUMUL && b->item_result[i] == DB_ITEM_CONFLICT) {
			c->cumul_conflicts_total++;
			alarms__raise(
			    &c->alarms, ALARM_CUMUL_CONFLICT, it->owner,
			    "the cumul of %s on %s came again from %s with other content; the first is kept",
			    it->thing, it->day, it->owner);
		} else if (it->kind == DB_ITEM_CUMUL && b->item_result[i] == DB_ITEM_NEW) {
			c->cumuls_total++;
		}
	}
}

#undef REFUSE

/*
 * Steps 2 and 3 below for the usual body, read without a tree (fastpush.c):
 * its envelope as step 2 wants it and every item a valid measurement.
 * 1: *ms and *texts filled for fp->n items, *min_seq and *max_seq set;
 * 0: not so, nothing kept: the long way reads the body and says what is
 * wrong; -ENOMEM.
 */
static int fast_items(struct collector *c, const struct source *src, const char *body, size_t len,
                      int64_t now, struct fast_push *fp, struct db_measurement **ms, char ***texts,
                      int64_t *min_seq, int64_t *max_seq)
{
	int r = fastpush__parse(body, len, c->opt.max_batch, fp);

	if (r <= 0)
		return r;
	r = 0;
	if (strcmp(fp->source, src->name) != 0 || (fp->has_boot && fp->boot < 0) ||
	    (fp->stream && (strlen(fp->stream) != DB_STREAM_MAX ||
	                    strspn(fp->stream, "0123456789abcdef") != DB_STREAM_MAX)))
		goto no;
	*ms = calloc(fp->n + 1, sizeof(**ms));
	*texts = calloc(fp->n + 1, sizeof(**texts));
	if (!*ms || !*texts) {
		r = -ENOMEM;
		goto no;
	}
	for (size_t i = 0; i < fp->n; i++) {
		struct refusal rf = {.seq = fp->items[i].seq};
		struct item_view iv;

		if (rf.seq < 1)
			goto no;
		view_of_fast(&fp->items[i], &iv);
		r = check_item(c, &iv, now, &(*ms)[i], &(*texts)[i], &rf);
		if (r < 0)
			goto no;
		if (rf.seq > *max_seq)
			*max_seq = rf.seq;
		if (*min_seq == 0 || rf.seq < *min_seq)
			*min_seq = rf.seq;
	}
	return 1;
no:
	for (size_t i = 0; *texts && i < fp->n; i++)
		free((*texts)[i]);
	free(*ms);
	free(*texts);
	*ms = NULL;
	*texts = NULL;
	*min_seq = *max_seq = 0;
	fastpush__free(fp);
	return r == -ENOMEM ? r : 0;
}

/*
 * One push being handled: the batch and everything it borrows, from the
 * request's body to the answer (the batch is stored by
 * storeq's worker while the loop reads the next POST).
 */
struct push {
	struct storeq_job job; /* first: the queue's job is the push */
	struct collector *c;
	struct evhttp_request *req;
	struct source *src;
	json_t *root, *rej_json;
	struct fast_push fp;
	struct db_measurement *ms;
	struct db_rejected *rs;
	struct refusal *refusals;
	char **texts;
	struct db_item *its;
	struct item_texts *itexts;
	uint8_t *item_result;
	size_t n, nm, nr, ni;
	struct db_batch batch;
};

static void push_free(struct push *p)
{
	for (size_t i = 0; p->texts && i < p->n; i++)
		free(p->texts[i]);
	for (size_t i = 0; p->itexts && i < p->n; i++) {
		free(p->itexts[i].item);
		free(p->itexts[i].cumul);
	}
	free(p->texts);
	free(p->its);
	free(p->itexts);
	free(p->item_result);
	free(p->ms);
	free(p->rs);
	free(p->refusals);
	json_decref(p->rej_json);
	json_decref(p->root);
	fastpush__free(&p->fp);
	free(p);
}

/* 4, once the batch's store() returned: the answer, the alarms, the counters. */
static void push_stored(struct storeq_job *job)
{
	struct push *p = (struct push *)job;
	struct collector *c = p->c;
	struct evhttp_request *req = p->req;
	struct source *src = p->src;
	const struct db_store_result *res = &job->res;
	const struct db_batch *b = &p->batch;
	const char *stream = b->stream;
	size_t n = p->n, nm = p->nm, nr = p->nr, ni = p->ni, inserted = res->inserted;
	int64_t max_seq = b->max_seq;
	json_t *resp;
	char msg[256];
	int r = job->r;

	if (r == -ECANCELED) {
		refuse(c, req, 503, PUSH_UNAVAILABLE, "collector", "stopping: nothing stored, send again");
		goto leave;
	}
	if (r == DB_EDOWN) {
		collector__db_down(c, "the database is unavailable");
		refuse(c, req, 503, PUSH_UNAVAILABLE, "database", "database unavailable");
		goto leave;
	}
	if (r < 0) {
		alarms__raise(&c->alarms, ALARM_INTERNAL_ERROR, "",
		              "push of %zu measurement(s) from %s failed in the handler: %s", n, src->name,
		              job->fail_before_commit ? "injected fault" : strerror(-r));
		refuse(c, req, 500, PUSH_ERROR, "collector", "internal error: nothing stored, send again");
		goto leave;
	}
	collector__db_ok(c);
	if (res->outcome == DB_STREAM_CHANGED) {
		char text[600];
		db__stream_changed_message(text, sizeof(text), src->name, stream, res);
		/* Raised again by every retry: the count says how long it waits. */
		alarms__raise(&c->alarms, ALARM_STREAM_CHANGED, src->name,
		              "stream '%s' refused: the collector holds '%s' through seq %" PRId64
		              "; run thingsync-dr recover on %s, or POST /v1/streams/accept",
		              stream, res->current, res->current_last_seq, src->name);
		c->pushes[PUSH_INVALID]++;
		httpd__reply_json(req, 409,
		                  json_pack("{s:b,s:s,s:s,s:s,s:s,s:I}", "settled", 0, "field", "stream", "error", text,
		                            "stream", stream, "current_stream", res->current, "current_last_seq",
		                            (json_int_t)res->current_last_seq));
		goto leave;
	}
	if (res->outcome == DB_STREAM_BACKWARDS) {
		snprintf(msg, sizeof(msg),
		         "seq %" PRId64 " of stream '%s' is stored with other content: the stream went "
		         "backwards (a journal restored from an old copy?); nothing stored",
		         res->conflict_seq, stream);
		alarms__raise(&c->alarms, ALARM_STREAM_BACKWARDS, src->name, "%s", msg);
		c->pushes[PUSH_INVALID]++;
		httpd__reply_json(req, 409,
		                  json_pack("{s:b,s:s,s:s,s:s,s:I}", "settled", 0, "field", "seq", "error", msg, "stream",
		                            stream, "seq", (json_int_t)res->conflict_seq));
		goto leave;
	}
	if (res->adopted)
		log_info(&c->log, "source %s: stream %s adopted (it had none)", src->name, stream);
	if (n > 0 || *stream) {
		/* It pushes its current stream again (after thingsync-dr recover). */
		alarms__clear(&c->alarms, ALARM_STREAM_CHANGED, src->name, "it pushes the collector's stream");
		if (n > 0)
			alarms__clear(&c->alarms, ALARM_STREAM_BACKWARDS, src->name, "a push was stored");
	}
	alarms__clear(&c->alarms, ALARM_INTERNAL_ERROR, "", "a push was stored");
	item_alarms(c, b);
	if (res->adopted || max_seq > src->last_seq)
		src->last_seq = max_seq;
	src->measurements += inserted;
	src->duplicates += nm - inserted;
	c->copies_total += res->copies_new;
	src->rejected += nr;
	c->stored_total += inserted;
	c->duplicates_total += nm - inserted;
	c->rejected_total += nr;
	if (nr > 0) {
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name,
		              "%zu of %zu measurement(s) refused, e.g. seq %" PRId64 " field %s: %s", nr, n,
		              p->refusals[0].seq, p->refusals[0].field, p->refusals[0].error);
		log_warn(&c->log, "push from %s: %zu stored, %zu refused (first: seq %" PRId64 " %s: %s)",
		         src->name, inserted, nr, p->refusals[0].seq, p->refusals[0].field, p->refusals[0].error);
	} else if (nm > 0) {
		alarms__clear(&c->alarms, ALARM_INVALID_PUSH, src->name, "a push was entirely valid");
	}
	c->pushes[nr ? PUSH_INVALID : PUSH_OK]++;
	resp = json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:O}", "settled", 1, "through", (json_int_t)max_seq,
	                 "stored", (json_int_t)inserted, "duplicates", (json_int_t)(nm - inserted), "copies",
	                 (json_int_t)res->copies, "items", (json_int_t)ni, "rejected", p->rej_json);
	if (resp && nr > 0) {
		snprintf(msg, sizeof(msg),
		         "%zu invalid measurement(s); first: seq %" PRId64 " field '%s': %s", nr,
		         p->refusals[0].seq, p->refusals[0].field, p->refusals[0].error);
		json_object_set_new(resp, "field", json_string(p->refusals[0].field));
		json_object_set_new(resp, "error", json_string(msg));
	}
	if (!resp) {
		alarms__raise(&c->alarms, ALARM_INTERNAL_ERROR, "", "out of memory handling a push from %s",
		              src->name);
		refuse(c, req, 500, PUSH_ERROR, "collector", "out of memory");
		goto leave;
	}
	httpd__reply_json(req, nr ? 422 : 200, resp);
leave:
	push_free(p);
}

void ingest__push(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq *hdr = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	const char *src_name = evhttp_find_header(hdr, "X-Thingsync-Source");
	size_t len = evbuffer_get_length(in);
	const char *body;
	struct source *src;
	struct push *p = NULL;
	json_t *root = NULL, *items = NULL, *jsrc, *jboot, *jstream;
	const char *stream = "";
	size_t n = 0, nm = 0, nr = 0, ni = 0;
	int64_t min_seq = 0, boot = 0;
	bool fast;
	struct db_batch *batch;
	int64_t now = (int64_t)util__realtime_us();
	int64_t max_seq = 0;
	json_error_t jerr;
	char msg[256];
	bool injected;
	int r;

	/* 1. Who is it? The request's signature was checked (httpd, a signed-only
	 * route) before its body was read; the body names the source again. */
	src = collector__source(c, src_name);
	body = (const char *)evbuffer_pullup(in, -1);
	if (!src) {
		c->unknown_refused_us = now;
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, "unknown",
		              "push from '%.64s', which is not a controller with the push role",
		              src_name ? src_name : "");
		refuse(c, req, 401, PUSH_UNAUTHORIZED, "X-Thingsync-Source", "not a source of this site");
		return;
	}
	if (!body) {
		refuse(c, req, 400, PUSH_INVALID, "body", "empty");
		return;
	}
	/* Authenticated: the source is alive, whatever it sent. */
	src->last_seen_us = now;
	src->pushes++;
	alarms__clear(&c->alarms, ALARM_SOURCE_SILENT, src->name, "it pushes again");
	p = calloc(1, sizeof(*p));
	if (!p)
		goto nomem;
	p->c = c;
	p->req = req;
	p->src = src;

	/* 2-3 for the usual body without a tree; anything else the long way. */
	r = fast_items(c, src, body, len, now, &p->fp, &p->ms, &p->texts, &min_seq, &max_seq);
	if (r < 0)
		goto nomem;
	fast = r == 1;
	if (fast) {
		n = nm = p->fp.n;
		stream = p->fp.stream ? p->fp.stream : "";
		boot = p->fp.has_boot ? p->fp.boot : 0;
		goto items;
	}

	/* 2. The envelope. */
	root = p->root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(root)) {
		snprintf(msg, sizeof(msg), "not a JSON object: %s (line %d)", jerr.text, jerr.line);
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "malformed push: %s", msg);
		refuse(c, req, 400, PUSH_INVALID, "body", msg);
		goto leave;
	}
	jsrc = json_object_get(root, "source");
	if (!json_is_string(jsrc) || strcmp(json_string_value(jsrc), src->name) != 0) {
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "push whose source is not %s",
		              src->name);
		refuse(c, req, 400, PUSH_INVALID, "source", "missing, or not the X-Thingsync-Source");
		goto leave;
	}
	jboot = json_object_get(root, "boot");
	if (jboot && (!json_is_integer(jboot) || json_integer_value(jboot) < 0)) {
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "push with a bad boot");
		refuse(c, req, 400, PUSH_INVALID, "boot", "not a non-negative integer");
		goto leave;
	}
	boot = jboot ? (int64_t)json_integer_value(jboot) : 0;
	jstream = json_object_get(root, "stream");
	if (jstream) {
		stream = json_string_value(jstream);
		if (!stream || strlen(stream) != DB_STREAM_MAX || strspn(stream, "0123456789abcdef") != DB_STREAM_MAX) {
			alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "push with a bad stream id");
			refuse(c, req, 400, PUSH_INVALID, "stream", "not a stream id (32 lowercase hex digits)");
			goto leave;
		}
	}
	items = json_object_get(root, "measurements");
	if (!json_is_array(items)) {
		alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "push without a measurements array");
		refuse(c, req, 400, PUSH_INVALID, "measurements", "missing or not an array");
		goto leave;
	}
	n = json_array_size(items);
	if (n > c->opt.max_batch) {
		snprintf(msg, sizeof(msg), "%zu measurements, more than %zu", n, c->opt.max_batch);
		refuse(c, req, 413, PUSH_TOO_LARGE, "measurements", msg);
		goto leave;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *jseq = json_object_get(json_array_get(items, i), "seq");
		if (!json_is_integer(jseq) || json_integer_value(jseq) < 1) {
			/* Without its key an item cannot be stored or set apart: refuse the batch. */
			snprintf(msg, sizeof(msg), "measurements[%zu].seq: missing or not an integer >= 1",
			         i);
			alarms__raise(&c->alarms, ALARM_INVALID_PUSH, src->name, "push refused: %s", msg);
			refuse(c, req, 400, PUSH_INVALID, "seq", msg);
			goto leave;
		}
		if (json_integer_value(jseq) > max_seq)
			max_seq = json_integer_value(jseq);
		if (min_seq == 0 || json_integer_value(jseq) < min_seq)
			min_seq = json_integer_value(jseq);
	}

items:
	/* 3. Every item (the fast way has them already). */
	p->n = n;
	if (!p->ms)
		p->ms = calloc(n + 1, sizeof(*p->ms));
	p->rs = calloc(n + 1, sizeof(*p->rs));
	p->refusals = calloc(n + 1, sizeof(*p->refusals));
	if (!p->texts)
		p->texts = calloc(n + 1, sizeof(*p->texts));
	p->its = calloc(n + 1, sizeof(*p->its));
	p->itexts = calloc(n + 1, sizeof(*p->itexts));
	p->item_result = calloc(n + 1, sizeof(*p->item_result));
	p->rej_json = json_array();
	if (!p->ms || !p->rs || !p->refusals || !p->texts || !p->its || !p->itexts || !p->item_result ||
	    !p->rej_json)
		goto nomem;
	for (size_t i = 0; !fast && i < n; i++) {
		json_t *item = json_array_get(items, i);
		const char *kind = json_string_value(json_object_get(item, "kind"));
		struct refusal *rf = &p->refusals[nr];
		char *vt = NULL;

		rf->seq = (int64_t)json_integer_value(json_object_get(item, "seq"));
		if (json_object_get(item, "kind") && (!kind || strcmp(kind, "measurement") != 0)) {
			r = check_other(c, item, kind ? kind : "", now, &p->its[ni], &p->itexts[i], rf);
			if (r == -ENOMEM)
				goto nomem;
			if (r == 0) {
				ni++;
				continue;
			}
		} else {
			struct item_view iv;
			view_of_json(item, &iv);
			r = check_item(c, &iv, now, &p->ms[nm], &vt, rf);
		}
		if (r == -ENOMEM)
			goto nomem;
		if (r == 0) {
			p->texts[i] = vt;
			nm++;
			continue;
		}
		p->texts[i] = json_dumps(item, JSON_COMPACT);
		if (!p->texts[i])
			goto nomem;
		p->rs[nr].seq = rf->seq;
		p->rs[nr].field = rf->field;
		p->rs[nr].error = rf->error;
		p->rs[nr].item = p->texts[i];
		json_array_append_new(p->rej_json, json_pack("{s:I,s:s,s:s}", "seq", (json_int_t)rf->seq,
		                                             "field", rf->field, "error", rf->error));
		nr++;
	}
	p->nm = nm;
	p->nr = nr;
	p->ni = ni;

	/* 4. Store, then answer (push_stored(), after the commit). */
	if (c->opt.fault_injection && c->faults.db_refuse) {
		collector__db_down(c, "the database refuses writes (injected fault)");
		refuse(c, req, 503, PUSH_UNAVAILABLE, "database", "database unavailable (injected)");
		goto leave;
	}
	batch = &p->batch;
	batch->source = src->name;
	batch->stream = stream;
	batch->boot = boot;
	batch->received_us = now;
	batch->m = p->ms;
	batch->n = nm;
	batch->rej = p->rs;
	batch->nrej = nr;
	batch->items = p->its;
	batch->nitems = ni;
	batch->item_result = p->item_result;
	batch->min_seq = min_seq;
	batch->max_seq = max_seq;
	injected = c->opt.fault_injection &&
	           (c->faults.handler ||
	            (c->faults.handler_every && ++c->faults.pushes_seen % c->faults.handler_every == 0));
	p->job.batch = batch;
	p->job.fail_before_commit = injected;
	p->job.done = push_stored;
	if (c->storeq) {
		r = storeq__submit(c->storeq, &p->job);
		if (r == 0)
			return;
		refuse(c, req, 503, PUSH_UNAVAILABLE, "collector", "busy storing other pushes: send again");
		goto leave;
	}
	p->job.r = c->db->ops->store(c->db, batch, injected, &p->job.res);
	push_stored(&p->job);
	return;
nomem:
	alarms__raise(&c->alarms, ALARM_INTERNAL_ERROR, "", "out of memory handling a push from %s",
	              src->name);
	refuse(c, req, 500, PUSH_ERROR, "collector", "out of memory");
leave:
	if (p)
		push_free(p);
}
