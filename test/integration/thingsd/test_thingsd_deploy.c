/*
 * What a deploy is for is signed with it: a deploy thingsctl sends to PI-B,
 * captured on its way and replayed to PI-C, is refused by PI-C, and so is
 * one signed for another site that shares the key.
 * The last deploy's serial outlives a restart without a state directory
 * (kept next to site.conf), so an older deploy captured earlier cannot roll
 * a controller back; and a controller that cannot keep the serial refuses
 * the deploy rather than forget it. Real daemons on loopback.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <thingsync/thingsync.h>

#include "tdh.h"

enum { A, B, C };

static const char *const names[] = {"PI-A", "PI-B", "PI-C"};

static const char base_things[] = "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n";

/* A deploy as thingsctl makes it (thingsd(8), DEPLOY): the envelope, and
 * its tag and serial headers. */
struct deploy {
	char *body;
	char tag[128], serial[64];
	const char *headers[4];
};

static void deploy_make(struct tdh *t, struct deploy *d, const char *site_name, const char *targets,
                        unsigned long long serial, const char *file)
{
	tsync_site *site = NULL;
	uint8_t tag[TSYNC_TAG_BYTES];
	size_t hl;

	assert_int_equal(tsync_site_load(t->site, &site, NULL), 0);
	assert_true(asprintf(&d->body, "thingsync-deploy 2\nsite %s\ntargets %s\nserial %llu\n\n%s",
	                     site_name, targets, serial, file) > 0);
	assert_int_equal(tsync_site_sign(site, d->body, strlen(d->body), tag), 0);
	tsync_site_free(site);
	snprintf(d->tag, sizeof(d->tag), "X-Thingsync-Tag: ");
	hl = strlen(d->tag);
	for (int i = 0; i < TSYNC_TAG_BYTES; i++)
		snprintf(d->tag + hl + 2 * i, 3, "%02x", tag[i]);
	snprintf(d->serial, sizeof(d->serial), "X-Thingsync-Serial: %llu", serial);
	d->headers[0] = d->tag;
	d->headers[1] = d->serial;
	d->headers[2] = "Content-Type: text/plain";
	d->headers[3] = NULL;
}

static long deploy_post(struct tdh *t, int i, const struct deploy *d, char **out)
{
	return tdh_http_h(t, i, "POST", "/deploy", d->body, d->headers, out);
}

struct up {
	struct tdh *t;
	int i;
};

static bool answers(void *ud)
{
	struct up *u = ud;
	long code = tdh_http(u->t, u->i, "GET", "/status", NULL, NULL, NULL);
	return code == 200 || code == 401;
}

/* PI-C runs as a controller without a state directory (no -s). */
static void start_stateless(struct tdh *t, int i)
{
	const char *argv[] = {getenv("THINGSD"), "-c", t->c[i].conf, "-n", t->c[i].name, NULL};
	struct up u = {t, i};

	assert_non_null(argv[0]);
	t->c[i].pid = tdh_spawn(argv, t->c[i].log);
	assert_true(tdh_wait(answers, &u, TDH_WAIT_MS));
}

static int setup(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));

	tdh_init(t, "tddeploy", 3, names, NULL, base_things);
	tdh_start(t, A);
	tdh_start(t, B);
	start_stateless(t, C);
	*state = t;
	return 0;
}

static bool conf_is(struct tdh *t, int i, const char *text)
{
	char *s = tdh_read(t->c[i].conf);
	bool ok = s && !strcmp(s, text);
	free(s);
	return ok;
}

/* The admin's site.conf with changes, as a second site.conf for thingsctl
 * -c: each `from`, the first time it occurs, becomes its `to` (NULL ends). */
static char *admin_conf(struct tdh *t, const char *file, ...)
{
	char *text = tdh_site_text(t, base_things), *path;
	const char *from;
	va_list ap;

	va_start(ap, file);
	while ((from = va_arg(ap, const char *))) {
		const char *to = va_arg(ap, const char *);
		char *at = strstr(text, from), *out = NULL;
		assert_non_null(at);
		assert_true(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)) > 0);
		free(text);
		text = out;
	}
	va_end(ap);
	path = tdh_path(t, file);
	tdh_write(path, text);
	free(text);
	return path;
}

/*
 * The wire between thingsctl and a controller: a listener on `port` takes
 * one request, keeps it whole in `path`, and answers as thingsd would when
 * it took the deploy. Run in a child process while thingsctl sends.
 */
