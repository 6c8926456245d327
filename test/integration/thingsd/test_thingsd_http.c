/*
 * thingsd's HTTP API under attack, with real processes: cross-site requests
 * from a browser, bodies sent before authentication, idle and slow
 * connections, descriptors running out. Each test speaks raw HTTP over a
 * socket where it needs to see what a library client would hide (headers, a
 * body the server never reads, a client that never finishes).
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <sodium.h>
#include <thingsync/thingsync.h>

#include "httpd.h"
#include "tdh.h"

enum { A, B };

static const char *const names[] = {"PI-A", "PI-B"};

static const char things[] = "[thing lamp]\nowner = PI-B\ntype = bool\nusers = PI-A\ninitial = off\n\n";

static int setup(void **state)
{
	*state = tdh_new_started("tdhttp", 2, names, NULL, things);
	return 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int connect_to(uint16_t port, bool nonblock)
{
	struct sockaddr_in sa;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads until the server closes or `ms` pass; returns what came (malloc'ed). */
static char *read_all(int fd, int ms)
{
	size_t len = 0, cap = 65536;
	char *buf = malloc(cap + 1);
	uint64_t end = now_ms() + (uint64_t)ms;

	assert_non_null(buf);
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		int left = (int)(end - now_ms());
		ssize_t n;
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		n = recv(fd, buf + len, cap - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == cap)
			break;
	}
	buf[len] = '\0';
	return buf;
}

