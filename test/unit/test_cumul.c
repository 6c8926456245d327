/*
 * Unit tests of lib/cumul: per-day cumuls at the owner, with a clock the
 * tests hold (every time is passed in), the day cut at Europe/Berlin
 * midnight; then two real nodes on loopback answering `cum` requests.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <jansson.h>

#include <thingsync/thingsync.h>

#include "cumul/cumul.h"
#include "node/node.h"
#include "site/site.h"
#include "store/store.h"

#define H  (3600LL * 1000000LL) /* an hour in microseconds */
#define MS 1000LL

/* Local midnights of Europe/Berlin, seconds since the epoch. */
#define JUN10 1781042400LL /* CEST, a 24-hour day */
#define JUN11 1781128800LL
#define MAR29 1774738800LL /* spring forward: 23 hours */
#define MAR30 1774821600LL
#define OCT25 1792879200LL /* fall back: 25 hours */
#define OCT26 1792969200LL

static char tmpdir[256];
static int site_seq;

static tsync_site *load_site(const char *extra)
{
	char path[512];
	tsync_site *site = NULL;
	char *errors = NULL;
	FILE *f;
	int port = 20000 + (int)(getpid() % 10000) * 2;

	snprintf(path, sizeof(path), "%s/site-%d.conf", tmpdir, site_seq++);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f,
	        "[site]\nname = test\ntimezone = Europe/Berlin\nretry_min_ms = 20\nretry_initial_ms = 50\n"
	        "retry_max_ms = 200\n%s"
	        "[controller A]\nhost = 127.0.0.1\nudp_port = %d\n"
	        "[controller F]\nhost = 127.0.0.1\nudp_port = %d\nroles = forensics\n"
	        "[thing door]\nowner = A\ntype = bool\nusers = F\npulse = yes\npulse_ms = 500\n"
	        "[thing power]\nowner = A\ntype = int\nusers = F\n"
	        "[thing temp]\nowner = A\ntype = float\nusers = F\n"
	        "[thing mode]\nowner = A\ntype = string\nusers = F\n"
	        "[thing remote]\nowner = F\ntype = bool\nusers = A\n",
	        extra ? extra : "", port, port + 1);
	fclose(f);
	if (tsync_site_load(path, &site, &errors) < 0)
		fail_msg("site: %s", errors ? errors : "?");
	free(errors);
	return site;
}

static uint32_t ix_of(const tsync_site *site, const char *name)
{
	uint32_t ix;
	assert_int_equal(name_index__get(&site->thing_ix, name, &ix), 0);
	return ix;
}

static json_t *get_cum(struct cumul *c, const char *thing, const char *day, int64_t now)
{
	char *s = NULL;
	json_t *o;

	assert_int_equal(cumul__get(c, thing, day, now, &s), 0);
	o = json_loads(s, 0, NULL);
	free(s);
	assert_non_null(o);
	return o;
}

static long long jget(const json_t *o, const char *k)
{
	const json_t *j = json_object_get(o, k);
	if (!json_is_integer(j))
		fail_msg("%s is not an integer", k);
	return (long long)json_integer_value(j);
}

static double jnum(const json_t *o, const char *k)
{
	const json_t *j = json_object_get(o, k);
	if (!json_is_number(j))
		fail_msg("%s is not a number", k);
	return json_number_value(j);
}

static void set_b(struct cumul *c, const tsync_site *s, const char *t, bool b, int64_t at)
{
	tsync_value v = tsync_bool(b);
	cumul__value(c, ix_of(s, t), &v, at);
}

static void set_i(struct cumul *c, const tsync_site *s, const char *t, int64_t i, int64_t at)
{
	tsync_value v = tsync_int(i);
	cumul__value(c, ix_of(s, t), &v, at);
}

static void set_s(struct cumul *c, const tsync_site *s, const char *t, const char *str, int64_t at)
{
	tsync_value v = tsync_string(str);
	cumul__value(c, ix_of(s, t), &v, at);
}

