/*
 * thingsync-collectord: the read API (JSON), /metrics (Prometheus text
 * format), /health, and the fault-injection switch (only with
 * --fault-injection).
 *
 *   GET /v1/sources                     every source: current stream, last
 *                                       seen, last seq, stored, refused,
 *                                       missing, gaps (in its current stream)
 *   GET /v1/measurements?source=S&stream=X&thing=T&from=US&to=US&after_seq=N&limit=N
 *   GET /v1/streams?source=S            (signed) what thingsync-dr recover
 *                                       needs: current stream, its last seq,
 *                                       every stream, newest versions
 *   GET /v1/owned?controller=C          (signed) what thingsync-dr recover
 *                                       needs to restore an owner: the newest
 *                                       stored value of each thing C owns, and
 *                                       the last boot of C seen
 *   POST /v1/streams/accept             (signed) {"source","stream"}: make it
 *                                       the source's current stream
 *   GET /v1/rejected?source=S&limit=N   refused measurements with the reason
 *   GET /v1/cumuls?owner=O&thing=T&from=DAY&to=DAY&limit=N   closed days of cumuls
 *   GET /v1/recovery_gaps?owner=O&limit=N  windows an owner's history had lost
 *   GET /v1/pulls, POST /v1/pull        see pull.c
 *   GET /v1/alarms[?active=1]           active alarms and recently cleared ones
 *   GET /metrics, GET /health
 *   POST /v1/faults?handler=on|off&db=on|off&handler_every=N (N: every Nth
 *                                       push fails like handler=on; 0 none)
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "collector.h"

static void unavailable(struct collector *c, struct evhttp_request *req, int r)
{
	if (r == DB_EDOWN) {
		collector__db_down(c, "the database is unavailable");
		httpd__reply_json(req, 503, json_pack("{s:s}", "error", "database unavailable"));
	} else {
		httpd__reply_json(req, 500,
		                json_pack("{s:s}", "error", r == -ENOMEM ? "out of memory" : "query failed"));
	}
}

/* Parses the query string of the request into `q` (free with evhttp_clear_headers). */
static int parse_query(struct evhttp_request *req, struct evkeyvalq *q)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *qs = uri ? evhttp_uri_get_query(uri) : NULL;

	TAILQ_INIT(q);
	if (!qs)
		return 0;
	return evhttp_parse_query_str(qs, q) == 0 ? 0 : -EINVAL;
}

static int q_i64(struct evkeyvalq *q, const char *name, int64_t def, int64_t *out)
{
	const char *s = evhttp_find_header(q, name);
	char *end;
	long long x;

	if (!s) {
		*out = def;
		return 0;
	}
	errno = 0;
	x = strtoll(s, &end, 10);
	if (errno || end == s || *end)
		return -EINVAL;
	*out = x;
	return 0;
}

static void bad_param(struct evhttp_request *req, const char *name)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "bad query parameter '%s'", name);
	httpd__reply_json(req, 400, json_pack("{s:s,s:s}", "field", name, "error", msg));
}

/* The query and its "limit" (default 1000); false when answered 400 (q is then cleared). */
static bool query_limit(struct evhttp_request *req, struct evkeyvalq *q, int64_t *limit)
{
	if (parse_query(req, q) < 0) {
		bad_param(req, "query");
		return false;
	}
	if (q_i64(q, "limit", 1000, limit) < 0 || *limit < 1 || *limit > COLLECTOR_QUERY_LIMIT) {
		bad_param(req, "limit");
		evhttp_clear_headers(q);
		return false;
	}
	return true;
}

/* Answers a list read from the database as {"count":N,NAME:[...]} (or the error). */
static void reply_list(struct collector *c, struct evhttp_request *req, int r, const char *name, json_t *arr)
{
	if (r < 0) {
		unavailable(c, req, r);
		return;
	}
	httpd__reply_json(req, 200,
	                  json_pack("{s:I,s:o}", "count", (json_int_t)json_array_size(arr), name, arr));
}

