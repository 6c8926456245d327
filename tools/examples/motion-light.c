/*
 * motion-light: an example controller written against libthingsync's public
 * API, the way a user would write their own. It owns a light and uses a
 * motion sensor owned by another controller: the light goes on with motion
 * and off a while after the motion stops. It runs inside its own libevent
 * loop (the node joins it), to show how a controller with other work of its
 * own embeds thingsync.
 *
 *   motion-light -c site.conf -n PI-Light [-s STATE_DIR] [-m MOTION] [-l LIGHT] [-o SECONDS]
 *
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <thingsync/thingsync.h>

struct app {
	tsync_node *node;
	struct event *off_timer;
	const char *motion, *light;
	int off_after;
	int verbose;
};

static void log_line(void *ud, tsync_log_level level, const char *line)
{
	fprintf(stderr, "%s: %s\n", tsync_log_level_name(level), line);
}

static void set_light(struct app *a, bool on)
{
	tsync_value v = tsync_bool(on);
	int r = tsync_node_set(a->node, a->light, &v);
	if (r < 0)
		fprintf(stderr, "motion-light: cannot set %s: %s\n", a->light, tsync_strerror(r));
	else
		printf("%s -> %d\n", a->light, on);
	fflush(stdout);
}

static void off_cb(evutil_socket_t fd, short what, void *arg)
{
	set_light(arg, false);
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct app *a = ud;
	struct timeval tv = {a->off_after, 0};

	if (ev->kind != TSYNC_EVENT_CHANGED || strcmp(ev->thing, a->motion) != 0)
		return;
	if (ev->value.u.b) {
		evtimer_del(a->off_timer);
		set_light(a, true);
	} else {
		evtimer_add(a->off_timer, &tv);
	}
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: motion-light -c SITE.CONF -n CONTROLLER [-s STATE_DIR] [-m MOTION_THING]\n"
	           "                    [-l LIGHT_THING] [-o OFF_AFTER_SECONDS] [-v]\n"
	           "An example thingsync controller: LIGHT follows MOTION, and goes off\n"
	           "OFF_AFTER_SECONDS (default 5) after the motion stops.\n"
	           "Defaults: MOTION_THING=hall_motion, LIGHT_THING=hall_light.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"name", required_argument, NULL, 'n'},
	    {"state", required_argument, NULL, 's'},
	    {"motion", required_argument, NULL, 'm'},
	    {"light", required_argument, NULL, 'l'},
	    {"off-after", required_argument, NULL, 'o'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct app a = {.motion = "hall_motion", .light = "hall_light", .off_after = 5};
	tsync_node_options o;
	struct event_base *base;
	struct event *sigint, *sigterm;
	int c, r;

	tsync_node_options_init(&o);
	o.log = log_line;
	while ((c = getopt_long(argc, argv, "c:n:s:m:l:o:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o.site_path = optarg;
			break;
		case 'n':
			o.controller = optarg;
			break;
		case 's':
			o.state_dir = optarg;
			break;
		case 'm':
			a.motion = optarg;
			break;
		case 'l':
			a.light = optarg;
			break;
		case 'o':
			a.off_after = atoi(optarg);
			break;
		case 'v':
			o.log_level = TSYNC_LOG_DEBUG;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!o.site_path || !o.controller) {
		usage(stderr);
		return 2;
	}
	base = event_base_new();
	if (!base)
		return 1;
	o.event_base = base;
	r = tsync_node_new(&o, &a.node);
	if (r < 0) {
		fprintf(stderr, "motion-light: %s\n", tsync_strerror(r));
		event_base_free(base);
		return 1;
	}
	a.off_timer = evtimer_new(base, off_cb, &a);
	tsync_node_on_event(a.node, on_event, &a);
	sigint = evsignal_new(base, SIGINT, stop_cb, base);
	sigterm = evsignal_new(base, SIGTERM, stop_cb, base);
	event_add(sigint, NULL);
	event_add(sigterm, NULL);
	printf("motion-light: %s follows %s\n", a.light, a.motion);
	fflush(stdout);

	event_base_dispatch(base);

	event_free(sigint);
	event_free(sigterm);
	event_free(a.off_timer);
	tsync_node_free(a.node);
	event_base_free(base);
	return 0;
}