static pid_t capture_start(uint16_t port, const char *path)
{
	struct sockaddr_in sa;
	int one = 1, ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	pid_t pid;

	assert_true(ls >= 0);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons(port);
	assert_int_equal(bind(ls, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(ls, 1), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		static char buf[1 << 16];
		static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		                         "Content-Length: 31\r\nConnection: close\r\n\r\n"
		                         "{\"deployed\":true,\"reload\":\"no\"}";
		size_t len = 0;
		bool continued = false;
		int c = accept(ls, NULL, NULL);
		FILE *f;
		while (c >= 0 && len < sizeof(buf) - 1) {
			ssize_t n = read(c, buf + len, sizeof(buf) - 1 - len);
			char *end, *cl;
			size_t hlen;
			if (n <= 0)
				break;
			len += (size_t)n;
			buf[len] = '\0';
			if (!(end = strstr(buf, "\r\n\r\n")))
				continue;
			hlen = (size_t)(end + 4 - buf);
			if (!continued && len == hlen && strcasestr(buf, "\r\nExpect: 100-continue")) {
				continued = write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 25;
				continue;
			}
			cl = strcasestr(buf, "\r\nContent-Length:");
			if (!cl || len >= hlen + strtoul(cl + 17, NULL, 10))
				break;
		}
		f = fopen(path, "w");
		if (f) {
			fwrite(buf, 1, len, f);
			fclose(f);
		}
		if (c >= 0 && write(c, ok, sizeof(ok) - 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(ls);
	return pid;
}

/* The deploy in a captured request: its body, tag and serial headers. */
static void capture_take(const char *path, struct deploy *d)
{
	char *req = tdh_read(path), *body, *h;

	assert_non_null(req);
	body = strstr(req, "\r\n\r\n");
	assert_non_null(body);
	*body = '\0';
	d->body = strdup(body + 4);
	h = strstr(req, "\r\nX-Thingsync-Tag: ");
	assert_non_null(h);
	snprintf(d->tag, sizeof(d->tag), "%.*s", (int)strcspn(h + 2, "\r"), h + 2);
	h = strstr(req, "\r\nX-Thingsync-Serial: ");
	assert_non_null(h);
	snprintf(d->serial, sizeof(d->serial), "%.*s", (int)strcspn(h + 2, "\r"), h + 2);
	d->headers[0] = d->tag;
	d->headers[1] = d->serial;
	d->headers[2] = "Content-Type: text/plain";
	d->headers[3] = NULL;
	free(req);
}

/* Runs `thingsctl -c CONF -n NAME deploy FILE` while its requests to NAME
 * are captured (CONF points NAME's tcp_port at `port`), and returns the
 * deploy as it went on the wire. */
static void capture_deploy(struct tdh *t, const char *conf, const char *name, uint16_t port, const char *file,
                           struct deploy *d)
{
	char *path = tdh_path(t, "captured.http");
	pid_t pid = capture_start(port, path);
	int status;

	assert_int_equal(tdh_ctl(t, NULL, NULL, "-c", conf, "-n", name, "deploy", file, NULL), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	capture_take(path, d);
	free(path);
}

static void test_deploy_for_one_controller_is_refused_by_another(void **state)
{
	struct tdh *t = *state;
	char *newp = tdh_path(t, "for-b.conf"), *out = NULL, *body = NULL, *wire, *before;
	char *text = tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                              "[thing for_b]\nowner = PI-B\ntype = bool\n");
	uint16_t port = tdh_tcp_port();
	char from[64], to[64];
	struct deploy d, list;

	tdh_write(newp, text);
	before = tdh_read(t->c[C].conf);
	/* To PI-B alone: PI-B takes it. */
	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-B", "deploy", newp, NULL), 0);
	assert_non_null(strstr(out, "PI-B             deployed"));
	free(out);
	assert_true(conf_is(t, B, text));

	/* Another deploy to PI-B, captured on its way... */
	snprintf(from, sizeof(from), "tcp_port = %u\n", t->c[B].tcp);
	snprintf(to, sizeof(to), "tcp_port = %u\n", port);
	wire = admin_conf(t, "wire-b.conf", from, to, NULL);
	capture_deploy(t, wire, "PI-B", port, newp, &d);
	/* ... is a good one where it was going (a newer serial)... */
	assert_int_equal(deploy_post(t, B, &d, NULL), 200);
	/* ... and refused by PI-C, which keeps its file. */
	assert_int_equal(deploy_post(t, C, &d, &body), 403);
	assert_non_null(strstr(body, "addressed to PI-B, not to PI-C"));
	free(body);
	assert_true(tdh_wait_log(t, C, "deploy refused: addressed to PI-B, not to PI-C"));
	assert_true(conf_is(t, C, before));

	/* A list of targets that does not name PI-C: refused too. */
	deploy_make(t, &list, "tdtest", "PI-A,PI-B", 4102444800000ull, text);
	assert_int_equal(deploy_post(t, C, &list, &body), 403);
	assert_non_null(strstr(body, "addressed to PI-A,PI-B, not to PI-C"));
	free(body);
	assert_true(conf_is(t, C, before));
	free(list.body);
	free(d.body);
	free(wire);
	free(before);
	free(newp);
	free(text);
}

static void test_deploy_for_another_site_is_refused(void **state)
{
	struct tdh *t = *state;
	char *newp = tdh_path(t, "other-site.conf"), *other, *body = NULL, *before;
	char *text = tdh_site_text(t, base_things);
	uint16_t port = tdh_tcp_port();
	char from[64], to[64];
	struct deploy d;

	tdh_write(newp, text);
	before = tdh_read(t->c[A].conf);
	/* Another site that shares the key sends a deploy to its PI-A... */
	snprintf(from, sizeof(from), "tcp_port = %u\n", t->c[A].tcp);
	snprintf(to, sizeof(to), "tcp_port = %u\n", port);
	other = admin_conf(t, "other-admin.conf", "name = tdtest\n", "name = elsewhere\n", from, to, NULL);
	capture_deploy(t, other, "PI-A", port, newp, &d);
	/* ... which reaches this site's PI-A. */
	assert_int_equal(deploy_post(t, A, &d, &body), 403);
	assert_non_null(strstr(body, "signed for site 'elsewhere', this is site 'tdtest'"));
	free(body);
	assert_true(tdh_wait_log(t, A, "deploy refused: signed for site 'elsewhere'"));
	assert_true(conf_is(t, A, before));
	free(d.body);
	free(other);
	free(before);
	free(newp);
	free(text);
}

static void test_serial_outlives_restart_without_state_dir(void **state)
{
	struct tdh *t = *state;
	char *v1 = tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                            "[thing v1]\nowner = PI-C\ntype = bool\n");
	char *v2 = tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                            "[thing v2]\nowner = PI-C\ntype = bool\n");
	char *serial_file = NULL, *s, *body = NULL;
	struct deploy old, cur;

	/* Two deploys to PI-C; the first is captured on its way. */
	deploy_make(t, &old, "tdtest", "PI-C", 1000, v1);
	deploy_make(t, &cur, "tdtest", "*", 2000, v2);
	assert_int_equal(deploy_post(t, C, &old, NULL), 200);
	assert_true(conf_is(t, C, v1));
	assert_int_equal(deploy_post(t, C, &cur, NULL), 200);
	assert_true(conf_is(t, C, v2));
	/* Without a state directory the serial is kept next to site.conf. */
	assert_true(asprintf(&serial_file, "%s.serial", t->c[C].conf) > 0);
	s = tdh_read(serial_file);
	assert_non_null(s);
	assert_string_equal(s, "2000\n");
	free(s);

	/* After a restart, the captured older deploy does not roll it back,
	 * nor does the running one come again. */
	tdh_stop(t, C);
	start_stateless(t, C);
	assert_int_equal(deploy_post(t, C, &old, &body), 409);
	assert_non_null(strstr(body, "stale_serial"));
	free(body);
	assert_int_equal(deploy_post(t, C, &cur, &body), 409);
	free(body);
	assert_true(conf_is(t, C, v2));
	assert_true(tdh_wait_log(t, C, "err_ip_in_replay deploy refused: serial 1000 is not newer"));

	/* Nowhere to keep the serial: the deploy is refused, not forgotten. */
	{
		struct deploy next;
		char *blocker = NULL;
		assert_int_equal(unlink(serial_file), 0);
		assert_int_equal(mkdir(serial_file, 0700), 0);
		assert_true(asprintf(&blocker, "%s/keep", serial_file) > 0);
		assert_int_equal(mkdir(blocker, 0700), 0);
		deploy_make(t, &next, "tdtest", "PI-C", 3000, v1);
		assert_int_not_equal(deploy_post(t, C, &next, &body), 200);
		assert_non_null(strstr(body, "cannot keep the deploy serial"));
		free(body);
		assert_true(conf_is(t, C, v2));
		free(next.body);
		assert_int_equal(rmdir(blocker), 0);
		assert_int_equal(rmdir(serial_file), 0);
		free(blocker);
	}
	free(old.body);
	free(cur.body);
	free(serial_file);
	free(v1);
	free(v2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_deploy_for_one_controller_is_refused_by_another),
	    cmocka_unit_test(test_deploy_for_another_site_is_refused),
	    cmocka_unit_test(test_serial_outlives_restart_without_state_dir),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
