/*
 * lib/cumul: per thing and per day cumuls at the owner (see cumul.h).
 *
 * Time is accounted lazily: each thing remembers its state (a value, or
 * none) and the instant `t` up to which that state has been counted; every
 * event first counts [t, now) to the old state, then changes it. So a day
 * is exact to the microsecond whatever the events' spacing, and reading a
 * cumul mid-day counts a copy up to now without touching the record.
 *
 * Time zones: the C library's tz support (setenv("TZ") + tzset() around
 * localtime_r() and mktime()), restored afterwards. It is used once per day
 * boundary, not per event, and the library is single-threaded per node; an
 * application that reads local time from another thread meanwhile could see
 * the site's zone for an instant, which is why the swap is as short as it
 * is. Computing offsets ourselves would mean parsing TZif files: glibc
 * already does it, with the same tzdata the rest of the system uses.
 *
 * Store records ("cumuls" database, JSON text):
 *   "meta"         {"day","start","end","alive"} the open day and the last
 *                  checkpoint (microseconds since the epoch)
 *   "cur:THING"    the open day's running record of one thing (microseconds)
 *   "day:DATE"     a closed day as answered (milliseconds), all things
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cumul/cumul.h"

#define KEY_META "meta"
#define KEY_CUR  "cur:"
#define KEY_DAY  "day:"

struct strtime {
	char *v; /* owned */
	int64_t us;
};

struct cthing {
	uint32_t ix;      /* thing index in the site */
	const char *name; /* borrowed from the site */
	tsync_type type;
	bool known;       /* the owner has a value now */
	bool down;        /* unknown because the controller was off */
	tsync_value v;    /* the value now (known); string owned */
	bool has_last;    /* a value was ever known (changes are against it) */
	tsync_value last; /* string owned */
	int64_t t;        /* accounted up to */
	bool dirty;

	int64_t known_us, unknown_us, down_us, pulses, pulse_us, changes, first_change, last_change;
	int64_t rises, on_us, off_us;
	bool has_minmax;
	double min, max, integral; /* integral: value x microseconds */
	int64_t min_at, max_at;
	struct strtime sv[CUMUL_MAX_STRINGS];
	size_t nsv;
	int cur_sv; /* index in sv of the current string, -1: "other" */
	int64_t other_us;
};

struct closed_day {
	char day[CUMUL_DATE_LEN + 1];
	json_t *obj; /* {"day","start_ms","end_ms","things":{...}} */
};

struct cumul {
	const struct tsync_site *site;
	uint32_t me;
	struct store *store;
	const struct logger *log;
	struct cthing *th;
	size_t n;
	uint32_t *pos; /* by site thing index: its place in th + 1, 0 if not owned */
	char day[CUMUL_DATE_LEN + 1];
	int64_t start, end;
	bool have_day;
	int64_t alive; /* last checkpoint loaded (0: none) */
	bool meta_dirty;
	struct closed_day *closed;
	size_t nclosed;
	/* Closed days to delete from the store at the next flush. */
	char (*gone)[CUMUL_DATE_LEN + 1];
	size_t ngone;
};

/* --- time zones ----------------------------------------------------------------- */

struct tzswap {
	bool active, had;
	char *old;
};

static int tz_enter(const char *tz, struct tzswap *s)
{
	const char *o;

	memset(s, 0, sizeof(*s));
	if (!tz)
		return 0;
	o = getenv("TZ");
	s->had = o != NULL;
	if (o && !(s->old = util__strdup(o)))
		return -ENOMEM;
	if (setenv("TZ", tz, 1) < 0) {
		free(s->old);
		return -ENOMEM;
	}
	tzset();
	s->active = true;
	return 0;
}

static void tz_leave(struct tzswap *s)
{
	if (!s->active)
		return;
	if (s->had)
		setenv("TZ", s->old, 1);
	else
		unsetenv("TZ");
	free(s->old);
	tzset();
}

