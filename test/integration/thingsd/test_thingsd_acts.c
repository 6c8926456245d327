/*
 * An act that fails is reported as a failure, never acknowledged as done:
 * a pulse whose exec program cannot start, a set whose program fails, and a
 * command whose handler cannot do its work, asked for from another
 * controller through the mesh and on the owner itself. thingsctl exits 8
 * and names err_write_crash; the users hear of no pulse that did not
 * happen. Real daemons on loopback.
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
#include <unistd.h>

#include "tdh.h"

enum { IO, USER };

static const char *const names[] = {"PI-IO", "PI-User"};
static const char *const roles[] = {"cmd_do, climate", "cmd_do"};

/* thingsctl's exit code for an act that failed at the owner (thingsctl(1)). */
#define EXIT_ACT_FAILED 8

static const char things[] =
    "[thing door]\nowner = PI-IO\ntype = bool\nusers = PI-User\npulse = yes\npulse_ms = 200\n"
    "driver = exec:@DIR@/door.sh interval=0 timeout=5000\n\n"
    "[thing gate]\nowner = PI-IO\ntype = bool\nusers = PI-User\ninitial = off\n"
    "driver = exec:@DIR@/gate.sh interval=0 timeout=5000\n";

/* Each program appends what it was asked to do to its .log, and the gate's
 * fails while a file named jam exists. */
static const char door_sh[] = "#!/bin/sh\ncase \"$1\" in\nget) echo 0 ;;\n"
                              "set) echo \"set $2\" >> %s/door.log ;;\n*) exit 2 ;;\nesac\n";
static const char gate_sh[] = "#!/bin/sh\ncase \"$1\" in\nget) echo 0 ;;\n"
                              "set) [ -e %s/jam ] && { echo 'gate jammed' ; exit 1 ; }\n"
                              "   echo \"set $2\" >> %s/gate.log ;;\n*) exit 2 ;;\nesac\n";

static int setup(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));
	char script[1024], *p;

	tdh_init(t, "tdacts", 2, names, roles, things);
	snprintf(script, sizeof(script), door_sh, t->dir);
	p = tdh_path(t, "door.sh");
	tdh_write(p, script);
	chmod(p, 0755);
	free(p);
	snprintf(script, sizeof(script), gate_sh, t->dir, t->dir);
	p = tdh_path(t, "gate.sh");
	tdh_write(p, script);
	chmod(p, 0755);
	free(p);
	tdh_start_all(t);
	*state = t;
	return 0;
}

struct file_wait {
	char *path;
	const char *needle;
	int count;
};

/* Counts the lines of a file that are exactly `line`. */
static int lines_equal(const char *path, const char *line)
{
	char *s = tdh_read(path), *save = NULL;
	int n = 0;

	for (char *l = s ? strtok_r(s, "\n", &save) : NULL; l; l = strtok_r(NULL, "\n", &save))
		n += !strcmp(l, line);
	free(s);
	return n;
}

static bool file_reached(void *ud)
{
	struct file_wait *w = ud;
	return lines_equal(w->path, w->needle) >= w->count;
}

static bool wait_lines(struct tdh *t, const char *file, const char *line, int count)
{
	struct file_wait w = {tdh_path(t, file), line, count};
	bool ok = tdh_wait(file_reached, &w, TDH_WAIT_MS);
	free(w.path);
	return ok;
}

