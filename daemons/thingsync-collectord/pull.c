/*
 * thingsync-collectord: pull. When the collector knows of a hole in what it
 * holds, it asks the site's recovery controller (role `recovery`, its
 * tcp_port) to recover that window from the owners' histories: POST
 * /v1/recover {"from":SEC,"to":SEC} on thingsync-recoveryd, signed with the
 * site key for that controller (contract 4). The changes then come back the
 * usual way (owners -> pushd -> here), marked recovery, and are stored once
 * (by their identity): a pull too wide costs traffic, never a duplicate.
 *
 * Holes come from:
 *  - the operator: POST /v1/pull {"from":SEC,"to":SEC} (signed, like every
 *    route that changes something), e.g. after the database was restored
 *    from an older backup;
 *  - a gap in a source's stream (sequences missing between two stored
 *    ones: rows lost with a restored database, say), found every
 *    --pull-scan seconds; the window runs from the measured time of the
 *    sequence before the gap to that of the one after it, a second wider on
 *    each side. Each gap is pulled once (its reason is unique).
 * Pulls are rows of the table pulls, so a restart goes on with the pending
 * ones. One is in flight at a time; a failure (no answer, 5xx, 401, ...) is
 * retried with capped exponential backoff until recoveryd answers 202; a
 * 400 (recoveryd refuses the window) fails the pull for good. Both raise
 * pull_failed (after PULL_ALARM_AFTER failures in a row, or at once for
 * 400); a 202 clears it. GET /v1/pulls lists them.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/http.h>

#include "collector.h"
#include "curlev.h"

#define PULL_ALARM_AFTER 5
#define PULL_TIMEOUT_MS  10000
#define PULL_LIST_MAX    100

struct pull_pick {
	bool found;
	int64_t id, from_s, to_s, attempts;
};

/* The oldest pending pull (rows come newest first). */
static void pick_cb(void *ud, const struct db_pull *p)
{
	struct pull_pick *x = ud;

	x->found = true;
	x->id = p->id;
	x->from_s = p->from_s;
	x->to_s = p->to_s;
	x->attempts = p->attempts;
}

static void pump(struct collector *c);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

static void set_state(struct collector *c, const char *state, const char *recovery_id, const char *error)
{
	struct db_pull p = {.id = c->pull.id,
	                    .state = state,
	                    .attempts = c->pull.attempts,
	                    .updated_us = (int64_t)util__realtime_us(),
	                    .recovery_id = recovery_id,
	                    .error = error};

	if (db__pull_update(c->db, &p) < 0)
		log_warn(&c->log,
		         "pull %" PRId64 ": cannot record its state %s (the database is down): tried again",
		         c->pull.id, state);
}

static void schedule(struct collector *c, uint32_t ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

	evtimer_add(c->pull.retry_ev, &tv);
}

static void done_cb(void *ud, int status, const char *error, const char *body, size_t len)
{
	struct collector *c = ud;
	json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
	const char *id = json_string_value(json_object_get(j, "id"));
	const char *err = json_string_value(json_object_get(j, "error"));
	char why[256];
	uint64_t d;

	c->pull.in_flight = false;
	if (!error && status == 202) {
		log_info(&c->log, "pull %" PRId64 " [%" PRId64 ", %" PRId64 "] accepted by %s as %s",
		         c->pull.id, c->pull.from_s, c->pull.to_s, c->pull.controller, id ? id : "?");
		set_state(c, "accepted", id ? id : "", "");
		c->pull.failures = 0;
		c->pulls_accepted++;
		alarms__clear(&c->alarms, ALARM_PULL_FAILED, "", "recoveryd accepted a pull");
		json_decref(j);
		pump(c);
		return;
	}
	if (error)
		snprintf(why, sizeof(why), "%s", error);
	else
		snprintf(why, sizeof(why), "HTTP %d: %.200s", status, err ? err : body ? body : "");
	json_decref(j);
	c->pull.attempts++;
	if (!error && status == 400) {
		/* recoveryd refuses the window: asking again changes nothing. */
		set_state(c, "failed", "", why);
		c->pulls_failed++;
		alarms__raise(&c->alarms, ALARM_PULL_FAILED, "",
		              "pull [%" PRId64 ", %" PRId64 "] refused by %s: %s", c->pull.from_s,
		              c->pull.to_s, c->pull.controller, why);
		pump(c);
		return;
	}
	set_state(c, "pending", "", why);
	c->pull.failures++;
	if (c->pull.failures == PULL_ALARM_AFTER)
		alarms__raise(&c->alarms, ALARM_PULL_FAILED, "",
		              "pull [%" PRId64 ", %" PRId64
		              "]: %s did not take it %u times (last: %s); retrying",
		              c->pull.from_s, c->pull.to_s, c->pull.controller, c->pull.failures, why);
	/* Capped exponential backoff with jitter, as pushd's sender. */
	d = backoff__next_ms(&c->pull.prng, c->opt.pull_retry_min_ms, c->opt.pull_retry_max_ms, c->pull.failures);
	if (c->pull.failures == 1 || c->pull.failures % 10 == 0)
		log_warn(&c->log, "pull %" PRId64 " failed (%u in a row): %s; retry in %" PRIu64 " ms",
		         c->pull.id, c->pull.failures, why, d);
	schedule(c, (uint32_t)d);
}

