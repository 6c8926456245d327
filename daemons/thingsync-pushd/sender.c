/*
 * thingsync-pushd: the sender. It reads batches from the journal after its
 * cursor, POSTs them as JSON to the collector, signed with the site key, up
 * to --inflight of them at a time (each the batch after the one before), and
 * moves the cursor (trimming the journal) only over batches the collector
 * answered are settled in its database - and only over a settled prefix:
 * a batch settled after one still in flight waits for it. Settled is 200
 * (stored, duplicates included) or 422 (the valid ones stored, the invalid
 * ones quarantined there with the reason and an alarm raised). Anything
 * else - no answer, 5xx, 401, a body that does not name the batch - stops
 * new POSTs; once every POST in flight has answered, the next try starts
 * again at the cursor, after a capped exponential backoff with jitter,
 * forever, so nothing is ever skipped or dropped. The collector's insert is
 * idempotent on (source, stream, seq), so a batch sent twice (or settled
 * behind one that failed, and sent again) is stored once.
 *
 * The stream is the journal's id (journal__stream_id()). A collector that
 * holds another stream of this source (the journal was lost and made again)
 * answers 409 and raises stream_changed: nothing is stored, so the batch
 * stays here, retried with the backoff, until the operator accepts the new
 * stream at the collector or runs `thingsync-dr recover` (and restarts us).
 *
 * Wire format (POST, Content-Type: application/json):
 *   {"source":"PI-Push","stream":"<32 hex>","boot":N,"measurements":[
 *     {"seq":17,"thing":"temp","value":21.5,"time":1717000000123456,
 *      "owner_boot":N,"version":N}, ...]}
 * time is in microseconds since the epoch. An entry that did not come live
 * says how it came ("source":"recovery" or "import"); a gap in an owner's
 * history and a closed day of cumuls travel as items of their own kind:
 *     {"seq":18,"source":"recovery","kind":"recovery_gap","owner":"PI-A",
 *      "from":US,"to":US}
 *     {"seq":19,"kind":"cumul","owner":"PI-A","thing":"door",
 *      "day":"2026-12-02","cumul":{...}} Headers X-Thingsync-Source (the
 * source) and the request signature of httpd__sign(), for the collector
 * service (HTTPD_COLLECTOR_NAME).
 *
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
#include <jansson.h>

#include "curlev.h"
#include "httpd.h"
#include "pushd.h"

static void send_more(struct sender *s, bool allow_empty);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	/* A retry always sends: data if there is some, else the heartbeat that
	 * failed, so an idle pushd still notices the collector coming back. */
	send_more(arg, true);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	send_more(arg, false);
}

static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sender *s = arg;
	/* Only while idle: a batch in flight or a retry pending says enough. */
	if (sender__idle(s))
		send_more(s, true);
}

bool sender__idle(const struct sender *s)
{
	return s->n_posts == 0 && !evtimer_pending(s->retry_ev, NULL);
}

void sender__kick(struct sender *s)
{
	/* From the loop, not from inside the commit hook or a curl callback.
	 * With room in the window, send_more() decides whether to use it. */
	if (!s->failing && s->n_posts < s->pd->opt.inflight && !evtimer_pending(s->retry_ev, NULL))
		event_active(s->kick_ev, EV_TIMEOUT, 0);
}

static void arm_heartbeat(struct sender *s)
{
	struct timeval tv = {s->pd->opt.heartbeat_ms / 1000, (s->pd->opt.heartbeat_ms % 1000) * 1000};
	evtimer_add(s->heartbeat_ev, &tv);
}

/* --- connection_status (seed 000) ------------------------------------------------ */

/* One connection_status on its way, kept to be sent again. */
struct status_msg {
	struct pushd *pd;
	char to[128];
	char body[256];
};

