/*
 * A controller dies (kill -9) and comes back: its owned values come back
 * from its state directory, what changed elsewhere meanwhile reaches it, and
 * its users re-sync. The reboot command restarts thingsd in place. SIGTERM
 * stops every daemon with status 0 (teardown).
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

#include "tdh.h"

enum { A, B, C };

static const char *const names[] = {"PI-A", "PI-B", "PI-C"};

static const char things[] =
    "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B, PI-C\ndriver = virtual\n\n"
    "[thing flag]\nowner = PI-B\ntype = bool\nusers = PI-A\ninitial = off\n\n"
    "[thing note]\nowner = PI-A\ntype = string\nusers = PI-B\n\n";

static int setup(void **state)
{
	*state = tdh_new_started("tdrst", 3, names, NULL, things);
	return 0;
}

static char *status_str(struct tdh *t, int i, const char *key)
{
	char *body = NULL, *v = NULL;

	if (tdh_http(t, i, "GET", "/status", NULL, NULL, &body) == 200)
		v = tdh_json_get(body, key);
	free(body);
	return v;
}

struct peer_wait {
	struct tdh *t;
	int i;
	const char *want; /* "0" or "1" */
};

static bool peer_a_up_is(void *ud)
{
	struct peer_wait *w = ud;
	char *body = NULL;
	bool ok = false;

	if (tdh_http(w->t, w->i, "GET", "/peers", NULL, NULL, &body) != 200) {
		free(body);
		return false;
	}
	for (int k = 0; k < TDH_MAX && !ok; k++) {
		char key[32], *name, *up;
		snprintf(key, sizeof(key), "peers.%d.name", k);
		name = tdh_json_get(body, key);
		snprintf(key, sizeof(key), "peers.%d.up", k);
		up = tdh_json_get(body, key);
		ok = name && !strcmp(name, "PI-A") && up && !strcmp(up, w->want);
		free(name);
		free(up);
	}
	free(body);
	return ok;
}

static void test_kill9_and_return(void **state)
{
	struct tdh *t = *state;
	struct peer_wait pw = {t, B, "0"};
	char *boot1, *boot2;

	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "counter", "42", NULL), 0);
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "note", "kept across a crash", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "42"));
	assert_true(tdh_wait_value(t, C, "counter", "42"));
	assert_true(tdh_wait_value(t, B, "note", "kept across a crash"));
	boot1 = status_str(t, A, "boot");

	tdh_kill9(t, A);
	/* The others keep working with what they have. */
	assert_true(tdh_wait_value(t, B, "counter", "42"));
	/* What changes while it is away waits for it, retried. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "flag", "on", NULL), 0);
	assert_true(tdh_wait(peer_a_up_is, &pw, TDH_WAIT_MS));

	tdh_start(t, A);
	boot2 = status_str(t, A, "boot");
	assert_non_null(boot1);
	assert_non_null(boot2);
	assert_true(strtoull(boot2, NULL, 10) > strtoull(boot1, NULL, 10));
	/* Its own values came back from LMDB; the copy it missed arrived. */
	assert_true(tdh_wait_value(t, A, "counter", "42"));
	assert_true(tdh_wait_value(t, A, "note", "kept across a crash"));
	assert_true(tdh_wait_value(t, A, "flag", "1"));
	pw.want = "1";
	assert_true(tdh_wait(peer_a_up_is, &pw, TDH_WAIT_MS));
	/* Its users re-synced with the new boot and follow it again. */
	assert_int_equal(tdh_ctl(t, NULL, NULL, "-n", "PI-C", "set", "counter", "43", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "43"));
	assert_true(tdh_wait_value(t, C, "counter", "43"));
	assert_true(tdh_wait_log(t, B, "peer PI-A restarted"));
	free(boot1);
	free(boot2);
}

struct boot_wait {
	struct tdh *t;
	unsigned long long old;
};

static bool new_boot(void *ud)
{
	struct boot_wait *w = ud;
	char *b = status_str(w->t, A, "boot");
	bool ok = b && strtoull(b, NULL, 10) > w->old;
	free(b);
	return ok;
}

static void test_reboot_command(void **state)
{
	struct tdh *t = *state;
	char *b = status_str(t, A, "boot"), *out = NULL;
	struct boot_wait w = {t, strtoull(b, NULL, 10)};

	free(b);
	assert_int_equal(
	    tdh_ctl(t, &out, NULL, "-n", "PI-B", "cmd", "--to", "PI-A", "cmd_do", "reboot", NULL), 0);
	assert_non_null(strstr(out, "thingsd restarts"));
	free(out);
	assert_true(tdh_wait(new_boot, &w, TDH_WAIT_MS));
	assert_true(tdh_wait_log(t, A, "restarting (reboot command)"));
	assert_true(tdh_wait_value(t, A, "counter", "43"));
	assert_int_equal(tdh_ctl(t, NULL, NULL, "set", "counter", "44", NULL), 0);
	assert_true(tdh_wait_value(t, B, "counter", "44"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kill9_and_return),
	    cmocka_unit_test(test_reboot_command),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, tdh_teardown);
}
