/*
 * thingsync-forensicd with real processes (issue 14): two thingsd owners,
 * thingsync-forensicd, and a stand-in for the push controller (cumul_sink:
 * a node that takes cumul_data requests and writes each to a file). Every
 * process reads the day clock from one file (THINGSYNC_TEST_CLOCK), which the
 * test moves: the site walks through midnights without waiting for them.
 *
 * The tests run in order on one site, each continuing the story:
 *  - a day of known changes (an owner restarting in the middle of it),
 *    collected with every field right, reported
 *    (report_command gets the text on stdin; a failing and a hanging one
 *    are reported), and pushed;
 *  - an owner off across midnight: collected when it returns, the day it
 *    missed closed once at its start, the reset that waited for it closing
 *    nothing; resets repeated close nothing;
 *  - forensicd down two days, then catching up; thingsctl cum and the
 *    seed's errors for bad input;
 *  - forensicd killed -9 at random moments while days go by: every
 *    (owner, day, thing) reaches the push controller exactly once;
 *  - forensic_days bounds the history;
 *  - a daylight-saving day (25 hours) collected as such.
 *
 * With the argument "defer", a node of the test's own asks for reports
 * while forensicd is killed -9 in the middle of report_command's run: see
 * test_deferred_kill9.
 *
 * With the argument "e2e", the push controller is the real thingsync-pushd
 * posting to a real thingsync-collectord (SQLite): days go by while
 * forensicd is killed -9, and the collector's cumuls table holds each
 * (owner, thing, day) once, as forensicd collected it, without a conflict,
 * and pushd journaled each once.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "../thingsd/tdh.h"
#include "harness.h"

#define A    0
#define B    1
#define FOR  2
#define PUSH 3
#define SRV  4 /* e2e: the collector */
#define ASK  5 /* defer: a node of the test's own that asks for reports */

/* 2026-06-10 00:00 in Europe/Berlin (CEST): a 24-hour day. */
#define T0  1781042400LL
#define DAY 86400LL
#define HR  3600LL

static const char *const names[] = {"PI-A", "PI-B", "FOR", "PUSH", "SRV", "ASK"};
static const char *const roles[] = {"cmd_do", "cmd_do", "forensics", "push", "collector", "asker"};
static const char things[] = "[thing door_front]\nowner = PI-A\ntype = bool\ninitial = 0\n\n"
                             "[thing is_armed]\nowner = PI-A\ntype = bool\ninitial = 0\n\n"
                             "[thing power_main]\nowner = PI-A\ntype = float\ninitial = 0\n\n"
                             "[thing heating_living]\nowner = PI-B\ntype = bool\ninitial = 0\n\n";
#define keys_fmt                                                                                             \
	"timezone = Europe/Berlin\ncumul_days = 40\nforensic_days = %d\n"                                    \
	"report_command = /bin/sh %s/report.sh\nreport_timeout_ms = 2000\n"                                  \
	"retry_min_ms = 10\nretry_initial_ms = 50\nretry_max_ms = 400\n"                                     \
	"down_after_ms = 1500\nmax_datagram = 900\n"

static struct tdh *t;
static char *clock_path, *sink_out, *report_sh, *report_out;
static char site_keys[1024];
static int64_t now_s;

/* --- the site ------------------------------------------------------------------------- */

static void set_clock(int64_t secs)
{
	char text[32];

	now_s = secs;
	snprintf(text, sizeof(text), "%lld\n", (long long)secs);
	tdh_write(clock_path, text);
}

static bool log_says(void *ud)
{
	const char **w = ud;
	return tdh_log_has(t, w[0][0] - '0', w[1]);
}

static bool api_up(void *ud)
{
	char *body = NULL;
	long code = tdh_http(t, FOR, "GET", "/v1/status", NULL, NULL, &body);
	(void)ud;
	free(body);
	return code == 200;
}

static void start_forensicd(bool wait_up)
{
	const char *argv[] = {getenv("FORENSICD"), "--site",        t->c[FOR].conf, "--controller", "FOR",
	                      "--state-dir",       t->c[FOR].state, "-v",           "debug",        NULL};

	assert_non_null(argv[0]);
	t->c[FOR].pid = tdh_spawn(argv, t->c[FOR].log);
	if (wait_up)
		assert_true(tdh_wait(api_up, NULL, TDH_WAIT_MS));
}

static void start_sink(void)
{
	const char *argv[] = {getenv("CUMUL_SINK"), t->c[PUSH].conf, "PUSH",
	                      t->c[PUSH].state,     sink_out,        NULL};
	const char *w[] = {"3", "sink up"};

	assert_non_null(argv[0]);
	t->c[PUSH].pid = tdh_spawn(argv, t->c[PUSH].log);
	assert_true(tdh_wait(log_says, w, TDH_WAIT_MS));
}

static json_t *get_json(int i, const char *path, long want)
{
	char *body = NULL;
	long code = tdh_http(t, i, "GET", path, NULL, NULL, &body);
	json_t *j;

	if (code != want)
		fail_msg("GET %s: %ld, not %ld: %s", path, code, want, body ? body : "");
	j = json_loads(body ? body : "", 0, NULL);
	free(body);
	assert_non_null(j);
	return j;
}

static void day_of(int64_t secs, char out[11])
{
	/* Labels of the test's days: T0 is 2026-06-10, and every day of the
	 * test is a 24-hour one. */
	time_t tt = (time_t)((secs - T0) / DAY * DAY + T0 + 12 * HR);
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

/* Whether forensicd's cursor of `owner` is at `day`. */
struct cursor_want {
	const char *owner;
	char day[11];
};

static bool cursor_at(void *ud)
{
	struct cursor_want *w = ud;
	char *body = NULL;
	json_t *j, *o;
	size_t i;
	bool ok = false;

	if (tdh_http(t, FOR, "GET", "/v1/status", NULL, NULL, &body) != 200) {
		free(body);
		return false;
	}
	j = json_loads(body, 0, NULL);
	free(body);
	json_array_foreach(json_object_get(j, "owners"), i, o)
	{
		if (!strcmp(json_string_value(json_object_get(o, "name")), w->owner))
			ok = !strcmp(json_string_value(json_object_get(o, "next")), w->day) &&
			     json_is_null(json_object_get(o, "collecting"));
	}
	json_decref(j);
	return ok;
}

static void wait_collected(const char *owner, const char *next)
{
	struct cursor_want w;

	w.owner = owner;
	snprintf(w.day, sizeof(w.day), "%s", next);
	if (!tdh_wait(cursor_at, &w, TDH_WAIT_MS)) {
		json_t *s = get_json(FOR, "/v1/status", 200);
		char *txt = json_dumps(s, JSON_INDENT(1));
		fail_msg("%s not collected up to %s: %s", owner, next, txt);
	}
}

static void set(const char *thing, const char *value)
{
	char *out = NULL, *err = NULL;
	int rc = tdh_ctl(t, &out, &err, "set", thing, value, NULL);

	if (rc != 0)
		fail_msg("set %s %s: %d %s%s", thing, value, rc, out ? out : "", err ? err : "");
	free(out);
	free(err);
}

static const json_t *cum_of(const json_t *day, const char *owner, const char *thing)
{
	const json_t *c = json_object_get(json_object_get(json_object_get(day, "owners"), owner), thing);
	if (!c)
		fail_msg("no cumul of %s/%s", owner, thing);
	return c;
}

static long long num(const json_t *o, const char *k)
{
	const json_t *v = json_object_get(o, k);
	if (!json_is_integer(v))
		fail_msg("%s is not an integer", k);
	return (long long)json_integer_value(v);
}

/* The sink's file: how often each (owner, day, thing) came, as an object
 * "OWNER/DAY/THING" -> count. */
static json_t *sink_counts(size_t *requests)
{
	char *text = tdh_read(sink_out), *line, *save = NULL;
	json_t *counts = json_object();

	*requests = 0;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		json_t *j = json_loads(line, 0, NULL), *c;
		const char *thing;
		char key[256];
		assert_non_null(j);
		assert_string_equal(json_string_value(json_object_get(j, "type")), "cumul_data");
		(*requests)++;
		json_object_foreach(json_object_get(j, "cumuls"), thing, c)
		{
			snprintf(key, sizeof(key), "%s/%s/%s", json_string_value(json_object_get(j, "owner")),
			         json_string_value(json_object_get(j, "day")), thing);
			json_object_set_new(
			    counts, key, json_integer(json_integer_value(json_object_get(counts, key)) + 1));
			/* Exactly as the owner answered that day. */
			assert_string_equal(json_string_value(json_object_get(c, "day")),
			                    json_string_value(json_object_get(j, "day")));
			assert_true(json_is_true(json_object_get(c, "closed")));
		}
		json_decref(j);
	}
	free(text);
	return counts;
}

