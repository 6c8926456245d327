/*
 * thingsd's HTTP API (libevent's evhttp), on the controller's tcp_port.
 *
 *   GET  /status               the daemon, its node, its counters
 *   GET  /things               every thing this controller owns or uses
 *   GET  /things/NAME          one thing
 *   POST /things/NAME          {"value": V}: a set (to_be); answers as_is
 *   POST /things/NAME/pulse    {"value": V, "ms": N}, both optional
 *   POST /things/NAME/ask      asks the owner again
 *   POST /cmd                  {"to": C, "type": "cmd", "role": R, "cmd": X, "kwargs": {...}}
 *   GET  /peers                counters per peer controller
 *   GET  /metrics              Prometheus text format
 *   GET  /events               server-sent events: changed, pulse, peer_up, ...
 *   GET  /clim                 the climate settings document
 *   GET  /history              ?thing=&from=&to= (µs since the epoch): owned changes kept
 *   POST /reload               re-reads site.conf
 *   POST /deploy               a new site.conf, authenticated with the site key
 *
 * It listens on loopback unless told otherwise (--http-bind). The rules every
 * request meets before it gets here (cross-site, signatures off loopback,
 * body caps, connection cap, deadlines) are the shared server's: httpd.h.
 *
 * A request that waits (a set on a copy, a pulse, a command to a peer) is
 * held until its answer or its deadline (?wait_ms=, default 5000). Whatever
 * happens first, the request is answered exactly once: the client closing
 * the connection, the node being rebuilt by a reload, or the daemon
 * stopping each answer or release it.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>

#include "driver.h"
#include "httpd.h"
#include "thingsd.h"

#define MAX_BODY_SMALL      (64 * 1024)
#define MAX_BODY_DEPLOY     (1024 * 1024)
#define MAX_WATCHERS        32
#define MAX_HELD            256
#define WATCHER_MAX_BACKLOG (1024 * 1024)
#define DEFAULT_WAIT_MS     5000
#define MAX_WAIT_MS         120000
#define HEARTBEAT_S         15
#define CHECK_US            10000

enum op_kind {
	OP_SET,  /* a set on a copy: waits until the owner answered */
	OP_ASK,  /* an ask: waits until the owner answered */
	OP_DONE, /* a pulse or command: waits for its completion callback */
};

struct op {
	struct http *h;
	struct op *next;
	struct evhttp_request *req; /* NULL once answered or gone */
	enum op_kind kind;
	struct event *timer;
	uint64_t start_us, deadline_us;
	char *thing;
	tsync_value want;
	char *want_str;
	uint64_t ver0;
	bool done_pending; /* the library still holds this op */
	const char *what;
};

struct watcher {
	struct http *h;
	struct watcher *next;
	struct evhttp_request *req;
	char *filter; /* ",a,b," or NULL for all */
};

struct http {
	struct thingsd *td;
	struct httpd *srv;
	struct event *heartbeat;
	struct watcher *watchers;
	size_t n_watchers;
	struct op *ops;
	size_t n_ops;
};

/* --- answering ---------------------------------------------------------------------- */

/* The HTTP status and seed name of a library error. */
static int status_of(int r, const char **name)
{
	switch (r) {
	case TSYNC_EUNKNOWN_THING:
		*name = "err_ip_in_io";
		return 404;
	case TSYNC_ENOT_USED:
		*name = "err_ip_in_ths_i_use";
		return 404;
	case TSYNC_EUNKNOWN_CTRL:
		*name = "unknown_controller";
		return 404;
	case TSYNC_EVALUE:
		*name = "err_ip_in_val";
		return 422;
	case TSYNC_EREFUSED:
	case TSYNC_ENO_PULSE:
		*name = "err_ip_in_refused";
		return 403;
	case TSYNC_ECMD:
		*name = "err_ip_in_cmd";
		return 403;
	case TSYNC_ECMD_ARGS:
		*name = "err_cmd_args";
		return 422;
	case TSYNC_EWRITE:
		/* Taken, but the output or handler failed: the act may not have
		 * happened, and the client must not read it as done. */
		*name = "err_write_crash";
		return 502;
	case TSYNC_EPEER_RESTARTED:
		*name = "peer_restarted";
		return 503;
	case TSYNC_ECANCELED:
		*name = "canceled";
		return 503;
	case -ENOBUFS:
		*name = "busy";
		return 503;
	default:
		*name = "failed";
		return 500;
	}
}

static void send_lib_error(struct evhttp_request *req, int r, const char *what)
{
	const char *name;
	int code = status_of(r, &name);

	httpd__error(req, code, name, "%s: %s", what, tsync_strerror(r));
}

/* --- held requests --------------------------------------------------------------------- */

static void op_closed(void *arg);

static void op_release_req(struct op *op)
{
	if (op->req && op->h)
		httpd__on_close(op->h->srv, op->req, NULL, NULL);
}

static void op_reply(struct op *op, int code, json_t *body)
{
	struct evhttp_request *req = op->req;

	if (!req) {
		json_decref(body);
		return;
	}
	op_release_req(op);
	op->req = NULL;
	httpd__reply_json(req, code, body);
}

static void op_free(struct op *op)
{
	struct http *h = op->h;
	struct op **pp;

	/* h is NULL for an op the library still held when the API stopped. */
	for (pp = h ? &h->ops : NULL; pp && *pp && *pp != op; pp = &(*pp)->next)
		;
	if (pp && *pp) {
		*pp = op->next;
		h->n_ops--;
	}
	if (op->req) {
		op_release_req(op);
		httpd__error(op->req, 503, "gone", "the request was dropped");
	}
	if (op->timer)
		event_free(op->timer);
	free(op->thing);
	free(op->want_str);
	free(op);
}

/* The client went away: the request is released (a request libevent
 * detached from its connection is ours to free). */
static void op_closed(void *arg)
{
	struct op *op = arg;
	struct evhttp_request *req = op->req;

	op->req = NULL;
	if (req && !evhttp_request_get_connection(req))
		evhttp_request_free(req);
	if (!op->done_pending)
		op_free(op);
}

static struct op *op_new(struct http *h, struct evhttp_request *req, enum op_kind kind, uint32_t wait_ms,
                         event_callback_fn cb)
{
	struct op *op;

	if (h->n_ops >= MAX_HELD) {
		httpd__error(req, 503, "busy", "too many requests waiting (%d)", MAX_HELD);
		return NULL;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		httpd__error(req, 500, "failed", "out of memory");
		return NULL;
	}
	op->h = h;
	op->req = req;
	op->kind = kind;
	op->start_us = td__now_us();
	op->deadline_us = op->start_us + (uint64_t)wait_ms * 1000u;
	op->timer = event_new(h->td->base, -1, kind == OP_DONE ? 0 : EV_PERSIST, cb, op);
	if (!op->timer) {
		free(op);
		httpd__error(req, 500, "failed", "out of memory");
		return NULL;
	}
	op->next = h->ops;
	h->ops = op;
	h->n_ops++;
	httpd__on_close(h->srv, req, op_closed, op);
	return op;
}

