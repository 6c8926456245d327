/*
 * The evok driver: a circuit of a UniPi board through evok's REST API.
 *
 *   evok:http://HOST:PORT/rest/relay/2_01 [interval=MS] [timeout=MS] [scale=F] [offset=F]
 *
 * A read is `GET URL`, answered with a JSON object whose "value" is the
 * circuit's state (evok 2 wraps it in "data" or "result"; both are
 * understood). A write is `POST URL` with the form body `value=V`, answered
 * with {"success": true, "result": {"value": ...}}; the result's value, when
 * present, is the resulting state (as_is).
 *
 * Reads run in the background through one libcurl multi handle driven by
 * the daemon's libevent loop. Writes are synchronous with a short timeout
 * (default 1000 ms): libthingsync's write hook must answer with the
 * resulting state in the same call.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <jansson.h>

#include "driver.h"

#define EVOK_MAX_BODY (64 * 1024)

struct evok_body {
	char *data;
	size_t len;
	bool too_long;
};

struct evok_priv {
	CURL *rd; /* the read in flight, or NULL */
	struct evok_body body;
	char errbuf[CURL_ERROR_SIZE];
};

static struct {
	CURLM *multi;
	struct event_base *base;
	struct event *timer;
} G;

struct evok_sock {
	struct event *ev;
};

/* --- libcurl plumbing ------------------------------------------------------------ */

static size_t body_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct evok_body *b = userdata;
	size_t n = size * nmemb;
	char *grown;

	if (b->len + n > EVOK_MAX_BODY) {
		b->too_long = true;
		return 0; /* aborts the transfer */
	}
	grown = realloc(b->data, b->len + n + 1);
	if (!grown)
		return 0;
	memcpy(grown + b->len, ptr, n);
	b->data = grown;
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* Every descriptor of the daemon is close-on-exec, libcurl's sockets too. */
static curl_socket_t open_socket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

static CURL *easy_new(struct driver *d, struct evok_body *body, char *errbuf)
{
	CURL *e = curl_easy_init();

	if (!e)
		return NULL;
	curl_easy_setopt(e, CURLOPT_URL, d->args[0]);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)d->timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, body);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket_cb);
	curl_easy_setopt(e, CURLOPT_PRIVATE, d);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(e, CURLOPT_USERAGENT, "thingsd/" THINGSD_VERSION);
	errbuf[0] = '\0';
	return e;
}

/* Finds the circuit's value in evok's answer, as text for the driver. */
static int value_text(const char *body, char *out, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loads(body, JSON_DECODE_ANY, &jerr), *v = NULL;
	int r = 0;

	if (!root) {
		snprintf(err, errlen, "evok answered no JSON: %s", jerr.text);
		return -EIO;
	}
	if (json_is_array(root))
		v = json_object_get(json_array_get(root, 0), "value");
	else if (json_is_object(root)) {
		v = json_object_get(root, "value");
		if (!v)
			v = json_object_get(json_object_get(root, "data"), "value");
		if (!v)
			v = json_object_get(json_object_get(root, "result"), "value");
	}
	if (json_is_integer(v))
		snprintf(out, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(out, len, "%.15g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(out, len, "%d", json_is_true(v) ? 1 : 0);
	else if (json_is_string(v))
		snprintf(out, len, "%s", json_string_value(v));
	else {
		snprintf(err, errlen, "evok answered without a value");
		r = -EIO;
	}
	json_decref(root);
	return r;
}

static void finish_read(struct driver *d, CURLcode res)
{
	struct evok_priv *p = d->priv;
	char why[DRIVER_ERR_LEN], text[512];
	long code = 0;
	CURL *e = p->rd;

	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	curl_multi_remove_handle(G.multi, e);
	curl_easy_cleanup(e);
	p->rd = NULL;
	if (res != CURLE_OK) {
		snprintf(why, sizeof(why), "GET %.80s: %.100s", d->args[0],
		         p->body.too_long ? "answer too long"
		         : p->errbuf[0]   ? p->errbuf
		                          : curl_easy_strerror(res));
	} else if (code != 200) {
		snprintf(why, sizeof(why), "GET %.80s: HTTP %ld", d->args[0], code);
		res = CURLE_HTTP_RETURNED_ERROR;
	} else if (value_text(p->body.data ? p->body.data : "", text, sizeof(text), why, sizeof(why)) < 0) {
		res = CURLE_HTTP_RETURNED_ERROR;
	}
	free(p->body.data);
	memset(&p->body, 0, sizeof(p->body));
	if (res != CURLE_OK)
		driver__read_done(d, -EIO, why, NULL);
	else
		driver__read_done(d, 0, NULL, text);
}

static void check_multi(void)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(G.multi, &left))) {
		struct driver *d = NULL;
		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
		if (d)
			finish_read(d, msg->data.result);
	}
}

static void sock_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	int running,
	    action = (kind & EV_READ ? CURL_CSELECT_IN : 0) | (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);

	curl_multi_socket_action(G.multi, fd, action, &running);
	check_multi();
}