/* Every (owner, day, thing) of days [first, last] pushed exactly once. */
static void assert_pushed_once(int64_t first_s, int64_t last_s)
{
	size_t requests;
	json_t *counts = sink_counts(&requests);
	const char *key;
	json_t *n;
	size_t want = 0;

	json_object_foreach(counts, key, n)
	{
		if (json_integer_value(n) != 1)
			fail_msg("%s pushed %lld times", key, (long long)json_integer_value(n));
	}
	for (int64_t d = first_s; d <= last_s; d += DAY) {
		char day[11], k[128];
		static const char *const all[][2] = {{"PI-A", "door_front"},
		                                     {"PI-A", "is_armed"},
		                                     {"PI-A", "power_main"},
		                                     {"PI-B", "heating_living"}};
		day_of(d, day);
		for (size_t i = 0; i < 4; i++) {
			snprintf(k, sizeof(k), "%s/%s/%s", all[i][0], day, all[i][1]);
			if (!json_object_get(counts, k))
				fail_msg("%s never pushed", k);
			want++;
		}
	}
	assert_int_equal(json_object_size(counts), want);
	printf("pushed: %zu cumuls of %zu (owner, day) in %zu cumul_data requests, each once\n", want,
	       want / 4 * 2, requests);
	json_decref(counts);
}

/* --- the tests ------------------------------------------------------------------------- */

/* The site of n controllers at T0, the clock file every process reads, and
 * the two owners started. */
static void site_up(const char *tag, int n, const char *site_things)
{
	t = calloc(1, sizeof(*t));
	assert_non_null(t);
	tdh_init(t, tag, n, names, roles, site_things);
	clock_path = tdh_path(t, "clock");
	report_sh = tdh_path(t, "report.sh");
	setenv("THINGSYNC_TEST_CLOCK", clock_path, 1);
	set_clock(T0);
	snprintf(site_keys, sizeof(site_keys), keys_fmt, 400, t->dir);
	t->site_keys = site_keys;
	tdh_write_site(t);
	tdh_write(report_sh, "cat >/dev/null\n");
	tdh_start(t, A);
	tdh_start(t, B);
}

static int setup(void **state)
{
	char script[1024];

	(void)state;
	site_up("forensicd", 4, things);
	sink_out = tdh_path(t, "sink.jsonl");
	report_out = tdh_path(t, "report.out");
	snprintf(script, sizeof(script), "cat > %s\n", report_out);
	tdh_write(report_sh, script);
	start_sink();
	start_forensicd(true);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	tdh_fini(t);
	free(t);
	free(clock_path);
	free(sink_out);
	free(report_sh);
	free(report_out);
	return 0;
}

/* Whether report_command's run number `arg` has ended (/v1/status). */
static bool report_ended(void *ud)
{
	char *body = NULL;
	json_t *j, *rc;
	bool ok;

	if (tdh_http(t, FOR, "GET", "/v1/status", NULL, NULL, &body) != 200) {
		free(body);
		return false;
	}
	j = json_loads(body, 0, NULL);
	free(body);
	rc = json_object_get(j, "report_command");
	ok = json_integer_value(json_object_get(rc, "runs")) >= *(const long long *)ud &&
	     json_is_false(json_object_get(rc, "running"));
	json_decref(j);
	return ok;
}

static void wait_report_ended(long long runs)
{
	if (!tdh_wait(report_ended, &runs, TDH_WAIT_MS)) {
		json_t *s = get_json(FOR, "/v1/status", 200);
		char *txt = json_dumps(json_object_get(s, "report_command"), JSON_COMPACT);
		fail_msg("report_command run %lld has not ended: %s", runs, txt);
	}
}