static void op_arm(struct op *op)
{
	struct timeval tv;

	if (op->kind == OP_DONE) {
		uint64_t left = op->deadline_us - op->start_us;
		tv.tv_sec = (time_t)(left / 1000000u);
		tv.tv_usec = (suseconds_t)(left % 1000000u);
	} else {
		tv.tv_sec = 0;
		tv.tv_usec = CHECK_US;
	}
	event_add(op->timer, &tv);
}

/* --- watchers (server-sent events) ------------------------------------------------------------ */

static void watcher_free(struct watcher *w, bool end)
{
	struct http *h = w->h;
	struct watcher **pp;

	for (pp = &h->watchers; *pp && *pp != w; pp = &(*pp)->next)
		;
	if (*pp) {
		*pp = w->next;
		h->n_watchers--;
	}
	if (w->req) {
		httpd__on_close(h->srv, w->req, NULL, NULL);
		if (end)
			evhttp_send_reply_end(w->req);
	}
	free(w->filter);
	free(w);
}

static void watcher_closed(void *arg)
{
	struct watcher *w = arg;
	struct evhttp_request *req = w->req;

	w->req = NULL;
	if (req && !evhttp_request_get_connection(req))
		evhttp_request_free(req);
	watcher_free(w, false);
}

static void watcher_send(struct watcher *w, const char *event, const char *data)
{
	struct evhttp_connection *c = evhttp_request_get_connection(w->req);
	struct bufferevent *bev = c ? evhttp_connection_get_bufferevent(c) : NULL;
	struct evbuffer *buf;

	/* A watcher that does not read is dropped, not buffered for ever. */
	if (bev && evbuffer_get_length(bufferevent_get_output(bev)) > WATCHER_MAX_BACKLOG) {
		td_warn("http: a watcher does not keep up; dropped");
		watcher_free(w, true);
		return;
	}
	buf = evbuffer_new();
	if (!buf)
		return;
	if (event)
		evbuffer_add_printf(buf, "event: %s\ndata: %s\n\n", event, data);
	else
		evbuffer_add_printf(buf, ": %s\n\n", data);
	evhttp_send_reply_chunk(w->req, buf);
	evbuffer_free(buf);
}

static bool watcher_wants(const struct watcher *w, const char *data)
{
	json_error_t jerr;
	json_t *j;
	const char *thing;
	char key[80];
	bool yes;

	if (!w->filter)
		return true;
	j = json_loads(data, 0, &jerr);
	thing = j ? json_string_value(json_object_get(j, "thing")) : NULL;
	if (!thing) {
		json_decref(j);
		return true; /* events about the controller go to everyone */
	}
	snprintf(key, sizeof(key), ",%s,", thing);
	yes = strstr(w->filter, key) != NULL;
	json_decref(j);
	return yes;
}

void http__broadcast(struct thingsd *td, const char *event, const char *json)
{
	struct http *h = td->http;
	struct watcher *w, *next;

	if (!h)
		return;
	for (w = h->watchers; w; w = next) {
		next = w->next;
		if (w->req && watcher_wants(w, json))
			watcher_send(w, event, json);
	}
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	struct watcher *w, *next;

	for (w = h->watchers; w; w = next) {
		next = w->next;
		if (w->req)
			watcher_send(w, NULL, "keepalive");
	}
}

size_t http__watchers(const struct thingsd *td)
{
	return td->http ? td->http->n_watchers : 0;
}

size_t http__pending(const struct thingsd *td)
{
	return td->http ? td->http->n_ops : 0;
}

/* --- helpers ---------------------------------------------------------------------------- */

static json_t *read_body(struct evhttp_request *req, bool required)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	json_error_t jerr;
	json_t *j;

	if (!len)
		return required ? NULL : json_object();
	j = json_loadb((const char *)evbuffer_pullup(in, (ev_ssize_t)len), len, JSON_REJECT_DUPLICATES,
	               &jerr);
	if (!json_is_object(j)) {
		json_decref(j);
		return NULL;
	}
	return j;
}

static uint32_t query_ms(struct evkeyvalq *q, const char *key, uint32_t dflt)
{
	const char *v = evhttp_find_header(q, key);
	char *end;
	unsigned long n;

	if (!v)
		return dflt;
	n = strtoul(v, &end, 10);
	if (*end || end == v)
		return dflt;
	return n > MAX_WAIT_MS ? MAX_WAIT_MS : (uint32_t)n;
}

static json_t *thing_json(struct thingsd *td, const char *name)
{
	tsync_thing_state st;
	tsync_thing_info ti;
	struct owned *o;
	json_t *j;
	int idx = tsync_site_thing_find(td->site, name);

	if (idx < 0 || tsync_site_thing(td->site, (size_t)idx, &ti) < 0 ||
	    tsync_node_get(td->node, name, &st) < 0)
		return NULL;
	j = json_pack("{s:s,s:s,s:o,s:b,s:s,s:I,s:b,s:b}", "name", ti.name, "type", tsync_type_name(ti.type),
	              "value", td__value_json(&st.value), "owned", st.owned, "owner", ti.owner, "version",
	              (json_int_t)st.version, "settable", ti.settable, "pulse", ti.pulse);
	if (!j)
		return NULL;
	o = st.owned ? daemon__owned(td, name) : NULL;
	if (st.owned)
		json_object_set_new(j, "users_pending", json_integer((json_int_t)st.users_pending));
	if (o && o->drv) {
		struct driver *d = o->drv;
		json_object_set_new(j, "driver", json_string(d->ops->kind));
		json_object_set_new(j, "driver_ok", json_boolean(!d->read_failing && !d->write_failing));
		if (d->read_failing || d->write_failing)
			json_object_set_new(j, "driver_error", json_string(d->last_error));
	}
	if (o && o->pulsing) {
		uint64_t now = td__now_us();
		json_object_set_new(
		    j, "pulsing",
		    json_pack("{s:o,s:I}", "value", td__value_json(&o->pulse_val), "remaining_ms",
		              (json_int_t)(o->pulse_end_us > now ? (o->pulse_end_us - now) / 1000u : 0)));
	}
	return j;
}

/* --- GET handlers ------------------------------------------------------------------------ */

/* The history's counters (GET /status), {"enabled": false} when it is off. */
static json_t *history_json(struct thingsd *td)
{
	tsync_history_stats st;

	if (tsync_node_history_stats(td->node, &st) < 0 || !st.enabled)
		return json_pack("{s:b}", "enabled", false);
	return json_pack("{s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "enabled", true, "entries",
	                 (json_int_t)st.entries, "bytes", (json_int_t)st.bytes, "trimmed", (json_int_t)st.trimmed,
	                 "staged", (json_int_t)st.staged, "oldest_us", (json_int_t)st.oldest_us,
	                 "trimmed_through_us", (json_int_t)st.trimmed_through_us, "max_age_ms",
	                 (json_int_t)st.limits.max_age_ms, "max_bytes", (json_int_t)st.limits.max_bytes);
}

