/*
 * httpd: the daemons' HTTP server (see httpd.h for the rules).
 *
 * libevent 2.1's evhttp parses requests but hands one over only once its
 * body is read, and it has no connection cap. The rules that must act
 * earlier are built around it with its public hooks:
 *
 *  - Each connection's bufferevent is made here (evhttp_set_bevcb), which
 *    counts the connection; the listener pauses at the cap. A reference
 *    held on the bufferevent tells when evhttp has freed it (its callbacks
 *    are cleared), so the count stays exact whatever path closed it.
 *  - A callback on the bufferevent's input buffer sees every byte before
 *    evhttp parses it. It follows request heads and bodies (a shadow parse
 *    of the request line, the headers that matter and Content-Length), and
 *    when a head is complete it applies the rules that need no body: route,
 *    method, cross-site, signature (the body's hash is signed in a header).
 *    The verdict becomes the connection's body cap (0 for a refusal), which
 *    evhttp enforces before it reads the body. The same pure checks run
 *    again on evhttp's own parse before the handler is called, so a
 *    disagreement between the two parsers can only refuse more.
 *  - The same follower starts a deadline at a request's first byte and stops
 *    it when the request is whole: a client that drips bytes is cut off.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <sodium.h>

#include "httpd.h"
#include "util/util.h"

#define MAX_LINE        8192
#define MAX_TARGET      2048
#define MAX_FIELD       256
#define REPLAY_CAP      4096
#define EMFILE_PAUSE_MS 500
#define SWEEP_MS        1000
/* A refused request's body is not read. One this small still is, so that
 * the handler phase answers it in words (401 and why) rather than evhttp's
 * bare 413: bounded by the connection cap, it costs little. */
#define REFUSED_BODY       0
#define REFUSED_BODY_SMALL 4096

enum verdict_kind {
	V_OK = 0,
	V_NOT_FOUND,
	V_METHOD,
	V_CROSS_SITE,
	V_UNAUTHORIZED,
	V_TOO_LARGE,
	V_BAD,
	V_BUSY,
	V_KINDS,
};

/* What the rules look at: the same fields from the shadow parse and from evhttp's. */
struct head {
	char method[8];
	char target[MAX_TARGET];
	long long content_length; /* -1: none */
	bool chunked;
	bool dup; /* a header that matters came twice */
	char content_type[MAX_FIELD], origin[MAX_FIELD], host[MAX_FIELD];
	char to[MAX_FIELD], time[32], nonce[80], body_sha[80], sig[80];
	bool has_thingsync_header;
};

struct verdict {
	enum verdict_kind kind;
	int status;
	const char *error;
	char message[200];
	size_t max_body;
	bool signed_ok; /* carried a valid signature */
};

struct replay {
	uint8_t tag[16];
	int64_t time_s;
};

struct hconn {
	struct httpd *s;
	struct hconn *next;
	struct bufferevent *bev; /* referenced until we let go */
	struct evhttp_connection *evcon;
	struct evbuffer_cb_entry *watch;
	struct event *deadline;
	struct event *adopt;
	/* The shadow parse. */
	enum { P_START, P_HEAD, P_BODY, P_LOST } state;
	char line[MAX_LINE];
	size_t line_len;
	bool first_line_done;
	struct head head;
	uint64_t body_left;
	/* Signatures the head phase accepted, for the requests evhttp hands over
	 * (more than one when a client pipelines). */
	char accepted_sig[4][80];
	unsigned next_accepted;
	void (*on_close)(void *arg);
	void *on_close_arg;
};

struct httpd {
	struct event_base *base;
	struct evhttp *ev;
	struct evconnlistener *lis;
	struct event *resume, *sweep;
	const struct httpd_route *routes;
	httpd_handler_fn handler;
	httpd_refused_fn refused;
	void *arg;
	const tsync_site *site;
	char *name;
	bool require_signature;
	size_t max_conns;
	unsigned timeout_s;
	tsync_log_fn log;
	void *log_ud;
	uint16_t port;

	struct hconn *conns;
	size_t n_conns;
	bool paused_cap, paused_emfile;
	struct replay *replays;
	size_t n_replays;
	/* Refusal lines: per (client address, kind), the first in full, then a
	 * count per interval (lib/util's ratelog, as the mesh's rejections). */
	struct ratelog rl;
	struct httpd_stats st;
	struct httpd *next_server;
};

/* The listener's error callback gets evhttp's pointer, not ours. */
static struct httpd *servers;

static void path_of(const char *target, char *out, size_t outlen);

/* --- logging -------------------------------------------------------------------------------- */