int cumul__midnight(const char *tz, int64_t t_us, int days, int64_t *midnight_us,
                    char label[CUMUL_DATE_LEN + 1])
{
	struct tzswap sw;
	time_t secs = (time_t)(t_us / 1000000);
	struct tm tm;
	time_t m;
	int r = tz_enter(tz, &sw);

	if (r < 0)
		return r;
	localtime_r(&secs, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_mday += days;
	/* Let mktime decide whether midnight of that date is summer time. */
	tm.tm_isdst = -1;
	m = mktime(&tm);
	localtime_r(&m, &tm);
	snprintf(label, CUMUL_DATE_LEN + 1, "%04u-%02u-%02u", (unsigned)(tm.tm_year + 1900) % 10000u,
	         (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u);
	tz_leave(&sw);
	*midnight_us = (int64_t)m * 1000000;
	return 0;
}

/* --- one thing ------------------------------------------------------------------ */

static double num_of(const tsync_value *v)
{
	return v->type == TSYNC_TYPE_INT ? (double)v->u.i : v->u.f;
}

static bool is_num(tsync_type t)
{
	return t == TSYNC_TYPE_INT || t == TSYNC_TYPE_FLOAT;
}

static void account(struct cthing *t, int64_t upto)
{
	int64_t dt = upto - t->t;

	if (dt <= 0)
		return;
	t->t = upto;
	if (!t->known) {
		t->unknown_us += dt;
		if (t->down)
			t->down_us += dt;
		return;
	}
	t->known_us += dt;
	if (t->type == TSYNC_TYPE_BOOL) {
		if (t->v.u.b)
			t->on_us += dt;
		else
			t->off_us += dt;
	} else if (is_num(t->type)) {
		t->integral += num_of(&t->v) * (double)dt;
	} else if (t->type == TSYNC_TYPE_STRING) {
		if (t->cur_sv >= 0)
			t->sv[t->cur_sv].us += dt;
		else
			t->other_us += dt;
	}
}

static void minmax(struct cthing *t, int64_t at)
{
	double x;

	if (!is_num(t->type) || !t->known)
		return;
	x = num_of(&t->v);
	if (!t->has_minmax || x < t->min) {
		t->min = x;
		t->min_at = at;
	}
	if (!t->has_minmax || x > t->max) {
		t->max = x;
		t->max_at = at;
	}
	t->has_minmax = true;
}

/* The slot of the current string; allocated here, at the change, so that
 * accounting never allocates. */
static void string_slot(struct cthing *t)
{
	t->cur_sv = -1;
	if (t->type != TSYNC_TYPE_STRING || !t->known)
		return;
	for (size_t i = 0; i < t->nsv; i++)
		if (!strcmp(t->sv[i].v, t->v.u.s)) {
			t->cur_sv = (int)i;
			return;
		}
	if (t->nsv < CUMUL_MAX_STRINGS && (t->sv[t->nsv].v = util__strdup(t->v.u.s))) {
		t->sv[t->nsv].us = 0;
		t->cur_sv = (int)t->nsv++;
	}
}

static void clear_counters(struct cthing *t)
{
	for (size_t i = 0; i < t->nsv; i++)
		free(t->sv[i].v);
	t->nsv = 0;
	t->known_us = t->unknown_us = t->down_us = t->pulses = t->pulse_us = t->changes = 0;
	t->first_change = t->last_change = -1;
	t->rises = t->on_us = t->off_us = 0;
	t->has_minmax = false;
	t->min = t->max = t->integral = 0;
	t->min_at = t->max_at = 0;
	t->other_us = 0;
	t->cur_sv = -1;
}

/* Replaces `dst` (its string freed) with a copy of `src`. */
static int keep(tsync_value *dst, const tsync_value *src)
{
	tsync_value tmp;
	int r;

	/* Numbers and booleans own nothing: a plain copy (every change). */
	if (dst->type != TSYNC_TYPE_STRING && src->type != TSYNC_TYPE_STRING) {
		*dst = *src;
		return 0;
	}
	r = value__copy(&tmp, src);
	if (r < 0)
		return r;
	value__clear(dst);
	*dst = tmp;
	return 0;
}

static void set_state(struct cthing *t, const tsync_value *v, bool down, int64_t now)
{
	account(t, now);
	t->dirty = true;
	if (!v || v->type == TSYNC_TYPE_NONE) {
		t->known = false;
		t->down = down;
		t->cur_sv = -1;
		return;
	}
	if (t->has_last && !value__equal(&t->last, v)) {
		t->changes++;
		if (t->first_change < 0)
			t->first_change = now;
		t->last_change = now;
		if (t->type == TSYNC_TYPE_BOOL && !t->last.u.b && v->u.b)
			t->rises++;
	}
	if (keep(&t->v, v) < 0 || keep(&t->last, v) < 0) {
		/* Out of memory for a string: count the time as unknown rather
		 * than under a value we could not keep. */
		t->known = false;
		return;
	}
	t->known = true;
	t->down = false;
	t->has_last = true;
	minmax(t, now);
	string_slot(t);
}

/* --- JSON ----------------------------------------------------------------------- */

static json_t *value_json(const tsync_value *v)
{
	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return json_boolean(v->u.b);
	case TSYNC_TYPE_INT:
		return json_integer((json_int_t)v->u.i);
	case TSYNC_TYPE_FLOAT:
		return json_real(v->u.f);
	case TSYNC_TYPE_STRING:
		return json_string(v->u.s);
	default:
		return json_null();
	}
}

static int value_from_json(tsync_type type, const json_t *j, tsync_value *out)
{
	tsync_value v;

	memset(&v, 0, sizeof(v));
	v.type = type;
	if (type == TSYNC_TYPE_BOOL && json_is_boolean(j))
		v.u.b = json_is_true(j);
	else if (type == TSYNC_TYPE_INT && json_is_integer(j))
		v.u.i = (int64_t)json_integer_value(j);
	else if (type == TSYNC_TYPE_FLOAT && json_is_number(j))
		v.u.f = json_number_value(j);
	else if (type == TSYNC_TYPE_STRING && json_is_string(j))
		v.u.s = (char *)json_string_value(j);
	else
		return -EINVAL;
	return keep(out, &v);
}

static json_t *num_json(tsync_type type, double x)
{
	return type == TSYNC_TYPE_INT ? json_integer((json_int_t)llround(x)) : json_real(x);
}

static json_t *ms_or_null(int64_t us)
{
	return us < 0 ? json_null() : json_integer((json_int_t)(us / 1000));
}

/* The answer's cumul of `t` counted up to `upto` (a copy: `t` is unchanged). */
static json_t *cum_json(const struct cthing *orig, int64_t upto)
{
	struct cthing t = *orig;
	json_t *o = json_object();

	account(&t, upto);
	if (!o)
		return NULL;
	json_object_set_new(o, "type", json_string(tsync_type_name(t.type)));
	json_object_set_new(o, "known_ms", json_integer(t.known_us / 1000));
	json_object_set_new(o, "unknown_ms", json_integer(t.unknown_us / 1000));
	json_object_set_new(o, "down_ms", json_integer(t.down_us / 1000));
	json_object_set_new(o, "pulses", json_integer(t.pulses));
	json_object_set_new(o, "pulse_ms", json_integer(t.pulse_us / 1000));
	json_object_set_new(o, "changes", json_integer(t.changes));
	json_object_set_new(o, "first_change_ms", ms_or_null(t.first_change));
	json_object_set_new(o, "last_change_ms", ms_or_null(t.last_change));
	json_object_set_new(o, "last", t.has_last ? value_json(&t.last) : json_null());
	if (t.type == TSYNC_TYPE_BOOL) {
		json_object_set_new(o, "rises", json_integer(t.rises));
		json_object_set_new(o, "on_ms", json_integer(t.on_us / 1000));
		json_object_set_new(o, "off_ms", json_integer(t.off_us / 1000));
	} else if (is_num(t.type)) {
		json_object_set_new(o, "min", t.has_minmax ? num_json(t.type, t.min) : json_null());
		json_object_set_new(o, "min_at_ms", t.has_minmax ? ms_or_null(t.min_at) : json_null());
		json_object_set_new(o, "max", t.has_minmax ? num_json(t.type, t.max) : json_null());
		json_object_set_new(o, "max_at_ms", t.has_minmax ? ms_or_null(t.max_at) : json_null());
		json_object_set_new(
		    o, "mean", t.known_us > 0 ? json_real(t.integral / (double)t.known_us) : json_null());
		/* Value-hours: a power in W integrates to energy in Wh. */
		json_object_set_new(o, "integral", json_real(t.integral / 3600e6));
	} else if (t.type == TSYNC_TYPE_STRING) {
		json_t *vals = json_object();
		for (size_t i = 0; vals && i < t.nsv; i++)
			json_object_set_new(vals, t.sv[i].v, json_integer(t.sv[i].us / 1000));
		json_object_set_new(o, "values", vals ? vals : json_null());
		json_object_set_new(o, "other_ms", json_integer(t.other_us / 1000));
	}
	return o;
}

/* The running record of a thing, for the store (microseconds, exact). */
static char *record_json(const struct cthing *t)
{
	json_t *o = json_object(), *sv = json_array();
	char *s;

	if (!o || !sv) {
		json_decref(o);
		json_decref(sv);
		return NULL;
	}
	for (size_t i = 0; i < t->nsv; i++)
		json_array_append_new(sv, json_pack("[sI]", t->sv[i].v, (json_int_t)t->sv[i].us));
	json_object_set_new(o, "t", json_integer(t->t));
	json_object_set_new(o, "known", json_boolean(t->known));
	json_object_set_new(o, "v", t->known ? value_json(&t->v) : json_null());
	json_object_set_new(o, "last", t->has_last ? value_json(&t->last) : json_null());
	json_object_set_new(o, "known_us", json_integer(t->known_us));
	json_object_set_new(o, "unknown_us", json_integer(t->unknown_us));
	json_object_set_new(o, "down_us", json_integer(t->down_us));
	json_object_set_new(o, "pulses", json_integer(t->pulses));
	json_object_set_new(o, "pulse_us", json_integer(t->pulse_us));
	json_object_set_new(o, "changes", json_integer(t->changes));
	json_object_set_new(o, "first_change", json_integer(t->first_change));
	json_object_set_new(o, "last_change", json_integer(t->last_change));
	json_object_set_new(o, "rises", json_integer(t->rises));
	json_object_set_new(o, "on_us", json_integer(t->on_us));
	json_object_set_new(o, "off_us", json_integer(t->off_us));
	json_object_set_new(o, "has_minmax", json_boolean(t->has_minmax));
	json_object_set_new(o, "min", json_real(t->min));
	json_object_set_new(o, "max", json_real(t->max));
	json_object_set_new(o, "min_at", json_integer(t->min_at));
	json_object_set_new(o, "max_at", json_integer(t->max_at));
	json_object_set_new(o, "integral", json_real(t->integral));
	json_object_set_new(o, "sv", sv);
	json_object_set_new(o, "other_us", json_integer(t->other_us));
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static int64_t jint(const json_t *o, const char *k, int64_t dflt)
{
	const json_t *j = json_object_get(o, k);
	return json_is_integer(j) ? (int64_t)json_integer_value(j) : dflt;
}

static double jreal(const json_t *o, const char *k)
{
	const json_t *j = json_object_get(o, k);
	return json_is_number(j) ? json_number_value(j) : 0;
}

static void record_load(struct cthing *t, const json_t *o)
{
	const json_t *sv = json_object_get(o, "sv"), *e;
	size_t i;

	clear_counters(t);
	t->t = jint(o, "t", t->t);
	t->known = json_is_true(json_object_get(o, "known")) &&
	           value_from_json(t->type, json_object_get(o, "v"), &t->v) == 0;
	t->has_last = value_from_json(t->type, json_object_get(o, "last"), &t->last) == 0;
	t->known_us = jint(o, "known_us", 0);
	t->unknown_us = jint(o, "unknown_us", 0);
	t->down_us = jint(o, "down_us", 0);
	t->pulses = jint(o, "pulses", 0);
	t->pulse_us = jint(o, "pulse_us", 0);
	t->changes = jint(o, "changes", 0);
	t->first_change = jint(o, "first_change", -1);
	t->last_change = jint(o, "last_change", -1);
	t->rises = jint(o, "rises", 0);
	t->on_us = jint(o, "on_us", 0);
	t->off_us = jint(o, "off_us", 0);
	t->has_minmax = json_is_true(json_object_get(o, "has_minmax"));
	t->min = jreal(o, "min");
	t->max = jreal(o, "max");
	t->min_at = jint(o, "min_at", 0);
	t->max_at = jint(o, "max_at", 0);
	t->integral = jreal(o, "integral");
	t->other_us = jint(o, "other_us", 0);
	json_array_foreach(sv, i, e)
	{
		const char *s = json_string_value(json_array_get(e, 0));
		if (!s || t->nsv == CUMUL_MAX_STRINGS || !(t->sv[t->nsv].v = util__strdup(s)))
			continue;
		t->sv[t->nsv++].us = (int64_t)json_integer_value(json_array_get(e, 1));
	}
	string_slot(t);
}

/* --- the cumul ------------------------------------------------------------------ */

int cumul__new(const struct tsync_site *site, uint32_t me, struct store *store, const struct logger *log,
               struct cumul **ret)
{
	struct cumul *c;
	size_t n = 0;

	if (!site || !ret || me >= site->n_controllers)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->site = site;
	c->me = me;
	c->store = store;
	c->log = log;
	for (size_t i = 0; i < site->n_things; i++)
		n += site->things[i].owner == me;
	c->th = calloc(n ? n : 1, sizeof(*c->th));
	c->pos = calloc(site->n_things ? site->n_things : 1, sizeof(*c->pos));
	if (!c->th || !c->pos) {
		free(c->th);
		free(c->pos);
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < site->n_things; i++) {
		struct cthing *t;
		if (site->things[i].owner != me)
			continue;
		t = &c->th[c->n++];
		c->pos[i] = (uint32_t)c->n;
		t->ix = (uint32_t)i;
		t->name = site->things[i].name;
		t->type = site->things[i].type;
		clear_counters(t);
	}
	*ret = c;
	return 0;
}

static void closed_free(struct closed_day *d)
{
	json_decref(d->obj);
	d->obj = NULL;
}

void cumul__free(struct cumul *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		clear_counters(&c->th[i]);
		value__clear(&c->th[i].v);
		value__clear(&c->th[i].last);
	}
	for (size_t i = 0; i < c->nclosed; i++)
		closed_free(&c->closed[i]);
	free(c->closed);
	free(c->gone);
	free(c->th);
	free(c->pos);
	free(c);
}

static struct cthing *find(struct cumul *c, uint32_t ix)
{
	/* By the index's place, not a search: it runs for every change. */
	if (ix >= c->site->n_things || !c->pos[ix])
		return NULL;
	return &c->th[c->pos[ix] - 1];
}

/* Opens the day labelled for `start`'s date, ending at the next midnight. */
static int open_day(struct cumul *c, int64_t start)
{
	int64_t m;
	int r = cumul__midnight(c->site->timezone, start, 1, &m, c->day);

	if (r < 0)
		return r;
	/* The label is the date of `start` itself, not of the midnight after. */
	r = cumul__midnight(c->site->timezone, start, 0, &(int64_t){0}, c->day);
	if (r < 0)
		return r;
	c->start = start;
	c->end = m;
	c->have_day = true;
	c->meta_dirty = true;
	return 0;
}

static int push_closed(struct cumul *c, const char *day, json_t *obj)
{
	struct closed_day *p;

	/* The oldest go first once the bound is reached. */
	while (c->nclosed > 0 && c->nclosed >= c->site->cumul_days) {
		void *g = realloc(c->gone, (c->ngone + 1) * sizeof(*c->gone));
		if (g) {
			c->gone = g;
			memcpy(c->gone[c->ngone++], c->closed[0].day, CUMUL_DATE_LEN + 1);
		}
		closed_free(&c->closed[0]);
		memmove(c->closed, c->closed + 1, (c->nclosed - 1) * sizeof(*c->closed));
		c->nclosed--;
	}
	p = realloc(c->closed, (c->nclosed + 1) * sizeof(*c->closed));
	if (!p)
		return -ENOMEM;
	c->closed = p;
	snprintf(p[c->nclosed].day, sizeof(p[c->nclosed].day), "%s", day);
	p[c->nclosed].obj = obj;
	c->nclosed++;
	return 0;
}

/* Closes the open day at `at` and opens the next one: labelled with the
 * date of `at`, or, when `early` (a reset before midnight), with the date
 * after it, so the rest of today belongs to tomorrow and midnight passes
 * without a second close. */
static int close_day(struct cumul *c, int64_t at, bool early)
{
	json_t *obj = json_object(), *things = json_object();
	char label[CUMUL_DATE_LEN + 1];
	int64_t next_end;
	int r;

	if (!obj || !things) {
		json_decref(obj);
		json_decref(things);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->n; i++) {
		struct cthing *t = &c->th[i];
		account(t, at);
		json_object_set_new(things, t->name, cum_json(t, at));
	}
	json_object_set_new(obj, "day", json_string(c->day));
	json_object_set_new(obj, "start_ms", json_integer(c->start / 1000));
	json_object_set_new(obj, "end_ms", json_integer(at / 1000));
	json_object_set_new(obj, "things", things);
	r = push_closed(c, c->day, obj);
	if (r < 0) {
		json_decref(obj);
		return r;
	}
	log_info(c->log, "cumuls of %s closed (%s)", c->day, early ? "reset" : "midnight");
	for (size_t i = 0; i < c->n; i++) {
		struct cthing *t = &c->th[i];
		clear_counters(t);
		/* The value held across the boundary is the new day's first. */
		minmax(t, at);
		string_slot(t);
		t->dirty = true;
	}
	if (early) {
		r = cumul__midnight(c->site->timezone, at, 2, &next_end, label);
		if (r == 0)
			r = cumul__midnight(c->site->timezone, at, 1, &(int64_t){0}, label);
		if (r < 0)
			return r;
		memcpy(c->day, label, sizeof(label));
		c->start = at;
		c->end = next_end;
		c->meta_dirty = true;
		return 0;
	}
	return open_day(c, at);
}

int cumul__tick(struct cumul *c, int64_t now_us)
{
	int closed = 0;

	while (c->have_day && now_us >= c->end) {
		/* A controller off for longer than the days kept: the days it
		 * missed entirely would all be unknown and pushed out again, so
		 * only the last ones are made. */
		if (closed >= (int)c->site->cumul_days + 1) {
			for (size_t i = 0; i < c->n; i++)
				c->th[i].t = now_us;
			if (open_day(c, now_us) < 0)
				break;
			break;
		}
		if (close_day(c, c->end, false) < 0)
			break;
		closed++;
	}
	return closed;
}

int64_t cumul__day_end(const struct cumul *c)
{
	return c->end;
}

const char *cumul__today(const struct cumul *c)
{
	return c->day;
}

int cumul__reset(struct cumul *c, int64_t now_us, const char *day, char closed[CUMUL_DATE_LEN + 1])
{
	char today[CUMUL_DATE_LEN + 1];
	int64_t m;
	int r;

	closed[0] = '\0';
	cumul__tick(c, now_us);
	/* A reset for a given day closes that day or nothing: one that comes
	 * late (retried while this controller was off, say) must not cut the
	 * next day short. */
	if (day && strcmp(c->day, day) != 0)
		return 0;
	r = cumul__midnight(c->site->timezone, now_us, 0, &m, today);
	if (r < 0)
		return r;
	/* The open day is already after today's date: today was closed. */
	if (strcmp(c->day, today) > 0)
		return 0;
	memcpy(closed, c->day, CUMUL_DATE_LEN + 1);
	r = close_day(c, now_us, true);
	return r < 0 ? r : 1;
}

void cumul__value(struct cumul *c, uint32_t thing, const tsync_value *v, int64_t now_us)
{
	struct cthing *t = find(c, thing);

	if (!t)
		return;
	cumul__tick(c, now_us);
	if (t->known && v && v->type != TSYNC_TYPE_NONE && value__equal(&t->v, v))
		return;
	set_state(t, v, false, now_us);
}

void cumul__pulse(struct cumul *c, uint32_t thing, uint32_t ms, int64_t now_us)
{
	struct cthing *t = find(c, thing);

	if (!t)
		return;
	cumul__tick(c, now_us);
	t->pulses++;
	t->pulse_us += (int64_t)ms * 1000;
	t->dirty = true;
}

/* --- store ---------------------------------------------------------------------- */

static void load_cb(void *ud, const char *key, const char *json)
{
	struct cumul *c = ud;
	json_error_t err;
	json_t *o = json_loads(json, 0, &err);

	if (!json_is_object(o)) {
		log_warn(c->log, "cumuls: record %s unreadable, skipped", key);
		json_decref(o);
		return;
	}
	if (!strcmp(key, KEY_META)) {
		const char *day = json_string_value(json_object_get(o, "day"));
		if (day && strlen(day) == CUMUL_DATE_LEN) {
			memcpy(c->day, day, CUMUL_DATE_LEN + 1);
			c->start = jint(o, "start", 0);
			c->end = jint(o, "end", 0);
			c->alive = jint(o, "alive", 0);
			c->have_day = c->end > c->start;
		}
	} else if (!strncmp(key, KEY_CUR, strlen(KEY_CUR))) {
		uint32_t ix;
		struct cthing *t;
		/* A thing no longer mine (site.conf changed) is left out. */
		if (name_index__get(&c->site->thing_ix, key + strlen(KEY_CUR), &ix) == 0 && (t = find(c, ix)))
			record_load(t, o);
	} else if (!strncmp(key, KEY_DAY, strlen(KEY_DAY)) &&
	           strlen(key) == strlen(KEY_DAY) + CUMUL_DATE_LEN) {
		if (push_closed(c, key + strlen(KEY_DAY), o) == 0)
			return; /* kept */
	}
	json_decref(o);
}

int cumul__start(struct cumul *c, int64_t now_us)
{
	int r;

	if (c->store) {
		r = store__load_cumuls(c->store, load_cb, c);
		if (r < 0)
			return r;
	}
	if (!c->have_day) {
		for (size_t i = 0; i < c->n; i++) {
			c->th[i].t = now_us;
			c->th[i].dirty = true;
		}
		return open_day(c, now_us);
	}
	/* Up to the last checkpoint the things held what they held; from there
	 * the controller was off, and what they were then nobody knows. */
	for (size_t i = 0; i < c->n; i++) {
		struct cthing *t = &c->th[i];
		int64_t alive = c->alive > t->t ? c->alive : t->t;
		if (t->t < c->start)
			t->t = c->start;
		if (alive > now_us)
			alive = now_us;
		account(t, alive);
		t->known = false;
		t->down = true;
		t->dirty = true;
	}
	c->meta_dirty = true;
	cumul__tick(c, now_us);
	for (size_t i = 0; i < c->n; i++)
		account(&c->th[i], now_us);
	return 0;
}

bool cumul__dirty(const struct cumul *c)
{
	if (c->meta_dirty || c->ngone)
		return true;
	for (size_t i = 0; i < c->n; i++)
		if (c->th[i].dirty)
			return true;
	return false;
}

int cumul__flush(struct cumul *c, int64_t now_us)
{
	char key[512];
	int r = 0;

	if (!c->store)
		return 0;
	for (size_t i = 0; r == 0 && i < c->ngone; i++) {
		snprintf(key, sizeof(key), KEY_DAY "%s", c->gone[i]);
		r = store__stage_cumul(c->store, key, NULL);
	}
	if (r == 0)
		c->ngone = 0;
	/* Closed days are written once: when they are new, the open day's
	 * meta changed with them. */
	for (size_t i = 0; r == 0 && c->meta_dirty && i < c->nclosed; i++) {
		char *s = json_dumps(c->closed[i].obj, JSON_COMPACT);
		snprintf(key, sizeof(key), KEY_DAY "%s", c->closed[i].day);
		r = s ? store__stage_cumul(c->store, key, s) : -ENOMEM;
		free(s);
	}
	for (size_t i = 0; r == 0 && i < c->n; i++) {
		struct cthing *t = &c->th[i];
		char *s;
		if (!t->dirty)
			continue;
		s = record_json(t);
		snprintf(key, sizeof(key), KEY_CUR "%s", t->name);
		r = s ? store__stage_cumul(c->store, key, s) : -ENOMEM;
		free(s);
		if (r == 0)
			t->dirty = false;
	}
	if (r == 0) {
		json_t *m = json_pack("{sssIsIsI}", "day", c->day, "start", (json_int_t)c->start, "end",
		                      (json_int_t)c->end, "alive", (json_int_t)now_us);
		char *s = m ? json_dumps(m, JSON_COMPACT) : NULL;
		r = s ? store__stage_cumul(c->store, KEY_META, s) : -ENOMEM;
		free(s);
		json_decref(m);
		if (r == 0)
			c->meta_dirty = false;
	}
	return r;
}

/* --- answers -------------------------------------------------------------------- */

static int lookup(struct cumul *c, const char *thing, struct cthing **out)
{
	uint32_t ix;

	if (!thing || name_index__get(&c->site->thing_ix, thing, &ix) < 0)
		return TSYNC_EUNKNOWN_THING;
	*out = find(c, ix);
	return *out ? 0 : TSYNC_ENOT_USED;
}

static json_t *get_json(struct cumul *c, const char *thing, const char *day, int64_t now_us, int *err)
{
	struct cthing *t;
	json_t *o;
	int r = lookup(c, thing, &t);

	*err = r;
	if (r < 0)
		return NULL;
	cumul__tick(c, now_us);
	if (!day || !strcmp(day, c->day)) {
		o = cum_json(t, now_us);
		if (o) {
			json_object_set_new(o, "day", json_string(c->day));
			json_object_set_new(o, "start_ms", json_integer(c->start / 1000));
			json_object_set_new(o, "end_ms", json_integer(now_us / 1000));
			json_object_set_new(o, "closed", json_false());
			/* Whether it has a value now: a driver down shows at once. */
			json_object_set_new(o, "known", json_boolean(t->known));
		}
		*err = o ? 0 : -ENOMEM;
		return o;
	}
	for (size_t i = 0; i < c->nclosed; i++) {
		json_t *src;
		if (strcmp(c->closed[i].day, day))
			continue;
		src = json_object_get(json_object_get(c->closed[i].obj, "things"), thing);
		if (!src)
			break; /* the thing was not mine that day */
		o = json_deep_copy(src);
		if (o) {
			json_object_set(o, "day", json_object_get(c->closed[i].obj, "day"));
			json_object_set(o, "start_ms", json_object_get(c->closed[i].obj, "start_ms"));
			json_object_set(o, "end_ms", json_object_get(c->closed[i].obj, "end_ms"));
			json_object_set_new(o, "closed", json_true());
		}
		*err = o ? 0 : -ENOMEM;
		return o;
	}
	*err = TSYNC_EVALUE;
	return NULL;
}

int cumul__get(struct cumul *c, const char *thing, const char *day, int64_t now_us, char **json)
{
	int r;
	json_t *o = get_json(c, thing, day, now_us, &r);

	if (!o)
		return r;
	*json = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return *json ? 0 : -ENOMEM;
}

int cumul__request(struct cumul *c, const char *req_json, int64_t now_us, char **result)
{
	json_error_t jerr;
	json_t *req = json_loads(req_json ? req_json : "", 0, &jerr), *fld, *day, *ans = NULL, *cum;
	int r;

	*result = NULL;
	if (!json_is_object(req)) {
		json_decref(req);
		return TSYNC_ECMD_ARGS;
	}
	fld = json_object_get(req, "fld");
	day = json_object_get(req, "day");
	if ((fld && !json_is_string(fld)) || (day && !json_is_string(day)) ||
	    (day && strlen(json_string_value(day)) != CUMUL_DATE_LEN)) {
		r = TSYNC_ECMD_ARGS;
		goto leave;
	}
	if (!fld) {
		char closed[CUMUL_DATE_LEN + 1];
		r = cumul__reset(c, now_us, json_string_value(day), closed);
		if (r < 0)
			goto leave;
		ans =
		    json_pack("{ssss?ss}", "type", "cum", "closed", closed[0] ? closed : NULL, "day", c->day);
	} else {
		cum = get_json(c, json_string_value(fld), json_string_value(day), now_us, &r);
		if (!cum)
			goto leave;
		ans = json_pack("{sssssO}", "type", "cum", "fld", json_string_value(fld), "cum", cum);
		json_decref(cum);
	}
	r = -ENOMEM;
	if (ans && (*result = json_dumps(ans, JSON_COMPACT)))
		r = 0;
leave:
	json_decref(ans);
	json_decref(req);
	return r;
}
