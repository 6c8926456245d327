/*
 * thingsd's log under attack, and seed peers in legacy mode: real daemons on
 * loopback.
 *  - A flood of forged datagrams costs a handful of log lines, while the
 *    rejected counter counts every one, and the summaries add up to it.
 *  - A newline (or any control character) in a command's argument never
 *    starts a line of its own.
 *  - A seed controller's ask with "val": null (Python's None) is answered.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "tdh.h"

enum { A, B };

static const char *const names[] = {"PI-A", "PI-B"};
static const char *const roles[] = {"cmd_do", "cmd_do"};

static const char things[] = "[thing X]\nowner = PI-A\ntype = int\nusers = PI-B\ninitial = 7\n";

static int setup_keyed(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));

	tdh_init(t, "tdlogs", 2, names, roles, things);
	tdh_start_all(t);
	*state = t;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_newlines(const char *s)
{
	int n = 0;
	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

static int log_lines(struct tdh *t, int i)
{
	char *log = tdh_read(t->c[i].log);
	int n = count_newlines(log);
	free(log);
	return n;
}

/* A loopback UDP socket; port 0 lets the kernel choose. */
static int udp_socket(uint16_t port, uint16_t *bound)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	if (bound)
		*bound = ntohs(sa.sin_port);
	return fd;
}

static void send_to(int fd, uint16_t port, const void *buf, size_t len)
{
	struct sockaddr_in to;

	memset(&to, 0, sizeof(to));
	to.sin_family = AF_INET;
	to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	to.sin_port = htons(port);
	assert_int_equal(sendto(fd, buf, len, 0, (struct sockaddr *)&to, sizeof(to)), (ssize_t)len);
}

/* rejected_unknown.err_ip_in_auth on GET /peers, or -1 without an answer. */
static long long auth_rejections(struct tdh *t, int i)
{
	char *body = NULL, *v;
	long long n = -1;

	if (tdh_http(t, i, "GET", "/peers", NULL, NULL, &body) == 200) {
		v = tdh_json_get(body, "rejected_unknown.err_ip_in_auth");
		n = v ? strtoll(v, NULL, 10) : 0;
		free(v);
	}
	free(body);
	return n;
}

struct count_wait {
	struct tdh *t;
	int i;
	long long want, last;
};

static bool count_reached(void *ud)
{
	struct count_wait *w = ud;
	w->last = auth_rejections(w->t, w->i);
	return w->last >= w->want;
}

/* What the log says about one source: its full lines and the sum of the
 * counts its summaries held back. */
struct source_tally {
	int full, summaries;
	unsigned long long held_back;
};

static struct source_tally tally_source(struct tdh *t, int i, const char *src)
{
	struct source_tally st = {0, 0, 0};
	char *log = tdh_read(t->c[i].log), *save = NULL, summary[80];

	snprintf(summary, sizeof(summary), "err_ip_in_auth from %s: ", src);
	for (char *l = log ? strtok_r(log, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save)) {
		char *p = strstr(l, summary);
		if (p) {
			st.summaries++;
			st.held_back += strtoull(p + strlen(summary), NULL, 10);
		} else if ((p = strstr(l, "err_ip_in_auth from ")) && !strncmp(p + 20, src, strlen(src)) &&
		           !strncmp(p + 20 + strlen(src), " (unknown sender)", 17)) {
			st.full++;
		}
	}
	free(log);
	return st;
}

struct tally_wait {
	struct tdh *t;
	const char *src;
	unsigned long long want;
	struct source_tally st;
};

static bool tally_complete(void *ud)
{
	struct tally_wait *w = ud;
	w->st = tally_source(w->t, A, w->src);
	return w->st.full + w->st.held_back >= w->want;
}

/*
 * 20,000 forged datagrams from one address. They are sent in bursts that the
 * daemon's socket buffer holds whole, each burst once the counter shows the
 * one before it was read, so the kernel drops none and the counter must
 * equal what was sent, exactly.
 */