/* A day of known changes: every field of every cumul exactly. */
static void test_known_day(void **state)
{
	json_t *d, *rep;
	const json_t *c;
	char *out = NULL, *err = NULL, *text;
	int rc;

	(void)state;
	set_clock(T0 + 1 * HR);
	set("door_front", "1");
	set_clock(T0 + 1 * HR + 1800);
	set("door_front", "0");
	set_clock(T0 + 2 * HR);
	set("door_front", "1");
	set_clock(T0 + 2 * HR + 900);
	set("door_front", "0");
	set_clock(T0 + 3 * HR);
	set("is_armed", "1");
	set_clock(T0 + 4 * HR);
	set("power_main", "1000");
	set_clock(T0 + 5 * HR);
	set("heating_living", "1");
	set_clock(T0 + 6 * HR);
	set("power_main", "500");
	set_clock(T0 + 7 * HR + 1800);
	set("heating_living", "0");
	set_clock(T0 + 8 * HR);
	set("power_main", "0");
	set_clock(T0 + 9 * HR);
	set("is_armed", "0");
	/* PI-B restarts in the middle of the day: off for 10 minutes, then the
	 * day goes on from what its store kept. */
	set_clock(T0 + 10 * HR);
	tdh_stop(t, B);
	set_clock(T0 + 10 * HR + 600);
	tdh_start(t, B);

	/* Midnight: forensicd sends the reset for 2026-06-10 and collects it. */
	set_clock(T0 + DAY + 1);
	wait_collected("PI-A", "2026-06-11");
	wait_collected("PI-B", "2026-06-11");
	d = get_json(FOR, "/v1/days/2026-06-10", 200);

	c = cum_of(d, "PI-A", "door_front");
	assert_string_equal(json_string_value(json_object_get(c, "day")), "2026-06-10");
	assert_true(json_is_true(json_object_get(c, "closed")));
	assert_int_equal(num(c, "start_ms"), T0 * 1000);
	assert_int_equal(num(c, "end_ms"), (T0 + DAY) * 1000);
	assert_int_equal(num(c, "known_ms"), DAY * 1000);
	assert_int_equal(num(c, "unknown_ms"), 0);
	assert_int_equal(num(c, "down_ms"), 0);
	assert_int_equal(num(c, "changes"), 4);
	assert_int_equal(num(c, "rises"), 2);
	assert_int_equal(num(c, "on_ms"), 2700 * 1000);
	assert_int_equal(num(c, "off_ms"), (DAY - 2700) * 1000);
	assert_int_equal(num(c, "first_change_ms"), (T0 + HR) * 1000);
	assert_int_equal(num(c, "last_change_ms"), (T0 + 2 * HR + 900) * 1000);
	assert_true(json_is_false(json_object_get(c, "last")));
	assert_int_equal(num(c, "pulses"), 0);

	c = cum_of(d, "PI-A", "is_armed");
	assert_int_equal(num(c, "rises"), 1);
	assert_int_equal(num(c, "on_ms"), 6 * HR * 1000);
	assert_int_equal(num(c, "changes"), 2);

	c = cum_of(d, "PI-A", "power_main");
	assert_string_equal(json_string_value(json_object_get(c, "type")), "float");
	assert_int_equal(num(c, "changes"), 3);
	assert_true(json_number_value(json_object_get(c, "max")) == 1000.0);
	assert_int_equal(num(c, "max_at_ms"), (T0 + 4 * HR) * 1000);
	assert_true(json_number_value(json_object_get(c, "min")) == 0.0);
	assert_int_equal(num(c, "min_at_ms"), T0 * 1000);
	/* 1000 W for 2 h and 500 W for 2 h: 3000 Wh; over 24 h, a mean of 125 W. */
	assert_true(json_number_value(json_object_get(c, "integral")) == 3000.0);
	assert_true(json_number_value(json_object_get(c, "mean")) == 125.0);
	assert_true(json_number_value(json_object_get(c, "last")) == 0.0);

	/* Continued across its restart: the morning's heating is still there,
	 * the 10 minutes off are unknown. */
	c = cum_of(d, "PI-B", "heating_living");
	assert_int_equal(num(c, "rises"), 1);
	assert_int_equal(num(c, "on_ms"), 9000 * 1000);
	assert_int_equal(num(c, "known_ms"), (DAY - 600) * 1000);
	assert_int_equal(num(c, "down_ms"), 600 * 1000);
	assert_int_equal(num(c, "off_ms"), (DAY - 9000 - 600) * 1000);

	/* The report over the mesh: thingsctl through PI-A's API to FOR. */
	rc = tdh_ctl(t, &out, &err, "-n", "PI-A", "-t", "30", "cmd", "--to", "FOR", "forensics", "report",
	             "{\"day\":\"2026-06-10\"}", NULL);
	if (rc != 0)
		fail_msg("report: %d %s %s", rc, out ? out : "", err ? err : "");
	rep = json_loads(out, 0, NULL);
	assert_non_null(rep);
	{
		json_t *tot = json_object_get(rep, "totals");
		assert_string_equal(json_string_value(json_object_get(rep, "day")), "2026-06-10");
		assert_int_equal(num(tot, "armed"), 1);
		assert_int_equal(num(tot, "triggered"), 0);
		assert_int_equal(num(tot, "doors_opened"), 2);
		assert_true(json_number_value(json_object_get(tot, "heating_hours")) == 2.5);
		assert_true(json_number_value(json_object_get(tot, "energy_wh")) == 3000.0);
		/* Answered when the command ended, with its outcome. */
		json_t *rc_ = json_object_get(rep, "report_command");
		assert_true(json_is_true(json_object_get(rc_, "started")));
		assert_true(json_is_true(json_object_get(rc_, "ok")));
		assert_int_equal(num(rc_, "exit_status"), 0);
		assert_int_equal(num(rc_, "run"), 1);
	}
	json_decref(rep);
	free(out);
	free(err);
	wait_report_ended(1);
	/* report_command got the text on its stdin. */
	text = tdh_read(report_out);
	assert_non_null(text);
	assert_non_null(strstr(text, "2026-06-10"));
	assert_non_null(strstr(text, "Doors: opened 2 times"));
	assert_non_null(strstr(text, "Heating: 2.50 h"));
	assert_non_null(strstr(text, "Energy: 3000.000 Wh"));
	free(text);

	/* The whole report over HTTP too. */
	rep = get_json(FOR, "/v1/report?day=2026-06-10", 200);
	assert_non_null(strstr(json_string_value(json_object_get(rep, "text")), "Doors: opened 2 times"));
	assert_int_equal(
	    num(json_object_get(json_object_get(json_object_get(rep, "report"), "doors"), "door_front"),
	        "opened"),
	    2);
	json_decref(rep);

	/* A failing command: its exit status in /v1/status and the log. */
	tdh_write(report_sh, "cat >/dev/null; echo 'no mail today'; exit 3\n");
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "-n", "PI-A", "-t", "30", "cmd", "--to", "FOR", "forensics", "report",
	             NULL);
	assert_int_equal(rc, 0);
	rep = json_loads(out, 0, NULL);
	{
		/* The answer waited for the command: its exit status and what
		 * it printed (the requester repeated the request meanwhile: it
		 * ran once, run 2). */
		json_t *rc_ = json_object_get(rep, "report_command");
		assert_true(json_is_true(json_object_get(rc_, "started")));
		assert_true(json_is_false(json_object_get(rc_, "ok")));
		assert_int_equal(num(rc_, "exit_status"), 3);
		assert_int_equal(num(rc_, "run"), 2);
		assert_non_null(strstr(json_string_value(json_object_get(rc_, "output")), "no mail today"));
		assert_non_null(strstr(json_string_value(json_object_get(rc_, "error")), "exit status 3"));
	}
	json_decref(rep);
	free(out);
	free(err);
	wait_report_ended(2);
	{
		json_t *s = get_json(FOR, "/v1/status", 200);
		json_t *rc_ = json_object_get(s, "report_command");
		assert_non_null(
		    strstr(json_string_value(json_object_get(rc_, "last_error")), "exit status 3"));
		assert_int_equal(num(rc_, "failures"), 1);
		json_decref(s);
	}
	assert_true(tdh_log_has(t, FOR, "report_command failed"));
	assert_true(tdh_log_has(t, FOR, "no mail today"));
	/* One that hangs: killed at report_timeout_ms, reported as such. */
	tdh_write(report_sh, "sleep 60\n");
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "-n", "PI-A", "-t", "30", "cmd", "--to", "FOR", "forensics", "report",
	             NULL);
	assert_int_equal(rc, 0);
	rep = json_loads(out, 0, NULL);
	{
		/* Answered after report_timeout_ms (2 s: thingsctl repeated its
		 * request meanwhile), once, and run once. */
		json_t *rc_ = json_object_get(rep, "report_command");
		assert_true(json_is_true(json_object_get(rc_, "timed_out")));
		assert_true(json_is_false(json_object_get(rc_, "ok")));
		assert_int_equal(num(rc_, "run"), 3);
	}
	json_decref(rep);
	free(out);
	free(err);
	wait_report_ended(3);
	{
		json_t *s = get_json(FOR, "/v1/status", 200);
		assert_int_equal(num(json_object_get(s, "report_command"), "runs"), 3);
		assert_non_null(strstr(json_string_value(json_object_get(json_object_get(s, "report_command"),
		                                                         "last_error")),
		                       "timed out after 2000 ms"));
		json_decref(s);
	}

	/* Pushed: each thing of each owner's day once, as the owner answered it. */
	assert_pushed_once(T0, T0);
	{
		size_t n;
		json_t *counts = sink_counts(&n);
		/* PI-A's three cumuls do not fit one datagram of 900 bytes. */
		assert_true(n >= 3);
		json_decref(counts);
	}
	json_decref(d);
}

/* PI-B is off across midnight: collected when it returns; the day it
 * missed is closed once, at its start; the reset that waited for it, and
 * resets sent again, close nothing more. */