static void slog(const struct httpd *s, tsync_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void slog(const struct httpd *s, tsync_log_level level, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (!s->log)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	s->log(s->log_ud, level, line);
}

static int64_t now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Text from a client, made safe for a log line: no control characters, bounded. */
static void safe_text(char *out, size_t outlen, const char *in)
{
	size_t o = 0;

	for (; in && *in && o + 5 < outlen; in++) {
		unsigned char ch = (unsigned char)*in;
		if (ch < 0x20 || ch == 0x7f)
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
}

static const char *const kind_names[] = {"ok",           "not_found", "method", "cross_site",
                                         "unauthorized", "too_large", "bad",    "busy",
                                         "slow",         "accept",    "accept"};

static void refusal_summary(void *ud, const char *key, int reason, uint64_t count, uint64_t elapsed_us)
{
	const struct httpd *s = ud;

	slog(s, TSYNC_LOG_WARN,
	     "http: %" PRIu64 " more %s from %s in the last %" PRIu64 " s (not logged; counted)", count,
	     reason >= 0 && (size_t)reason < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[reason]
	                                                                                : "",
	     key ? key : "other clients", elapsed_us / 1000000u);
}

static void log_refusal(struct httpd *s, const struct verdict *v, const char *peer, const struct head *h)
{
	char target[160], path[MAX_TARGET], who[80], *colon;

	if (s->refused) {
		path_of(h->target, path, sizeof(path));
		s->refused(s->arg, path, v->status, v->error);
	}
	/* Keyed by the client's address, not its port: a client that opens a
	 * new connection per try is one client. */
	snprintf(who, sizeof(who), "%s", peer);
	if ((colon = strrchr(who, ':')))
		*colon = '\0';
	if (!ratelog__hit(&s->rl, who, (int)v->kind, mono_us()))
		return;
	safe_text(target, sizeof(target), h->target);
	slog(s, TSYNC_LOG_WARN, "http: refused %s %s from %s: %d %s: %s", h->method[0] ? h->method : "?",
	     target, peer, v->status, v->error, v->message);
}

/* --- the rules ------------------------------------------------------------------------------ */

static const struct httpd_route *route_of(const struct httpd *s, const char *path)
{
	for (const struct httpd_route *r = s->routes; r && r->path; r++) {
		size_t n = strlen(r->path);
		if (n && r->path[n - 1] == '*') {
			if (!strncmp(path, r->path, n - 1))
				return r;
		} else if (!strcmp(path, r->path)) {
			return r;
		}
	}
	return NULL;
}

/* The path of a request target, without its query (not decoded: route names are plain). */
static void path_of(const char *target, char *out, size_t outlen)
{
	size_t n = strcspn(target, "?#");

	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, target, n);
	out[n] = '\0';
}

/* "http://host:port" (or https) names the same server as the Host header. */
static bool same_origin(const char *origin, const char *host)
{
	const char *o = origin;

	if (!strncasecmp(o, "http://", 7))
		o += 7;
	else if (!strncasecmp(o, "https://", 8))
		o += 8;
	else
		return false;
	return host[0] && !strcasecmp(o, host);
}

static bool is_hex(const char *s, size_t n)
{
	if (strlen(s) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return true;
}

static bool parse_time(const char *t, int64_t *out)
{
	char *end;
	long long v;

	if (!t[0] || t[0] == '-' || t[0] == '+' || (t[0] == '0' && t[1]))
		return false;
	errno = 0;
	v = strtoll(t, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

static void set_verdict(struct verdict *v, enum verdict_kind kind, int status, const char *error,
                        const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void set_verdict(struct verdict *v, enum verdict_kind kind, int status, const char *error,
                        const char *fmt, ...)
{
	va_list ap;

	v->kind = kind;
	v->status = status;
	v->error = error;
	va_start(ap, fmt);
	vsnprintf(v->message, sizeof(v->message), fmt, ap);
	va_end(ap);
	v->max_body = REFUSED_BODY;
}

/*
 * Everything that can be decided from a request's head. Pure: the replay
 * cache is the caller's.
 */
static void judge(const struct httpd *s, const struct head *h, struct verdict *v)
{
	const struct httpd_route *r;
	char path[MAX_TARGET];
	unsigned m;
	bool need_sig, post;
	int64_t t = 0, now;
	int rc;

	memset(v, 0, sizeof(*v));
	post = !strcmp(h->method, "POST");
	m = post ? HTTPD_POST : !strcmp(h->method, "GET") ? HTTPD_GET : 0;
	path_of(h->target, path, sizeof(path));
	if (h->dup) {
		set_verdict(v, V_BAD, 400, "bad_request", "a header that matters appears twice");
		return;
	}
	if (h->origin[0] && !same_origin(h->origin, h->host)) {
		set_verdict(v, V_CROSS_SITE, 403, "cross_origin",
		            "requests from another origin are refused (no CORS)");
		return;
	}
	if (post && !h->has_thingsync_header &&
	    (strncasecmp(h->content_type, "application/json", 16) != 0 ||
	     (h->content_type[16] && h->content_type[16] != ';' && h->content_type[16] != ' '))) {
		set_verdict(
		    v, V_CROSS_SITE, 415, "content_type",
		    "a POST must have Content-Type: application/json (or carry an X-Thingsync- header)");
		return;
	}
	r = route_of(s, path);
	need_sig = (s->require_signature && !(r && r->open)) || (r && r->signed_only);
	if (need_sig || h->sig[0]) {
		if (!h->to[0] || !h->time[0] || !h->nonce[0] || !h->body_sha[0] || !h->sig[0]) {
			set_verdict(
			    v, V_UNAUTHORIZED, 401, "unauthorized",
			    "this API needs a signed request (X-Thingsync-To, -Time, -Nonce, -Body-SHA256, "
			    "-Signature; see thingsd(8))");
			return;
		}
		if (!s->site || !tsync_site_has_key(s->site)) {
			set_verdict(v, V_UNAUTHORIZED, 401, "no_key", "this server's site has no key_file");
			return;
		}
		if (strcmp(h->to, s->name) != 0) {
			set_verdict(v, V_UNAUTHORIZED, 401, "wrong_target",
			            "signed for another server (this is %s)", s->name);
			return;
		}
		now = now_s();
		if (!parse_time(h->time, &t) || t < now - TSYNC_HTTP_WINDOW_S ||
		    t > now + TSYNC_HTTP_WINDOW_S) {
			set_verdict(v, V_UNAUTHORIZED, 401, "stale",
			            "X-Thingsync-Time must be within %d s of this server's clock (%" PRId64
			            ")",
			            TSYNC_HTTP_WINDOW_S, now);
			return;
		}
		if (!is_hex(h->body_sha, TSYNC_HEX_BYTES)) {
			set_verdict(v, V_UNAUTHORIZED, 401, "bad_signature",
			            "X-Thingsync-Body-SHA256 is not 64 hex");
			return;
		}
		rc = tsync_site_verify_request(s->site, h->to, h->method, h->target, t, h->nonce, h->body_sha,
		                               h->sig);
		if (rc != 0) {
			set_verdict(v, V_UNAUTHORIZED, 401, "bad_signature", "the signature does not match");
			return;
		}
		v->signed_ok = true;
	}
	if (!r) {
		set_verdict(v, V_NOT_FOUND, 404, "not_found", "no such path");
		return;
	}
	if (!(r->methods & m)) {
		set_verdict(v, V_METHOD, 405, "method", "%s is not allowed here", h->method);
		return;
	}
	if (h->chunked ||
	    (h->content_length > 0 && (!post || (unsigned long long)h->content_length > r->max_body))) {
		set_verdict(v, V_TOO_LARGE, 413, "too_large", "at most %zu bytes of body here%s",
		            post ? r->max_body : (size_t)0, h->chunked ? ", with a Content-Length" : "");
		return;
	}
	v->kind = V_OK;
	v->max_body = post ? r->max_body : 0;
}

/* --- the replay cache ----------------------------------------------------------------------- */

static void tag_of(const char *sig, uint8_t tag[16])
{
	for (int i = 0; i < 16; i++) {
		unsigned hi = 0, lo = 0;
		char a = sig[2 * i], b = sig[2 * i + 1];
		hi = (unsigned)(a <= '9' ? a - '0' : (a | 0x20) - 'a' + 10);
		lo = (unsigned)(b <= '9' ? b - '0' : (b | 0x20) - 'a' + 10);
		tag[i] = (uint8_t)(hi << 4 | lo);
	}
}

static bool replay_seen(const struct httpd *s, const uint8_t tag[16])
{
	for (size_t i = 0; i < s->n_replays; i++)
		if (!memcmp(s->replays[i].tag, tag, 16))
			return true;
	return false;
}

/* 0, or -ENOBUFS when every slot holds a signature still inside its window. */
static int replay_add(struct httpd *s, const uint8_t tag[16], int64_t t)
{
	int64_t oldest_ok = now_s() - TSYNC_HTTP_WINDOW_S - 1;
	size_t o = 0;

	if (s->n_replays == REPLAY_CAP) {
		/* A signature whose time has left the window is refused as stale anyway. */
		for (size_t i = 0; i < s->n_replays; i++)
			if (s->replays[i].time_s >= oldest_ok)
				s->replays[o++] = s->replays[i];
		s->n_replays = o;
		if (s->n_replays == REPLAY_CAP)
			return -ENOBUFS;
	}
	memcpy(s->replays[s->n_replays].tag, tag, 16);
	s->replays[s->n_replays].time_s = t;
	s->n_replays++;
	return 0;
}

/*
 * The replay rule for a request whose signature is valid. The head phase and
 * the handler phase both see the request; the first to see it records it.
 */
static void check_replay(struct httpd *s, struct hconn *c, const struct head *h, struct verdict *v,
                         bool head_phase)
{
	uint8_t tag[16];
	int64_t t = 0;

	if (!v->signed_ok)
		return;
	tag_of(h->sig, tag);
	parse_time(h->time, &t);
	for (size_t i = 0; !head_phase && c && i < 4; i++) {
		if (!strcmp(c->accepted_sig[i], h->sig)) {
			c->accepted_sig[i][0] = '\0';
			return;
		}
	}
	if (replay_seen(s, tag)) {
		set_verdict(v, V_UNAUTHORIZED, 401, "replayed", "this signature was used already");
		return;
	}
	if (replay_add(s, tag, t) < 0) {
		set_verdict(v, V_BUSY, 503, "busy", "too many signed requests in the last %d s",
		            2 * TSYNC_HTTP_WINDOW_S);
		return;
	}
	if (head_phase && c) {
		snprintf(c->accepted_sig[c->next_accepted], sizeof(c->accepted_sig[0]), "%s", h->sig);
		c->next_accepted = (c->next_accepted + 1) % 4;
	}
}

static void count_refusal(struct httpd *s, const struct verdict *v)
{
	switch (v->kind) {
	case V_UNAUTHORIZED:
		s->st.unauthorized++;
		break;
	case V_CROSS_SITE:
		s->st.cross_site++;
		break;
	case V_TOO_LARGE:
		s->st.too_large++;
		break;
	default:
		s->st.refused++;
		break;
	}
}

/* --- connections ---------------------------------------------------------------------------- */

static void listener_update(struct httpd *s)
{
	bool want = !s->paused_emfile && s->n_conns < s->max_conns;

	if (!s->lis)
		return;
	if (want && s->paused_cap) {
		s->paused_cap = false;
		evconnlistener_enable(s->lis);
	} else if (!want && !s->paused_cap && !s->paused_emfile) {
		s->paused_cap = true;
		s->st.accept_paused++;
		evconnlistener_disable(s->lis);
	}
}

static struct hconn *conn_of_evcon(const struct httpd *s, const struct evhttp_connection *evcon)
{
	for (struct hconn *c = s->conns; c; c = c->next)
		if (c->evcon == evcon)
			return c;
	return NULL;
}

/* Lets go of a connection evhttp has closed or is closing. */
static void conn_release(struct hconn *c)
{
	struct httpd *s = c->s;
	struct hconn **pp;

	for (pp = &s->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = c->next;
	s->n_conns--;
	if (c->watch)
		evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->watch);
	if (c->deadline)
		event_free(c->deadline);
	if (c->adopt)
		event_free(c->adopt);
	bufferevent_decref(c->bev);
	free(c);
	listener_update(s);
}

static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	struct hconn *c = arg;
	void (*fn)(void *) = c->on_close;
	void *fn_arg = c->on_close_arg;

	c->on_close = NULL;
	if (fn)
		fn(fn_arg);
	conn_release(c);
}

static bool bev_freed(struct bufferevent *bev)
{
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *arg;

	bufferevent_getcb(bev, &rd, &wr, &ev, &arg);
	return !rd && !wr && !ev;
}

/* After evhttp made the connection around our bufferevent: hook its close. */
static void adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hconn *c = arg;
	bufferevent_data_cb rd, wr;
	bufferevent_event_cb ev;
	void *cbarg;

	if (c->evcon)
		return; /* adopted already, by the first bytes */
	if (bev_freed(c->bev)) {
		conn_release(c);
		return;
	}
	bufferevent_getcb(c->bev, &rd, &wr, &ev, &cbarg);
	if (cbarg && evhttp_connection_get_bufferevent(cbarg) == c->bev) {
		c->evcon = cbarg;
		evhttp_connection_set_closecb(c->evcon, conn_closed_cb, c);
	}
}

/* Backstop: connections evhttp freed without calling the close callback. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd *s = arg;
	struct hconn *c = s->conns, *next;

	ratelog__tick(&s->rl, mono_us());
	for (; c; c = next) {
		next = c->next;
		if (bev_freed(c->bev))
			conn_release(c);
	}
}

static void conn_arm_deadline(struct hconn *c)
{
	struct timeval tv = {(time_t)c->s->timeout_s, 0};

	evtimer_add(c->deadline, &tv);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hconn *c = arg;
	struct httpd *s = c->s;

	s->st.timeouts++;
	if (ratelog__hit(&s->rl, "slow clients", V_KINDS, mono_us()))
		slog(s, TSYNC_LOG_WARN, "http: a client took more than %u s to send its request: closed",
		     s->timeout_s);
	if (c->evcon)
		evhttp_connection_free(c->evcon); /* runs conn_closed_cb */
	else if (!bev_freed(c->bev))
		bufferevent_disable(c->bev, EV_READ | EV_WRITE);
}

/* --- the shadow parse ----------------------------------------------------------------------- */

static void field_copy(char *dst, size_t dstlen, const char *v, bool *dup)
{
	if (dst[0])
		*dup = true;
	snprintf(dst, dstlen, "%s", v);
}

/* Takes one header into `h`, the same way for both parsers. */
static void head_header(struct head *h, const char *name, const char *value)
{
	if (!strncasecmp(name, "X-Thingsync-", 12))
		h->has_thingsync_header = true;
	if (!strcasecmp(name, "Content-Length")) {
		char *end;
		long long n;
		errno = 0;
		n = strtoll(value, &end, 10);
		if (h->content_length >= 0 || errno || *end || n < 0 || !value[0])
			h->dup = true;
		h->content_length = n < 0 ? 0 : n;
	} else if (!strcasecmp(name, "Transfer-Encoding")) {
		h->chunked = true;
	} else if (!strcasecmp(name, "Content-Type")) {
		field_copy(h->content_type, sizeof(h->content_type), value, &h->dup);
	} else if (!strcasecmp(name, "Origin")) {
		field_copy(h->origin, sizeof(h->origin), value, &h->dup);
	} else if (!strcasecmp(name, "Host")) {
		field_copy(h->host, sizeof(h->host), value, &h->dup);
	} else if (!strcasecmp(name, "X-Thingsync-To")) {
		field_copy(h->to, sizeof(h->to), value, &h->dup);
	} else if (!strcasecmp(name, "X-Thingsync-Time")) {
		field_copy(h->time, sizeof(h->time), value, &h->dup);
	} else if (!strcasecmp(name, "X-Thingsync-Nonce")) {
		field_copy(h->nonce, sizeof(h->nonce), value, &h->dup);
	} else if (!strcasecmp(name, "X-Thingsync-Body-SHA256")) {
		field_copy(h->body_sha, sizeof(h->body_sha), value, &h->dup);
	} else if (!strcasecmp(name, "X-Thingsync-Signature")) {
		field_copy(h->sig, sizeof(h->sig), value, &h->dup);
	}
}

static void head_reset(struct head *h)
{
	memset(h, 0, sizeof(*h));
	h->content_length = -1;
}

static void conn_lost(struct hconn *c)
{
	/* Out of step with evhttp (a form we do not follow): no body from now on. */
	c->state = P_LOST;
	if (c->evcon)
		evhttp_connection_set_max_body_size(c->evcon, REFUSED_BODY);
}

static char *peer_of(struct evhttp_connection *evcon, char *buf, size_t len)
{
	char *addr = NULL;
	uint16_t port = 0;

	if (evcon)
		evhttp_connection_get_peer(evcon, &addr, &port);
	snprintf(buf, len, "%s:%u", addr ? addr : "?", port);
	return buf;
}

static void head_done(struct hconn *c)
{
	struct httpd *s = c->s;
	struct verdict v;
	char peer[80];

	judge(s, &c->head, &v);
	if (v.kind == V_OK)
		check_replay(s, c, &c->head, &v, true);
	if (v.kind != V_OK && !c->head.chunked && c->head.content_length > 0 &&
	    c->head.content_length <= REFUSED_BODY_SMALL)
		v.max_body = (size_t)c->head.content_length; /* answered in words by request_cb */
	if (c->evcon)
		evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)v.max_body);
	if (v.kind != V_OK && (c->head.chunked || c->head.content_length > REFUSED_BODY_SMALL)) {
		/* evhttp answers 413 without reading; it is counted and logged here. */
		count_refusal(s, &v);
		log_refusal(s, &v, peer_of(c->evcon, peer, sizeof(peer)), &c->head);
		conn_lost(c); /* the unread body ends the connection */
		return;
	}
	if (c->head.chunked) {
		conn_lost(c);
		return;
	}
	c->body_left = c->head.content_length > 0 ? (uint64_t)c->head.content_length : 0;
	c->state = c->body_left ? P_BODY : P_START;
	if (c->state == P_START)
		event_del(c->deadline);
}

