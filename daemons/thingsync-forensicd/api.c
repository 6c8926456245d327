/*
 * thingsync-forensicd: the HTTP API (daemons/common/httpd.c), read-only:
 *
 *   GET /v1/days                     the days kept, per owner: things, the
 *                                    ones not kept by it, the push state
 *   GET /v1/days/DATE                every cumul of the day, per owner and thing
 *   GET /v1/things/THING?from=&to=   one thing's cumul per day (dates,
 *                                    inclusive; default: every day kept)
 *   GET /v1/report?day=DATE          the report (JSON and text), default the last day
 *   GET /v1/status                   the collection, the day's end, push, report_command
 *   GET /metrics                     Prometheus text
 *
 * Nothing here changes state, so every route is open (no signature), as
 * thingsd's and pushd's read-only endpoints are; the server's limits hold.
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

#include "forensicd.h"
#include "httpd.h"
#include "node/node.h"

static const struct httpd_route routes[] = {
    {"/v1/days", HTTPD_GET, 0, true, false},
    {"/v1/days/*", HTTPD_GET, 0, true, false},
    {"/v1/things/*", HTTPD_GET, 0, true, false},
    {"/v1/report", HTTPD_GET, 0, true, false},
    {"/v1/status", HTTPD_GET, 0, true, false},
    {"/metrics", HTTPD_GET, 0, true, false},
    {NULL, 0, 0, false, false},
};

/* A query parameter, or NULL. `q` must be cleared by the caller. */
static const char *query(struct evhttp_request *req, struct evkeyvalq *q, const char *key)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);

	if (!TAILQ_FIRST(q) && uri && evhttp_uri_get_query(uri))
		evhttp_parse_query_str(evhttp_uri_get_query(uri), q);
	return evhttp_find_header(q, key);
}

/* --- /v1/days ------------------------------------------------------------------------ */

/* "m/DAY/OWNER" -> meta, grouped by day. */
static void days_cb(void *ud, const char *key, const char *value)
{
	json_t *days = ud, *m = json_loads(value, 0, NULL), *last;
	char day[DATE_LEN + 1];

	if (strlen(key) < 2 + DATE_LEN + 2 || !json_is_object(m)) {
		json_decref(m);
		return;
	}
	memcpy(day, key + 2, DATE_LEN);
	day[DATE_LEN] = '\0';
	last = json_array_get(days, json_array_size(days) - 1);
	if (!last || strcmp(json_string_value(json_object_get(last, "day")), day)) {
		last = json_pack("{sss{}}", "day", day, "owners");
		json_array_append_new(days, last);
	}
	json_object_set_new(json_object_get(last, "owners"), key + 2 + DATE_LEN + 1, m);
}

static void get_days(struct forensicd *fd, struct evhttp_request *req)
{
	json_t *days = json_array();
	int r = days ? forensicd__scan(fd, "m/", "m0", days_cb, days) : -ENOMEM;

	if (r < 0) {
		json_decref(days);
		httpd__error(req, 500, "store", "%s", tsync_strerror(r));
		return;
	}
	httpd__reply_json(req, 200, json_pack("{so}", "days", days));
}

/* "c/DAY/OWNER/THING" -> cumul: {"OWNER": {"THING": cumul}} */
static void day_cb(void *ud, const char *key, const char *value)
{
	json_t *owners = ud, *cum = json_loads(value, 0, NULL), *o;
	const char *owner = key + 2 + DATE_LEN + 1, *slash = strchr(owner, '/');
	char name[256];

	if (!slash || (size_t)(slash - owner) >= sizeof(name) || !cum) {
		json_decref(cum);
		return;
	}
	memcpy(name, owner, (size_t)(slash - owner));
	name[slash - owner] = '\0';
	o = json_object_get(owners, name);
	if (!o) {
		o = json_object();
		json_object_set_new(owners, name, o);
	}
	json_object_set_new(o, slash + 1, cum);
}

