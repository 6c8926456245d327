/*
 * thingsd across controllers: three real daemons on loopback, driven with
 * thingsctl and the HTTP API: set, ask and pulse across controllers, a
 * sensor file, commands (good, bad arguments, unknown), clim, the event
 * stream, peers and metrics.
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
#include <sys/wait.h>
#include <unistd.h>

#include "tdh.h"

enum { SEC, LIGHT, CLIM };

static const char *const names[] = {"PI-Security", "PI-Light", "PI-Climate"};
static const char *const roles[] = {"security, cmd_do", "light, cmd_do", "climate, cmd_do"};

static const char things[] =
    "[thing is_armed]\nowner = PI-Security\ntype = bool\nusers = PI-Light, PI-Climate\n"
    "initial = no\ndriver = virtual\n\n"
    "[thing door]\nowner = PI-Security\ntype = bool\nusers = PI-Light\npulse = yes\n"
    "pulse_ms = 400\ndriver = exec:@DIR@/door.sh interval=0 timeout=20000\n\n"
    "[thing hall_light]\nowner = PI-Light\ntype = bool\nusers = PI-Security\n"
    "initial = off\ndriver = file:@DIR@/hall_light\n\n"
    "[thing setpoint]\nowner = PI-Climate\ntype = float\nusers = PI-Light\nmin = 5\n"
    "max = 30\ninitial = 20.5\n\n"
    "[thing temp]\nowner = PI-Climate\ntype = float\nusers = PI-Light, PI-Security\n"
    "settable = no\nmin = -40\nmax = 85\n"
    "driver = file:@DIR@/w1_slave format=w1 scale=0.001 interval=100\n\n"
    "[thing mode]\nowner = PI-Climate\ntype = string\nusers = PI-Light\n"
    "allowed = off, eco, comfort\ninitial = eco\n";

static const char w1_21562[] =
    "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=21562\n";

static char *busy_poll[] = {"--busy-poll", "200", NULL};

static int setup(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));
	char *p, script[1024];

	tdh_init(t, "tdmesh", 3, names, roles, things);
	/* The door strike: a program that records every write. */
	snprintf(script, sizeof(script),
	         "#!/bin/sh\ncase \"$1\" in\nget) cat %s/door.state 2>/dev/null || echo 0 ;;\n"
	         "set) echo \"$2\" > %s/door.state; echo \"$2\" >> %s/door.history ;;\n*) exit 2 ;;\nesac\n",
	         t->dir, t->dir, t->dir);
	p = tdh_path(t, "door.sh");
	tdh_write(p, script);
	chmod(p, 0755);
	free(p);
	p = tdh_path(t, "w1_slave");
	tdh_write(p, w1_21562);
	free(p);
	/* Two controllers with the busy poll on (thingsd --busy-poll): every
	 * test below runs with PI-Light and PI-Security polling after their
	 * sends that await an answer. */
	t->c[SEC].extra = busy_poll;
	t->c[LIGHT].extra = busy_poll;
	tdh_start_all(t);
	*state = t;
	return 0;
}

static bool file_is(const char *path, const char *want)
{
	char *s = tdh_read(path);
	bool ok = s && !strcmp(s, want);
	free(s);
	return ok;
}

struct file_wait {
	const char *path, *want;
};

static bool file_pred(void *ud)
{
	struct file_wait *w = ud;
	return file_is(w->path, w->want);
}