static void head_line(struct hconn *c)
{
	char *line = c->line, *colon, *value, *sp1, *sp2;
	size_t n = c->line_len;

	if (n && line[n - 1] == '\r')
		line[--n] = '\0';
	line[n] = '\0';
	if (!c->first_line_done) {
		if (!n)
			return; /* blank lines between requests */
		sp1 = strchr(line, ' ');
		sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
		if (!sp1 || !sp2 || (size_t)(sp1 - line) >= sizeof(c->head.method) ||
		    (size_t)(sp2 - sp1 - 1) >= sizeof(c->head.target)) {
			conn_lost(c);
			return;
		}
		memcpy(c->head.method, line, (size_t)(sp1 - line));
		memcpy(c->head.target, sp1 + 1, (size_t)(sp2 - sp1 - 1));
		c->first_line_done = true;
		return;
	}
	if (!n) {
		head_done(c);
		return;
	}
	colon = strchr(line, ':');
	if (!colon || line[0] == ' ' || line[0] == '\t') {
		/* No folded headers: evhttp would join them, we would not. */
		conn_lost(c);
		return;
	}
	*colon = '\0';
	value = colon + 1;
	while (*value == ' ' || *value == '\t')
		value++;
	for (char *e = value + strlen(value); e > value && (e[-1] == ' ' || e[-1] == '\t'); e--)
		e[-1] = '\0';
	head_header(&c->head, line, value);
}

