/*
 * thingsd drivers, with a real daemon: a file that disappears, becomes
 * unreadable or holds garbage and comes back (err_read_crash, then
 * err_read_gone, once per failure); a write that fails and recovers
 * (err_write_crash / err_write_gone); the exec driver, its failures and its
 * timeout; the evok driver against a fake evok server, failing and
 * recovering. The copy on another controller follows all along.
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

enum { IO, USER };

static const char *const names[] = {"PI-IO", "PI-User"};

struct fx {
	struct tdh t;
	pid_t evok;
	uint16_t evok_port;
	char things[4096];
};

static bool port_written(void *ud)
{
	char *s = tdh_read(ud);
	bool ok = s && atoi(s) > 0;
	free(s);
	return ok;
}

static void evok_post(struct fx *f, const char *path, const char *body)
{
	/* The fake evok is reached like a controller's API: borrow slot 0's
	 * helper by pointing a throwaway tdh at its port. */
	struct tdh t;
	memset(&t, 0, sizeof(t));
	t.n = 1;
	t.c[0].tcp = f->evok_port;
	assert_int_equal(tdh_http(&t, 0, "POST", path, body, NULL, NULL), 200);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	char *portfile, *p, *s, script[1024];
	const char *argv[3];

	/* The directory comes first (tdh_init), the fake evok second, and the
	 * site with its port last. */
	tdh_init(&f->t, "tddrv", 2, names, NULL, "");
	portfile = tdh_path(&f->t, "evok.port");
	argv[0] = getenv("FAKE_EVOK");
	argv[1] = portfile;
	argv[2] = NULL;
	assert_non_null(argv[0]);
	p = tdh_path(&f->t, "evok.log");
	f->evok = tdh_spawn(argv, p);
	free(p);
	assert_true(tdh_wait(port_written, portfile, TDH_WAIT_MS));
	s = tdh_read(portfile);
	f->evok_port = (uint16_t)atoi(s);
	free(s);
	free(portfile);

	snprintf(f->things, sizeof(f->things),
	         "[thing sensor]\nowner = PI-IO\ntype = int\nusers = PI-User\nsettable = no\n"
	         "driver = file:@DIR@/sensor interval=50\n\n"
	         "[thing out]\nowner = PI-IO\ntype = bool\nusers = PI-User\n"
	         "driver = file:@DIR@/outdir/out interval=0\n\n"
	         "[thing valve]\nowner = PI-IO\ntype = int\nusers = PI-User\nmin = 0\nmax = 100\n"
	         "driver = exec:@DIR@/valve.sh interval=100 timeout=5000\n\n"
	         "[thing slow]\nowner = PI-IO\ntype = int\nusers = PI-User\nsettable = no\n"
	         "driver = exec:@DIR@/slow.sh interval=200 timeout=300\n\n"
	         "[thing relay]\nowner = PI-IO\ntype = bool\nusers = PI-User\n"
	         "driver = evok:http://127.0.0.1:%u/rest/relay/1_01 interval=100 timeout=3000\n\n"
	         "[thing ai]\nowner = PI-IO\ntype = float\nusers = PI-User\nsettable = no\n"
	         "driver = evok:http://127.0.0.1:%u/rest/ai/1_01 interval=100 scale=10\n",
	         f->evok_port, f->evok_port);
	f->t.things = f->things;
	tdh_write_site(&f->t);

	p = tdh_path(&f->t, "sensor");
	tdh_write(p, "5\n");
	free(p);
	snprintf(script, sizeof(script),
	         "#!/bin/sh\nS=%s/valve.state\ncase \"$1\" in\nget) cat $S 2>/dev/null || echo 0 ;;\n"
	         "set) [ \"$2\" = 9 ] && { echo 'valve 9 is jammed' ; exit 3 ; }\n   echo \"$2\" > $S ;;\n"
	         "*) exit 2 ;;\nesac\n",
	         f->t.dir);
	p = tdh_path(&f->t, "valve.sh");
	tdh_write(p, script);
	chmod(p, 0755);
	free(p);
	p = tdh_path(&f->t, "slow.sh");
	tdh_write(p, "#!/bin/sh\nexec sleep 30\n");
	chmod(p, 0755);
	free(p);

	tdh_start_all(&f->t);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	int status;

	for (int i = 0; i < f->t.n; i++)
		tdh_stop(&f->t, i);
	kill(f->evok, SIGTERM);
	waitpid(f->evok, &status, 0);
	tdh_fini(&f->t);
	free(f);
	return 0;
}