static void status_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct status_msg *m = ud;

	(void)result;
	/* The recovery controller restarted between taking it and committing
	 * what it did (its answer is "outcome unknown"): it goes again, which
	 * is harmless (a status reported twice changes nothing there). */
	if (status == TSYNC_EPEER_RESTARTED &&
	    tsync_node_request(node, m->to, "connection_status", m->body, status_done, m) == 0)
		return;
	if (status < 0 && status != TSYNC_ECANCELED)
		log_warn(&m->pd->log, "connection_status not delivered: %s", tsync_strerror(status));
	free(m);
}

/*
 * Tells every controller with the recovery role (if the site has one) that
 * the collector became unreachable or reachable again, and logs it.
 */
static void post_connection_status(struct pushd *pd, const char *what, uint64_t at_us)
{
	char body[256];
	size_t n = tsync_site_controller_count(pd->site);
	int sent = 0;

	snprintf(body, sizeof(body), "{\"connection_status\":\"%s\",\"time\":%.6f,\"id\":\"%s\"}", what,
	         (double)at_us / 1e6, pd->name);
	log_warn(&pd->log, "connection_status %s at %.3f (collector %s)", what, (double)at_us / 1e6,
	         pd->sender.url);
	for (size_t i = 0; i < n; i++) {
		tsync_controller_info ci;
		bool recovery = false;

		if (tsync_site_controller(pd->site, i, &ci) < 0 || strcmp(ci.name, pd->name) == 0)
			continue;
		for (size_t k = 0; k < ci.n_roles; k++)
			recovery |= strcmp(ci.roles[k], "recovery") == 0;
		if (!recovery)
			continue;
		struct status_msg *m = calloc(1, sizeof(*m));
		int r = m ? 0 : -ENOMEM;
		if (m) {
			m->pd = pd;
			snprintf(m->to, sizeof(m->to), "%s", ci.name);
			snprintf(m->body, sizeof(m->body), "%s", body);
			r = tsync_node_request(pd->node, ci.name, "connection_status", body, status_done, m);
		}
		if (r < 0) {
			free(m);
			log_warn(&pd->log, "connection_status to %s: %s", ci.name, tsync_strerror(r));
		} else {
			sent++;
		}
	}
	if (sent == 0)
		log_debug(&pd->log, "no controller with the recovery role: connection_status only logged");
}

/* --- the batch ---------------------------------------------------------------------- */

/*
 * The body is written as the journal is read, without a tree: the common
 * item - a measurement whose strings are printable ASCII and whose value is
 * finite - is printed here; any other (recovery_gap, cumul, a string with
 * other bytes, NaN) goes through entry_json() and jansson, which know how to
 * carry it. The profile of a backlog's drain had jansson's tree, its dump
 * and its frees at two thirds of pushd's work per measurement.
 */
struct build {
	struct buf body;
	uint64_t first, last;
	size_t count;
	int err;
};

/*
 * A string JSON cannot carry (not UTF-8) travels as its bytes in hex inside an
 * object, which the collector refuses (and quarantines) as a bad value: the
 * batch stays valid JSON and nothing is stuck behind it.
 */
static json_t *string_json(const char *str)
{
	json_t *j = json_string(str);
	size_t n = strlen(str);
	char *hex;

	if (j)
		return j;
	hex = malloc(2 * n + 1);
	if (!hex)
		return NULL;
	for (size_t i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", (unsigned char)str[i]);
	j = json_pack("{s:s}", "not_utf8_hex", hex);
	free(hex);
	return j;
}

static json_t *value_json(const tsync_value *v)
{
	char text[64];

	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return json_boolean(v->u.b);
	case TSYNC_TYPE_INT:
		return json_integer((json_int_t)v->u.i);
	case TSYNC_TYPE_FLOAT:
		if (isfinite(v->u.f))
			return json_real(v->u.f);
		/* JSON has no NaN: send it as text and let the collector refuse it. */
		snprintf(text, sizeof(text), "%g", v->u.f);
		return json_string(text);
	case TSYNC_TYPE_STRING:
		return string_json(v->u.s);
	default:
		return json_null();
	}
}