static void feed(struct hconn *c, const char *p, size_t n)
{
	while (n && c->state != P_LOST) {
		if (c->state == P_BODY) {
			size_t k = n < c->body_left ? n : (size_t)c->body_left;
			c->body_left -= k;
			p += k;
			n -= k;
			if (!c->body_left) {
				c->state = P_START;
				event_del(c->deadline);
			}
			continue;
		}
		if (c->state == P_START) {
			head_reset(&c->head);
			c->first_line_done = false;
			c->line_len = 0;
			c->state = P_HEAD;
			conn_arm_deadline(c);
		}
		const char *nl = memchr(p, '\n', n);
		size_t k = nl ? (size_t)(nl - p) : n;
		if (c->line_len + k >= sizeof(c->line)) {
			conn_lost(c);
			return;
		}
		memcpy(c->line + c->line_len, p, k);
		c->line_len += k;
		p += k;
		n -= k;
		if (nl) {
			p++;
			n--;
			head_line(c);
			c->line_len = 0;
		}
	}
}

static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hconn *c = arg;
	size_t len = evbuffer_get_length(buf), added = info->n_added, off;
	struct evbuffer_ptr pos;
	char chunk[4096];

	if (!added || c->state == P_LOST)
		return;
	if (!c->evcon)
		adopt_cb(-1, 0, c);
	if (added > len)
		added = len;
	off = len - added;
	while (added) {
		size_t k = added < sizeof(chunk) ? added : sizeof(chunk);
		if (evbuffer_ptr_set(buf, &pos, off, EVBUFFER_PTR_SET) < 0 ||
		    evbuffer_copyout_from(buf, &pos, chunk, k) != (ev_ssize_t)k) {
			conn_lost(c);
			return;
		}
		feed(c, chunk, k);
		off += k;
		added -= k;
	}
}