static void get_status(struct http *h, struct evhttp_request *req)
{
	struct thingsd *td = h->td;
	size_t np = tsync_node_peer_count(td->node), up = 0;
	json_t *failing = json_array();
	uint64_t now = td__now_us();

	for (size_t i = 0; i < np; i++) {
		tsync_peer_stats st;
		if (tsync_node_peer_stats(td->node, i, &st) == 0 && st.up)
			up++;
	}
	for (size_t i = 0; i < td->n_owned; i++) {
		struct driver *d = td->owned[i].drv;
		if (d && (d->read_failing || d->write_failing))
			json_array_append_new(failing, json_pack("{s:s,s:s}", "thing", td->owned[i].name,
			                                         "error", d->last_error));
	}
	httpd__reply_json(
	    req, 200,
	    json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:b,s:s?,s:s,s:I,s:I,s:I,s:I,s:I,s:I,"
	              "s:o,s:I,s:b,s:o}",
	              "program", "thingsd", "version", THINGSD_VERSION, "controller",
	              tsync_node_name(td->node), "site", tsync_site_name(td->site), "boot",
	              (json_int_t)tsync_node_boot(td->node), "uptime_s",
	              (json_int_t)((now - td->started_us) / 1000000u), "node_uptime_s",
	              (json_int_t)((now - td->node_started_us) / 1000000u), "owned", (json_int_t)td->n_owned,
	              "used", (json_int_t)td->n_used, "unsettled", (json_int_t)tsync_node_unsettled(td->node),
	              "authenticated", tsync_site_has_key(td->site), "signature_required", td->signature_required,
	              "state_dir", td->opt.state_dir, "site_conf", td->opt.conf_path, "reloads",
	              (json_int_t)td->reloads, "reloads_failed", (json_int_t)td->reloads_failed, "deploys",
	              (json_int_t)td->deploys, "deploys_failed", (json_int_t)td->deploys_failed, "peers",
	              (json_int_t)np, "peers_up", (json_int_t)up, "drivers_failing", failing, "watchers",
	              (json_int_t)h->n_watchers, "clim", td->clim != NULL, "history", history_json(td)));
}

/* The most entries one GET /history answers: the answer is built in memory. */
#define HISTORY_MAX_ENTRIES 100000

struct history_answer {
	json_t *entries;
	size_t limit;
	bool truncated;
};

static int history_entry_cb(void *ud, const tsync_history_entry *e)
{
	struct history_answer *a = ud;

	if (json_array_size(a->entries) >= a->limit) {
		a->truncated = true;
		return 1;
	}
	json_array_append_new(a->entries,
	                      json_pack("{s:s,s:I,s:I,s:I,s:o}", "thing", e->thing, "time_us", (json_int_t)e->time_us,
	                                "owner_boot", (json_int_t)e->owner_boot, "version", (json_int_t)e->version,
	                                "value", td__value_json(&e->value)));
	return 0;
}

static bool query_i64(struct evkeyvalq *q, const char *key, int64_t dflt, int64_t *out)
{
	const char *v = evhttp_find_header(q, key);
	char *end;

	*out = dflt;
	if (!v)
		return true;
	errno = 0;
	*out = strtoll(v, &end, 10);
	return !*end && end != v && errno == 0;
}

/* GET /history?thing=&from=&to=&limit=: the committed changes of the
 * window, and whether part of it was trimmed (lost, not "no change"). */
static void get_history(struct http *h, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	const char *thing = evhttp_find_header(q, "thing");
	struct history_answer a = {json_array(), HISTORY_MAX_ENTRIES, false};
	tsync_history_window w;
	int64_t from, to, limit;
	int r;

	if (!query_i64(q, "from", 0, &from) || !query_i64(q, "to", INT64_MAX, &to) ||
	    !query_i64(q, "limit", HISTORY_MAX_ENTRIES, &limit) || from > to || limit < 1) {
		json_decref(a.entries);
		httpd__error(req, 400, "bad_request", "from, to: microseconds since the epoch, from <= to; limit >= 1");
		return;
	}
	if (limit < HISTORY_MAX_ENTRIES)
		a.limit = (size_t)limit;
	if (thing && !*thing)
		thing = NULL;
	r = tsync_node_history_query(td->node, thing, from, to, history_entry_cb, &a, &w);
	if (r < 0) {
		json_decref(a.entries);
		if (r == -ENOTSUP)
			httpd__error(req, 404, "no_history", "this controller keeps no history (history = yes)");
		else
			send_lib_error(req, r, thing ? thing : "history");
		return;
	}
	httpd__reply_json(req, 200,
	                  json_pack("{s:s,s:s?,s:I,s:I,s:o,s:I,s:b,s:b,s:I,s:I,s:I}", "controller",
	                            tsync_node_name(td->node), "thing", thing, "from_us", (json_int_t)from, "to_us",
	                            (json_int_t)to, "entries", a.entries, "count",
	                            (json_int_t)json_array_size(a.entries), "truncated", a.truncated, "trimmed",
	                            w.trimmed, "trimmed_from_us", (json_int_t)w.trimmed_from_us, "trimmed_to_us",
	                            (json_int_t)w.trimmed_to_us, "held_from_us", (json_int_t)w.held_from_us));
}

static void get_things(struct http *h, struct evhttp_request *req)
{
	struct thingsd *td = h->td;
	json_t *a = json_array();

	for (size_t i = 0; i < td->n_owned; i++)
		json_array_append_new(a, thing_json(td, td->owned[i].name));
	for (size_t i = 0; i < td->n_used; i++)
		json_array_append_new(a, thing_json(td, td->used[i].name));
	httpd__reply_json(req, 200, json_pack("{s:s,s:o}", "controller", tsync_node_name(td->node), "things", a));
}

static void get_thing(struct http *h, struct evhttp_request *req, const char *name)
{
	struct thingsd *td = h->td;
	tsync_thing_state st;
	int r = tsync_node_get(td->node, name, &st);
	json_t *j;

	if (r < 0) {
		send_lib_error(req, r, name);
		return;
	}
	j = thing_json(td, name);
	if (!j) {
		httpd__error(req, 500, "failed", "out of memory");
		return;
	}
	httpd__reply_json(req, 200, j);
}

static json_t *peer_json(const tsync_peer_stats *st)
{
	json_t *rej = json_object();

	for (int k = 0; k < TSYNC_REJ_COUNT; k++)
		if (st->rejected[k])
			json_object_set_new(rej, tsync_reject_name((tsync_reject)k),
			                    json_integer((json_int_t)st->rejected[k]));
	return json_pack(
	    "{s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:I,s:o,s:I}", "name", st->name, "up",
	    st->up, "boot", (json_int_t)st->boot, "datagrams_sent", (json_int_t)st->datagrams_sent,
	    "datagrams_received", (json_int_t)st->datagrams_received, "bytes_sent",
	    (json_int_t)st->bytes_sent, "bytes_received", (json_int_t)st->bytes_received, "msgs_sent",
	    (json_int_t)st->msgs_sent, "retransmits", (json_int_t)st->retransmits, "acked",
	    (json_int_t)st->acked, "pending", (json_int_t)st->pending, "srtt_ms", st->srtt_us / 1000.0,
	    "rttvar_ms", st->rttvar_us / 1000.0, "rto_ms", (json_int_t)st->rto_ms, "rejected", rej,
	    "last_heard_ms", (json_int_t)st->last_heard_ms);
}