static const char *const via_names[] = {
    [JOURNAL_VIA_LIVE] = NULL, [JOURNAL_VIA_RECOVERY] = "recovery", [JOURNAL_VIA_IMPORT] = "import"};

/* Adds the members of `x` (consumed) to `m`. */
static int merge(json_t *m, json_t *x)
{
	int r = x ? json_object_update(m, x) : -1;

	json_decref(x);
	return r;
}

/* One item of the wire format (see the top); NULL without memory. */
static json_t *entry_json(const struct journal_entry *e)
{
	json_t *m = json_pack("{s:I}", "seq", (json_int_t)e->seq);
	json_t *cumul;
	int r = m ? 0 : -1;

	if (r == 0 && e->via != JOURNAL_VIA_LIVE)
		r = json_object_set_new(m, "source", json_string(via_names[e->via]));
	switch (e->kind) {
	case JOURNAL_RECOVERY_GAP:
		if (r == 0)
			r = merge(m, json_pack("{s:s,s:o,s:I,s:I}", "kind", "recovery_gap", "owner",
			                       string_json(e->owner), "from", (json_int_t)e->from_us, "to",
			                       (json_int_t)e->to_us));
		break;
	case JOURNAL_CUMUL:
		/* Not JSON after all (it was when journaled): the collector quarantines the text. */
		cumul = json_loads(e->cumul, 0, NULL);
		if (r == 0)
			r = merge(m, json_pack("{s:s,s:o,s:o,s:s,s:o}", "kind", "cumul", "owner",
			                       string_json(e->owner), "thing", string_json(e->thing), "day",
			                       e->day, "cumul", cumul ? cumul : string_json(e->cumul)));
		break;
	default:
		if (r == 0)
			r = merge(m, json_pack("{s:o,s:o,s:I,s:I,s:I}", "thing", string_json(e->thing),
			                       "value", value_json(&e->value), "time", (json_int_t)e->time_us,
			                       "owner_boot", (json_int_t)e->owner_boot, "version",
			                       (json_int_t)e->version));
		break;
	}
	if (r < 0) {
		json_decref(m);
		return NULL;
	}
	return m;
}

static bool plain_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			return false;
	return true;
}

/* A printable ASCII string as JSON: only the quote and the backslash need escaping. */
static int put_str(struct buf *b, const char *s)
{
	int r = buf__append(b, "\"", 1);

	while (r == 0 && *s) {
		size_t n = strcspn(s, "\"\\");
		r = buf__append(b, s, n);
		s += n;
		if (r == 0 && *s) {
			char esc[2] = {'\\', *s++};
			r = buf__append(b, esc, 2);
		}
	}
	return r == 0 ? buf__append(b, "\"", 1) : r;
}

/* A finite double as jansson writes it (%.17g, ".0" when it would read back as an integer). */
static int put_real(struct buf *b, double f)
{
	char text[40];
	int n = snprintf(text, sizeof(text), "%.17g", f);

	if (n < 0 || (size_t)n >= sizeof(text) - 2)
		return -EINVAL;
	if (!strpbrk(text, ".e")) {
		memcpy(text + n, ".0", 3);
		n += 2;
	}
	return buf__append(b, text, (size_t)n);
}

static bool plain_entry(const struct journal_entry *e)
{
	if (e->kind != JOURNAL_MEASUREMENT || !plain_ascii(e->thing))
		return false;
	switch (e->value.type) {
	case TSYNC_TYPE_BOOL:
	case TSYNC_TYPE_INT:
		return true;
	case TSYNC_TYPE_FLOAT:
		return isfinite(e->value.u.f);
	case TSYNC_TYPE_STRING:
		return plain_ascii(e->value.u.s);
	default:
		return false;
	}
}