static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	struct httpd *s = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	struct hconn *c = calloc(1, sizeof(*c));

	if (!bev || !c)
		goto fail;
	c->s = s;
	c->bev = bev;
	c->deadline = evtimer_new(base, deadline_cb, c);
	c->adopt = event_new(base, -1, 0, adopt_cb, c);
	c->watch = evbuffer_add_cb(bufferevent_get_input(bev), input_cb, c);
	if (!c->deadline || !c->adopt || !c->watch)
		goto fail;
	head_reset(&c->head);
	bufferevent_incref(bev);
	c->next = s->conns;
	s->conns = c;
	s->n_conns++;
	event_active(c->adopt, EV_TIMEOUT, 1);
	/* A client that connects and sends nothing has the same deadline. */
	conn_arm_deadline(c);
	listener_update(s);
	return bev;
fail:
	/* evhttp makes a plain bufferevent of its own when we return NULL;
	 * failing to allocate here must not turn into a connection we do not
	 * count, so the listener stops until memory returns. */
	if (c) {
		if (c->deadline)
			event_free(c->deadline);
		if (c->adopt)
			event_free(c->adopt);
		free(c);
	}
	if (bev)
		bufferevent_free(bev);
	return NULL;
}

/* --- accepting ------------------------------------------------------------------------------ */

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd *s = arg;

	s->paused_emfile = false;
	if (!s->paused_cap && s->lis)
		evconnlistener_enable(s->lis);
	listener_update(s);
}

