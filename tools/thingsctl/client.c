/*
 * thingsctl: HTTP requests to thingsd (libcurl), and finding a controller's
 * API from site.conf.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <jansson.h>

#include "client.h"
#include "httpd.h"

#define MAX_REPLY (8 * 1024 * 1024)

/* Whether `host` is an address of this machine: thingsd listens on loopback
 * by default, so a controller on this machine is reached there. */
static bool is_local(const char *host)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct ifaddrs *ifs = NULL;
	bool local = false;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;
	if (getifaddrs(&ifs) < 0) {
		freeaddrinfo(res);
		return false;
	}
	for (ai = res; ai && !local; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET &&
		    (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127) {
			local = true;
			break;
		}
		for (struct ifaddrs *i = ifs; i && !local; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != ai->ai_family)
				continue;
			if (ai->ai_family == AF_INET)
				local = ((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
				        ((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr;
			else if (ai->ai_family == AF_INET6)
				local = !memcmp(&((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
				                &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr,
				                sizeof(struct in6_addr));
		}
	}
	freeifaddrs(ifs);
	freeaddrinfo(res);
	return local;
}

/* The controller an API address belongs to, or NULL. */
static const char *api_name(const struct ctl *c, const char *base)
{
	for (size_t i = 0; i < c->n_apis; i++)
		if (!strcmp(c->apis[i].base, base))
			return c->apis[i].name;
	return NULL;
}

void client__free(struct ctl *c)
{
	for (size_t i = 0; i < c->n_apis; i++) {
		free(c->apis[i].base);
		free(c->apis[i].name);
	}
	c->n_apis = 0;
}

char *client__url_of(struct ctl *c, const char *controller, char *err, size_t errlen)
{
	tsync_controller_info ci;
	const char *host;
	char *url = NULL;
	int idx;

	if (!c->site) {
		snprintf(err, errlen, "cannot load %s, so cannot find %s's API (use --url)", c->conf_path,
		         controller);
		return NULL;
	}
	idx = tsync_site_controller_find(c->site, controller);
	if (idx < 0 || tsync_site_controller(c->site, (size_t)idx, &ci) < 0) {
		snprintf(err, errlen, "%s is not a controller of site %s", controller,
		         tsync_site_name(c->site));
		return NULL;
	}
	if (!ci.tcp_port) {
		snprintf(err, errlen, "%s has no tcp_port in site.conf: no HTTP API", controller);
		return NULL;
	}
	host = is_local(ci.host) ? "127.0.0.1" : ci.host;
	if (asprintf(&url, strchr(host, ':') ? "http://[%s]:%u" : "http://%s:%u", host, ci.tcp_port) < 0)
		return NULL;
	if (c->n_apis < TSYNC_MAX_APIS && !api_name(c, url)) {
		/* A collector accepts what is signed for the collector service. */
		const char *to = ci.name;
		for (size_t k = 0; k < ci.n_roles; k++)
			if (!strcmp(ci.roles[k], "collector"))
				to = HTTPD_COLLECTOR_NAME;
		c->apis[c->n_apis].base = strdup(url);
		c->apis[c->n_apis].name = strdup(to);
		if (c->apis[c->n_apis].base && c->apis[c->n_apis].name)
			c->n_apis++;
	}
	return url;
}

struct sink {
	char *data;
	size_t len;
	bool too_long;
};

static size_t sink_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct sink *s = ud;
	size_t n = size * nmemb;
	char *g;

	if (s->len + n > MAX_REPLY) {
		s->too_long = true;
		return 0;
	}
	g = realloc(s->data, s->len + n + 1);
	if (!g)
		return 0;
	memcpy(g + s->len, ptr, n);
	s->data = g;
	s->len += n;
	s->data[s->len] = '\0';
	return n;
}

/*
 * The headers of a request: its signature (httpd.h) whenever the site has a
 * key and the controller is known, so the same command works on loopback and
 * off it; a JSON content type on a POST, which is how a thingsd tells a
 * client from a browser's cross-site form.
 */
static struct curl_slist *headers_for(struct ctl *c, const char *base, const char *method, const char *path,
                                      const char *body, size_t body_len, const char *const *extra,
                                      bool json_body)
{
	struct curl_slist *h = NULL;
	struct httpd_sig_headers sig;
	const char *to = api_name(c, base);

	if (!to)
		to = c->url_to;
	if (c->site && tsync_site_has_key(c->site) && to &&
	    httpd__sign(c->site, to, method, path, body, body ? body_len : 0, &sig) == 0) {
		h = curl_slist_append(h, sig.to);
		h = curl_slist_append(h, sig.time);
		h = curl_slist_append(h, sig.nonce);
		h = curl_slist_append(h, sig.body);
		h = curl_slist_append(h, sig.sig);
	}
	if (json_body)
		h = curl_slist_append(h, "Content-Type: application/json");
	for (; extra && *extra; extra++)
		h = curl_slist_append(h, *extra);
	/* A body goes at once, without waiting for "100 Continue". */
	h = curl_slist_append(h, "Expect:");
	return h;
}

int client__request(struct ctl *c, const char *base, const char *method, const char *path, const char *body,
                    size_t body_len, const char *const *headers, struct reply *out)
{
	CURL *e = curl_easy_init();
	struct curl_slist *h;
	struct sink s = {NULL, 0, false};
	char *url = NULL;
	CURLcode res;

	memset(out, 0, sizeof(*out));
	if (!e || asprintf(&url, "%s%s", base, path) < 0) {
		if (e)
			curl_easy_cleanup(e);
		out->curl_err = CURLE_OUT_OF_MEMORY;
		return -ENOMEM;
	}
	h = headers_for(c, base, method, path, body, body_len, headers, !strcmp(method, "POST") && !headers);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, sink_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "thingsctl/" TSYNC_VERSION_STRING);
	/* The server answers a wait by itself (wait_ms); the margin is for the
	 * network. A controller that is down costs at most 3 s to find out. */
	if (c->timeout_s > 0)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(c->timeout_s * 1000 + 2000));
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	if (!strcmp(method, "POST")) {
		curl_easy_setopt(e, CURLOPT_POST, 1L);
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(body ? body_len : 0));
	}
	if (c->verbose)
		fprintf(stderr, "> %s %s\n", method, url);
	res = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(url);
	out->curl_err = (int)res;
	out->body = s.data;
	out->len = s.len;
	if (s.data) {
		json_error_t jerr;
		out->json = json_loads(s.data, JSON_DECODE_ANY, &jerr);
	}
	if (c->verbose)
		fprintf(stderr, "< %ld %s", out->status, s.data ? s.data : "\n");
	return res == CURLE_OK ? 0 : -EIO;
}