static void test_flood_is_counted_not_logged(void **state)
{
	enum { TOTAL = 20000, BURST = 100 };
	struct tdh *t = *state;
	struct count_wait cw = {t, A, 0, 0};
	struct tally_wait tw;
	struct source_tally st;
	unsigned char junk[200];
	char src[32], *log;
	uint16_t port;
	int fd = udp_socket(0, &port), before, after;
	uint32_t x = 2463534242u;
	int64_t t0;

	assert_int_equal(auth_rejections(t, A), 0);
	before = log_lines(t, A);
	t0 = now_ms();
	for (int sent = 0; sent < TOTAL;) {
		for (int k = 0; k < BURST; k++, sent++) {
			size_t len = 1 + sent % (sizeof(junk) - 1);
			/* Some look like envelopes with a made-up tag, the rest is
			 * noise: every one fails the tag check. */
			if (sent % 3 == 0) {
				int n =
				    snprintf((char *)junk, sizeof(junk),
				             "{\"v\":1,\"from\":\"PI-B\",\"boot\":1,\"seq\":%d,\"msgs\":[]}"
				             "0123456789abcdef",
				             sent + 1);
				len = (size_t)n;
			} else {
				for (size_t j = 0; j < len; j++) {
					x ^= x << 13, x ^= x >> 17, x ^= x << 5;
					junk[j] = (unsigned char)x;
				}
			}
			send_to(fd, t->c[A].udp, junk, len);
		}
		cw.want = sent;
		if (!tdh_wait(count_reached, &cw, TDH_WAIT_MS))
			fail_msg("after %d datagrams the counter shows %lld", sent, cw.last);
	}
	close(fd);
	/* Exact: nothing lost, nothing counted twice. */
	assert_int_equal(auth_rejections(t, A), TOTAL);

	/* The first one in full, then summaries that add up to the rest; they
	 * come once an interval (10 s) has passed. */
	snprintf(src, sizeof(src), "127.0.0.1:%u", port);
	tw = (struct tally_wait){t, src, TOTAL, {0, 0, 0}};
	if (!tdh_wait(tally_complete, &tw, TDH_WAIT_MS))
		fail_msg("the log grew by %d lines and tells of %d + %llu of %d datagrams from %s",
		         log_lines(t, A) - before, tw.st.full, tw.st.held_back, TOTAL, src);
	st = tw.st;
	assert_int_equal(st.full + st.held_back, TOTAL);
	assert_true(st.full >= 1);
	/* One summary per interval at most, one full line per quiet interval. */
	{
		int secs = (int)((now_ms() - t0) / 1000) + 1;
		assert_true(st.summaries >= 1);
		assert_true(st.summaries <= secs / 10 + 1);
		assert_true(st.full <= secs / 10 + 1);
	}
	/* A handful of lines, not 20,000. */
	after = log_lines(t, A);
	if (after - before > 8) {
		log = tdh_read(t->c[A].log);
		fail_msg("the log grew by %d lines:\n%s", after - before, log);
	}
	/* And the daemon is fine: the mesh still works. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "X", "8", NULL), 0);
	assert_true(tdh_wait_value(t, B, "X", "8"));
}

/* A line of the log that begins with `text` (after the daemon's own
 * timestamp and level, or at the very start of a line). */
static bool a_line_begins_with(const char *log, const char *text)
{
	size_t n = strlen(text);

	for (const char *l = log; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (!strncmp(l, text, n))
			return true;
	return false;
}

static void test_control_characters_escaped(void **state)
{
	struct tdh *t = *state;
	char *log;

	/* From a peer, over the mesh, and from a local client: a newline, a
	 * carriage return and a terminal escape in the reason. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-B", "cmd", "--to", "PI-A", "cmd_do", "logging",
	                         "{\"kwargs\":{\"reason\":\"hello\\nFORGED-LINE 00:00:00.000 ERROR PI-A: "
	                         "door opened\\r\\u001b[2Jend\"}}",
	                         NULL),
	                 0);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-A", "cmd", "cmd_do", "logging",
	                         "{\"kwargs\":{\"reason\":\"local\\nFORGED-LOCAL x\\n\",\"level\":\"warn\"}}",
	                         NULL),
	                 0);
	assert_true(tdh_wait_log(t, A, "logging from PI-B: hello"));
	assert_true(tdh_wait_log(t, A, "logging from http: local"));
	log = tdh_read(t->c[A].log);
	assert_non_null(log);
	if (a_line_begins_with(log, "FORGED-") || strchr(log, '\r') || strchr(log, 0x1b))
		fail_msg("a forged line or a raw control character in the log:\n%s", log);
	/* The text is all there, on its own line, escaped. */
	assert_non_null(strstr(log, "logging from PI-B: hello\\nFORGED-LINE 00:00:00.000 ERROR PI-A: door "
	                            "opened\\x0d\\x1b[2Jend\n"));
	assert_non_null(strstr(log, "logging from http: local\\nFORGED-LOCAL x\n"));
	free(log);
}

/* --- legacy mode, a seed peer ---------------------------------------------------- */

static int setup_legacy(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));
	const char *key_line = "key_file = site.key\n", *pi_b = "[controller PI-B]\n";
	char *text, *k, *edited;

	tdh_init(t, "tdlegacy", 2, names, roles, things);
	/* No key: legacy mode, and PI-B runs the seed software. */
	text = tdh_site_text(t, things);
	k = strstr(text, key_line);
	assert_non_null(k);
	assert_true(asprintf(&edited, "%.*s%s", (int)(k - text), text, k + strlen(key_line)) > 0);
	free(text);
	text = edited;
	k = strstr(text, pi_b);
	assert_non_null(k);
	assert_true(asprintf(&edited, "%.*sprotocol = seed\n%s", (int)(k - text + (ptrdiff_t)strlen(pi_b)),
	                     text, k + strlen(pi_b)) > 0);
	free(text);
	text = edited;
	tdh_write(t->site, text);
	tdh_write_conf(t, A, text);
	free(text);
	/* Only PI-A runs: the test is PI-B, on PI-B's listed address. */
	tdh_start(t, A);
	assert_true(tdh_wait_log(t, A, "legacy mode"));
	*state = t;
	return 0;
}