static void accept_error_cb(struct evconnlistener *lis, void *evhttp_ptr)
{
	int err = EVUTIL_SOCKET_ERROR();
	struct httpd *s = servers;
	struct timeval tv = {0, EMFILE_PAUSE_MS * 1000};

	while (s && s->lis != lis)
		s = s->next_server;
	if (!s)
		return;
	if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
		/* The connection stays in the kernel's queue; retrying at once
		 * would spin. Wait for descriptors to come back. */
		s->st.emfile++;
		if (ratelog__hit(&s->rl, "the kernel", V_KINDS + 1, mono_us()))
			slog(s, TSYNC_LOG_ERROR,
			     "http: cannot accept: %s (%zu connections open); pausing %d ms", strerror(err),
			     s->n_conns, EMFILE_PAUSE_MS);
		if (!s->paused_emfile) {
			s->paused_emfile = true;
			if (!s->paused_cap)
				evconnlistener_disable(lis);
			evtimer_add(s->resume, &tv);
		}
		return;
	}
	if (ratelog__hit(&s->rl, "the kernel", V_KINDS + 2, mono_us()))
		slog(s, TSYNC_LOG_WARN, "http: accept: %s", strerror(err));
}

bool httpd__is_loopback(const char *host)
{
	return !host || !strcmp(host, "127.0.0.1") || !strcmp(host, "::1") || !strcmp(host, "localhost") ||
	       !strncmp(host, "127.", 4);
}

int httpd__split_listen(const char *spec, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon = strrchr(spec, ':');
	char *end;
	unsigned long p;

	if (!colon || (size_t)(colon - spec) >= hostlen)
		return -EINVAL;
	p = strtoul(colon + 1, &end, 10);
	if (*end || colon[1] == '\0' || p > 65535)
		return -EINVAL;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	*port = (uint16_t)p;
	return 0;
}

unsigned long httpd__raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? 1UL << 20 : (unsigned long)rl.rlim_cur;
}

/* --- requests ------------------------------------------------------------------------------- */

static void head_from_request(struct evhttp_request *req, struct head *h)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type m = evhttp_request_get_command(req);

	head_reset(h);
	snprintf(h->method, sizeof(h->method), "%s",
	         m == EVHTTP_REQ_GET    ? "GET"
	         : m == EVHTTP_REQ_POST ? "POST"
	                                : "?");
	if (uri && strlen(uri) < sizeof(h->target))
		snprintf(h->target, sizeof(h->target), "%s", uri);
	else
		h->dup = true;
	for (struct evkeyval *kv = in->tqh_first; kv; kv = kv->next.tqe_next)
		head_header(h, kv->key, kv->value);
}

static void request_done_cb(struct evhttp_request *req, void *arg)
{
	struct httpd *s = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct hconn *c = evcon ? conn_of_evcon(s, evcon) : NULL;

	if (c && (c->state == P_START || c->state == P_LOST) && !evtimer_pending(c->deadline, NULL))
		conn_arm_deadline(c);
}

static void request_cb(struct evhttp_request *req, void *arg)
{
	struct httpd *s = arg;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct hconn *c = evcon ? conn_of_evcon(s, evcon) : NULL;
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(body);
	char path[MAX_TARGET], peer[80], sha[TSYNC_HEX_BYTES + 1];
	struct head h;
	struct verdict v;

	if (c) {
		/* Whole: the deadline is over until the answer is sent (a held
		 * request, an event stream may take long), then it counts the
		 * idle time to the next request. */
		event_del(c->deadline);
		evhttp_request_set_on_complete_cb(req, request_done_cb, s);
	}
	head_from_request(req, &h);
	/* evhttp's own parse is what the handler sees; judge it again. */
	judge(s, &h, &v);
	if (v.kind == V_OK && h.content_length < 0 && len)
		set_verdict(&v, V_BAD, 411, "length_required", "a body needs a Content-Length");
	if (v.kind == V_OK && v.signed_ok) {
		tsync_sha256_hex(evbuffer_pullup(body, -1), len, sha);
		if (strcasecmp(sha, h.body_sha) != 0)
			set_verdict(&v, V_UNAUTHORIZED, 401, "bad_body_hash",
			            "the body is not the one X-Thingsync-Body-SHA256 signs");
	}
	if (v.kind == V_OK)
		check_replay(s, c, &h, &v, false);
	if (v.kind != V_OK) {
		count_refusal(s, &v);
		log_refusal(s, &v, peer_of(evcon, peer, sizeof(peer)), &h);
		if (v.kind == V_UNAUTHORIZED)
			evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
			                  "Thingsync-Signature");
		httpd__error(req, v.status, v.error, "%s", v.message);
		return;
	}
	s->st.requests++;
	path_of(h.target, path, sizeof(path));
	s->handler(s->arg, req, path);
}