void client__reply_free(struct reply *r)
{
	json_decref(r->json);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int client__exit_code(const struct reply *r, const char *what)
{
	const char *err = r->json ? json_string_value(json_object_get(r->json, "error")) : NULL;
	const char *msg = r->json ? json_string_value(json_object_get(r->json, "message")) : NULL;
	json_t *res = r->json ? json_object_get(r->json, "result") : NULL;
	json_t *why = res ? json_object_get(res, "why") : NULL;
	json_t *errors = r->json ? json_object_get(r->json, "errors") : NULL;
	int code;

	if (r->curl_err) {
		if (r->curl_err == CURLE_OPERATION_TIMEDOUT) {
			fprintf(stderr, "thingsctl: %s: timeout: no answer\n", what);
			return EXIT_TIMEOUT;
		}
		fprintf(stderr, "thingsctl: %s: %s\n", what, curl_easy_strerror((CURLcode)r->curl_err));
		return r->curl_err == CURLE_COULDNT_CONNECT ? EXIT_UNREACHABLE : EXIT_FAIL;
	}
	switch (r->status) {
	case 200:
		return EXIT_OK;
	case 202:
	case 504:
		code = EXIT_TIMEOUT;
		break;
	case 401:
		code = EXIT_AUTH;
		break;
	case 404:
		code = err && strcmp(err, "not_found") ? EXIT_UNKNOWN : EXIT_FAIL;
		break;
	case 403:
	case 409:
	case 422:
		code = EXIT_REFUSED;
		break;
	default:
		code = EXIT_FAIL;
		break;
	}
	fprintf(stderr, "thingsctl: %s: %s%s%s%s%s\n", what, err ? err : "HTTP error",
	        msg && *msg ? ": " : "", msg ? msg : "", json_is_string(why) ? ": " : "",
	        json_is_string(why) ? json_string_value(why) : "");
	if (json_is_array(errors)) {
		size_t i;
		json_t *l;
		json_array_foreach(errors, i, l)
		{
			if (json_is_string(l))
				fprintf(stderr, "  %s\n", json_string_value(l));
		}
	}
	if (r->status != 202 && r->status != 504 && !err)
		fprintf(stderr, "  (HTTP %ld)\n", r->status);
	return code;
}

/* --- server-sent events ------------------------------------------------------------ */

struct stream {
	client_event_fn fn;
	void *ud;
	char *buf;
	size_t len;
	char event[64];
	char *data;
	bool stop;
};

static void stream_line(struct stream *s, char *line)
{
	if (!*line) {
		/* A blank line ends an event. */
		if (s->data && !s->fn(s->ud, s->event[0] ? s->event : "message", s->data))
			s->stop = true;
		free(s->data);
		s->data = NULL;
		s->event[0] = '\0';
		return;
	}
	if (!strncmp(line, "event:", 6)) {
		snprintf(s->event, sizeof(s->event), "%s", line + 6 + (line[6] == ' '));
	} else if (!strncmp(line, "data:", 5)) {
		const char *d = line + 5 + (line[5] == ' ');
		if (!s->data) {
			s->data = strdup(d);
		} else {
			char *joined = NULL;
			if (asprintf(&joined, "%s\n%s", s->data, d) >= 0) {
				free(s->data);
				s->data = joined;
			}
		}
	}
}

static size_t stream_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
	struct stream *s = ud;
	size_t n = size * nmemb, start = 0;
	char *g = realloc(s->buf, s->len + n + 1);

	if (!g)
		return 0;
	s->buf = g;
	memcpy(s->buf + s->len, ptr, n);
	s->len += n;
	s->buf[s->len] = '\0';
	for (size_t i = 0; i < s->len && !s->stop; i++) {
		if (s->buf[i] != '\n')
			continue;
		s->buf[i] = '\0';
		if (i > start && s->buf[i - 1] == '\r')
			s->buf[i - 1] = '\0';
		stream_line(s, s->buf + start);
		start = i + 1;
	}
	memmove(s->buf, s->buf + start, s->len - start);
	s->len -= start;
	return s->stop ? 0 : n;
}

