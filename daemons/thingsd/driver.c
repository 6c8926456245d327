/*
 * thingsd drivers: parsing the driver string, polling, the crash/recovery
 * log pairs, and the conversion between raw text and values.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "driver.h"

/* A driver that fails and has no poll period of its own is retried this often. */
#define RETRY_MS 5000u

static const struct driver_ops *const kinds[] = {
    &driver_virtual_ops, &driver_file_ops, &driver_exec_ops, &driver_evok_ops,
#ifdef THINGSD_HAVE_GPIOD
    &driver_gpio_ops,
#endif
};

/* --- parsing ------------------------------------------------------------ */

static int parse_ms(const char *key, const char *text, uint32_t *out, char *err, size_t errlen)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || *end || v > 86400000ul || text[0] == '-') {
		snprintf(err, errlen, "%s=%s is not a number of milliseconds (0..86400000)", key, text);
		return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

static int parse_num(const char *key, const char *text, double *out, char *err, size_t errlen)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno || end == text || *end || !isfinite(v)) {
		snprintf(err, errlen, "%s=%s is not a number", key, text);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

static int add_arg(struct driver *d, const char *word, size_t len)
{
	char **a = realloc(d->args, (d->n_args + 2) * sizeof(*a));

	if (!a)
		return -ENOMEM;
	d->args = a;
	a[d->n_args] = strndup(word, len);
	if (!a[d->n_args])
		return -ENOMEM;
	d->n_args++;
	a[d->n_args] = NULL;
	return 0;
}

/* One word after KIND: an option we know, or an argument of the kind. */
static int take_word(struct driver *d, const char *w, size_t len, char *err, size_t errlen)
{
	char word[256];
	const char *eq;

	if (len >= sizeof(word)) {
		snprintf(err, errlen, "a word longer than %zu characters", sizeof(word) - 1);
		return -EINVAL;
	}
	memcpy(word, w, len);
	word[len] = '\0';
	if (!strcmp(word, "invert")) {
		if (d->type != TSYNC_TYPE_BOOL) {
			snprintf(err, errlen, "invert is for bool things");
			return -EINVAL;
		}
		d->invert = true;
		return 0;
	}
	eq = strchr(word, '=');
	if (eq) {
		size_t kl = (size_t)(eq - word);
		const char *val = eq + 1;
		if (kl == 8 && !strncmp(word, "interval", kl))
			return parse_ms("interval", val, &d->interval_ms, err, errlen);
		if (kl == 7 && !strncmp(word, "timeout", kl)) {
			int r = parse_ms("timeout", val, &d->timeout_ms, err, errlen);
			if (r == 0 && d->timeout_ms == 0) {
				snprintf(err, errlen, "timeout must be at least 1 ms");
				return -EINVAL;
			}
			return r;
		}
		if ((kl == 5 && !strncmp(word, "scale", kl)) || (kl == 6 && !strncmp(word, "offset", kl))) {
			bool is_scale = kl == 5;
			int r;
			if (d->type != TSYNC_TYPE_INT && d->type != TSYNC_TYPE_FLOAT) {
				snprintf(err, errlen, "%s is for int and float things",
				         is_scale ? "scale" : "offset");
				return -EINVAL;
			}
			r = parse_num(is_scale ? "scale" : "offset", val, is_scale ? &d->scale : &d->offset,
			              err, errlen);
			if (r == 0 && is_scale && d->scale == 0) {
				snprintf(err, errlen, "scale must not be 0");
				return -EINVAL;
			}
			d->scaled = true;
			return r;
		}
		if (kl == 6 && !strncmp(word, "format", kl)) {
			if (!strcmp(val, "w1")) {
				if (d->type != TSYNC_TYPE_INT && d->type != TSYNC_TYPE_FLOAT) {
					snprintf(err, errlen, "format=w1 is for int and float things");
					return -EINVAL;
				}
				d->w1 = true;
				return 0;
			}
			if (!strcmp(val, "plain"))
				return 0;
			snprintf(err, errlen, "format=%s: known formats are plain and w1", val);
			return -EINVAL;
		}
	}
	return add_arg(d, w, len);
}

int driver__parse(const char *spec, tsync_type type, bool mine, struct driver **ret, char *err, size_t errlen)
{
	const struct driver_ops *ops = NULL;
	struct driver *d;
	const char *p, *colon;
	size_t kl;
	int r;

	*ret = NULL;
	if (!spec || !*spec)
		spec = "virtual";
	/* KIND is the leading run of letters; a ':' after it starts its arguments. */
	for (p = spec; islower((unsigned char)*p); p++)
		;
	kl = (size_t)(p - spec);
	colon = *p == ':' ? p : NULL;
	if (*p && !colon && !isspace((unsigned char)*p))
		kl = 0;
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]) && kl; i++)
		if (strlen(kinds[i]->kind) == kl && !strncmp(kinds[i]->kind, spec, kl))
			ops = kinds[i];
	if (!ops) {
		if (kl == 4 && !strncmp(spec, "gpio", 4)) {
			if (!mine)
				return 0; /* another controller's business */
			snprintf(err, errlen, "the gpio driver is not built in (thingsd without libgpiod)");
			return -ENOTSUP;
		}
		snprintf(err, errlen, "unknown driver '%.*s' (known: virtual, file, exec, evok, gpio)",
		         kl ? (int)kl : (int)strcspn(spec, ": \t"), spec);
		return -EINVAL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ops = ops;
	d->type = type;
	d->scale = 1.0;
	d->interval_ms = ops->default_interval_ms;
	d->timeout_ms = ops->default_timeout_ms;
	d->spec = strdup(spec);
	if (!d->spec) {
		r = -ENOMEM;
		goto leave;
	}
	p = spec + kl + (colon ? 1 : 0);
	for (;;) {
		size_t len;
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		len = strcspn(p, " \t");
		r = take_word(d, p, len, err, errlen);
		if (r < 0)
			goto leave;
		p += len;
	}
	if (ops->parse) {
		r = ops->parse(d, err, errlen);
		if (r < 0)
			goto leave;
	} else if (d->n_args) {
		snprintf(err, errlen, "%s takes no arguments", ops->kind);
		r = -EINVAL;
		goto leave;
	}
	*ret = d;
	return 0;
leave:
	if (r == -ENOMEM)
		snprintf(err, errlen, "out of memory");
	driver__free(d);
	return r;
}