/* --- life cycle ----------------------------------------------------------------------------- */

static int listen_socket(struct httpd *s, const char *host, uint16_t port)
{
	struct addrinfo hints, *res = NULL;
	char portstr[8];
	int fd, one = 1, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	r = getaddrinfo(host, portstr, &hints, &res);
	if (r != 0 || !res) {
		slog(s, TSYNC_LOG_ERROR, "http: cannot resolve %s: %s", host, gai_strerror(r));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(res);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0) {
		r = -errno;
		slog(s, TSYNC_LOG_ERROR, "http: cannot listen on %s:%u: %s", host, port, strerror(errno));
		close(fd);
		freeaddrinfo(res);
		return r;
	}
	freeaddrinfo(res);
	if (!port) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
			                                      : ((struct sockaddr_in *)&ss)->sin_port);
	}
	s->port = port;
	/* Accepted sockets get close-on-exec too (exec driver, reboot). */
	s->lis =
	    evconnlistener_new(s->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (!s->lis) {
		close(fd);
		return -ENOMEM;
	}
	if (!evhttp_bind_listener(s->ev, s->lis)) {
		evconnlistener_free(s->lis);
		s->lis = NULL;
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(s->lis, accept_error_cb);
	return 0;
}

int httpd__new(const struct httpd_config *cfg, struct httpd **ret)
{
	struct httpd *s;
	struct timeval sweep = {SWEEP_MS / 1000, 0};
	unsigned long nofile;
	size_t fit;
	int r;

	if (!cfg || !cfg->base || !cfg->handler || !cfg->routes || !ret)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = cfg->base;
	s->routes = cfg->routes;
	s->handler = cfg->handler;
	s->refused = cfg->refused;
	s->arg = cfg->arg;
	s->site = cfg->site;
	s->require_signature = cfg->require_signature;
	s->max_conns = cfg->max_connections ? cfg->max_connections : HTTPD_DEFAULT_MAX_CONNECTIONS;
	s->timeout_s = cfg->request_timeout_s ? cfg->request_timeout_s : HTTPD_DEFAULT_REQUEST_TIMEOUT_S;
	s->log = cfg->log;
	s->log_ud = cfg->log_ud;
	s->name = strdup(cfg->name ? cfg->name : "");
	s->replays = calloc(REPLAY_CAP, sizeof(*s->replays));
	if (ratelog__init(&s->rl, RATELOG_KEYS, 0, refusal_summary, s) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	s->ev = evhttp_new(cfg->base);
	s->resume = evtimer_new(cfg->base, resume_cb, s);
	s->sweep = event_new(cfg->base, -1, EV_PERSIST, sweep_cb, s);
	if (!s->name || !s->replays || !s->ev || !s->resume || !s->sweep) {
		r = -ENOMEM;
		goto fail;
	}
	nofile = httpd__raise_nofile();
	fit = nofile > 2 * HTTPD_FD_RESERVE ? nofile - HTTPD_FD_RESERVE : nofile / 2;
	if (s->max_conns > fit) {
		slog(s, TSYNC_LOG_WARN,
		     "http: %zu connections would not leave %d descriptors free (limit %lu): cap %zu",
		     s->max_conns, HTTPD_FD_RESERVE, nofile, fit);
		s->max_conns = fit;
	}
	evhttp_set_bevcb(s->ev, bev_cb, s);
	evhttp_set_gencb(s->ev, request_cb, s);
	evhttp_set_allowed_methods(s->ev, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_max_headers_size(s->ev, HTTPD_MAX_HEADERS);
	/* Until the head is judged, no body: a connection starts at 0 too. */
	evhttp_set_max_body_size(s->ev, REFUSED_BODY);
	evhttp_set_timeout(s->ev, (int)(s->timeout_s * 6));
	s->next_server = servers;
	servers = s;
	r = listen_socket(s, cfg->host ? cfg->host : "127.0.0.1", cfg->port);
	if (r < 0)
		goto fail;
	event_add(s->sweep, &sweep);
	*ret = s;
	return 0;
fail:
	httpd__free(s);
	return r;
}

void httpd__free(struct httpd *s)
{
	struct httpd **pp;

	if (!s)
		return;
	for (pp = &servers; *pp && *pp != s; pp = &(*pp)->next_server)
		;
	if (*pp)
		*pp = s->next_server;
	/* evhttp_free closes every connection: their close callbacks release them. */
	s->lis = NULL; /* evhttp_free frees it */
	if (s->ev)
		evhttp_free(s->ev);
	while (s->conns)
		conn_release(s->conns);
	if (s->resume)
		event_free(s->resume);
	if (s->sweep)
		event_free(s->sweep);
	ratelog__flush(&s->rl, mono_us());
	ratelog__free(&s->rl);
	free(s->replays);
	free(s->name);
	free(s);
}

uint16_t httpd__port(const struct httpd *s)
{
	return s ? s->port : 0;
}

void httpd__set_site(struct httpd *s, const tsync_site *site)
{
	if (s)
		s->site = site;
}

void httpd__stats(const struct httpd *s, struct httpd_stats *out)
{
	*out = s->st;
	out->connections = s->n_conns;
	out->max_connections = s->max_conns;
}

void httpd__metrics(const struct httpd *s, const char *prefix, struct evbuffer *out)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} counters[] = {
	    {"http_requests_total", "HTTP requests served", offsetof(struct httpd_stats, requests)},
	    {"http_unauthorized_total", "HTTP requests refused for their signature",
	     offsetof(struct httpd_stats, unauthorized)},
	    {"http_cross_site_total", "HTTP requests refused as possibly cross-site",
	     offsetof(struct httpd_stats, cross_site)},
	    {"http_too_large_total", "HTTP bodies refused before they were read",
	     offsetof(struct httpd_stats, too_large)},
	    {"http_refused_total", "HTTP requests refused otherwise", offsetof(struct httpd_stats, refused)},
	    {"http_timeouts_total", "HTTP clients cut off for sending too slowly",
	     offsetof(struct httpd_stats, timeouts)},
	    {"http_accept_paused_total", "times the HTTP listener paused at the connection cap",
	     offsetof(struct httpd_stats, accept_paused)},
	    {"http_emfile_total", "HTTP accepts failed for want of descriptors",
	     offsetof(struct httpd_stats, emfile)},
	};
	struct httpd_stats st;

	httpd__stats(s, &st);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		uint64_t v;
		memcpy(&v, (const char *)&st + counters[i].off, sizeof(v));
		evbuffer_add_printf(out, "# HELP %s%s %s\n# TYPE %s%s counter\n%s%s %" PRIu64 "\n", prefix,
		                    counters[i].name, counters[i].help, prefix, counters[i].name, prefix,
		                    counters[i].name, v);
	}
	evbuffer_add_printf(
	    out,
	    "# HELP %shttp_connections HTTP connections open\n# TYPE %shttp_connections gauge\n"
	    "%shttp_connections %zu\n",
	    prefix, prefix, prefix, st.connections);
}