/* The midnights and labels come from tzdata, 23 and 25 hours around DST. */
static void test_midnights(void **state)
{
	int64_t m;
	char label[CUMUL_DATE_LEN + 1];

	(void)state;
	assert_int_equal(cumul__midnight("Europe/Berlin", (JUN10 + 13 * 3600) * 1000000LL, 0, &m, label), 0);
	assert_int_equal(m, JUN10 * 1000000LL);
	assert_string_equal(label, "2026-06-10");
	assert_int_equal(cumul__midnight("Europe/Berlin", (MAR29 + 3600) * 1000000LL, 1, &m, label), 0);
	assert_int_equal(m, MAR30 * 1000000LL);
	assert_int_equal(m - MAR29 * 1000000LL, 23 * H);
	assert_string_equal(label, "2026-03-30");
	assert_int_equal(cumul__midnight("Europe/Berlin", (OCT25 + 3600) * 1000000LL, 1, &m, label), 0);
	assert_int_equal(m - OCT25 * 1000000LL, 25 * H);
	/* The process's TZ is left as it was. */
	assert_null(getenv("TZ"));
}

/* A day of known changes: every field, exactly. */
static void test_day_exact(void **state)
{
	tsync_site *site = load_site(NULL);
	struct cumul *c;
	const int64_t M = JUN10 * 1000000LL;
	json_t *o, *vals;
	tsync_value unk = {.type = TSYNC_TYPE_NONE};

	(void)state;
	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M), 0);
	assert_string_equal(cumul__today(c), "2026-06-10");
	assert_int_equal(cumul__day_end(c), JUN11 * 1000000LL);
	set_b(c, site, "door", false, M);
	set_i(c, site, "power", 100, M);
	set_s(c, site, "mode", "eco", M);
	/* Not mine, or no thing at all: ignored (door's counts below show it). */
	set_b(c, site, "remote", true, M + 30 * MS);
	cumul__value(c, 4096, &unk, M + 40 * MS);
	cumul__pulse(c, 4096, 500, M + 50 * MS);
	/* temp never gets a value: unknown all day. */

	set_b(c, site, "door", true, M + 1 * H);
	cumul__pulse(c, ix_of(site, "door"), 500, M + 2 * H);
	set_b(c, site, "door", false, M + 3 * H);
	set_b(c, site, "door", true, M + 5 * H);
	set_b(c, site, "door", true, M + 5 * H + 10 * MS); /* the same: no change */
	set_b(c, site, "door", false, M + 6 * H);
	cumul__pulse(c, ix_of(site, "door"), 500, M + 7 * H);

	set_i(c, site, "power", 300, M + 6 * H);
	cumul__value(c, ix_of(site, "power"), &unk, M + 12 * H); /* driver down */
	set_i(c, site, "power", 300, M + 18 * H);                /* back, same value */
	set_i(c, site, "power", 0, M + 20 * H);

	set_s(c, site, "mode", "comfort", M + 8 * H);
	set_s(c, site, "mode", "eco", M + 10 * H);

	/* Midday read: counted up to now, without closing anything. */
	o = get_cum(c, "door", NULL, M + 12 * H);
	assert_int_equal(jget(o, "on_ms"), 3 * 3600 * 1000);
	assert_int_equal(jget(o, "off_ms"), 9 * 3600 * 1000);
	assert_false(json_is_true(json_object_get(o, "closed")));
	json_decref(o);

	assert_int_equal(cumul__tick(c, M + 24 * H), 1);
	assert_string_equal(cumul__today(c), "2026-06-11");

	o = get_cum(c, "door", "2026-06-10", M + 24 * H);
	assert_true(json_is_true(json_object_get(o, "closed")));
	assert_string_equal(json_string_value(json_object_get(o, "type")), "bool");
	assert_int_equal(jget(o, "start_ms"), JUN10 * 1000);
	assert_int_equal(jget(o, "end_ms"), JUN11 * 1000);
	assert_int_equal(jget(o, "rises"), 2);
	assert_int_equal(jget(o, "changes"), 4);
	assert_int_equal(jget(o, "on_ms"), 3 * 3600 * 1000);
	assert_int_equal(jget(o, "off_ms"), 21 * 3600 * 1000);
	assert_int_equal(jget(o, "unknown_ms"), 0);
	assert_int_equal(jget(o, "first_change_ms"), JUN10 * 1000 + 1 * 3600 * 1000);
	assert_int_equal(jget(o, "last_change_ms"), JUN10 * 1000 + 6 * 3600 * 1000);
	assert_int_equal(jget(o, "pulses"), 2);
	assert_int_equal(jget(o, "pulse_ms"), 1000);
	assert_true(json_is_false(json_object_get(o, "last")));
	json_decref(o);

	o = get_cum(c, "power", "2026-06-10", M + 24 * H);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "int");
	assert_int_equal(jget(o, "changes"), 2);
	assert_int_equal(jget(o, "known_ms"), 18 * 3600 * 1000);
	assert_int_equal(jget(o, "unknown_ms"), 6 * 3600 * 1000);
	assert_int_equal(jget(o, "down_ms"), 0);
	assert_int_equal(jget(o, "min"), 0);
	assert_int_equal(jget(o, "min_at_ms"), JUN10 * 1000 + 20 * 3600 * 1000);
	assert_int_equal(jget(o, "max"), 300);
	assert_int_equal(jget(o, "max_at_ms"), JUN10 * 1000 + 6 * 3600 * 1000);
	/* 100 W x 6 h + 300 W x 6 h + 300 W x 2 h + 0 W x 4 h = 3000 Wh over 18 known hours. */
	assert_true(fabs(jnum(o, "integral") - 3000.0) < 1e-9);
	assert_true(fabs(jnum(o, "mean") - 3000.0 / 18.0) < 1e-9);
	assert_int_equal(jget(o, "last"), 0);
	json_decref(o);

	o = get_cum(c, "mode", "2026-06-10", M + 24 * H);
	vals = json_object_get(o, "values");
	assert_int_equal(jget(vals, "eco"), 22 * 3600 * 1000);
	assert_int_equal(jget(vals, "comfort"), 2 * 3600 * 1000);
	assert_int_equal(jget(o, "other_ms"), 0);
	assert_int_equal(jget(o, "changes"), 2);
	json_decref(o);

	o = get_cum(c, "temp", "2026-06-10", M + 24 * H);
	assert_int_equal(jget(o, "unknown_ms"), 24 * 3600 * 1000);
	assert_true(json_is_null(json_object_get(o, "mean")));
	assert_true(json_is_null(json_object_get(o, "min")));
	json_decref(o);

	/* The new day starts from the value held across midnight. */
	o = get_cum(c, "power", NULL, M + 25 * H);
	assert_int_equal(jget(o, "changes"), 0);
	assert_int_equal(jget(o, "min"), 0);
	assert_int_equal(jget(o, "min_at_ms"), JUN11 * 1000);
	assert_int_equal(jget(o, "known_ms"), 3600 * 1000);
	json_decref(o);

	cumul__free(c);
	tsync_site_free(site);
}