static void get_peers(struct http *h, struct evhttp_request *req)
{
	struct thingsd *td = h->td;
	size_t n = tsync_node_peer_count(td->node);
	json_t *a = json_array(), *unk = json_object();

	for (size_t i = 0; i < n; i++) {
		tsync_peer_stats st;
		if (tsync_node_peer_stats(td->node, i, &st) == 0)
			json_array_append_new(a, peer_json(&st));
	}
	for (int k = 0; k < TSYNC_REJ_COUNT; k++) {
		uint64_t c = tsync_node_rejected_unknown(td->node, (tsync_reject)k);
		if (c)
			json_object_set_new(unk, tsync_reject_name((tsync_reject)k),
			                    json_integer((json_int_t)c));
	}
	httpd__reply_json(req, 200,
	          json_pack("{s:s,s:o,s:o}", "controller", tsync_node_name(td->node), "peers", a,
	                    "rejected_unknown", unk));
}

static void metric_head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void get_metrics(struct http *h, struct evhttp_request *req)
{
	static const struct {
		const char *name, *type, *help;
		size_t off;
		bool u32;
	} peer_metrics[] = {
	    {"thingsync_datagrams_sent_total", "counter", "Datagrams sent to the peer.",
	     offsetof(tsync_peer_stats, datagrams_sent), false},
	    {"thingsync_datagrams_received_total", "counter", "Valid datagrams received from the peer.",
	     offsetof(tsync_peer_stats, datagrams_received), false},
	    {"thingsync_bytes_sent_total", "counter", "Bytes sent to the peer.",
	     offsetof(tsync_peer_stats, bytes_sent), false},
	    {"thingsync_bytes_received_total", "counter", "Bytes received from the peer.",
	     offsetof(tsync_peer_stats, bytes_received), false},
	    {"thingsync_messages_sent_total", "counter", "Messages sent, retransmissions included.",
	     offsetof(tsync_peer_stats, msgs_sent), false},
	    {"thingsync_retransmits_total", "counter", "Datagrams sent by the retry timer.",
	     offsetof(tsync_peer_stats, retransmits), false},
	    {"thingsync_acked_total", "counter", "Messages acknowledged by the peer.",
	     offsetof(tsync_peer_stats, acked), false},
	    {"thingsync_pending", "gauge", "Messages waiting for the peer's answer.",
	     offsetof(tsync_peer_stats, pending), false},
	};
	struct thingsd *td = h->td;
	const char *me = tsync_node_name(td->node);
	size_t n = tsync_node_peer_count(td->node);
	tsync_peer_stats *st = calloc(n ? n : 1, sizeof(*st));
	struct evbuffer *b = evbuffer_new();

	if (!st || !b) {
		free(st);
		if (b)
			evbuffer_free(b);
		httpd__error(req, 500, "failed", "out of memory");
		return;
	}
	for (size_t i = 0; i < n; i++)
		tsync_node_peer_stats(td->node, i, &st[i]);

	metric_head(b, "thingsync_peer_up", "gauge",
	            "1 if the peer answered recently and nothing is overdue.");
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(b, "thingsync_peer_up{controller=\"%s\",peer=\"%s\"} %d\n", me,
		                    st[i].name, st[i].up ? 1 : 0);
	for (size_t m = 0; m < sizeof(peer_metrics) / sizeof(peer_metrics[0]); m++) {
		metric_head(b, peer_metrics[m].name, peer_metrics[m].type, peer_metrics[m].help);
		for (size_t i = 0; i < n; i++) {
			uint64_t v;
			memcpy(&v, (const char *)&st[i] + peer_metrics[m].off, sizeof(v));
			evbuffer_add_printf(b, "%s{controller=\"%s\",peer=\"%s\"} %llu\n",
			                    peer_metrics[m].name, me, st[i].name, (unsigned long long)v);
		}
	}
	metric_head(b, "thingsync_srtt_seconds", "gauge", "Smoothed round trip to the peer.");
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(b, "thingsync_srtt_seconds{controller=\"%s\",peer=\"%s\"} %.6f\n", me,
		                    st[i].name, st[i].srtt_us / 1e6);
	metric_head(b, "thingsync_rto_seconds", "gauge", "Current retransmission timeout, with backoff.");
	for (size_t i = 0; i < n; i++)
		evbuffer_add_printf(b, "thingsync_rto_seconds{controller=\"%s\",peer=\"%s\"} %.3f\n", me,
		                    st[i].name, st[i].rto_ms / 1e3);
	metric_head(b, "thingsync_rejected_total", "counter", "Datagrams or messages refused, by reason.");
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < TSYNC_REJ_COUNT; k++)
			evbuffer_add_printf(
			    b, "thingsync_rejected_total{controller=\"%s\",peer=\"%s\",reason=\"%s\"} %llu\n",
			    me, st[i].name, tsync_reject_name((tsync_reject)k),
			    (unsigned long long)st[i].rejected[k]);
	for (int k = 0; k < TSYNC_REJ_COUNT; k++)
		evbuffer_add_printf(
		    b, "thingsync_rejected_total{controller=\"%s\",peer=\"\",reason=\"%s\"} %llu\n", me,
		    tsync_reject_name((tsync_reject)k),
		    (unsigned long long)tsync_node_rejected_unknown(td->node, (tsync_reject)k));

	metric_head(b, "thingsd_thing_value", "gauge", "Value of a bool, int or float thing (own or copy).");
	for (int pass = 0; pass < 2; pass++) {
		size_t cnt = pass ? td->n_used : td->n_owned;
		for (size_t i = 0; i < cnt; i++) {
			const char *name = pass ? td->used[i].name : td->owned[i].name;
			tsync_thing_state ts;
			double v;
			if (tsync_node_get(td->node, name, &ts) < 0)
				continue;
			if (ts.value.type == TSYNC_TYPE_BOOL)
				v = ts.value.u.b;
			else if (ts.value.type == TSYNC_TYPE_INT)
				v = (double)ts.value.u.i;
			else if (ts.value.type == TSYNC_TYPE_FLOAT)
				v = ts.value.u.f;
			else
				continue;
			evbuffer_add_printf(
			    b, "thingsd_thing_value{controller=\"%s\",thing=\"%s\",owned=\"%d\"} %.15g\n", me,
			    name, !pass, v);
		}
	}
	metric_head(b, "thingsd_thing_changes_total", "counter", "Changes of a thing seen since start.");
	for (size_t i = 0; i < td->n_owned; i++)
		evbuffer_add_printf(b, "thingsd_thing_changes_total{controller=\"%s\",thing=\"%s\"} %llu\n",
		                    me, td->owned[i].name, (unsigned long long)td->owned[i].changes_total);
	for (size_t i = 0; i < td->n_used; i++)
		evbuffer_add_printf(b, "thingsd_thing_changes_total{controller=\"%s\",thing=\"%s\"} %llu\n",
		                    me, td->used[i].name, (unsigned long long)td->used[i].changes_total);
	metric_head(b, "thingsd_driver_ok", "gauge", "1 if the thing's driver reads and writes.");
	for (size_t i = 0; i < td->n_owned; i++) {
		struct driver *d = td->owned[i].drv;
		evbuffer_add_printf(b, "thingsd_driver_ok{controller=\"%s\",thing=\"%s\",driver=\"%s\"} %d\n",
		                    me, td->owned[i].name, d->ops->kind,
		                    !d->read_failing && !d->write_failing);
	}
	metric_head(b, "thingsd_driver_errors_total", "counter", "Failed driver reads and writes.");
	for (size_t i = 0; i < td->n_owned; i++) {
		struct driver *d = td->owned[i].drv;
		evbuffer_add_printf(
		    b, "thingsd_driver_errors_total{controller=\"%s\",thing=\"%s\",op=\"read\"} %llu\n", me,
		    td->owned[i].name, (unsigned long long)d->read_errors);
		evbuffer_add_printf(
		    b, "thingsd_driver_errors_total{controller=\"%s\",thing=\"%s\",op=\"write\"} %llu\n", me,
		    td->owned[i].name, (unsigned long long)d->write_errors);
	}
	metric_head(b, "thingsd_unsettled", "gauge",
	            "Owned things not yet acknowledged by all users, plus open asks.");
	evbuffer_add_printf(b, "thingsd_unsettled{controller=\"%s\"} %zu\n", me,
	                    tsync_node_unsettled(td->node));
	metric_head(b, "thingsd_boot", "gauge", "The node's boot counter.");
	evbuffer_add_printf(b, "thingsd_boot{controller=\"%s\"} %llu\n", me,
	                    (unsigned long long)tsync_node_boot(td->node));
	metric_head(b, "thingsd_uptime_seconds", "gauge", "Seconds since thingsd started.");
	evbuffer_add_printf(b, "thingsd_uptime_seconds{controller=\"%s\"} %.1f\n", me,
	                    (td__now_us() - td->started_us) / 1e6);
	metric_head(b, "thingsd_reloads_total", "counter", "Reloads of site.conf, by result.");
	evbuffer_add_printf(b, "thingsd_reloads_total{controller=\"%s\",result=\"ok\"} %llu\n", me,
	                    (unsigned long long)td->reloads);
	evbuffer_add_printf(b, "thingsd_reloads_total{controller=\"%s\",result=\"failed\"} %llu\n", me,
	                    (unsigned long long)td->reloads_failed);
	metric_head(b, "thingsd_http_requests_total", "counter",
	            "HTTP requests served, and those refused by reason.");
	{
		struct httpd_stats hs;
		httpd__stats(h->srv, &hs);
		evbuffer_add_printf(b,
		                    "thingsd_http_requests_total{controller=\"%s\",result=\"served\"} %llu\n"
		                    "thingsd_http_requests_total{controller=\"%s\",result=\"unauthorized\"} %llu\n"
		                    "thingsd_http_requests_total{controller=\"%s\",result=\"cross_site\"} %llu\n"
		                    "thingsd_http_requests_total{controller=\"%s\",result=\"too_large\"} %llu\n"
		                    "thingsd_http_requests_total{controller=\"%s\",result=\"refused\"} %llu\n",
		                    me, (unsigned long long)hs.requests, me, (unsigned long long)hs.unauthorized, me,
		                    (unsigned long long)hs.cross_site, me, (unsigned long long)hs.too_large, me,
		                    (unsigned long long)hs.refused);
		metric_head(b, "thingsd_http_connections", "gauge", "HTTP connections open.");
		evbuffer_add_printf(b, "thingsd_http_connections{controller=\"%s\"} %zu\n", me, hs.connections);
		metric_head(b, "thingsd_http_timeouts_total", "counter", "HTTP clients cut off for sending too slowly.");
		evbuffer_add_printf(b, "thingsd_http_timeouts_total{controller=\"%s\"} %llu\n", me,
		                    (unsigned long long)hs.timeouts);
		metric_head(b, "thingsd_http_emfile_total", "counter",
		            "HTTP accepts that failed for want of descriptors.");
		evbuffer_add_printf(b, "thingsd_http_emfile_total{controller=\"%s\"} %llu\n", me,
		                    (unsigned long long)hs.emfile);
	}
	metric_head(b, "thingsd_event_watchers", "gauge", "Clients of /events.");
	evbuffer_add_printf(b, "thingsd_event_watchers{controller=\"%s\"} %zu\n", me, h->n_watchers);

	free(st);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void get_events(struct http *h, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	const char *things = evhttp_find_header(q, "things");
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	struct watcher *w;
	char hello[200];

	if (h->n_watchers >= MAX_WATCHERS) {
		httpd__error(req, 503, "busy", "too many watchers (%d)", MAX_WATCHERS);
		return;
	}
	w = calloc(1, sizeof(*w));
	if (!w || (things && *things && asprintf(&w->filter, ",%s,", things) < 0)) {
		free(w);
		httpd__error(req, 500, "failed", "out of memory");
		return;
	}
	w->h = h;
	w->req = req;
	w->next = h->watchers;
	h->watchers = w;
	h->n_watchers++;
	httpd__on_close(h->srv, req, watcher_closed, w);
	evhttp_add_header(out, "Content-Type", "text/event-stream");
	evhttp_add_header(out, "Cache-Control", "no-cache");
	evhttp_send_reply_start(req, 200, "OK");
	snprintf(hello, sizeof(hello), "{\"controller\":\"%s\",\"boot\":%llu}", tsync_node_name(td->node),
	         (unsigned long long)tsync_node_boot(td->node));
	watcher_send(w, "hello", hello);
}