int client__stream(struct ctl *c, const char *base, const char *path, double seconds, client_event_fn fn,
                   void *ud, struct reply *out)
{
	struct stream s;
	CURL *e = curl_easy_init();
	struct curl_slist *h = headers_for(c, base, "GET", path, NULL, 0, NULL, false);
	char *url = NULL;
	CURLcode res;

	memset(out, 0, sizeof(*out));
	memset(&s, 0, sizeof(s));
	s.fn = fn;
	s.ud = ud;
	if (!e || asprintf(&url, "%s%s", base, path) < 0) {
		if (e)
			curl_easy_cleanup(e);
		curl_slist_free_all(h);
		out->curl_err = CURLE_OUT_OF_MEMORY;
		return -ENOMEM;
	}
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, stream_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
	if (seconds > 0)
		curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(seconds * 1000));
	res = curl_easy_perform(e);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
	curl_easy_cleanup(e);
	curl_slist_free_all(h);
	free(url);
	free(s.buf);
	free(s.data);
	/* Stopping on purpose ends the transfer with a write error. */
	out->curl_err = s.stop ? 0 : (int)res;
	return 0;
}

void client__value_text(json_t *v, char *buf, size_t len)
{
	if (!v || json_is_null(v))
		snprintf(buf, len, "-");
	else if (json_is_boolean(v))
		snprintf(buf, len, "%d", json_is_true(v) ? 1 : 0);
	else if (json_is_integer(v))
		snprintf(buf, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(buf, len, "%.15g", json_real_value(v));
	else if (json_is_string(v))
		snprintf(buf, len, "%s", json_string_value(v));
	else
		snprintf(buf, len, "?");
}