void driver__free(struct driver *d)
{
	if (!d)
		return;
	if (d->started && d->ops->stop)
		d->ops->stop(d);
	if (d->poll_ev)
		event_free(d->poll_ev);
	for (size_t i = 0; i < d->n_args; i++)
		free(d->args[i]);
	free(d->args);
	free(d->spec);
	free(d->text_buf);
	free(d);
}

/* --- conversions ---------------------------------------------------------- */

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

int driver__from_text(struct driver *d, const char *text, tsync_value *out, char *err, size_t errlen)
{
	char buf[4096], *s, *end;
	double x;

	snprintf(buf, sizeof(buf), "%s", text ? text : "");
	s = trim(buf);
	if (d->w1) {
		/* "xx xx ... : crc=xx YES\nxx xx ... t=21562": the reading counts
		 * only when the sensor's own CRC check passed. */
		char *nl = strchr(s, '\n'), *t;
		if (!nl || !memmem(s, (size_t)(nl - s), "YES", 3)) {
			snprintf(err, errlen, "w1 CRC check failed");
			return -EIO;
		}
		t = strstr(nl, "t=");
		if (!t) {
			snprintf(err, errlen, "w1 reading without t=");
			return -EIO;
		}
		s = trim(t + 2);
	}
	if (d->type != TSYNC_TYPE_STRING && !*s) {
		snprintf(err, errlen, "empty reading");
		return -EIO;
	}
	switch (d->type) {
	case TSYNC_TYPE_BOOL: {
		tsync_value v;
		if (tsync_value_parse(TSYNC_TYPE_BOOL, s, &v) == 0) {
			*out = tsync_bool(v.u.b != d->invert);
			return 0;
		}
		errno = 0;
		x = strtod(s, &end);
		if (errno || end == s || *trim(end)) {
			snprintf(err, errlen, "'%.40s' is not a bool", s);
			return -EIO;
		}
		*out = tsync_bool((x != 0) != d->invert);
		return 0;
	}
	case TSYNC_TYPE_INT:
	case TSYNC_TYPE_FLOAT:
		errno = 0;
		x = strtod(s, &end);
		if (errno || end == s || *trim(end) || !isfinite(x)) {
			snprintf(err, errlen, "'%.40s' is not a number", s);
			return -EIO;
		}
		x = x * d->scale + d->offset;
		if (d->type == TSYNC_TYPE_FLOAT) {
			*out = tsync_float(x);
			return 0;
		}
		if (x < -9.2e18 || x > 9.2e18) {
			snprintf(err, errlen, "'%.40s' is out of the int range", s);
			return -EIO;
		}
		*out = tsync_int(llround(x));
		return 0;
	case TSYNC_TYPE_STRING: {
		/* The first line: a string value never holds a line break. */
		char *copy;
		s[strcspn(s, "\r\n")] = '\0';
		copy = strdup(s);
		if (!copy) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		free(d->text_buf);
		d->text_buf = copy;
		*out = tsync_string(copy);
		return 0;
	}
	case TSYNC_TYPE_NONE:
		break;
	}
	snprintf(err, errlen, "thing of no type");
	return -EINVAL;
}