/* --- waiting requests ------------------------------------------------------------------- */

static bool same_value(const tsync_value *a, const tsync_value *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case TSYNC_TYPE_BOOL:
		return a->u.b == b->u.b;
	case TSYNC_TYPE_INT:
		return a->u.i == b->u.i;
	case TSYNC_TYPE_FLOAT:
		return a->u.f == b->u.f;
	case TSYNC_TYPE_STRING:
		return !strcmp(a->u.s, b->u.s);
	default:
		return true;
	}
}

static void wait_cb(evutil_socket_t fd, short what, void *arg)
{
	struct op *op = arg;
	struct thingsd *td = op->h->td;
	tsync_thing_state st;
	json_t *j;

	if (!op->req || tsync_node_get(td->node, op->thing, &st) < 0) {
		op_free(op);
		return;
	}
	if (op->kind == OP_SET) {
		if (same_value(&st.value, &op->want)) {
			j = thing_json(td, op->thing);
			json_object_set_new(j, "confirmed", json_true());
			op_reply(op, 200, j);
			op_free(op);
			return;
		}
		/* The owner answered, and its answer is not what was asked. */
		if (!st.requesting) {
			j = thing_json(td, op->thing);
			if (st.version != op->ver0) {
				json_object_set_new(j, "confirmed", json_true());
				op_reply(op, 200, j);
			} else if (st.request_error == TSYNC_EWRITE) {
				/* It took the set but its driver failed: not a refusal. */
				json_object_set_new(j, "error", json_string("err_write_crash"));
				json_object_set_new(j, "message",
				                    json_string("the owner took the set but could not write it"));
				op_reply(op, 502, j);
			} else {
				json_object_set_new(j, "error", json_string("err_ip_in_refused"));
				json_object_set_new(j, "message", json_string("the owner refused the set"));
				op_reply(op, 403, j);
			}
			op_free(op);
			return;
		}
	} else if (!st.asking) {
		/* The owner answered the ask: the copy is the owner's value. */
		j = thing_json(td, op->thing);
		json_object_set_new(j, "fresh", json_true());
		op_reply(op, 200, j);
		op_free(op);
		return;
	}
	if (td__now_us() >= op->deadline_us) {
		j = thing_json(td, op->thing);
		if (op->kind == OP_SET) {
			json_object_set_new(j, "confirmed", json_false());
			/* With a state directory the request was committed before
			 * this answer and survives a restart of this controller. */
			json_object_set_new(j, "kept", json_boolean(td->opt.state_dir != NULL));
			json_object_set_new(j, "message",
			                    json_string(td->opt.state_dir
			                                    ? "requested; the owner has not confirmed yet (kept "
			                                      "across restarts)"
			                                    : "requested; the owner has not confirmed yet (not kept: "
			                                      "no state directory)"));
			op_reply(op, 202, j);
		} else {
			json_object_set_new(j, "fresh", json_false());
			json_object_set_new(j, "error", json_string("timeout"));
			json_object_set_new(j, "message", json_string("the owner has not answered"));
			op_reply(op, 504, j);
		}
		op_free(op);
	}
}