/* One raw request on a new connection; the whole answer (headers and body). */
static char *raw(uint16_t port, const char *request)
{
	int fd = connect_to(port, false);
	char *answer;

	assert_true(fd >= 0);
	assert_int_equal(send(fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
	shutdown(fd, SHUT_WR);
	answer = read_all(fd, 20000);
	close(fd);
	return answer;
}

static int status_of(const char *answer)
{
	int code = 0;

	if (sscanf(answer, "HTTP/1.%*d %d", &code) != 1)
		return 0;
	return code;
}

/* A browser's cross-site requests never act: a form post, a foreign Origin,
 * a CORS preflight. A client that says it sends JSON does act. */
static void test_cross_site(void **state)
{
	struct tdh *t = *state;
	uint16_t port = t->c[B].tcp;
	char req[1024], *ans;
	const char *body = "{\"value\":true}";

	/* What an HTML form on any web page can send to 127.0.0.1 without asking. */
	static const char *const simple_types[] = {"text/plain", "application/x-www-form-urlencoded",
	                                           "multipart/form-data; boundary=x"};
	for (size_t i = 0; i < sizeof(simple_types) / sizeof(simple_types[0]); i++) {
		snprintf(req, sizeof(req),
		         "POST /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://evil.example\r\n"
		         "Content-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
		         port, simple_types[i], strlen(body), body);
		ans = raw(port, req);
		assert_int_equal(status_of(ans), 403);
		assert_null(strstr(ans, "Access-Control-Allow"));
		free(ans);
		/* Without an Origin (an old browser, a plain form): still refused. */
		snprintf(req, sizeof(req),
		         "POST /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: %s\r\n"
		         "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
		         port, simple_types[i], strlen(body), body);
		ans = raw(port, req);
		assert_int_equal(status_of(ans), 415);
		assert_non_null(strstr(ans, "content_type"));
		free(ans);
	}
	/* JSON from a foreign page (it would need a preflight, which is refused). */
	snprintf(req, sizeof(req),
	         "POST /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://evil.example\r\n"
	         "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	         port, strlen(body), body);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 403);
	assert_non_null(strstr(ans, "cross_origin"));
	free(ans);
	snprintf(req, sizeof(req),
	         "OPTIONS /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://evil.example\r\n"
	         "Access-Control-Request-Method: POST\r\nConnection: close\r\n\r\n",
	         port);
	ans = raw(port, req);
	assert_true(status_of(ans) == 405 || status_of(ans) == 501);
	assert_null(strstr(ans, "Access-Control-Allow"));
	free(ans);
	/* A foreign origin may not even read. */
	snprintf(req, sizeof(req),
	         "GET /things HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://evil.example\r\nConnection: "
	         "close\r\n\r\n",
	         port);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 403);
	free(ans);
	/* Nothing of that acted. */
	assert_true(tdh_wait_value(t, B, "lamp", "0"));
	assert_true(tdh_wait_value(t, A, "lamp", "0"));

	/* A page served by thingsd itself (same origin) and a plain client do act. */
	snprintf(req, sizeof(req),
	         "POST /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nOrigin: http://127.0.0.1:%u\r\n"
	         "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	         port, port, strlen(body), body);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 200);
	assert_null(strstr(ans, "Access-Control-Allow"));
	free(ans);
	assert_true(tdh_wait_value(t, A, "lamp", "1"));
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":false}", NULL, NULL), 200);
	assert_true(tdh_wait_value(t, A, "lamp", "0"));
}

/* The dashboard's files: built in, served with a policy that allows only
 * the server's own scripts and forbids framing; GET / stays the JSON index
 * for a client that does not ask for a page. */
static void test_page(void **state)
{
	struct tdh *t = *state;
	uint16_t port = t->c[B].tcp;
	char req[512], etag[80] = "", *ans, *p;

	snprintf(req, sizeof(req),
	         "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nAccept: text/html,*/*\r\nConnection: close\r\n\r\n", port);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 200);
	assert_non_null(strstr(ans, "Content-Type: text/html"));
	assert_non_null(strstr(ans, "script-src 'self'"));
	assert_non_null(strstr(ans, "frame-ancestors 'none'"));
	assert_non_null(strstr(ans, "X-Frame-Options: DENY"));
	assert_non_null(strstr(ans, "/ui/dash.js"));
	assert_null(strstr(ans, "<script>")); /* no inline script: the policy would refuse it */
	p = strstr(ans, "ETag: ");
	assert_non_null(p);
	assert_int_equal(sscanf(p + 6, "%79[^\r]", etag), 1);
	free(ans);
	/* Unchanged: 304, no body. */
	snprintf(req, sizeof(req),
	         "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nAccept: text/html\r\nIf-None-Match: %s\r\n"
	         "Connection: close\r\n\r\n",
	         port, etag);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 304);
	free(ans);
	snprintf(req, sizeof(req), "GET /ui/sign.js HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
	         port);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 200);
	assert_non_null(strstr(ans, "Content-Type: text/javascript"));
	assert_non_null(strstr(ans, "thingsync-http-1"));
	free(ans);
	snprintf(req, sizeof(req), "GET /ui/nothing.js HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n",
	         port);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 404);
	free(ans);
	/* An API client: the index, as JSON. */
	snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n\r\n", port);
	ans = raw(port, req);
	assert_int_equal(status_of(ans), 200);
	assert_non_null(strstr(ans, "\"endpoints\""));
	assert_non_null(strstr(ans, "\"signature_required\":false"));
	free(ans);
}

/* One request to `i` signed with the dashboard token as the key (as the
 * browser signs); `token` NULL: a wrong token. The HTTP status, the body in *out. */
