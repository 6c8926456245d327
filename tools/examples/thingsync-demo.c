/*
 * thingsync-demo: a small living site on loopback. Three controllers run in
 * this process (each with its own UDP socket, as on three Pis), the network
 * between them loses a fifth of all datagrams, and a script plays a short
 * day: motion switches the hall light, the living room warms up, a door
 * strike is pulsed, a user asks for comfort heating, and PI-Climate loses
 * power and comes back. Every change is printed where it arrives, with the
 * delay since the owner made it; at the end each copy is checked against
 * its owner.
 *
 *   thingsync-demo [--seconds N] [--loss P] [--verbose]
 *
 * SPDX-License-Identifier: MIT
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <thingsync/thingsync.h>

#define N 3
static const char *NAMES[N] = {"PI-Security", "PI-Light", "PI-Climate"};

struct demo {
	struct event_base *base;
	tsync_site *site;
	tsync_node *node[N];
	char dir[64];
	char state[N][96];
	double loss;
	int verbose;
	int step, steps;
	double t0;
	double changed_at[64]; /* per thing index: when the owner changed it */
	struct event *tick;
	int climate_down_until;
	unsigned seed;
	int pulses_seen;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void log_line(void *ud, tsync_log_level level, const char *line)
{
	struct demo *d = ud;
	if (level <= TSYNC_LOG_WARN || d->verbose)
		fprintf(stderr, "  [%s] %s\n", tsync_log_level_name(level), line);
}

