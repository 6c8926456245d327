/*
 * The gpio driver: a GPIO line through libgpiod (v1 API), built when
 * libgpiod is found (meson option `gpiod`).
 *
 *   gpio:CHIP:LINE [invert] [interval=MS]
 *
 * CHIP is what gpiod_chip_open_lookup() takes (gpiochip0, 0, /dev/gpiochip0
 * or a label), LINE the offset. An input (settable = no) is requested with
 * edge events on both edges: every edge is read at once from the loop, and
 * `interval` adds polling on top (0 by default). An output (settable) is
 * requested as an output and written on every set. Bool things only.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <gpiod.h>

#include "driver.h"

struct gpio_priv {
	struct gpiod_chip *chip;
	struct gpiod_line *line;
	struct event *ev;
	bool output;
};

static int split(const char *arg, char *chip, size_t len, unsigned *offset)
{
	const char *colon = strrchr(arg, ':');
	char *end;
	unsigned long o;

	if (!colon || colon == arg || (size_t)(colon - arg) >= len)
		return -EINVAL;
	o = strtoul(colon + 1, &end, 10);
	if (*end || end == colon + 1 || o > 1023)
		return -EINVAL;
	memcpy(chip, arg, (size_t)(colon - arg));
	chip[colon - arg] = '\0';
	*offset = (unsigned)o;
	return 0;
}

static int gpio_parse(struct driver *d, char *err, size_t errlen)
{
	char chip[128];
	unsigned offset;

	if (d->type != TSYNC_TYPE_BOOL) {
		snprintf(err, errlen, "gpio is for bool things");
		return -EINVAL;
	}
	if (d->n_args != 1 || split(d->args[0], chip, sizeof(chip), &offset) < 0) {
		snprintf(err, errlen, "gpio: needs CHIP:LINE, e.g. gpio:gpiochip0:17");
		return -EINVAL;
	}
	return 0;
}

static void edge_cb(evutil_socket_t fd, short what, void *arg)
{
	struct driver *d = arg;
	struct gpio_priv *p = d->priv;
	struct gpiod_line_event ev;
	char why[DRIVER_ERR_LEN];
	int v;

	/* The value after the edge is read, not inferred from the edge: edges
	 * may have been coalesced. */
	if (gpiod_line_event_read(p->line, &ev) < 0) {
		snprintf(why, sizeof(why), "%s: event: %s", d->args[0], strerror(errno));
		driver__read_done(d, -EIO, why, NULL);
		return;
	}
	v = gpiod_line_get_value(p->line);
	if (v < 0) {
		snprintf(why, sizeof(why), "%s: %s", d->args[0], strerror(errno));
		driver__read_done(d, -EIO, why, NULL);
		return;
	}
	driver__read_done(d, 0, NULL, v ? "1" : "0");
}

static void gpio_stop(struct driver *d)
{
	struct gpio_priv *p = d->priv;

	if (!p)
		return;
	if (p->ev)
		event_free(p->ev);
	if (p->line)
		gpiod_line_release(p->line);
	if (p->chip)
		gpiod_chip_close(p->chip);
	free(p);
	d->priv = NULL;
}

static int gpio_start(struct driver *d, char *err, size_t errlen)
{
	struct gpio_priv *p = calloc(1, sizeof(*p));
	char chip[128];
	unsigned offset;
	int r = -EIO;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	d->priv = p;
	split(d->args[0], chip, sizeof(chip), &offset);
	p->chip = gpiod_chip_open_lookup(chip);
	if (!p->chip) {
		snprintf(err, errlen, "%s: cannot open the chip: %s", chip, strerror(errno));
		goto fail;
	}
	p->line = gpiod_chip_get_line(p->chip, offset);
	if (!p->line) {
		snprintf(err, errlen, "%s: no line %u: %s", chip, offset, strerror(errno));
		goto fail;
	}
	p->output = d->thing->info.settable;
	if (p->output) {
		tsync_thing_state st;
		int initial = 0;
		if (tsync_node_get(d->td->node, d->thing->name, &st) == 0 && st.value.type == TSYNC_TYPE_BOOL)
			initial = st.value.u.b != d->invert;
		if (gpiod_line_request_output(p->line, "thingsd", initial) < 0) {
			snprintf(err, errlen, "%s: cannot request as output: %s", d->args[0],
			         strerror(errno));
			goto fail;
		}
		return 0;
	}
	if (gpiod_line_request_both_edges_events(p->line, "thingsd") < 0) {
		snprintf(err, errlen, "%s: cannot request edge events: %s", d->args[0], strerror(errno));
		goto fail;
	}
	p->ev = event_new(d->td->base, gpiod_line_event_get_fd(p->line), EV_READ | EV_PERSIST, edge_cb, d);
	if (!p->ev || event_add(p->ev, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		r = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	gpio_stop(d);
	return r;
}

static void gpio_read(struct driver *d)
{
	struct gpio_priv *p = d->priv;
	char why[DRIVER_ERR_LEN];
	int v = gpiod_line_get_value(p->line);

	if (v < 0) {
		snprintf(why, sizeof(why), "%s: %s", d->args[0], strerror(errno));
		driver__read_done(d, -EIO, why, NULL);
		return;
	}
	driver__read_done(d, 0, NULL, v ? "1" : "0");
}

static int gpio_write(struct driver *d, const tsync_value *to_be, tsync_value *as_is, char *err,
                      size_t errlen)
{
	struct gpio_priv *p = d->priv;

	if (!p->output) {
		snprintf(err, errlen, "%s is an input", d->args[0]);
		return -EPERM;
	}
	if (gpiod_line_set_value(p->line, (to_be->u.b != d->invert) ? 1 : 0) < 0) {
		snprintf(err, errlen, "%s: %s", d->args[0], strerror(errno));
		return -EIO;
	}
	*as_is = *to_be;
	return 0;
}

const struct driver_ops driver_gpio_ops = {
    .kind = "gpio",
    .default_interval_ms = 0,
    .parse = gpio_parse,
    .start = gpio_start,
    .stop = gpio_stop,
    .read = gpio_read,
    .write = gpio_write,
};