static void test_owner_off_across_midnight(void **state)
{
	json_t *d, *s, *o;
	const json_t *c;
	char *out = NULL, *err = NULL;
	size_t i;
	int rc;

	(void)state;
	set_clock(T0 + DAY + 12 * HR);
	tdh_stop(t, B);
	set_clock(T0 + 2 * DAY + 1);
	wait_collected("PI-A", "2026-06-12");
	s = get_json(FOR, "/v1/status", 200);
	json_array_foreach(json_object_get(s, "owners"), i, o)
	{
		if (strcmp(json_string_value(json_object_get(o, "name")), "PI-B"))
			continue;
		assert_string_equal(json_string_value(json_object_get(o, "next")), "2026-06-11");
		assert_true(json_is_true(json_object_get(o, "reset_pending")));
	}
	json_decref(s);

	set_clock(T0 + 2 * DAY + 8 * HR);
	tdh_start(t, B);
	wait_collected("PI-B", "2026-06-12");
	d = get_json(FOR, "/v1/days/2026-06-11", 200);
	c = cum_of(d, "PI-B", "heating_living");
	assert_int_equal(num(c, "down_ms"), 12 * HR * 1000);
	assert_int_equal(num(c, "unknown_ms"), 12 * HR * 1000);
	assert_int_equal(num(c, "known_ms"), 12 * HR * 1000);
	assert_int_equal(num(c, "end_ms"), (T0 + 2 * DAY) * 1000);
	json_decref(d);

	/* The reset for 2026-06-11 reached PI-B after its start: 2026-06-12 is whole. */
	rc = tdh_ctl(t, &out, &err, "cum", "heating_living", "--json", NULL);
	assert_int_equal(rc, 0);
	d = json_loads(out, 0, NULL);
	assert_non_null(d);
	assert_string_equal(json_string_value(json_object_get(d, "day")), "2026-06-12");
	assert_int_equal(num(d, "start_ms"), (T0 + 2 * DAY) * 1000);
	json_decref(d);
	free(out);
	free(err);
	/* Resets repeated: nothing more is closed. */
	for (int k = 0; k < 2; k++) {
		out = err = NULL;
		rc = tdh_ctl(t, &out, &err, "-n", "PI-B", "cmd", "--to", "PI-A", "--type", "cum",
		             "{\"day\":\"2026-06-11\"}", NULL);
		assert_int_equal(rc, 0);
		assert_non_null(strstr(out, "\"closed\": null"));
		free(out);
		free(err);
	}
	assert_int_equal(tdh_log_count(t, A, "cumuls of 2026-06-11 closed"), 1);
	assert_int_equal(tdh_log_count(t, B, "cumuls of 2026-06-11 closed"), 1);
	assert_int_equal(tdh_log_count(t, A, "closed (reset)"), 0);
	assert_int_equal(tdh_log_count(t, B, "closed (reset)"), 0);
	assert_pushed_once(T0, T0 + DAY);
}

/* forensicd is off for two midnights; started again, it catches up. */
static void test_down_two_days(void **state)
{
	json_t *d, *th;
	const json_t *c;
	char *out = NULL, *err = NULL;
	int rc;

	(void)state;
	set_clock(T0 + 2 * DAY + 10 * HR);
	tdh_stop(t, FOR);
	set_clock(T0 + 2 * DAY + 11 * HR);
	set("door_front", "1");
	set_clock(T0 + 2 * DAY + 12 * HR);
	set("door_front", "0");
	set_clock(T0 + 3 * DAY + 10 * HR);
	set("door_front", "1");
	set_clock(T0 + 3 * DAY + 10 * HR + 1800);
	set("door_front", "0");
	set_clock(T0 + 4 * DAY + 9 * HR);
	start_forensicd(true);
	wait_collected("PI-A", "2026-06-14");
	wait_collected("PI-B", "2026-06-14");
	d = get_json(FOR, "/v1/days/2026-06-12", 200);
	c = cum_of(d, "PI-A", "door_front");
	assert_int_equal(num(c, "rises"), 1);
	assert_int_equal(num(c, "on_ms"), HR * 1000);
	json_decref(d);
	d = get_json(FOR, "/v1/days/2026-06-13", 200);
	c = cum_of(d, "PI-A", "door_front");
	assert_int_equal(num(c, "rises"), 1);
	assert_int_equal(num(c, "on_ms"), 1800 * 1000);
	assert_int_equal(num(cum_of(d, "PI-B", "heating_living"), "known_ms"), DAY * 1000);
	json_decref(d);
	th = get_json(FOR, "/v1/things/door_front?from=2026-06-11&to=2026-06-13", 200);
	assert_int_equal(json_object_size(json_object_get(th, "days")), 3);
	assert_string_equal(json_string_value(json_object_get(th, "owner")), "PI-A");
	json_decref(th);
	d = get_json(FOR, "/v1/days", 200);
	assert_int_equal(json_array_size(json_object_get(d, "days")), 4); /* 06-10 .. 06-13 */
	json_decref(d);

	/* thingsctl cum, from the owner: text and JSON. */
	rc = tdh_ctl(t, &out, &err, "cum", "door_front", "--day", "2026-06-13", NULL);
	assert_int_equal(rc, 0);
	assert_non_null(strstr(out, "door_front (bool, owner PI-A): 2026-06-13, closed"));
	assert_non_null(strstr(out, "rises 1, on 0.50 h, off 23.50 h"));
	free(out);
	free(err);
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "cum", "power_main", "--day", "2026-06-10", "--json", NULL);
	assert_int_equal(rc, 0);
	d = json_loads(out, 0, NULL);
	assert_true(json_number_value(json_object_get(d, "integral")) == 3000.0);
	json_decref(d);
	free(out);
	free(err);
	/* Bad input gets the seed's names. */
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "cum", "door_front", "--day", "2001-01-01", NULL);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err, "err_ip_in_val"));
	free(out);
	free(err);
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "cum", "heating_living", "--to", "PI-A", NULL);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err, "err_ip_in_ths_i_use"));
	free(out);
	free(err);
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "cmd", "--to", "PI-A", "--type", "cum", "{\"fld\":\"ghost\"}", NULL);
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(err, "err_ip_in_io"));
	free(out);
	free(err);
	/* forensicd's API: a bad date, an unknown thing, a day not kept. */
	json_decref(get_json(FOR, "/v1/days/2026-13-45", 400));
	json_decref(get_json(FOR, "/v1/things/ghost", 404));
	json_decref(get_json(FOR, "/v1/days/2001-01-01", 404));
	json_decref(get_json(FOR, "/v1/things/door_front?from=yesterday", 400));
	assert_pushed_once(T0, T0 + 3 * DAY);
}

/* Days go by while forensicd is killed -9 at random moments: every
 * (owner, day, thing) reaches the push controller exactly once. */
static void test_kill9_exactly_once(void **state)
{
	const char *env = getenv("FORENSIC_KILL_ROUNDS");
	int rounds = env ? atoi(env) : 12, kills = 0;
	unsigned seed = (unsigned)time(NULL);
	char today[11];

	(void)state;
	printf("kill rounds %d, seed %u\n", rounds, seed);
	srand(seed);
	for (int r = 0; r < rounds; r++) {
		struct timespec ts;
		if (r % 2 == 0) {
			set_clock(now_s + DAY);
			set("door_front", r % 4 ? "1" : "0");
		}
		tdh_kill9(t, FOR);
		kills++;
		start_forensicd(false);
		ts.tv_sec = 0;
		ts.tv_nsec = (long)(rand() % 600) * 1000 * 1000;
		nanosleep(&ts, NULL);
	}
	tdh_kill9(t, FOR);
	start_forensicd(true);
	day_of(now_s, today);
	wait_collected("PI-A", today);
	wait_collected("PI-B", today);
	printf("%d kills -9 of forensicd\n", kills);
	assert_pushed_once(T0, now_s - DAY);
}

