/*
 * curlev: libcurl multi inside a libevent loop (see curlev.h).
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when
 * to call it back if nothing happens (CURLMOPT_TIMERFUNCTION); we keep one
 * libevent event per socket and one timer, and hand every wake-up to
 * curl_multi_socket_action(). libcurl must not be re-entered from its own
 * callbacks, so even a zero timeout goes through the timer.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "curlev.h"

struct curlev_req {
	struct curlev *c;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	char *resp;
	size_t resp_len;
	size_t resp_cap;
	char errbuf[CURL_ERROR_SIZE];
	curlev_done_fn done;
	void *ud;
	struct curlev_req *next;
};

/* One watched socket. */
struct curlev_sock {
	struct event *ev;
	curl_socket_t fd;
	struct curlev_sock *prev, *next;
};

struct curlev {
	struct event_base *base;
	CURLM *multi;
	struct event *timer;
	int running;
	struct curlev_req *reqs;   /* in flight, for curlev__free() */
	struct curlev_sock *socks; /* watched, for curlev__free() */
};

static void sock_free(struct curlev *c, struct curlev_sock *cs)
{
	if (cs->prev)
		cs->prev->next = cs->next;
	else
		c->socks = cs->next;
	if (cs->next)
		cs->next->prev = cs->prev;
	if (cs->ev)
		event_free(cs->ev);
	free(cs);
}

static void req_free(struct curlev_req *r)
{
	if (!r)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	free(r->body);
	free(r->resp);
	free(r);
}

static void unlink_req(struct curlev *c, struct curlev_req *r)
{
	for (struct curlev_req **pp = &c->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			return;
		}
	}
}

/* Finished transfers: take them out of the multi handle and complete them. */
static void check_done(struct curlev *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct curlev_req *r = NULL;
		long status = 0;
		const char *error = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		if (msg->data.result == CURLE_OK) {
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
		} else {
			error = r->errbuf[0] ? r->errbuf : curl_easy_strerror(msg->data.result);
		}
		curl_multi_remove_handle(c->multi, msg->easy_handle);
		unlink_req(c, r);
		r->done(r->ud, (int)status, error, r->resp ? r->resp : "", r->resp_len);
		req_free(r);
	}
}

static void socket_action(struct curlev *c, curl_socket_t fd, int mask)
{
	curl_multi_socket_action(c->multi, fd, mask, &c->running);
	/* Not "delete the timer when nothing runs": a completion callback may
	 * just have added a request and armed it. libcurl deletes it itself
	 * (a timeout of -1) when it has nothing to wait for. */
	check_done(c);
}

static void event_cb(evutil_socket_t fd, short kind, void *arg)
{
	struct curlev *c = arg;
	int mask = (kind & EV_READ ? CURL_CSELECT_IN : 0) | (kind & EV_WRITE ? CURL_CSELECT_OUT : 0);

	socket_action(c, (curl_socket_t)fd, mask);
}

static void timer_cb(evutil_socket_t fd, short kind, void *arg)
{
	socket_action(arg, CURL_SOCKET_TIMEOUT, 0);
}

static int multi_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct curlev *c = userp;
	struct timeval tv;

	if (timeout_ms < 0) {
		evtimer_del(c->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	return evtimer_add(c->timer, &tv) == 0 ? 0 : -1;
}

static int multi_sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *sockp)
{
	struct curlev *c = userp;
	struct curlev_sock *cs = sockp;
	short kind;

	if (what == CURL_POLL_REMOVE) {
		if (cs) {
			curl_multi_assign(c->multi, s, NULL);
			sock_free(c, cs);
		}
		return 0;
	}
	kind =
	    (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) | EV_PERSIST);
	if (!cs) {
		cs = calloc(1, sizeof(*cs));
		if (!cs)
			return -1;
		cs->fd = s;
		cs->next = c->socks;
		if (c->socks)
			c->socks->prev = cs;
		c->socks = cs;
		curl_multi_assign(c->multi, s, cs);
	} else if (cs->ev) {
		event_free(cs->ev);
	}
	cs->ev = event_new(c->base, s, kind, event_cb, c);
	if (!cs->ev || event_add(cs->ev, NULL) < 0)
		return -1;
	return 0;
}