void api__sources(struct collector *c, struct evhttp_request *req)
{
	json_t *arr = NULL, *out;
	int64_t now = (int64_t)util__realtime_us();
	int r = c->db->ops->sources(c->db, COLLECTOR_MAX_GAPS, &arr);
	size_t i;
	json_t *o;

	if (r < 0) {
		unavailable(c, req, r);
		return;
	}
	/* Add what only the collector knows (alive, silent, period), and sources never stored. */
	for (size_t k = 0; k < c->n_sources; k++) {
		const struct source *s = &c->sources[k];
		json_t *found = NULL;
		json_array_foreach(arr, i, o)
		{
			if (strcmp(json_string_value(json_object_get(o, "source")), s->name) == 0)
				found = o;
		}
		if (!found) {
			found = json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:[]}", "source", s->name,
			                  "last_seen_us", (json_int_t)0, "last_seq", (json_int_t)0, "boot",
			                  (json_int_t)0, "stored", (json_int_t)0, "rejected", (json_int_t)0,
			                  "missing", (json_int_t)0, "gaps");
			if (!found || json_array_append_new(arr, found) < 0)
				continue;
		}
		if (s->last_seen_us > json_integer_value(json_object_get(found, "last_seen_us")))
			json_object_set_new(found, "last_seen_us", json_integer(s->last_seen_us));
		json_object_set_new(found, "period_s", json_integer(s->period_s));
		json_object_set_new(
		    found, "silent",
		    json_boolean(alarms__is_active(&c->alarms, ALARM_SOURCE_SILENT, s->name)));
		json_object_set_new(found, "pushes", json_integer((json_int_t)s->pushes));
		json_object_set_new(found, "configured", json_true());
	}
	out = json_pack("{s:I,s:o}", "now_us", (json_int_t)now, "sources", arr);
	httpd__reply_json(req, 200, out);
}

void api__measurements(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	struct db_query dq;
	int64_t limit;
	json_t *arr = NULL;
	int r;

	if (parse_query(req, &q) < 0) {
		bad_param(req, "query");
		return;
	}
	memset(&dq, 0, sizeof(dq));
	dq.source = evhttp_find_header(&q, "source");
	dq.stream = evhttp_find_header(&q, "stream");
	dq.thing = evhttp_find_header(&q, "thing");
	if (q_i64(&q, "from", INT64_MIN, &dq.from_us) < 0) {
		bad_param(req, "from");
		goto leave;
	}
	if (q_i64(&q, "to", INT64_MAX, &dq.to_us) < 0) {
		bad_param(req, "to");
		goto leave;
	}
	if (q_i64(&q, "after_seq", 0, &dq.after_seq) < 0) {
		bad_param(req, "after_seq");
		goto leave;
	}
	if (q_i64(&q, "limit", 1000, &limit) < 0 || limit < 1 || limit > COLLECTOR_QUERY_LIMIT) {
		bad_param(req, "limit");
		goto leave;
	}
	dq.limit = (int)limit;
	r = c->db->ops->measurements(c->db, &dq, &arr);
	if (r < 0) {
		unavailable(c, req, r);
		goto leave;
	}
	httpd__reply_json(
	    req, 200, json_pack("{s:I,s:o}", "count", (json_int_t)json_array_size(arr), "measurements", arr));
leave:
	evhttp_clear_headers(&q);
}

void api__rejected(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	int64_t limit;
	json_t *arr = NULL;
	int r;

	if (!query_limit(req, &q, &limit))
		return;
	r = c->db->ops->rejected(c->db, evhttp_find_header(&q, "source"), (int)limit, &arr);
	reply_list(c, req, r, "rejected", arr);
	evhttp_clear_headers(&q);
}

/* A "YYYY-MM-DD" query parameter (absent: ""). */
static bool q_day(struct evkeyvalq *q, const char *name, const char **out)
{
	const char *s = evhttp_find_header(q, name);

	*out = s ? s : "";
	return !s || (strlen(s) == 10 && s[4] == '-' && s[7] == '-' && strspn(s, "0123456789-") == 10);
}

void api__cumuls(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *from, *to;
	int64_t limit;
	json_t *arr = NULL;
	int r;

	if (!query_limit(req, &q, &limit))
		return;
	if (!q_day(&q, "from", &from)) {
		bad_param(req, "from");
	} else if (!q_day(&q, "to", &to)) {
		bad_param(req, "to");
	} else {
		r = db__cumuls(c->db, evhttp_find_header(&q, "owner"), evhttp_find_header(&q, "thing"), from,
		               to, (int)limit, &arr);
		reply_list(c, req, r, "cumuls", arr);
	}
	evhttp_clear_headers(&q);
}

