/*
 * Running a site: reload with a good and a bad site.conf (by command, by
 * SIGHUP), the HTTP API with and without its signature, and deploy to every
 * controller: a good one, a forged one, a replayed one, and one that a
 * controller rejects while the others take it. Real daemons, each with its
 * own copy of site.conf as on a real site.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <thingsync/thingsync.h>

#include "tdh.h"

enum { A, B, C };

static const char *const names[] = {"PI-A", "PI-B", "PI-C"};

static const char base_things[] =
    "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\ndriver = virtual\n\n"
    "[thing lamp]\nowner = PI-B\ntype = bool\nusers = PI-A\ninitial = off\n\n";

static const char extra_things[] =
    "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\ndriver = virtual\n\n"
    "[thing lamp]\nowner = PI-B\ntype = bool\nusers = PI-A\ninitial = off\n\n"
    "[thing extra]\nowner = PI-B\ntype = int\nusers = PI-A\ninitial = 3\n\n";

static int setup(void **state)
{
	*state = tdh_new_started("tdadm", 3, names, NULL, base_things);
	return 0;
}

static long status_num(struct tdh *t, int i, const char *key)
{
	char *body = NULL, *v;
	long n = -1;

	if (tdh_http(t, i, "GET", "/status", NULL, NULL, &body) == 200 && (v = tdh_json_get(body, key))) {
		n = atol(v);
		free(v);
	}
	free(body);
	return n;
}

struct num_wait {
	struct tdh *t;
	int i;
	const char *key;
	long want;
};

static bool num_reached(void *ud)
{
	struct num_wait *w = ud;
	return status_num(w->t, w->i, w->key) >= w->want;
}

static bool wait_status(struct tdh *t, int i, const char *key, long want)
{
	struct num_wait w = {t, i, key, want};
	return tdh_wait(num_reached, &w, TDH_WAIT_MS);
}

static void test_reload_good(void **state)
{
	struct tdh *t = *state;

	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "counter", "7", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "7"));
	assert_int_equal(tdh_http(t, A, "GET", "/things/extra", NULL, NULL, NULL), 404);

	/* A new thing, by command on PI-A and by SIGHUP on PI-B. */
	t->things = extra_things;
	tdh_write_site(t);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-A", "reload", NULL), 0);
	assert_true(wait_status(t, A, "reloads", 1));
	kill(t->c[B].pid, SIGHUP);
	assert_true(wait_status(t, B, "reloads", 1));
	assert_true(tdh_wait_log(t, B, "reload (SIGHUP)"));
	/* The new thing flows, and the owned value came back from LMDB. */
	assert_true(tdh_wait_value(t, A, "extra", "3"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "extra", "4", NULL), 0);
	assert_true(tdh_wait_value(t, A, "extra", "4"));
	assert_true(tdh_wait_value(t, A, "counter", "7"));
	assert_true(tdh_wait_value(t, B, "counter", "7"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "counter", "8", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "8"));
	assert_true(tdh_wait_value(t, C, "counter", "8"));
}

static void test_reload_bad(void **state)
{
	struct tdh *t = *state;
	char *bad = tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                             "[thing broken]\nowner = PI-Z\ntype = bool\ncolour = red\n\n"
	                             "[thing weird]\nowner = PI-A\ntype = int\ndriver = bogus:x\n");
	char *err = NULL, line[200];

	tdh_write_conf(t, A, bad);
	tdh_write_conf(t, B, bad);
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-A", "reload", NULL), 4);
	/* Every mistake, with its file and line. */
	snprintf(line, sizeof(line), "%s:", t->c[A].conf);
	assert_non_null(strstr(err, "site_rejected"));
	assert_non_null(strstr(err, line));
	assert_non_null(strstr(err, "owner 'PI-Z' is not a controller"));
	assert_non_null(strstr(err, "unknown key 'colour'"));
	free(err);
	assert_true(tdh_wait_log(t, A, "rejected"));
	assert_true(tdh_log_has(t, A, line));
	assert_true(tdh_log_has(t, A, "owner 'PI-Z' is not a controller"));
	assert_int_equal(status_num(t, A, "reloads_failed"), 1);
	assert_int_equal(status_num(t, A, "reloads"), 1);

	/* SIGHUP: the same, in the log. */
	kill(t->c[B].pid, SIGHUP);
	assert_true(tdh_wait_log(t, B, "reload (SIGHUP) rejected"));
	snprintf(line, sizeof(line), "%s:", t->c[B].conf);
	assert_true(tdh_wait_log(t, B, line));

	/* Both run on as before. */
	assert_true(tdh_wait_value(t, A, "extra", "4"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "counter", "9", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "9"));
	free(bad);

	/* A bad driver string is a site.conf mistake too. */
	bad = tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                       "[thing weird]\nowner = PI-A\ntype = int\ndriver = bogus:x\n");
	tdh_write_conf(t, A, bad);
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-A", "cmd", "cmd_do", "reload", NULL), 4);
	assert_non_null(strstr(err, "err_cmd_failed"));
	free(err);
	assert_true(tdh_wait_log(t, A, "thing 'weird': driver: unknown driver 'bogus'"));
	free(bad);
	tdh_write_site(t);
}