/* forensic_days bounds the history: a smaller bound drops the oldest days. */
static void test_bound(void **state)
{
	json_t *d;
	char today[11], oldest[11];

	(void)state;
	tdh_stop(t, FOR);
	snprintf(site_keys, sizeof(site_keys), keys_fmt, 3, t->dir);
	tdh_write_site(t);
	start_forensicd(true);
	day_of(now_s, today);
	day_of(now_s - 3 * DAY, oldest);
	d = get_json(FOR, "/v1/days", 200);
	assert_int_equal(json_array_size(json_object_get(d, "days")), 3);
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(json_object_get(d, "days"), 0), "day")), oldest);
	json_decref(d);
	json_decref(get_json(FOR, "/v1/days/2026-06-10", 404));
	{
		char *body = NULL;
		assert_int_equal(tdh_http(t, FOR, "GET", "/metrics", NULL, NULL, &body), 200);
		assert_non_null(strstr(body, "thingsync_forensicd_days_collected_total"));
		free(body);
	}
}

/* A daylight-saving day through the whole chain: 2026-10-25 in
 * Europe/Berlin has 25 hours, and so has its cumul as forensicd keeps it. */
static void test_dst_day(void **state)
{
	const int64_t oct24_noon = 1792836000, oct25 = 1792879200, oct26 = 1792969200;
	json_t *d;
	const json_t *c;

	(void)state;
	/* Months later (forensic_days is 3 now: the cursors jump ahead). */
	set_clock(oct24_noon);
	wait_collected("PI-A", "2026-10-24");
	wait_collected("PI-B", "2026-10-24");
	set_clock(oct26 + 1);
	wait_collected("PI-A", "2026-10-26");
	wait_collected("PI-B", "2026-10-26");
	d = get_json(FOR, "/v1/days/2026-10-25", 200);
	c = cum_of(d, "PI-B", "heating_living");
	assert_int_equal(num(c, "start_ms"), oct25 * 1000);
	assert_int_equal(num(c, "end_ms"), oct26 * 1000);
	assert_int_equal(num(c, "known_ms"), 25 * HR * 1000);
	assert_int_equal(num(c, "off_ms"), 25 * HR * 1000);
	c = cum_of(d, "PI-A", "door_front");
	assert_int_equal(num(c, "known_ms"), 25 * HR * 1000);
	json_decref(d);
	/* The day before began when the clock jumped to it, at noon. */
	d = get_json(FOR, "/v1/days/2026-10-24", 200);
	assert_int_equal(num(cum_of(d, "PI-A", "door_front"), "start_ms"), oct24_noon * 1000);
	assert_int_equal(num(cum_of(d, "PI-A", "door_front"), "end_ms"), oct25 * 1000);
	json_decref(d);
}

/*
 * report_command runs beside the event loop: while one waits (for a file
 * the test makes), forensicd serves HTTP, answers the mesh (a second
 * report, told the first has not ended) and goes on collecting; when it
 * ends, its outcome is in /v1/status, the first report is answered with
 * it (it was run once however often the request came meanwhile), and it
 * got the report on stdin.
 */
static bool report_running(void *ud)
{
	json_t *s = get_json(FOR, "/v1/status", 200);
	bool running = json_is_true(json_object_get(json_object_get(s, "report_command"), "running"));

	(void)ud;
	json_decref(s);
	return running;
}

/* A report_timeout_ms far beyond the test's limits (site.conf written
 * again): a run ends when the test tells it to. */
static void report_timeout_hour(void)
{
	char keys[sizeof(site_keys)], *p;

	snprintf(keys, sizeof(keys), "%s", site_keys);
	p = strstr(keys, "report_timeout_ms = 2000");
	assert_non_null(p);
	snprintf(site_keys, sizeof(site_keys), "%.*sreport_timeout_ms = 3600000%s", (int)(p - keys), keys,
	         p + strlen("report_timeout_ms = 2000"));
	tdh_write_site(t);
}

static void test_report_async(void **state)
{
	char script[1024], *flag = tdh_path(t, "report.go"), *out = NULL, *err = NULL;
	char *first_out;
	json_t *rep, *s;
	long long runs;
	pid_t child;
	int rc, status;

	(void)state;
	report_timeout_hour();
	tdh_stop(t, FOR);
	start_forensicd(true);
	snprintf(script, sizeof(script), "while [ ! -e %s ]; do sleep 0.05; done; cat > %s\n", flag,
	         report_out);
	tdh_write(report_sh, script);
	unlink(report_out);
	/* The first report is answered when its command ends: asked by a
	 * child, whose answer is read at the end. */
	s = get_json(FOR, "/v1/status", 200);
	runs = num(json_object_get(s, "report_command"), "runs") + 1;
	json_decref(s);
	first_out = tdh_path(t, "report.first");
	unlink(first_out);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		rc = tdh_ctl(t, &out, &err, "-n", "PI-A", "-t", "300", "cmd", "--to", "FOR", "forensics",
		             "report", NULL);
		if (rc == 0 && out)
			tdh_write(first_out, out);
		_exit(rc);
	}
	/* It waits; HTTP is served, and says so. */
	assert_true(tdh_wait(report_running, NULL, TDH_WAIT_MS));
	/* The mesh is answered: a second report, not started. */
	out = err = NULL;
	rc = tdh_ctl(t, &out, &err, "-n", "PI-A", "-t", "30", "cmd", "--to", "FOR", "forensics", "report",
	             NULL);
	if (rc != 0)
		fail_msg("second report: %d %s %s", rc, out ? out : "", err ? err : "");
	rep = json_loads(out, 0, NULL);
	assert_true(json_is_false(json_object_get(json_object_get(rep, "report_command"), "started")));
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(rep, "report_command"), "error")),
	                       "busy"));
	json_decref(rep);
	free(out);
	free(err);
	/* And the collection goes on: a day passes and is collected meanwhile. */
	set_clock(now_s + DAY);
	{
		char today[11];
		day_of(now_s, today);
		wait_collected("PI-A", today);
		wait_collected("PI-B", today);
	}
	s = get_json(FOR, "/v1/status", 200);
	assert_true(json_is_true(json_object_get(json_object_get(s, "report_command"), "running")));
	json_decref(s);
	/* Told to end: it read the report, and ended well; the first report
	 * is answered now, with that outcome, once. */
	tdh_write(flag, "go\n");
	wait_report_ended(runs);
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	out = tdh_read(first_out);
	assert_non_null(out);
	rep = json_loads(out, 0, NULL);
	assert_true(json_is_true(json_object_get(json_object_get(rep, "report_command"), "ok")));
	assert_int_equal(num(json_object_get(rep, "report_command"), "exit_status"), 0);
	assert_int_equal(num(json_object_get(rep, "report_command"), "run"), runs);
	json_decref(rep);
	free(out);
	free(first_out);
	s = get_json(FOR, "/v1/status", 200);
	assert_int_equal(num(json_object_get(s, "report_command"), "runs"), runs);
	json_decref(s);
	s = get_json(FOR, "/v1/status", 200);
	assert_true(json_is_null(json_object_get(json_object_get(s, "report_command"), "last_error")));
	json_decref(s);
	{
		char *text = tdh_read(report_out);
		assert_non_null(text);
		assert_non_null(strstr(text, "Doors:"));
		free(text);
	}
	free(flag);
}

/*
 * An owner new to forensicd is collected from yesterday on, and that first
 * cursor is kept at once: forensicd killed before the owner's first day is
 * collected (here the owner is down) starts again from it, days later, and
 * collects every day since. (It was kept only with the first collected day,
 * so each restart began at a later yesterday and skipped the days between:
 * test_forensicd_e2e's stall, the collector holding 89 of 444 cumuls, when
 * the kills of its loop all came before PI-B's first day of 71 things.)
 */