void httpd__on_close(struct httpd *s, struct evhttp_request *req, void (*fn)(void *arg), void *arg)
{
	struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;
	struct hconn *c = s && evcon ? conn_of_evcon(s, evcon) : NULL;

	if (!c)
		return;
	c->on_close = fn;
	c->on_close_arg = fn ? arg : NULL;
}

void httpd__reply_json(struct evhttp_request *req, int code, json_t *body)
{
	struct evbuffer *buf = evbuffer_new();
	char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15)) : NULL;
	const char *reason;

	json_decref(body);
	if (!buf) {
		free(text);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	switch (code) {
	case 200:
		reason = "OK";
		break;
	case 202:
		reason = "Accepted";
		break;
	case 400:
		reason = "Bad Request";
		break;
	case 401:
		reason = "Unauthorized";
		break;
	case 403:
		reason = "Forbidden";
		break;
	case 404:
		reason = "Not Found";
		break;
	case 405:
		reason = "Method Not Allowed";
		break;
	case 409:
		reason = "Conflict";
		break;
	case 411:
		reason = "Length Required";
		break;
	case 413:
		reason = "Payload Too Large";
		break;
	case 415:
		reason = "Unsupported Media Type";
		break;
	case 422:
		reason = "Unprocessable Entity";
		break;
	case 500:
		reason = "Internal Server Error";
		break;
	case 503:
		reason = "Service Unavailable";
		break;
	case 504:
		reason = "Gateway Timeout";
		break;
	default:
		reason = NULL;
		break;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evbuffer_add_printf(buf, "%s\n", text ? text : "{}");
	free(text);
	evhttp_send_reply(req, code, reason, buf);
	evbuffer_free(buf);
}

void httpd__error(struct evhttp_request *req, int code, const char *error, const char *fmt, ...)
{
	char msg[512] = "";
	va_list ap;

	if (fmt) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	httpd__reply_json(req, code, json_pack("{s:s,s:s}", "error", error, "message", msg));
}

json_t *httpd__body_json(struct evhttp_request *req, const char **why)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	json_error_t jerr;
	json_t *j;

	*why = NULL;
	if (!len)
		return NULL;
	j = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		*why = "the body is not JSON";
	return j;
}

/* --- signing (the client side) -------------------------------------------------------------- */

int httpd__sign(const tsync_site *site, const char *to, const char *method, const char *target,
                const void *body, size_t len, struct httpd_sig_headers *h)
{
	char sha[TSYNC_HEX_BYTES + 1], sig[TSYNC_HEX_BYTES + 1], nonce[33];
	uint8_t rnd[16];
	int64_t t = now_s();
	int r;

	if (!site || !to || !method || !target || !h)
		return -EINVAL;
	tsync_sha256_hex(body, len, sha);
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(nonce, sizeof(nonce), rnd, sizeof(rnd));
	r = tsync_site_sign_request(site, to, method, target, t, nonce, sha, sig);
	if (r < 0)
		return r;
	snprintf(h->to, sizeof(h->to), "X-Thingsync-To: %s", to);
	snprintf(h->time, sizeof(h->time), "X-Thingsync-Time: %" PRId64, t);
	snprintf(h->nonce, sizeof(h->nonce), "X-Thingsync-Nonce: %s", nonce);
	snprintf(h->body, sizeof(h->body), "X-Thingsync-Body-SHA256: %s", sha);
	snprintf(h->sig, sizeof(h->sig), "X-Thingsync-Signature: %s", sig);
	return 0;
}