int driver__to_text(struct driver *d, const tsync_value *v, char *buf, size_t len)
{
	double x;

	switch (v->type) {
	case TSYNC_TYPE_BOOL:
		return snprintf(buf, len, "%d", (v->u.b != d->invert) ? 1 : 0);
	case TSYNC_TYPE_INT:
		if (!d->scaled)
			return snprintf(buf, len, "%lld", (long long)v->u.i);
		x = ((double)v->u.i - d->offset) / d->scale;
		if (x == floor(x) && fabs(x) < 9e15)
			return snprintf(buf, len, "%lld", (long long)x);
		return snprintf(buf, len, "%.15g", x);
	case TSYNC_TYPE_FLOAT:
		x = (v->u.f - d->offset) / d->scale;
		return snprintf(buf, len, "%.15g", x);
	case TSYNC_TYPE_STRING:
		return snprintf(buf, len, "%s", v->u.s ? v->u.s : "");
	case TSYNC_TYPE_NONE:
		break;
	}
	return -EINVAL;
}

/* --- running ---------------------------------------------------------------- */

static void schedule(struct driver *d)
{
	uint32_t ms;
	struct timeval tv;

	if (d->interval_ms)
		ms = d->interval_ms;
	else if (d->read_failing || d->write_pending || !d->started)
		ms = RETRY_MS;
	else
		return;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	d->next_poll_us = td__now_us() + (uint64_t)ms * 1000u;
	evtimer_add(d->poll_ev, &tv);
}

static void read_failed(struct driver *d, const char *why)
{
	d->read_errors++;
	snprintf(d->last_error, sizeof(d->last_error), "%s", why);
	if (!d->read_failing) {
		d->read_failing = true;
		td_error("err_read_crash Read of <%s> crashed, driver=%s, error=%s", d->thing->name, d->spec,
		         why);
		/* The thing's cumul counts the failure as time without a value. */
		tsync_node_set_unknown(d->td->node, d->thing->name, true);
	} else {
		td_debug("read of <%s> still failing: %s", d->thing->name, why);
	}
}

static void read_ok(struct driver *d)
{
	if (d->read_failing) {
		d->read_failing = false;
		td_info("err_read_gone Read of <%s> now OK!", d->thing->name);
		tsync_node_set_unknown(d->td->node, d->thing->name, false);
	}
}

static bool try_start(struct driver *d)
{
	char err[DRIVER_ERR_LEN] = "";

	if (d->started)
		return true;
	if (d->ops->start && d->ops->start(d, err, sizeof(err)) < 0) {
		read_failed(d, err[0] ? err : "cannot start");
		return false;
	}
	d->started = true;
	return true;
}