static void get_day(struct forensicd *fd, struct evhttp_request *req, const char *day)
{
	char from[32], to[32];
	json_t *owners;
	int r;

	if (!forensicd__valid_date(day)) {
		httpd__error(req, 400, "bad_date", "want a date YYYY-MM-DD");
		return;
	}
	owners = json_object();
	snprintf(from, sizeof(from), "c/%s/", day);
	snprintf(to, sizeof(to), "c/%s0", day);
	r = owners ? forensicd__scan(fd, from, to, day_cb, owners) : -ENOMEM;
	if (r < 0) {
		json_decref(owners);
		httpd__error(req, 500, "store", "%s", tsync_strerror(r));
		return;
	}
	if (!json_object_size(owners)) {
		json_decref(owners);
		httpd__error(req, 404, "no_such_day", "nothing kept of %s", day);
		return;
	}
	httpd__reply_json(req, 200, json_pack("{ssso}", "day", day, "owners", owners));
}

/* --- /v1/things/THING ------------------------------------------------------------------ */

struct thing_scan {
	const char *thing, *owner;
	json_t *days;
};

static void thing_cb(void *ud, const char *key, const char *value)
{
	struct thing_scan *t = ud;
	char day[DATE_LEN + 1], want[512];

	memcpy(day, key + 2, DATE_LEN);
	day[DATE_LEN] = '\0';
	snprintf(want, sizeof(want), "c/%s/%s/%s", day, t->owner, t->thing);
	if (!strcmp(key, want)) {
		json_t *cum = json_loads(value, 0, NULL);
		if (cum)
			json_object_set_new(t->days, day, cum);
	}
}

static void get_thing(struct forensicd *fd, struct evhttp_request *req, const char *thing)
{
	struct evkeyvalq q;
	const char *from, *to;
	char kfrom[32], kto[32], after[DATE_LEN + 1];
	struct thing_scan t;
	tsync_thing_info ti;
	int ix = tsync_site_thing_find(fd->site, thing), r;

	if (ix < 0 || tsync_site_thing(fd->site, (size_t)ix, &ti) < 0) {
		httpd__error(req, 404, "err_ip_in_io", "%s is not a thing of this site", thing);
		return;
	}
	TAILQ_INIT(&q);
	from = query(req, &q, "from");
	to = query(req, &q, "to");
	if ((from && !forensicd__valid_date(from)) || (to && !forensicd__valid_date(to))) {
		evhttp_clear_headers(&q);
		httpd__error(req, 400, "bad_date", "from and to are dates YYYY-MM-DD");
		return;
	}
	snprintf(kfrom, sizeof(kfrom), "c/%s", from ? from : "");
	if (to) {
		forensicd__date_add(to, 1, after);
		snprintf(kto, sizeof(kto), "c/%s", after);
	} else {
		snprintf(kto, sizeof(kto), "c0");
	}
	t.thing = ti.name;
	t.owner = ti.owner;
	t.days = json_object();
	r = t.days ? forensicd__scan(fd, kfrom, kto, thing_cb, &t) : -ENOMEM;
	evhttp_clear_headers(&q);
	if (r < 0) {
		json_decref(t.days);
		httpd__error(req, 500, "store", "%s", tsync_strerror(r));
		return;
	}
	httpd__reply_json(req, 200,
	                  json_pack("{sssssssO}", "thing", ti.name, "owner", ti.owner, "type",
	                            tsync_type_name(ti.type), "days", t.days));
	json_decref(t.days);
}

/* --- /v1/report, /v1/status, /metrics ------------------------------------------------------------ */

static void get_report(struct forensicd *fd, struct evhttp_request *req)
{
	struct evkeyvalq q;
	const char *day;
	char d[DATE_LEN + 1], *text = NULL;
	json_t *rep = NULL;
	int r;

	TAILQ_INIT(&q);
	day = query(req, &q, "day");
	if (day && !forensicd__valid_date(day)) {
		evhttp_clear_headers(&q);
		httpd__error(req, 400, "bad_date", "want day=YYYY-MM-DD");
		return;
	}
	if (day)
		snprintf(d, sizeof(d), "%s", day);
	evhttp_clear_headers(&q);
	if (!day && report__last_day(fd, d) < 0) {
		httpd__error(req, 404, "no_such_day", "nothing collected yet");
		return;
	}
	r = report__build(fd, d, &rep, &text);
	if (r == -ENOENT) {
		httpd__error(req, 404, "no_such_day", "nothing kept of %s", d);
		return;
	}
	if (r < 0) {
		httpd__error(req, 500, "store", "%s", tsync_strerror(r));
		return;
	}
	httpd__reply_json(req, 200, json_pack("{soss}", "report", rep, "text", text));
	free(text);
}