/* A literal, then a decimal integer (no printf: this runs for every item). */
static int put_int(struct buf *b, const char *lit, int64_t x)
{
	int r = buf__append(b, lit, strlen(lit));

	return r == 0 ? buf__append_i64(b, x) : r;
}

static int put_plain(struct buf *b, const struct journal_entry *e)
{
	const tsync_value *v = &e->value;
	int r = put_int(b, "{\"seq\":", (int64_t)e->seq);

	if (r == 0 && e->via != JOURNAL_VIA_LIVE && (r = buf__append(b, ",\"source\":\"", 11)) == 0 &&
	    (r = buf__append(b, via_names[e->via], strlen(via_names[e->via]))) == 0)
		r = buf__append(b, "\"", 1);
	if (r == 0)
		r = buf__append(b, ",\"thing\":", 9);
	if (r == 0)
		r = put_str(b, e->thing);
	if (r == 0) {
		if (v->type == TSYNC_TYPE_BOOL)
			r = v->u.b ? buf__append(b, ",\"value\":true", 13) : buf__append(b, ",\"value\":false", 14);
		else if (v->type == TSYNC_TYPE_INT)
			r = put_int(b, ",\"value\":", (int64_t)v->u.i);
		else if ((r = buf__append(b, ",\"value\":", 9)) == 0)
			r = v->type == TSYNC_TYPE_FLOAT ? put_real(b, v->u.f) : put_str(b, v->u.s);
	}
	if (r == 0)
		r = put_int(b, ",\"time\":", e->time_us);
	if (r == 0)
		r = put_int(b, ",\"owner_boot\":", (int64_t)e->owner_boot);
	if (r == 0)
		r = put_int(b, ",\"version\":", (int64_t)e->version);
	return r == 0 ? buf__append(b, "}", 1) : r;
}

static int add_entry(void *ud, const struct journal_entry *e)
{
	struct build *b = ud;
	int r = b->count > 0 ? buf__append(&b->body, ",", 1) : 0;

	if (r == 0 && plain_entry(e)) {
		r = put_plain(&b->body, e);
	} else if (r == 0) {
		json_t *m = entry_json(e);
		char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
		r = text ? buf__append(&b->body, text, strlen(text)) : -ENOMEM;
		free(text);
		json_decref(m);
	}
	if (r < 0) {
		b->err = r;
		return 1;
	}
	if (b->count == 0)
		b->first = e->seq;
	b->last = e->seq;
	b->count++;
	return 0;
}

/* The next backoff: capped exponential, with "equal jitter" (half fixed, half
 * random) so that many Pis that lost the collector together do not return in step. */
static void next_backoff(struct sender *s)
{
	struct pushd *pd = s->pd;

	s->backoff_ms = (uint32_t)backoff__next_ms(&s->prng, pd->opt.retry_min_ms, pd->opt.retry_max_ms,
	                                           s->failures_in_row);
}

static void schedule_retry(struct sender *s)
{
	struct timeval tv = {(time_t)(s->backoff_ms / 1000), (suseconds_t)((s->backoff_ms % 1000) * 1000)};
	evtimer_add(s->retry_ev, &tv);
}

/*
 * A POST failed. The first failure while POSTs are in flight stops new ones
 * (the episode); the others in flight are only counted: they fail alike.
 */
static void failed(struct sender *s, const struct sender_post *p, int status, const char *why)
{
	struct pushd *pd = s->pd;

	s->posts_failed++;
	if (s->failing)
		return;
	s->failing = true;
	s->failures_in_row++;
	snprintf(s->last_error, sizeof(s->last_error), "%s", why);
	if (status == 0 && !s->disconnected) {
		s->disconnected = true;
		s->disconnected_at_us = util__realtime_us();
		post_connection_status(pd, "disconnect", s->disconnected_at_us);
	}
	next_backoff(s);
	/* The first failure and then every tenth: one line per event, not a flood. */
	if (s->failures_in_row == 1 || s->failures_in_row % 10 == 0)
		log_warn(&pd->log,
		         "push of %zu measurement(s) [%" PRIu64 "..%" PRIu64 "] failed (%u in a row): %s; "
		         "retry in %u ms",
		         p->count, p->first, p->last, s->failures_in_row, why, s->backoff_ms);
}