/* An output gets the node's value: at start, and again after a failed write. */
static void push_value(struct driver *d)
{
	tsync_thing_state st;
	tsync_value as_is;

	if (!d->ops->write || !d->thing->info.settable || d->thing->pulsing)
		return;
	if (tsync_node_get(d->td->node, d->thing->name, &st) < 0 || st.value.type == TSYNC_TYPE_NONE) {
		d->write_pending = false;
		return;
	}
	d->write_pending = true;
	if (driver__write(d, &st.value, &as_is) == 0)
		d->write_pending = false;
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;

	if (!try_start(d)) {
		schedule(d);
		return;
	}
	if (d->write_pending)
		push_value(d);
	if (d->ops->read && !d->busy && (d->interval_ms || d->read_failing || !d->reads)) {
		d->busy = true;
		d->ops->read(d); /* ends in driver__read_done(), which schedules */
		return;
	}
	schedule(d);
}

void driver__start(struct driver *d, struct owned *o)
{
	struct timeval now = {0, 0};

	d->thing = o;
	d->td = o->td;
	d->poll_ev = evtimer_new(d->td->base, poll_cb, d);
	if (!d->poll_ev) {
		td_error("%s: out of memory starting its driver", o->name);
		return;
	}
	if (try_start(d)) {
		/* An output with a known value drives the hardware to it; what
		 * is not an output, or has no value yet, is read first. */
		push_value(d);
	}
	evtimer_add(d->poll_ev, &now);
}

void driver__read_done(struct driver *d, int err, const char *why, const char *text)
{
	char msg[DRIVER_ERR_LEN];
	tsync_value v;
	int r;

	d->busy = false;
	d->reads++;
	if (err < 0) {
		read_failed(d, why ? why : "read failed");
		goto leave;
	}
	if (driver__from_text(d, text, &v, msg, sizeof(msg)) < 0) {
		read_failed(d, msg);
		goto leave;
	}
	/* While a pulse drives the output, the hardware shows the pulse,
	 * not the thing's value. */
	if (d->thing->pulsing) {
		read_ok(d);
		goto leave;
	}
	r = daemon__set_from_driver(d->thing, &v);
	if (r < 0) {
		char txt[64];
		tsync_value_format(&v, txt, sizeof(txt));
		snprintf(msg, sizeof(msg), "value %s refused: %s", txt, tsync_strerror(r));
		read_failed(d, msg);
		goto leave;
	}
	read_ok(d);
leave:
	schedule(d);
}

int driver__write(struct driver *d, const tsync_value *to_be, tsync_value *as_is)
{
	char err[DRIVER_ERR_LEN] = "";
	int r;

	*as_is = *to_be;
	if (!d->ops->write) {
		snprintf(d->last_error, sizeof(d->last_error), "the %s driver cannot write", d->ops->kind);
		return TSYNC_EREFUSED;
	}
	if (!d->started && !try_start(d)) {
		snprintf(err, sizeof(err), "%s", d->last_error);
		r = -EIO;
	} else {
		r = d->ops->write(d, to_be, as_is, err, sizeof(err));
	}
	d->writes++;
	if (r < 0) {
		d->write_errors++;
		snprintf(d->last_error, sizeof(d->last_error), "%s", err[0] ? err : tsync_strerror(r));
		if (!d->write_failing) {
			char txt[64];
			d->write_failing = true;
			tsync_value_format(to_be, txt, sizeof(txt));
			td_error("err_write_crash Write to <%s> crashed, value=%s, driver=%s, error=%s",
			         d->thing->name, txt, d->spec, d->last_error);
		}
		return r;
	}
	if (d->write_failing) {
		d->write_failing = false;
		td_info("err_write_gone Write to <%s> now OK!", d->thing->name);
	}
	return 0;
}

void driver__child(struct thingsd *td)
{
	for (size_t i = 0; i < td->n_owned; i++) {
		struct driver *d = td->owned[i].drv;
		if (d && d->started && d->ops->child)
			d->ops->child(d);
	}
}