static void done_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct op *op = arg;
	bool kept = op->h && op->h->td->opt.state_dir;

	op_reply(op, 504,
	         json_pack("{s:s,s:s,s:b}", "error", "timeout", "message",
	                   kept ? "no answer yet; it is still retried (kept across restarts)"
	                        : "no answer yet; it is still retried (not kept: no state directory)",
	                   "kept", kept));
	/* The library calls done() later; the op waits for it. */
}

static void op_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct op *op = ud;
	json_error_t jerr;
	json_t *res = result ? json_loads(result, JSON_DECODE_ANY, &jerr) : NULL;

	op->done_pending = false;
	if (status == 0) {
		op_reply(op, 200, json_pack("{s:s,s:o}", "status", "ok", "result", res ? res : json_null()));
	} else {
		const char *name;
		int code = status_of(status, &name);
		if (status == TSYNC_EREFUSED && strcmp(op->what, "pulse"))
			name = "err_cmd_failed";
		else if (status == TSYNC_ECMD && !strcmp(op->what, "request"))
			name = "err_ip_in_req";
		op_reply(op, code,
		         json_pack("{s:s,s:s,s:o}", "error", name, "message", tsync_strerror(status),
		                   "result", res ? res : json_null()));
	}
	op_free(op);
}

/* --- POST handlers ---------------------------------------------------------------------------- */

static void post_set(struct http *h, struct evhttp_request *req, const char *name, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	tsync_thing_info ti;
	tsync_thing_state st;
	tsync_value v;
	char *str = NULL;
	json_t *body = read_body(req, true), *j;
	int idx = tsync_site_thing_find(td->site, name), r;
	struct op *op;

	if (!body || !json_object_get(body, "value")) {
		json_decref(body);
		httpd__error(req, 400, "bad_request", "the body must be a JSON object with \"value\"");
		return;
	}
	if (idx < 0 || (r = tsync_node_get(td->node, name, &st)) < 0) {
		json_decref(body);
		send_lib_error(req, idx < 0 ? idx : r, name);
		return;
	}
	tsync_site_thing(td->site, (size_t)idx, &ti);
	r = td__value_from_json(ti.type, json_object_get(body, "value"), &v, &str);
	json_decref(body);
	if (r < 0) {
		httpd__error(req, r == -ENOMEM ? 500 : 422, "err_ip_in_val", "%s takes a %s value", name,
		           tsync_type_name(ti.type));
		return;
	}
	/* An input is set by its driver, never from outside. */
	if (!ti.settable) {
		free(str);
		td_warn("err_ip_in_refused set of %s over HTTP: it is not settable", name);
		httpd__error(req, 403, "err_ip_in_refused", "%s is not settable (settable = no)", name);
		return;
	}
	r = tsync_node_set(td->node, name, &v);
	if (r < 0) {
		struct owned *o = daemon__owned(td, name);
		free(str);
		if (r == TSYNC_EREFUSED && o && o->drv && o->drv->write_failing)
			httpd__error(req, 403, "err_ip_in_refused", "%s: the driver cannot write: %s", name,
			           o->drv->last_error);
		else
			send_lib_error(req, r, name);
		return;
	}
	if (st.owned) {
		free(str);
		/* The 200 acknowledges the client: the value is on disk first. */
		r = tsync_node_commit(td->node);
		if (r < 0) {
			send_lib_error(req, r, name);
			return;
		}
		j = thing_json(td, name);
		json_object_set_new(j, "confirmed", json_true());
		httpd__reply_json(req, 200, j);
		return;
	}
	/* A copy: the owner decides; wait for its answer. */
	op = op_new(h, req, OP_SET, query_ms(q, "wait_ms", DEFAULT_WAIT_MS), wait_cb);
	if (!op) {
		free(str);
		return;
	}
	op->thing = strdup(name);
	op->want = v;
	op->want_str = str;
	op->ver0 = st.version;
	if (!op->thing) {
		op_free(op);
		return;
	}
	op_arm(op);
}

static void post_ask(struct http *h, struct evhttp_request *req, const char *name, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	tsync_thing_state st;
	struct op *op;
	json_t *j;
	int r = tsync_node_get(td->node, name, &st);

	if (r < 0) {
		send_lib_error(req, r, name);
		return;
	}
	if (st.owned) {
		j = thing_json(td, name);
		json_object_set_new(j, "fresh", json_true());
		httpd__reply_json(req, 200, j);
		return;
	}
	op = op_new(h, req, OP_ASK, query_ms(q, "wait_ms", DEFAULT_WAIT_MS), wait_cb);
	if (!op)
		return;
	op->thing = strdup(name);
	if (!op->thing) {
		op_free(op);
		return;
	}
	r = tsync_node_ask(td->node, name);
	if (r < 0) {
		op_reply(op, 500, json_pack("{s:s,s:s}", "error", "failed", "message", tsync_strerror(r)));
		op_free(op);
		return;
	}
	op_arm(op);
}

static void post_pulse(struct http *h, struct evhttp_request *req, const char *name, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	json_t *body = read_body(req, false), *jv, *jms;
	tsync_thing_info ti;
	tsync_value v;
	char *str = NULL;
	uint32_t ms = 0;
	struct op *op;
	int idx = tsync_site_thing_find(td->site, name), r;

	if (!body) {
		httpd__error(req, 400, "bad_request", "the body must be a JSON object");
		return;
	}
	if (idx < 0) {
		json_decref(body);
		send_lib_error(req, idx, name);
		return;
	}
	tsync_site_thing(td->site, (size_t)idx, &ti);
	jv = json_object_get(body, "value");
	jms = json_object_get(body, "ms");
	if (jv && td__value_from_json(ti.type, jv, &v, &str) < 0) {
		json_decref(body);
		httpd__error(req, 422, "err_ip_in_val", "%s takes a %s value", name, tsync_type_name(ti.type));
		return;
	}
	if (jms &&
	    (!json_is_integer(jms) || json_integer_value(jms) < 0 || json_integer_value(jms) > 3600000)) {
		json_decref(body);
		free(str);
		httpd__error(req, 422, "err_ip_in_val", "ms must be 0..3600000");
		return;
	}
	ms = jms ? (uint32_t)json_integer_value(jms) : 0;
	json_decref(body);
	op = op_new(h, req, OP_DONE, query_ms(q, "wait_ms", DEFAULT_WAIT_MS), done_deadline_cb);
	if (!op) {
		free(str);
		return;
	}
	op->what = "pulse";
	op->done_pending = true;
	op_arm(op);
	/* On the owner, done() runs before this returns and frees the op. */
	r = tsync_node_pulse(td->node, name, jv ? &v : NULL, ms, op_done, op);
	free(str);
	if (r < 0) {
		const char *ename;
		int code = status_of(r, &ename);
		op->done_pending = false;
		op_reply(op, code, json_pack("{s:s,s:s}", "error", ename, "message", tsync_strerror(r)));
		op_free(op);
	}
}