static long token_http(struct tdh *t, int i, const char *method, const char *path, const char *body,
                       const uint8_t *token, char **out)
{
	uint8_t tag[TSYNC_TAG_BYTES], wrong[TSYNC_TAG_BYTES];
	char sha[TSYNC_HEX_BYTES + 1], sig[TSYNC_HEX_BYTES + 1], text[1024];
	char h_to[96], h_time[48], h_nonce[64], h_sha[96], h_sig[96];
	const char *headers[] = {h_to, h_time, h_nonce, h_sha, h_sig, "Content-Type: application/json", NULL};
	long long now = (long long)time(NULL);
	static unsigned seq;
	int n;

	memset(wrong, 7, sizeof(wrong));
	tsync_sha256_hex(body ? body : "", body ? strlen(body) : 0, sha);
	snprintf(h_nonce, sizeof(h_nonce), "X-Thingsync-Nonce: tok%u-%d", ++seq, (int)getpid());
	n = snprintf(text, sizeof(text), "thingsync-http-1\n%s\n%s\n%s\n%lld\n%s\n%s", t->c[i].name, method, path,
	             now, h_nonce + strlen("X-Thingsync-Nonce: "), sha);
	assert_true(n > 0 && (size_t)n < sizeof(text));
	crypto_auth_hmacsha512256(tag, (const unsigned char *)text, (unsigned long long)n, token ? token : wrong);
	sodium_bin2hex(sig, sizeof(sig), tag, sizeof(tag));
	snprintf(h_to, sizeof(h_to), "X-Thingsync-To: %s", t->c[i].name);
	snprintf(h_time, sizeof(h_time), "X-Thingsync-Time: %lld", now);
	snprintf(h_sha, sizeof(h_sha), "X-Thingsync-Body-SHA256: %s", sha);
	snprintf(h_sig, sizeof(h_sig), "X-Thingsync-Signature: %s", sig);
	return tdh_http_h(t, i, method, path, body, headers, out);
}

/* Signed with the dashboard token (thingsctl token), a request may read and
 * set or pulse things, and nothing else: no reload, command or deploy. */
static void test_dashboard_token(void **state)
{
	struct tdh *t = *state;
	char *extra[] = {"--require-signature", NULL};
	uint8_t token[TSYNC_TAG_BYTES];
	tsync_site *site = NULL;
	char *body = NULL;

	assert_int_equal(tsync_site_load(t->site, &site, NULL), 0);
	assert_int_equal(httpd__dashboard_token(site, token), 0);
	tsync_site_free(site);
	tdh_stop(t, B);
	t->c[B].extra = extra;
	tdh_start(t, B);
	/* Unsigned: refused; with a wrong token: refused. */
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, NULL, NULL), 401);
	assert_int_equal(token_http(t, B, "GET", "/status", NULL, NULL, NULL), 401);
	/* Reads. */
	assert_int_equal(token_http(t, B, "GET", "/things/lamp", NULL, token, &body), 200);
	assert_non_null(strstr(body, "\"owner\":\"PI-B\""));
	free(body);
	assert_int_equal(token_http(t, B, "GET", "/peers", NULL, token, NULL), 200);
	/* Sets. */
	assert_int_equal(token_http(t, B, "POST", "/things/lamp", "{\"value\":true}", token, NULL), 200);
	assert_true(tdh_wait_value(t, A, "lamp", "1"));
	/* Nothing more. */
	body = NULL;
	assert_int_equal(token_http(t, B, "POST", "/reload", "", token, &body), 403);
	assert_non_null(strstr(body, "dashboard_token"));
	free(body);
	assert_int_equal(token_http(t, B, "POST", "/cmd", "{\"role\":\"x\",\"cmd\":\"y\"}", token, NULL), 403);
	assert_int_equal(token_http(t, B, "POST", "/deploy", "x", token, NULL), 403);
	/* The site key still does everything. */
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":false}", "PI-B", NULL), 200);
	assert_true(tdh_wait_value(t, A, "lamp", "0"));
	tdh_stop(t, B);
	t->c[B].extra = NULL;
	tdh_start(t, B);
}

/* The number after `needle` in a metrics page, or -1. */
static long metric(const char *text, const char *needle)
{
	const char *p = strstr(text, needle);

	return p ? atol(p + strlen(needle)) : -1;
}

static long rss_kb(pid_t pid)
{
	char path[64], *text, *p;
	long kb = -1;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	text = tdh_read(path);
	if (text && (p = strstr(text, "VmRSS:")))
		kb = atol(p + 6);
	free(text);
	return kb;
}

/*
 * Off loopback (here: --require-signature), a request is judged on its head:
 * 40 clients announcing 4 MiB bodies each get their answer without the
 * server reading (or keeping) the bodies; signed requests have per-path caps.
 */