/* Logs the items the collector refused (they are quarantined there). */
static void log_refused(struct sender *s, json_t *resp)
{
	json_t *rej = json_object_get(resp, "rejected");
	size_t i;
	json_t *it;

	json_array_foreach(rej, i, it)
	{
		const char *field = json_string_value(json_object_get(it, "field"));
		const char *error = json_string_value(json_object_get(it, "error"));

		s->measurements_refused++;
		if (i < 20)
			log_warn(&s->pd->log, "err_push_refused seq %" JSON_INTEGER_FORMAT " field %s: %s",
			         json_integer_value(json_object_get(it, "seq")), field ? field : "?",
			         error ? error : "?");
	}
	if (json_array_size(rej) > 20)
		log_warn(&s->pd->log, "... and %zu more refused", json_array_size(rej) - 20);
}

/*
 * Whether the answer to `p` says its batch is settled; else what to do was
 * recorded (failed(), or a smaller batch at once for 413).
 */
static bool answer_settles(struct sender *s, struct sender_post *p, int status, const char *error,
                           const char *body, size_t len)
{
	struct pushd *pd = s->pd;
	json_t *resp = NULL;
	char why[512];

	if (error) {
		failed(s, p, 0, error);
		return false;
	}
	/* The collector answered: it is reachable, whatever it said. */
	if (s->disconnected) {
		s->disconnected = false;
		post_connection_status(pd, "reconnect", util__realtime_us());
	}
	if (status == 413 && p->count > 1) {
		/* Over the collector's limit: smaller batches, at once. */
		if (s->batch > p->count / 2) {
			s->batch = p->count / 2;
			log_warn(&pd->log, "collector says batch too large: batches of %zu now", s->batch);
		}
		s->failing = true;
		s->again_now = true;
		return false;
	}
	if (status == 409) {
		/* Our stream is not the collector's: kept, retried, said loudly
		 * (failed() logs the first and every tenth). */
		resp = json_loadb(body, len, 0, NULL);
		snprintf(why, sizeof(why), "HTTP 409: %.400s",
		         json_string_value(json_object_get(resp, "error")) ? json_string_value(json_object_get(resp, "error"))
		                                                           : body);
		json_decref(resp);
		s->stream_refused = true;
		failed(s, p, status, why);
		return false;
	}
	if (status != 200 && status != 422) {
		snprintf(why, sizeof(why), "HTTP %d: %.120s", status, body);
		failed(s, p, status, why);
		return false;
	}
	/*
	 * Check that the answer is about this batch and says it is settled
	 * (committed in the collector's database), so that a proxy or another
	 * service answering 200 cannot make us trim what was never stored.
	 */
	resp = json_loadb(body, len, 0, NULL);
	if (!resp || !json_is_true(json_object_get(resp, "settled")) ||
	    (p->count > 0 && (uint64_t)json_integer_value(json_object_get(resp, "through")) != p->last)) {
		snprintf(why, sizeof(why), "HTTP %d without a settled answer for [..%" PRIu64 "]: %.100s",
		         status, p->last, body);
		json_decref(resp);
		failed(s, p, status, why);
		return false;
	}
	if (status == 422)
		log_refused(s, resp);
	if (s->stream_refused) {
		log_info(&pd->log, "the collector takes stream %s again", journal__stream_id(pd->journal));
		s->stream_refused = false;
	}
	json_decref(resp);
	s->posts_ok++;
	s->failures_in_row = 0;
	s->backoff_ms = 0;
	s->last_error[0] = '\0';
	return true;
}