/* Sends the oldest pending pull, when none is in flight or waiting for its retry. */
static void pump(struct collector *c)
{
	struct pull_pick x = {0};
	struct httpd_sig_headers sig;
	const char *headers[8];
	char body[96];
	int r;

	if (!c->pull.url || c->pull.in_flight || evtimer_pending(c->pull.retry_ev, NULL))
		return;
	if (db__pulls(c->db, true, PULL_LIST_MAX, pick_cb, &x) < 0 || !x.found)
		return;
	snprintf(body, sizeof(body), "{\"from\":%" PRId64 ",\"to\":%" PRId64 "}", x.from_s, x.to_s);
	r = httpd__sign(c->site, c->pull.controller, "POST", "/v1/recover", body, strlen(body), &sig);
	headers[0] = "Content-Type: application/json";
	headers[1] = sig.to;
	headers[2] = sig.time;
	headers[3] = sig.nonce;
	headers[4] = sig.body;
	headers[5] = sig.sig;
	headers[6] = NULL;
	if (r == 0)
		r = curlev__post(c->pull.http, c->pull.url, headers, body, strlen(body), PULL_TIMEOUT_MS,
		                 NULL, done_cb, c);
	if (r < 0) {
		log_error(&c->log, "pull %" PRId64 ": cannot send: %s", x.id, tsync_strerror(r));
		schedule(c, c->opt.pull_retry_max_ms);
		return;
	}
	c->pull.in_flight = true;
	c->pull.id = x.id;
	c->pull.from_s = x.from_s;
	c->pull.to_s = x.to_s;
	c->pull.attempts = x.attempts;
}

/* Records a pull; 1 new, 0 known (its reason), or an error. */
static int add(struct collector *c, int64_t from_s, int64_t to_s, const char *reason, int64_t *id)
{
	int64_t now = (int64_t)util__realtime_us();
	struct db_pull p = {.id = now > c->pull.last_id ? now : c->pull.last_id + 1,
	                    .from_s = from_s,
	                    .to_s = to_s,
	                    .reason = reason,
	                    .state = "pending",
	                    .requested_us = now,
	                    .updated_us = now,
	                    .recovery_id = "",
	                    .error = ""};
	int r = db__pull_add(c->db, &p);

	if (r == 1) {
		c->pull.last_id = p.id;
		log_warn(&c->log, "pull %" PRId64 " of [%" PRId64 ", %" PRId64 "]: %s", p.id, from_s, to_s,
		         reason);
		if (id)
			*id = p.id;
		pump(c);
	}
	return r;
}

/* A gap [a, b] of a source's stream between two stored sequences: pulled once. */
static void scan(struct collector *c)
{
	json_t *arr = NULL, *s, *g;
	size_t i, k;

	if (c->db->ops->sources(c->db, COLLECTOR_MAX_GAPS, &arr) < 0)
		return;
	json_array_foreach(arr, i, s)
	{
		const char *src = json_string_value(json_object_get(s, "source"));
		const char *stream = json_string_value(json_object_get(s, "stream"));

		json_array_foreach(json_object_get(s, "gaps"), k, g)
		{
			int64_t a = json_integer_value(json_array_get(g, 0)),
			        b = json_integer_value(json_array_get(g, 1));
			int64_t before = 0, after = 0;
			char reason[200];

			/* Before the first sequence stored there is no time to start from. */
			if (a <= 1 || db__hole_times(c->db, src, stream, a, b, &before, &after) < 0 ||
			    !before || !after)
				continue;
			snprintf(reason, sizeof(reason), "gap %s %s %" PRId64 "-%" PRId64, src, stream, a, b);
			add(c, before / 1000000 - 1, after / 1000000 + 2, reason, NULL);
		}
	}
	json_decref(arr);
}

void pull__tick(struct collector *c)
{
	int64_t now = (int64_t)util__realtime_us();

	if (!c->pull.url || !c->db->ops->up(c->db))
		return;
	if (c->opt.pull_scan_s && now - c->pull.last_scan_us >= (int64_t)c->opt.pull_scan_s * 1000000) {
		c->pull.last_scan_us = now;
		scan(c);
	}
	pump(c);
}

static bool body_sec(json_t *body, const char *field, int64_t *out)
{
	json_t *v = json_object_get(body, field);
	double t = json_number_value(v);

	if (!json_is_number(v) || !isfinite(t) || t < 946684800.0 || t > 1e11)
		return false;
	*out = (int64_t)t;
	return true;
}