/* Bad input gets the seed's error names' codes; a malformed one err_cmd_args. */
static void test_bad_requests(void **state)
{
	tsync_site *site = load_site(NULL);
	struct cumul *c;
	char *res = NULL;
	const int64_t M = JUN10 * 1000000LL;
	json_t *o;

	(void)state;
	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M), 0);
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"fld\":\"remote\"}", M, &res),
	                 TSYNC_ENOT_USED);
	assert_null(res);
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"fld\":\"nope\"}", M, &res),
	                 TSYNC_EUNKNOWN_THING);
	assert_int_equal(
	    cumul__request(c, "{\"type\":\"cum\",\"fld\":\"door\",\"day\":\"2026-06-09\"}", M, &res),
	    TSYNC_EVALUE);
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"fld\":7}", M, &res), TSYNC_ECMD_ARGS);
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"fld\":\"door\"}", M + H, &res), 0);
	o = json_loads(res, 0, NULL);
	free(res);
	assert_string_equal(json_string_value(json_object_get(o, "type")), "cum");
	assert_string_equal(json_string_value(json_object_get(o, "fld")), "door");
	assert_true(json_is_object(json_object_get(o, "cum")));
	json_decref(o);
	cumul__free(c);
	tsync_site_free(site);
}

/* 23- and 25-hour days: a bool on all day is on for exactly that long. */
static void test_dst_days(void **state)
{
	tsync_site *site = load_site(NULL);
	struct cumul *c;
	json_t *o;

	(void)state;
	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, MAR29 * 1000000LL), 0);
	set_b(c, site, "door", true, MAR29 * 1000000LL);
	assert_int_equal(cumul__tick(c, MAR30 * 1000000LL), 1);
	o = get_cum(c, "door", "2026-03-29", MAR30 * 1000000LL);
	assert_int_equal(jget(o, "on_ms"), 23 * 3600 * 1000);
	json_decref(o);
	cumul__free(c);

	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, OCT25 * 1000000LL), 0);
	set_b(c, site, "door", true, OCT25 * 1000000LL);
	/* One microsecond before the 25th hour ends, the day is still open. */
	assert_int_equal(cumul__tick(c, OCT26 * 1000000LL - 1), 0);
	assert_int_equal(cumul__tick(c, OCT26 * 1000000LL), 1);
	o = get_cum(c, "door", "2026-10-25", OCT26 * 1000000LL);
	assert_int_equal(jget(o, "on_ms"), 25 * 3600 * 1000);
	json_decref(o);
	cumul__free(c);
	tsync_site_free(site);
}