static void test_set_across(void **state)
{
	struct tdh *t = *state;
	char *out = NULL, *err = NULL, *hl = tdh_path(t, "hall_light");
	struct file_wait fw = {hl, "1\n"};

	/* A user asks the owner through the mesh; the answer is the owner's. */
	assert_true(tdh_wait_value(t, LIGHT, "is_armed", "0"));
	assert_int_equal(tdh_ctl(t, &out, &err, "-n", "PI-Light", "set", "is_armed", "1", NULL), 0);
	assert_non_null(strstr(out, "is_armed = 1"));
	assert_non_null(strstr(out, "confirmed"));
	free(out);
	free(err);
	assert_true(tdh_wait_value(t, SEC, "is_armed", "1"));
	assert_true(tdh_wait_value(t, CLIM, "is_armed", "1"));

	/* Without -n the owner sets it, through its file driver. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "hall_light", "on", NULL), 0);
	assert_true(tdh_wait(file_pred, &fw, TDH_WAIT_MS));
	assert_true(tdh_wait_value(t, SEC, "hall_light", "1"));
	/* From a user, over the mesh, to the owner's file. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Security", "set", "hall_light", "0", NULL), 0);
	fw.want = "0\n";
	assert_true(tdh_wait(file_pred, &fw, TDH_WAIT_MS));
	free(hl);

	/* Refusals have their own exit codes. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Light", "set", "setpoint", "99", NULL), 4);
	assert_non_null(strstr(err, "err_ip_in_val"));
	free(err);
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "mode", "turbo", NULL), 4);
	free(err);
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "temp", "3", NULL), 4);
	assert_non_null(strstr(err, "not settable"));
	free(err);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "no_such_thing", "1", NULL), 3);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Climate", "get", "hall_light", NULL), 3);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "mode", NULL), 2);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "frobnicate", NULL), 2);
	/* The owner's value did not move. */
	assert_true(tdh_wait_value(t, CLIM, "setpoint", "20.5"));

	/* A string through the mesh. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "set", "mode", "comfort", NULL), 0);
	assert_true(tdh_wait_value(t, CLIM, "mode", "comfort"));
}

/* --busy-poll reaches the node: it says so (or, on one CPU, that it ignores
 * it); a value out of range is a usage error. */
static void test_busy_poll_option(void **state)
{
	struct tdh *t = *state;
	const char *bad[] = {"0", "1001", "x", NULL};

	for (int i = SEC; i <= LIGHT; i++)
		assert_true(tdh_log_has(t, i, "busy poll on: at most 200 us") ||
		            tdh_log_has(t, i, "busy_poll_us 200 ignored: one CPU usable"));
	assert_false(tdh_log_has(t, CLIM, "busy poll") || tdh_log_has(t, CLIM, "busy_poll_us"));
	for (const char **v = bad; *v; v++) {
		const char *argv[] = {getenv("THINGSD"), "-c", t->site, "-n", "PI-Climate", "--busy-poll", *v, NULL};
		char *log = tdh_path(t, "busy-bad.log");
		int status;
		pid_t pid = tdh_spawn(argv, log);

		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 2);
		free(log);
	}
}

static void test_ask(void **state)
{
	struct tdh *t = *state;
	char *out = NULL, *body = NULL, *v;

	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-Light", "ask", "setpoint", NULL), 0);
	assert_non_null(strstr(out, "setpoint = 20.5"));
	free(out);
	/* Without -n a user asks. */
	assert_int_equal(tdh_ctl(t, &out, NULL, "ask", "temp", NULL), 0);
	assert_non_null(strstr(out, "temp = "));
	free(out);
	assert_int_equal(tdh_http(t, CLIM, "POST", "/things/setpoint/ask", "{}", NULL, &body), 200);
	v = tdh_json_get(body, "fresh");
	assert_string_equal(v, "1");
	free(v);
	free(body);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "ask", "nothing_here", NULL), 3);
}

static void test_sensor(void **state)
{
	struct tdh *t = *state;
	char *p = tdh_path(t, "w1_slave");

	assert_true(tdh_wait_value(t, LIGHT, "temp", "21.562"));
	tdh_write(p, "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=-1250\n");
	assert_true(tdh_wait_value(t, SEC, "temp", "-1.25"));
	assert_true(tdh_wait_value(t, LIGHT, "temp", "-1.25"));
	free(p);
}

/* The door's history: every write, one line each. A write retried after a
 * slow start may repeat a 0, never a 1. */