static bool str_is(json_t *s, const char *want)
{
	return json_is_string(s) && !strcmp(json_string_value(s), want);
}

/* Sends `ask` from PI-B's address and waits for PI-A's reply about X (PI-A
 * also sends X to its user on its own: sets, which are not the answer). */
static bool ask_answered(struct tdh *t, int fd, const char *ask, char *reply, size_t cap)
{
	int64_t end = now_ms() + TDH_WAIT_MS, next_send = 0;

	while (now_ms() < end) {
		struct pollfd pfd = {fd, POLLIN, 0};
		json_error_t jerr;
		json_t *root, *m;
		ssize_t n;

		/* UDP: the ask may be lost, so it is asked again now and then,
		 * as a seed controller would. */
		if (now_ms() >= next_send) {
			send_to(fd, t->c[A].udp, ask, strlen(ask));
			next_send = now_ms() + 500;
		}
		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = recv(fd, reply, cap - 1, 0);
		if (n <= 0)
			continue;
		reply[n] = '\0';
		root = json_loads(reply, 0, &jerr);
		m = json_is_array(root) ? json_array_get(root, 0) : NULL;
		if (m && str_is(json_object_get(m, "cmd"), "reply") &&
		    str_is(json_object_get(m, "io"), "X")) {
			json_decref(root);
			return true;
		}
		json_decref(root);
	}
	return false;
}

static void test_seed_ask_val_null(void **state)
{
	struct tdh *t = *state;
	char reply[2048];
	int fd = udp_socket(t->c[B].udp, NULL);
	json_error_t jerr;
	json_t *root;

	/* What a Python seed sends for an ask: "val": None. */
	if (!ask_answered(t, fd, "[{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"X\",\"val\":null}]", reply,
	                  sizeof(reply))) {
		char *log = tdh_read(t->c[A].log);
		fail_msg("no reply to an ask with val null; PI-A's log:\n%s", log);
	}
	/* The seed's plain list, with the owner's value. */
	root = json_loads(reply, 0, &jerr);
	assert_true(json_is_array(root));
	assert_int_equal(json_integer_value(json_object_get(json_array_get(root, 0), "val")), 7);
	assert_null(json_object_get(json_array_get(root, 0), "err"));
	json_decref(root);
	/* The same ask without val is answered too, and neither was refused. */
	assert_true(
	    ask_answered(t, fd, "[{\"type\":\"io\",\"cmd\":\"ask\",\"io\":\"X\"}]", reply, sizeof(reply)));
	assert_false(tdh_log_has(t, A, "err_ip_in_val"));
	close(fd);
}

static int teardown_legacy(void **state)
{
	struct tdh *t = *state;

	tdh_stop(t, A);
	tdh_fini(t);
	free(t);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_flood_is_counted_not_logged, setup_keyed, tdh_teardown),
	    cmocka_unit_test_setup_teardown(test_control_characters_escaped, setup_keyed, tdh_teardown),
	    cmocka_unit_test_setup_teardown(test_seed_ask_val_null, setup_legacy, teardown_legacy),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
