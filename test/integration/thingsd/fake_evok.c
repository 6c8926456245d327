/*
 * fake_evok: a tiny stand-in for UniPi's evok REST API, for thingsd's evok
 * driver tests (libevent evhttp).
 *
 *   fake_evok PORT_FILE
 *
 * Listens on 127.0.0.1 (a port from the kernel, written to PORT_FILE) and
 * serves:
 *   GET  /rest/DEV/CIRCUIT     {"dev":..,"circuit":..,"value":V}
 *   POST /rest/DEV/CIRCUIT     form value=V: {"success":true,"result":{...}}
 *   POST /control/fail         every /rest request answers 500 from now on
 *   POST /control/ok           back to normal
 *   GET  /control/writes       how many POSTs /rest has taken
 * SIGTERM stops it.
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#define MAX_CIRCUITS 32

static struct {
	char key[64];
	char value[64];
} circuits[MAX_CIRCUITS];
static int n_circuits, failing, writes;

static char *value_of(const char *key)
{
	for (int i = 0; i < n_circuits; i++)
		if (!strcmp(circuits[i].key, key))
			return circuits[i].value;
	if (n_circuits == MAX_CIRCUITS)
		return NULL;
	snprintf(circuits[n_circuits].key, sizeof(circuits[0].key), "%s", key);
	snprintf(circuits[n_circuits].value, sizeof(circuits[0].value), "0");
	return circuits[n_circuits++].value;
}

static void reply(struct evhttp_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply(struct evhttp_request *req, int code, const char *fmt, ...)
{
	struct evbuffer *b = evbuffer_new();
	va_list ap;

	va_start(ap, fmt);
	evbuffer_add_vprintf(b, fmt, ap);
	va_end(ap);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
	evbuffer_free(b);
}

static void gen_cb(struct evhttp_request *req, void *arg)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	bool post = evhttp_request_get_command(req) == EVHTTP_REQ_POST;
	char dev[32], circuit[32], key[64], *v;

	if (!path) {
		reply(req, 404, "{}");
		return;
	}
	if (!strcmp(path, "/control/fail") || !strcmp(path, "/control/ok")) {
		failing = !strcmp(path, "/control/fail");
		reply(req, 200, "{\"failing\":%d}", failing);
		return;
	}
	if (!strcmp(path, "/control/writes")) {
		reply(req, 200, "{\"writes\":%d}", writes);
		return;
	}
	if (sscanf(path, "/rest/%31[^/]/%31[^/]", dev, circuit) != 2) {
		reply(req, 404, "{\"error\":\"not found\"}");
		return;
	}
	if (failing) {
		reply(req, 500, "{\"error\":\"board not answering\"}");
		return;
	}
	snprintf(key, sizeof(key), "%s/%s", dev, circuit);
	v = value_of(key);
	if (!v) {
		reply(req, 500, "{\"error\":\"too many circuits\"}");
		return;
	}
	if (post) {
		struct evbuffer *in = evhttp_request_get_input_buffer(req);
		size_t len = evbuffer_get_length(in);
		char body[sizeof(circuits[0].value)], *end;
		if (len >= sizeof(body) || len < 6) {
			reply(req, 400, "{\"success\":false}");
			return;
		}
		evbuffer_copyout(in, body, len);
		body[len] = '\0';
		/* Numbers only: the value goes into the JSON answers as it is. */
		if (strncmp(body, "value=", 6) || (strtod(body + 6, &end), end == body + 6 || *end)) {
			reply(req, 400, "{\"success\":false}");
			return;
		}
		memcpy(v, body + 6, len - 5);
		writes++;
		reply(req, 200,
		      "{\"success\":true,\"result\":{\"dev\":\"%s\",\"circuit\":\"%s\",\"value\":%s}}", dev,
		      circuit, v);
		return;
	}
	reply(req, 200, "{\"dev\":\"%s\",\"circuit\":\"%s\",\"value\":%s,\"pending\":false}", dev, circuit,
	      v);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

int main(int argc, char **argv)
{
	struct event_base *base;
	struct evhttp *http;
	struct evhttp_bound_socket *sock;
	struct event *term;
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char tmp[512];
	FILE *f;

	if (argc != 2) {
		fprintf(stderr, "usage: fake_evok PORT_FILE\n");
		return 2;
	}
	base = event_base_new();
	http = evhttp_new(base);
	evhttp_set_gencb(http, gen_cb, NULL);
	sock = evhttp_bind_socket_with_handle(http, "127.0.0.1", 0);
	if (!sock || getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sa, &len) < 0) {
		fprintf(stderr, "fake_evok: cannot listen\n");
		return 1;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", argv[1]);
	f = fopen(tmp, "w");
	if (!f)
		return 1;
	fprintf(f, "%u\n", ntohs(sa.sin_port));
	fclose(f);
	rename(tmp, argv[1]);
	term = evsignal_new(base, SIGTERM, stop_cb, base);
	event_add(term, NULL);
	event_base_dispatch(base);
	event_free(term);
	evhttp_free(http);
	event_base_free(base);
	return 0;
}
