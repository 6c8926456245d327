/*
 * thingsctl cum: asks the owner of a thing, through its thingsd API (as
 * every read of thingsctl does), for the thing's cumul of the open day or
 * of a closed one (thingsync-cumul(7)), and prints it per type.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cum.h"

static long long jint(const json_t *o, const char *k)
{
	return (long long)json_integer_value(json_object_get(o, k));
}

static double hours(const json_t *o, const char *k)
{
	return (double)jint(o, k) / 3600e3;
}

/* A time in milliseconds since the epoch, as local date and time, or "-". */
static const char *when(const json_t *o, const char *k, char *buf, size_t len)
{
	const json_t *v = json_object_get(o, k);
	time_t t;
	struct tm tm;

	if (!json_is_integer(v))
		return "-";
	t = (time_t)(json_integer_value(v) / 1000);
	localtime_r(&t, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	return buf;
}

static void print_cum(const char *thing, const char *owner, const json_t *cum)
{
	const char *type = json_string_value(json_object_get(cum, "type"));
	char a[32], b[32], v[256];

	if (!type)
		type = "?";
	printf("%s (%s, owner %s): %s, %s\n", thing, type, owner,
	       json_string_value(json_object_get(cum, "day")) ? json_string_value(json_object_get(cum, "day"))
	                                                      : "?",
	       json_is_true(json_object_get(cum, "closed")) ? "closed" : "open");
	printf("  from %s to %s\n", when(cum, "start_ms", a, sizeof(a)), when(cum, "end_ms", b, sizeof(b)));
	printf("  known %.2f h, unknown %.2f h (controller off %.2f h)%s\n", hours(cum, "known_ms"),
	       hours(cum, "unknown_ms"), hours(cum, "down_ms"),
	       json_is_false(json_object_get(cum, "known")) ? ", no value now" : "");
	client__value_text(json_object_get(cum, "last"), v, sizeof(v));
	printf("  changes %lld (first %s, last %s), last value %s\n", jint(cum, "changes"),
	       when(cum, "first_change_ms", a, sizeof(a)), when(cum, "last_change_ms", b, sizeof(b)), v);
	if (!strcmp(type, "bool")) {
		printf("  rises %lld, on %.2f h, off %.2f h\n", jint(cum, "rises"), hours(cum, "on_ms"),
		       hours(cum, "off_ms"));
	} else if (!strcmp(type, "int") || !strcmp(type, "float")) {
		char mn[64], mx[64], mean[64];
		client__value_text(json_object_get(cum, "min"), mn, sizeof(mn));
		client__value_text(json_object_get(cum, "max"), mx, sizeof(mx));
		client__value_text(json_object_get(cum, "mean"), mean, sizeof(mean));
		printf("  min %s at %s, max %s at %s\n", mn, when(cum, "min_at_ms", a, sizeof(a)), mx,
		       when(cum, "max_at_ms", b, sizeof(b)));
		printf("  mean %s, integral %.6g value-hours (W: Wh)\n", mean,
		       json_number_value(json_object_get(cum, "integral")));
	} else if (!strcmp(type, "string")) {
		const char *k;
		json_t *ms;
		json_object_foreach(json_object_get(cum, "values"), k, ms)
		    printf("  %-20s %.2f h\n", k, (double)json_integer_value(ms) / 3600e3);
		if (jint(cum, "other_ms"))
			printf("  %-20s %.2f h\n", "(other values)", hours(cum, "other_ms"));
	}
	printf("  pulses %lld (%lld ms)\n", jint(cum, "pulses"), jint(cum, "pulse_ms"));
}

int cmd_cum(struct ctl *c, int argc, char **argv)
{
	const char *thing = NULL, *day = NULL, *to = NULL, *owner;
	char err[256], *base, *body;
	struct reply r;
	tsync_thing_info ti;
	json_t *b;
	int ix, rc;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--day") && i + 1 < argc)
			day = argv[++i];
		else if (!strcmp(argv[i], "--to") && i + 1 < argc)
			to = argv[++i];
		else if (!strcmp(argv[i], "--json") || !strcmp(argv[i], "-j"))
			c->json = true;
		else if (!thing && argv[i][0] != '-')
			thing = argv[i];
		else
			thing = NULL, argc = -1;
	}
	if (!thing || argc < 0) {
		fprintf(stderr, "usage: thingsctl cum THING [--day YYYY-MM-DD] [--to CONTROLLER] [--json]\n");
		return EXIT_USAGE;
	}
	if (!c->site) {
		fprintf(stderr, "thingsctl: cannot load %s: %s\n", c->conf_path, tsync_strerror(c->site_err));
		return EXIT_FAIL;
	}
	ix = tsync_site_thing_find(c->site, thing);
	if (ix < 0 || tsync_site_thing(c->site, (size_t)ix, &ti) < 0) {
		fprintf(stderr, "thingsctl: %s: no such thing in %s (err_ip_in_io)\n", thing, c->conf_path);
		return EXIT_UNKNOWN;
	}
	/* The owner answers; --to asks another controller (which refuses,
	 * err_ip_in_ths_i_use, unless it owns the thing). Through -n's API
	 * when given, else the asked controller's own. */
	owner = to ? to : ti.owner;
	base = c->url ? strdup(c->url) : client__url_of(c, c->name ? c->name : owner, err, sizeof(err));
	if (!base) {
		fprintf(stderr, "thingsctl: %s\n", c->url ? "out of memory" : err);
		return EXIT_USAGE;
	}
	b = json_pack("{ssssssss*}", "type", "cum", "to", owner, "fld", thing, "day", day);
	body = b ? json_dumps(b, JSON_COMPACT) : NULL;
	json_decref(b);
	{
		char path[64];
		snprintf(path, sizeof(path), "/cmd?wait_ms=%ld", (long)(c->timeout_s * 1000));
		client__request(c, base, "POST", path, body, body ? strlen(body) : 0, NULL, &r);
	}
	free(body);
	free(base);
	rc = client__exit_code(&r, thing);
	if (rc == EXIT_OK) {
		json_t *res = json_object_get(r.json, "result"), *cum = json_object_get(res, "cum");
		if (!json_is_object(cum)) {
			fprintf(stderr, "thingsctl: %s: the answer holds no cumul\n", thing);
			rc = EXIT_FAIL;
		} else if (c->json) {
			char *s = json_dumps(cum, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
			if (s)
				printf("%s\n", s);
			free(s);
		} else {
			print_cum(thing, ti.owner, cum);
		}
	}
	client__reply_free(&r);
	return rc;
}