static struct store *open_store(const char *dir)
{
	struct store *st = NULL;
	assert_int_equal(store__open(dir, 0, NULL, &st), 0);
	return st;
}

/* A restart in the middle of the day continues it; the time the controller
 * was off is unknown (down), not the last value. */
static void test_restart_mid_day(void **state)
{
	tsync_site *site = load_site(NULL);
	char dir[300];
	struct store *st;
	struct cumul *c;
	const int64_t M = JUN10 * 1000000LL;
	json_t *o;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/restart", tmpdir);
	st = open_store(dir);
	assert_int_equal(cumul__new(site, 0, st, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M), 0);
	set_i(c, site, "power", 100, M);
	set_i(c, site, "power", 200, M + 1 * H);
	assert_int_equal(cumul__flush(c, M + 2 * H), 0); /* the last checkpoint */
	assert_int_equal(store__commit(st), 0);
	set_i(c, site, "power", 999, M + 2 * H + 1); /* never committed: lost in the crash */
	cumul__free(c);
	store__abandon(st);

	st = open_store(dir);
	assert_int_equal(cumul__new(site, 0, st, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M + 3 * H), 0);
	assert_string_equal(cumul__today(c), "2026-06-10");
	set_i(c, site, "power", 200, M + 3 * H); /* the node feeds its value at start */
	assert_int_equal(cumul__tick(c, M + 24 * H), 1);
	o = get_cum(c, "power", "2026-06-10", M + 24 * H);
	assert_int_equal(jget(o, "changes"), 1); /* 100 -> 200; 200 again after the restart is none */
	assert_int_equal(jget(o, "known_ms"), 23 * 3600 * 1000);
	assert_int_equal(jget(o, "unknown_ms"), 1 * 3600 * 1000);
	assert_int_equal(jget(o, "down_ms"), 1 * 3600 * 1000);
	assert_int_equal(jget(o, "max"), 200);
	/* 100 x 1 h + 200 x 1 h + 200 x 21 h */
	assert_true(fabs(jnum(o, "integral") - 4500.0) < 1e-9);
	json_decref(o);
	assert_int_equal(cumul__flush(c, M + 24 * H), 0);
	cumul__free(c);
	store__close(st);

	/* The closed day is kept in the store too. */
	st = open_store(dir);
	assert_int_equal(cumul__new(site, 0, st, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M + 24 * H + 1), 0);
	o = get_cum(c, "power", "2026-06-10", M + 24 * H + 1);
	assert_int_equal(jget(o, "known_ms"), 23 * 3600 * 1000);
	json_decref(o);
	cumul__free(c);
	store__close(st);
	tsync_site_free(site);
}

/* Off across midnight: the day is closed at start-up, with the time off
 * unknown on both sides of midnight. */
