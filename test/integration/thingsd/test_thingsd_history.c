/*
 * thingsd keeps the history of the things it owns (issue 13), turned on by
 * site.conf: a real thingsd on loopback changes an owned thing many times
 * through its HTTP API, and every change is read back through GET /history,
 * in order, after a kill -9 too; a chatty thing with its own bound is
 * trimmed, and the answer says which window was lost; GET /status counts.
 * SPDX-License-Identifier: MIT
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "tdh.h"

#define A       0
#define B       1
#define CHANGES 300

static const char *const names[] = {"PI-A", "PI-B"};
static const char things[] = "[thing counter]\nowner = PI-A\ntype = int\nusers = PI-B\n\n"
                             "[thing chatty]\nowner = PI-A\ntype = int\nhistory_max_bytes = 4096\n\n"
                             "[thing quiet]\nowner = PI-A\ntype = int\nhistory = no\n\n";

/* site.conf with `history = yes` in PI-A's section. */
static void write_site(struct tdh *t)
{
	char *text = tdh_site_text(t, t->things);
	const char *at = strstr(text, "[controller PI-A]\n");
	const char add[] = "history = yes\nhistory_max_age = 30d\n";
	size_t head, len = strlen(text);
	char *out;

	assert_non_null(at);
	head = (size_t)(at - text) + strlen("[controller PI-A]\n");
	out = malloc(len + sizeof(add));
	assert_non_null(out);
	memcpy(out, text, head);
	memcpy(out + head, add, sizeof(add) - 1);
	memcpy(out + head + sizeof(add) - 1, text + head, len - head + 1);
	tdh_write(t->site, out);
	for (int i = 0; i < t->n; i++)
		tdh_write_conf(t, i, out);
	free(out);
	free(text);
}

static int setup(void **state)
{
	struct tdh *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	tdh_init(t, "tdhist", 2, names, NULL, things);
	write_site(t);
	tdh_start_all(t);
	*state = t;
	return 0;
}

static json_t *get_json(struct tdh *t, int i, const char *path)
{
	char *body = NULL;
	json_error_t err;
	json_t *j;

	assert_int_equal(tdh_http(t, i, "GET", path, NULL, NULL, &body), 200);
	j = json_loads(body, 0, &err);
	assert_non_null(j);
	free(body);
	return j;
}

static void set_many(struct tdh *t, const char *thing, int from, int n)
{
	char path[64], body[64];

	snprintf(path, sizeof(path), "/things/%s", thing);
	for (int v = from; v < from + n; v++) {
		snprintf(body, sizeof(body), "{\"value\":%d}", v);
		assert_int_equal(tdh_http(t, A, "POST", path, body, NULL, NULL), 200);
	}
}

/* Every value of the history of `thing`, checked in order: values from..to,
 * (boot, version) increasing, times not decreasing. Returns the answer. */
static json_t *check_history(struct tdh *t, const char *thing, int first, int last)
{
	char path[96];
	json_t *j, *e;
	size_t i;
	int64_t prev_boot = 0, prev_ver = 0, prev_time = 0;

	snprintf(path, sizeof(path), "/history?thing=%s", thing);
	j = get_json(t, A, path);
	e = json_object_get(j, "entries");
	assert_int_equal(json_array_size(e), (size_t)(last - first + 1));
	assert_false(json_is_true(json_object_get(j, "truncated")));
	for (i = 0; i < json_array_size(e); i++) {
		json_t *x = json_array_get(e, i);
		int64_t boot = json_integer_value(json_object_get(x, "owner_boot"));
		int64_t ver = json_integer_value(json_object_get(x, "version"));
		int64_t time = json_integer_value(json_object_get(x, "time_us"));

		assert_string_equal(json_string_value(json_object_get(x, "thing")), thing);
		assert_int_equal(json_integer_value(json_object_get(x, "value")), first + (int)i);
		/* (owner boot, version) identifies a change: each is newer. */
		assert_true(boot > prev_boot || (boot == prev_boot && ver > prev_ver));
		assert_true(time >= prev_time);
		prev_boot = boot;
		prev_ver = ver;
		prev_time = time;
	}
	return j;
}

static void test_history(void **state)
{
	struct tdh *t = *state;
	json_t *j, *h;
	char *body = NULL;

	set_many(t, "counter", 1, CHANGES);
	set_many(t, "chatty", 1, CHANGES);
	set_many(t, "quiet", 1, 10);

	/* Every change of counter, not only the last that the mesh carries. */
	j = check_history(t, "counter", 1, CHANGES);
	assert_false(json_is_true(json_object_get(j, "trimmed")));
	json_decref(j);

	/* chatty's own bound trimmed its oldest: the newest are all there, and
	 * the answer names the lost window instead of claiming no data. */
	j = get_json(t, A, "/history?thing=chatty");
	{
		json_t *e = json_object_get(j, "entries");
		size_t n = json_array_size(e);
		assert_true(n > 10);
		assert_true(n < CHANGES);
		assert_true(json_is_true(json_object_get(j, "trimmed")));
		assert_int_equal(json_integer_value(json_object_get(json_array_get(e, n - 1), "value")),
		                 CHANGES);
		assert_int_equal(json_integer_value(json_object_get(json_array_get(e, 0), "value")),
		                 CHANGES - (int)n + 1);
		assert_true(json_integer_value(json_object_get(j, "trimmed_to_us")) <
		            json_integer_value(json_object_get(json_array_get(e, 0), "time_us")));
		assert_int_equal(json_integer_value(json_object_get(j, "held_from_us")),
		                 json_integer_value(json_object_get(json_array_get(e, 0), "time_us")));
	}
	json_decref(j);

	/* history = no: nothing kept. */
	j = get_json(t, A, "/history?thing=quiet");
	assert_int_equal(json_array_size(json_object_get(j, "entries")), 0);
	json_decref(j);

	/* The counters on /status. */
	j = get_json(t, A, "/status");
	h = json_object_get(j, "history");
	assert_true(json_is_true(json_object_get(h, "enabled")));
	assert_true(json_integer_value(json_object_get(h, "entries")) > CHANGES + 10);
	assert_true(json_integer_value(json_object_get(h, "trimmed")) > 0);
	assert_int_equal(json_integer_value(json_object_get(h, "max_age_ms")), 30ll * 86400 * 1000);
	json_decref(j);

	/* PI-B keeps none: said so, not an empty answer. */
	assert_int_equal(tdh_http(t, B, "GET", "/history", NULL, NULL, &body), 404);
	assert_non_null(strstr(body, "no_history"));
	free(body);
	body = NULL;
	assert_int_equal(tdh_http(t, A, "GET", "/history?from=5&to=4", NULL, NULL, &body), 400);
	free(body);

	/* Every acknowledged change survives a kill -9. */
	tdh_kill9(t, A);
	tdh_start(t, A);
	j = check_history(t, "counter", 1, CHANGES);
	json_decref(j);
	set_many(t, "counter", CHANGES + 1, 5);
	j = check_history(t, "counter", 1, CHANGES + 5);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_history, setup, tdh_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