static void test_first_cursor_kept(void **state)
{
	char today[11], first[11], last[11], path[96];
	json_t *th;

	(void)state;
	/* A fresh install: no state, no bound but the usual one. */
	tdh_kill9(t, FOR);
	harness_rmdir(t->c[FOR].state);
	assert_int_equal(mkdir(t->c[FOR].state, 0700), 0);
	snprintf(site_keys, sizeof(site_keys), keys_fmt, 400, t->dir);
	tdh_write_site(t);
	tdh_stop(t, B);
	day_of(now_s, today);
	day_of(now_s - DAY, first);
	start_forensicd(true);
	/* It has begun: PI-A's first day (yesterday) is collected; PI-B's is not. */
	wait_collected("PI-A", today);
	tdh_kill9(t, FOR);
	set_clock(now_s + 2 * DAY);
	tdh_start(t, B);
	start_forensicd(true);
	day_of(now_s, today);
	day_of(now_s - DAY, last);
	wait_collected("PI-B", today);
	wait_collected("PI-A", today);
	/* Every day of PI-B from its first cursor: none skipped. */
	snprintf(path, sizeof(path), "/v1/things/heating_living?from=%s&to=%s", first, last);
	th = get_json(FOR, path, 200);
	if (json_object_size(json_object_get(th, "days")) != 3) {
		char *txt = json_dumps(th, JSON_COMPACT);
		fail_msg("PI-B's days %s to %s: %s", first, last, txt ? txt : "?");
	}
	json_decref(th);
}

/* --- end to end: the real pushd and collectord ------------------------------------------ */

#define E2E_GAUGES 70
#define E2E_THINGS (4 + E2E_GAUGES)
static char e2e_things[16384];

static bool http_ok(void *ud)
{
	const char *const *w = ud;
	char *body = NULL;
	long code = tdh_http(t, w[0][0] - '0', "GET", w[1], NULL, NULL, &body);
	free(body);
	return code == 200;
}

static void spawn_at(int i, const char *const *argv, const char *ready_path)
{
	char idx[2] = {(char)('0' + i), 0};
	const char *w[] = {idx, ready_path};

	assert_non_null(argv[0]);
	t->c[i].pid = tdh_spawn(argv, t->c[i].log);
	if (!tdh_wait(http_ok, w, TDH_WAIT_MS)) {
		char *log = tdh_read(t->c[i].log);
		fail_msg("%s did not come up: %s", t->c[i].name, log ? log : "");
	}
}

static bool pushd_up(void *ud)
{
	const char *w[] = {"3", "/status"};
	(void)ud;
	return http_ok(w);
}

/* The real pushd, posting to the collector; wait_up: until it serves HTTP. */
static void start_pushd(bool wait_up)
{
	char http[64];
	const char *argv[] = {getenv("PUSHD"), "--site",         t->c[PUSH].conf, "--controller",
	                      "PUSH",          "--state-dir",    t->c[PUSH].state, "--http",
	                      http,            "--retry-min-ms", "20",             "--retry-max-ms",
	                      "300",           NULL};

	snprintf(http, sizeof(http), "127.0.0.1:%u", t->c[PUSH].tcp);
	if (wait_up) {
		spawn_at(PUSH, argv, "/status");
		return;
	}
	assert_non_null(argv[0]);
	t->c[PUSH].pid = tdh_spawn(argv, t->c[PUSH].log);
}

static int setup_e2e(void **state)
{
	char db[600], listen[64];

	(void)state;
	/* PI-B owns more things than forensicd asks for at once (64): its days
	 * are asked in slices and pushed in many requests. */
	{
		size_t n = (size_t)snprintf(e2e_things, sizeof(e2e_things), "%s", things);
		for (int k = 0; k < E2E_GAUGES; k++)
			n += (size_t)snprintf(e2e_things + n, sizeof(e2e_things) - n,
			                      "[thing gauge_%d]\nowner = PI-B\ntype = int\ninitial = %d\n\n",
			                      k, k);
	}
	site_up("forensic-e2e", 5, e2e_things);
	snprintf(db, sizeof(db), "sqlite:%s/collector.db", t->dir);
	snprintf(listen, sizeof(listen), "127.0.0.1:%u", t->c[SRV].tcp);
	{
		const char *argv[] = {
		    getenv("COLLECTORD"), "--site", t->c[SRV].conf, "--listen", listen, "--db", db, NULL};
		spawn_at(SRV, argv, "/health");
	}
	start_pushd(true);
	start_forensicd(true);
	return 0;
}

static int teardown_e2e(void **state)
{
	(void)state;
	tdh_fini(t);
	free(t);
	free(clock_path);
	free(report_sh);
	return 0;
}


/* The collector's rows (of days [from, to], if given), at least `want`. */
struct range_want {
	char from[11], to[11];
	size_t want;
	json_t *last;
};

static bool collector_range_has(void *ud)
{
	struct range_want *w = ud;
	char *body = NULL, path[128];
	json_t *j;

	if (w->from[0])
		snprintf(path, sizeof(path), "/v1/cumuls?from=%s&to=%s&limit=10000", w->from, w->to);
	else
		snprintf(path, sizeof(path), "/v1/cumuls?limit=10000");
	if (tdh_http(t, SRV, "GET", path, NULL, NULL, &body) != 200) {
		free(body);
		return false;
	}
	j = json_loads(body, 0, NULL);
	free(body);
	json_decref(w->last);
	w->last = j;
	return json_array_size(json_object_get(j, "cumuls")) >= w->want;
}

/* The collector's rows as "OWNER/DAY/THING" -> row, each key once. */
static json_t *rows_once(json_t *rows)
{
	json_t *seen = json_object(), *row;
	size_t i;

	json_array_foreach(rows, i, row)
	{
		char key[256];
		snprintf(key, sizeof(key), "%s/%s/%s", json_string_value(json_object_get(row, "owner")),
		         json_string_value(json_object_get(row, "day")),
		         json_string_value(json_object_get(row, "thing")));
		if (json_object_get(seen, key))
			fail_msg("%s twice in the collector's table", key);
		json_object_set_new(seen, key, json_incref(row));
	}
	return seen;
}

/* The collector does not get every cumul: what each stage says, for the
 * next one to read (the rows per day, forensicd's and pushd's status, the
 * end of each daemon's log), then the failure. */
static void e2e_stalled(const struct range_want *w)
{
	json_t *per_day = json_object(), *row;
	const char *const logs[] = {"FOR.log", "PUSH.log", "SRV.log"};
	char *txt;
	size_t i;

	json_array_foreach(json_object_get(w->last, "cumuls"), i, row)
	{
		const char *day = json_string_value(json_object_get(row, "day"));
		if (day)
			json_object_set_new(per_day, day,
			                    json_integer(json_integer_value(json_object_get(per_day, day)) + 1));
	}
	txt = json_dumps(per_day, JSON_COMPACT | JSON_SORT_KEYS);
	fprintf(stderr, "collector rows per day: %s\n", txt ? txt : "?");
	free(txt);
	json_decref(per_day);
	for (i = 0; i < 2; i++) {
		char *body = NULL;
		long code = tdh_http(t, i ? PUSH : FOR, "GET", i ? "/status" : "/v1/status", NULL, NULL, &body);
		fprintf(stderr, "%s's status (%ld): %s\n", i ? "pushd" : "forensicd", code, body ? body : "");
		free(body);
	}
	for (i = 0; i < sizeof(logs) / sizeof(logs[0]); i++)
		harness_print_log(t->dir, logs[i]);
	fail_msg("the collector has %zu cumuls, not %zu (see above)", json_array_size(json_object_get(w->last, "cumuls")),
	         w->want);
}