static void post_cmd(struct http *h, struct evhttp_request *req, struct evkeyvalq *q)
{
	struct thingsd *td = h->td;
	json_t *body = read_body(req, true), *res;
	const char *to, *type, *role, *cmd, *err = NULL;
	char *args = NULL, *result = NULL;
	struct op *op;
	int r;

	if (!body) {
		httpd__error(req, 400, "bad_request", "the body must be a JSON object");
		return;
	}
	to = json_string_value(json_object_get(body, "to"));
	type = json_string_value(json_object_get(body, "type"));
	role = json_string_value(json_object_get(body, "role"));
	cmd = json_string_value(json_object_get(body, "cmd"));
	if (!type)
		type = "cmd";
	if (!strcmp(type, "io") || (!strcmp(type, "cmd") && (!role || !cmd))) {
		json_decref(body);
		httpd__error(req, 400, "bad_request", "a command needs \"role\" and \"cmd\"");
		return;
	}
	{
		/* Everything else is the command's arguments. */
		json_t *rest = json_deep_copy(body);
		static const char *const strip[] = {"to", "type", "role", "cmd", "id", "re"};
		for (size_t i = 0; rest && i < sizeof(strip) / sizeof(strip[0]); i++)
			json_object_del(rest, strip[i]);
		args = rest && json_object_size(rest) ? json_dumps(rest, JSON_COMPACT) : NULL;
		json_decref(rest);
	}
	if (!to || !strcmp(to, tsync_node_name(td->node))) {
		r = cmd__run_local(td, type, role, cmd, args, &result, &err);
		json_error_t jerr;
		res = result ? json_loads(result, JSON_DECODE_ANY, &jerr) : NULL;
		if (r == 0) {
			httpd__reply_json(req, 200,
			          json_pack("{s:s,s:o}", "status", "ok", "result", res ? res : json_null()));
		} else {
			const char *name;
			int code = status_of(r, &name);
			/* A handler's own failure is the command refusing. */
			if (err && !strcmp(err, "err_cmd_failed"))
				code = 403;
			httpd__reply_json(req, code,
			          json_pack("{s:s,s:s,s:o}", "error", err ? err : name, "message",
			                    tsync_strerror(r), "result", res ? res : json_null()));
		}
		free(result);
		free(args);
		json_decref(body);
		return;
	}
	if (tsync_site_controller_find(td->site, to) < 0) {
		httpd__error(req, 404, "unknown_controller", "%s is not a controller of this site", to);
		free(args);
		json_decref(body);
		return;
	}
	op = op_new(h, req, OP_DONE, query_ms(q, "wait_ms", DEFAULT_WAIT_MS), done_deadline_cb);
	if (!op) {
		free(args);
		json_decref(body);
		return;
	}
	op->what = strcmp(type, "cmd") ? "request" : "cmd";
	op->done_pending = true;
	op_arm(op);
	if (!strcmp(type, "cmd"))
		r = tsync_node_cmd(td->node, to, role, cmd, args, op_done, op);
	else
		r = tsync_node_request(td->node, to, type, args ? args : "{}", op_done, op);
	free(args);
	json_decref(body);
	if (r < 0) {
		const char *ename;
		int code = status_of(r, &ename);
		op->done_pending = false;
		op_reply(op, code, json_pack("{s:s,s:s}", "error", ename, "message", tsync_strerror(r)));
		op_free(op);
	}
}