/* Moves the cursor over the settled prefix of the ring: one journal commit for all of it. */
static void advance(struct sender *s)
{
	struct pushd *pd = s->pd;
	uint64_t first = 0, through = 0;
	size_t count = 0;
	int r;

	while (s->n_posts > 0 && s->post[s->head].settled) {
		const struct sender_post *p = &s->post[s->head];
		if (p->count > 0) {
			if (count == 0)
				first = p->first;
			through = p->last;
			count += p->count;
		}
		s->head = (s->head + 1) % SENDER_MAX_INFLIGHT;
		s->n_posts--;
	}
	if (count == 0)
		return;
	r = journal__ack(pd->journal, through);
	if (r < 0) {
		/* The cursor stays: the batches go again and the collector dedups them. */
		log_error(&pd->log, "journal: cannot move the cursor to %" PRIu64 ": %s", through,
		          tsync_strerror(r));
		s->failing = true;
		s->again_now = true;
		return;
	}
	s->measurements_sent += count;
	log_debug(&pd->log, "pushed [%" PRIu64 "..%" PRIu64 "]", first, through);
	if (s->batch < pd->opt.batch_max)
		s->batch = s->batch * 2 < pd->opt.batch_max ? s->batch * 2 : pd->opt.batch_max;
	/* Room in the journal: a refused CSV chunk may go on. */
	for (size_t i = 0; i < pd->n_csv; i++)
		if (pd->csv[i].blocked)
			csv__resume(&pd->csv[i]);
}

static void done_cb(void *ud, int status, const char *error, const char *body, size_t len)
{
	struct sender_post *p = ud;
	struct sender *s = p->s;
	struct pushd *pd = s->pd;

	p->returned = true;
	s->in_flight--;
	p->settled = answer_settles(s, p, status, error, body, len);
	advance(s);
	if (s->failing && s->in_flight == 0) {
		/* Every POST of the episode answered: start again at the cursor. */
		s->head = 0;
		s->n_posts = 0;
		s->failing = false;
		if (s->again_now) {
			s->again_now = false;
			event_active(s->kick_ev, EV_TIMEOUT, 0);
		} else {
			schedule_retry(s);
		}
	} else if (!s->failing) {
		arm_heartbeat(s);
		send_more(s, false);
	}
	pushd__check_done(pd);
}

/* Builds the batch after s->sent_through and POSTs it. 0 or a negative errno. */
static int post_batch(struct sender *s)
{
	struct pushd *pd = s->pd;
	struct sender_post *p = &s->post[(s->head + s->n_posts) % SENDER_MAX_INFLIGHT];
	struct build b = {0};
	const char *body;
	size_t len;
	struct httpd_sig_headers sig;
	char h_source[128];
	const char *headers[8];
	int r;

	/* The envelope around the items; the names are site.conf's (checked names, ASCII). */
	r = buf__appendf(&b.body, "{\"source\":");
	if (r == 0)
		r = put_str(&b.body, pd->name);
	if (r == 0)
		r = buf__appendf(&b.body, ",\"stream\":\"%s\",\"boot\":%" PRIu64 ",\"measurements\":[",
		                 journal__stream_id(pd->journal), (uint64_t)tsync_node_boot(pd->node));
	if (r == 0)
		r = journal__read(pd->journal, s->sent_through, s->batch, add_entry, &b);
	if (r == 0)
		r = b.err;
	if (r == 0)
		r = buf__append(&b.body, "]}", 2);
	if (r < 0)
		goto leave;
	body = b.body.data;
	len = b.body.len;
	/* Signed for the site's collector service, this URL's path, now. */
	r = httpd__sign(pd->site, HTTPD_COLLECTOR_NAME, "POST", s->target, body, len, &sig);
	if (r < 0)
		goto leave;
	snprintf(h_source, sizeof(h_source), "X-Thingsync-Source: %s", pd->name);
	headers[0] = "Content-Type: application/json";
	headers[1] = h_source;
	headers[2] = sig.to;
	headers[3] = sig.time;
	headers[4] = sig.nonce;
	headers[5] = sig.body;
	headers[6] = sig.sig;
	headers[7] = NULL;
	*p = (struct sender_post){.s = s, .first = b.first, .last = b.last, .count = b.count};
	r = curlev__post(pd->http, s->url, headers, body, len, pd->opt.timeout_ms, pd->opt.cacert, done_cb,
	                 p);
	if (r < 0)
		goto leave;
	s->n_posts++;
	s->in_flight++;
	if (b.count > 0)
		s->sent_through = b.last;
leave:
	buf__free(&b.body);
	return r;
}

