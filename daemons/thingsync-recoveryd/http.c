/*
 * thingsync-recoveryd: the HTTP API (contract 4), on daemons/common/httpd.c:
 *   POST /v1/recover  {"from":SEC,"to":SEC}  signed with the site key for
 *                     this controller, always (the collector's pull and
 *                     `thingsctl recover`): 202 {"id","owners"}; 400 naming
 *                     the field; 409 when there is no data store to ask.
 *   GET /v1/status    the outage ledger, the recoveries, the counters (open).
 *   GET /metrics      Prometheus text (open).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>

#include "httpd.h"
#include "recoveryd.h"

static const struct httpd_route routes[] = {
    {"/v1/recover", HTTPD_POST, 1024, false, true},
    {"/v1/status", HTTPD_GET, 0, true, false},
    {"/metrics", HTTPD_GET, 0, true, false},
    {NULL, 0, 0, false, false},
};

/* A time of the body, seconds since the epoch, as microseconds; false when
 * it is missing or not a plausible time. */
static bool body_time(json_t *body, const char *field, int64_t *us)
{
	json_t *v = json_object_get(body, field);
	double t;

	if (!json_is_number(v))
		return false;
	t = json_number_value(v);
	if (!isfinite(t) || t < 0 || t > 1e11)
		return false;
	*us = (int64_t)llround(t * 1e6);
	return true;
}

static void recover(struct recoveryd *rd, struct evhttp_request *req)
{
	const char *why = NULL;
	json_t *body = httpd__body_json(req, &why), *owners;
	struct recovery *rec;
	int64_t from_us, to_us;
	int err;

	if (!json_is_object(body)) {
		httpd__error(req, 400, "bad_request",
		             "the body must be a JSON object {\"from\":SEC,\"to\":SEC}%s%s", why ? ": " : "",
		             why ? why : "");
		json_decref(body);
		return;
	}
	if (!body_time(body, "from", &from_us)) {
		httpd__error(req, 400, "bad_from", "from: want a number, seconds since the epoch");
	} else if (!body_time(body, "to", &to_us)) {
		httpd__error(req, 400, "bad_to", "to: want a number, seconds since the epoch");
	} else if (from_us >= to_us) {
		httpd__error(req, 400, "bad_to", "to: must be after from");
	} else if (!(rec = recoveryd__recover(rd, from_us, to_us, "manual", &err))) {
		if (err == -ENOENT)
			httpd__error(req, 409, "no_data_store", "%s",
			             rd->push
			                 ? "no controller keeps a history of the things the push role uses"
			                 : "the site has no controller with the role push");
		else
			httpd__error(req, 500, "internal", "%s", tsync_strerror(err));
	} else {
		owners = json_array();
		for (size_t i = 0; owners && i < rec->n_owners; i++)
			json_array_append_new(owners, json_string(rec->owners[i].name));
		httpd__reply_json(
		    req, 202,
		    json_pack("{s:s,s:o*,s:s}", "id", rec->id, "owners", owners, "deliver_to", rd->push));
	}
	json_decref(body);
}

static void status(struct recoveryd *rd, struct evhttp_request *req)
{
	json_t *j = json_pack(
	    "{s:s,s:b,s:I,s:s?,s:o*,s:{s:I,s:I,s:I,s:I,s:I}}", "controller", rd->name, "internet_lost",
	    rd->ledger.lost, "recovery_threshold_s", (json_int_t)(rd->threshold_ms / 1000), "push_controller",
	    rd->push, "ledger", ledger__to_json(&rd->ledger), "counters", "connection_status_received",
	    (json_int_t)rd->statuses_received, "requests_sent", (json_int_t)rd->requests_sent,
	    "requests_failed", (json_int_t)rd->requests_failed, "probes_ok", (json_int_t)rd->probes_ok,
	    "probes_failed", (json_int_t)rd->probes_failed);

	httpd__reply_json(req, 200, j);
}