void api__recovery_gaps(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	int64_t limit;
	json_t *arr = NULL;
	int r;

	if (!query_limit(req, &q, &limit))
		return;
	r = db__recovery_gaps(c->db, evhttp_find_header(&q, "owner"), (int)limit, &arr);
	reply_list(c, req, r, "gaps", arr);
	evhttp_clear_headers(&q);
}

void api__streams(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *source;
	json_t *out = NULL;
	int r;

	if (parse_query(req, &q) < 0) {
		bad_param(req, "query");
		return;
	}
	source = evhttp_find_header(&q, "source");
	if (!source || !collector__source(c, source)) {
		httpd__reply_json(req, 404,
		                  json_pack("{s:s,s:s}", "field", "source", "error", "not a source of this site"));
		goto leave;
	}
	r = c->db->ops->stream_info(c->db, source, &out);
	if (r < 0) {
		unavailable(c, req, r);
		goto leave;
	}
	httpd__reply_json(req, 200, out);
leave:
	evhttp_clear_headers(&q);
}

void api__owned(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *ctrl;
	json_t *things = NULL, *one;
	json_int_t last_boot = 0;
	size_t n;
	int r;

	if (parse_query(req, &q) < 0) {
		bad_param(req, "query");
		return;
	}
	ctrl = evhttp_find_header(&q, "controller");
	if (!ctrl || tsync_site_controller_find(c->site, ctrl) < 0) {
		httpd__reply_json(
		    req, 404,
		    json_pack("{s:s,s:s}", "field", "controller", "error", "not a controller of this site"));
		goto leave;
	}
	things = json_array();
	if (!things) {
		httpd__reply_json(req, 500, json_pack("{s:s}", "error", "out of memory"));
		goto leave;
	}
	/* Per owned thing: the site says which things a controller owns, the
	 * database what the mesh last carried of them, whichever source stored it. */
	n = tsync_site_thing_count(c->site);
	for (size_t i = 0; i < n; i++) {
		tsync_thing_info ti;
		if (tsync_site_thing(c->site, i, &ti) < 0 || strcmp(ti.owner, ctrl) != 0)
			continue;
		r = c->db->ops->latest(c->db, ti.name, &one);
		if (r < 0) {
			unavailable(c, req, r);
			goto leave;
		}
		if (!one)
			continue;
		if (json_integer_value(json_object_get(one, "owner_boot")) > last_boot)
			last_boot = json_integer_value(json_object_get(one, "owner_boot"));
		json_array_append_new(things, one);
	}
	httpd__reply_json(
	    req, 200,
	    json_pack("{s:s,s:I,s:O}", "controller", ctrl, "last_boot", last_boot, "things", things));
leave:
	json_decref(things);
	evhttp_clear_headers(&q);
}

void api__accept_stream(struct collector *c, struct evhttp_request *req)
{
	const char *why = NULL;
	json_t *body = httpd__body_json(req, &why);
	const char *source = json_string_value(json_object_get(body, "source"));
	const char *stream = json_string_value(json_object_get(body, "stream"));
	struct source *src = collector__source(c, source);
	int r;

	if (!src) {
		httpd__reply_json(req, 400, json_pack("{s:s,s:s}", "field", "source",
		                                      "error", why ? why : "missing, or not a source of this site"));
		goto leave;
	}
	if (!stream || strlen(stream) != DB_STREAM_MAX || strspn(stream, "0123456789abcdef") != DB_STREAM_MAX) {
		httpd__reply_json(req, 400, json_pack("{s:s,s:s}", "field", "stream", "error",
		                                      "missing, or not a stream id (32 lowercase hex digits)"));
		goto leave;
	}
	r = c->db->ops->accept_stream(c->db, src->name, stream, (int64_t)util__realtime_us());
	if (r < 0) {
		unavailable(c, req, r);
		goto leave;
	}
	log_warn(&c->log, "source %s: stream %s accepted by the operator", src->name, stream);
	src->last_seq = 0;
	alarms__clear(&c->alarms, ALARM_STREAM_CHANGED, src->name, "the operator accepted the new stream");
	httpd__reply_json(req, 200, json_pack("{s:s,s:s}", "source", src->name, "stream", stream));
leave:
	json_decref(body);
}