static void assert_alive(struct tdh *t, int i)
{
	assert_int_equal(tdh_http(t, i, "GET", "/status", NULL, NULL, NULL), 200);
}

struct crash_wait {
	struct tdh *t;
	int n;
};

static bool crashes_reached(void *ud)
{
	struct crash_wait *w = ud;
	return tdh_log_count(w->t, IO, "err_read_crash Read of <sensor>") >= w->n;
}

static bool wait_crashes(struct tdh *t, int n)
{
	struct crash_wait w = {t, n};
	return tdh_wait(crashes_reached, &w, TDH_WAIT_MS);
}

static void test_file_fails_and_recovers(void **state)
{
	struct fx *f = *state;
	struct tdh *t = &f->t;
	char *p = tdh_path(t, "sensor"), *body = NULL, *v;

	assert_true(tdh_wait_value(t, USER, "sensor", "5"));

	/* The file goes away: one crash line, however many polls fail. */
	assert_int_equal(unlink(p), 0);
	assert_true(tdh_wait_log(t, IO, "err_read_crash Read of <sensor> crashed"));
	assert_true(tdh_log_has(t, IO, "No such file or directory"));
	assert_int_equal(tdh_http(t, IO, "GET", "/things/sensor", NULL, NULL, &body), 200);
	v = tdh_json_get(body, "driver_ok");
	assert_string_equal(v, "0");
	free(v);
	free(body);
	assert_int_equal(tdh_http(t, IO, "GET", "/status", NULL, NULL, &body), 200);
	v = tdh_json_get(body, "drivers_failing.0.thing");
	assert_string_equal(v, "sensor");
	free(v);
	free(body);
	tdh_write(p, "7\n");
	assert_true(tdh_wait_log(t, IO, "err_read_gone Read of <sensor> now OK!"));
	assert_true(tdh_wait_value(t, USER, "sensor", "7"));
	assert_int_equal(tdh_log_count(t, IO, "err_read_crash Read of <sensor>"), 1);

	/* Unreadable (a directory in its place; root reads any mode). A poll
	 * may fall between the two calls and find no file at all: either way
	 * it is the second failure. */
	assert_int_equal(unlink(p), 0);
	assert_int_equal(mkdir(p, 0700), 0);
	assert_true(wait_crashes(t, 2));
	assert_int_equal(rmdir(p), 0);
	tdh_write(p, "8\n");
	assert_true(tdh_wait_value(t, USER, "sensor", "8"));

	/* Not a number. */
	tdh_write(p, "eight\n");
	assert_true(tdh_wait_log(t, IO, "'eight' is not a number"));
	tdh_write(p, "9\n");
	assert_true(tdh_wait_value(t, USER, "sensor", "9"));

	assert_true(tdh_wait_log(t, IO, "err_read_gone"));
	assert_int_equal(tdh_log_count(t, IO, "err_read_crash Read of <sensor>"), 3);
	assert_int_equal(tdh_log_count(t, IO, "err_read_gone Read of <sensor>"), 3);
	assert_alive(t, IO);
	free(p);
}