static void metrics(struct recoveryd *rd, struct evhttp_request *req)
{
	struct evbuffer *out = evbuffer_new();
	const struct ledger *l = &rd->ledger;
	uint64_t asked = 0, answered = 0, failed = 0;

	if (!out) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	for (size_t i = 0; i < l->n_recoveries; i++)
		for (size_t k = 0; k < l->recoveries_kept[i].n_owners; k++) {
			enum owner_state s = l->recoveries_kept[i].owners[k].state;
			asked += s == OWNER_ASKED || s == OWNER_PENDING;
			answered += s == OWNER_ANSWERED;
			failed += s == OWNER_FAILED;
		}
	evbuffer_add_printf(out,
	                    "# TYPE thingsync_recoveryd_internet_lost gauge\n"
	                    "thingsync_recoveryd_internet_lost %d\n"
	                    "# TYPE thingsync_recoveryd_lost_since_seconds gauge\n"
	                    "thingsync_recoveryd_lost_since_seconds %.3f\n"
	                    "# TYPE thingsync_recoveryd_outages_total counter\n"
	                    "thingsync_recoveryd_outages_total %" PRIu64 "\n"
	                    "# TYPE thingsync_recoveryd_outages_short_total counter\n"
	                    "thingsync_recoveryd_outages_short_total %" PRIu64 "\n"
	                    "# TYPE thingsync_recoveryd_recoveries_total counter\n"
	                    "thingsync_recoveryd_recoveries_total %" PRIu64 "\n"
	                    "# TYPE thingsync_recoveryd_connection_status_total counter\n"
	                    "thingsync_recoveryd_connection_status_total %" PRIu64 "\n"
	                    "# TYPE thingsync_recoveryd_requests_total counter\n"
	                    "thingsync_recoveryd_requests_total{result=\"sent\"} %" PRIu64 "\n"
	                    "thingsync_recoveryd_requests_total{result=\"failed\"} %" PRIu64 "\n"
	                    "# TYPE thingsync_recoveryd_data_stores gauge\n"
	                    "thingsync_recoveryd_data_stores{state=\"asked\"} %" PRIu64 "\n"
	                    "thingsync_recoveryd_data_stores{state=\"answered\"} %" PRIu64 "\n"
	                    "thingsync_recoveryd_data_stores{state=\"failed\"} %" PRIu64 "\n",
	                    l->lost ? 1 : 0, l->lost ? (double)l->lost_us / 1e6 : 0.0, l->outages,
	                    l->outages_short, l->recoveries, rd->statuses_received, rd->requests_sent,
	                    rd->requests_failed, asked, answered, failed);
	httpd__metrics(rd->http, "thingsync_recoveryd_", out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static void handler(void *arg, struct evhttp_request *req, const char *path)
{
	struct recoveryd *rd = arg;

	if (!strcmp(path, "/v1/recover"))
		recover(rd, req);
	else if (!strcmp(path, "/v1/status"))
		status(rd, req);
	else
		metrics(rd, req);
}

static void httpd_log(void *ud, tsync_log_level level, const char *line)
{
	struct recoveryd *rd = ud;

	log__printf(&rd->log, level, "%s", line);
}

int http__start(struct recoveryd *rd)
{
	struct httpd_config cfg;
	char host[256];
	uint16_t port;
	int r;

	r = daemonopt__http_addr(&rd->opt.common, rd->site, rd->name, true, &rd->log, host, sizeof(host),
	                         &port);
	if (r < 0)
		return r;
	if (r == 0) {
		log_warn(&rd->log, "no tcp_port for %s in site.conf and no --http: no HTTP API", rd->name);
		return 0;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = rd->base;
	cfg.host = host;
	cfg.port = port;
	cfg.routes = routes;
	cfg.handler = handler;
	cfg.arg = rd;
	cfg.site = rd->site;
	cfg.name = rd->name;
	cfg.require_signature = !httpd__is_loopback(host);
	cfg.max_connections = 16;
	cfg.log = httpd_log;
	cfg.log_ud = rd;
	r = httpd__new(&cfg, &rd->http);
	if (r < 0) {
		log_error(&rd->log, "cannot listen on %s:%u: %s", host, port, tsync_strerror(r));
		return r;
	}
	log_info(&rd->log, "HTTP API on http://%s:%u/v1/status", host, httpd__port(rd->http));
	return 0;
}