static json_t *owners_json(struct forensicd *fd)
{
	json_t *a = json_array();
	size_t np = tsync_node_peer_count(fd->node);

	for (size_t i = 0; a && i < fd->n_owners; i++) {
		const struct owner *o = &fd->owners[i];
		bool up = false;
		for (size_t k = 0; k < np; k++) {
			tsync_peer_stats ps;
			if (tsync_node_peer_stats(fd->node, k, &ps) == 0 && !strcmp(ps.name, o->name))
				up = ps.up;
		}
		json_array_append_new(
		    a, json_pack("{sssssbss?sbsIsIsIsI}", "name", o->name, "next", o->next, "up", up,
		                 "collecting", o->busy ? o->day : NULL, "reset_pending", o->reset_busy,
		                 "things", (json_int_t)o->n_things, "days_collected",
		                 (json_int_t)o->days_collected, "resets_sent", (json_int_t)o->resets_sent,
		                 "resets_closed", (json_int_t)o->resets_closed));
	}
	return a;
}

static void get_status(struct forensicd *fd, struct evhttp_request *req)
{
	char today[DATE_LEN + 1];
	const struct report_run *rr = &fd->report;
	json_t *cmd = NULL, *st;
	uint64_t bytes = 0, commits = 0;

	forensicd__today(fd, today);
	node__store_written(fd->node, &bytes, &commits);
	if (fd->isite->report_command)
		cmd = json_pack("{sssIsIss?ss?sIsb}", "program", fd->isite->report_command[0], "runs",
		                (json_int_t)rr->runs, "failures", (json_int_t)rr->failures, "last_day",
		                rr->last_day[0] ? rr->last_day : NULL, "last_error",
		                rr->last_error[0] ? rr->last_error : NULL, "last_at_ms",
		                (json_int_t)rr->last_at_ms, "running", rr->running);
	st = json_pack("{sssssoss?sosIsIs{ss?sIsIsIsIsIsI}sIso?}", "controller", fd->name, "today", today,
	               "timezone", fd->isite->timezone ? json_string(fd->isite->timezone) : json_null(),
	               "reset_day", fd->reset_day[0] ? fd->reset_day : NULL, "owners", owners_json(fd),
	               "forensic_days", (json_int_t)fd->isite->forensic_days, "records",
	               (json_int_t)forensicd__count(fd, NULL, NULL), "push", "to", fd->push_to, "days_sent",
	               (json_int_t)fd->pushes_sent, "chunks_sent", (json_int_t)fd->push_chunks,
	               "chunks_acked", (json_int_t)fd->pushes_acked, "failed", (json_int_t)fd->push_failed,
	               "resent", (json_int_t)fd->push_resent, "resumed", (json_int_t)fd->push_resumed,
	               "things_not_kept",
	               (json_int_t)fd->missing_things, "report_command", cmd);
	/* What the history and the requests have cost the SD card since the start. */
	json_object_set_new(st, "store",
	                    json_pack("{sIsI}", "commits", (json_int_t)commits, "bytes", (json_int_t)bytes));
	httpd__reply_json(req, 200, st);
}