void pull__post(struct collector *c, struct evhttp_request *req)
{
	const char *why = NULL;
	json_t *body = httpd__body_json(req, &why);
	int64_t from_s, to_s, id = 0;
	char reason[96];
	int r;

	if (!c->pull.url) {
		httpd__reply_json(
		    req, 409,
		    json_pack("{s:s,s:s}", "field", "site", "error",
		              "no controller with the role recovery and a tcp_port in site.conf"));
	} else if (!json_is_object(body)) {
		httpd__reply_json(
		    req, 400,
		    json_pack("{s:s,s:s}", "field", "body", "error",
		              why ? why : "a JSON object {\"from\":SEC,\"to\":SEC} is expected"));
	} else if (!body_sec(body, "from", &from_s)) {
		httpd__reply_json(req, 400,
		                  json_pack("{s:s,s:s}", "field", "from", "error",
		                            "missing or not a time (seconds since the epoch, after 2000)"));
	} else if (!body_sec(body, "to", &to_s) || to_s <= from_s) {
		httpd__reply_json(
		    req, 400,
		    json_pack("{s:s,s:s}", "field", "to", "error", "missing, not a time, or not after from"));
	} else {
		snprintf(reason, sizeof(reason), "operator %" PRId64, (int64_t)util__realtime_us());
		r = add(c, from_s, to_s, reason, &id);
		if (r < 0)
			httpd__reply_json(req, 503, json_pack("{s:s}", "error", "database unavailable"));
		else
			httpd__reply_json(req, 202,
			                  json_pack("{s:I,s:I,s:I,s:s,s:s}", "id", (json_int_t)id, "from",
			                            (json_int_t)from_s, "to", (json_int_t)to_s, "state",
			                            "pending", "recovery", c->pull.controller));
	}
	json_decref(body);
}

static void list_cb(void *ud, const struct db_pull *p)
{
	json_array_append_new(ud, json_pack("{s:I,s:I,s:I,s:s,s:s,s:I,s:I,s:I,s:s,s:s}", "id",
	                                    (json_int_t)p->id, "from", (json_int_t)p->from_s, "to",
	                                    (json_int_t)p->to_s, "reason", p->reason, "state", p->state,
	                                    "attempts", (json_int_t)p->attempts, "requested",
	                                    (json_int_t)p->requested_us, "updated", (json_int_t)p->updated_us,
	                                    "recovery_id", p->recovery_id, "error", p->error));
}

void pull__list(struct collector *c, struct evhttp_request *req)
{
	json_t *arr = json_array();
	int r = arr ? db__pulls(c->db, false, PULL_LIST_MAX, list_cb, arr) : -ENOMEM;

	if (r < 0) {
		json_decref(arr);
		httpd__reply_json(req, r == DB_EDOWN ? 503 : 500,
		                  json_pack("{s:s}", "error", "query failed"));
		return;
	}
	httpd__reply_json(req, 200,
	                  json_pack("{s:s?,s:b,s:I,s:I,s:o}", "recovery", c->pull.controller, "in_flight",
	                            c->pull.in_flight, "accepted", (json_int_t)c->pulls_accepted, "failed",
	                            (json_int_t)c->pulls_failed, "pulls", arr));
}

int pull__init(struct collector *c)
{
	size_t n = tsync_site_controller_count(c->site);

	for (size_t i = 0; i < n && !c->pull.url; i++) {
		tsync_controller_info ci;
		if (tsync_site_controller(c->site, i, &ci) < 0 || !ci.tcp_port)
			continue;
		for (size_t k = 0; k < ci.n_roles && !c->pull.url; k++) {
			if (strcmp(ci.roles[k], "recovery") != 0)
				continue;
			c->pull.controller = ci.name;
			if (asprintf(&c->pull.url, "http://%s:%u/v1/recover", ci.host, ci.tcp_port) < 0) {
				c->pull.url = NULL;
				return -ENOMEM;
			}
		}
	}
	if (!c->pull.url) {
		log_info(&c->log, "no controller with the role recovery and a tcp_port: no pulls");
		return 0;
	}
	prng__seed(&c->pull.prng, util__realtime_us());
	c->pull.retry_ev = evtimer_new(c->base, retry_cb, c);
	if (!c->pull.retry_ev || curlev__new(c->base, &c->pull.http) < 0)
		return -ENOMEM;
	log_info(&c->log, "pulls go to %s (%s)%s", c->pull.controller, c->pull.url,
	         c->opt.pull_scan_s ? "" : "; gaps are not looked for (--pull-scan 0)");
	return 0;
}

void pull__free(struct collector *c)
{
	if (c->pull.retry_ev)
		event_free(c->pull.retry_ev);
	curlev__free(c->pull.http);
	free(c->pull.url);
}