static void test_off_across_midnight(void **state)
{
	tsync_site *site = load_site(NULL);
	char dir[300];
	struct store *st;
	struct cumul *c;
	const int64_t M = JUN10 * 1000000LL;
	json_t *o;

	(void)state;
	snprintf(dir, sizeof(dir), "%s/midnight", tmpdir);
	st = open_store(dir);
	assert_int_equal(cumul__new(site, 0, st, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M + 20 * H), 0);
	set_b(c, site, "door", true, M + 20 * H);
	assert_int_equal(cumul__flush(c, M + 22 * H), 0);
	cumul__free(c);
	store__close(st);

	st = open_store(dir);
	assert_int_equal(cumul__new(site, 0, st, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M + 26 * H), 0);
	assert_string_equal(cumul__today(c), "2026-06-11");
	o = get_cum(c, "door", "2026-06-10", M + 26 * H);
	assert_int_equal(jget(o, "start_ms"), JUN10 * 1000 + 20 * 3600 * 1000);
	assert_int_equal(jget(o, "on_ms"), 2 * 3600 * 1000);
	assert_int_equal(jget(o, "down_ms"), 2 * 3600 * 1000);
	json_decref(o);
	o = get_cum(c, "door", NULL, M + 26 * H);
	assert_int_equal(jget(o, "start_ms"), JUN11 * 1000);
	assert_int_equal(jget(o, "down_ms"), 2 * 3600 * 1000);
	assert_int_equal(jget(o, "on_ms"), 0);
	json_decref(o);
	cumul__free(c);
	store__close(st);
	tsync_site_free(site);
}

/* The reset closes the open day now, once per day however often it comes;
 * midnight then passes without a second close, and the bound holds. */
static void test_reset_once_and_bound(void **state)
{
	tsync_site *site = load_site("cumul_days = 2\n");
	struct cumul *c;
	const int64_t M = JUN10 * 1000000LL;
	char closed[CUMUL_DATE_LEN + 1];
	char *res = NULL;

	(void)state;
	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M), 0);
	assert_int_equal(cumul__reset(c, M + 23 * H, NULL, closed), 1);
	assert_string_equal(closed, "2026-06-10");
	assert_string_equal(cumul__today(c), "2026-06-11");
	assert_int_equal(cumul__reset(c, M + 23 * H + 1, NULL, closed), 0);
	assert_string_equal(closed, "");
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\"}", M + 23 * H + 2, &res), 0);
	assert_string_equal(res, "{\"type\":\"cum\",\"closed\":null,\"day\":\"2026-06-11\"}");
	free(res);
	assert_int_equal(cumul__tick(c, M + 24 * H), 0); /* midnight: already closed */
	assert_int_equal(cumul__tick(c, M + 48 * H), 1);
	assert_int_equal(cumul__tick(c, M + 72 * H), 1);
	/* cumul_days = 2: the oldest is gone. */
	assert_int_equal(cumul__get(c, "door", "2026-06-10", M + 72 * H, &res), TSYNC_EVALUE);
	assert_int_equal(cumul__get(c, "door", "2026-06-11", M + 72 * H, &res), 0);
	free(res);
	cumul__free(c);
	tsync_site_free(site);
}

/* The forensics role's reset names the day it closes: late (after the
 * owner's own midnight) it closes nothing, so the next day stays whole; in
 * time (the owner's clock a little behind) it closes that day once. */