static void get_metrics(struct forensicd *fd, struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();
	uint64_t days = 0, resets = 0, closed = 0;

	if (!out) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	for (size_t i = 0; i < fd->n_owners; i++) {
		days += fd->owners[i].days_collected;
		resets += fd->owners[i].resets_sent;
		closed += fd->owners[i].resets_closed;
	}
	evbuffer_add_printf(out,
	                    "# TYPE thingsync_forensicd_days_collected_total counter\n"
	                    "thingsync_forensicd_days_collected_total %" PRIu64 "\n"
	                    "# TYPE thingsync_forensicd_resets_sent_total counter\n"
	                    "thingsync_forensicd_resets_sent_total %" PRIu64 "\n"
	                    "# TYPE thingsync_forensicd_resets_closed_total counter\n"
	                    "thingsync_forensicd_resets_closed_total %" PRIu64 "\n"
	                    "# TYPE thingsync_forensicd_things_not_kept_total counter\n"
	                    "thingsync_forensicd_things_not_kept_total %" PRIu64 "\n"
	                    "# TYPE thingsync_forensicd_push_chunks_total counter\n"
	                    "thingsync_forensicd_push_chunks_total{result=\"sent\"} %" PRIu64 "\n"
	                    "thingsync_forensicd_push_chunks_total{result=\"acked\"} %" PRIu64 "\n"
	                    "thingsync_forensicd_push_chunks_total{result=\"failed\"} %" PRIu64 "\n"
	                    "thingsync_forensicd_push_chunks_total{result=\"resent\"} %" PRIu64 "\n"
	                    "thingsync_forensicd_push_chunks_total{result=\"resumed\"} %" PRIu64 "\n"
	                    "# TYPE thingsync_forensicd_records gauge\n"
	                    "thingsync_forensicd_records %zu\n"
	                    "# TYPE thingsync_forensicd_report_command_total counter\n"
	                    "thingsync_forensicd_report_command_total{result=\"run\"} %" PRIu64 "\n"
	                    "thingsync_forensicd_report_command_total{result=\"failed\"} %" PRIu64 "\n",
	                    days, resets, closed, fd->missing_things, fd->push_chunks, fd->pushes_acked,
	                    fd->push_failed, fd->push_resent, fd->push_resumed, forensicd__count(fd, NULL, NULL),
	                    fd->report.runs, fd->report.failures);
	httpd__metrics(fd->http, "thingsync_forensicd_", out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void handler(void *arg, struct evhttp_request *req, const char *path)
{
	struct forensicd *fd = arg;

	if (!strcmp(path, "/v1/days"))
		get_days(fd, req);
	else if (!strncmp(path, "/v1/days/", 9))
		get_day(fd, req, path + 9);
	else if (!strncmp(path, "/v1/things/", 11))
		get_thing(fd, req, path + 11);
	else if (!strcmp(path, "/v1/report"))
		get_report(fd, req);
	else if (!strcmp(path, "/v1/status"))
		get_status(fd, req);
	else if (!strcmp(path, "/metrics"))
		get_metrics(fd, req);
	else
		httpd__error(req, 404, "not_found", "no such path");
}

static void httpd_log(void *ud, tsync_log_level level, const char *line)
{
	struct forensicd *fd = ud;

	log__printf(&fd->log, level, "%s", line);
}

int api__start(struct forensicd *fd)
{
	struct httpd_config cfg;
	char host[256];
	uint16_t port;
	int r;

	/* Unlike recoveryd's and pushd's, this API has always listened on the
	 * controller's host whatever --bind says (the mesh's UDP address). */
	r = daemonopt__http_addr(&fd->opt.common, fd->site, fd->name, false, &fd->log, host, sizeof(host),
	                         &port);
	if (r <= 0)
		return r;
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = fd->base;
	cfg.host = host;
	cfg.port = port;
	cfg.routes = routes;
	cfg.handler = handler;
	cfg.arg = fd;
	cfg.site = fd->site;
	cfg.name = fd->name;
	cfg.max_connections = 16;
	cfg.log = httpd_log;
	cfg.log_ud = fd;
	r = httpd__new(&cfg, &fd->http);
	if (r < 0) {
		log_error(&fd->log, "cannot listen on %s:%u: %s", host, port, tsync_strerror(r));
		return r;
	}
	log_info(&fd->log, "API on http://%s:%u/v1/status", host, httpd__port(fd->http));
	return 0;
}