static void test_body_before_auth(void **state)
{
	struct tdh *t = *state;
	char *extra[] = {"--require-signature", NULL};
	enum { CLIENTS = 40 };
	const size_t big = 4u << 20;
	int fds[CLIENTS];
	char req[512], *chunk, *ans, *out = NULL;
	long before, after;
	uint16_t port;

	tdh_stop(t, B);
	t->c[B].extra = extra;
	tdh_start(t, B);
	port = t->c[B].tcp;
	before = rss_kb(t->c[B].pid);
	assert_true(before > 0);

	chunk = malloc(1 << 16);
	assert_non_null(chunk);
	memset(chunk, '{', 1 << 16);
	for (int i = 0; i < CLIENTS; i++) {
		fds[i] = connect_to(port, false);
		assert_true(fds[i] >= 0);
		snprintf(
		    req, sizeof(req),
		    "POST /things/lamp HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nContent-Type: application/json\r\n"
		    "Content-Length: %zu\r\n\r\n",
		    port, big);
		assert_int_equal(send(fds[i], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	}
	/* Each pushes its body as far as the server lets it. */
	for (int i = 0; i < CLIENTS; i++) {
		size_t sent = 0;
		int flags = fcntl(fds[i], F_GETFL);
		fcntl(fds[i], F_SETFL, flags | O_NONBLOCK);
		while (sent < big) {
			ssize_t n = send(fds[i], chunk, 1 << 16, MSG_NOSIGNAL);
			if (n <= 0)
				break;
			sent += (size_t)n;
		}
	}
	for (int i = 0; i < CLIENTS; i++) {
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
		ans = read_all(fds[i], 20000);
		/* Refused before the body: 413 (too large to read unsigned). */
		assert_int_equal(status_of(ans), 413);
		free(ans);
		close(fds[i]);
	}
	after = rss_kb(t->c[B].pid);
	/* Before this rule the bodies were read whole: 40 x 4 MiB = 160 MiB. */
	assert_true(after - before < 16 * 1024);
	free(chunk);

	/* A small unsigned body is answered in words. */
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":true}", NULL, &out), 401);
	assert_non_null(strstr(out, "signed request"));
	free(out);
	/* Signed, but past the path's cap (64 KiB for a set): refused unread. */
	{
		size_t n = 70 * 1024;
		char *body = malloc(n + 1);
		assert_non_null(body);
		memset(body, ' ', n);
		memcpy(body, "{\"value\":true}", 14);
		body[n] = '\0';
		assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", body, "PI-B", NULL), 413);
		free(body);
	}
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":true}", "PI-B", NULL), 200);
	assert_true(tdh_wait_value(t, A, "lamp", "1"));
	/* Counted, and the log did not grow a line per refusal. */
	assert_true(tdh_log_count(t, B, "http: refused") < CLIENTS / 2);
	ans = NULL;
	assert_int_equal(tdh_http(t, B, "GET", "/metrics", NULL, NULL, &ans), 200);
	/* 40 large and 1 small unsigned (and the start-up probes), 1 too large. */
	assert_true(metric(ans, "result=\"unauthorized\"} ") >= CLIENTS + 1);
	assert_int_equal(metric(ans, "result=\"too_large\"} "), 1);
	free(ans);
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":false}", "PI-B", NULL), 200);

	tdh_stop(t, B);
	t->c[B].extra = NULL;
	tdh_start(t, B);
}