void api__alarms(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *active;

	if (parse_query(req, &q) < 0) {
		bad_param(req, "query");
		return;
	}
	active = evhttp_find_header(&q, "active");
	httpd__reply_json(req, 200, alarms__json(&c->alarms, !(active && strcmp(active, "1") == 0)));
	evhttp_clear_headers(&q);
}

/*
 * POST /v1/alarms/ack {"kind":K,"subject":S}: an operator acknowledges an
 * alarm whose cause is an event, not a state that ends by itself: the data
 * of a recovery_window_lost window is gone from the owner (a later recovery
 * of it is trimmed the same way), and a cumul_conflict keeps the first
 * copy. 200 with the alarm cleared; 404 when no such alarm is active; 409
 * for kinds that clear when their cause ends; 400 naming the field.
 */
void api__alarm_ack(struct collector *c, struct evhttp_request *req)
{
	const char *why = NULL;
	json_t *body = httpd__body_json(req, &why);
	const char *kind = json_string_value(json_object_get(body, "kind"));
	const char *subject = json_string_value(json_object_get(body, "subject"));
	enum alarm_kind k = alarms__ackable(kind);

	if (!json_is_object(body))
		httpd__reply_json(req, 400,
		                  json_pack("{s:s,s:s}", "field", "body", "error",
		                            why ? why : "a JSON object {\"kind\":K,\"subject\":S} is expected"));
	else if (!kind)
		httpd__reply_json(req, 400, json_pack("{s:s,s:s}", "field", "kind", "error", "missing"));
	else if (k == ALARM_KINDS)
		httpd__reply_json(req, 409,
		                  json_pack("{s:s,s:s}", "field", "kind", "error",
		                            "not acknowledged: it clears when its cause ends"));
	else if (!subject)
		httpd__reply_json(req, 400, json_pack("{s:s,s:s}", "field", "subject", "error", "missing"));
	else if (!alarms__is_active(&c->alarms, k, subject))
		httpd__reply_json(req, 404, json_pack("{s:s}", "error", "no such active alarm"));
	else {
		alarms__clear(&c->alarms, k, subject, "acknowledged by the operator");
		httpd__reply_json(req, 200, json_pack("{s:s,s:s,s:b}", "kind", kind, "subject", subject,
		                                      "active", false));
	}
	json_decref(body);
}