static void test_reset_of_a_day(void **state)
{
	tsync_site *site = load_site("");
	struct cumul *c;
	const int64_t M = JUN10 * 1000000LL;
	char closed[CUMUL_DATE_LEN + 1];
	char *res = NULL;
	json_t *o;

	(void)state;
	assert_int_equal(cumul__new(site, 0, NULL, NULL, &c), 0);
	assert_int_equal(cumul__start(c, M), 0);
	/* Late: midnight closed 2026-06-10 already; 2026-06-11 is not touched. */
	assert_int_equal(cumul__reset(c, M + 24 * H + 5, "2026-06-10", closed), 0);
	assert_string_equal(closed, "");
	assert_string_equal(cumul__today(c), "2026-06-11");
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"day\":\"2026-06-10\"}", M + 25 * H, &res), 0);
	assert_string_equal(res, "{\"type\":\"cum\",\"closed\":null,\"day\":\"2026-06-11\"}");
	free(res);
	o = get_cum(c, "door", NULL, M + 25 * H);
	assert_int_equal(jget(o, "start_ms"), (JUN10 + 86400) * 1000LL);
	json_decref(o);
	/* In time: the owner is still on 2026-06-11 a second before midnight. */
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"day\":\"2026-06-11\"}", M + 48 * H - 1000000,
	                                &res),
	                 0);
	assert_string_equal(res, "{\"type\":\"cum\",\"closed\":\"2026-06-11\",\"day\":\"2026-06-12\"}");
	free(res);
	assert_int_equal(cumul__reset(c, M + 48 * H - 500000, "2026-06-11", closed), 0);
	assert_int_equal(cumul__tick(c, M + 48 * H), 0);
	assert_int_equal(cumul__request(c, "{\"type\":\"cum\",\"day\":\"bad\"}", M + 48 * H, &res),
	                 TSYNC_ECMD_ARGS);
	cumul__free(c);
	tsync_site_free(site);
}

static void test_site_timezone(void **state)
{
	char path[512];
	tsync_site *site = NULL;
	char *errors = NULL;
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/badtz.conf", tmpdir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("[site]\nname = t\ntimezone = Europe/Nowhere\ncumul_days = 0\n"
	      "[controller A]\nhost = 127.0.0.1\nudp_port = 6001\n",
	      f);
	fclose(f);
	assert_int_equal(tsync_site_load(path, &site, &errors), TSYNC_ESITE);
	assert_non_null(errors);
	assert_non_null(strstr(errors, "badtz.conf:3:"));
	assert_non_null(strstr(errors, "timezone 'Europe/Nowhere'"));
	assert_non_null(strstr(errors, "badtz.conf:4:"));
	free(errors);
}

/* --- over the mesh ---------------------------------------------------------- */

struct answer {
	bool done;
	int status;
	char *result;
};

static void on_done(void *ud, tsync_node *node, int status, const char *result)
{
	struct answer *a = ud;
	(void)node;
	a->done = true;
	a->status = status;
	a->result = result ? strdup(result) : NULL;
}

static void give_up(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(bool *)arg = true;
}