/* Signed headers for a request, with a chosen time (what a client would send). */
static void signed_headers(struct tdh *t, const char *to, const char *method, const char *target, const char *body,
                           int64_t when, char hdr[5][160])
{
	char sha[TSYNC_HEX_BYTES + 1], sig[TSYNC_HEX_BYTES + 1];
	tsync_site *site = NULL;

	assert_int_equal(tsync_site_load(t->site, &site, NULL), 0);
	tsync_sha256_hex(body, body ? strlen(body) : 0, sha);
	assert_int_equal(tsync_site_sign_request(site, to, method, target, when, "test-nonce", sha, sig), 0);
	tsync_site_free(site);
	snprintf(hdr[0], 160, "X-Thingsync-To: %s", to);
	snprintf(hdr[1], 160, "X-Thingsync-Time: %lld", (long long)when);
	snprintf(hdr[2], 160, "X-Thingsync-Body-SHA256: %s", sha);
	snprintf(hdr[3], 160, "X-Thingsync-Signature: %s", sig);
	snprintf(hdr[4], 160, "X-Thingsync-Nonce: test-nonce");
}

static void test_signature(void **state)
{
	struct tdh *t = *state;
	char *extra_bind[] = {"--http-bind", "0.0.0.0", NULL};
	char *extra_require[] = {"--require-signature", NULL};
	char hdr[5][160], *err = NULL, *out = NULL, *other_site;
	const char *h[7];
	int64_t now = (int64_t)time(NULL);

	/* Off loopback every request but /metrics must be signed with the site key. */
	tdh_stop(t, B);
	t->c[B].extra = extra_bind;
	tdh_start(t, B);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, NULL, &out), 401);
	assert_non_null(strstr(out, "\"unauthorized\""));
	free(out);
	assert_int_equal(tdh_http(t, B, "GET", "/metrics", NULL, NULL, NULL), 200);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, "PI-B", NULL), 200);
	assert_int_equal(tdh_http(t, B, "POST", "/things/lamp", "{\"value\":true}", "PI-B", NULL), 200);
	/* The mesh does not care about HTTP signatures. */
	assert_true(tdh_wait_value(t, A, "lamp", "1"));
	/* thingsctl signs with the key it reads from site.conf. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-B", "get", "lamp", NULL), 0);

	/* A request captured on its way to one controller is refused by another,
	 * refused when replayed, and refused once its time is stale. */
	signed_headers(t, "PI-A", "POST", "/things/lamp", "{\"value\":false}", now, hdr);
	h[0] = hdr[0], h[1] = hdr[1], h[2] = hdr[2], h[3] = hdr[3], h[4] = hdr[4];
	h[5] = "Content-Type: application/json", h[6] = NULL;
	assert_int_equal(tdh_http_h(t, B, "POST", "/things/lamp", "{\"value\":false}", h, &out), 401);
	assert_non_null(strstr(out, "wrong_target"));
	free(out);
	signed_headers(t, "PI-B", "POST", "/things/lamp", "{\"value\":false}", now, hdr);
	assert_int_equal(tdh_http_h(t, B, "POST", "/things/lamp", "{\"value\":false}", h, NULL), 200);
	assert_int_equal(tdh_http_h(t, B, "POST", "/things/lamp", "{\"value\":false}", h, &out), 401);
	assert_non_null(strstr(out, "replayed"));
	free(out);
	signed_headers(t, "PI-B", "POST", "/things/lamp", "{\"value\":true}", now - 120, hdr);
	assert_int_equal(tdh_http_h(t, B, "POST", "/things/lamp", "{\"value\":true}", h, &out), 401);
	assert_non_null(strstr(out, "stale"));
	free(out);
	/* The body is signed through its hash: another body under the same headers is refused. */
	signed_headers(t, "PI-B", "POST", "/things/lamp", "{\"value\":false}", now, hdr);
	assert_int_equal(tdh_http_h(t, B, "POST", "/things/lamp", "{\"value\":true}", h, &out), 401);
	assert_non_null(strstr(out, "bad_body_hash"));
	free(out);
	/* A forged signature (another key). */
	other_site = tdh_path(t, "other.conf");
	{
		char *keyf = tdh_path(t, "other.key"), *text = tdh_site_text(t, t->things), *p;
		assert_int_equal(tsync_key_generate(keyf), 0);
		/* The same site with another key: what an attacker without the key has. */
		p = strstr(text, "key_file");
		assert_non_null(p);
		{
			char *eol = strchr(p, '\n'), *fixed = NULL;
			assert_true(asprintf(&fixed, "%.*skey_file = %s%s", (int)(p - text), text, keyf, eol) > 0);
			tdh_write(other_site, fixed);
			free(fixed);
		}
		free(text);
		free(keyf);
	}
	assert_int_equal(tdh_ctl(t, NULL, &err, "-c", other_site, "-n", "PI-B", "get", "lamp", NULL), 6);
	assert_non_null(strstr(err, "bad_signature"));
	free(err);
	free(other_site);
	assert_true(tdh_log_has(t, B, "http: refused"));
	/* No state changed through any refused request. */
	assert_true(tdh_wait_value(t, A, "lamp", "0"));

	/* Required on loopback too, when asked. */
	tdh_stop(t, B);
	t->c[B].extra = extra_require;
	tdh_start(t, B);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, NULL, NULL), 401);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, "PI-B", NULL), 200);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-B", "get", "lamp", NULL), 0);

	tdh_stop(t, B);
	t->c[B].extra = NULL;
	tdh_start(t, B);
	assert_int_equal(tdh_http(t, B, "GET", "/status", NULL, NULL, NULL), 200);
}