void api__metrics(struct collector *c, struct evhttp_request *req)
{
	static const char *const results[] = {"ok",          "invalid", "unauthorized",
	                                      "unavailable", "error",   "too_large"};
	struct evbuffer *out = evbuffer_new();
	int64_t now = (int64_t)util__realtime_us();

	if (!out) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	evbuffer_add_printf(out, "# HELP thingsync_collector_pushes_total Pushes received, by result.\n"
	                         "# TYPE thingsync_collector_pushes_total counter\n");
	for (size_t i = 0; i < 6; i++)
		evbuffer_add_printf(out, "thingsync_collector_pushes_total{result=\"%s\"} %" PRIu64 "\n",
		                    results[i], c->pushes[i]);
	evbuffer_add_printf(out,
	                    "# TYPE thingsync_collector_measurements_stored_total counter\n"
	                    "thingsync_collector_measurements_stored_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_measurements_duplicate_total counter\n"
	                    "thingsync_collector_measurements_duplicate_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_measurements_rejected_total counter\n"
	                    "thingsync_collector_measurements_rejected_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_database_up gauge\n"
	                    "thingsync_collector_database_up{backend=\"%s\"} %d\n",
	                    c->stored_total, c->duplicates_total, c->rejected_total, c->db->ops->name,
	                    c->db->ops->up(c->db) && !c->faults.db_refuse ? 1 : 0);
	evbuffer_add_printf(out,
	                    "# TYPE thingsync_collector_measurements_copies_total counter\n"
	                    "thingsync_collector_measurements_copies_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_recovery_gaps_total counter\n"
	                    "thingsync_collector_recovery_gaps_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_cumuls_stored_total counter\n"
	                    "thingsync_collector_cumuls_stored_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_cumul_conflicts_total counter\n"
	                    "thingsync_collector_cumul_conflicts_total %" PRIu64 "\n"
	                    "# TYPE thingsync_collector_alarms_active gauge\n",
	                    c->copies_total, c->recovery_gaps_total, c->cumuls_total,
	                    c->cumul_conflicts_total);
	for (int k = 0; k < ALARM_KINDS; k++)
		evbuffer_add_printf(out, "thingsync_collector_alarms_active{kind=\"%s\"} %zu\n",
		                    alarm_kind_name((enum alarm_kind)k),
		                    alarms__count_active(&c->alarms, (enum alarm_kind)k));
	evbuffer_add_printf(out, "# TYPE thingsync_collector_alarms_raised_total counter\n");
	for (int k = 0; k < ALARM_KINDS; k++)
		evbuffer_add_printf(out, "thingsync_collector_alarms_raised_total{kind=\"%s\"} %" PRIu64 "\n",
		                    alarm_kind_name((enum alarm_kind)k), c->alarms.raised_total[k]);
	evbuffer_add_printf(out, "# TYPE thingsync_collector_source_last_seq gauge\n");
	for (size_t i = 0; i < c->n_sources; i++)
		evbuffer_add_printf(out, "thingsync_collector_source_last_seq{source=\"%s\"} %" PRId64 "\n",
		                    c->sources[i].name, c->sources[i].last_seq);
	evbuffer_add_printf(out, "# TYPE thingsync_collector_source_silence_seconds gauge\n");
	for (size_t i = 0; i < c->n_sources; i++)
		evbuffer_add_printf(out, "thingsync_collector_source_silence_seconds{source=\"%s\"} %.3f\n",
		                    c->sources[i].name, (double)(now - c->sources[i].last_seen_us) / 1e6);
	evbuffer_add_printf(out, "# TYPE thingsync_collector_source_measurements_total counter\n");
	for (size_t i = 0; i < c->n_sources; i++)
		evbuffer_add_printf(
		    out, "thingsync_collector_source_measurements_total{source=\"%s\"} %" PRIu64 "\n",
		    c->sources[i].name, c->sources[i].measurements);
	httpd__metrics(c->http, "thingsync_collector_", out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

void api__health(struct collector *c, struct evhttp_request *req)
{
	bool db_up = c->db->ops->up(c->db) && !(c->opt.fault_injection && c->faults.db_refuse);

	httpd__reply_json(req, db_up ? 200 : 503,
	                json_pack("{s:s,s:s,s:s,s:I}", "status", db_up ? "ok" : "degraded", "database",
	                          db_up ? "up" : "down", "backend", c->db->ops->name, "alarms_active",
	                          (json_int_t)c->alarms.nactive));
}

static int on_off(const char *s, bool *out)
{
	if (!s)
		return 0;
	if (!strcmp(s, "on") || !strcmp(s, "1"))
		*out = true;
	else if (!strcmp(s, "off") || !strcmp(s, "0"))
		*out = false;
	else
		return -EINVAL;
	return 1;
}

void api__faults(struct collector *c, struct evhttp_request *req)
{
	struct evkeyvalq q;
	bool handler = c->faults.handler, db = c->faults.db_refuse;
	const char *every;

	if (!c->opt.fault_injection) {
		httpd__reply_json(req, 404, json_pack("{s:s}", "error", "not found"));
		return;
	}
	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
		httpd__reply_json(req, 405, json_pack("{s:s}", "error", "POST only"));
		return;
	}
	if (parse_query(req, &q) < 0 || on_off(evhttp_find_header(&q, "handler"), &handler) < 0 ||
	    on_off(evhttp_find_header(&q, "db"), &db) < 0) {
		evhttp_clear_headers(&q);
		bad_param(req, "handler/db");
		return;
	}
	every = evhttp_find_header(&q, "handler_every");
	if (every) {
		char *end = NULL;
		unsigned long n = strtoul(every, &end, 10);
		if (!*every || *end || n > 1000000) {
			evhttp_clear_headers(&q);
			bad_param(req, "handler_every");
			return;
		}
		c->faults.handler_every = (unsigned)n;
		c->faults.pushes_seen = 0;
	}
	evhttp_clear_headers(&q);
	if (handler != c->faults.handler || db != c->faults.db_refuse)
		log_warn(&c->log, "fault injection: handler %s, db %s", handler ? "FAILS" : "ok",
		         db ? "REFUSES WRITES" : "ok");
	c->faults.handler = handler;
	c->faults.db_refuse = db;
	httpd__reply_json(req, 200,
	                  json_pack("{s:b,s:b,s:I}", "handler", handler, "db", db, "handler_every",
	                            (json_int_t)c->faults.handler_every));
}