static void test_pulse_that_cannot_start_is_a_failure(void **state)
{
	struct tdh *t = *state;
	char *prog = tdh_path(t, "door.sh"), *log = tdh_path(t, "door.log"), *err = NULL;

	/* It works: the owner acts, the user hears of it, the door closes again. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "pulse", "door", NULL), 0);
	assert_true(wait_lines(t, "door.log", "set 1", 1));
	assert_true(wait_lines(t, "door.log", "set 0", 1));
	assert_true(tdh_wait_log(t, USER, "pulse of door = 1 for 200 ms (by its owner"));

	/* The program can no longer be started (as with no descriptors left):
	 * the requester learns that the pulse failed, through the mesh... */
	assert_int_equal(chmod(prog, 0644), 0);
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-User", "pulse", "door", NULL), EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash pulse of door by PI-User failed"));
	/* ... and on the owner itself. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "pulse", "door", NULL), EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	/* Nothing moved, and the user was told of no pulse. */
	assert_int_equal(lines_equal(log, "set 1"), 1);
	assert_int_equal(tdh_log_count(t, USER, "pulse of door = 1 for 200 ms (by its owner"), 1);

	/* It can start again: so can the pulses. */
	assert_int_equal(chmod(prog, 0755), 0);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "pulse", "door", NULL), 0);
	assert_true(wait_lines(t, "door.log", "set 1", 2));
	assert_true(wait_lines(t, "door.log", "set 0", 2));
	free(prog);
	free(log);
}

static void test_set_that_fails_is_a_failure(void **state)
{
	struct tdh *t = *state;
	char *jam = tdh_path(t, "jam"), *err = NULL;

	assert_true(tdh_wait_value(t, USER, "gate", "0"));
	tdh_write(jam, "");
	/* On the owner: the value was fine, the output did not take it. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "set", "gate", "1", NULL), EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	/* Through the mesh: the owner answers err_write_crash, not a refusal. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-User", "set", "gate", "1", NULL), EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash set of gate by PI-User failed"));
	assert_true(tdh_wait_log(t, USER, "err_write_crash: set of gate refused by PI-IO"));
	assert_true(tdh_wait_value(t, IO, "gate", "0"));
	assert_true(tdh_wait_value(t, USER, "gate", "0"));

	assert_int_equal(unlink(jam), 0);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-User", "set", "gate", "1", NULL), 0);
	assert_true(wait_lines(t, "gate.log", "set 1", 1));
	assert_true(tdh_wait_value(t, USER, "gate", "1"));
	free(jam);
}

static void test_command_that_fails_is_a_failure(void **state)
{
	struct tdh *t = *state;
	char *clim = NULL, *blocker = NULL, *err = NULL;
	const char *settings = "{\"settings\":{\"target\":21}}";

	assert_true(asprintf(&clim, "%s/clim.json", t->c[IO].state) > 0);
	assert_true(asprintf(&blocker, "%s/clim.json/keep", t->c[IO].state) > 0);
	/* The settings cannot be stored: a directory holds their name. */
	assert_int_equal(mkdir(clim, 0700), 0);
	assert_int_equal(mkdir(blocker, 0700), 0);
	assert_int_equal(
	    tdh_ctl(t, NULL, &err, "-n", "PI-User", "cmd", "--to", "PI-IO", "--type", "clim", settings, NULL),
	    EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);
	assert_true(tdh_wait_log(t, IO, "err_write_crash clim: cannot store the settings from PI-User"));
	/* Run on the owner's own API: the same. */
	assert_int_equal(tdh_ctl(t, NULL, &err, "-n", "PI-IO", "cmd", "--type", "clim", settings, NULL),
	                 EXIT_ACT_FAILED);
	assert_non_null(strstr(err, "err_write_crash"));
	free(err);

	assert_int_equal(rmdir(blocker), 0);
	assert_int_equal(rmdir(clim), 0);
	assert_int_equal(
	    tdh_ctl(t, NULL, NULL, "-n", "PI-User", "cmd", "--to", "PI-IO", "--type", "clim", settings, NULL),
	    0);
	{
		char *s = tdh_read(clim);
		assert_non_null(s);
		assert_non_null(strstr(s, "\"target\":21"));
		free(s);
	}
	free(clim);
	free(blocker);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pulse_that_cannot_start_is_a_failure),
	    cmocka_unit_test(test_set_that_fails_is_a_failure),
	    cmocka_unit_test(test_command_that_fails_is_a_failure),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