static json_t *errors_json(const char *errors)
{
	json_t *a = json_array();
	char *copy = errors ? strdup(errors) : NULL, *save = NULL;

	for (char *l = copy ? strtok_r(copy, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
		json_array_append_new(a, json_string(l));
	free(copy);
	return a;
}

static void post_reload(struct http *h, struct evhttp_request *req)
{
	char *errors = NULL;
	int r = daemon__request_reload(h->td, "HTTP", &errors);

	if (r < 0)
		httpd__reply_json(req, 422,
		          json_pack("{s:s,s:s,s:o}", "error", "site_rejected", "message",
		                    "site.conf is not valid; the running site is kept", "errors",
		                    errors_json(errors)));
	else
		httpd__reply_json(req, 200, json_pack("{s:s}", "reload", "scheduled"));
	free(errors);
}

static void post_deploy(struct http *h, struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	const char *tag = evhttp_find_header(in, "X-Thingsync-Tag");
	const char *serial_s = evhttp_find_header(in, "X-Thingsync-Serial");
	size_t len = evbuffer_get_length(body);
	unsigned long long serial;
	char *end, *why = NULL;
	int r;

	if (!tag || !serial_s || !len) {
		httpd__error(req, 400, "bad_request",
		           "a deploy needs the X-Thingsync-Tag and -Serial headers and a body");
		return;
	}
	errno = 0;
	serial = strtoull(serial_s, &end, 10);
	if (errno || *end || end == serial_s) {
		httpd__error(req, 400, "bad_request", "X-Thingsync-Serial must be a number");
		return;
	}
	r = deploy__apply(h->td, serial, tag, evbuffer_pullup(body, (ev_ssize_t)len), len, &why);
	switch (r) {
	case 0:
		httpd__reply_json(req, 200, json_pack("{s:b,s:s}", "deployed", 1, "reload", "scheduled"));
		break;
	case -EBADMSG:
	case TSYNC_EKEY:
		httpd__error(req, 403, r == TSYNC_EKEY ? "no_key" : "bad_tag", "%s", why ? why : "refused");
		break;
	case -ESTALE:
		httpd__error(req, 409, "stale_serial", "%s", why ? why : "refused");
		break;
	default:
		httpd__reply_json(req, 422,
		          json_pack("{s:s,s:s,s:o}", "error", "site_rejected", "message",
		                    "the new site.conf is not valid here; the running site is kept", "errors",
		                    errors_json(why)));
		break;
	}
	free(why);
}

/* --- routing -------------------------------------------------------------------------------- */

static bool valid_name(const char *s, size_t len)
{
	if (!len || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* A request that passed the common rules (httpd): route, signature, limits. */
static void gen_cb(void *arg, struct evhttp_request *req, const char *path)
{
	struct http *h = arg;
	struct thingsd *td = h->td;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	bool get = m == EVHTTP_REQ_GET, post = m == EVHTTP_REQ_POST;
	struct evkeyvalq q;
	char name[64];

	TAILQ_INIT(&q);
	if (!*path)
		path = "/";
	if (!td->node) {
		httpd__error(req, 503, "reloading", "the node is being rebuilt; try again");
		return;
	}
	if (uri && evhttp_uri_get_query(uri))
		evhttp_parse_query_str(evhttp_uri_get_query(uri), &q);
	td_debug("http %s %s", get ? "GET" : post ? "POST" : "?", path);

	if (!strncmp(path, "/things/", 8)) {
		const char *rest = path + 8, *slash = strchr(rest, '/');
		size_t nl = slash ? (size_t)(slash - rest) : strlen(rest);
		if (!valid_name(rest, nl)) {
			httpd__error(req, 404, "err_ip_in_io", "not a thing name");
			goto leave;
		}
		memcpy(name, rest, nl);
		name[nl] = '\0';
		if (!slash && get)
			get_thing(h, req, name);
		else if (!slash && post)
			post_set(h, req, name, &q);
		else if (slash && !strcmp(slash, "/pulse") && post)
			post_pulse(h, req, name, &q);
		else if (slash && !strcmp(slash, "/ask") && post)
			post_ask(h, req, name, &q);
		else
			httpd__error(req, slash ? 404 : 405, slash ? "not_found" : "method", "%s", path);
		goto leave;
	}
	if (!strcmp(path, "/things") && get)
		get_things(h, req);
	else if (!strcmp(path, "/status") && get)
		get_status(h, req);
	else if (!strcmp(path, "/peers") && get)
		get_peers(h, req);
	else if (!strcmp(path, "/metrics") && get)
		get_metrics(h, req);
	else if (!strcmp(path, "/history") && get)
		get_history(h, req, &q);
	else if (!strcmp(path, "/events") && get)
		get_events(h, req, &q);
	else if (!strcmp(path, "/clim") && get) {
		json_error_t jerr;
		json_t *doc = td->clim ? json_loads(td->clim, JSON_DECODE_ANY, &jerr) : NULL;
		httpd__reply_json(req, 200, json_pack("{s:o}", "settings", doc ? doc : json_null()));
	} else if (!strcmp(path, "/cmd") && post)
		post_cmd(h, req, &q);
	else if (!strcmp(path, "/reload") && post)
		post_reload(h, req);
	else if (!strcmp(path, "/deploy") && post)
		post_deploy(h, req);
	else if (!strcmp(path, "/") && get)
		httpd__reply_json(req, 200,
		          json_pack("{s:s,s:s,s:[s,s,s,s,s,s,s,s,s,s,s,s,s]}", "program", "thingsd",
		                    "controller", tsync_node_name(td->node), "endpoints", "GET /status",
		                    "GET /things", "GET /things/NAME", "POST /things/NAME",
		                    "POST /things/NAME/pulse", "POST /things/NAME/ask", "POST /cmd",
		                    "GET /peers", "GET /metrics", "GET /events", "GET /clim", "POST /reload",
		                    "POST /deploy"));
	else
		httpd__error(req, 404, "not_found", "%s", path);
leave:
	evhttp_clear_headers(&q);
}

/* --- life cycle ---------------------------------------------------------------------------------- */

/*
 * What each path takes. Bodies are small JSON objects but for a deployed
 * site.conf; GETs have none. /metrics is open (read-only counters, for a
 * Prometheus that cannot sign); everything else needs a signature where one
 * is required.
 */
static const struct httpd_route routes[] = {
    {"/", HTTPD_GET, 0, false, false},
    {"/status", HTTPD_GET, 0, false, false},
    {"/things", HTTPD_GET, 0, false, false},
    {"/things/*", HTTPD_GET | HTTPD_POST, MAX_BODY_SMALL, false, false},
    {"/peers", HTTPD_GET, 0, false, false},
    {"/metrics", HTTPD_GET, 0, true, false},
    {"/events", HTTPD_GET, 0, false, false},
    {"/clim", HTTPD_GET, 0, false, false},
    {"/history", HTTPD_GET, 0, false, false},
    {"/cmd", HTTPD_POST, MAX_BODY_SMALL, false, false},
    {"/reload", HTTPD_POST, 0, false, false},
    {"/deploy", HTTPD_POST, MAX_BODY_DEPLOY, false, false},
    {NULL, 0, 0, false, false},
};

int http__start(struct thingsd *td)
{
	struct http *h;
	struct httpd_config cfg;
	tsync_controller_info ci;
	const char *host;
	struct timeval hb = {HEARTBEAT_S, 0};
	int idx = tsync_site_controller_find(td->site, td->opt.controller), r;

	if (idx < 0 || tsync_site_controller(td->site, (size_t)idx, &ci) < 0)
		return -EINVAL;
	if (!ci.tcp_port) {
		td_info("http: no tcp_port for %s in site.conf: no HTTP API", ci.name);
		return 0;
	}
	host = td->opt.http_bind ? td->opt.http_bind : "127.0.0.1";
	if (!strcmp(host, "host"))
		host = ci.host;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->td = td;
	h->heartbeat = event_new(td->base, -1, EV_PERSIST, heartbeat_cb, h);
	if (!h->heartbeat) {
		free(h);
		return -ENOMEM;
	}
	memset(&cfg, 0, sizeof(cfg));
	cfg.base = td->base;
	cfg.host = host;
	cfg.port = ci.tcp_port;
	cfg.routes = routes;
	cfg.handler = gen_cb;
	cfg.arg = h;
	cfg.site = td->site;
	cfg.name = ci.name;
	cfg.require_signature = td->signature_required;
	cfg.max_connections = td->opt.http_max_connections;
	cfg.request_timeout_s = td->opt.http_request_timeout_s;
	cfg.log = tdlog__lib;
	r = httpd__new(&cfg, &h->srv);
	if (r < 0) {
		event_free(h->heartbeat);
		free(h);
		return r;
	}
	event_add(h->heartbeat, &hb);
	td->http = h;
	td_info("http: API on %s:%u%s", host, ci.tcp_port,
	        td->signature_required ? ", signed requests only" : ", loopback");
	return 0;
}

void http__set_site(struct thingsd *td)
{
	if (td->http)
		httpd__set_site(td->http->srv, td->site);
}

uint16_t http__port(const struct thingsd *td)
{
	return td->http ? httpd__port(td->http->srv) : 0;
}

void http__node_gone(struct thingsd *td)
{
	struct http *h = td->http;
	struct op *op, *next;

	if (!h)
		return;
	/* Waits on the node end now; pulses and commands end when the node
	 * completes them with TSYNC_ECANCELED. */
	for (op = h->ops; op; op = next) {
		next = op->next;
		if (op->kind == OP_DONE)
			continue;
		op_reply(
		    op, 503,
		    json_pack("{s:s,s:s}", "error", "reloading", "message", "the node is being rebuilt"));
		op_free(op);
	}
}

void http__stop(struct thingsd *td)
{
	struct http *h = td->http;

	if (!h)
		return;
	while (h->watchers)
		watcher_free(h->watchers, true);
	while (h->ops) {
		struct op *op = h->ops;
		op_reply(op, 503, json_pack("{s:s}", "error", "stopping"));
		/* An op the library still holds is unlinked; it is freed in done(). */
		if (op->done_pending) {
			h->ops = op->next;
			h->n_ops--;
			op->next = NULL;
			op->h = NULL;
			if (op->timer)
				event_del(op->timer);
			continue;
		}
		op_free(op);
	}
	event_free(h->heartbeat);
	httpd__free(h->srv);
	free(h);
	td->http = NULL;
}