static bool conf_is(struct tdh *t, int i, const char *text)
{
	char *s = tdh_read(t->c[i].conf);
	bool ok = s && !strcmp(s, text);
	free(s);
	return ok;
}

static void test_deploy(void **state)
{
	struct tdh *t = *state;
	char *newp = tdh_path(t, "new-site.conf"), *out = NULL, *err = NULL, *body = NULL;
	char *text =
	    tdh_site_text(t, "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\n\n"
	                     "[thing lamp]\nowner = PI-B\ntype = bool\nusers = PI-A\ninitial = off\n\n"
	                     "[thing deployed_flag]\nowner = PI-C\ntype = bool\nusers = PI-A\n"
	                     "initial = on\n");
	char *before[3];

	/* To every controller: each checks, swaps and reloads. */
	tdh_write(newp, text);
	assert_int_equal(tdh_ctl(t, &out, NULL, "deploy", newp, NULL), 0);
	for (int i = 0; i < t->n; i++) {
		char want[64];
		snprintf(want, sizeof(want), "%-16s deployed", names[i]);
		assert_non_null(strstr(out, want));
		assert_true(wait_status(t, i, "deploys", 1));
		assert_true(conf_is(t, i, text));
		before[i] = tdh_read(t->c[i].conf);
	}
	free(out);
	assert_true(tdh_wait_value(t, A, "deployed_flag", "1"));
	assert_true(tdh_wait_value(t, B, "counter", "9"));

	/* Signed with another key: refused by every one, nothing changes. */
	{
		char *odir = tdh_path(t, "other"), *okey = tdh_path(t, "other/site.key"), *osite;
		char *otext = tdh_site_text(t, base_things);
		assert_int_equal(mkdir(odir, 0700), 0);
		assert_int_equal(tsync_key_generate(okey), 0);
		osite = tdh_path(t, "other/site.conf");
		tdh_write(osite, otext);
		/* The HTTP request itself is signed with that key: refused on its
		 * head, before the new site.conf is even read. */
		assert_int_equal(tdh_ctl(t, NULL, &err, "-c", osite, "deploy", newp, NULL), 6);
		assert_non_null(strstr(err, "bad_signature"));
		free(err);
		for (int i = 0; i < t->n; i++) {
			assert_true(tdh_wait_log(t, i, "http: refused POST /deploy"));
			assert_true(conf_is(t, i, before[i]));
		}
		free(odir);
		free(okey);
		free(osite);
		free(otext);
	}

	/* A replay: the right key, an old serial. */
	{
		tsync_site *site = NULL;
		uint8_t tag[TSYNC_TAG_BYTES];
		char msg[8192], hdr_tag[128] = "X-Thingsync-Tag: ";
		const char *headers[] = {hdr_tag, "X-Thingsync-Serial: 1", NULL};
		int n = snprintf(msg, sizeof(msg),
		                 "thingsync-deploy 2\nsite tdtest\ntargets *\nserial 1\n\n%s", text);
		size_t hl = strlen(hdr_tag);
		assert_int_equal(tsync_site_load(t->site, &site, NULL), 0);
		assert_int_equal(tsync_site_sign(site, msg, (size_t)n, tag), 0);
		tsync_site_free(site);
		for (int i = 0; i < TSYNC_TAG_BYTES; i++)
			snprintf(hdr_tag + hl + 2 * i, 3, "%02x", tag[i]);
		assert_int_equal(tdh_http_h(t, A, "POST", "/deploy", msg, headers, &body), 409);
		assert_non_null(strstr(body, "stale_serial"));
		free(body);
		assert_true(tdh_wait_log(t, A, "err_ip_in_replay deploy refused"));
		/* Unsigned: refused before anything is looked at. */
		assert_int_equal(tdh_http(t, A, "POST", "/deploy", text, NULL, NULL), 400);
		assert_true(conf_is(t, A, before[A]));
	}

	/* PI-C is not in this one: PI-A and PI-B take it, PI-C says why and
	 * keeps running on its own. */
	free(text);
	text = malloc(8192);
	snprintf(text, 8192,
	         "[site]\nname = tdtest\nkey_file = site.key\nretry_min_ms = 10\nretry_initial_ms = 50\n"
	         "retry_max_ms = 400\n\n[controller PI-A]\nhost = 127.0.0.1\nudp_port = %u\ntcp_port = %u\n"
	         "roles = cmd_do\n\n[controller PI-B]\nhost = 127.0.0.1\nudp_port = %u\ntcp_port = %u\n"
	         "roles = cmd_do\n\n[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B\n",
	         t->c[A].udp, t->c[A].tcp, t->c[B].udp, t->c[B].tcp);
	tdh_write(newp, text);
	assert_int_equal(tdh_ctl(t, &out, &err, "deploy", newp, NULL), 4);
	assert_non_null(strstr(out, "PI-C             NOT deployed"));
	assert_non_null(strstr(err, "controller 'PI-C' is not in this site"));
	free(out);
	free(err);
	assert_true(wait_status(t, A, "deploys", 2));
	assert_true(wait_status(t, B, "deploys", 2));
	assert_true(conf_is(t, A, text));
	assert_true(conf_is(t, C, before[C]));
	assert_true(tdh_wait_log(t, C, "deploy refused: the new site.conf is not valid here"));
	assert_int_equal(tdh_http(t, C, "GET", "/status", NULL, NULL, NULL), 200);
	assert_true(tdh_wait_value(t, B, "counter", "9"));
	for (int i = 0; i < t->n; i++)
		free(before[i]);
	free(text);
	free(newp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reload_good),
	    cmocka_unit_test(test_reload_bad),
	    cmocka_unit_test(test_signature),
	    cmocka_unit_test(test_deploy),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