static void wait_answer(struct event_base *base, struct answer *a)
{
	bool expired = false;
	struct timeval tv = {30, 0}; /* a bound on a broken run, not a wait */
	struct event *ev = evtimer_new(base, give_up, &expired);

	evtimer_add(ev, &tv);
	while (!a->done && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(ev);
	assert_true(a->done);
}

static int64_t fake_now;
static int64_t fake_clock(void *ud)
{
	(void)ud;
	return fake_now;
}

static void test_mesh_cum(void **state)
{
	tsync_site *site = load_site(NULL);
	struct event_base *base = event_base_new();
	tsync_node_options o;
	tsync_node *a = NULL, *f = NULL;
	tsync_faults faults = {.loss = 0.3, .duplicate = 0.3, .seed = 7};
	struct answer ans[6];
	char dir[300];
	json_t *j;
	tsync_value v = tsync_int(250);

	(void)state;
	fake_now = JUN10 * 1000000LL + 10 * H;
	node__set_clock(fake_clock, NULL);
	memset(ans, 0, sizeof(ans));
	snprintf(dir, sizeof(dir), "%s/nodeA", tmpdir);
	tsync_node_options_init(&o);
	o.site = site;
	o.event_base = base;
	o.controller = "A";
	o.state_dir = dir;
	assert_int_equal(tsync_node_new(&o, &a), 0);
	o.controller = "F";
	o.state_dir = NULL;
	assert_int_equal(tsync_node_new(&o, &f), 0);
	assert_int_equal(tsync_node_set(a, "power", &v), 0);
	assert_int_equal(tsync_node_set_unknown(a, "power", true), 0);
	assert_int_equal(tsync_node_set_unknown(a, "remote", true), TSYNC_ENOT_USED);
	fake_now += H;
	assert_int_equal(tsync_node_set_faults(a, &faults), 0);
	assert_int_equal(tsync_node_set_faults(f, &faults), 0);

	assert_int_equal(tsync_node_request(f, "A", "cum", "{\"fld\":\"power\"}", on_done, &ans[0]), 0);
	wait_answer(base, &ans[0]);
	assert_int_equal(ans[0].status, 0);
	j = json_loads(ans[0].result, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "fld")), "power");
	assert_int_equal(jget(json_object_get(j, "cum"), "unknown_ms"), 3600 * 1000);
	assert_int_equal(jget(json_object_get(j, "cum"), "last"), 250);
	json_decref(j);

	/* The seed's error names, back as codes. */
	assert_int_equal(tsync_node_request(f, "A", "cum", "{\"fld\":\"remote\"}", on_done, &ans[1]), 0);
	wait_answer(base, &ans[1]);
	assert_int_equal(ans[1].status, TSYNC_ENOT_USED);
	assert_int_equal(tsync_node_request(f, "A", "cum", "{\"fld\":\"ghost\"}", on_done, &ans[2]), 0);
	wait_answer(base, &ans[2]);
	assert_int_equal(ans[2].status, TSYNC_EUNKNOWN_THING);
	assert_int_equal(
	    tsync_node_request(f, "A", "cum", "{\"fld\":\"door\",\"day\":\"2001-01-01\"}", on_done, &ans[3]),
	    0);
	wait_answer(base, &ans[3]);
	assert_int_equal(ans[3].status, TSYNC_EVALUE);

	/* The reset, through loss and duplicates: the day closes once. */
	assert_int_equal(tsync_node_request(f, "A", "cum", NULL, on_done, &ans[4]), 0);
	wait_answer(base, &ans[4]);
	assert_int_equal(ans[4].status, 0);
	assert_string_equal(ans[4].result,
	                    "{\"type\":\"cum\",\"closed\":\"2026-06-10\",\"day\":\"2026-06-11\"}");
	assert_int_equal(tsync_node_request(f, "A", "cum", NULL, on_done, &ans[5]), 0);
	wait_answer(base, &ans[5]);
	assert_string_equal(ans[5].result, "{\"type\":\"cum\",\"closed\":null,\"day\":\"2026-06-11\"}");

	/* Midnight by the node's own timer: the day after the reset closes. */
	fake_now = JUN11 * 1000000LL + 24 * H;
	node__cumul_tick(a);
	{
		char *s = NULL;
		assert_int_equal(tsync_node_cumul(a, "power", "2026-06-11", &s), 0);
		free(s);
		assert_int_equal(tsync_node_cumul(a, "power", "2026-06-10", &s), 0);
		j = json_loads(s, 0, NULL);
		free(s);
		assert_int_equal(jget(j, "end_ms"), (JUN10 * 1000000LL + 11 * H) / 1000);
		json_decref(j);
	}
	tsync_node_free(f);
	tsync_node_free(a);

	/* A restart of A keeps the closed days. */
	o.controller = "A";
	o.state_dir = dir;
	o.event_base = base;
	assert_int_equal(tsync_node_new(&o, &a), 0);
	{
		char *s = NULL;
		assert_int_equal(tsync_node_cumul(a, "power", "2026-06-10", &s), 0);
		free(s);
	}
	tsync_node_free(a);
	node__set_clock(NULL, NULL);
	for (size_t i = 0; i < 6; i++)
		free(ans[i].result);
	event_base_free(base);
	tsync_site_free(site);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_midnights),
	    cmocka_unit_test(test_day_exact),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_dst_days),
	    cmocka_unit_test(test_restart_mid_day),
	    cmocka_unit_test(test_off_across_midnight),
	    cmocka_unit_test(test_reset_once_and_bound),
	    cmocka_unit_test(test_reset_of_a_day),
	    cmocka_unit_test(test_site_timezone),
	    cmocka_unit_test(test_mesh_cum),
	};
	const char *base = getenv("TMPDIR");
	int r;

	unsetenv("TZ");
	snprintf(tmpdir, sizeof(tmpdir), "%s/tsync-cumul-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(tmpdir))
		return 1;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	{
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			r = r ? r : 1;
	}
	return r;
}