static int count_lines(const char *h, const char *line)
{
	int n = 0;
	size_t l = strlen(line);

	for (const char *p = h; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
		n += !strncmp(p, line, l) && p[l] == '\n';
	return n;
}

struct history {
	const char *path;
	int pulses;
};

static bool history_done(void *ud)
{
	struct history *w = ud;
	char *h = tdh_read(w->path);
	size_t len = h ? strlen(h) : 0;
	bool ok = h && count_lines(h, "1") == w->pulses && len >= 2 && !strcmp(h + len - 2, "0\n");

	free(h);
	return ok;
}

static void test_pulse(void **state)
{
	struct tdh *t = *state;
	char *hist = tdh_path(t, "door.history"), *h;
	struct history w = {hist, 1};

	/* A user pulses; the owner drives its output and returns it itself. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "pulse", "door", "--ms", "300", NULL), 0);
	assert_true(tdh_wait(history_done, &w, TDH_WAIT_MS));
	assert_true(tdh_wait_log(t, SEC, "pulse of door = 1 for 300 ms (from PI-Light)"));
	assert_true(tdh_wait_log(t, SEC, "pulse of door ended: back to 0"));
	assert_true(tdh_wait_log(t, LIGHT, "pulse of door = 1 for 300 ms (by its owner"));
	/* The value itself never moved: a pulse is not a set. */
	assert_true(tdh_wait_value(t, SEC, "door", "0"));
	/* The owner pulses (thingsctl without -n): acted on here, told to the user. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "pulse", "door", "--ms", "200", NULL), 0);
	w.pulses = 2;
	assert_true(tdh_wait(history_done, &w, TDH_WAIT_MS));
	h = tdh_read(hist);
	assert_int_equal(count_lines(h, "1"), 2);
	free(h);
	assert_true(tdh_wait_log(t, LIGHT, "pulse of door = 1 for 200 ms (by its owner, from PI-Security)"));
	free(hist);

	assert_int_equal(tdh_ctl(t, NULL, NULL, "pulse", "is_armed", NULL), 4);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "pulse", "is_armed", NULL), 4);
}

static void test_commands(void **state)
{
	struct tdh *t = *state;
	char *out = NULL, *err = NULL;

	/* Through PI-Light's API and the mesh to PI-Climate. */
	assert_int_equal(
	    tdh_ctl(t, &out, NULL, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "cmd_do", "version", NULL),
	    0);
	assert_non_null(strstr(out, "\"program\": \"thingsd\""));
	assert_non_null(strstr(out, "\"controller\": \"PI-Climate\""));
	free(out);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "cmd_do",
	                         "logging", "{\"kwargs\":{\"reason\":\"hello from the test\"}}", NULL),
	                 0);
	assert_true(tdh_wait_log(t, CLIM, "logging from PI-Light: hello from the test"));

	/* Bad arguments: err_cmd_args, at the receiver and to the sender. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "cmd_do",
	                         "logging", "{\"kwargs\":{\"reason\":5}}", NULL),
	                 4);
	assert_non_null(strstr(err, "err_cmd_args"));
	free(err);
	assert_true(tdh_wait_log(t, CLIM, "err_cmd_args IP command logging, from PI-Light"));
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "cmd_do",
	                         "version", "{\"kwargs\":{\"colour\":\"red\"}}", NULL),
	                 4);
	assert_non_null(strstr(err, "unknown kwarg 'colour'"));
	free(err);
	/* Here (no --to through the mesh): the same checks. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "cmd_do", "reboot",
	                         "{\"kwargs\":{\"reboot_not_exit\":true}}", NULL),
	                 4);
	assert_non_null(strstr(err, "not enabled"));
	free(err);

	/* A role the receiver does not have, a command nobody has. */
	assert_int_equal(
	    tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "security", "report", NULL),
	    4);
	assert_non_null(strstr(err, "err_ip_in_cmd"));
	free(err);
	assert_true(tdh_wait_log(t, CLIM, "err_ip_in_cmd from PI-Light"));
	assert_int_equal(
	    tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "cmd_do", "fly", NULL), 4);
	assert_non_null(strstr(err, "err_ip_in_cmd"));
	free(err);
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Light", "cmd", "cmd_do", "fly", NULL), 4);
	assert_non_null(strstr(err, "err_ip_in_cmd"));
	free(err);
	assert_int_equal(
	    tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "cmd", "--to", "PI-Nowhere", "cmd_do", "version", NULL),
	    3);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "cmd", "cmd_do", "version", "[1]", NULL), 2);

	/* timers and new_day answer reports. */
	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-Climate", "cmd", "cmd_do", "timers", NULL), 0);
	assert_non_null(strstr(out, "\"thing\": \"temp\""));
	free(out);
	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-Security", "cmd", "--to", "PI-Climate", "cmd_do",
	                         "new_day", NULL),
	                 0);
	assert_non_null(strstr(out, "\"changes_total\""));
	free(out);
	assert_true(tdh_wait_log(t, CLIM, "new_day from PI-Security"));
}