/*
 * Fills the window. A POST goes when the window has room and there is
 * something to send; a second and later one only with a whole batch unsent,
 * so a slow trickle is sent as one POST per answer, not as many small ones.
 */
static void send_more(struct sender *s, bool allow_empty)
{
	struct pushd *pd = s->pd;
	struct journal_stats st;
	int r;

	if (s->failing || evtimer_pending(s->retry_ev, NULL))
		return;
	while (s->n_posts < pd->opt.inflight) {
		uint64_t unsent;

		journal__stats(pd->journal, &st);
		if (s->n_posts == 0)
			s->sent_through = st.cursor;
		unsent = st.last_seq > s->sent_through ? st.last_seq - s->sent_through : 0;
		if (unsent == 0 && !(allow_empty && s->n_posts == 0))
			return;
		if (s->n_posts > 0 && unsent < s->batch)
			return;
		r = post_batch(s);
		if (r < 0) {
			/* Memory or the journal: try again later, like any failure. */
			log_error(&pd->log, "cannot build a batch: %s", tsync_strerror(r));
			s->failures_in_row++;
			next_backoff(s);
			if (s->n_posts == 0)
				schedule_retry(s);
			else
				s->failing = true;
			return;
		}
		allow_empty = false;
	}
}

/* The request target of a URL (path and query), as the collector sees it. */
static char *target_of(const char *url)
{
	struct evhttp_uri *u = evhttp_uri_parse(url);
	const char *path = u ? evhttp_uri_get_path(u) : NULL, *query = u ? evhttp_uri_get_query(u) : NULL;
	char *t = NULL;

	if (asprintf(&t, "%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "") < 0)
		t = NULL;
	if (u)
		evhttp_uri_free(u);
	return t;
}

int sender__init(struct sender *s, struct pushd *pd, const char *url)
{
	memset(s, 0, sizeof(*s));
	s->pd = pd;
	s->batch = pd->opt.batch_max;
	if (pd->opt.inflight < 1 || pd->opt.inflight > SENDER_MAX_INFLIGHT)
		return -EINVAL;
	prng__seed(&s->prng, util__realtime_us() ^ (uint64_t)(uintptr_t)s);
	s->url = util__strdup(url);
	s->target = target_of(url);
	s->retry_ev = evtimer_new(pd->base, retry_cb, s);
	s->heartbeat_ev = evtimer_new(pd->base, heartbeat_cb, s);
	s->kick_ev = event_new(pd->base, -1, 0, kick_cb, s);
	if (!s->url || !s->target || !s->retry_ev || !s->heartbeat_ev || !s->kick_ev) {
		sender__free(s);
		return -ENOMEM;
	}
	/* The first push goes at once: it tells the collector we are here. */
	event_active(s->heartbeat_ev, EV_TIMEOUT, 0);
	return 0;
}

void sender__free(struct sender *s)
{
	if (s->retry_ev)
		event_free(s->retry_ev);
	if (s->heartbeat_ev)
		event_free(s->heartbeat_ev);
	if (s->kick_ev)
		event_free(s->kick_ev);
	free(s->url);
	free(s->target);
	memset(s, 0, sizeof(*s));
}