static void timer_event_cb(evutil_socket_t fd, short kind, void *arg)
{
	int running;

	curl_multi_socket_action(G.multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_multi();
}

static int sock_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct evok_sock *es = socketp;
	short kind;

	if (what == CURL_POLL_REMOVE) {
		if (es) {
			event_free(es->ev);
			free(es);
		}
		curl_multi_assign(G.multi, s, NULL);
		return 0;
	}
	if (!es) {
		es = calloc(1, sizeof(*es));
		if (!es)
			return -1;
		curl_multi_assign(G.multi, s, es);
	} else {
		event_free(es->ev);
	}
	kind =
	    (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	es->ev = event_new(G.base, s, kind, sock_event_cb, NULL);
	if (!es->ev)
		return -1;
	event_add(es->ev, NULL);
	return 0;
}

static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(G.timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(G.timer, &tv);
	return 0;
}

static int global_init(struct event_base *base)
{
	if (G.multi)
		return 0;
	G.multi = curl_multi_init();
	G.base = base;
	G.timer = evtimer_new(base, timer_event_cb, NULL);
	if (!G.multi || !G.timer) {
		driver_evok__global_cleanup();
		return -ENOMEM;
	}
	curl_multi_setopt(G.multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(G.multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	return 0;
}

void driver_evok__global_cleanup(void)
{
	if (G.multi)
		curl_multi_cleanup(G.multi);
	if (G.timer)
		event_free(G.timer);
	memset(&G, 0, sizeof(G));
}

/* --- the driver ----------------------------------------------------------------- */

static int evok_parse(struct driver *d, char *err, size_t errlen)
{
	if (d->n_args != 1 || (strncmp(d->args[0], "http://", 7) && strncmp(d->args[0], "https://", 8))) {
		snprintf(err, errlen, "evok: needs one URL, e.g. evok:http://127.0.0.1:8080/rest/relay/1_01");
		return -EINVAL;
	}
	return 0;
}

static int evok_start(struct driver *d, char *err, size_t errlen)
{
	if (global_init(d->td->base) < 0) {
		snprintf(err, errlen, "cannot set up libcurl");
		return -ENOMEM;
	}
	d->priv = calloc(1, sizeof(struct evok_priv));
	if (!d->priv) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static void evok_stop(struct driver *d)
{
	struct evok_priv *p = d->priv;

	if (!p)
		return;
	if (p->rd) {
		curl_multi_remove_handle(G.multi, p->rd);
		curl_easy_cleanup(p->rd);
	}
	free(p->body.data);
	free(p);
	d->priv = NULL;
}

static void evok_read(struct driver *d)
{
	struct evok_priv *p = d->priv;

	p->rd = easy_new(d, &p->body, p->errbuf);
	if (!p->rd || curl_multi_add_handle(G.multi, p->rd) != CURLM_OK) {
		if (p->rd)
			curl_easy_cleanup(p->rd);
		p->rd = NULL;
		driver__read_done(d, -ENOMEM, "cannot start a request", NULL);
	}
}

static int evok_write(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
                      size_t errlen)
{
	struct evok_body body = {NULL, 0, false};
	char errbuf[CURL_ERROR_SIZE], text[512], form[600], got[512], why[DRIVER_ERR_LEN];
	char *escaped;
	long code = 0;
	CURLcode res;
	CURL *e;
	int r = 0;

	if (driver__to_text(d, to_be, text, sizeof(text)) < 0) {
		snprintf(err, errlen, "value cannot be written");
		return -EINVAL;
	}
	e = easy_new(d, &body, errbuf);
	if (!e) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	escaped = curl_easy_escape(e, text, 0);
	snprintf(form, sizeof(form), "value=%s", escaped ? escaped : "");
	curl_free(escaped);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, form);
	res = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &code);
	curl_easy_cleanup(e);
	if (res != CURLE_OK) {
		snprintf(err, errlen, "POST %.80s: %.100s", d->args[0],
		         errbuf[0] ? errbuf : curl_easy_strerror(res));
		r = -EIO;
	} else if (code != 200) {
		snprintf(err, errlen, "POST %s: HTTP %ld", d->args[0], code);
		r = -EIO;
	} else {
		json_error_t jerr;
		json_t *j = json_loads(body.data ? body.data : "", JSON_DECODE_ANY, &jerr);
		json_t *ok = json_object_get(j, "success");
		if (json_is_false(ok)) {
			snprintf(err, errlen, "POST %s: evok refused it", d->args[0]);
			r = -EIO;
		} else if (j && value_text(body.data, got, sizeof(got), why, sizeof(why)) == 0) {
			if (driver__from_text(d, got, as_is, err, errlen) < 0)
				r = -EIO;
		}
		json_decref(j);
	}
	free(body.data);
	return r;
}

const struct driver_ops driver_evok_ops = {
    .kind = "evok",
    .default_interval_ms = 1000,
    .default_timeout_ms = 1000,
    .parse = evok_parse,
    .start = evok_start,
    .stop = evok_stop,
    .read = evok_read,
    .write = evok_write,
};