static int count_fds(pid_t pid)
{
	char path[64];
	struct dirent *d;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir)))
		if (d->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

/* CPU time (user + system) of a process, in clock ticks. */
static long cpu_ticks(pid_t pid)
{
	char path[64], *text, *p;
	unsigned long ut = 0, st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	text = tdh_read(path);
	if (!text)
		return -1;
	p = strrchr(text, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
		free(text);
		return -1;
	}
	free(text);
	return (long)(ut + st);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/*
 * Idle connections cannot take the descriptors a controller needs: with a
 * descriptor limit of 256, 300 idle clients. Before, thingsd ran out of
 * descriptors and spun on accept(), writing a log line per try.
 */
static void test_idle_connections(void **state)
{
	struct tdh *t = *state;
	enum { IDLE = 300 };
	struct rlimit old, low;
	int fds[IDLE], n_open = 0, peak = 0;
	long cpu0, cpu1, log0, log1;
	uint64_t t0, t1;
	char *body = NULL;

	/* thingsd inherits the limit. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* The soft limit a shell gives (thingsd raises it to the hard limit). */
	low = old;
	low.rlim_cur = 256;
	tdh_stop(t, B);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	tdh_start(t, B);
	/* Every slot -1 first: the loop stops at 200, and the slots after it
	 * are closed below (garbage there closed the test's own stdout). */
	for (int i = 0; i < IDLE; i++)
		fds[i] = -1;
	for (int i = 0; i < IDLE; i++) {
		/* The test's own descriptors are limited too: keep room. */
		if (i >= 200)
			break;
		fds[i] = connect_to(t->c[B].tcp, true);
		if (fds[i] >= 0)
			n_open++;
	}
	log0 = file_size(t->c[B].log);
	cpu0 = cpu_ticks(t->c[B].pid);
	t0 = now_ms();
	while (now_ms() - t0 < 2000) {
		int n = count_fds(t->c[B].pid);
		if (n > peak)
			peak = n;
		usleep(100000);
	}
	cpu1 = cpu_ticks(t->c[B].pid);
	t1 = now_ms();
	log1 = file_size(t->c[B].log);
	print_message("idle: %d clients, thingsd peak fds %d, cpu %ld ticks in %llu ms, log +%ld bytes\n",
	              n_open, peak, cpu1 - cpu0, (unsigned long long)(t1 - t0), log1 - log0);
	/* The connection cap (64) plus the daemon's own descriptors, far below 256. */
	assert_true(peak > 0 && peak < 64 + 48);
	/* No spinning: a busy loop burns every tick of the 2 s. */
	assert_true((cpu1 - cpu0) * 1000 / sysconf(_SC_CLK_TCK) < (long)(t1 - t0) / 2);
	assert_true(log1 - log0 < 4096);
	/* The API still answers once the idle clients are gone. */
	for (int i = 0; i < IDLE; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, NULL, &body), 200);
	free(body);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* A client that drips its request a byte at a time is cut off. */
static void test_slow_client(void **state)
{
	struct tdh *t = *state;
	char *extra[] = {"--http-request-timeout", "2", NULL};
	const char *req = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
	uint64_t t0;
	bool closed = false;
	char *metrics = NULL;
	int fd, idle;
	char *ans;

	tdh_stop(t, B);
	t->c[B].extra = extra;
	tdh_start(t, B);
	fd = connect_to(t->c[B].tcp, false);
	assert_true(fd >= 0);
	/* And one that says nothing at all. */
	idle = connect_to(t->c[B].tcp, false);
	assert_true(idle >= 0);
	t0 = now_ms();
	for (size_t i = 0; now_ms() - t0 < 20000; i++) {
		char c = i < strlen(req) ? req[i] : 'a';
		char buf[16];
		struct pollfd p = {fd, POLLIN, 0};
		if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
			closed = true;
			break;
		}
		if (poll(&p, 1, 300) == 1 && recv(fd, buf, sizeof(buf), 0) <= 0) {
			closed = true;
			break;
		}
	}
	close(fd);
	/* Closed by the server while the client still trickled (it would have
	 * gone on for 20 s); that it was the request deadline, not anything
	 * else, the timeouts counter below says. No wall-clock bound here. */
	assert_true(closed);
	/* The silent one was closed by then too: EOF. */
	ans = read_all(idle, 5000);
	assert_string_equal(ans, "");
	free(ans);
	close(idle);
	assert_int_equal(tdh_http(t, B, "GET", "/metrics", NULL, NULL, &metrics), 200);
	assert_non_null(strstr(metrics, "thingsd_http_timeouts_total{controller=\"PI-B\"} 2"));
	free(metrics);
	tdh_stop(t, B);
	t->c[B].extra = NULL;
	tdh_start(t, B);
}

/* Sends `request` on a new connection and reads until `until` has come or
 * the server closed (give-up: 20 s); the connection stays open in *fd. */
static char *send_read_until(uint16_t port, const char *request, const char *until, int *fd)
{
	size_t len = 0, cap = 16384;
	char *buf = malloc(cap + 1);
	uint64_t end = now_ms() + 20000;

	assert_non_null(buf);
	*fd = connect_to(port, false);
	assert_true(*fd >= 0);
	assert_int_equal(send(*fd, request, strlen(request), MSG_NOSIGNAL), (ssize_t)strlen(request));
	buf[0] = '\0';
	while (!strstr(buf, until) && len < cap) {
		struct pollfd p = {*fd, POLLIN, 0};
		int left = (int)(end - now_ms());
		ssize_t n;
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		n = recv(*fd, buf + len, cap - len, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
	}
	return buf;
}

#define WATCHERS 32  /* thingsd's MAX_WATCHERS */
#define HELD     256 /* thingsd's MAX_HELD */

/* Until a new watcher is let in (one has gone): its connection, or -1. */
static bool watcher_taken(void *ud)
{
	int *fd = ((int **)ud)[0];
	const uint16_t *port = ((const uint16_t **)ud)[1];
	char *ans = send_read_until(*port, "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "hello", fd);
	bool ok = status_of(ans) == 200;

	free(ans);
	if (!ok) {
		close(*fd);
		*fd = -1;
	}
	return ok;
}

/*
 * The caps on what clients hold in thingsd: event streams (GET /events) and
 * requests waiting for the mesh (?wait_ms=). One past the cap is answered
 * 503 at once and the others go on; a place freed is taken again.
 */
static void test_held_capped(void **state)
{
	struct tdh *t = *state;
	char *extra[] = {"--http-max-connections", "400", NULL};
	const char *events = "GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
	static int fds[HELD + 1];
	char req[512], *ans;
	const char *body = "{\"value\":true}";
	int busy = 0, ok = 0, other = 0, extra_fd, again = -1;
	uint16_t port;
	const void *w[2];
	struct rlimit old, lim;

	/* The test's own descriptors: room for every connection. */
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	lim = old;
	if (lim.rlim_cur < 1024 && lim.rlim_max >= 1024)
		lim.rlim_cur = 1024;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
	tdh_stop(t, A);
	t->c[A].extra = extra;
	tdh_start(t, A);
	port = t->c[A].tcp;

	/* Event streams: WATCHERS open, the next refused, one closed lets one in. */
	for (int i = 0; i < WATCHERS; i++) {
		ans = send_read_until(port, events, "hello", &fds[i]);
		assert_int_equal(status_of(ans), 200);
		free(ans);
	}
	ans = send_read_until(port, events, "too many watchers", &extra_fd);
	assert_int_equal(status_of(ans), 503);
	assert_non_null(strstr(ans, "too many watchers"));
	free(ans);
	close(extra_fd);
	close(fds[0]);
	w[0] = &again;
	w[1] = &port;
	assert_true(tdh_wait(watcher_taken, w, TDH_WAIT_MS));
	close(again);
	for (int i = 1; i < WATCHERS; i++)
		close(fds[i]);

	/* Sets held while their owner is down: HELD wait, one more is refused,
	 * and when the owner is back the held ones are all answered done. */
	tdh_stop(t, B);
	snprintf(req, sizeof(req),
	         "POST /things/lamp?wait_ms=120000 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
	         "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
	         strlen(body), body);
	for (int i = 0; i <= HELD; i++) {
		fds[i] = connect_to(port, false);
		assert_true(fds[i] >= 0);
		assert_int_equal(send(fds[i], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	}
	/* The one past the cap is answered at once, whichever it is. */
	for (uint64_t end = now_ms() + TDH_WAIT_MS; !busy && now_ms() < end;) {
		for (int i = 0; i <= HELD && !busy; i++) {
			struct pollfd p = {fds[i], POLLIN, 0};
			if (fds[i] >= 0 && poll(&p, 1, 0) == 1) {
				ans = read_all(fds[i], 5000);
				if (status_of(ans) == 503 && strstr(ans, "too many requests waiting"))
					busy++;
				else
					fprintf(stderr, "held request %d answered early: %.80s\n", i, ans);
				free(ans);
				close(fds[i]);
				fds[i] = -1;
			}
		}
		if (!busy)
			poll(NULL, 0, 10);
	}
	assert_int_equal(busy, 1);
	tdh_start(t, B);
	for (int i = 0; i <= HELD; i++) {
		if (fds[i] < 0)
			continue;
		ans = read_all(fds[i], TDH_WAIT_MS);
		if (status_of(ans) == 200)
			ok++;
		else
			other++;
		if (status_of(ans) != 200 && other <= 3)
			fprintf(stderr, "held request %d: %.120s\n", i, ans);
		free(ans);
		close(fds[i]);
	}
	printf("%d event streams and %d held sets taken, one more of each refused (503)\n", WATCHERS, ok);
	assert_int_equal(ok, HELD);
	assert_int_equal(other, 0);
	tdh_stop(t, A);
	t->c[A].extra = NULL;
	tdh_start(t, A);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
}

/* The shell script of thingsd(8)'s SECURITY section signs as the daemons check. */
static void test_curl_script(void **state)
{
	struct tdh *t = *state;
	char *extra[] = {"--require-signature", NULL};
	const char *script = getenv("THINGSYNC_CURL");
	char cmd[2048], *key = tdh_path(t, "site.key"), *out_path = tdh_path(t, "curl.out"), *out;

	assert_non_null(script);
	tdh_stop(t, B);
	t->c[B].extra = extra;
	tdh_start(t, B);
	snprintf(cmd, sizeof(cmd),
	         "sh %s %s PI-B POST 'http://127.0.0.1:%u/things/lamp?wait_ms=3000' '{\"value\":true}' >%s",
	         script, key, t->c[B].tcp, out_path);
	assert_int_equal(system(cmd), 0);
	out = tdh_read(out_path);
	assert_non_null(out);
	assert_non_null(strstr(out, "\"value\":true"));
	free(out);
	assert_true(tdh_wait_value(t, A, "lamp", "1"));
	snprintf(cmd, sizeof(cmd), "sh %s %s PI-B GET http://127.0.0.1:%u/things/lamp >%s", script, key,
	         t->c[B].tcp, out_path);
	assert_int_equal(system(cmd), 0);
	out = tdh_read(out_path);
	assert_non_null(strstr(out, "\"owner\":\"PI-B\""));
	free(out);
	/* Signed for another controller: refused. */
	snprintf(cmd, sizeof(cmd), "sh %s %s PI-A GET http://127.0.0.1:%u/things/lamp >%s", script, key,
	         t->c[B].tcp, out_path);
	assert_int_equal(system(cmd), 0);
	out = tdh_read(out_path);
	assert_non_null(strstr(out, "wrong_target"));
	free(out);
	free(key);
	free(out_path);
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":false}", "PI-B", NULL), 200);
	tdh_stop(t, B);
	t->c[B].extra = NULL;
	tdh_start(t, B);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cross_site),       cmocka_unit_test(test_body_before_auth),
	    cmocka_unit_test(test_idle_connections), cmocka_unit_test(test_slow_client),
	    cmocka_unit_test(test_curl_script),      cmocka_unit_test(test_page),
	    cmocka_unit_test(test_dashboard_token),  cmocka_unit_test(test_held_capped),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