static void test_e2e_collector_table(void **state)
{
	const int days = 6;
	struct range_want w = {"", "", (size_t)days * E2E_THINGS, NULL};
	json_t *seen, *st, *d;
	char today[11], *body = NULL;

	(void)state;
	set_clock(T0 + 2 * HR);
	set("door_front", "1");
	set_clock(T0 + 3 * HR);
	set("door_front", "0");
	set("power_main", "250.5");
	srand((unsigned)time(NULL));
	for (int k = 1; k <= days; k++) {
		struct timespec ts = {0, (long)(rand() % 400) * 1000 * 1000};
		set_clock(T0 + k * DAY + 60);
		/* forensicd killed at a random moment of each day's collection. */
		nanosleep(&ts, NULL);
		tdh_kill9(t, FOR);
		start_forensicd(false);
	}
	assert_true(tdh_wait(api_up, NULL, TDH_WAIT_MS));
	day_of(now_s, today);
	wait_collected("PI-A", today);
	wait_collected("PI-B", today);
	if (!tdh_wait(collector_range_has, &w, TDH_WAIT_MS))
		e2e_stalled(&w);
	seen = rows_once(json_object_get(w.last, "cumuls"));
	assert_int_equal(json_object_size(seen), (size_t)days * E2E_THINGS);
	/* A gauge of PI-B, asked in the second slice, held its initial value all day. */
	{
		const json_t *g = json_object_get(json_object_get(seen, "PI-B/2026-06-12/gauge_69"), "cumul");
		assert_non_null(g);
		assert_int_equal(num(g, "min"), 69);
		assert_int_equal(num(g, "known_ms"), DAY * 1000);
	}
	/* As forensicd collected it from the owner. */
	d = get_json(FOR, "/v1/days/2026-06-10", 200);
	assert_true(
	    json_equal((json_t *)cum_of(d, "PI-A", "door_front"),
	               json_object_get(json_object_get(seen, "PI-A/2026-06-10/door_front"), "cumul")));
	assert_int_equal(
	    num(json_object_get(json_object_get(seen, "PI-A/2026-06-10/door_front"), "cumul"), "rises"), 1);
	json_decref(d);
	/* pushd journaled each once, and the collector saw no conflicting copy. */
	st = get_json(PUSH, "/status", 200);
	assert_int_equal(num(json_object_get(st, "intake"), "cumuls"), days * E2E_THINGS);
	json_decref(st);
	assert_int_equal(tdh_http(t, SRV, "GET", "/v1/alarms", NULL, NULL, &body), 200);
	assert_null(strstr(body, "cumul_conflict"));
	free(body);
	printf("collector: %zu cumuls of %d days, each (owner, thing, day) once, across %d kills -9 of "
	       "forensicd\n",
	       json_object_size(seen), days, days);
	/* What one day of the whole site costs forensicd's store: a fresh start
	 * that collects and pushes one day of both owners. */
	tdh_stop(t, FOR);
	set_clock(now_s + DAY);
	start_forensicd(true);
	day_of(now_s, today);
	wait_collected("PI-A", today);
	wait_collected("PI-B", today);
	st = get_json(FOR, "/v1/status", 200);
	printf("one day of %d things: forensicd's store %lld commits, %lld bytes written\n", E2E_THINGS,
	       num(json_object_get(st, "store"), "commits"), num(json_object_get(st, "store"), "bytes"));
	json_decref(st);
	json_decref(seen);
	json_decref(w.last);
}


static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000 * 1000};
	nanosleep(&ts, NULL);
}

/*
 * pushd killed -9 at random moments while closed days are pushed to it, and
 * every third round forensicd too (its unanswered cumul_data are then
 * resumed by its node, without a callback): a request pushd took but whose
 * journal commit the kill lost is answered "outcome unknown"
 * (TSYNC_EPEER_RESTARTED) and must be sent again. The collector's cumuls
 * table holds every (owner, thing, day) of those days exactly once, as
 * forensicd collected it, and no cumul_conflict.
 */
static void test_e2e_pushd_kill9(void **state)
{
	const char *env = getenv("FORENSIC_KILL_ROUNDS");
	int rounds = env ? atoi(env) : 24, pushd_kills = 0, fd_kills = 0, days = 0;
	unsigned seed = (unsigned)time(NULL);
	struct range_want w;
	json_t *seen, *row, *st;
	char today[11], *body = NULL;

	(void)state;
	printf("pushd kill rounds %d, seed %u\n", rounds, seed);
	srand(seed);
	memset(&w, 0, sizeof(w));
	day_of(now_s, w.from);
	for (int r = 0; r < rounds; r++) {
		set_clock(now_s + DAY);
		days++;
		set("power_main", r % 2 ? "12.5" : "99");
		/* Into the day's collection and push, at a random moment. */
		sleep_ms(rand() % 700);
		tdh_kill9(t, PUSH);
		pushd_kills++;
		if (r % 3 == 2) {
			sleep_ms(rand() % 200);
			tdh_kill9(t, FOR);
			fd_kills++;
			start_forensicd(false);
		}
		sleep_ms(rand() % 300);
		start_pushd(false);
	}
	/* And a few more kills of pushd while the last days drain. */
	for (int r = 0; r < 4; r++) {
		sleep_ms(100 + rand() % 400);
		tdh_kill9(t, PUSH);
		pushd_kills++;
		start_pushd(false);
	}
	assert_true(tdh_wait(pushd_up, NULL, TDH_WAIT_MS));
	assert_true(tdh_wait(api_up, NULL, TDH_WAIT_MS));
	day_of(now_s, today);
	day_of(now_s - DAY, w.to);
	wait_collected("PI-A", today);
	wait_collected("PI-B", today);
	w.want = (size_t)days * E2E_THINGS;
	if (!tdh_wait(collector_range_has, &w, TDH_WAIT_MS)) {
		st = get_json(FOR, "/v1/status", 200);
		char *txt = json_dumps(json_object_get(st, "push"), JSON_COMPACT);
		fail_msg("the collector has %zu cumuls of %s..%s, not %zu (forensicd's push: %s)",
		         json_array_size(json_object_get(w.last, "cumuls")), w.from, w.to, w.want, txt);
	}
	seen = rows_once(json_object_get(w.last, "cumuls"));
	assert_int_equal(json_object_size(seen), w.want);
	/* Each as forensicd collected it from the owner, every thing of every day. */
	for (int64_t d = now_s - days * DAY; d < now_s - DAY / 2; d += DAY) {
		char day[11], path[64];
		json_t *fdday, *owners, *ths, *c;
		const char *owner, *thing;
		size_t n = 0;
		day_of(d, day);
		snprintf(path, sizeof(path), "/v1/days/%s", day);
		fdday = get_json(FOR, path, 200);
		owners = json_object_get(fdday, "owners");
		json_object_foreach(owners, owner, ths)
		{
			json_object_foreach(ths, thing, c)
			{
				char key[256];
				snprintf(key, sizeof(key), "%s/%s/%s", owner, day, thing);
				row = json_object_get(seen, key);
				if (!row)
					fail_msg("%s is not in the collector's table", key);
				if (!json_equal(c, json_object_get(row, "cumul")))
					fail_msg("%s differs between forensicd and the collector", key);
				n++;
			}
		}
		assert_int_equal(n, E2E_THINGS);
		json_decref(fdday);
	}
	assert_int_equal(tdh_http(t, SRV, "GET", "/v1/alarms", NULL, NULL, &body), 200);
	assert_null(strstr(body, "cumul_conflict"));
	free(body);
	st = get_json(FOR, "/v1/status", 200);
	printf("collector: %zu cumuls of %d days, each (owner, thing, day) once, across %d kills -9 of "
	       "pushd and %d of forensicd (its last run: %lld cumul_data sent again on an unknown "
	       "outcome, %lld at its start)\n",
	       json_object_size(seen), days, pushd_kills, fd_kills,
	       num(json_object_get(st, "push"), "resent"), num(json_object_get(st, "push"), "resumed"));
	json_decref(st);
	json_decref(seen);
	json_decref(w.last);
}

