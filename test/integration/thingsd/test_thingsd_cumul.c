/*
 * A real thingsd answers `cum` requests for the things it owns, over the
 * mesh (issue 14): PI-B asks PI-A through thingsctl's request plumbing. The
 * file driver's read failure (err_read_crash) shows as a thing without a
 * value; the seed's reset closes the day once however often it is sent; a
 * closed day is answered by date, after a restart too; a thing PI-A does not
 * own and an unknown date are refused.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdh.h"

#define A 0
#define B 1

static const char *const names[] = {"PI-A", "PI-B"};
static const char things[] = "[thing sensor]\nowner = PI-A\ntype = int\nusers = PI-B\n"
                             "driver = file:@DIR@/sensor interval=50\n\n"
                             "[thing remote]\nowner = PI-B\ntype = bool\nusers = PI-A\n\n";

/* What thingsctl printed for the last request (the refusals' names). */
static char last_err[1024];

/* A cum request from PI-B to PI-A; the answer's JSON, or NULL with the exit
 * status in *rc when it was refused. */
static json_t *cum(struct tdh *t, const char *body, int *rc)
{
	char *out = NULL, *err = NULL;
	json_t *j = NULL;
	int r;

	if (body)
		r = tdh_ctl(t, &out, &err, "-n", "PI-B", "cmd", "--to", "PI-A", "--type", "cum", body, NULL);
	else
		r = tdh_ctl(t, &out, &err, "-n", "PI-B", "cmd", "--to", "PI-A", "--type", "cum", NULL);
	if (rc)
		*rc = r;
	snprintf(last_err, sizeof(last_err), "%s%s", out ? out : "", err ? err : "");
	if (r == 0) {
		j = json_loads(out ? out : "", 0, NULL);
		if (!j)
			fail_msg("not JSON: %s", out ? out : "(null)");
	}
	free(out);
	free(err);
	return j;
}

static const json_t *field(const json_t *ans, const char *k)
{
	return json_object_get(json_object_get(ans, "cum"), k);
}

static void test_cum_over_the_mesh(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));
	char *sensor;
	json_t *j;
	char closed[16];
	int rc;

	(void)state;
	assert_non_null(t);
	tdh_init(t, "tdcum", 2, names, NULL, things);
	t->site_keys = "timezone = Europe/Berlin\ncumul_days = 3\nretry_min_ms = 10\nretry_initial_ms = 50\n"
	               "retry_max_ms = 400\ndown_after_ms = 1500\n";
	tdh_write_site(t);
	sensor = tdh_path(t, "sensor");
	tdh_write(sensor, "7\n");
	tdh_start_all(t);
	assert_true(tdh_wait_value(t, B, "sensor", "7"));

	j = cum(t, "{\"fld\":\"sensor\"}", &rc);
	assert_int_equal(rc, 0);
	assert_string_equal(json_string_value(json_object_get(j, "type")), "cum");
	assert_string_equal(json_string_value(json_object_get(j, "fld")), "sensor");
	assert_string_equal(json_string_value(field(j, "type")), "int");
	assert_int_equal(json_integer_value(field(j, "last")), 7);
	assert_int_equal(json_integer_value(field(j, "min")), 7);
	assert_true(json_is_true(field(j, "known")));
	json_decref(j);

	/* The driver cannot read: the thing has no value now, the mesh keeps 7. */
	assert_int_equal(unlink(sensor), 0);
	assert_true(tdh_wait_log(t, A, "err_read_crash"));
	j = cum(t, "{\"fld\":\"sensor\"}", &rc);
	assert_int_equal(rc, 0);
	assert_true(json_is_false(field(j, "known")));
	assert_int_equal(json_integer_value(field(j, "last")), 7);
	json_decref(j);

	tdh_write(sensor, "9\n");
	assert_true(tdh_wait_value(t, B, "sensor", "9"));
	j = cum(t, "{\"fld\":\"sensor\"}", &rc);
	assert_true(json_is_true(field(j, "known")));
	assert_int_equal(json_integer_value(field(j, "changes")), 1);
	assert_int_equal(json_integer_value(field(j, "max")), 9);
	json_decref(j);

	/* Refusals, by the seed's names (thingsctl exits non-zero). */
	assert_null(cum(t, "{\"fld\":\"remote\"}", &rc));
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(last_err, "err_ip_in_ths_i_use"));
	assert_null(cum(t, "{\"fld\":\"ghost\"}", &rc));
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(last_err, "err_ip_in_io"));
	assert_null(cum(t, "{\"fld\":\"sensor\",\"day\":\"2001-01-01\"}", &rc));
	assert_int_not_equal(rc, 0);
	assert_non_null(strstr(last_err, "err_ip_in_val"));

	/* The reset closes the day once. */
	j = cum(t, NULL, &rc);
	assert_int_equal(rc, 0);
	assert_true(json_is_string(json_object_get(j, "closed")));
	snprintf(closed, sizeof(closed), "%s", json_string_value(json_object_get(j, "closed")));
	assert_int_equal(strlen(closed), 10);
	json_decref(j);
	j = cum(t, NULL, &rc);
	assert_int_equal(rc, 0);
	assert_true(json_is_null(json_object_get(j, "closed")));
	json_decref(j);

	/* The closed day by date, after a restart too. */
	{
		char body[96];
		snprintf(body, sizeof(body), "{\"fld\":\"sensor\",\"day\":\"%s\"}", closed);
		j = cum(t, body, &rc);
		assert_int_equal(rc, 0);
		assert_true(json_is_true(field(j, "closed")));
		assert_string_equal(json_string_value(field(j, "day")), closed);
		assert_int_equal(json_integer_value(field(j, "max")), 9);
		json_decref(j);
		tdh_stop(t, A);
		tdh_start(t, A);
		j = cum(t, body, &rc);
		assert_int_equal(rc, 0);
		assert_int_equal(json_integer_value(field(j, "max")), 9);
		json_decref(j);
	}
	free(sensor);
	tdh_fini(t);
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cum_over_the_mesh),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