static void test_clim(void **state)
{
	struct tdh *t = *state;
	char *out = NULL, *err = NULL, *body = NULL, *v, *p;

	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "--type",
	                         "clim", "{\"settings\":{\"living\":21.5,\"night\":17}}", NULL),
	                 0);
	assert_int_equal(tdh_http(t, CLIM, "GET", "/clim", NULL, NULL, &body), 200);
	v = tdh_json_get(body, "settings.living");
	assert_string_equal(v, "21.5");
	free(v);
	free(body);
	p = tdh_path(t, "state-PI-Climate/clim.json");
	body = tdh_read(p);
	assert_non_null(body);
	assert_non_null(strstr(body, "\"night\": 17") ? body : strstr(body, "\"night\":17"));
	free(body);
	free(p);
	/* {"type":"clim"} alone hands the settings over. */
	assert_int_equal(
	    tdh_ctl(t, &out, NULL, "-n", "PI-Light", "cmd", "--to", "PI-Climate", "--type", "clim", NULL), 0);
	assert_non_null(strstr(out, "\"living\": 21.5"));
	free(out);
	/* A controller without the climate role has no clim handler. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-Climate", "cmd", "--to", "PI-Light", "--type",
	                         "clim", "{\"settings\":{}}", NULL),
	                 4);
	assert_non_null(strstr(err, "err_ip_in_req"));
	free(err);
}

struct watch_wait {
	struct tdh *t;
	const char *path, *needle;
	pid_t pid;
	int status;
	bool exited;
};

static bool watch_has(void *ud)
{
	struct watch_wait *w = ud;
	char *s = tdh_read(w->path);
	bool ok = s && strstr(s, w->needle);
	free(s);
	return ok;
}

static bool watch_exited(void *ud)
{
	struct watch_wait *w = ud;
	if (waitpid(w->pid, &w->status, WNOHANG) == w->pid)
		w->exited = true;
	return w->exited;
}

static void test_watch_peers_metrics(void **state)
{
	struct tdh *t = *state;
	char *log = tdh_path(t, "watch.log"), *out = NULL, *body = NULL, *v;
	const char *argv[] = {getenv("THINGSCTL"), "-c",      t->site, "-n", "PI-Light", "-t", "60", "watch",
	                      "is_armed",          "--count", "1",     NULL};
	struct watch_wait w = {t, log, "watching PI-Light", 0, 0, false};
	char expect[200];

	w.pid = tdh_spawn(argv, log);
	assert_true(tdh_wait(watch_has, &w, TDH_WAIT_MS));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "is_armed", "0", NULL), 0);
	assert_true(tdh_wait(watch_exited, &w, TDH_WAIT_MS));
	assert_true(WIFEXITED(w.status));
	assert_int_equal(WEXITSTATUS(w.status), 0);
	w.needle = "is_armed = 0 (from PI-Security)";
	assert_true(watch_has(&w));
	free(log);

	/* Peers and metrics show the mesh as it is. */
	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-Light", "peers", NULL), 0);
	assert_non_null(strstr(out, "PI-Security"));
	assert_non_null(strstr(out, "PI-Climate"));
	free(out);
	assert_int_equal(tdh_http(t, LIGHT, "GET", "/peers", NULL, NULL, &body), 200);
	v = tdh_json_get(body, "peers.0.up");
	assert_string_equal(v, "1");
	free(v);
	free(body);
	assert_int_equal(tdh_http(t, LIGHT, "GET", "/metrics", NULL, NULL, &body), 200);
	assert_non_null(strstr(body, "thingsync_peer_up{controller=\"PI-Light\",peer=\"PI-Security\"} 1"));
	assert_non_null(
	    strstr(body, "thingsd_thing_value{controller=\"PI-Light\",thing=\"hall_light\",owned=\"1\"}"));
	assert_non_null(strstr(body, "# TYPE thingsync_datagrams_sent_total counter"));
	free(body);
	assert_int_equal(tdh_ctl(t, &out, NULL, "status", NULL), 0);
	for (int i = 0; i < t->n; i++) {
		snprintf(expect, sizeof(expect), "%-16s %-6s", names[i], "up");
		assert_non_null(strstr(out, expect));
	}
	free(out);
	assert_int_equal(tdh_ctl(t, &out, NULL, "-n", "PI-Climate", "--json", "status", NULL), 0);
	v = tdh_json_get(out, "controller");
	assert_string_equal(v, "PI-Climate");
	free(v);
	free(out);

	/* The API refuses what it does not know. */
	assert_int_equal(tdh_http(t, LIGHT, "GET", "/nothing", NULL, NULL, NULL), 404);
	assert_int_equal(tdh_http(t, LIGHT, "POST", "/things/hall_light", "not json", NULL, NULL), 400);
	assert_int_equal(tdh_http(t, LIGHT, "POST", "/things/hall_light", "{\"value\":[1]}", NULL, NULL),
	                 422);
	assert_int_equal(tdh_http(t, LIGHT, "GET", "/things/bad%20name", NULL, NULL, NULL), 404);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_set_across),
	    cmocka_unit_test(test_busy_poll_option),
	    cmocka_unit_test(test_ask),
	    cmocka_unit_test(test_sensor),
	    cmocka_unit_test(test_pulse),
	    cmocka_unit_test(test_commands),
	    cmocka_unit_test(test_clim),
	    cmocka_unit_test(test_watch_peers_metrics),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