static void test_write_fails_and_recovers(void **state)
{
	struct fx *f = *state;
	struct tdh *t = &f->t;
	char *dir = tdh_path(t, "outdir"), *file = tdh_path(t, "outdir/out"), *err = NULL, *s;

	/* Its directory is missing: the set fails (not a refusal of the
	 * value: the output did not move), the value is kept. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "out", "1", NULL), 8);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash Write to <out> crashed"));
	/* Through the mesh, the owner answers the same, and the user hears it. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-User", "set", "out", "1", NULL), 8);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, USER, "err_write_crash: set of out refused by PI-IO"));
	assert_int_equal(tdh_log_count(t, IO, "err_write_crash Write to <out>"), 1);

	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "set", "out", "1", NULL), 0);
	assert_true(tdh_wait_log(t, IO, "err_write_gone Write to <out> now OK!"));
	s = tdh_read(file);
	assert_string_equal(s, "1\n");
	free(s);
	assert_true(tdh_wait_value(t, USER, "out", "1"));
	free(dir);
	free(file);
}

static void test_exec(void **state)
{
	struct fx *f = *state;
	struct tdh *t = &f->t;
	char *p = tdh_path(t, "valve.state"), *s, *err = NULL;

	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "set", "valve", "30", NULL), 0);
	s = tdh_read(p);
	assert_string_equal(s, "30\n");
	free(s);
	/* Read back: a change behind thingsd's back is seen at the next poll. */
	tdh_write(p, "55\n");
	assert_true(tdh_wait_value(t, USER, "valve", "55"));
	/* The program fails: a failed act, with its words in the log. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "valve", "9", NULL), 8);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash Write to <valve> crashed"));
	assert_true(tdh_log_has(t, IO, "exit status 3: valve 9 is jammed"));
	assert_true(tdh_wait_value(t, IO, "valve", "55"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "valve", "10", NULL), 0);
	assert_true(tdh_wait_log(t, IO, "err_write_gone Write to <valve> now OK!"));
	assert_true(tdh_wait_value(t, USER, "valve", "10"));
	/* A program that hangs is killed at its timeout. */
	assert_true(tdh_wait_log(t, IO, "err_read_crash Read of <slow> crashed"));
	assert_true(tdh_log_has(t, IO, "timed out after 300 ms"));
	assert_alive(t, IO);
	free(p);
}

static void test_evok(void **state)
{
	struct fx *f = *state;
	struct tdh *t = &f->t;
	char *err = NULL;

	assert_true(tdh_wait_value(t, USER, "relay", "0"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "set", "relay", "1", NULL), 0);
	assert_true(tdh_wait_value(t, IO, "relay", "1"));
	/* An analog input moves on the board: scaled, and on to the user. */
	evok_post(f, "/rest/ai/1_01", "value=2.5");
	assert_true(tdh_wait_value(t, USER, "ai", "25"));

	/* The board stops answering: reads and writes fail, and recover. */
	evok_post(f, "/control/fail", "");
	assert_true(tdh_wait_log(t, IO, "err_read_crash Read of <relay> crashed"));
	assert_true(tdh_wait_log(t, IO, "err_read_crash Read of <ai> crashed"));
	assert_true(tdh_wait_log(t, IO, "HTTP 500"));
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "relay", "0", NULL), 8);
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash Write to <relay> crashed"));
	assert_true(tdh_wait_value(t, USER, "relay", "1"));
	evok_post(f, "/control/ok", "");
	assert_true(tdh_wait_log(t, IO, "err_read_gone Read of <relay> now OK!"));
	assert_true(tdh_wait_log(t, IO, "err_read_gone Read of <ai> now OK!"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "relay", "0", NULL), 0);
	assert_true(tdh_wait_log(t, IO, "err_write_gone Write to <relay> now OK!"));
	assert_true(tdh_wait_value(t, USER, "relay", "0"));
	assert_alive(t, IO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_file_fails_and_recovers),
	    cmocka_unit_test(test_write_fails_and_recovers),
	    cmocka_unit_test(test_exec),
	    cmocka_unit_test(test_evok),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