/* --- deferred answers across kill -9 ------------------------------------------------------ */

/* What the asker's done callback got, and how often. */
struct asked {
	int calls, status;
	char *result;
};

static tsync_node *asker;
static char *runs_path, *go_path;

static void asked_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct asked *a = ud;

	(void)node;
	a->calls++;
	a->status = status;
	free(a->result);
	a->result = result ? strdup(result) : NULL;
}

/* How many runs of report_command have started (each wrote a line: its
 * pid, which is its process group); *last: the last one's. */
static int runs_started(pid_t *last)
{
	char *text = tdh_read(runs_path), *line, *save = NULL;
	int n = 0;

	for (line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		n++;
		if (last)
			*last = (pid_t)atol(line);
	}
	free(text);
	return n;
}

/* Predicates that run the asker's loop while they are asked. */
static bool run_started(void *ud)
{
	tsync_node_run_for(asker, 10);
	return runs_started(NULL) >= *(const int *)ud;
}

static bool answered(void *ud)
{
	tsync_node_run_for(asker, 10);
	return ((const struct asked *)ud)->calls > 0;
}

static void wait_run(int n)
{
	if (!tdh_wait(run_started, &n, TDH_WAIT_MS))
		fail_msg("report_command's run %d has not started (%d did)", n, runs_started(NULL));
}

static void wait_answer(struct asked *a, const char *what)
{
	if (!tdh_wait(answered, a, TDH_WAIT_MS)) {
		char *log = tdh_read(t->c[FOR].log);
		fail_msg("no answer to the %s report request; forensicd's log: %s", what, log ? log : "");
	}
}

static int setup_defer(void **state)
{
	char script[1024];
	tsync_node_options o;

	(void)state;
	site_up("forensic-defer", 6, things);
	report_timeout_hour();
	runs_path = tdh_path(t, "runs");
	go_path = tdh_path(t, "report.go");
	/* A run says it started, reads the report, and waits until told to
	 * end: a kill of forensicd always finds it running. */
	snprintf(script, sizeof(script),
	         "echo $$ >> %s\ncat >/dev/null\nwhile [ ! -e %s ]; do sleep 0.05; done\necho reported\n",
	         runs_path, go_path);
	tdh_write(report_sh, script);
	start_forensicd(true);
	/* A day collected, to report on. */
	set_clock(T0 + DAY + 1);
	wait_collected("PI-A", "2026-06-11");
	wait_collected("PI-B", "2026-06-11");
	assert_int_equal(mkdir(t->c[ASK].state, 0700), 0);
	tsync_node_options_init(&o);
	o.site_path = t->c[ASK].conf;
	o.controller = names[ASK];
	o.state_dir = t->c[ASK].state;
	o.log = harness_log;
	assert_int_equal(tsync_node_new(&o, &asker), 0);
	return 0;
}

static int teardown_defer(void **state)
{
	pid_t last = 0;

	(void)state;
	if (runs_path && runs_started(&last) > 0)
		kill(-last, SIGKILL); /* a run a failed check left waiting */
	tsync_node_free(asker);
	asker = NULL;
	tdh_fini(t);
	free(t);
	free(clock_path);
	free(report_sh);
	free(runs_path);
	free(go_path);
	return 0;
}

/*
 * The mesh's report request is answered when report_command ends (a
 * deferred answer), its "outcome unknown" on disk before the command
 * starts. forensicd is killed -9 at a random moment of the command's run,
 * and started again after a random pause (at times beyond down_after_ms):
 * the asker's done is called once, with TSYNC_EPEER_RESTARTED, never a
 * success; the repeats of the request that reached the new forensicd did
 * not run the command again; and a new request runs it and is answered
 * with its real outcome (and the first request still got one answer).
 */
static void test_deferred_kill9(void **state)
{
	const char *env = getenv("FORENSIC_DEFER_ROUNDS");
	int rounds = env ? atoi(env) : 4;
	unsigned seed = (unsigned)time(NULL);

	(void)state;
	printf("deferred kill rounds %d, seed %u\n", rounds, seed);
	srand(seed);
	for (int r = 0; r < rounds; r++) {
		struct asked first = {0, 0, NULL}, fresh = {0, 0, NULL};
		int before = runs_started(NULL), kill_ms = rand() % 800, down_ms = rand() % 2500;
		pid_t orphan = 0, pid = 0;
		json_t *ans, *rc_;

		assert_int_equal(tsync_node_cmd(asker, "FOR", "forensics", "report", NULL, asked_done, &first), 0);
		wait_run(before + 1);
		/* It runs, and cannot end before the test says so. */
		tsync_node_run_for(asker, kill_ms);
		assert_int_equal(first.calls, 0);
		tdh_kill9(t, FOR);
		tsync_node_run_for(asker, down_ms);
		start_forensicd(false);
		wait_answer(&first, "first");
		printf("round %d: killed %d ms into the run, down %d ms: answered %s\n", r, kill_ms, down_ms,
		       tsync_strerror(first.status));
		assert_int_equal(first.status, TSYNC_EPEER_RESTARTED);
		assert_null(first.result);
		/* Not run again by the repeats the new forensicd answered. */
		assert_int_equal(runs_started(&orphan), before + 1);
		/* The killed daemon's run still waits: gone now. */
		assert_int_equal(kill(-orphan, SIGKILL), 0);

		/* A new request runs the command, and is answered with its outcome. */
		assert_int_equal(tsync_node_cmd(asker, "FOR", "forensics", "report", NULL, asked_done, &fresh), 0);
		wait_run(before + 2);
		tdh_write(go_path, "go\n");
		wait_answer(&fresh, "new");
		assert_int_equal(unlink(go_path), 0);
		assert_int_equal(fresh.status, 0);
		ans = json_loads(fresh.result ? fresh.result : "", 0, NULL);
		assert_non_null(ans);
		rc_ = json_object_get(ans, "report_command");
		assert_true(json_is_true(json_object_get(rc_, "started")));
		assert_true(json_is_true(json_object_get(rc_, "ok")));
		assert_int_equal(num(rc_, "exit_status"), 0);
		assert_non_null(strstr(json_string_value(json_object_get(rc_, "output")), "reported"));
		json_decref(ans);
		assert_int_equal(runs_started(&pid), before + 2);
		assert_true(pid != orphan);
		/* Each request answered once. */
		assert_int_equal(first.calls, 1);
		assert_int_equal(fresh.calls, 1);
		free(first.result);
		free(fresh.result);
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_known_day),     cmocka_unit_test(test_owner_off_across_midnight),
	    cmocka_unit_test(test_down_two_days), cmocka_unit_test(test_kill9_exactly_once),
	    cmocka_unit_test(test_bound),         cmocka_unit_test(test_dst_day),
	    cmocka_unit_test(test_report_async),  cmocka_unit_test(test_first_cursor_kept),
	};
	const struct CMUnitTest e2e[] = {
	    cmocka_unit_test(test_e2e_collector_table),
	    cmocka_unit_test(test_e2e_pushd_kill9),
	};

	const struct CMUnitTest defer[] = {
	    cmocka_unit_test(test_deferred_kill9),
	};

	if (argc > 1 && !strcmp(argv[1], "defer"))
		return cmocka_run_group_tests(defer, setup_defer, teardown_defer);
	if (argc > 1 && !strcmp(argv[1], "e2e"))
		return cmocka_run_group_tests(e2e, setup_e2e, teardown_e2e);
	return cmocka_run_group_tests(tests, setup, teardown);
}