static void say(struct demo *d, const char *who, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(struct demo *d, const char *who, const char *fmt, ...)
{
	va_list ap;
	printf("%6.2fs  %-12s ", now_s() - d->t0, who);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev);

static int node_index(struct demo *d, tsync_node *n)
{
	for (int i = 0; i < N; i++)
		if (d->node[i] == n)
			return i;
	return -1;
}

static void start_node(struct demo *d, int i)
{
	tsync_node_options o;
	tsync_faults f = {.loss = d->loss, .duplicate = d->loss / 4, .reorder = d->loss / 2, .delay_ms = 20};
	int r;

	tsync_node_options_init(&o);
	o.site = d->site;
	o.controller = NAMES[i];
	o.event_base = d->base;
	o.state_dir = d->state[i];
	o.log = log_line;
	o.log_userdata = d;
	o.log_level = d->verbose ? TSYNC_LOG_DEBUG : TSYNC_LOG_WARN;
	r = tsync_node_new(&o, &d->node[i]);
	if (r < 0) {
		fprintf(stderr, "thingsync-demo: %s: %s\n", NAMES[i], tsync_strerror(r));
		exit(1);
	}
	f.seed = d->seed + (unsigned)i;
	tsync_node_set_faults(d->node[i], &f);
	tsync_node_on_event(d->node[i], on_event, d);
}

static void set(struct demo *d, int i, const char *thing, tsync_value v)
{
	char text[64];
	int idx = tsync_site_thing_find(d->site, thing);
	int r = tsync_node_set(d->node[i], thing, &v);

	tsync_value_format(&v, text, sizeof(text));
	if (r < 0) {
		say(d, NAMES[i], "cannot set %s: %s", thing, tsync_strerror(r));
		return;
	}
	if (idx >= 0 && idx < 64)
		d->changed_at[idx] = now_s();
}

static void on_event(void *ud, tsync_node *node, const tsync_event *ev)
{
	struct demo *d = ud;
	int i = node_index(d, node), idx;
	char text[64];

	if (i < 0)
		return;
	tsync_value_format(&ev->value, text, sizeof(text));
	switch (ev->kind) {
	case TSYNC_EVENT_CHANGED:
		idx = tsync_site_thing_find(d->site, ev->thing);
		if (!strcmp(ev->controller, NAMES[i])) {
			say(d, NAMES[i], "%-14s = %-8s (owner)", ev->thing, text);
		} else {
			double delay =
			    idx >= 0 && idx < 64 && d->changed_at[idx] > 0 ? now_s() - d->changed_at[idx] : 0;
			say(d, NAMES[i], "%-14s = %-8s from %s, %.2f ms after the change", ev->thing, text,
			    ev->controller, delay * 1e3);
		}
		/* PI-Light's own logic: the hall light follows the motion sensor. */
		if (i == 1 && !strcmp(ev->thing, "hall_motion"))
			set(d, 1, "hall_light", tsync_bool(ev->value.u.b));
		break;
	case TSYNC_EVENT_PULSE:
		d->pulses_seen++;
		say(d, NAMES[i], "%-14s pulsed %s for %u ms (by %s)", ev->thing, text, ev->pulse_ms,
		    ev->controller);
		break;
	case TSYNC_EVENT_PEER_UP:
		say(d, NAMES[i], "sees %s up", ev->controller);
		break;
	case TSYNC_EVENT_PEER_DOWN:
		say(d, NAMES[i], "sees %s DOWN (no answer)", ev->controller);
		break;
	}
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct demo *d = arg;
	int s = ++d->step;

	if (s >= d->steps) {
		event_base_loopbreak(d->base);
		return;
	}
	if (s % 3 == 1)
		set(d, 0, "hall_motion", tsync_bool((s / 3) % 2 == 0));
	if (s % 2 == 0 && d->node[2])
		set(d, 2, "temp_living", tsync_float(19.0 + (double)(rand_r(&d->seed) % 40) / 10.0));
	if (s == 5) {
		say(d, NAMES[1], "asks PI-Climate for heating_mode = comfort");
		set(d, 1, "heating_mode", tsync_string("comfort"));
	}
	if (s == 7) {
		say(d, NAMES[1], "pulses door_strike (owned by PI-Security)");
		tsync_node_pulse(d->node[1], "door_strike", NULL, 0, NULL, NULL);
	}
	if (s == 9) {
		say(d, NAMES[2], "*** loses power ***");
		tsync_node_free(d->node[2]);
		d->node[2] = NULL;
	}
	if (s == 10)
		set(d, 0, "is_armed", tsync_bool(true));
	if (s == 15 && !d->node[2]) {
		say(d, NAMES[2], "*** power back: starts, asks the owners, re-syncs ***");
		start_node(d, 2);
	}
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct demo *d = arg;
	printf("\n(interrupted)\n");
	d->steps = 0;
	event_base_loopbreak(d->base);
}

static uint16_t free_port(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	uint16_t port = 0;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

static void write_site(struct demo *d, char *path, size_t len)
{
	char key[128];
	FILE *f;
	uint16_t p[N];

	for (int i = 0; i < N; i++)
		p[i] = free_port();
	snprintf(key, sizeof(key), "%s/site.key", d->dir);
	if (tsync_key_generate(key) < 0) {
		fprintf(stderr, "thingsync-demo: cannot write %s\n", key);
		exit(1);
	}
	snprintf(path, len, "%s/site.conf", d->dir);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(1);
	}
	fprintf(f,
	        "; written by thingsync-demo: three controllers on loopback\n"
	        "[site]\nname = demo\nkey_file = site.key\nretry_min_ms = 20\nretry_max_ms = 1000\n"
	        "down_after_ms = 1000\n\n"
	        "[controller PI-Security]\nhost = 127.0.0.1\nudp_port = %u\nroles = security, cmd_do\n\n"
	        "[controller PI-Light]\nhost = 127.0.0.1\nudp_port = %u\nroles = light, cmd_do\n\n"
	        "[controller PI-Climate]\nhost = 127.0.0.1\nudp_port = %u\nroles = climate, cmd_do\n\n"
	        "[thing hall_motion]\nowner = PI-Security\ntype = bool\nusers = PI-Light\n\n"
	        "[thing is_armed]\nowner = PI-Security\ntype = bool\nusers = PI-Light, PI-Climate\n\n"
	        "[thing door_strike]\nowner = PI-Security\ntype = bool\nusers = PI-Light\npulse = yes\n"
	        "pulse_ms = 1500\n\n"
	        "[thing hall_light]\nowner = PI-Light\ntype = bool\nusers = PI-Security\n\n"
	        "[thing temp_living]\nowner = PI-Climate\ntype = float\nusers = PI-Light, PI-Security\n"
	        "min = -30\nmax = 60\n\n"
	        "[thing heating_mode]\nowner = PI-Climate\ntype = string\nusers = PI-Light\n"
	        "allowed = off, eco, comfort\ninitial = eco\n",
	        p[0], p[1], p[2]);
	fclose(f);
}

/* Every copy equals its owner's value. */
static int check(struct demo *d)
{
	int bad = 0;
	size_t nt = tsync_site_thing_count(d->site);

	printf("\nfinal check: every copy against its owner\n");
	for (size_t t = 0; t < nt; t++) {
		tsync_thing_info ti;
		tsync_thing_state own;
		char ov[64];
		tsync_site_thing(d->site, t, &ti);
		int o = tsync_site_controller_find(d->site, ti.owner);
		if (tsync_node_get(d->node[o], ti.name, &own) < 0)
			continue;
		tsync_value_format(&own.value, ov, sizeof(ov));
		for (size_t u = 0; u < ti.n_users; u++) {
			tsync_thing_state cp;
			char cv[64];
			int ui = tsync_site_controller_find(d->site, ti.users[u]);
			tsync_node_get(d->node[ui], ti.name, &cp);
			tsync_value_format(&cp.value, cv, sizeof(cv));
			bool same = !strcmp(ov, cv) && cp.value.type == own.value.type;
			bad += !same;
			printf("  %-14s %-12s %-8s %-12s %-8s %s\n", ti.name, ti.owner, ov, ti.users[u], cv,
			       same ? "ok" : "DIFFERENT");
		}
	}
	return bad;
}

static bool settled(struct demo *d)
{
	for (int i = 0; i < N; i++)
		if (d->node[i] && tsync_node_unsettled(d->node[i]))
			return false;
	return true;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: thingsync-demo [--seconds N] [--loss P] [--verbose]\n"
	           "Runs three thingsync controllers on loopback with P (default 0.2) of all\n"
	           "datagrams lost (and P/4 duplicated, P/2 reordered by up to 20 ms), plays a\n"
	           "short scenario for N seconds (default 8), prints every change where it\n"
	           "arrives, and checks that every copy converged to its owner's value.\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"seconds", required_argument, NULL, 's'},
	    {"loss", required_argument, NULL, 'l'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct demo d;
	char path[128], *errors = NULL;
	struct event *sigint, *sigterm;
	struct timeval tv = {0, 400000};
	double seconds = 8;
	int c, bad;

	memset(&d, 0, sizeof(d));
	d.loss = 0.2;
	while ((c = getopt_long(argc, argv, "s:l:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			seconds = atof(optarg);
			break;
		case 'l':
			d.loss = atof(optarg);
			break;
		case 'v':
			d.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (d.loss < 0 || d.loss > 0.9 || seconds < 1) {
		usage(stderr);
		return 2;
	}
	d.steps = (int)(seconds / 0.4);
	d.seed = (unsigned)time(NULL);
	snprintf(d.dir, sizeof(d.dir), "/tmp/thingsync-demo-XXXXXX");
	if (!mkdtemp(d.dir)) {
		perror("mkdtemp");
		return 1;
	}
	for (int i = 0; i < N; i++)
		snprintf(d.state[i], sizeof(d.state[i]), "%s/state-%s", d.dir, NAMES[i]);
	write_site(&d, path, sizeof(path));
	if (tsync_site_load(path, &d.site, &errors) < 0) {
		fprintf(stderr, "thingsync-demo: %s", errors ? errors : "cannot load the site\n");
		return 1;
	}
	printf("thingsync %s demo: site %s (%s), %.0f%% of datagrams lost, %.0f s\n", TSYNC_VERSION_STRING,
	       path, tsync_site_has_key(d.site) ? "authenticated" : "legacy", d.loss * 100, seconds);
	printf("each line: time, controller, what it learned. Ctrl-C stops.\n\n");

	d.base = event_base_new();
	d.t0 = now_s();
	for (int i = 0; i < N; i++)
		start_node(&d, i);
	d.tick = event_new(d.base, -1, EV_PERSIST, tick_cb, &d);
	event_add(d.tick, &tv);
	sigint = evsignal_new(d.base, SIGINT, stop_cb, &d);
	sigterm = evsignal_new(d.base, SIGTERM, stop_cb, &d);
	event_add(sigint, NULL);
	event_add(sigterm, NULL);

	event_base_dispatch(d.base);
	event_del(d.tick);
	if (d.steps) {
		/* Let retries finish, then check. */
		double end = now_s() + 10;
		printf("\n(scenario over; letting the last retries land)\n");
		while (!settled(&d) && now_s() < end)
			event_base_loop(d.base, EVLOOP_ONCE);
	}
	if (!d.node[2])
		start_node(&d, 2);
	{
		double end = now_s() + 10;
		while (!settled(&d) && now_s() < end)
			event_base_loop(d.base, EVLOOP_ONCE);
	}
	bad = check(&d);

	printf("\nper-peer counters at PI-Security\n");
	printf("  %-12s %9s %9s %7s %7s %9s\n", "peer", "datagrams", "retransm", "acked", "rtt us",
	       "rejected");
	for (size_t p = 0; p < tsync_node_peer_count(d.node[0]); p++) {
		tsync_peer_stats st;
		uint64_t rej = 0;
		tsync_node_peer_stats(d.node[0], p, &st);
		for (int k = 0; k < TSYNC_REJ_COUNT; k++)
			rej += st.rejected[k];
		printf("  %-12s %9llu %9llu %7llu %7u %9llu\n", st.name,
		       (unsigned long long)st.datagrams_sent, (unsigned long long)st.retransmits,
		       (unsigned long long)st.acked, st.srtt_us, (unsigned long long)rej);
	}
	printf("\n%s: %d copies differ from their owner. Site files are in %s.\n",
	       bad ? "NOT CONVERGED" : "converged", bad, d.dir);
	printf("Next: read %s (and man thingsync-site.conf).\n", path);

	event_free(d.tick);
	event_free(sigint);
	event_free(sigterm);
	for (int i = 0; i < N; i++)
		tsync_node_free(d.node[i]);
	event_base_free(d.base);
	tsync_site_free(d.site);
	return bad ? 1 : 0;
}