static size_t write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct curlev_req *r = userdata;
	size_t n = size * nmemb;
	size_t keep = n;

	/* A limit on what a server can make us hold; the rest is read and dropped. */
	if (r->resp_len + keep > CURLEV_MAX_RESPONSE)
		keep = CURLEV_MAX_RESPONSE - r->resp_len;
	if (keep > 0) {
		if (r->resp_len + keep + 1 > r->resp_cap) {
			size_t cap = r->resp_cap ? r->resp_cap : 1024;
			char *p;
			while (cap < r->resp_len + keep + 1)
				cap *= 2;
			p = realloc(r->resp, cap);
			if (!p)
				return 0; /* libcurl fails the transfer: retried as any failure */
			r->resp = p;
			r->resp_cap = cap;
		}
		memcpy(r->resp + r->resp_len, ptr, keep);
		r->resp_len += keep;
		r->resp[r->resp_len] = '\0';
	}
	return n;
}

int curlev__new(struct event_base *base, struct curlev **ret)
{
	struct curlev *c;

	if (!base || !ret)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->base = base;
	c->multi = curl_multi_init();
	c->timer = evtimer_new(base, timer_cb, c);
	if (!c->multi || !c->timer) {
		curlev__free(c);
		return -ENOMEM;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, multi_sock_cb);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, multi_timer_cb);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	*ret = c;
	return 0;
}

void curlev__free(struct curlev *c)
{
	if (!c)
		return;
	while (c->reqs) {
		struct curlev_req *r = c->reqs;
		c->reqs = r->next;
		/* Removing the handle makes libcurl close its sockets (CURL_POLL_REMOVE). */
		curl_multi_remove_handle(c->multi, r->easy);
		req_free(r);
	}
	if (c->multi)
		curl_multi_cleanup(c->multi);
	/* Sockets of cached connections libcurl did not report as removed. */
	while (c->socks)
		sock_free(c, c->socks);
	if (c->timer)
		event_free(c->timer);
	free(c);
}

static int start(struct curlev *c, const char *url, const char *const *headers, const char *body, size_t len,
                 bool post, long timeout_ms, const char *cacert, curlev_done_fn done, void *ud)
{
	struct curlev_req *r;
	struct timeval tv = {0, 0};

	if (!c || !url || !done || (!body && len))
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->c = c;
	r->done = done;
	r->ud = ud;
	r->easy = curl_easy_init();
	r->body = malloc(len + 1);
	if (!r->easy || !r->body)
		goto nomem;
	if (len)
		memcpy(r->body, body, len);
	r->body[len] = '\0';
	for (size_t i = 0; headers && headers[i]; i++) {
		struct curl_slist *l = curl_slist_append(r->headers, headers[i]);
		if (!l)
			goto nomem;
		r->headers = l;
	}
	/* No "Expect: 100-continue" round trip for large bodies. */
	{
		struct curl_slist *l = curl_slist_append(r->headers, "Expect:");
		if (!l)
			goto nomem;
		r->headers = l;
	}
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	if (post) {
		curl_easy_setopt(r->easy, CURLOPT_POST, 1L);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	} else {
		curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
	curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
	curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 30000L);
	curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
	                 timeout_ms > 0 && timeout_ms < 10000 ? timeout_ms : 10000L);
	/* Only HTTP(S): a URL from a configuration file must not reach file:// or others. */
	curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(r->easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (cacert)
		curl_easy_setopt(r->easy, CURLOPT_CAINFO, cacert);
	if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
		goto nomem;
	r->next = c->reqs;
	c->reqs = r;
	/* Kick libcurl from the loop (curl_multi_add_handle set a timer too). */
	evtimer_add(c->timer, &tv);
	return 0;
nomem:
	req_free(r);
	return -ENOMEM;
}

int curlev__post(struct curlev *c, const char *url, const char *const *headers, const char *body, size_t len,
                 long timeout_ms, const char *cacert, curlev_done_fn done, void *ud)
{
	return start(c, url, headers, body, len, true, timeout_ms, cacert, done, ud);
}

int curlev__get(struct curlev *c, const char *url, const char *const *headers, long timeout_ms,
                const char *cacert, curlev_done_fn done, void *ud)
{
	return start(c, url, headers, NULL, 0, false, timeout_ms, cacert, done, ud);
}

int curlev__running(const struct curlev *c)
{
	int n = 0;

	for (const struct curlev_req *r = c ? c->reqs : NULL; r; r = r->next)
		n++;
	return n;
}

size_t curlev__body_write(char *p, size_t size, size_t n, void *ud)
{
	struct curlev_body *b = ud;
	char *d = realloc(b->data, b->len + size * n + 1);

	if (!d)
		return 0; /* libcurl fails the transfer */
	memcpy(d + b->len, p, size * n);
	b->data = d;
	b->len += size * n;
	d[b->len] = '\0';
	return size * n;
}
